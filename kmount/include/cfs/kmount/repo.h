// The part of a composefs repository that mounting needs: images/<id>, images/refs/<name>,
// objects/ and whether the repository is "secure" (its meta.json carries fs-verity).
#pragma once

#include <string>
#include <string_view>

#include "cfs/digest.h"
#include "cfs/fd.h"

namespace cfs::kmount {

// Everything is resolved beneath REPO without following symlinks (cfs/safe_open.h): a
// repository whose objects/ is a symlink is refused, and images/<hex> is opened itself (a
// regular file) or through the objects/ path its symlink names, never by following it.
// The fds stay open so the mount uses exactly what was checked; mount through mount_path()
// and objects_path() (/proc/self/fd/N), which name these fds.
struct RepoImage {
  std::string image_path;   // REPO/images/<hex> (for messages)
  std::string objects_dir;  // REPO/objects (for messages)
  Digest id;                // the image's fs-verity digest (its name)
  bool secure = false;
  UniqueFd image_fd;    // the image file, a regular file
  UniqueFd objects_fd;  // REPO/objects, O_PATH

  std::string mount_path() const;
  std::string objects_path() const;
};

// REPO/objects (O_PATH), opened beneath REPO and refused if it is a symlink; for images given
// as a path next to --repo. Mount it through repo_fd_path(fd).
UniqueFd open_repo_objects(const std::string& repo);
// "/proc/self/fd/N": how the kernel is handed a directory or file already opened.
std::string repo_fd_path(int fd);

// True when REPO/meta.json has fs-verity enabled (the composefs-rs definition of a secure
// repository). Throws when REPO is not a directory.
bool repository_is_secure(const std::string& repo);

// Resolves NAME inside REPO: a full hex image id (64 or 128 digits) or a ref name below
// images/refs/. OCI references ("oci:..." or "name:tag") are refused with a clear error.
RepoImage resolve_repo_image(const std::string& repo, std::string_view name);

}  // namespace cfs::kmount
