// The initramfs step: mount the composefs image named on the kernel command line as the new
// root on /sysroot, with /etc and /var taken from the deployment's state directory.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/digest.h"
#include "cfs/kmount/mount.h"

namespace cfs::kmount {

struct BootImage {
  Digest digest;
  bool insecure = false;  // "?" right after "=": mount without verity enforcement
};

// Finds composefs.digest=v1-sha256-12:<hex> / v1-sha512-12:<hex> (v2- likewise) and the legacy
// composefs=<hex>, in command-line order. Throws on a malformed composefs argument.
std::vector<BootImage> parse_kernel_cmdline(std::string_view cmdline);

// How /etc and /var of the new root are provided.
//   none:      left as in the image
//   bind:      STATE/<dir> bound over it
//   overlay:   overlay of the image's directory with upper/work in STATE/<dir>/{upper,work}
//   transient: overlay whose upper lives in a tmpfs (changes vanish at reboot)
enum class StateMount { none, bind, overlay, transient };
std::string_view to_string(StateMount mode);

struct SetupRootConfig {
  // [root] transient = true: the whole root is an overlay with a tmpfs upper over the image, so
  // it is writable and every change is lost at reboot.
  bool root_transient = false;
  StateMount etc = StateMount::overlay;
  StateMount var = StateMount::bind;
};

// Reads the TOML subset used by setup-root-conf.toml: [etc] / [var] sections with
// mount = "none|bind|overlay|transient" (and transient = true as a synonym), comments and
// blank lines. Anything else is an error naming the file and line.
SetupRootConfig parse_setup_root_config(std::string_view text, const std::string& what);

struct SetupRootOptions {
  std::string cmdline_file = "/proc/cmdline";
  std::string sysroot = "/sysroot";
  std::string config_file = "/usr/lib/composefs/setup-root-conf.toml";
  // systemd's gpt-auto-root workaround (systemd#35017, as composefs-rs' setup-root): when
  // gpt_auto_root is a block device, volatile_root becomes a symlink to /dev/block/MAJ:MIN so
  // systemd-gpt-auto-generator and systemd-repart find the physical root under the composefs
  // one. Best effort: an existing link is kept, a failure is logged and ignored.
  std::string gpt_auto_root = "/dev/gpt-auto-root";
  std::string volatile_root = "/run/systemd/volatile-root";
  KernelOverrides overrides;
};

// The workaround alone (setup_root runs it first); returns what it did, for the log.
std::string link_volatile_root(const std::string& gpt_auto_root, const std::string& volatile_root);

// Performs the whole step, reporting each action through log. Throws cfs::Error with a message
// fit for the console; on failure the mounts it made are taken down again.
void setup_root(const SetupRootOptions& options, const std::function<void(std::string_view)>& log);

}  // namespace cfs::kmount
