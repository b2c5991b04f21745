// eStargz layers (stargz-snapshotter's estargz package), read through their TOC.
//
// The blob is a gzip stream of members; decompressed whole it is the layer tar. The writer
// starts a new member for every chunk of a regular file's content (chunks are at most the
// writer's chunk size, 4 MiB by default), so a content starts at a member boundary; the tar
// padding after a file's last chunk and the headers of the entries that follow stay in that
// member. After the tar's members comes one member holding a tar entry stargz.index.json (the
// TOC JSON) and the end-of-archive blocks, then a 51-byte footer member (47 bytes in legacy
// stargz) whose gzip extra field gives the TOC member's offset. The manifest descriptor carries
// containerd.io/snapshot/stargz/toc.digest, the sha256 of the TOC JSON.
//
// TOC entries: type reg (a file, with its content's first chunk) or chunk (the next chunk of
// the file before); offset is the compressed offset of the member the chunk starts, the
// member ends where the next chunk's begins (or the TOC member); chunkOffset/chunkSize say
// which bytes of the content it holds (chunkSize 0: up to the end), chunkDigest is their
// sha256, digest the whole content's.
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/oci/tar.h"
#include "chunked.h"
#include "content_index.h"
#include "estargz_tails.h"
#include "json_util.h"
#include "util.h"

namespace cfs::oci {

namespace {

using nlohmann::json;

constexpr std::string_view kTocDigestAnnotation = "containerd.io/snapshot/stargz/toc.digest";
constexpr std::string_view kTocName = "stargz.index.json";
constexpr uint64_t kFooterSize = 51;
constexpr uint64_t kLegacyFooterSize = 47;
constexpr size_t kTarBlock = 512;
// The TOC member holds the JSON, its header and the end-of-archive blocks.
constexpr size_t kMaxTocTar = store::kMaxJsonDocument + 8 * kTarBlock;

struct ZStreamEnd {
  void operator()(z_stream* z) const noexcept {
    inflateEnd(z);
    delete z;
  }
};
using ZStream = std::unique_ptr<z_stream, ZStreamEnd>;

ZStream new_inflate(const std::string& what) {
  auto z = std::make_unique<z_stream>();
  std::memset(z.get(), 0, sizeof(z_stream));
  if (inflateInit2(z.get(), 16 + MAX_WBITS) != Z_OK)
    throw Error(what + ": cannot allocate a zlib stream");
  return ZStream(z.release());
}

class GzipDecoder final : public FrameDecoder {
 public:
  GzipDecoder() : z_(new_inflate("gzip")) {}
  void reset(std::string what) override {
    what_ = std::move(what);
    inflateReset(z_.get());
    ended_ = true;  // nothing fed: a boundary
    fresh_ = true;
  }
  void feed(std::span<const std::byte> in,
            const std::function<void(std::span<const std::byte>)>& out) override {
    z_->next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data()));
    z_->avail_in = static_cast<uInt>(in.size());
    while (z_->avail_in > 0) {
      if (ended_ && !fresh_) inflateReset(z_.get());  // the next member
      fresh_ = false;
      ended_ = false;
      for (;;) {
        z_->next_out = reinterpret_cast<Bytef*>(buf_.data());
        z_->avail_out = static_cast<uInt>(buf_.size());
        int r = inflate(z_.get(), Z_NO_FLUSH);
        size_t produced = buf_.size() - z_->avail_out;
        if (r != Z_OK && r != Z_STREAM_END && !(r == Z_BUF_ERROR && z_->avail_in == 0))
          throw Error(what_ + ": does not decompress: " + (z_->msg ? z_->msg : "gzip error") +
                      " (corrupt or tampered)");
        if (produced) out(std::span(buf_).first(produced));
        if (r == Z_STREAM_END) {
          ended_ = true;
          break;
        }
        if (z_->avail_in == 0 && z_->avail_out > 0) return;
      }
    }
  }
  bool at_boundary() const override { return ended_; }
  const char* unit() const noexcept override { return "gzip member"; }

