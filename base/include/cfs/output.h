// Byte sinks for streaming writers (EROFS images, dumpfiles, splitstreams).
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/fsverity.h"

namespace cfs {

class OutputSink {
 public:
  virtual ~OutputSink() = default;
  virtual void write(std::span<const std::byte> data) = 0;
  void write(std::string_view s) {
    write({reinterpret_cast<const std::byte*>(s.data()), s.size()});
  }
  void write_zeros(size_t n);
  virtual void flush() {}
};

// Appends to a std::string.
class StringSink : public OutputSink {
 public:
  using OutputSink::write;
  void write(std::span<const std::byte> data) override {
    out_.append(reinterpret_cast<const char*>(data.data()), data.size());
  }
  std::string& str() noexcept { return out_; }

 private:
  std::string out_;
};

// Buffered writes to a file descriptor (not owned). Call flush() before closing the fd;
// the destructor flushes too but cannot report errors.
class FdSink : public OutputSink {
 public:
  explicit FdSink(int fd, std::string what, size_t buffer_size = 1 << 20);
  ~FdSink() override;
  using OutputSink::write;
  void write(std::span<const std::byte> data) override;
  void flush() override;

 private:
  int fd_;
  std::string what_;
  std::vector<std::byte> buf_;
  size_t used_ = 0;
};

// Forwards to another sink (optional) while counting the bytes and computing their fs-verity
// digest. With alg nullopt it only counts: no hashing, and OpenSSL is never initialised.
class VeritySink : public OutputSink {
 public:
  explicit VeritySink(OutputSink* next, std::optional<HashAlgorithm> alg = HashAlgorithm::sha256)
      : next_(next) {
    if (alg) hasher_.emplace(*alg);
  }
  using OutputSink::write;
  void write(std::span<const std::byte> data) override {
    size_ += data.size();
    if (hasher_) hasher_->update(data);
    if (next_) next_->write(data);
  }
  void flush() override {
    if (next_) next_->flush();
  }
  uint64_t size() const noexcept { return size_; }
  bool hashing() const noexcept { return hasher_.has_value(); }
  // Only when hashing().
  Digest finish() { return hasher_.value().finish(); }

 private:
  OutputSink* next_;
  uint64_t size_ = 0;
  std::optional<FsVerityHasher> hasher_;
};

}  // namespace cfs
