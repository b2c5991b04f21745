#include "zstd_util.h"

#include <cstring>

#include "cfs/error.h"

namespace cfs::store::detail {

ZstdCompressor::ZstdCompressor(int level) : cctx_(ZSTD_createCCtx()) {
  if (!cctx_) throw Error("zstd: cannot allocate a compression context");
  size_t rc = ZSTD_CCtx_setParameter(cctx_.get(), ZSTD_c_compressionLevel, level);
  if (ZSTD_isError(rc)) throw Error(std::string("zstd: ") + ZSTD_getErrorName(rc));
}

void ZstdCompressor::run(std::span<const std::byte> data, ZSTD_EndDirective mode) {
  ZSTD_inBuffer in{data.data(), data.size(), 0};
  for (;;) {
    size_t old = out_.size();
    size_t room = ZSTD_CStreamOutSize();
    out_.resize(old + room);
    ZSTD_outBuffer out{out_.data() + old, room, 0};
    size_t remaining = ZSTD_compressStream2(cctx_.get(), &out, &in, mode);
    if (ZSTD_isError(remaining)) throw Error(std::string("zstd: ") + ZSTD_getErrorName(remaining));
    out_.resize(old + out.pos);
    bool done = mode == ZSTD_e_continue ? in.pos == in.size : remaining == 0;
    if (done) return;
  }
}

void ZstdCompressor::add(std::span<const std::byte> data) {
  if (!data.empty()) run(data, ZSTD_e_continue);
}

std::vector<std::byte> ZstdCompressor::finish() {
  run({}, ZSTD_e_end);
  return std::move(out_);
}

ZstdSource::ZstdSource(std::span<const std::byte> input, std::string what)
    : dctx_(ZSTD_createDCtx()),
      in_{input.data(), input.size(), 0},
      buf_(ZSTD_DStreamOutSize()),
      what_(std::move(what)) {
  if (!dctx_) throw Error("zstd: cannot allocate a decompression context");
}

bool ZstdSource::refill() {
  for (;;) {
    if (in_.pos == in_.size && !output_was_full_) {
      if (last_ret_ != 0) throw Error(what_ + ": zstd data is truncated");
      return false;
    }
    ZSTD_outBuffer out{buf_.data(), buf_.size(), 0};
    size_t ret = ZSTD_decompressStream(dctx_.get(), &out, &in_);
    if (ZSTD_isError(ret)) throw Error(what_ + ": corrupt zstd data: " + ZSTD_getErrorName(ret));
    last_ret_ = ret;
    output_was_full_ = out.pos == out.size;
    if (out.pos > 0) {
      buf_pos_ = 0;
      buf_len_ = out.pos;
      return true;
    }
  }
}

size_t ZstdSource::read(std::span<std::byte> dst) {
  size_t done = 0;
  while (done < dst.size()) {
    if (buf_pos_ == buf_len_ && !refill()) break;
    size_t n = std::min(dst.size() - done, buf_len_ - buf_pos_);
    std::memcpy(dst.data() + done, buf_.data() + buf_pos_, n);
    buf_pos_ += n;
    done += n;
  }
  return done;
}

bool ZstdSource::read_exact(std::span<std::byte> dst, const char* item) {
  size_t n = read(dst);
  if (n == 0 && !dst.empty()) return false;
  if (n != dst.size()) {
    throw Error(what_ + ": stream ends inside " + item + " (" + std::to_string(n) + " of " +
                std::to_string(dst.size()) + " bytes)");
  }
  return true;
}

}  // namespace cfs::store::detail
