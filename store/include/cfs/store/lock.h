// The repository lock protocol shared with composefs-rs: flock(2) on the repository
// directory itself. Every command that reads or writes holds LOCK_SH for its whole run;
// garbage collection takes LOCK_EX, so it runs only when no other command has the
// repository open, and commands started during a collection wait for it to finish.
#pragma once

#include <string>

namespace cfs::store {

enum class LockMode { shared, exclusive };

// Blocks until the lock is granted (EINTR is retried). Converting an existing lock on the
// same descriptor is allowed (flock drops the old lock first, so it is not atomic).
void lock_directory(int dirfd, LockMode mode, const std::string& what);
// Non-blocking variant: false if another process holds a conflicting lock.
bool try_lock_directory(int dirfd, LockMode mode, const std::string& what);

}  // namespace cfs::store
