#include "cfs/kernel_verity.h"

#include <linux/fsverity.h>
#include <sys/ioctl.h>

#include <array>
#include <cerrno>
#include <cstdint>

#include "cfs/error.h"

namespace cfs {

bool is_no_verity_errno(int err) noexcept {
  return err == ENODATA || err == ENOTTY || err == EOPNOTSUPP || err == EINVAL;
}

std::optional<Digest> measure_verity(int fd, const std::string& what) {
  // struct fsverity_digest ends in a flexible array: give it room for the largest digest.
  constexpr size_t kMaxDigest = 64;
  alignas(fsverity_digest) std::array<uint8_t, sizeof(fsverity_digest) + kMaxDigest> storage{};
  auto* header = reinterpret_cast<fsverity_digest*>(storage.data());
  header->digest_size = kMaxDigest;
  if (::ioctl(fd, FS_IOC_MEASURE_VERITY, header) < 0) {
    if (is_no_verity_errno(errno)) return std::nullopt;
    throw_errno(what + ": measuring fs-verity");
  }
  auto alg = static_cast<HashAlgorithm>(header->digest_algorithm);
  if ((alg != HashAlgorithm::sha256 && alg != HashAlgorithm::sha512) ||
      header->digest_size != digest_size(alg))
    throw Error(what + ": fs-verity uses an unsupported hash algorithm (" +
                std::to_string(header->digest_algorithm) + ")");
  return Digest(alg, std::span(storage).subspan(sizeof(fsverity_digest), header->digest_size));
}

std::optional<Digest> measure_verity(int fd, HashAlgorithm alg, const std::string& what) {
  std::optional<Digest> measured = measure_verity(fd, what);
  if (measured && measured->algorithm() != alg)
    throw Error(what + ": fs-verity uses hash algorithm " +
                std::string(algorithm_name(measured->algorithm())) + ", the repository uses " +
                std::string(algorithm_name(alg)));
  return measured;
}

VerityEnable enable_verity(int fd, HashAlgorithm alg, const std::string& what) {
  fsverity_enable_arg arg{};
  arg.version = 1;
  arg.hash_algorithm = static_cast<uint32_t>(alg);
  arg.block_size = 4096;
  if (::ioctl(fd, FS_IOC_ENABLE_VERITY, &arg) == 0) return VerityEnable::enabled;
  const int err = errno;
  if (err == EEXIST) return VerityEnable::already_enabled;
  if (is_no_verity_errno(err)) return VerityEnable::unsupported;
  if (err == ENOPKG) {
    // fs-verity is there, the hash is not (e.g. sha512 built as a module that is not loaded).
    std::string name(algorithm_name(alg));
    throw Error(what + ": enabling fs-verity: the kernel has no " + name +
                " implementation loaded (modprobe " + name + ", or use a " +
                (alg == HashAlgorithm::sha512 ? "sha256" : "sha512") + " repository)");
  }
  throw_errno(err, what + ": enabling fs-verity");
}

}  // namespace cfs