 private:
  std::string what_;
  ZStream z_;
  bool ended_ = true, fresh_ = true;
  std::vector<std::byte> buf_ = std::vector<std::byte>(256 << 10);
};

// The offset the footer gives the TOC member, and the footer's size; throws when the blob
// ends in neither footer form.
std::pair<uint64_t, uint64_t> parse_footer(std::span<const std::byte> tail,
                                           const std::string& what) {
  auto u8 = [&](size_t i) { return std::to_integer<unsigned>(tail[i]); };
  // A gzip header with FEXTRA (RFC 1952): magic, deflate, flags, then XLEN at 10.
  auto header_ok = [&](size_t at) {
    return u8(at) == 0x1f && u8(at + 1) == 0x8b && u8(at + 2) == 8 && (u8(at + 3) & 4) != 0;
  };
  auto offset_of = [&](size_t at) -> std::optional<uint64_t> {  // "%016xSTARGZ"
    std::string_view s(reinterpret_cast<const char*>(tail.data()) + at, 22);
    if (s.substr(16) != "STARGZ") return std::nullopt;
    uint64_t v = 0;
    for (char c : s.substr(0, 16)) {
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) return std::nullopt;
      v = v << 4 | static_cast<unsigned>(d);
    }
    return v;
  };
  if (tail.size() >= kFooterSize) {
    size_t at = tail.size() - kFooterSize;
    // XLEN 26: one subfield 'S','G' of 22 bytes.
    if (header_ok(at) && u8(at + 10) == 26 && u8(at + 11) == 0 && u8(at + 12) == 'S' &&
        u8(at + 13) == 'G' && u8(at + 14) == 22 && u8(at + 15) == 0)
      if (auto off = offset_of(at + 16)) return {*off, kFooterSize};
  }
  if (tail.size() >= kLegacyFooterSize) {
    size_t at = tail.size() - kLegacyFooterSize;
    if (header_ok(at) && u8(at + 10) == 22 && u8(at + 11) == 0)
      if (auto off = offset_of(at + 12)) return {*off, kLegacyFooterSize};
  }
  throw Error(what + ": the blob does not end in an eStargz (or stargz) footer");
}

// The TOC member, decompressed: it must be exactly one gzip member.
std::vector<std::byte> gunzip_toc(std::span<const std::byte> in, const std::string& what) {
  ZStream z = new_inflate(what);
  std::vector<std::byte> out;
  z->next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data()));
  z->avail_in = static_cast<uInt>(in.size());
  for (;;) {
    size_t have = out.size();
    if (have > kMaxTocTar)
      throw Error(what + ": decompresses to more than the " + std::to_string(kMaxTocTar) +
                  " bytes this reader accepts");
    out.resize(std::min(kMaxTocTar + 1, std::max<size_t>(have * 2, 1 << 20)));
    z->next_out = reinterpret_cast<Bytef*>(out.data() + have);
    z->avail_out = static_cast<uInt>(out.size() - have);
    int r = inflate(z.get(), Z_FINISH);
    out.resize(out.size() - z->avail_out);
    if (r == Z_STREAM_END) break;
    if (r != Z_BUF_ERROR && r != Z_OK)
      throw Error(what + ": does not decompress as one gzip member: " +
                  (z->msg ? z->msg : "gzip error") + " (corrupt or tampered)");
    if (z->avail_in == 0 && out.size() == have)
      throw Error(what + ": truncated gzip member (corrupt or tampered)");
  }
  if (z->avail_in != 0)
    throw Error(what + ": " + std::to_string(z->avail_in) +
                " bytes between the TOC member and the footer");
  return out;
}

uint64_t octal_field(std::span<const std::byte> f, const std::string& what) {
  uint64_t v = 0;
  size_t i = 0;
  auto c = [&](size_t k) { return static_cast<char>(f[k]); };
  while (i < f.size() && c(i) == ' ') ++i;
  size_t digits = 0;
  for (; i < f.size() && c(i) >= '0' && c(i) <= '7'; ++i, ++digits) {
    if (v >> 60) throw Error(what + ": tar size field out of range");
    v = v << 3 | static_cast<uint64_t>(c(i) - '0');
  }
  for (; i < f.size(); ++i)
    if (c(i) != ' ' && c(i) != '\0') digits = 0;
  if (digits == 0) throw Error(what + ": tar size field is not an octal number");
  return v;
}

}  // namespace

