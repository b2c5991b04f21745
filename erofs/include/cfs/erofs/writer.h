// The composefs EROFS writer: byte-identical to C mkcomposefs 1.0.8 for format V0 and V1,
// and to composefs-rs 0.9.0 (`--erofs-version 2`) for format V2.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "cfs/digest.h"
#include "cfs/erofs/tree.h"
#include "cfs/output.h"

namespace cfs::erofs {

inline constexpr uint32_t kFormatVersionMax = 2;

struct WriterOptions {
  // The format version starts at min_version and is raised to 1 (if max_version allows)
  // when the tree holds an overlay whiteout (chr 0/0), exactly as mkcomposefs does.
  // Format V2 (composefs-rs' layout, composefs-rs.md §7) is chosen with min_version 2 (then
  // max_version must be 2 too); it is never reached by raising the version.
  uint32_t min_version = 0;
  uint32_t max_version = 1;

  // Whether to compute the image's fs-verity digest (WriteResult::digest). mkcomposefs
  // without --print-digest does not need it, and skipping it saves hashing the whole image
  // and OpenSSL's start-up.
  bool compute_digest = true;

  // composefs-rs' --erofs-version N: 0 = C's default (V0, raised to V1 by whiteouts),
  // 1 = V1, 2 = V2. Throws cfs::Error for other values.
  static WriterOptions for_erofs_version(uint32_t version);
};

struct WriteResult {
  uint32_t version = 0;  // format version written
  uint64_t size = 0;     // image bytes
  // fs-verity SHA-256 of the image, the composefs image id; only with compute_digest.
  std::optional<Digest> digest;
};

// Streams the image to out. The tree is not modified. Throws cfs::Error for trees that
// cannot be represented (hardlinked directories, invalid types, oversized xattrs...).
WriteResult write_image(const Tree& tree, OutputSink& out, const WriterOptions& options = {});
std::string image_to_string(const Tree& tree, const WriterOptions& options = {});

}  // namespace cfs::erofs
