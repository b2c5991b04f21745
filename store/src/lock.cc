#include "cfs/store/lock.h"

#include <sys/file.h>

#include <cerrno>

#include "cfs/error.h"

namespace cfs::store {

namespace {
int operation(LockMode mode) {
  return mode == LockMode::shared ? LOCK_SH : LOCK_EX;
}
}  // namespace

void lock_directory(int dirfd, LockMode mode, const std::string& what) {
  while (::flock(dirfd, operation(mode)) < 0) {
    if (errno != EINTR) throw_errno(what + ": locking the repository");
  }
}

bool try_lock_directory(int dirfd, LockMode mode, const std::string& what) {
  while (::flock(dirfd, operation(mode) | LOCK_NB) < 0) {
    if (errno == EWOULDBLOCK) return false;
    if (errno != EINTR) throw_errno(what + ": locking the repository");
  }
  return true;
}

}  // namespace cfs::store
