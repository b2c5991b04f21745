// The programs `cfsctl oci mount` hands a mount to: cfs-mount (kernel EROFS + overlayfs) and
// cfs-fuse.
#pragma once

#include <string>

namespace cfs::cli {

// The path of the program that mounts for this user: cfs-mount as root, cfs-fuse otherwise
// or when fuse is asked for. Throws cfs::Error naming every place looked at when it is not
// there (as root that is an error, not a quiet switch to FUSE), or when this build has no
// FUSE support and FUSE would be needed.
std::string mount_program(bool fuse);

// False in a build without cfs-fuse (CMake option CFS_WITH_FUSE=OFF).
bool built_with_fuse();

}  // namespace cfs::cli
