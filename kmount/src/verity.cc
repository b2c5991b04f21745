#include "cfs/kmount/verity.h"

#include <linux/fsverity.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <array>
#include <cstring>

#include "cfs/error.h"
#include "cfs/fsverity.h"

namespace cfs::kmount {

std::optional<Digest> measure_kernel_verity(int fd, const std::string& what) {
  constexpr size_t max_digest = 64;
  alignas(struct fsverity_digest) std::array<uint8_t, sizeof(struct fsverity_digest) + max_digest>
      storage{};
  auto* header = reinterpret_cast<struct fsverity_digest*>(storage.data());
  header->digest_size = max_digest;
  if (::ioctl(fd, FS_IOC_MEASURE_VERITY, header) < 0) {
    // ENODATA: the file has no fs-verity; ENOTTY/EOPNOTSUPP: the filesystem or kernel lacks it.
    if (errno == ENODATA || errno == ENOTTY || errno == EOPNOTSUPP || errno == EINVAL)
      return std::nullopt;
    throw_errno(what + ": FS_IOC_MEASURE_VERITY");
  }
  auto alg = static_cast<HashAlgorithm>(header->digest_algorithm);
  if ((alg != HashAlgorithm::sha256 && alg != HashAlgorithm::sha512) ||
      header->digest_size != digest_size(alg))
    throw Error(what + ": fs-verity uses an unsupported hash algorithm (" +
                std::to_string(header->digest_algorithm) + ")");
  return Digest(alg, {storage.data() + sizeof(struct fsverity_digest), header->digest_size});
}

DigestCheck check_digest(int fd, const Digest& expected, bool kernel_only,
                         const std::string& what) {
  DigestCheck how = DigestCheck::kernel;
  std::optional<Digest> actual = measure_kernel_verity(fd, what);
  if (!actual) {
    if (kernel_only)
      throw Error(
          what +
          ": Image has no fs-verity, but verity is required (a digest computed in userspace "
          "would not protect later reads); enable fs-verity on it or mount with "
          "--verity try/off");
    if (::lseek(fd, 0, SEEK_SET) < 0) throw_errno(what);
    actual = fsverity_digest_fd(fd, expected.algorithm(), what);
    how = DigestCheck::userspace;
  }
  if (*actual != expected) {
    std::string measured = how == DigestCheck::kernel ? "kernel-measured" : "computed";
    // "Image has wrong fs-verity" is C mount.composefs's wording, which scripts grep for.
    throw Error(what + ": Image has wrong fs-verity: expected " +
                std::string(algorithm_name(expected.algorithm())) + ":" + expected.hex() + ", " +
                measured + " " + std::string(algorithm_name(actual->algorithm())) + ":" +
                actual->hex() + "; refusing to mount");
  }
  return how;
}

}  // namespace cfs::kmount
