// Lazy pulls (cfsctl oci pull --lazy): an image usable before its pull finishes.
//
// LazyPull::open fetches the manifest, the config and the TOC of every layer (all layers must
// be zstd:chunked or eStargz), merges the TOC entries with the layer-merge rules of every pull
// (LayerMerger) and writes a provisional EROFS image to an unlinked private file. Regular
// files whose content the repository already holds (content index) are ordinary external
// files; every other non-empty regular file is "pending": it is redirected to
// "/pending-sha256/<hex of its TOC sha256>" (a directory name that is not two hex digits, so
// it can never be an object path) and has no metacopy digest. The image's id is not the
// final one and it is never stored in the repository.
//
// resolve() turns a pending content into an object: it fetches that file's frames (eStargz:
// gzip members) with one ranged GET, checks each eStargz chunk against its chunkDigest and
// the whole content's size and sha256 against the TOC, writes the object (its fs-verity digest
// computed as it is written) and records it in the content index. Concurrent calls for one
// content fetch it once; a failure is not cached (a later call retries).
//
// open_pending() serves a large file whose TOC splits it into chunks with a chunkDigest each
// (zstd:chunked writes one frame per chunk) without waiting for all of it: the answer is a
// PendingFile (cfs/pending_file.h), a temporary file of the content's size whose bytes are valid in
// the ranges ensure() returned for. ensure() fetches the chunks covering a range that are not there
// yet (adjacent ones with one ranged GET), checks each against its chunkDigest and writes it in
// place. When the last chunk is there, the whole content is checked against its TOC size and
// sha256, copied into an object and recorded as resolve() does; later opens get the object.
//
// finish() resolves every pending content in TOC order (optionally throttled), then runs the
// normal pull of the same source (pull()), which now finds every content locally and
// fetches only headers and padding (eStargz: the last chunks' members are rebuilt from the
// tails recorded as they were fetched): the layer streams, diff_id checks, EROFS images and the
// tag are exactly a normal pull's. It refuses if the source's manifest changed meanwhile.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "cfs/digest.h"
#include "cfs/fd.h"
#include "cfs/oci/oci.h"
#include "cfs/pending_file.h"
#include "cfs/store/repository.h"

namespace cfs::oci {

// The redirect directory of pending contents in a provisional image.
inline constexpr std::string_view kPendingRedirectDir = "pending-sha256";

struct LazyStats {
  uint64_t pending = 0;           // contents not local when the provisional image was written
  uint64_t on_demand = 0;         // ... fetched by resolve() or begun by a read (open_pending)
  uint64_t background = 0;        // ... fetched by finish()
  uint64_t bytes_fetched = 0;     // compressed bytes of the TOCs and of those contents
  uint64_t chunks_on_demand = 0;  // chunks of large contents fetched for reads (ensure())
};

class LazyPull {
 public:
  // repo is used from the calling thread and, through its path, from resolve()'s callers.
  static std::unique_ptr<LazyPull> open(store::Repository& repo, std::string_view source_spec,
                                        const PullOptions& options);
  ~LazyPull();
  LazyPull(const LazyPull&) = delete;
  LazyPull& operator=(const LazyPull&) = delete;

  // The provisional EROFS image (an unlinked file, read-only use).
  int image_fd() const noexcept;
  std::string source_name() const;

  // The object holding the pending content sha256_hex (64 lowercase hex digits), fetched now
  // if it is not local yet. Thread-safe. Throws cfs::Error naming the file and the problem.
  Digest resolve(std::string_view sha256_hex);
  // resolve() for small files and files without per-chunk digests; the PendingFile
  // (cfs/pending_file.h) of a large chunked file that is not wholly local yet. Thread-safe.
  PendingAnswer open_pending(std::string_view sha256_hex);

  // Fetches every pending content not fetched yet (at most rate_limit compressed bytes per
  // second when non-zero), then pulls and tags as pull() does. cancel stops it between
  // contents (Error "cancelled").
  PullResult finish(std::optional<std::string> tag, uint64_t rate_limit,
                    std::atomic<bool>* cancel = nullptr);

  LazyStats stats() const;

  struct State;

 private:
  explicit LazyPull(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace cfs::oci
