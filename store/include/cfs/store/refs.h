// Repository symlinks: images/<id>, streams/<content-id> and the named refs below
// images/refs/ and streams/refs/. Targets are always relative, so a repository can be moved
// or bind-mounted elsewhere (composefs-rs does the same).
#pragma once

#include <string>
#include <string_view>

#include "cfs/repo_layout.h"

namespace cfs::store {

// The naming rules live with the repository layout (cfs/repo_layout.h).
using repo_layout::relative_symlink_target;
using repo_layout::validate_entry_name;
using repo_layout::validate_ref_name;

// Atomically makes dirfd/name a symlink to target: created directly if absent, left alone if
// it already has that target, otherwise replaced through a temporary ".symlink-*" entry and
// rename(2). Does not fsync; callers decide the durability point.
void replace_symlink_at(int dirfd, const std::string& name, const std::string& target,
                        const std::string& what);

}  // namespace cfs::store
