#include "cfs/output.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "cfs/fd.h"

namespace cfs {

void OutputSink::write_zeros(size_t n) {
  static constexpr std::array<std::byte, 4096> zeros{};
  while (n > 0) {
    size_t take = std::min(n, zeros.size());
    write(std::span<const std::byte>(zeros.data(), take));
    n -= take;
  }
}

FdSink::FdSink(int fd, std::string what, size_t buffer_size)
    : fd_(fd), what_(std::move(what)), buf_(buffer_size) {}

FdSink::~FdSink() {
  try {
    flush();
  } catch (...) {
    // Errors are reported by an explicit flush(); a destructor cannot throw.
  }
}

void FdSink::write(std::span<const std::byte> data) {
  if (used_ + data.size() > buf_.size()) {
    flush();
    if (data.size() >= buf_.size()) {
      write_all(fd_, data, what_);
      return;
    }
  }
  std::memcpy(buf_.data() + used_, data.data(), data.size());
  used_ += data.size();
}

void FdSink::flush() {
  if (used_ == 0) return;
  size_t n = used_;
  used_ = 0;
  write_all(fd_, {buf_.data(), n}, what_);
}

}  // namespace cfs
