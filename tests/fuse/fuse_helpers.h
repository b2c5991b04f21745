// Test helpers for cfs-fuse: running the real binary on a mountpoint, describing a mounted
// tree and an in-memory tree in one comparable text form, building images with objects.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cfs/digest.h"
#include "cfs/erofs/tree.h"

namespace cfs::test {

std::string cfs_fuse_binary();

// Whether path is a mount point right now, according to /proc/self/mountinfo (works where
// stat() would be refused, e.g. root looking at another user's FUSE mount).
bool is_mounted(const std::string& path);

// Identity to drop to in a forked child (uid, gid); nullopt = stay root.
struct RunAs {
  uid_t uid;
  gid_t gid;
};

// cfs-fuse running in the foreground (-f) on mountpoint, output in log_path. The destructor
// unmounts and reaps it (SIGKILL after a timeout), whatever the test did.
class FuseProcess {
 public:
  FuseProcess(std::vector<std::string> args, std::string mountpoint, std::string log_path,
              std::optional<RunAs> as = std::nullopt);
  ~FuseProcess();
  FuseProcess(const FuseProcess&) = delete;
  FuseProcess& operator=(const FuseProcess&) = delete;

  // Waits until mounted; false if the process exited first or 20 s passed.
  bool wait_mounted();
  // Waits for the process to end (up to timeout_s); its exit status, or -1 on timeout.
  int wait_exit(int timeout_s = 20);
  pid_t pid() const { return pid_; }
  std::string log() const;

 private:
  pid_t pid_ = -1;
  std::string mountpoint_;
  std::string log_path_;
  int status_ = -1;
};

// A kernel mount of an image: EROFS at erofs_dir, overlay (ro, data-only lower OBJDIR,
// metacopy, redirect_dir) at overlay_dir. Unmounted on destruction.
class KernelMount {
 public:
  KernelMount(const std::string& image, const std::string& objects, const std::string& erofs_dir,
              const std::string& overlay_dir);
  ~KernelMount();
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }

 private:
  std::string erofs_dir_, overlay_dir_;
  bool erofs_mounted_ = false, overlay_mounted_ = false, ok_ = false;
  std::string error_;
};

// One line per path: type, mode, nlink, uid, gid, rdev, size, mtime, hardlink group, symlink
// target, content digest (or the errno name a read gave), sorted xattrs.
// skip_size_of_dirs: overlay and FUSE agree, but callers may want to ignore them.
std::string describe_mount(const std::string& root);

// The same description for a tree; external_content says what a read of an external file
// is expected to give ("EIO", or a sha256 hex).
std::string describe_tree(const erofs::Tree& tree,
                          const std::function<std::string(const erofs::Inode&)>& external_content);

// Builds a tree from a directory, storing each large file as an object (named by fs-verity
// digest) under objects_dir.
erofs::Tree scan_with_objects(const std::string& source_dir, const std::string& objects_dir);

// Writes tree as an image file; returns its path.
void write_image_file(const erofs::Tree& tree, const std::string& path, uint32_t min_version = 0,
                      uint32_t max_version = 1);

// Runs a command (argv, no shell) optionally as another identity; returns exit status and
// collects stdout+stderr.
int run_argv(const std::vector<std::string>& argv, std::string* output = nullptr,
             std::optional<RunAs> as = std::nullopt);

// Runs fn in a forked child as the given identity; returns what fn returned (a string
// passed back through a pipe).
std::string run_in_child_as(const RunAs& as, const std::function<std::string()>& fn);

// Runs fn in a forked child that joined the user and mount namespaces of pid (as root: the
// namespaces cfs-fuse --overlay made); returns what fn returned.
std::string run_in_namespaces_of(pid_t pid, const std::function<std::string()>& fn);

// A throwaway system user, removed again on destruction.
class TempUser {
 public:
  TempUser();
  ~TempUser();
  TempUser(const TempUser&) = delete;
  TempUser& operator=(const TempUser&) = delete;
  const RunAs& as() const { return as_; }

 private:
  std::string name_;
  bool created_ = false;
  RunAs as_{};
};

// /dev/fuse's mode, restored exactly on destruction.
class DevFuseMode {
 public:
  DevFuseMode();
  ~DevFuseMode();
  bool set(mode_t mode);

 private:
  mode_t saved_ = 0;
  bool known_ = false;
};

}  // namespace cfs::test
