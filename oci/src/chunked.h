// Partial pulls of zstd:chunked layers (containers/storage's format: a tar compressed as a
// sequence of zstd frames, every regular file's content in frames of its own, and a table of
// contents (TOC) in a skippable frame after the tar, located and checksummed by annotations of
// the layer's manifest descriptor).
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

#include <zstd.h>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cfs/digest.h"
#include "cfs/oci/source.h"
#include "cfs/store/repository.h"

namespace cfs::oci {

// Where a zstd:chunked layer keeps its TOC, from the descriptor's annotations (the
// io.github.containers.zstd-chunked.* names, or the io.containers.zstd-chunked.* ones older
// writers used, such as skopeo 1.9).
struct ChunkedToc {
  uint64_t offset = 0;        // of the zstd-compressed TOC inside its skippable frame
  uint64_t length = 0;        // compressed
  uint64_t uncompressed = 0;  // bytes of TOC JSON
  std::string checksum;       // sha256 of the compressed TOC bytes, "sha256:<hex>"
};

// nullopt when the descriptor is not a zstd:chunked layer; throws (naming what) for
// annotations that claim to be and are malformed.
std::optional<ChunkedToc> chunked_toc_of(const Descriptor& layer, const std::string& what);

struct ChunkedStats {
  uint64_t fetched = 0;        // compressed bytes fetched (TOC included)
  uint64_t requests = 0;       // ranged GETs
  uint64_t files_fetched = 0;  // file contents fetched
  uint64_t files_reused = 0;   // file contents read from existing objects
  uint64_t bytes_reused = 0;   // their uncompressed bytes
};

// A TOC entry's unsigned integer field; 0 when absent.
uint64_t toc_uint_field(const nlohmann::json& entry, const char* key, const std::string& what);

// Fetches the layer's compressed TOC with one ranged GET (count is told the bytes), checks
// it against the manifest-checksum annotation, decompresses and parses it; the result has an
// "entries" array. nullopt (nothing fetched) when the source cannot read byte ranges.
std::optional<nlohmann::json> fetch_toc(ImageSource& source, const Descriptor& layer,
                                        const ChunkedToc& toc, const std::string& what,
                                        const std::function<void(uint64_t)>& count);

// Decompresses a byte range of zstd frames read from a BlobReader: the range must end at a
// frame boundary. One decoder per thread; reusable for consecutive ranges.
class FrameDecoder {
 public:
  FrameDecoder();
  // Reads length bytes from reader (count is told each piece), hands the output to emit.
  void run(BlobReader& reader, uint64_t length, const std::string& what,
           const std::function<void(uint64_t)>& count,
           const std::function<void(std::span<const std::byte>)>& emit, std::atomic<bool>* cancel);

 private:
  struct Free {
    void operator()(ZSTD_DCtx* d) const noexcept { ZSTD_freeDCtx(d); }
  };
  std::unique_ptr<ZSTD_DCtx, Free> dctx_;
  std::vector<std::byte> in_, out_;
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

  struct Segment {
    uint64_t begin = 0;  // compressed offsets in the blob; for reused files, what they replace
    uint64_t end = 0;
    bool payload = false;         // a file content the TOC lists (else: headers, padding, ...)
    std::string digest;           // payloads: "sha256:<hex>"
    uint64_t size = 0;            // payloads: uncompressed bytes
    std::optional<Digest> reuse;  // payloads read from this object instead of fetched
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
  std::vector<Segment> segments_;
  ChunkedStats stats_;
};

}  // namespace cfs::oci
