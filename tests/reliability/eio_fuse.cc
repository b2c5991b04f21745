#define FUSE_USE_VERSION 31
#include "eio_fuse.h"

#include <dirent.h>
#include <fcntl.h>
#include <fuse.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

namespace cfs::test {

struct EioFuse::State {
  std::string backing;
  std::string mountpoint;
  std::set<std::string> failing;
  size_t failing_after;
  bool writable = false;
  fuse* fs = nullptr;
  bool mounted = false;
  std::thread loop;

  static State& self() { return *static_cast<State*>(fuse_get_context()->private_data); }
  std::string real(const char* path) const { return backing + path; }
};

namespace {

int op_getattr(const char* path, struct stat* st, fuse_file_info*) {
  return ::lstat(EioFuse::State::self().real(path).c_str(), st) == 0 ? 0 : -errno;
}

int op_readlink(const char* path, char* buf, size_t size) {
  ssize_t n = ::readlink(EioFuse::State::self().real(path).c_str(), buf, size - 1);
  if (n < 0) return -errno;
  buf[n] = '\0';
  return 0;
}

int op_listxattr(const char* path, char* list, size_t size) {
  ssize_t n = ::llistxattr(EioFuse::State::self().real(path).c_str(), list, size);
  return n < 0 ? -errno : static_cast<int>(n);
}

int op_getxattr(const char* path, const char* name, char* value, size_t size) {
  ssize_t n = ::lgetxattr(EioFuse::State::self().real(path).c_str(), name, value, size);
  return n < 0 ? -errno : static_cast<int>(n);
}

int op_readdir(const char* path, void* buf, fuse_fill_dir_t filler, off_t, fuse_file_info*,
               fuse_readdir_flags) {
  DIR* dir = ::opendir(EioFuse::State::self().real(path).c_str());
  if (!dir) return -errno;
  while (dirent* e = ::readdir(dir)) filler(buf, e->d_name, nullptr, 0, fuse_fill_dir_flags{});
  ::closedir(dir);
  return 0;
}

int op_open(const char* path, fuse_file_info* fi) {
  const EioFuse::State& s = EioFuse::State::self();
  if ((fi->flags & O_ACCMODE) != O_RDONLY && !s.writable) return -EROFS;
  int flags = (fi->flags & (O_ACCMODE | O_TRUNC | O_APPEND)) | O_CLOEXEC;
  int fd = ::open(s.real(path).c_str(), flags);
  if (fd < 0) return -errno;
  fi->fh = static_cast<uint64_t>(fd);
  fi->direct_io = 1;  // every read reaches the server: no page cache hides the failure
  return 0;
}

int op_read(const char* path, char* buf, size_t size, off_t offset, fuse_file_info* fi) {
  const EioFuse::State& s = EioFuse::State::self();
  if (s.failing.contains(path + 1) && static_cast<size_t>(offset) + size > s.failing_after)
    return -EIO;
  ssize_t n = ::pread(static_cast<int>(fi->fh), buf, size, offset);
  return n < 0 ? -errno : static_cast<int>(n);
}

int op_release(const char*, fuse_file_info* fi) {
  ::close(static_cast<int>(fi->fh));
  return 0;
}

// The writable view: each call is the same call on the backing path.
int result(int rc) {
  return rc == 0 ? 0 : -errno;
}

int op_create(const char* path, mode_t mode, fuse_file_info* fi) {
  int fd = ::open(EioFuse::State::self().real(path).c_str(),
                  (fi->flags & (O_ACCMODE | O_EXCL | O_TRUNC)) | O_CREAT | O_CLOEXEC, mode);
  if (fd < 0) return -errno;
  fi->fh = static_cast<uint64_t>(fd);
  fi->direct_io = 1;
  return 0;
}

int op_write(const char*, const char* buf, size_t size, off_t offset, fuse_file_info* fi) {
  ssize_t n = ::pwrite(static_cast<int>(fi->fh), buf, size, offset);
  return n < 0 ? -errno : static_cast<int>(n);
}

int op_fsync(const char*, int, fuse_file_info* fi) {
  return result(::fsync(static_cast<int>(fi->fh)));
}

int op_mkdir(const char* path, mode_t mode) {
  return result(::mkdir(EioFuse::State::self().real(path).c_str(), mode));
}

int op_unlink(const char* path) {
  return result(::unlink(EioFuse::State::self().real(path).c_str()));
}

int op_rmdir(const char* path) {
  return result(::rmdir(EioFuse::State::self().real(path).c_str()));
}

int op_symlink(const char* target, const char* path) {
  return result(::symlink(target, EioFuse::State::self().real(path).c_str()));
}

int op_link(const char* from, const char* to) {
  const EioFuse::State& s = EioFuse::State::self();
  return result(::link(s.real(from).c_str(), s.real(to).c_str()));
}

int op_rename(const char* from, const char* to, unsigned flags) {
  const EioFuse::State& s = EioFuse::State::self();
  return result(::renameat2(AT_FDCWD, s.real(from).c_str(), AT_FDCWD, s.real(to).c_str(), flags));
}

int op_chmod(const char* path, mode_t mode, fuse_file_info*) {
  return result(::chmod(EioFuse::State::self().real(path).c_str(), mode));
}

int op_truncate(const char* path, off_t size, fuse_file_info* fi) {
  if (fi) return result(::ftruncate(static_cast<int>(fi->fh), size));
  return result(::truncate(EioFuse::State::self().real(path).c_str(), size));
}

int op_utimens(const char* path, const struct timespec tv[2], fuse_file_info*) {
  return result(
      ::utimensat(AT_FDCWD, EioFuse::State::self().real(path).c_str(), tv, AT_SYMLINK_NOFOLLOW));
}

}  // namespace

EioFuse::EioFuse(std::string backing, std::string mountpoint, std::set<std::string> failing,
                 size_t failing_after, bool writable)
    : state_(std::make_unique<State>()) {
  state_->writable = writable;
  state_->backing = std::move(backing);
  state_->mountpoint = std::move(mountpoint);
  state_->failing = std::move(failing);
  state_->failing_after = failing_after;
  const fuse_operations ops = [writable] {
    fuse_operations o{};
    if (writable) {
      o.create = op_create;
      o.write = op_write;
      o.fsync = op_fsync;
      o.mkdir = op_mkdir;
      o.unlink = op_unlink;
      o.rmdir = op_rmdir;
      o.symlink = op_symlink;
      o.link = op_link;
      o.rename = op_rename;
      o.chmod = op_chmod;
      o.truncate = op_truncate;
      o.utimens = op_utimens;
    }
    o.getattr = op_getattr;
    o.readlink = op_readlink;
    o.readdir = op_readdir;
    o.listxattr = op_listxattr;
    o.getxattr = op_getxattr;
    o.open = op_open;
    o.read = op_read;
    o.release = op_release;
    return o;
  }();
  char arg0[] = "eio-fuse", arg1[] = "-o", arg2[] = "ro", arg2w[] = "rw";
  char* argv[] = {arg0, arg1, writable ? arg2w : arg2};
  fuse_args args = FUSE_ARGS_INIT(3, argv);
  state_->fs = fuse_new(&args, &ops, sizeof ops, state_.get());
  fuse_opt_free_args(&args);
  if (!state_->fs) return;
  if (fuse_mount(state_->fs, state_->mountpoint.c_str()) != 0) return;
  state_->mounted = true;
  state_->loop = std::thread([fs = state_->fs] { fuse_loop(fs); });
}

EioFuse::~EioFuse() {
  if (state_->mounted) {
    fuse_exit(state_->fs);
    fuse_unmount(state_->fs);
    if (state_->loop.joinable()) state_->loop.join();
  }
  if (state_->fs) fuse_destroy(state_->fs);
}

bool EioFuse::mounted() const {
  return state_->mounted;
}

}  // namespace cfs::test
