// The fs-verity check of an image before it is mounted.
#pragma once

#include <optional>
#include <string>

#include "cfs/digest.h"
#include "cfs/kmount/mount.h"

namespace cfs::kmount {

// FS_IOC_MEASURE_VERITY; nullopt when the file has no fs-verity (or the filesystem or kernel
// lacks it). Throws on other errors.
std::optional<Digest> measure_kernel_verity(int fd, const std::string& what);

// Checks that the file behind fd has the expected fs-verity digest. The kernel's measurement is
// used where the file has fs-verity; otherwise the digest is computed in userspace unless
// kernel_only, in which case the file is refused (a userspace digest proves nothing about later
// reads). Throws cfs::Error on mismatch.
DigestCheck check_digest(int fd, const Digest& expected, bool kernel_only, const std::string& what);

}  // namespace cfs::kmount
