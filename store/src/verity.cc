#include "verity.h"

#include <linux/fsverity.h>
#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

#include "cfs/error.h"

namespace cfs::store::detail {

VerityEnable enable_verity(int fd, HashAlgorithm alg, const std::string& what) {
  fsverity_enable_arg arg;
  std::memset(&arg, 0, sizeof arg);
  arg.version = 1;
  arg.hash_algorithm = static_cast<uint32_t>(alg);
  arg.block_size = 4096;
  if (::ioctl(fd, FS_IOC_ENABLE_VERITY, &arg) == 0) return VerityEnable::enabled;
  switch (errno) {
    case EEXIST:
      return VerityEnable::already_enabled;
    case ENOTTY:
    case EOPNOTSUPP:
      return VerityEnable::unsupported;
    case ENOPKG: {
      // fs-verity is there, the hash is not (e.g. sha512 built as a module that is not loaded).
      std::string name(algorithm_name(alg));
      throw Error(what + ": enabling fs-verity: the kernel has no " + name +
                  " implementation loaded (modprobe " + name + ", or use a " +
                  (alg == HashAlgorithm::sha512 ? "sha256" : "sha512") + " repository)");
    }
    default:
      throw_errno(what + ": enabling fs-verity");
  }
}

std::optional<Digest> measure_verity(int fd, HashAlgorithm alg, const std::string& what) {
  // struct fsverity_digest ends in a flexible array: give it room for the largest digest.
  alignas(fsverity_digest) uint8_t storage[sizeof(fsverity_digest) + 64] = {};
  auto* header = reinterpret_cast<fsverity_digest*>(storage);
  header->digest_size = 64;
  if (::ioctl(fd, FS_IOC_MEASURE_VERITY, storage) < 0) {
    if (errno == ENODATA || errno == ENOTTY || errno == EOPNOTSUPP) return std::nullopt;
    throw_errno(what + ": measuring fs-verity");
  }
  if (header->digest_algorithm != static_cast<uint16_t>(alg) ||
      header->digest_size != digest_size(alg)) {
    throw Error(what + ": fs-verity uses hash algorithm " +
                std::to_string(header->digest_algorithm) + ", the repository uses " +
                std::string(algorithm_name(alg)));
  }
  return Digest(alg, {storage + sizeof(fsverity_digest), digest_size(alg)});
}

}  // namespace cfs::store::detail
