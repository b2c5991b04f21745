#include "chunked.h"

#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <nlohmann/json.hpp>

#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/oci/tar.h"
#include "content_index.h"
#include "json_util.h"
#include "util.h"

namespace cfs::oci {

namespace {

using nlohmann::json;

constexpr std::string_view kPrefixes[] = {"io.github.containers.zstd-chunked.",
                                          "io.containers.zstd-chunked."};
constexpr uint64_t kSkippableHeader = 8;  // magic + frame size before the compressed TOC
constexpr size_t kBuffer = 256 << 10;
constexpr uint64_t kMaxCompressedToc = 64u << 20;

struct DCtxFree {
  void operator()(ZSTD_DCtx* d) const noexcept { ZSTD_freeDCtx(d); }
};
using DCtx = std::unique_ptr<ZSTD_DCtx, DCtxFree>;

uint64_t parse_u64(std::string_view s, const std::string& what) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty())
    throw Error(what + ": '" + escape_for_log(s) + "' is not a number");
  return v;
}

std::string decompress_toc(std::span<const std::byte> in, uint64_t expect,
                           const std::string& what) {
  if (expect > store::kMaxJsonDocument)
    throw Error(what + ": the TOC has " + std::to_string(expect) + " bytes, more than the " +
                std::to_string(store::kMaxJsonDocument) + " this reader accepts");
  DCtx d(ZSTD_createDCtx());
  if (!d) throw Error(what + ": cannot allocate a zstd context");
  std::string out(static_cast<size_t>(expect) + 1, '\0');
  ZSTD_inBuffer ib{in.data(), in.size(), 0};
  ZSTD_outBuffer ob{out.data(), out.size(), 0};
  size_t ret = 1;
  while (ib.pos < ib.size || (ret != 0 && ob.pos < ob.size)) {
    size_t before_in = ib.pos, before_out = ob.pos;
    ret = ZSTD_decompressStream(d.get(), &ob, &ib);
    if (ZSTD_isError(ret))
      throw Error(what + ": the TOC does not decompress: " + ZSTD_getErrorName(ret));
    if (ib.pos == before_in && ob.pos == before_out) break;
  }
  if (ret != 0 || ob.pos != expect)
    throw Error(what + ": the TOC decompresses to " + std::to_string(ob.pos) +
                " bytes, the annotation says " + std::to_string(expect));
  out.resize(ob.pos);
  return out;
}

class ZstdDecoder final : public FrameDecoder {
 public:
  ZstdDecoder() : d_(ZSTD_createDCtx()) {
    if (!d_) throw Error("cannot allocate a zstd context");
  }
  void reset(std::string what) override {
    what_ = std::move(what);
    ZSTD_DCtx_reset(d_.get(), ZSTD_reset_session_only);
    complete_ = true;
  }
  void feed(std::span<const std::byte> in,
            const std::function<void(std::span<const std::byte>)>& out) override {
    ZSTD_inBuffer ib{in.data(), in.size(), 0};
    for (;;) {
      ZSTD_outBuffer ob{buf_.data(), buf_.size(), 0};
      const size_t consumed = ib.pos;
      size_t r = ZSTD_decompressStream(d_.get(), &ob, &ib);
      if (ZSTD_isError(r))
        throw Error(what_ + ": does not decompress: " + ZSTD_getErrorName(r) +
                    " (corrupt or tampered)");
      // Only a call that made progress says where the stream is: after a frame whose output
      // filled the buffer exactly, one more call (to see whether output is left) reads
      // nothing and answers for a next frame.
      if (ob.pos > 0 || ib.pos > consumed) complete_ = r == 0;
      if (ob.pos > 0) out(std::span(buf_).first(ob.pos));
      if (ib.pos == ib.size && ob.pos < ob.size) break;
    }
  }
  bool at_boundary() const override { return complete_; }
  const char* unit() const noexcept override { return "zstd frame"; }

 private:
  std::string what_;
  DCtx d_;
  bool complete_ = true;
  std::vector<std::byte> buf_ = std::vector<std::byte>(kBuffer);
};

}  // namespace

void ContentCheck::add(std::span<const std::byte> data) {
  if (data.empty()) return;
  n_ += data.size();
  if (n_ > size_)
    throw Error(what_ + ": more than the " + std::to_string(size_) +
                " bytes the TOC gives (corrupt or tampered)");
  h_.update(data);
  if (!pending_.empty()) feed_(pending_);
  pending_.assign(data.begin(), data.end());
}

