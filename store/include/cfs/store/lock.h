// The repository lock protocol shared with composefs-rs: flock(2) on the repository
// directory itself. Every command that reads or writes holds LOCK_SH for its whole run;
// garbage collection takes LOCK_EX, so it runs only when no other command has the
// repository open, and commands started during a collection wait for it to finish.
#pragma once

#include <sys/types.h>
#include <string>
#include <vector>

namespace cfs::store {

enum class LockMode { shared, exclusive };

// Blocks until the lock is granted (EINTR is retried). Converting an existing lock on the
// same descriptor is allowed (flock drops the old lock first, so it is not atomic).
void lock_directory(int dirfd, LockMode mode, const std::string& what);
// Non-blocking variant: false if another process holds a conflicting lock.
bool try_lock_directory(int dirfd, LockMode mode, const std::string& what);

// A process holding a flock on a repository directory, from /proc/locks.
struct LockHolder {
  pid_t pid = 0;
  std::string command;  // /proc/PID/comm, empty if unreadable
};
// The processes other than this one that hold (not wait for) a flock on dirfd's inode.
std::vector<LockHolder> lock_holders(int dirfd);
// "pid 123 (cfs-fuse), pid 456 (cfsctl)", or "another process (not visible in /proc/locks)".
std::string describe_lock_holders(int dirfd);

}  // namespace cfs::store