std::unique_ptr<FrameDecoder> make_gzip_decoder() {
  return std::make_unique<GzipDecoder>();
}

std::optional<ChunkedToc> estargz_toc_of(const Descriptor& layer, const std::string& what) {
  if (layer.media_type != "application/vnd.oci.image.layer.v1.tar+gzip" &&
      layer.media_type != "application/vnd.docker.image.rootfs.diff.tar.gzip")
    return std::nullopt;
  auto it = layer.annotations.find(std::string(kTocDigestAnnotation));
  if (it == layer.annotations.end()) return std::nullopt;
  validate_oci_digest(it->second, what + ": annotation " + std::string(kTocDigestAnnotation));
  if (it->second.rfind("sha256:", 0) != 0)
    throw Error(what + ": annotation " + std::string(kTocDigestAnnotation) + ": '" +
                escape_for_log(it->second) + "' is not a sha256 digest");
  if (layer.size < kLegacyFooterSize)
    throw Error(what + ": an eStargz layer of " + std::to_string(layer.size) +
                " bytes has no room for its footer");
  ChunkedToc toc;
  toc.format = TocFormat::estargz;
  toc.checksum = it->second;
  return toc;
}

nlohmann::json fetch_estargz_toc(ImageSource& source, const Descriptor& layer,
                                 const ChunkedToc& toc, const std::string& what,
                                 const std::function<void(uint64_t)>& count,
                                 EstargzTocMember& member) {
  const std::string toc_what = what + ": eStargz TOC";
  // The annotations do not say where the TOC is, so the footer is fetched first.
  uint64_t tail_size = std::min(layer.size, kFooterSize);
  std::vector<std::byte> tail = fetch_range_exact(source, layer, layer.size - tail_size, tail_size,
                                                  what + ": eStargz footer", count);
  auto [toc_offset, footer_size] = parse_footer(tail, what + ": eStargz footer");
  if (toc_offset >= layer.size - footer_size)
    throw Error(what + ": eStargz footer: the TOC offset " + std::to_string(toc_offset) +
                " is not inside the " + std::to_string(layer.size) + "-byte blob");
  member.offset = toc_offset;
  member.tar = gunzip_toc(fetch_range_exact(source, layer, toc_offset,
                                            layer.size - footer_size - toc_offset, toc_what, count),
                          toc_what);
  // One tar header (name stargz.index.json, a regular file), the JSON, then the padding and
  // end-of-archive blocks the diff_id covers.
  std::span<const std::byte> tar(member.tar);
  if (tar.size() < kTarBlock) throw Error(toc_what + ": shorter than a tar header");
  std::string_view name(reinterpret_cast<const char*>(tar.data()), 100);
  name = name.substr(0, name.find('\0'));
  char type = static_cast<char>(tar[156]);
  if (name != kTocName || (type != '0' && type != '\0'))
    throw Error(toc_what + ": the member's tar entry is '" + escape_for_log(name) +
                "', not a regular file " + std::string(kTocName));
  uint64_t json_size = octal_field(tar.subspan(124, 12), toc_what);
  if (json_size > tar.size() - kTarBlock)
    throw Error(toc_what + ": the tar entry claims " + std::to_string(json_size) +
                " bytes, the member holds " + std::to_string(tar.size() - kTarBlock));
  std::string_view text(reinterpret_cast<const char*>(tar.data()) + kTarBlock,
                        static_cast<size_t>(json_size));
  Sha256 h;
  h.update(std::as_bytes(std::span(text.data(), text.size())));
  if (std::string actual = h.finish(); actual != toc.checksum)
    throw Error(toc_what + ": hashes to " + actual + ", the " + std::string(kTocDigestAnnotation) +
                " annotation says " + toc.checksum + " (corrupt or tampered)");
  json doc = store::parse_json_bounded(text, toc_what);
  if (!doc.is_object() || !doc.contains("entries") || !doc["entries"].is_array())
    throw Error(toc_what + ": no 'entries' array");
  return doc;
}

