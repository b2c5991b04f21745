// Partial pulls of zstd:chunked layers (containers/storage's format: a tar compressed as a
// sequence of zstd frames, every regular file's content in frames of its own, and a table of
// contents (TOC) in a skippable frame after the tar, located and checksummed by annotations of
// the layer's manifest descriptor) and of eStargz layers (stargz-snapshotter's format: gzip
// members instead of frames, the TOC in a tar entry of the last member but one, located by
// a footer member and checksummed by an annotation; estargz.cc).
//
// ChunkedLayerReader fetches the TOC with a ranged GET, checks it against the
// manifest-checksum annotation, and then produces the layer's uncompressed tar, byte for
// byte, while fetching only what the repository lacks: the frames between file contents (tar
// headers, padding, small files) and the contents of files whose sha256 the content index
// (content_index.h) does not map to an object. The contents of the other files are read from
// their objects. Every file content the TOC lists, fetched or reused, is checked against its
// TOC digest before its last byte is handed on, so a wrong content never completes an object.
// The caller hashes the whole stream against the diff_id, as a full pull does.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "cfs/digest.h"
#include "cfs/oci/source.h"
#include "cfs/store/repository.h"
#include "estargz_tails.h"
#include "util.h"

namespace cfs::oci {

enum class TocFormat { zstd_chunked, estargz };

// Where a layer keeps its TOC, from the descriptor's annotations. zstd:chunked: the
// io.github.containers.zstd-chunked.* names, or the io.containers.zstd-chunked.* ones older
// writers used, such as skopeo 1.9. eStargz: containerd.io/snapshot/stargz/toc.digest only
// (the TOC's place is read from the blob's footer).
struct ChunkedToc {
  TocFormat format = TocFormat::zstd_chunked;
  uint64_t offset = 0;        // zstd:chunked: of the compressed TOC inside its skippable frame
  uint64_t length = 0;        // zstd:chunked: compressed
  uint64_t uncompressed = 0;  // zstd:chunked: bytes of TOC JSON
  // "sha256:<hex>": zstd:chunked, of the compressed TOC bytes; eStargz, of the TOC JSON.
  std::string checksum;
};

// eStargz half of chunked_toc_of (estargz.cc).
std::optional<ChunkedToc> estargz_toc_of(const Descriptor& layer, const std::string& what);

// A TOC entry's non-negative integer field, 0 when absent; throws (naming what) otherwise.
uint64_t toc_uint(const nlohmann::json& entry, const char* key, const std::string& what);

// A reusable file content whose compressed frames are smaller than this is fetched anyway:
// one ranged GET fewer is worth more than a few KiB.
inline constexpr uint64_t kMinReuse = 4096;

// nullopt when the descriptor is neither a zstd:chunked nor an eStargz layer; throws (naming
// what) for annotations that claim to be and are malformed.
std::optional<ChunkedToc> chunked_toc_of(const Descriptor& layer, const std::string& what);

// Decompresses a run of whole frames (zstd) or members (gzip) fed in pieces; a segment of a
// chunked layer always starts and ends at such a boundary.
class FrameDecoder {
 public:
  virtual ~FrameDecoder() = default;
  virtual void reset(std::string what) = 0;  // at a segment's start; what names it in errors
  // Consumes all of in, handing the output on in pieces; throws (naming what) on bad data.
  virtual void feed(std::span<const std::byte> in,
                    const std::function<void(std::span<const std::byte>)>& out) = 0;
  // Whether what was fed so far ends at a frame/member boundary.
  virtual bool at_boundary() const = 0;
  virtual const char* unit() const noexcept = 0;  // "zstd frame" or "gzip member", for errors
};
std::unique_ptr<FrameDecoder> make_zstd_decoder();
std::unique_ptr<FrameDecoder> make_gzip_decoder();  // estargz.cc

// Reads length compressed bytes from reader (through buffer) into decoder, handing each piece
// read to on_input and the output to emit; the range must end at a frame/member boundary.
// Throws naming what.
void decode_range(FrameDecoder& decoder, BlobReader& reader, uint64_t length,
                  const std::string& what, std::span<std::byte> buffer,
                  const std::function<void(std::span<const std::byte>)>& on_input,
                  const std::function<void(std::span<const std::byte>)>& emit,
                  const std::atomic<bool>* cancel);

// Hands a file content on, holding its last piece back until the whole content matched its
// size and TOC digest: whatever consumes it (the tar parser, an object writer) completes only
// with the last byte, so a wrong content never completes an object.
class ContentCheck {
 public:
  ContentCheck(uint64_t size, std::string digest,
               std::function<void(std::span<const std::byte>)> feed, std::string what)
      : size_(size), digest_(std::move(digest)), feed_(std::move(feed)), what_(std::move(what)) {}
  void add(std::span<const std::byte> data);  // throws (naming what) past the TOC's size
  void finish();                              // throws unless size and digest match

