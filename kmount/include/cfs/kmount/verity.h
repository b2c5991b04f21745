// The fs-verity check of an image before it is mounted.
#pragma once

#include <string>
#include <string_view>

#include "cfs/digest.h"

namespace cfs::kmount {

// How the image's digest was checked before mounting (reported by -v).
enum class DigestCheck { none, kernel, userspace };
std::string_view to_string(DigestCheck check);

// Checks that the file behind fd has the expected fs-verity digest. The kernel's measurement is
// used where the file has fs-verity; otherwise the digest is computed in userspace unless
// kernel_only, in which case the file is refused (a userspace digest proves nothing about later
// reads). Throws cfs::Error on mismatch.
DigestCheck check_digest(int fd, const Digest& expected, bool kernel_only, const std::string& what);

}  // namespace cfs::kmount
