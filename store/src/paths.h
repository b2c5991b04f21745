// Repository-relative path arithmetic for symlink targets (internal).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "cfs/digest.h"

namespace cfs::store::detail {

// Resolves a relative symlink target against the directory of link_path (both relative to
// the repository root) and normalizes "." and "..". nullopt for absolute targets or ones
// that climb out of the repository.
std::optional<std::string> resolve_link_target(std::string_view link_path, std::string_view target);

// "objects/ab/cdef…" (repository-relative) -> digest of algorithm alg; nullopt otherwise.
std::optional<Digest> digest_from_object_path(std::string_view repo_path, HashAlgorithm alg);

}  // namespace cfs::store::detail
