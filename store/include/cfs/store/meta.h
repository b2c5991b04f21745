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
// EROFS formats a repository may configure: 0 and 1 (C mkcomposefs' layout), 2 (composefs-rs'
// original layout).
inline constexpr uint32_t kMaxErofsVersion = 2;
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

  // The formats images are written in, as composefs-rs' FormatConfig::versions() orders them:
  // the default first, then the extra ones ascending (the default not repeated).
  std::vector<uint32_t> erofs_versions() const;
  // Metadata of a new repository whose images use EROFS format `version`, as composefs-rs'
  // RepoMetadata::new_with_formats writes it: the "v1_erofs" read-only-compatible flag only
  // when the format is 1.
  static RepoMeta for_erofs_version(HashAlgorithm algorithm, uint32_t version);

  // "fsverity-sha256-12" / "fsverity-sha512-12".
  std::string algorithm_string() const;
  // Pretty JSON with a trailing newline, byte for byte what composefs-rs (serde_json's
  // pretty printer) writes for the same metadata.
  std::string to_json() const;
};

// Parses meta.json text; what names the file in errors. Rejects malformed JSON, a version
// other than 1, algorithms other than fsverity-sha{256,512}-12, EROFS formats above
// kMaxErofsVersion and unknown incompatible features. Without "erofs_formats" (repositories
// of older composefs-rs), and for composefs-rs' serde default {"default": 2} alike, the
// "v1_erofs" flag selects format 1, its absence format 2 (RepoMetadata::format_config).
RepoMeta parse_meta(std::string_view json, const std::string& what);

// "fsverity-sha256-12" -> sha256; throws for anything else (only 4 KiB blocks are supported).
HashAlgorithm parse_algorithm_string(std::string_view s, const std::string& what);

// True if every read-only-compatible feature is one this implementation knows, i.e. the
// repository may be written to.
bool meta_allows_writing(const RepoMeta& meta);

}  // namespace cfs::store
