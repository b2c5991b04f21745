// The kernel's fs-verity ioctls (FS_IOC_ENABLE_VERITY, FS_IOC_MEASURE_VERITY); the digest they
// report is the one cfs/fsverity.h computes in userspace.
#pragma once

#include <optional>
#include <string>

#include "cfs/digest.h"

namespace cfs {

// The one rule for "no fs-verity here", shared by every caller so that the repository, the
// FUSE server and cfs-mount agree on what an unprotected file is:
//   ENODATA     the file has no fs-verity (measuring only);
//   ENOTTY      the filesystem does not know the ioctls;
//   EOPNOTSUPP  the filesystem knows them, but fs-verity is not enabled on it (e.g. ext4
//               without the verity feature);
//   EINVAL      the filesystem or kernel cannot use these parameters (e.g. 4 KiB blocks on a
//               kernel that requires the page size), or answers an ioctl it does not know
//               with EINVAL.
// Every other errno is a real failure and is thrown.
bool is_no_verity_errno(int err) noexcept;

// The kernel-stored fs-verity digest of the file behind fd, or nullopt where there is none
// (is_no_verity_errno). Throws SystemError on other failures and cfs::Error when the kernel
// reports a hash algorithm cfs does not know.
std::optional<Digest> measure_verity(int fd, const std::string& what);
// The same for a file that must use alg (a repository's object): another algorithm is an error.
std::optional<Digest> measure_verity(int fd, HashAlgorithm alg, const std::string& what);

enum class VerityEnable { enabled, already_enabled, unsupported };

// Enables fs-verity (4 KiB blocks, no salt) on a file opened read-only with no writers.
// unsupported where is_no_verity_errno holds; throws SystemError on other failures (ETXTBSY
// included: the caller decides whether to retry) and an explanatory cfs::Error for ENOPKG.
VerityEnable enable_verity(int fd, HashAlgorithm alg, const std::string& what);

}  // namespace cfs
