#include "cfs/fd.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>

#include "cfs/error.h"

namespace cfs {

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

UniqueFd open_file(const std::string& path, int flags, unsigned mode) {
  return open_at(AT_FDCWD, path, flags, mode);
}

UniqueFd open_at(int dirfd, const std::string& path, int flags, unsigned mode) {
  int fd;
  do {
    fd = ::openat(dirfd, path.c_str(), flags | O_CLOEXEC, mode);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) throw_errno(path);
  return UniqueFd(fd);
}

void pread_exact(int fd, std::span<std::byte> buf, uint64_t offset, const std::string& what) {
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n =
        ::pread(fd, buf.data() + done, buf.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(what);
    }
    if (n == 0) throw Error(what + ": unexpected end of file");
    done += static_cast<size_t>(n);
  }
}

size_t read_some(int fd, std::span<std::byte> buf, const std::string& what) {
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n >= 0) return static_cast<size_t>(n);
    if (errno != EINTR) throw_errno(what);
  }
}

void write_all(int fd, std::span<const std::byte> data, const std::string& what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(what);
    }
    data = data.subspan(static_cast<size_t>(n));
  }
}

std::string read_fd(int fd, const std::string& what) {
  return read_fd(fd, what, std::string().max_size());
}

std::string read_fd(int fd, const std::string& what, size_t limit) {
  std::string out;
  std::array<std::byte, 65536> buf;
  while (size_t n = read_some(fd, buf, what)) {
    if (n > limit - out.size())
      throw Error(what + ": larger than " + std::to_string(limit) + " bytes");
    out.append(reinterpret_cast<const char*>(buf.data()), n);
  }
  return out;
}

std::string read_file(const std::string& path) {
  UniqueFd fd = open_file(path, O_RDONLY);
  return read_fd(fd.get(), path);
}

MappedFile MappedFile::map(int fd, const std::string& what) {
  struct stat st;
  if (::fstat(fd, &st) < 0) throw_errno(what);
  if (!S_ISREG(st.st_mode)) throw Error(what + ": not a regular file");
  if (st.st_size == 0) return MappedFile();
  void* p = ::mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) throw_errno(what + ": mmap");
  return MappedFile(p, static_cast<size_t>(st.st_size));
}

MappedFile MappedFile::map_read(int fd, const std::string& what) {
  MappedFile file = map(fd, what);
  if (file.size_ == 0) return file;
  // Reads every page now: an unreadable block fails here (EIO, or EFAULT as the kernel
  // reports a would-be SIGBUS) instead of killing the process at its first access. Kernels
  // before 5.14 do not know the advice (EINVAL); their pages come in on first access.
  if (::madvise(file.data_, file.size_, MADV_POPULATE_READ) < 0 && errno != EINVAL) {
    int err = errno == EFAULT ? EIO : errno;
    throw SystemError(err, what + ": reading the file");
  }
  return file;
}

MappedFile MappedFile::open(const std::string& path) {
  UniqueFd fd = open_file(path, O_RDONLY);
  return map(fd.get(), path);
}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(data_, size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(data_, size_);
}

}  // namespace cfs
