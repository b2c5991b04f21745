#include "cli_util.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <vector>

#include "cfs/atomic_file.h"
#include "cfs/error.h"
#include "cfs/file_copy.h"
#include "cfs/fsverity.h"
#include "cfs/kernel_verity.h"

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

// Data copy for the object store: a reflink when the filesystem allows it, else a copy.
void clone_or_copy(int in, int out, uint64_t size, const std::string& what) {
  if (::ioctl(out, FICLONE, in) == 0) return;
  copy_file_data(in, 0, out, size, what);
}

// Best effort, as C mkcomposefs does: objects get fs-verity where the filesystem supports
// it, and stay plain files elsewhere.
void try_enable_verity(int dirfd, const std::string& name) {
  UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return;
  try {
    enable_verity(fd.get(), HashAlgorithm::sha256, name);
  } catch (const Error&) {
    // Not even a real failure stops the copy: the object is correct without fs-verity.
  }
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
  clone_or_copy(fd, out.get(), size, path + " -> " + what);
  // The umask may have narrowed the mode; objects are meant to be world-readable.
  if (::fchmod(out.get(), 0644) < 0) throw_errno(what);
  fsync_and_close(out, what);
  try_enable_verity(subfd.get(), temp);
  if (::renameat(subfd.get(), temp.c_str(), subfd.get(), rest.c_str()) < 0) throw_errno(what);
  guard.release();
}

}  // namespace cfs::cli
