// fs-verity digests through cfs's userspace hasher, and the kernel's measure/enable ioctls.
#include <linux/fsverity.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "cfs/fsverity.h"
#include "guard.h"
#include "libcomposefs/lcfs-mount.h"
#include "libcomposefs/lcfs-writer.h"

namespace {

constexpr size_t kMaxKernelDigest = 64;
constexpr size_t kReadChunk = 64 * 1024;

void copy_digest(uint8_t* out, const cfs::Digest& digest) {
  std::memcpy(out, digest.bytes().data(), LCFS_DIGEST_SIZE);
}

ssize_t read_fd(void* file, void* buf, size_t count) {
  int fd = *static_cast<int*>(file);
  ssize_t n;
  do n = read(fd, buf, count);
  while (n < 0 && errno == EINTR);
  return n;
}

}  // namespace

using cfs::lcfs::with_errno;

extern "C" {

int lcfs_compute_fsverity_from_content(uint8_t* digest, void* file, lcfs_read_cb read_cb) {
  return with_errno(
      [&] {
        cfs::FsVerityHasher hasher;
        std::vector<std::byte> buf(kReadChunk);
        for (;;) {
          ssize_t n = read_cb(file, buf.data(), buf.size());
          if (n < 0) return -1;  // the callback set errno
          if (n == 0) break;
          hasher.update(std::span<const std::byte>(buf.data(), static_cast<size_t>(n)));
        }
        copy_digest(digest, hasher.finish());
        return 0;
      },
      -1);
}

int lcfs_compute_fsverity_from_fd(uint8_t* digest, int fd) {
  int file = fd;
  return lcfs_compute_fsverity_from_content(digest, &file, read_fd);
}

int lcfs_compute_fsverity_from_data(uint8_t* digest, uint8_t* data, size_t data_len) {
  return with_errno(
      [&] {
        copy_digest(digest, cfs::fsverity_digest(std::span<const std::byte>(
                                reinterpret_cast<const std::byte*>(data), data_len)));
        return 0;
      },
      -1);
}

int lcfs_fd_measure_fsverity(uint8_t* digest, int fd) {
  alignas(fsverity_digest) uint8_t buf[sizeof(fsverity_digest) + kMaxKernelDigest]{};
  auto* result = reinterpret_cast<fsverity_digest*>(buf);
  result->digest_size = kMaxKernelDigest;
  if (ioctl(fd, FS_IOC_MEASURE_VERITY, result) < 0) {
    // No verity on the file, or none in the filesystem or kernel: one errno for all.
    if (errno == ENODATA || errno == EOPNOTSUPP || errno == ENOTTY) errno = ENOVERITY;
    return -errno;
  }
  if (result->digest_size != LCFS_DIGEST_SIZE) return -EWRONGVERITY;
  std::memcpy(digest, buf + sizeof(fsverity_digest), LCFS_DIGEST_SIZE);
  return 0;
}

int lcfs_fd_get_fsverity(uint8_t* digest, int fd) {
  if (lcfs_fd_measure_fsverity(digest, fd) == 0) return 0;
  if (errno != ENOVERITY && errno != EOPNOTSUPP && errno != ENODATA) return -errno;
  if (lseek(fd, 0, SEEK_SET) < 0) return -errno;
  return lcfs_compute_fsverity_from_fd(digest, fd);
}

int lcfs_node_set_fsverity_from_content(lcfs_node_s* node, void* file, lcfs_read_cb read_cb) {
  uint8_t digest[LCFS_DIGEST_SIZE];
  if (lcfs_compute_fsverity_from_content(digest, file, read_cb) < 0) return -1;
  lcfs_node_set_fsverity_digest(node, digest);
  return 0;
}

int lcfs_node_set_fsverity_from_fd(lcfs_node_s* node, int fd) {
  int file = fd;
  return lcfs_node_set_fsverity_from_content(node, &file, read_fd);
}

int lcfs_fd_enable_fsverity(int fd) {
  fsverity_enable_arg arg{};
  arg.version = 1;
  arg.hash_algorithm = FS_VERITY_HASH_ALG_SHA256;
  arg.block_size = 4096;
  if (ioctl(fd, FS_IOC_ENABLE_VERITY, &arg) != 0) return -errno;
  return 0;
}

}  // extern "C"
