// libFuzzer target: the composefs-dump(5) parser in both modes, plus the dump writer's
// round trip (anything the parser accepts must re-parse to the same text).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "cfs/erofs/dumpfile.h"
#include "cfs/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  for (bool strict : {false, true}) {
    try {
      cfs::erofs::DumpfileParseOptions options{.strict = strict,
                                               .max_symlink = cfs::erofs::kSymlinkMaxCompat};
      cfs::erofs::Tree tree = cfs::erofs::parse_dumpfile(text, "fuzz", options);
      std::string once = cfs::erofs::dumpfile_to_string(tree);
      cfs::erofs::Tree again = cfs::erofs::parse_dumpfile(once, "again", options);
      if (cfs::erofs::dumpfile_to_string(again) != once) std::abort();
    } catch (const cfs::Error&) {
    }
  }
  return 0;
}
