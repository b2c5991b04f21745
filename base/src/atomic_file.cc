#include "cfs/atomic_file.h"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <string_view>

#include "cfs/error.h"

namespace cfs {

std::string random_suffix() {
  static constexpr std::string_view kAlphabet =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::array<unsigned char, 12> bytes;
  size_t got = 0;
  while (got < bytes.size()) {
    ssize_t n = ::getrandom(bytes.data() + got, bytes.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("getrandom");
    }
    got += static_cast<size_t>(n);
  }
  std::string out;
  for (unsigned char b : bytes) out += kAlphabet[b % kAlphabet.size()];
  return out;
}

void fsync_and_close(UniqueFd& fd, const std::string& what) {
  if (::fsync(fd.get()) < 0) throw_errno(what + ": fsync");
  // close(2) can report delayed write errors (NFS), so do not leave it to the destructor.
  if (::close(fd.release()) < 0) throw_errno(what + ": close");
}

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

}  // namespace cfs
