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
  if ((fi->flags & O_ACCMODE) != O_RDONLY) return -EROFS;
  int fd = ::open(EioFuse::State::self().real(path).c_str(), O_RDONLY | O_CLOEXEC);
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

}  // namespace

EioFuse::EioFuse(std::string backing, std::string mountpoint, std::set<std::string> failing,
                 size_t failing_after)
    : state_(std::make_unique<State>()) {
  state_->backing = std::move(backing);
  state_->mountpoint = std::move(mountpoint);
  state_->failing = std::move(failing);
  state_->failing_after = failing_after;
  static const fuse_operations ops = [] {
    fuse_operations o{};
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
  char arg0[] = "eio-fuse", arg1[] = "-o", arg2[] = "ro";
  char* argv[] = {arg0, arg1, arg2};
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