 private:
  uint64_t size_;
  std::string digest_;  // "sha256:<hex>"
  std::function<void(std::span<const std::byte>)> feed_;
  std::string what_;
  Sha256 h_;
  uint64_t n_ = 0;
  std::vector<std::byte> pending_;
};

// How many byte ranges one GET asks for (a multipart/byteranges request).
inline constexpr size_t kRangesPerRequest = 64;

// Reads a batch of byte ranges of a blob, in order: with one multi-range GET where the source
// offers it, else with one GET per range, opened as each range is reached.
class RangeBatch {
 public:
  RangeBatch(ImageSource& source, const Descriptor& blob,
             std::vector<std::pair<uint64_t, uint64_t>> ranges, std::string what);
  // A reader at range i's first byte, good for that range's bytes; ranges are taken in order.
  BlobReader& at(size_t i);
  uint64_t requests() const noexcept { return requests_; }  // GETs sent so far

 private:
  ImageSource* source_;
  const Descriptor* blob_;
  std::vector<std::pair<uint64_t, uint64_t>> ranges_;
  std::string what_;
  std::unique_ptr<BlobReader> shared_;  // the multi-range reader, if the source offered one
  std::unique_ptr<BlobReader> own_;     // else the current range's
  uint64_t requests_ = 0;
};

// Exactly length bytes of the blob from offset, with one ranged GET (bounded by the TOC
// limit); count gets the bytes as they arrive.
std::vector<std::byte> fetch_range_exact(ImageSource& source, const Descriptor& layer,
                                         uint64_t offset, uint64_t length, const std::string& what,
                                         const std::function<void(uint64_t)>& count);

// A zstd:chunked layer's TOC: fetched, checked against the manifest-checksum annotation,
// decompressed and parsed (an object with an "entries" array).
nlohmann::json fetch_zstd_chunked_toc(ImageSource& source, const Descriptor& layer,
                                      const ChunkedToc& toc, const std::string& what,
                                      const std::function<void(uint64_t)>& count);

// An eStargz layer's TOC member (estargz.cc).
struct EstargzTocMember {
  uint64_t offset = 0;  // in the blob: where the tar's members end
  // Decompressed: the tar entry stargz.index.json (the TOC JSON) and the end-of-archive
  // blocks, which the layer's diff_id covers.
  std::vector<std::byte> tar;
};

// An eStargz layer's TOC: the footer and the TOC member fetched (count gets the bytes), the
// JSON checked against the toc.digest annotation and parsed (an object with an "entries"
// array). Throws naming what.
nlohmann::json fetch_estargz_toc(ImageSource& source, const Descriptor& layer,
                                 const ChunkedToc& toc, const std::string& what,
                                 const std::function<void(uint64_t)>& count,
                                 EstargzTocMember& member);

// One chunk of a regular file's content in an eStargz layer.
struct EstargzChunk {
  uint64_t begin = 0, end = 0;  // compressed range: its member up to the next chunk's (or TOC's)
  uint64_t file_offset = 0;     // where in the file the chunk starts
  uint64_t size = 0;            // its uncompressed bytes
  std::string digest;           // chunkDigest, "sha256:<hex>"
  std::string file_digest;      // the file's digest ("" when the TOC gives none)
  std::string name;             // the file's TOC name
  uint64_t file_size = 0;
  size_t entry = 0;  // index in the TOC's entries of the file's reg entry
  // The file's last chunk: its range also holds the tar padding and the headers that
  // follow, up to the next content.
  bool last = false;
};

// Every chunk of the TOC's non-empty regular files, in blob order; throws (naming toc_what)
// for chunks that do not continue their file, members out of order or past toc_offset, and
// missing or malformed chunkDigests.
std::vector<EstargzChunk> estargz_chunks(const nlohmann::json& doc, uint64_t toc_offset,
                                         const std::string& toc_what);

struct ChunkedStats {
  uint64_t fetched = 0;        // compressed bytes fetched (TOC included)
  uint64_t requests = 0;       // ranged GETs
  uint64_t files_fetched = 0;  // file contents fetched
  uint64_t files_reused = 0;   // file contents read from existing objects
  uint64_t bytes_reused = 0;   // their uncompressed bytes
  // eStargz: last-chunk members rebuilt from an object and a recorded tail (not fetched), and
  // those whose recorded tail did not give the member's CRC-32 and size (fetched instead).
  uint64_t tails_rebuilt = 0;
  uint64_t tails_refused = 0;
};

class ChunkedLayerReader {
 public:
  // Fetches and verifies the TOC and plans the fetches. Returns nullopt (nothing fetched)
  // when the source cannot read byte ranges.
  static std::optional<ChunkedLayerReader> open(const store::Repository& repo, ImageSource& source,
                                                const Descriptor& layer, const ChunkedToc& toc,
                                                std::string what,
                                                std::function<void(uint64_t)> on_bytes,
                                                std::atomic<bool>* cancel);

