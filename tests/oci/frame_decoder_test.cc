// The zstd frame decoder of chunked layers (oci/src/chunked.h) on frames made here with
// libzstd: whether what was fed ends at a frame boundary, also when a frame's output fills
// the decoder's buffer exactly (a run of zeros as containers/storage writes it, one frame per
// chunk), and that a cut frame does not.
#include <gtest/gtest.h>
#include <zstd.h>

#include <cstddef>
#include <random>
#include <vector>

#include "chunked.h"

namespace cfs::oci {
namespace {

std::vector<std::byte> compress(const std::vector<std::byte>& data) {
  std::vector<std::byte> out(ZSTD_compressBound(data.size()));
  size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 3);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

// Feeds frame in pieces of piece bytes; returns the output.
std::vector<std::byte> decode(FrameDecoder& d, const std::vector<std::byte>& frame, size_t piece) {
  std::vector<std::byte> out;
  d.reset("test frame");
  for (size_t pos = 0; pos < frame.size(); pos += piece)
    d.feed(std::span(frame).subspan(pos, std::min(piece, frame.size() - pos)),
           [&](std::span<const std::byte> o) { out.insert(out.end(), o.begin(), o.end()); });
  return out;
}

TEST(FrameDecoder, ZstdFramesEndAtABoundaryWhateverTheirOutputSize) {
  std::mt19937 rnd(7);
  std::vector<std::vector<std::byte>> contents = {
      std::vector<std::byte>(1 << 20),  // a multiple of the decoder's buffer, compressed tiny
      std::vector<std::byte>(512 << 10),
      std::vector<std::byte>(300000),
  };
  for (auto& b : contents.back()) b = static_cast<std::byte>(rnd());
  std::unique_ptr<FrameDecoder> d = make_zstd_decoder();
  for (const auto& content : contents) {
    std::vector<std::byte> frame = compress(content);
    for (size_t piece : {size_t{1}, size_t{7}, frame.size()}) {
      EXPECT_EQ(decode(*d, frame, piece), content) << content.size() << " in " << piece;
      EXPECT_TRUE(d->at_boundary()) << content.size() << " bytes fed in pieces of " << piece;
    }
    std::vector<std::byte> cut(frame.begin(), frame.end() - 1);
    decode(*d, cut, cut.size());
    EXPECT_FALSE(d->at_boundary()) << content.size() << " bytes, frame cut";
  }
}

}  // namespace
}  // namespace cfs::oci