void ContentCheck::finish() {
  if (n_ != size_)
    throw Error(what_ + ": " + std::to_string(n_) + " bytes, the TOC says " +
                std::to_string(size_) + " (corrupt or tampered)");
  std::string actual = h_.finish();
  if (actual != digest_)
    throw Error(what_ + ": content hashes to " + actual + ", the TOC says " + digest_ +
                " (corrupt or tampered)");
  feed_(pending_);
}

uint64_t toc_uint(const json& e, const char* key, const std::string& what) {
  auto it = e.find(key);
  if (it == e.end()) return 0;
  if (!it->is_number_unsigned()) {
    if (it->is_number_integer() && it->get<int64_t>() == 0) return 0;
    throw Error(what + ": '" + key + "' is not a non-negative integer");
  }
  return it->get<uint64_t>();
}

std::unique_ptr<FrameDecoder> make_zstd_decoder() {
  return std::make_unique<ZstdDecoder>();
}

std::optional<ChunkedToc> chunked_toc_of(const Descriptor& layer, const std::string& what) {
  if (auto estargz = estargz_toc_of(layer, what)) return estargz;
  if (layer.media_type != "application/vnd.oci.image.layer.v1.tar+zstd") return std::nullopt;
  for (std::string_view prefix : kPrefixes) {
    auto checksum = layer.annotations.find(std::string(prefix) + "manifest-checksum");
    auto position = layer.annotations.find(std::string(prefix) + "manifest-position");
    if (checksum == layer.annotations.end() && position == layer.annotations.end()) continue;
    std::string w = what + ": annotation " + std::string(prefix);
    if (checksum == layer.annotations.end() || position == layer.annotations.end())
      throw Error(w + "*: manifest-checksum and manifest-position come together");
    validate_oci_digest(checksum->second, w + "manifest-checksum");
    // <offset>:<length>:<uncompressed length>:<type>, type 1 (the CRFS-style TOC).
    std::vector<std::string_view> parts;
    std::string_view s = position->second;
    for (size_t p; (p = s.find(':')) != std::string_view::npos; s.remove_prefix(p + 1))
      parts.push_back(s.substr(0, p));
    parts.push_back(s);
    if (parts.size() != 4)
      throw Error(w + "manifest-position: '" + escape_for_log(position->second) +
                  "' is not offset:length:uncompressed:type");
    ChunkedToc toc;
    toc.offset = parse_u64(parts[0], w + "manifest-position");
    toc.length = parse_u64(parts[1], w + "manifest-position");
    toc.uncompressed = parse_u64(parts[2], w + "manifest-position");
    if (parse_u64(parts[3], w + "manifest-position") != 1)
      throw Error(w + "manifest-position: TOC type " + std::string(parts[3]) +
                  " is not the one known (1)");
    toc.checksum = checksum->second;
    if (toc.offset < kSkippableHeader || toc.offset > layer.size ||
        toc.length > layer.size - toc.offset)
      throw Error(w + "manifest-position: the TOC at " + std::to_string(toc.offset) + "+" +
                  std::to_string(toc.length) + " is not inside the " + std::to_string(layer.size) +
                  "-byte blob");
    return toc;
  }
  return std::nullopt;
}

std::optional<ChunkedLayerReader> ChunkedLayerReader::open(const store::Repository& repo,
                                                           ImageSource& source,
                                                           const Descriptor& layer,
                                                           const ChunkedToc& toc, std::string what,
                                                           std::function<void(uint64_t)> on_bytes,
                                                           std::atomic<bool>* cancel) {
  // Whether the source reads ranges at all is asked with an empty range at the blob's end,
  // so that a source that cannot costs nothing.
  if (!source.open_blob_range(layer, layer.size, 0)) return std::nullopt;
  ChunkedLayerReader r(repo, source, layer, std::move(what), std::move(on_bytes), cancel);
  r.format_ = toc.format;
  if (toc.format == TocFormat::estargz)
    r.plan_estargz(toc);
  else
    r.plan_zstd_chunked(toc);
  return r;
}

