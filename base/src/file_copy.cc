#include "cfs/file_copy.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <vector>

#include "cfs/error.h"
#include "cfs/fd.h"

namespace cfs {

namespace {

constexpr size_t kChunk = 1 << 20;

// copy_file_range's answers meaning "not for these files", as opposed to an I/O error.
bool kernel_refuses_copy(int err) {
  return err == EXDEV || err == EINVAL || err == ENOSYS || err == EOPNOTSUPP || err == EBADF;
}

}  // namespace

void copy_file_data(int in, uint64_t in_offset, int out, uint64_t size, const std::string& what) {
  auto offset = static_cast<off_t>(in_offset);
  uint64_t remaining = size;
  bool in_kernel = true;
  std::vector<std::byte> buf;
  while (remaining > 0) {
    const size_t chunk = static_cast<size_t>(std::min<uint64_t>(remaining, kChunk));
    ssize_t n;
    if (in_kernel) {
      n = ::copy_file_range(in, &offset, out, nullptr, chunk, 0);
      if (n < 0 && kernel_refuses_copy(errno)) {
        in_kernel = false;
        buf.resize(kChunk);
        continue;
      }
    } else {
      n = ::pread(in, buf.data(), chunk, offset);
      if (n > 0) {
        write_all(out, {buf.data(), static_cast<size_t>(n)}, what + ": copying");
        offset += n;
      }
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(what + ": copying");
    }
    if (n == 0) throw Error(what + ": file shrank while being copied");
    remaining -= static_cast<uint64_t>(n);
  }
}

}  // namespace cfs
