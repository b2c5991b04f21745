// The programs `cfsctl oci mount` hands a mount to: cfs-mount (kernel EROFS + overlayfs) and
// cfs-fuse.
#pragma once

#include <string>
#include <vector>

namespace cfs::cli {

// The path of the program that mounts for this user: cfs-mount as root, cfs-fuse otherwise
// or when fuse is asked for. Throws cfs::Error naming every place looked at when it is not
// there (as root that is an error, not a quiet switch to FUSE), or when this build has no
// FUSE support and FUSE would be needed.
std::string mount_program(bool fuse);

// A mount of a repository image by cfs-mount or cfs-fuse, as composefs-rs' MountOpts say.
struct MountRequest {
  std::string command;  // names the cfsctl command in errors
  std::string repo, image, mountpoint;
  std::string fuse = "auto";      // auto: the kernel as root, FUSE otherwise; yes; no
  std::string upperdir, workdir;  // a writable overlay upper layer (kernel mounts only)
  bool read_write = false;
  // composefs-rs' --foreground: cfs-fuse stays in the foreground (-f) until unmounted; a
  // kernel mount has no server, so it changes nothing there.
  bool foreground = false;
  // cfsctl --insecure: a kernel mount of a secure repository without verity=require (cfs-fuse
  // checks object digests either way).
  bool insecure = false;
  // Rootless overlay mode (cfs-fuse --overlay): its writable directory, whether missing
  // objects are allowed, and the command to run in the namespace where the mount lives.
  bool overlay = false;
  std::string overlay_upper;
  bool allow_missing_objects = false;
  std::vector<std::string> run_command;
};
// Checks the request's options and finds the program that serves it (cfs-mount or
// cfs-fuse); throws naming what is wrong or every place the program was looked for.
std::string choose_mount_program(const MountRequest& request);
// Replaces this process with the mount program; throws cfs::Error if it cannot.
[[noreturn]] void exec_mount(const MountRequest& request);

// False in a build without cfs-fuse (CMake option CFS_WITH_FUSE=OFF).
bool built_with_fuse();

}  // namespace cfs::cli