std::vector<std::byte> fetch_range_exact(ImageSource& source, const Descriptor& layer,
                                         uint64_t offset, uint64_t length, const std::string& what,
                                         const std::function<void(uint64_t)>& count) {
  if (length > kMaxCompressedToc)
    throw Error(what + ": " + std::to_string(length) + " bytes, more than the " +
                std::to_string(kMaxCompressedToc) + " this reader accepts");
  auto reader = source.open_blob_range(layer, offset, length);
  if (!reader) throw Error(what + ": the source stopped serving byte ranges");
  std::vector<std::byte> out(static_cast<size_t>(length));
  size_t got = 0;
  while (got < out.size()) {
    size_t n = reader->read(std::span(out).subspan(got));
    if (n == 0)
      throw Error(what + ": the registry sent " + std::to_string(got) + " of " +
                  std::to_string(length) + " bytes");
    got += n;
    if (count) count(n);
  }
  return out;
}

RangeBatch::RangeBatch(ImageSource& source, const Descriptor& blob,
                       std::vector<std::pair<uint64_t, uint64_t>> ranges, std::string what)
    : source_(&source), blob_(&blob), ranges_(std::move(ranges)), what_(std::move(what)) {
  if (ranges_.size() > 1) shared_ = source_->open_blob_ranges(*blob_, ranges_);
  if (shared_) ++requests_;
}

BlobReader& RangeBatch::at(size_t i) {
  if (shared_) return *shared_;
  own_ = source_->open_blob_range(*blob_, ranges_.at(i).first, ranges_[i].second);
  if (!own_) throw Error(what_ + ": the source stopped serving byte ranges");
  ++requests_;
  return *own_;
}

std::vector<std::byte> ChunkedLayerReader::fetch_ranges(
    const std::vector<std::pair<uint64_t, uint64_t>>& ranges, const std::string& what) {
  std::vector<std::byte> out;
  for (size_t r = 0; r < ranges.size(); r += kRangesPerRequest) {
    std::vector<std::pair<uint64_t, uint64_t>> batch(
        ranges.begin() + static_cast<ptrdiff_t>(r),
        ranges.begin() + static_cast<ptrdiff_t>(std::min(ranges.size(), r + kRangesPerRequest)));
    uint64_t total = 0;
    for (const auto& [offset, length] : batch) total += length;
    if (total > kMaxCompressedToc)
      throw Error(what + ": " + std::to_string(total) + " bytes, more than the " +
                  std::to_string(kMaxCompressedToc) + " this reader accepts");
    RangeBatch readers(*source_, layer_, batch, what_);
    for (size_t i = 0; i < batch.size(); ++i) {
      BlobReader& reader = readers.at(i);
      size_t got = out.size();
      out.resize(got + static_cast<size_t>(batch[i].second));
      while (got < out.size()) {
        size_t n = reader.read(std::span(out).subspan(got));
        if (n == 0)
          throw Error(what + ": the registry sent less than asked for (" +
                      std::to_string(out.size() - got) + " bytes missing)");
        got += n;
        count(n);
      }
    }
    stats_.requests += readers.requests();
  }
  return out;
}

std::vector<std::byte> ChunkedLayerReader::fetch_exact(uint64_t offset, uint64_t length,
                                                       const std::string& what) {
  ++stats_.requests;
  return fetch_range_exact(*source_, layer_, offset, length, what, [&](uint64_t n) { count(n); });
}

nlohmann::json fetch_zstd_chunked_toc(ImageSource& source, const Descriptor& layer,
                                      const ChunkedToc& toc, const std::string& what,
                                      const std::function<void(uint64_t)>& count) {
  const std::string toc_what = what + ": zstd:chunked TOC";
  std::vector<std::byte> compressed =
      fetch_range_exact(source, layer, toc.offset, toc.length, toc_what, count);
  Sha256 h;
  h.update(compressed);
  if (std::string actual = h.finish(); actual != toc.checksum)
    throw Error(toc_what + ": hashes to " + actual + ", the manifest-checksum annotation says " +
                toc.checksum + " (corrupt or tampered)");
  json doc =
      store::parse_json_bounded(decompress_toc(compressed, toc.uncompressed, toc_what), toc_what);
  if (!doc.is_object() || !doc.contains("entries") || !doc["entries"].is_array())
    throw Error(toc_what + ": no 'entries' array");
  return doc;
}

