#include "cfs/store/lock.h"

#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

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

std::vector<LockHolder> lock_holders(int dirfd) {
  std::vector<LockHolder> out;
  struct stat st;
  if (::fstat(dirfd, &st) < 0) return out;
  // Lines look like "3: FLOCK  ADVISORY  READ  1234 fd:01:5678 0 EOF"; waiters have "->"
  // after the index and are not holders. The device is major:minor in hex.
  std::ifstream locks("/proc/locks");
  std::string line;
  while (std::getline(locks, line)) {
    std::istringstream in(line);
    std::string index, kind, advisory, type, pid_text, file;
    if (!(in >> index >> kind)) continue;
    if (kind == "->" || kind != "FLOCK") continue;
    if (!(in >> advisory >> type >> pid_text >> file)) continue;
    unsigned maj = 0, min = 0;
    unsigned long long ino = 0;
    if (std::sscanf(file.c_str(), "%x:%x:%llu", &maj, &min, &ino) != 3) continue;
    if (maj != major(st.st_dev) || min != minor(st.st_dev) || ino != st.st_ino) continue;
    pid_t pid = static_cast<pid_t>(std::strtol(pid_text.c_str(), nullptr, 10));
    if (pid <= 0 || pid == ::getpid()) continue;
    LockHolder holder{pid, {}};
    std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
    std::getline(comm, holder.command);
    out.push_back(std::move(holder));
  }
  return out;
}

std::string describe_lock_holders(int dirfd) {
  std::vector<LockHolder> holders = lock_holders(dirfd);
  if (holders.empty()) return "another process (not visible in /proc/locks)";
  std::string out;
  for (const LockHolder& h : holders) {
    if (!out.empty()) out += ", ";
    out += "pid " + std::to_string(h.pid);
    if (!h.command.empty()) out += " (" + h.command + ")";
  }
  return out;
}

}  // namespace cfs::store
