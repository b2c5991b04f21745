// The on-disk layout of a composefs repository, shared by the store and the static cfs-mount
// (so it holds names and path rules only: no JSON, no compression).
//
//   meta.json                 the repository's format and hash algorithm
//   objects/XX/<rest>         content, named by its fs-verity digest (XX: first byte, hex)
//   images/<hex>              -> ../objects/XX/<rest>, an image's object
//   images/refs/<name>        -> ../../<hex> (relative; one more ../ per '/' in name)
//   streams/<content-id>      -> ../objects/XX/<rest>, a splitstream's object
//   streams/refs/<name>       -> ../../<content-id>
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

#include "cfs/digest.h"

namespace cfs::repo_layout {

inline constexpr std::string_view kMetaJson = "meta.json";
inline constexpr std::string_view kObjects = "objects";
inline constexpr std::string_view kImages = "images";
inline constexpr std::string_view kStreams = "streams";
inline constexpr std::string_view kImageRefs = "images/refs";
inline constexpr std::string_view kStreamRefs = "streams/refs";
// Every directory of a complete repository, parents first.
inline constexpr std::array<std::string_view, 5> kFixedDirs = {kObjects, kImages, kImageRefs,
                                                               kStreams, kStreamRefs};

// "objects/XX/<rest>": where the object named id lives, relative to the repository root.
std::string object_repo_path(const Digest& id);
// The inverse: a repository-relative "objects/XX/<rest>" of algorithm alg, else nullopt.
std::optional<Digest> digest_from_object_path(std::string_view repo_path, HashAlgorithm alg);
// "../objects/XX/<rest>": the target of images/<hex> and streams/<content-id>.
std::string object_link_target(const Digest& id);

std::string image_entry(const Digest& id);           // "images/<hex>"
std::string image_ref(std::string_view name);        // "images/refs/<name>"
std::string stream_entry(std::string_view content);  // "streams/<content-id>"
std::string stream_ref(std::string_view name);       // "streams/refs/<name>"

// Throws cfs::Error unless name is a usable ref name: non-empty, '/'-separated components
// that are non-empty, not "." or "..", do not start with '.' (reserved for temporary
// entries) and contain no NUL. kind ("image ref", "stream ref") is used in the message.
void validate_ref_name(std::string_view name, std::string_view kind);
// Throws unless name is a single path component usable as a content id / image id entry.
void validate_entry_name(std::string_view name, std::string_view kind);

// The relative target that makes the symlink at link_path (relative to the repository root)
// point at target_path (also relative to the root): common leading directories are dropped
// and each remaining directory of the link adds "../".
//   relative_symlink_target("images/refs/a/b", "images/0123…") == "../../0123…"
std::string relative_symlink_target(std::string_view link_path, std::string_view target_path);

// Resolves a relative symlink target against the directory of link_path (both relative to
// the repository root) and normalizes "." and "..". nullopt for absolute targets or ones
// that climb out of the repository.
std::optional<std::string> resolve_link_target(std::string_view link_path, std::string_view target);

}  // namespace cfs::repo_layout