void ChunkedLayerReader::plan_zstd_chunked(const ChunkedToc& toc) {
  const std::string toc_what = what_ + ": zstd:chunked TOC";
  ++stats_.requests;
  json doc = fetch_zstd_chunked_toc(*source_, layer_, toc, what_, [&](uint64_t n) { count(n); });

  // The tar's frames end where the TOC's skippable frame starts.
  const uint64_t data_end = toc.offset - kSkippableHeader;
  uint64_t pos = 0;
  size_t index = 0;
  for (const json& e : doc["entries"]) {
    std::string ew = toc_what + ": entry " + std::to_string(index++);
    if (!e.is_object()) throw Error(ew + ": not an object");
    if (json_string(e, "type", "", ew) != "reg") continue;
    uint64_t size = toc_uint(e, "size", ew);
    if (size == 0) continue;
    Segment s;
    s.payload = true;
    s.size = size;
    s.object_size = size;
    s.begin = toc_uint(e, "offset", ew);
    s.end = toc_uint(e, "endOffset", ew);
    s.digest = json_string(e, "digest", "", ew);
    validate_oci_digest(s.digest,
                        ew + " ('" + escape_for_log(json_string(e, "name", "", ew)) + "'): digest");
    if (s.begin < pos || s.end <= s.begin || s.end > data_end)
      throw Error(ew + ": content frames at " + std::to_string(s.begin) + "-" +
                  std::to_string(s.end) + " are out of order or outside the tar's " +
                  std::to_string(data_end) + " bytes");
    if (s.begin > pos) segments_.push_back(Segment{pos, s.begin});
    if (size > kTarInlineMax && s.end - s.begin >= kMinReuse)
      s.reuse = content_index::lookup(*repo_, s.digest);
    pos = s.end;
    segments_.push_back(std::move(s));
  }
  if (pos < data_end) segments_.push_back(Segment{pos, data_end});
}

void ChunkedLayerReader::count(uint64_t n) {
  stats_.fetched += n;
  if (on_bytes_) on_bytes_(n);
}

void ChunkedLayerReader::run(const std::function<void(std::span<const std::byte>)>& feed) {
  // Runs of segments to fetch, [first, last) each; one GET serves up to kRangesPerRequest.
  std::vector<std::pair<size_t, size_t>> runs;
  for (size_t i = 0; i < segments_.size();) {
    if (segments_[i].reuse) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < segments_.size() && !segments_[j].reuse) ++j;
    runs.emplace_back(i, j);
    i = j;
  }
  size_t next = 0;  // the next segment to produce
  auto reuse_until = [&](size_t end) {
    for (; next < end; ++next) {
      if (cancel_ && cancel_->load()) throw Error("cancelled");
      reuse(segments_[next], feed);
    }
  };
  for (size_t r = 0; r < runs.size(); r += kRangesPerRequest) {
    size_t r_end = std::min(runs.size(), r + kRangesPerRequest);
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (size_t k = r; k < r_end; ++k) {
      uint64_t b = segments_[runs[k].first].begin, e = segments_[runs[k].second - 1].end;
      ranges.emplace_back(b, e - b);
    }
    RangeBatch readers(*source_, layer_, std::move(ranges), what_);
    for (size_t k = r; k < r_end; ++k) {
      reuse_until(runs[k].first);
      fetch_run(runs[k].first, runs[k].second, readers.at(k - r), feed);
      next = runs[k].second;
    }
    stats_.requests += readers.requests();
  }
  reuse_until(segments_.size());
  if (!trailer_.empty()) feed(trailer_);
}

void ChunkedLayerReader::reuse(const Segment& s,
                               const std::function<void(std::span<const std::byte>)>& feed) {
  std::string w = what_ + ": object " + s.reuse->hex() + " reused for " + s.digest;
  ContentCheck check(s.size, s.digest, feed, w + " (run oci fsck)");
  UniqueFd fd = repo_->open_object(*s.reuse);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw SystemError(errno, w);
  if (static_cast<uint64_t>(st.st_size) != s.object_size)
    throw Error(w + ": the object has " + std::to_string(st.st_size) + " bytes, the TOC says " +
                std::to_string(s.object_size) + " (run oci fsck)");
  std::vector<std::byte> buf(kBuffer);
  uint64_t pos = s.object_offset, end = s.object_offset + s.size;
  while (pos < end) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - pos));
    ssize_t n = ::pread(fd.get(), buf.data(), want, static_cast<off_t>(pos));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw SystemError(errno, w);
    if (n == 0) break;
    check.add(std::span(buf).first(static_cast<size_t>(n)));
    pos += static_cast<uint64_t>(n);
  }
  check.finish();
  if (s.tail) {
    if (!s.tail_bytes.empty()) feed(s.tail_bytes);
    ++stats_.tails_rebuilt;
  }
  if (s.object_offset == 0) ++stats_.files_reused;
  stats_.bytes_reused += s.size;
}

