#include "kernel.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "cfs/fs_context.h"

namespace cfs::kmount::detail {

std::string fd_path(int fd) {
  return "/proc/self/fd/" + std::to_string(fd);
}

FsContext::FsContext(std::string fstype) : fstype_(std::move(fstype)) {
  fd_.reset(::fsopen(fstype_.c_str(), FSOPEN_CLOEXEC));
  if (!fd_) {
    int code = errno;
    // SystemError appends strerror(code) itself.
    throw MountApiError(code, MountApiError::Stage::open, "fsopen(" + fstype_ + ")");
  }
}

void FsContext::fail(MountApiError::Stage stage, const std::string& step) {
  int code = errno;
  std::string detail = drain_fs_context_log(fd_.get());
  std::string message = fstype_ + " " + step;
  if (!detail.empty()) message += " (kernel: " + detail + ")";
  throw MountApiError(code, stage, message);
}

void FsContext::set_string(const std::string& key, const std::string& value) {
  if (::fsconfig(fd_.get(), FSCONFIG_SET_STRING, key.c_str(), value.c_str(), 0) < 0)
    fail(MountApiError::Stage::parameter, key + "=" + value);
}

int FsContext::try_set_string(const std::string& key, const std::string& value) {
  if (::fsconfig(fd_.get(), FSCONFIG_SET_STRING, key.c_str(), value.c_str(), 0) == 0) return 0;
  int code = errno;
  drain_fs_context_log(fd_.get());
  return code;
}

void FsContext::set_flag(const std::string& key) {
  if (::fsconfig(fd_.get(), FSCONFIG_SET_FLAG, key.c_str(), nullptr, 0) < 0)
    fail(MountApiError::Stage::parameter, key);
}

void FsContext::set_fd(const std::string& key, int fd) {
  if (::fsconfig(fd_.get(), FSCONFIG_SET_FD, key.c_str(), nullptr, fd) < 0)
    fail(MountApiError::Stage::parameter, key + " (by fd)");
}

void FsContext::create() {
  if (::fsconfig(fd_.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) < 0)
    fail(MountApiError::Stage::create, "create");
}

UniqueFd FsContext::mount(unsigned attributes) {
  UniqueFd m(::fsmount(fd_.get(), FSMOUNT_CLOEXEC, attributes));
  if (!m) fail(MountApiError::Stage::mount, "fsmount");
  return m;
}

void attach_mount(int mount_fd, int target_fd, const std::string& target_name) {
  if (::move_mount(mount_fd, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) <
      0)
    throw_errno(target_name + ": cannot attach the mount");
}

LoopDevice LoopDevice::bind(int backing_fd, const std::string& backing_name) {
  UniqueFd control(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!control) throw_errno("/dev/loop-control (needed for a loop device)");
  // Another process may claim the free device between GET_FREE and CONFIGURE; try again then.
  for (int attempt = 0; attempt < 32; attempt++) {
    int index = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
    if (index < 0) throw_errno("/dev/loop-control: no free loop device");
    std::string path = "/dev/loop" + std::to_string(index);
    UniqueFd dev(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!dev) throw_errno(path);
    loop_config config{};
    config.fd = static_cast<uint32_t>(backing_fd);
    config.block_size = 4096;
    config.info.lo_flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO;
    std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name), backing_name.c_str(),
                 LO_NAME_SIZE - 1);
    if (::ioctl(dev.get(), LOOP_CONFIGURE, &config) == 0) return LoopDevice(std::move(dev), path);
    if (errno != EBUSY) throw_errno(path + ": LOOP_CONFIGURE for " + backing_name);
  }
  throw Error(backing_name + ": every free loop device was taken by someone else; giving up");
}

namespace {

std::string attachment_parent() {
  struct stat st {};
  return (::stat("/run", &st) == 0 && S_ISDIR(st.st_mode)) ? "/run" : "/tmp";
}

}  // namespace

TemporaryAttachment::TemporaryAttachment(int mount_fd, std::string_view purpose)
    : dir_(attachment_parent(), ".cfs-" + std::string(purpose) + "-") {
  if (::move_mount(mount_fd, "", AT_FDCWD, dir_.path().c_str(), MOVE_MOUNT_F_EMPTY_PATH) < 0)
    throw_errno(dir_.path() + ": cannot attach the " + std::string(purpose) + " mount");
  mounted_ = true;
}

TemporaryAttachment::~TemporaryAttachment() {
  // A directory still mounted on is left alone: removing its tree would reach into the mount.
  if (mounted_ && ::umount2(dir_.path().c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) < 0) dir_.release();
}

}  // namespace cfs::kmount::detail
