// Small POSIX helpers shared by the store modules (internal: not installed).
#pragma once

#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "cfs/fd.h"

namespace cfs::store::detail {

// Every path below is relative to dirfd and resolved beneath it without following any
// symlink (cfs/safe_open.h): a repository's own directories are never symlinks, and one
// planted there must not redirect a read, write or removal outside the repository.

// Opens a directory beneath dirfd (O_DIRECTORY|O_RDONLY|O_CLOEXEC), throwing with what.
UniqueFd open_dir_at(int dirfd, const std::string& name, const std::string& what);
// Like open_dir_at, but returns an empty fd when the directory does not exist.
UniqueFd open_dir_if_exists(int dirfd, const std::string& name, const std::string& what);

// mkdirat that treats an existing directory as success; returns true if it created one. An
// existing symlink or non-directory is an error.
bool make_dir_at(int dirfd, const std::string& name, unsigned mode, const std::string& what);
// Creates every missing directory along path (relative to dirfd); returns the innermost fd.
UniqueFd make_dirs_at(int dirfd, std::string_view path, const std::string& what);

void fsync_or_throw(int fd, const std::string& what);
void syncfs_or_throw(int fd, const std::string& what);

// readlinkat of path beneath dirfd; nullopt if it does not exist or is not a symlink.
std::optional<std::string> read_link_at(int dirfd, const std::string& name);

// fstatat beneath dirfd without following symlinks; nullopt on ENOENT.
std::optional<struct stat> lstat_at(int dirfd, const std::string& name, const std::string& what);

// Unlinks path beneath dirfd; a missing entry is not an error.
void unlink_at(int dirfd, const std::string& name, const std::string& what);

// Calls fn(name, d_type) for every entry except "." and "..", in readdir order. d_type may
// be DT_UNKNOWN; callers that care resolve it with lstat_at.
void for_each_entry(int dirfd, const std::string& what,
                    const std::function<void(const std::string& name, unsigned char type)>& fn);
// d_type resolved with lstat when the filesystem reports DT_UNKNOWN.
unsigned char entry_type(int dirfd, const std::string& name, unsigned char reported,
                         const std::string& what);

// Joins a directory description and an entry for messages ("streams" + "x" -> "streams/x").
inline std::string join(std::string_view dir, std::string_view name) {
  std::string out(dir);
  if (!out.empty() && out.back() != '/') out += '/';
  out += name;
  return out;
}

}  // namespace cfs::store::detail
