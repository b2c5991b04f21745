#include "fsutil.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <memory>

#include "cfs/error.h"

namespace cfs::store::detail {

UniqueFd open_dir_at(int dirfd, const std::string& name, const std::string& what) {
  int fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_errno(what);
  return UniqueFd(fd);
}

UniqueFd open_dir_if_exists(int dirfd, const std::string& name, const std::string& what) {
  int fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return UniqueFd();
    throw_errno(what);
  }
  return UniqueFd(fd);
}

bool make_dir_at(int dirfd, const std::string& name, unsigned mode, const std::string& what) {
  if (::mkdirat(dirfd, name.c_str(), mode) == 0) return true;
  if (errno != EEXIST) throw_errno(what);
  struct stat st;
  if (::fstatat(dirfd, name.c_str(), &st, 0) < 0) throw_errno(what);
  if (!S_ISDIR(st.st_mode)) throw Error(what + ": exists and is not a directory");
  return false;
}

UniqueFd make_dirs_at(int dirfd, std::string_view path, const std::string& what) {
  UniqueFd current = open_dir_at(dirfd, ".", what);
  while (!path.empty()) {
    auto slash = path.find('/');
    std::string component(path.substr(0, slash));
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    if (component.empty()) continue;
    make_dir_at(current.get(), component, 0755, what);
    current = open_dir_at(current.get(), component, what);
  }
  return current;
}

void fsync_or_throw(int fd, const std::string& what) {
  if (::fsync(fd) < 0) throw_errno(what + ": fsync");
}

void syncfs_or_throw(int fd, const std::string& what) {
  if (::syncfs(fd) < 0) throw_errno(what + ": syncfs");
}

std::optional<std::string> read_link_at(int dirfd, const std::string& name) {
  std::array<char, 4096> buf;
  ssize_t n = ::readlinkat(dirfd, name.c_str(), buf.data(), buf.size());
  if (n < 0 || static_cast<size_t>(n) >= buf.size()) return std::nullopt;
  return std::string(buf.data(), static_cast<size_t>(n));
}

std::optional<struct stat> lstat_at(int dirfd, const std::string& name, const std::string& what) {
  struct stat st;
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return st;
  if (errno == ENOENT) return std::nullopt;
  throw_errno(what);
}

std::optional<struct stat> stat_at(int dirfd, const std::string& name, const std::string& what) {
  struct stat st;
  if (::fstatat(dirfd, name.c_str(), &st, 0) == 0) return st;
  if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP) return std::nullopt;
  throw_errno(what);
}

namespace {
struct DirCloser {
  void operator()(DIR* d) const noexcept { ::closedir(d); }
};
}  // namespace

void for_each_entry(int dirfd, const std::string& what,
                    const std::function<void(const std::string& name, unsigned char type)>& fn) {
  // fdopendir takes ownership, so give it its own descriptor.
  int own = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (own < 0) throw_errno(what);
  std::unique_ptr<DIR, DirCloser> dir(::fdopendir(own));
  if (!dir) {
    ::close(own);
    throw_errno(what);
  }
  for (;;) {
    errno = 0;
    struct dirent* entry = ::readdir(dir.get());
    if (!entry) {
      if (errno != 0) throw_errno(what);
      break;
    }
    std::string_view name(entry->d_name);
    if (name == "." || name == "..") continue;
    fn(std::string(name), entry->d_type);
  }
}

unsigned char entry_type(int dirfd, const std::string& name, unsigned char reported,
                         const std::string& what) {
  if (reported != DT_UNKNOWN) return reported;
  auto st = lstat_at(dirfd, name, what);
  if (!st) return DT_UNKNOWN;
  return static_cast<unsigned char>(IFTODT(st->st_mode));
}

}  // namespace cfs::store::detail
