// Splitstreams: a byte stream (e.g. a tar layer) stored as inline pieces plus references to
// whole repository objects, in composefs-rs' on-disk format. All integers little-endian.
//
//   header (32 B @0): "SplitStream" u8 version=0, u16 flags, u8 algorithm, u8 lg_blocksize=12,
//                     FileRange info
//   info (80 B):      FileRange stream_refs, object_refs, stream (zstd), named_refs (zstd);
//                     u64 content_type, u64 stream_size
//   stream_refs / object_refs: arrays of raw digests (uncompressed)
//   named_refs: zstd of "<index into stream_refs>:<name>\0" records, sorted by name
//   stream: zstd of chunks, each an i64: -n => n inline bytes follow; k >= 0 => the whole
//           content of object_refs[k]
// FileRange = {u64 start, u64 end}, absolute offsets, [start, end).
// The legacy header (bootc <= 1.15) has the same fields in another order: info @0, flags
// @16, magic @18, version @29, algorithm @30, lg_blocksize @31; readers accept both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/digest.h"
#include "cfs/fd.h"
#include "cfs/output.h"

namespace cfs::store {

// Content types are 8 ASCII bytes read as a little-endian u64.
constexpr uint64_t content_type(std::string_view eight_chars) {
  uint64_t v = 0;
  for (size_t i = 0; i < 8 && i < eight_chars.size(); ++i)
    v |= static_cast<uint64_t>(static_cast<uint8_t>(eight_chars[i])) << (8 * i);
  return v;
}
inline constexpr uint64_t kContentOciLayer = content_type("ocilayer");
inline constexpr uint64_t kContentOciConfig = content_type("ociconfg");
inline constexpr uint64_t kContentOciManifest = content_type("ocimanif");
inline constexpr uint64_t kContentOciBlob = content_type("oci_blob");
inline constexpr uint64_t kContentOstreeCommit = 0xAFE138C18C463EF1ULL;

// "ocilayer" for printable content types, "0x…" otherwise.
std::string content_type_name(uint64_t type);

inline constexpr size_t kSplitStreamHeaderSize = 32;
inline constexpr size_t kSplitStreamInfoSize = 80;

// Builds a splitstream in memory (inline data and the compressed stream), then serializes
// it with finish(). External chunks name objects the caller has already stored.
class SplitStreamWriter {
 public:
  SplitStreamWriter(HashAlgorithm alg, uint64_t content_type);
  ~SplitStreamWriter();
  SplitStreamWriter(SplitStreamWriter&&) noexcept;
  SplitStreamWriter& operator=(SplitStreamWriter&&) noexcept;

  HashAlgorithm algorithm() const noexcept;

  // Appends inline bytes (adjacent inline writes become one chunk).
  void write_inline(std::span<const std::byte> data);
  void write_inline(std::string_view data) {
    write_inline({reinterpret_cast<const std::byte*>(data.data()), data.size()});
  }
  // Appends the whole content of an object of the given size.
  void write_external(const Digest& object, uint64_t size);

  // Adds a reference to another stream or object (a GC edge); returns its index.
  size_t add_stream_ref(const Digest& target);
  // A named reference (e.g. "config:sha256:…" or "composefs.image.v1"); replaces an
  // existing one of the same name.
  void add_named_ref(std::string name, const Digest& target);

  // Serializes header, info, refs and stream. The writer must not be used afterwards.
  void finish(OutputSink& out);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

struct NamedRef {
  std::string name;
  Digest target;
};

// A parsed splitstream. Construction validates header, info, the ref arrays and the named
// refs; the stream section is decompressed on demand by for_each_chunk.
class SplitStreamReader {
 public:
  // what names the file in errors. alg is the repository's algorithm (must match the header).
  static SplitStreamReader from_bytes(std::vector<std::byte> file, HashAlgorithm alg,
                                      std::string what);
  static SplitStreamReader from_fd(int fd, HashAlgorithm alg, std::string what);

  SplitStreamReader(SplitStreamReader&&) noexcept;
  SplitStreamReader& operator=(SplitStreamReader&&) noexcept;
  ~SplitStreamReader();

  bool legacy_header() const noexcept;
  uint64_t content_type() const noexcept;
  uint64_t stream_size() const noexcept;
  const std::vector<Digest>& stream_refs() const noexcept;
  const std::vector<Digest>& object_refs() const noexcept;
  const std::vector<NamedRef>& named_refs() const noexcept;  // sorted by name
  const Digest* find_named_ref(std::string_view name) const;

  // Walks the stream: inline(bytes) for inline chunks, external(object) for references.
  // Throws on corrupt zstd data, bad chunk headers or out-of-range object indices.
  void for_each_chunk(const std::function<void(std::span<const std::byte>)>& on_inline,
                      const std::function<void(const Digest&)>& on_external) const;

 private:
  SplitStreamReader();
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace cfs::store
