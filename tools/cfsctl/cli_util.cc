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
#include <random>
#include <vector>

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

std::string random_suffix() {
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::random_device rd;
  std::uniform_int_distribution<size_t> pick(0, sizeof kChars - 2);
  std::string s(6, 'x');
  for (char& c : s) c = kChars[pick(rd)];
  return s;
}

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

void fsync_and_close(UniqueFd& fd, const std::string& what) {
  if (::fsync(fd.get()) < 0) throw_errno(what + ": fsync");
  // close(2) can report delayed write errors (NFS), so do not leave it to the destructor.
  if (::close(fd.release()) < 0) throw_errno(what + ": close");
}

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

UniqueFd create_unique_file(int dirfd, const std::string& prefix, unsigned mode, std::string& name,
                            const std::string& what) {
  for (int attempt = 0; attempt < 100; attempt++) {
    name = prefix + random_suffix();
    int fd = ::openat(dirfd, name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd >= 0) return UniqueFd(fd);
    if (errno != EEXIST) throw_errno(what + ": creating temporary file");
  }
  throw Error(what + ": cannot find a free temporary file name");
}

AtomicFile::AtomicFile(std::string path, unsigned mode) : path_(std::move(path)) {
  size_t slash = path_.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path_.substr(0, slash + 1);
  std::string base = slash == std::string::npos ? path_ : path_.substr(slash + 1);
  if (base.empty() || base == "." || base == "..")
    throw Error(path_ + ": not a valid file name for the output");
  std::string name;
  UniqueFd dirfd;
  try {
    dirfd = open_file(dir, O_PATH | O_DIRECTORY);
  } catch (const SystemError& e) {
    throw Error(path_ + ": cannot create a file in its directory: " + e.what());
  }
  fd_ = create_unique_file(dirfd.get(), "." + base + ".tmp", mode, name, path_);
  temp_path_ = (slash == std::string::npos ? "" : dir) + name;
}

AtomicFile::~AtomicFile() {
  if (!committed_) ::unlink(temp_path_.c_str());
}

void AtomicFile::commit() {
  fsync_and_close(fd_, path_);
  if (::rename(temp_path_.c_str(), path_.c_str()) < 0) throw_errno(path_);
  committed_ = true;
}

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
