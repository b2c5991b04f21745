// RAII wrappers around libzstd streaming contexts (internal).
#pragma once

#include <zstd.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace cfs::store::detail {

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const noexcept { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* d) const noexcept { ZSTD_freeDCtx(d); }
};
using CCtxPtr = std::unique_ptr<ZSTD_CCtx, CCtxDeleter>;
using DCtxPtr = std::unique_ptr<ZSTD_DCtx, DCtxDeleter>;

// Appends compressed output to a byte vector, one frame per instance.
class ZstdCompressor {
 public:
  explicit ZstdCompressor(int level = ZSTD_CLEVEL_DEFAULT);
  void add(std::span<const std::byte> data);
  // Ends the frame; returns all compressed bytes.
  std::vector<std::byte> finish();

 private:
  void run(std::span<const std::byte> data, ZSTD_EndDirective mode);
  CCtxPtr cctx_;
  std::vector<std::byte> out_;
};

// Pull-style decompression of an in-memory zstd input (one or more frames).
class ZstdSource {
 public:
  ZstdSource(std::span<const std::byte> input, std::string what);
  // Reads up to dst.size() bytes; returns 0 only at the end of the data. Throws on corrupt
  // or truncated input.
  size_t read(std::span<std::byte> dst);
  // Reads exactly dst.size() bytes; false if the data ended before any byte; throws if it
  // ended part-way.
  bool read_exact(std::span<std::byte> dst, const char* item);

 private:
  bool refill();
  DCtxPtr dctx_;
  ZSTD_inBuffer in_;
  std::vector<std::byte> buf_;
  size_t buf_pos_ = 0;
  size_t buf_len_ = 0;
  size_t last_ret_ = 0;
  bool output_was_full_ = false;
  std::string what_;
};

}  // namespace cfs::store::detail
