#include "cli_util.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <linux/fsverity.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <vector>

#include "cfs/atomic_file.h"
#include "cfs/error.h"
#include "cfs/fsverity.h"

namespace cfs::cli {

int parse_dropin_args(CLI::App& app, std::string_view tool, int argc, char** argv) {
  // CLI11 takes a vector in reverse order (it pops arguments off the back).
  std::vector<std::string> args(argv, argv + argc);
  std::reverse(args.begin(), args.end());
  try {
    app.parse(args);
  } catch (const CLI::CallForHelp&) {
    std::fputs(app.help().c_str(), stdout);
    return 0;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "%.*s: %s\nRun '%.*s --help' for usage.\n", int(tool.size()), tool.data(),
                 e.what(), int(tool.size()), tool.data());
    return 1;
  }
  return -1;
}

namespace {

// Removes a temporary file unless release() was called.
class UnlinkGuard {
 public:
  UnlinkGuard(int dirfd, std::string name) : dirfd_(dirfd), name_(std::move(name)) {}
  UnlinkGuard(const UnlinkGuard&) = delete;
  UnlinkGuard& operator=(const UnlinkGuard&) = delete;
  ~UnlinkGuard() {
    if (!name_.empty()) ::unlinkat(dirfd_, name_.c_str(), 0);
  }
  void release() { name_.clear(); }

 private:
  int dirfd_;
  std::string name_;
};

// Data copy for the object store: reflink when the filesystem allows it, else an in-kernel
// copy, else plain reads and writes.
void copy_file_data(int in, int out, uint64_t size, const std::string& what) {
  if (::ioctl(out, FICLONE, in) == 0) return;
  uint64_t done = 0;
  bool in_kernel = true;
  std::vector<char> buf;
  while (done < size) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(size - done, 1 << 20));
    ssize_t n = -1;
    if (in_kernel) {
      loff_t in_off = static_cast<loff_t>(done), out_off = static_cast<loff_t>(done);
      n = ::copy_file_range(in, &in_off, out, &out_off, chunk, 0);
      if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP ||
                    errno == EBADF)) {
        in_kernel = false;
        buf.resize(1 << 20);
        continue;
      }
    } else {
      n = ::pread(in, buf.data(), chunk, static_cast<off_t>(done));
      if (n > 0)
        write_all(out, {reinterpret_cast<const std::byte*>(buf.data()), static_cast<size_t>(n)},
                  what);
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(what);
    }
    if (n == 0) throw Error(what + ": source file shrank while being copied");
    done += static_cast<uint64_t>(n);
  }
}

// Best effort, as C mkcomposefs does: objects get fs-verity where the filesystem supports
// it, and stay plain files elsewhere.
void try_enable_verity(int dirfd, const std::string& name) {
  int fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  UniqueFd owner(fd);
  fsverity_enable_arg arg{};
  arg.version = 1;
  arg.hash_algorithm = FS_VERITY_HASH_ALG_SHA256;
  arg.block_size = 4096;
  (void)::ioctl(fd, FS_IOC_ENABLE_VERITY, &arg);
}

}  // namespace

Digest hash_file_exact(int fd, uint64_t size, const std::string& path) {
  FsVerityHasher hasher;
  std::vector<std::byte> buf(static_cast<size_t>(std::min<uint64_t>(size + 1, 1 << 20)));
  uint64_t offset = 0;
  for (;;) {
    ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(path);
    }
    if (n == 0) break;
    offset += static_cast<uint64_t>(n);
    if (offset > size) throw Error(path + ": file grew while being read");
    hasher.update({buf.data(), static_cast<size_t>(n)});
  }
  if (offset != size) throw Error(path + ": file shrank while being read");
  return hasher.finish();
}

DigestStore::DigestStore(const std::string& dir) : dir_(dir) {
  if (::mkdir(dir.c_str(), 0755) < 0 && errno != EEXIST) throw_errno(dir);
  dirfd_ = open_file(dir, O_PATH | O_DIRECTORY);
}

void DigestStore::add(int fd, uint64_t size, const Digest& digest, const std::string& path) {
  std::string object = digest.object_path();
  std::string subdir = object.substr(0, 2);
  std::string rest = object.substr(3);
  std::string what = dir_ + "/" + object;
  struct stat st;
  if (::fstatat(dirfd_.get(), object.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return;
  if (::mkdirat(dirfd_.get(), subdir.c_str(), 0755) < 0 && errno != EEXIST)
    throw_errno(dir_ + "/" + subdir);
  UniqueFd subfd = open_at(dirfd_.get(), subdir, O_PATH | O_DIRECTORY);

  std::string temp;
  UniqueFd out = create_unique_file(subfd.get(), ".tmp", 0644, temp, what);
  UnlinkGuard guard(subfd.get(), temp);
  copy_file_data(fd, out.get(), size, path + " -> " + what);
  // The umask may have narrowed the mode; objects are meant to be world-readable.
  if (::fchmod(out.get(), 0644) < 0) throw_errno(what);
  fsync_and_close(out, what);
  try_enable_verity(subfd.get(), temp);
  if (::renameat(subfd.get(), temp.c_str(), subfd.get(), rest.c_str()) < 0) throw_errno(what);
  guard.release();
}

}  // namespace cfs::cli
