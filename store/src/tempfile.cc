#include "tempfile.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>

#include "cfs/atomic_file.h"
#include "cfs/error.h"

namespace cfs::store::detail {

namespace {

std::string proc_fd_path(int fd) {
  return "/proc/self/fd/" + std::to_string(fd);
}

}  // namespace

UniqueFd reopen_read_only(int fd, const std::string& what) {
  int ro = ::open(proc_fd_path(fd).c_str(), O_RDONLY | O_CLOEXEC);
  if (ro < 0) throw_errno(what + ": reopening read-only");
  return UniqueFd(ro);
}

UniqueFd open_tmpfile(int dirfd, unsigned mode, const std::string& what) {
  int fd = ::openat(dirfd, ".", O_RDWR | O_TMPFILE | O_CLOEXEC, mode);
  if (fd >= 0) return UniqueFd(fd);
  if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL) return UniqueFd();
  throw_errno(what + ": creating a temporary file");
}

UniqueFd create_named_temp(int dirfd, const std::string& prefix, std::string& name, unsigned mode,
                           const std::string& what) {
  for (int attempt = 0;; ++attempt) {
    name = prefix + random_suffix();
    int fd = ::openat(dirfd, name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd >= 0) return UniqueFd(fd);
    if (errno != EEXIST || attempt > 8) throw_errno(what + ": creating " + name);
  }
}

bool link_tmpfile(int fd, int dirfd, const std::string& name, const std::string& what) {
  if (::linkat(AT_FDCWD, proc_fd_path(fd).c_str(), dirfd, name.c_str(), AT_SYMLINK_FOLLOW) == 0)
    return true;
  if (errno == EEXIST) return false;
  if (errno == ENOENT) {  // no /proc: AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH but may work
    if (::linkat(fd, "", dirfd, name.c_str(), AT_EMPTY_PATH) == 0) return true;
    if (errno == EEXIST) return false;
  }
  throw_errno(what + ": linking " + name);
}

bool rename_noreplace(int from_dir, const std::string& from, int to_dir, const std::string& to,
                      const std::string& what) {
  if (::renameat2(from_dir, from.c_str(), to_dir, to.c_str(), RENAME_NOREPLACE) == 0) return true;
  if (errno == EEXIST) return false;
  if (errno != EINVAL && errno != ENOSYS) throw_errno(what + ": renaming to " + to);
  if (::linkat(from_dir, from.c_str(), to_dir, to.c_str(), 0) < 0) {
    if (errno == EEXIST) return false;
    throw_errno(what + ": linking " + to);
  }
  ::unlinkat(from_dir, from.c_str(), 0);
  return true;
}

}  // namespace cfs::store::detail
