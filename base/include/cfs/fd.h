// RAII owners for file descriptors and memory mappings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>

namespace cfs {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

// open(2)/openat(2) that throws SystemError naming the path.
UniqueFd open_file(const std::string& path, int flags, unsigned mode = 0);
UniqueFd open_at(int dirfd, const std::string& path, int flags, unsigned mode = 0);

// Read exactly buf.size() bytes at offset, or throw (short read = error naming what).
void pread_exact(int fd, std::span<std::byte> buf, uint64_t offset, const std::string& what);
// One read(2) into buf, retrying on EINTR: the bytes read, 0 at end of file.
size_t read_some(int fd, std::span<std::byte> buf, const std::string& what);
// Write all of data, retrying on short writes and EINTR.
void write_all(int fd, std::span<const std::byte> data, const std::string& what);
// Read a whole file into memory.
std::string read_file(const std::string& path);
std::string read_fd(int fd, const std::string& what);
// The same for files whose size is not trusted (metadata documents): throws a cfs::Error
// naming what once more than limit bytes arrive, instead of growing without bound.
std::string read_fd(int fd, const std::string& what, size_t limit);

// A read-only private mapping of a whole file (empty files map to an empty span).
class MappedFile {
 public:
  MappedFile() = default;
  static MappedFile map(int fd, const std::string& what);
  static MappedFile open(const std::string& path);
  // map() with every page read in at once: a read error is an exception here instead of a
  // SIGBUS at some later access (the pages stay in the page cache, so a block that fails
  // only later can still do that), and walking the file afterwards takes no page faults.
  static MappedFile map_read(int fd, const std::string& what);
  MappedFile(MappedFile&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  std::span<const std::byte> bytes() const noexcept {
    return {static_cast<const std::byte*>(data_), size_};
  }

 private:
  MappedFile(void* data, size_t size) : data_(data), size_(size) {}
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace cfs