std::vector<EstargzChunk> estargz_chunks(const nlohmann::json& doc, uint64_t toc_offset,
                                         const std::string& toc_what) {
  // The chunks, in blob order; each runs from its offset to the next one's (or the TOC's).
  std::vector<EstargzChunk> chunks;
  std::string file_digest, file_name;
  uint64_t file_size = 0, covered = 0;
  size_t file_entry = 0;
  bool in_file = false;
  auto end_file = [&](const std::string& ew) {
    if (in_file && covered != file_size)
      throw Error(ew + ": the chunks of '" + escape_for_log(file_name) + "' cover " +
                  std::to_string(covered) + " of its " + std::to_string(file_size) + " bytes");
    if (in_file) chunks.back().last = true;
    in_file = false;
  };
  size_t index = 0;
  for (const json& e : doc["entries"]) {
    std::string ew = toc_what + ": entry " + std::to_string(index++);
    if (!e.is_object()) throw Error(ew + ": not an object");
    std::string type = json_string(e, "type", "", ew);
    if (type != "chunk") end_file(ew);
    if (type != "chunk" && (type != "reg" || toc_uint(e, "size", ew) == 0)) continue;
    if (type == "reg") {
      in_file = true;
      file_name = json_string(e, "name", "", ew);
      file_size = toc_uint(e, "size", ew);
      file_digest = json_string(e, "digest", "", ew);
      file_entry = index - 1;
      if (!file_digest.empty())
        validate_oci_digest(file_digest, ew + " ('" + escape_for_log(file_name) + "'): digest");
      covered = 0;
    } else if (!in_file) {
      throw Error(ew + ": a chunk entry without a regular file before it");
    }
    EstargzChunk c;
    c.begin = toc_uint(e, "offset", ew);
    c.file_offset = toc_uint(e, "chunkOffset", ew);
    c.size = toc_uint(e, "chunkSize", ew);
    if (c.size == 0 && c.file_offset < file_size) c.size = file_size - c.file_offset;
    c.digest = json_string(e, "chunkDigest", "", ew);
    c.file_digest = file_digest;
    c.name = file_name;
    c.file_size = file_size;
    c.entry = file_entry;
    validate_oci_digest(c.digest, ew + " ('" + escape_for_log(file_name) + "'): chunkDigest");
    if (c.file_offset != covered || c.size > file_size - covered)
      throw Error(ew + " ('" + escape_for_log(file_name) + "'): chunk " +
                  std::to_string(c.file_offset) + "+" + std::to_string(c.size) +
                  " does not continue the file's " + std::to_string(file_size) + " bytes");
    covered += c.size;
    uint64_t prev = chunks.empty() ? 0 : chunks.back().begin;
    if (c.begin <= prev || c.begin >= toc_offset)
      throw Error(ew + " ('" + escape_for_log(file_name) + "'): member offset " +
                  std::to_string(c.begin) + " is out of order or outside the tar's " +
                  std::to_string(toc_offset) + " bytes");
    if (!chunks.empty()) chunks.back().end = c.begin;
    chunks.push_back(std::move(c));
  }
  end_file(toc_what);
  if (!chunks.empty()) chunks.back().end = toc_offset;
  return chunks;
}

