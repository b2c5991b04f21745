// Kernel fs-verity (FS_IOC_ENABLE_VERITY / FS_IOC_MEASURE_VERITY) for secure repositories.
#pragma once

#include <optional>
#include <string>

#include "cfs/digest.h"

namespace cfs::store::detail {

enum class VerityEnable { enabled, already_enabled, unsupported };

// Enables fs-verity (4 KiB blocks, no salt) on a file opened read-only with no writers.
// Returns unsupported when the filesystem or kernel lacks fs-verity; throws on other errors
// (ETXTBSY included: the caller decides how to retry).
VerityEnable enable_verity(int fd, HashAlgorithm alg, const std::string& what);

// The kernel-stored digest, or nullopt if the file has no fs-verity (or the kernel cannot
// tell). Throws if verity is enabled with a different algorithm than alg.
std::optional<Digest> measure_verity(int fd, HashAlgorithm alg, const std::string& what);

}  // namespace cfs::store::detail
