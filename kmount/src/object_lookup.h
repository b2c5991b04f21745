// Which of the objects an image names are absent from its object directories.
#pragma once

#include <string_view>
#include <vector>

#include "cfs/fd.h"

namespace cfs::kmount::detail {

// Returns the references (in the order given, repeats kept) that are a regular file in none of
// object_dirs; a symlink in the last component does not count. References are paths relative
// to an object directory ("ab/cdef..." for a repository, any relative path for C images).
std::vector<std::string_view> missing_objects(const std::vector<UniqueFd>& object_dirs,
                                              const std::vector<std::string_view>& refs);

}  // namespace cfs::kmount::detail
