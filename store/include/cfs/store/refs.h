// Repository symlinks: images/<id>, streams/<content-id> and the named refs below
// images/refs/ and streams/refs/. Targets are always relative, so a repository can be moved
// or bind-mounted elsewhere (composefs-rs does the same).
#pragma once

#include <string>
#include <string_view>

namespace cfs::store {

// The relative target that makes the symlink at link_path (relative to the repository root)
// point at target_path (also relative to the root): common leading directories are dropped
// and each remaining directory of the link adds "../".
//   relative_symlink_target("images/refs/a/b", "images/0123…") == "../../0123…"
std::string relative_symlink_target(std::string_view link_path, std::string_view target_path);

// Throws cfs::Error unless name is a usable ref name: non-empty, '/'-separated components
// that are non-empty, not "." or "..", do not start with '.' (reserved for temporary
// entries) and contain no NUL. kind ("image ref", "stream ref") is used in the message.
void validate_ref_name(std::string_view name, std::string_view kind);

// Throws unless name is a single path component usable as a content id / image id entry.
void validate_entry_name(std::string_view name, std::string_view kind);

// Atomically makes dirfd/name a symlink to target: created directly if absent, left alone if
// it already has that target, otherwise replaced through a temporary ".symlink-*" entry and
// rename(2). Does not fsync; callers decide the durability point.
void replace_symlink_at(int dirfd, const std::string& name, const std::string& target,
                        const std::string& what);

}  // namespace cfs::store
