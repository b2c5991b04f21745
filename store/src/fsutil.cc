#include "fsutil.h"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <memory>

#include "cfs/error.h"
#include "cfs/safe_open.h"

namespace cfs::store::detail {

UniqueFd open_dir_at(int dirfd, const std::string& name, const std::string& what) {
  return open_dir_beneath(dirfd, name, what);
}

UniqueFd open_dir_if_exists(int dirfd, const std::string& name, const std::string& what) {
  return open_beneath_if_exists(dirfd, name, O_RDONLY | O_DIRECTORY, what);
}

bool make_dir_at(int dirfd, const std::string& name, unsigned mode, const std::string& what) {
  return mkdir_beneath(dirfd, name, mode, what);
}

UniqueFd make_dirs_at(int dirfd, std::string_view path, const std::string& what) {
  return mkdirs_beneath(dirfd, path, 0755, what);
}

void fsync_or_throw(int fd, const std::string& what) {
  if (::fsync(fd) < 0) throw_errno(what + ": fsync");
}

void syncfs_or_throw(int fd, const std::string& what) {
  if (::syncfs(fd) < 0) throw_errno(what + ": syncfs");
}

std::optional<std::string> read_link_at(int dirfd, const std::string& name) {
  return readlink_beneath(dirfd, name, name);
}

std::optional<struct stat> lstat_at(int dirfd, const std::string& name, const std::string& what) {
  return lstat_beneath(dirfd, name, what);
}

void unlink_at(int dirfd, const std::string& name, const std::string& what) {
  unlink_beneath(dirfd, name, 0, what);
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
