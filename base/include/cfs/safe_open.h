// Confined path resolution: every path inside a repository (or a state tree below a sysroot)
// is resolved beneath a directory fd without following any symlink and without leaving that
// directory, so a planted symlink can never redirect a read, write or unlink elsewhere.
//
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) does it in one call;
// where the kernel lacks openat2 (ENOSYS) the path is walked one component at a time with
// O_NOFOLLOW. Either way a symlink anywhere on the path is refused with an Error that names
// the offending component ("<what>: <component> is a symlink; ...").
//
// Paths are relative, '/'-separated, without ".." components ("." and empty components are
// ignored). Every fd returned is O_CLOEXEC.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <string>
#include <string_view>

#include "cfs/fd.h"

namespace cfs {

// Opens rel beneath dirfd. Throws SystemError (naming what) on failure; a symlink on the path
// gives an Error naming it. ENOENT is a SystemError with code() == ENOENT.
UniqueFd open_beneath(int dirfd, std::string_view rel, int flags, unsigned mode,
                      const std::string& what);
// Like open_beneath, but returns an empty fd (errno set) instead of throwing for ENOENT.
UniqueFd open_beneath_if_exists(int dirfd, std::string_view rel, int flags,
                                const std::string& what);
// The component-by-component walk that open_beneath falls back to without openat2; public so
// the fallback is tested on kernels that have openat2.
UniqueFd open_beneath_walk(int dirfd, std::string_view rel, int flags, unsigned mode,
                           const std::string& what);

// A directory beneath dirfd (O_RDONLY | O_DIRECTORY, or O_PATH if path_only).
UniqueFd open_dir_beneath(int dirfd, std::string_view rel, const std::string& what,
                          bool path_only = false);
// A regular file beneath dirfd. Opened O_NONBLOCK so a FIFO or device planted in its place
// cannot block the caller, checked with fstat to be S_ISREG ("<what>: not a regular file"
// otherwise), then O_NONBLOCK is cleared again.
UniqueFd open_regular_beneath(int dirfd, std::string_view rel, int flags, const std::string& what);

// The directory holding rel's last component, opened beneath dirfd (O_PATH), and that
// component. For a single-component rel the parent is dirfd itself (not duplicated).
struct ParentDir {
  UniqueFd owned;
  int fd = -1;
  std::string name;
};
ParentDir open_parent_beneath(int dirfd, std::string_view rel, const std::string& what);

// mkdir of rel beneath dirfd; an existing directory is success (returns false), an existing
// non-directory or symlink is an Error naming what.
bool mkdir_beneath(int dirfd, std::string_view rel, unsigned mode, const std::string& what);
// Creates every missing component of rel (mode for each new one) and returns the innermost
// directory; an existing symlink anywhere on the path is refused.
UniqueFd mkdirs_beneath(int dirfd, std::string_view rel, unsigned mode, const std::string& what);

// lstat of rel beneath dirfd (the last component is not followed); nullopt if it or a parent
// does not exist.
std::optional<struct stat> lstat_beneath(int dirfd, std::string_view rel, const std::string& what);
// readlink of rel beneath dirfd; nullopt if it does not exist or is not a symlink.
std::optional<std::string> readlink_beneath(int dirfd, std::string_view rel,
                                            const std::string& what);
// unlinkat of rel beneath dirfd (flags: 0 or AT_REMOVEDIR); false if it did not exist.
bool unlink_beneath(int dirfd, std::string_view rel, int flags, const std::string& what);

}  // namespace cfs