void ChunkedLayerReader::plan_estargz(const ChunkedToc& toc) {
  EstargzTocMember member;
  stats_.requests += 2;  // the footer, the TOC member
  json doc = fetch_estargz_toc(
      *source_, layer_, toc, what_, [&](uint64_t n) { count(n); }, member);
  const uint64_t toc_offset = member.offset;
  trailer_ = std::move(member.tar);
  std::vector<EstargzChunk> chunks = estargz_chunks(doc, toc_offset, what_ + ": eStargz TOC");

  // A non-last chunk's member holds exactly the chunk and may be read from an object that
  // holds the whole content. A last chunk's member also holds the tar that follows the
  // content: it is rebuilt only when a recorded tail for it gives the member's gzip trailer
  // (rebuild_tails), else fetched.
  uint64_t pos = 0;
  std::optional<Digest> object;
  std::string looked_up;
  std::vector<size_t> candidates;  // indexes into segments_
  for (size_t i = 0; i < chunks.size(); ++i) {
    const EstargzChunk& c = chunks[i];
    if (c.begin > pos) segments_.push_back(Segment{pos, c.begin});
    Segment s;
    s.begin = c.begin;
    s.end = c.end;
    s.payload = true;
    s.digest = c.digest;
    s.size = c.size;
    s.tail = c.last;
    s.object_offset = c.file_offset;
    s.object_size = c.file_size;
    if (!c.file_digest.empty() && c.file_size > kTarInlineMax && s.end - s.begin >= kMinReuse &&
        (!c.last || estargz_tails::known(*repo_, c.digest))) {
      if (looked_up != c.file_digest) {
        object = content_index::lookup(*repo_, c.file_digest);
        looked_up = c.file_digest;
      }
      s.reuse = object;
      if (c.last && object) candidates.push_back(segments_.size());
    }
    pos = s.end;
    segments_.push_back(std::move(s));
  }
  if (pos < toc_offset) segments_.push_back(Segment{pos, toc_offset});
  rebuild_tails(candidates);
}

void ChunkedLayerReader::rebuild_tails(const std::vector<size_t>& candidates) {
  if (candidates.empty()) return;
  // Each candidate range's last gzip trailer (RFC 1952: CRC-32 and ISIZE, little-endian):
  // its last 8 bytes; all fetched in a few multi-range GETs.
  constexpr uint64_t kTrailer = 8;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (size_t k : candidates) ranges.emplace_back(segments_[k].end - kTrailer, kTrailer);
  std::vector<std::byte> trailers = fetch_ranges(ranges, what_ + ": eStargz member trailers");
  std::vector<std::byte> buf(256 << 10);
  for (size_t n = 0; n < candidates.size(); ++n) {
    Segment& s = segments_[candidates[n]];
    std::span<const std::byte> t = std::span(trailers).subspan(n * kTrailer, kTrailer);
    uint32_t crc = estargz_tails::le32(t.first(4)), isize = estargz_tails::le32(t.subspan(4));
    std::optional<std::vector<std::byte>> tail =
        estargz_tails::lookup(*repo_, s.digest, crc, isize);
    // The last member holds the whole tail and the chunk's last isize - tail bytes (a member
    // starts with the chunk, so no more than the chunk). Those bytes as the object holds them
    // (checked against the chunkDigest when read again for the tar), then the tail, must
    // give the member's CRC-32.
    bool ok = false;
    if (tail && tail->size() <= isize && isize - tail->size() <= s.size) {
      std::string w = what_ + ": object " + s.reuse->hex();
      UniqueFd fd = repo_->open_object(*s.reuse);
      uLong c = crc32(0, nullptr, 0);
      uint64_t end = s.object_offset + s.size;
      uint64_t at = end - (isize - tail->size());
      while (at < end) {
        size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - at));
        ssize_t got = ::pread(fd.get(), buf.data(), want, static_cast<off_t>(at));
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) throw SystemError(errno, w);
        if (got == 0) break;
        c = crc32_z(c, reinterpret_cast<const Bytef*>(buf.data()), static_cast<size_t>(got));
        at += static_cast<uint64_t>(got);
      }
      c = crc32_z(c, reinterpret_cast<const Bytef*>(tail->data()), tail->size());
      ok = at == end && static_cast<uint32_t>(c) == crc;
    }
    if (ok) {
      s.tail_bytes = std::move(*tail);
    } else {
      if (tail) ++stats_.tails_refused;
      s.reuse.reset();
    }
  }
}

}  // namespace cfs::oci