  // Streams the uncompressed layer tar into feed, in order.
  void run(const std::function<void(std::span<const std::byte>)>& feed);
  const ChunkedStats& stats() const noexcept { return stats_; }
  // eStargz: the tails of the last-chunk members fetched whole, for estargz_tails::record
  // once the layer passed its diff_id check.
  const std::vector<estargz_tails::Tail>& tails() const noexcept { return tails_; }

  struct Segment {
    uint64_t begin = 0;  // compressed offsets in the blob; for reused files, what they replace
    uint64_t end = 0;
    bool payload = false;  // a file content (or chunk of one) the TOC lists (else: headers, ...)
    std::string digest;    // payloads: "sha256:<hex>"
    uint64_t size = 0;     // payloads: uncompressed bytes
    // payloads: the segment decompresses to more than the payload; what follows it (padding,
    // the next headers) is tar as well (eStargz: a file's last chunk shares its member).
    bool tail = false;
    uint64_t object_offset = 0;   // payloads: where in the file (and a reused object) it starts
    uint64_t object_size = 0;     // payloads: the whole file's size (a reused object's)
    std::optional<Digest> reuse;  // payloads read from this object instead of fetched
    // reused payloads with tail: the bytes after the payload (estargz_tails), checked with
    // the payload against the member's gzip trailer when planned
    std::vector<std::byte> tail_bytes;
  };

 private:
  ChunkedLayerReader(const store::Repository& repo, ImageSource& source, Descriptor layer,
                     std::string what, std::function<void(uint64_t)> on_bytes,
                     std::atomic<bool>* cancel)
      : repo_(&repo),
        source_(&source),
        layer_(std::move(layer)),
        what_(std::move(what)),
        on_bytes_(std::move(on_bytes)),
        cancel_(cancel) {}
  void plan_zstd_chunked(const ChunkedToc& toc);
  void plan_estargz(const ChunkedToc& toc);  // estargz.cc
  std::vector<std::byte> fetch_exact(uint64_t offset, uint64_t length, const std::string& what);
  // The concatenated bytes of small ranges (offset, length), up to 64 in one GET.
  std::vector<std::byte> fetch_ranges(const std::vector<std::pair<uint64_t, uint64_t>>& ranges,
                                      const std::string& what);
  void rebuild_tails(const std::vector<size_t>& candidates);  // estargz.cc
  void fetch_run(size_t first, size_t last, BlobReader& reader,
                 const std::function<void(std::span<const std::byte>)>& feed);
  void reuse(const Segment& s, const std::function<void(std::span<const std::byte>)>& feed);
  void count(uint64_t n);

  const store::Repository* repo_;
  ImageSource* source_;
  Descriptor layer_;
  std::string what_;
  std::function<void(uint64_t)> on_bytes_;
  std::atomic<bool>* cancel_;
  TocFormat format_ = TocFormat::zstd_chunked;
  std::vector<Segment> segments_;
  // Uncompressed tar that follows the segments, already fetched with the TOC (eStargz: the
  // TOC's own tar entry and the end-of-archive blocks, which the diff_id covers).
  std::vector<std::byte> trailer_;
  std::vector<estargz_tails::Tail> tails_;
  ChunkedStats stats_;
};

}  // namespace cfs::oci
