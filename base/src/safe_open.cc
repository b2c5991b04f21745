#include "cfs/safe_open.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "cfs/error.h"

namespace cfs {

namespace {

std::vector<std::string> components(std::string_view rel, const std::string& what) {
  if (rel.starts_with('/')) throw Error(what + ": absolute path where a relative one is needed");
  std::vector<std::string> out;
  while (!rel.empty()) {
    auto slash = rel.find('/');
    std::string_view part = rel.substr(0, slash);
    if (part == "..") throw Error(what + ": '..' is not allowed in a confined path");
    if (!part.empty() && part != ".") out.emplace_back(part);
    if (slash == std::string_view::npos) break;
    rel.remove_prefix(slash + 1);
  }
  return out;
}

std::string join_parts(const std::vector<std::string>& parts, size_t count) {
  std::string out;
  for (size_t i = 0; i < count; ++i) {
    if (i) out += '/';
    out += parts[i];
  }
  return out;
}

[[noreturn]] void throw_symlink(const std::string& what, const std::string& component) {
  // what usually ends with the component already ("<repo>/objects"): say it once.
  const bool named = what == component || what.ends_with("/" + component);
  throw Error(what + ": " + (named ? std::string() : component + " ") +
              "is a symlink, which is not followed here (a symlink in place of a directory or "
              "file could redirect this outside)");
}

// After ELOOP/ENOTDIR: names the first component that is a symlink, if one is.
void explain_symlink(int dirfd, const std::vector<std::string>& parts, const std::string& what) {
  for (size_t i = 0; i < parts.size(); ++i) {
    std::string prefix = join_parts(parts, i + 1);
    struct stat st;
    if (::fstatat(dirfd, prefix.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) return;
    if (S_ISLNK(st.st_mode)) throw_symlink(what, prefix);
    if (!S_ISDIR(st.st_mode)) return;
  }
}

int raw_openat(int dirfd, const char* path, int flags, unsigned mode) {
  int fd;
  do {
    fd = ::openat(dirfd, path, flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// The walk: -1 with errno on failure, except symlinks, which throw.
int walk(int dirfd, const std::vector<std::string>& parts, int flags, unsigned mode,
         const std::string& what) {
  if (parts.empty()) return raw_openat(dirfd, ".", flags & ~(O_CREAT | O_EXCL), mode);
  UniqueFd current;
  int at = dirfd;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    int fd = raw_openat(at, parts[i].c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW, 0);
    if (fd < 0) {
      int saved = errno;
      if (saved == ELOOP || saved == ENOTDIR) explain_symlink(dirfd, parts, what);
      errno = saved;
      return -1;
    }
    current.reset(fd);
    at = fd;
  }
  int fd = raw_openat(at, parts.back().c_str(), flags | O_NOFOLLOW, mode);
  if (fd < 0) {
    int saved = errno;
    if (saved == ELOOP || saved == ENOTDIR) explain_symlink(dirfd, parts, what);
    errno = saved;
    return -1;
  }
  if (flags & O_PATH) {
    // O_PATH | O_NOFOLLOW opens a symlink itself instead of failing.
    struct stat st;
    if (::fstat(fd, &st) == 0 && S_ISLNK(st.st_mode)) {
      ::close(fd);
      throw_symlink(what, join_parts(parts, parts.size()));
    }
  }
  return fd;
}

// openat2 confined to dirfd, falling back to the walk where the kernel lacks openat2.
int confined_open(int dirfd, std::string_view rel, int flags, unsigned mode,
                  const std::string& what) {
  std::vector<std::string> parts = components(rel, what);
  std::string path = parts.empty() ? "." : join_parts(parts, parts.size());
  if (parts.empty()) flags &= ~(O_CREAT | O_EXCL);
  open_how how{};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC | O_NOFOLLOW);
  // The mode must be zero unless a file may be created (openat2 checks it, openat does not).
  how.mode = ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  for (;;) {
    long fd = ::syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how);
    if (fd >= 0) {
      if (flags & O_PATH) {
        struct stat st;
        if (::fstat(static_cast<int>(fd), &st) == 0 && S_ISLNK(st.st_mode)) {
          ::close(static_cast<int>(fd));
          throw_symlink(what, path);
        }
      }
      return static_cast<int>(fd);
    }
    if (errno == EINTR || errno == EAGAIN) continue;
    // ENOSYS: no openat2 (before Linux 5.6); EPERM: a seccomp filter that does not know it.
    if (errno == ENOSYS || errno == EPERM) return walk(dirfd, parts, flags, mode, what);
    int saved = errno;
    if (saved == ELOOP || saved == EXDEV || saved == ENOTDIR) explain_symlink(dirfd, parts, what);
    errno = saved;
    return -1;
  }
}

}  // namespace

UniqueFd open_beneath(int dirfd, std::string_view rel, int flags, unsigned mode,
                      const std::string& what) {
  int fd = confined_open(dirfd, rel, flags, mode, what);
  if (fd < 0) throw_errno(what);
  return UniqueFd(fd);
}

UniqueFd open_beneath_if_exists(int dirfd, std::string_view rel, int flags,
                                const std::string& what) {
  int fd = confined_open(dirfd, rel, flags, 0, what);
  if (fd < 0) {
    if (errno == ENOENT) return UniqueFd();
    throw_errno(what);
  }
  return UniqueFd(fd);
}

UniqueFd open_beneath_walk(int dirfd, std::string_view rel, int flags, unsigned mode,
                           const std::string& what) {
  int fd = walk(dirfd, components(rel, what), flags, mode, what);
  if (fd < 0) throw_errno(what);
  return UniqueFd(fd);
}

UniqueFd open_dir_beneath(int dirfd, std::string_view rel, const std::string& what,
                          bool path_only) {
  return open_beneath(dirfd, rel, (path_only ? O_PATH : O_RDONLY) | O_DIRECTORY, 0, what);
}

UniqueFd open_regular_beneath(int dirfd, std::string_view rel, int flags, const std::string& what) {
  UniqueFd fd = open_beneath(dirfd, rel, flags | O_NONBLOCK | O_NOCTTY, 0, what);
  struct stat st;
  if (::fstat(fd.get(), &st) < 0) throw_errno(what);
  if (!S_ISREG(st.st_mode)) throw Error(what + ": not a regular file");
  if (!(flags & O_NONBLOCK)) {
    int fl = ::fcntl(fd.get(), F_GETFL);
    if (fl < 0 || ::fcntl(fd.get(), F_SETFL, fl & ~O_NONBLOCK) < 0) throw_errno(what);
  }
  return fd;
}

ParentDir open_parent_beneath(int dirfd, std::string_view rel, const std::string& what) {
  std::vector<std::string> parts = components(rel, what);
  if (parts.empty()) throw Error(what + ": empty path");
  ParentDir parent;
  parent.name = parts.back();
  if (parts.size() == 1) {
    parent.fd = dirfd;
    return parent;
  }
  parent.owned =
      open_beneath(dirfd, join_parts(parts, parts.size() - 1), O_PATH | O_DIRECTORY, 0, what);
  parent.fd = parent.owned.get();
  return parent;
}

bool mkdir_beneath(int dirfd, std::string_view rel, unsigned mode, const std::string& what) {
  ParentDir parent = open_parent_beneath(dirfd, rel, what);
  if (::mkdirat(parent.fd, parent.name.c_str(), mode) == 0) return true;
  if (errno != EEXIST) throw_errno(what);
  struct stat st;
  if (::fstatat(parent.fd, parent.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) throw_errno(what);
  if (S_ISLNK(st.st_mode)) throw_symlink(what, std::string(rel));
  if (!S_ISDIR(st.st_mode)) throw Error(what + ": exists and is not a directory");
  return false;
}

UniqueFd mkdirs_beneath(int dirfd, std::string_view rel, unsigned mode, const std::string& what) {
  std::vector<std::string> parts = components(rel, what);
  UniqueFd current = open_beneath(dirfd, ".", O_RDONLY | O_DIRECTORY, 0, what);
  std::string done;
  for (const std::string& part : parts) {
    done = done.empty() ? part : done + "/" + part;
    if (::mkdirat(current.get(), part.c_str(), mode) < 0 && errno != EEXIST) throw_errno(what);
    int fd = raw_openat(current.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0);
    if (fd < 0) {
      struct stat st;
      if (::fstatat(current.get(), part.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          S_ISLNK(st.st_mode))
        throw_symlink(what, done);
      throw_errno(what);
    }
    current.reset(fd);
  }
  return current;
}

namespace {

// The parent of rel, or nothing when a component on the way does not exist.
std::optional<ParentDir> open_parent_if_exists(int dirfd, std::string_view rel,
                                               const std::string& what) {
  try {
    return open_parent_beneath(dirfd, rel, what);
  } catch (const SystemError& e) {
    if (e.code() == ENOENT || e.code() == ENOTDIR) return std::nullopt;
    throw;
  }
}

}  // namespace

std::optional<struct stat> lstat_beneath(int dirfd, std::string_view rel, const std::string& what) {
  std::optional<ParentDir> parent = open_parent_if_exists(dirfd, rel, what);
  if (!parent) return std::nullopt;
  struct stat st;
  if (::fstatat(parent->fd, parent->name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return st;
  if (errno == ENOENT || errno == ENOTDIR) return std::nullopt;
  throw_errno(what);
}

std::optional<std::string> readlink_beneath(int dirfd, std::string_view rel,
                                            const std::string& what) {
  std::optional<ParentDir> parent = open_parent_if_exists(dirfd, rel, what);
  if (!parent) return std::nullopt;
  std::string buf(4096, '\0');
  ssize_t n = ::readlinkat(parent->fd, parent->name.c_str(), buf.data(), buf.size());
  if (n < 0) {
    if (errno == ENOENT || errno == EINVAL || errno == ENOTDIR) return std::nullopt;
    throw_errno(what);
  }
  if (static_cast<size_t>(n) >= buf.size()) return std::nullopt;
  buf.resize(static_cast<size_t>(n));
  return buf;
}

bool unlink_beneath(int dirfd, std::string_view rel, int flags, const std::string& what) {
  std::optional<ParentDir> parent;
  try {
    parent = open_parent_beneath(dirfd, rel, what);
  } catch (const SystemError& e) {
    if (e.code() == ENOENT) return false;
    throw;
  }
  if (::unlinkat(parent->fd, parent->name.c_str(), flags) == 0) return true;
  if (errno == ENOENT) return false;
  throw_errno(what + ": removing");
}

}  // namespace cfs
