// The eStargz tail cache: what follows a file's last chunk inside its gzip member.
//
// An eStargz writer puts the tar padding after a file's content and the headers of the
// entries that follow (up to the next content) into the gzip member of the file's last chunk
// (estargz.cc). To rebuild such a member without fetching it, a pull needs those bytes. Every
// eStargz member a pull fetches whole and that ends a file is recorded here, after the layer
// passed its diff_id check: <repo>/oci/estargz-tails/<chunk sha256 hex>/<crc32>-<isize>, the
// file holding the tail bytes, where crc32 (8 hex digits) and isize (decimal) are the
// member's gzip trailer (RFC 1952: CRC-32 and size mod 2^32 of chunk + tail). A later pull
// of a layer whose member ends the same chunk fetches only that member's 8-byte trailer,
// looks up the tail by it, and uses it only when chunk (from the object, checked against the
// chunkDigest) + tail give that CRC-32 and size; else it fetches the member. The cache is
// never trusted further: the layer's diff_id over the rebuilt tar decides acceptance.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/store/repository.h"

namespace cfs::oci::estargz_tails {

inline constexpr std::string_view kDir = "oci/estargz-tails";
// Tails longer than this (a run of many header-only entries) are not recorded.
inline constexpr size_t kMaxTail = 64 << 10;

struct Tail {
  std::string chunk_digest;  // "sha256:<hex>" of the chunk the member starts with
  uint32_t crc = 0;          // the member's gzip trailer
  uint32_t isize = 0;
  std::vector<std::byte> bytes;  // what follows the chunk in the member
};

// Whether any tail is recorded for a member starting with this chunk.
bool known(const store::Repository& repo, std::string_view chunk_digest);

// The recorded tail for this chunk and trailer, if any; not yet checked.
std::optional<std::vector<std::byte>> lookup(const store::Repository& repo,
                                             std::string_view chunk_digest, uint32_t crc,
                                             uint32_t isize);

// A little-endian 32-bit field (gzip trailers).
inline uint32_t le32(std::span<const std::byte> b) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(std::to_integer<uint8_t>(b[i])) << (8 * i);
  return v;
}

// Writes the tails (each file appears complete under its name or not at all).
void record(const store::Repository& repo, const std::vector<Tail>& tails);

// gc: removes the tails of every chunk whose sha256 (hex) wanted() rejects; malformed entries
// are left for fsck. Returns how many tail files it removed (would remove, on a dry run).
uint64_t prune(const store::Repository& repo,
               const std::function<bool(std::string_view chunk_hex)>& wanted, bool dry_run);

struct CheckResult {
  unsigned entries = 0;             // tail files
  std::vector<std::string> errors;  // "estargz-tail-invalid: <path>: <problem>"
};
// fsck: every entry a directory named by a sha256 hex holding regular files named
// <8 hex digits>-<decimal isize> of at most kMaxTail bytes (and no more than isize).
CheckResult check(const store::Repository& repo);

}  // namespace cfs::oci::estargz_tails
