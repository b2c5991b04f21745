// Thin RAII layer over the mount API and loop devices, with the kernel's own error text.
#pragma once

#include <string>
#include <string_view>

#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/temp_dir.h"

namespace cfs::kmount::detail {

// "/proc/self/fd/N": how a layer held by fd is named where the kernel wants a path.
std::string fd_path(int fd);

// A failed fsconfig/fsmount step; stage tells whether a parameter was refused (the kernel lacks
// the feature) or the filesystem could not be created from accepted parameters.
class MountApiError : public SystemError {
 public:
  enum class Stage { open, parameter, create, mount };
  MountApiError(int code, Stage stage, const std::string& what)
      : SystemError(code, what), stage_(stage) {}
  Stage stage() const noexcept { return stage_; }

 private:
  Stage stage_;
};

// An fsopen() filesystem context.
class FsContext {
 public:
  // Throws MountApiError(stage open): ENOSYS without the new mount API, ENODEV for an unknown
  // filesystem type.
  explicit FsContext(std::string fstype);

  void set_string(const std::string& key, const std::string& value);
  // For probes: returns 0 or the errno, without throwing (exceptions are costly in the static
  // binary, whose unwinder sorts every FDE on the first throw, ~20 ms).
  int try_set_string(const std::string& key, const std::string& value);
  void set_flag(const std::string& key);
  void set_fd(const std::string& key, int fd);
  void create();
  // fsmount(): the new, detached mount.
  UniqueFd mount(unsigned attributes);

 private:
  [[noreturn]] void fail(MountApiError::Stage stage, const std::string& step);
  std::string fstype_;
  UniqueFd fd_;
};

// Attaches mount_fd (a detached mount) on the directory target_fd refers to.
void attach_mount(int mount_fd, int target_fd, const std::string& target_name);

// A loop device bound read-only to a file with autoclear: the binding ends when the last user
// (this object or a filesystem on it) goes away.
class LoopDevice {
 public:
  static LoopDevice bind(int backing_fd, const std::string& backing_name);
  const std::string& path() const noexcept { return path_; }

 private:
  LoopDevice(UniqueFd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  UniqueFd fd_;
  std::string path_;
};

// A private, freshly created directory with a mount on it; the destructor lazily unmounts and
// removes the directory, whatever happened in between.
class TemporaryAttachment {
 public:
  TemporaryAttachment(int mount_fd, std::string_view purpose);
  ~TemporaryAttachment();
  TemporaryAttachment(const TemporaryAttachment&) = delete;
  TemporaryAttachment& operator=(const TemporaryAttachment&) = delete;
  const std::string& path() const noexcept { return dir_.path(); }

 private:
  TempDir dir_;
  bool mounted_ = false;
};

}  // namespace cfs::kmount::detail
