// libFuzzer target: the text setup-root and mount.composefs read before anything is mounted
// (the kernel command line, setup-root-conf.toml, -o mount options). In an initramfs a crash
// here is an unbootable machine, so every input must parse or throw cfs::Error, and what
// parses must be well-formed.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "cfs/error.h"
#include "cfs/kmount/mount.h"
#include "cfs/kmount/options.h"
#include "cfs/kmount/setup_root.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    for (const cfs::kmount::BootImage& image : cfs::kmount::parse_kernel_cmdline(text)) {
      // A digest the parser accepted must name an image file without path tricks.
      std::string hex = image.digest.hex();
      if (hex.size() != 64 && hex.size() != 128) std::abort();
      if (hex.find_first_not_of("0123456789abcdef") != std::string::npos) std::abort();
    }
  } catch (const cfs::Error&) {
  }
  try {
    (void)cfs::kmount::parse_setup_root_config(text, "fuzz.toml");
  } catch (const cfs::Error&) {
  }
  try {
    for (const std::string& option : cfs::kmount::split_mount_options(text))
      if (option.empty()) std::abort();  // empty options are dropped
    cfs::kmount::MountOptions options;
    cfs::kmount::apply_composefs_options(text, &options);
  } catch (const cfs::Error&) {
  }
  return 0;
}