void decode_range(FrameDecoder& decoder, BlobReader& reader, uint64_t length,
                  const std::string& what, std::span<std::byte> buffer,
                  const std::function<void(std::span<const std::byte>)>& on_input,
                  const std::function<void(std::span<const std::byte>)>& emit,
                  const std::atomic<bool>* cancel) {
  decoder.reset(what);
  uint64_t left = length;
  while (left > 0) {
    if (cancel && cancel->load()) throw Error("cancelled");
    size_t n =
        reader.read(buffer.first(static_cast<size_t>(std::min<uint64_t>(left, buffer.size()))));
    if (n == 0)
      throw Error(what + ": the registry sent less than asked for (" + std::to_string(left) +
                  " bytes missing)");
    left -= n;
    if (on_input) on_input(buffer.first(n));
    decoder.feed(buffer.first(n), emit);
  }
  if (!decoder.at_boundary())
    throw Error(what + ": does not end at a " + decoder.unit() + " boundary (corrupt or tampered)");
}

void ChunkedLayerReader::fetch_run(size_t first, size_t last, BlobReader& reader,
                                   const std::function<void(std::span<const std::byte>)>& feed) {
  std::vector<std::byte> in(kBuffer);
  std::unique_ptr<FrameDecoder> decoder =
      format_ == TocFormat::estargz ? make_gzip_decoder() : make_zstd_decoder();
  for (size_t k = first; k < last; ++k) {
    const Segment& s = segments_[k];
    std::string w = what_ + ": bytes " + std::to_string(s.begin) + "-" + std::to_string(s.end);
    std::optional<ContentCheck> check;
    if (s.payload) check.emplace(s.size, s.digest, feed, w + " (content " + s.digest + ")");
    uint64_t payload_left = s.payload ? s.size : 0;
    bool checked = false;
    // eStargz last chunks: the tail, and the segment's last 8 bytes, the gzip trailer of its
    // last member (which zlib checks), for the tail cache.
    std::array<std::byte, 8> last8{};
    std::vector<std::byte> tail;
    bool keep_tail = s.tail;
    auto to_tail = [&](std::span<const std::byte> data) {
      if (!keep_tail) return;
      if (tail.size() + data.size() > estargz_tails::kMaxTail) {
        keep_tail = false;
        tail = {};
        return;
      }
      tail.insert(tail.end(), data.begin(), data.end());
    };
    // A payload's bytes go through its check; with a tail, what follows the payload is tar
    // again, handed on once the payload is verified.
    auto emit = [&](std::span<const std::byte> data) {
      if (!check || checked) {
        if (checked) to_tail(data);
        if (!data.empty()) feed(data);
        return;
      }
      if (!s.tail) {
        check->add(data);
        return;
      }
      size_t n = static_cast<size_t>(std::min<uint64_t>(payload_left, data.size()));
      check->add(data.first(n));
      payload_left -= n;
      if (n < data.size()) {
        check->finish();
        checked = true;
        to_tail(data.subspan(n));
        feed(data.subspan(n));
      }
    };
    decode_range(
        *decoder, reader, s.end - s.begin, w, in,
        [&](std::span<const std::byte> raw) {
          count(raw.size());
          if (s.tail) {  // keep the last 8 bytes read
            size_t keep = std::min(raw.size(), last8.size());
            std::move(last8.begin() + static_cast<ptrdiff_t>(keep), last8.end(), last8.begin());
            std::copy(raw.end() - static_cast<ptrdiff_t>(keep), raw.end(),
                      last8.end() - static_cast<ptrdiff_t>(keep));
          }
        },
        emit, cancel_);
    if (check && !checked) {
      check->finish();
      ++stats_.files_fetched;
    } else if (checked) {
      ++stats_.files_fetched;
    }
    // A tail that its range's last member does not wholly cover (the writer put part of it
    // in a member of its own) could never pass the trailer check: not recorded.
    uint32_t isize = estargz_tails::le32(std::span(last8).subspan(4));
    if (s.tail && keep_tail && s.end - s.begin >= last8.size() && tail.size() <= isize)
      tails_.push_back(estargz_tails::Tail{s.digest, estargz_tails::le32(std::span(last8).first(4)),
                                           isize, std::move(tail)});
  }
}

}  // namespace cfs::oci
