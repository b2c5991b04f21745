// meta.json: the repository's format version, hash algorithm and feature flags, in the
// schema composefs-rs writes, so either implementation can open the other's repositories.
//
//   {"version": 1, "algorithm": "fsverity-sha512-12",
//    "features": {"compatible": [], "read-only-compatible": ["v1_erofs"], "incompatible": []},
//    "erofs_formats": {"default": 1}}          ("extra": [2] when V2 images are made too)
//
// Feature rules (ext4 style): unknown "incompatible" features refuse the open, unknown
// "read-only-compatible" features allow reading only, unknown "compatible" ones are ignored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/digest.h"

namespace cfs::store {

inline constexpr uint32_t kRepoFormatVersion = 1;
inline constexpr std::string_view kFeatureV1Erofs = "v1_erofs";
// meta.json is a few hundred bytes; it is read on every command, so a larger one is refused
// before it is parsed rather than costing memory each time.
inline constexpr size_t kMaxMetaJson = 64u << 10;

struct RepoMeta {
  uint32_t version = kRepoFormatVersion;
  HashAlgorithm algorithm = HashAlgorithm::sha512;
  std::vector<std::string> compatible;
  std::vector<std::string> read_only_compatible{std::string(kFeatureV1Erofs)};
  std::vector<std::string> incompatible;
  uint32_t erofs_default = 1;  // EROFS format of images this repository creates
  std::vector<uint32_t> erofs_extra;

  // "fsverity-sha256-12" / "fsverity-sha512-12".
  std::string algorithm_string() const;
  // Pretty JSON with a trailing newline, byte for byte what composefs-rs (serde_json's
  // pretty printer) writes for the same metadata.
  std::string to_json() const;
};

// Parses meta.json text; what names the file in errors. Rejects malformed JSON, a version
// other than 1, algorithms other than fsverity-sha{256,512}-12, and unknown incompatible
// features.
RepoMeta parse_meta(std::string_view json, const std::string& what);

// "fsverity-sha256-12" -> sha256; throws for anything else (only 4 KiB blocks are supported).
HashAlgorithm parse_algorithm_string(std::string_view s, const std::string& what);

// True if every read-only-compatible feature is one this implementation knows, i.e. the
// repository may be written to.
bool meta_allows_writing(const RepoMeta& meta);

}  // namespace cfs::store
