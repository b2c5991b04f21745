// Lazy pulls: the provisional image from the layers' TOCs, contents fetched on demand or in
// the background, then the normal pull (see cfs/oci/lazy.h and docs/CHUNKED.md).
#include "cfs/oci/lazy.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <array>
#include <chrono>
#include <ctime>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <unordered_map>

#include "cfs/erofs/writer.h"
#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/oci/source.h"
#include "cfs/oci/tar.h"
#include "cfs/oci/tree.h"
#include "cfs/output.h"
#include "chunked.h"
#include "content_index.h"
#include "estargz_tails.h"
#include "internal.h"
#include "tar_fields.h"
#include "util.h"

namespace cfs::oci {

namespace {

using nlohmann::json;

// The decoders of one fetching thread, made as a layer of their format is reached, and their
// read buffer.
struct Decoding {
  std::unique_ptr<FrameDecoder> zstd, gzip;
  std::vector<std::byte> buffer = std::vector<std::byte>(256 << 10);
  FrameDecoder& decoder(TocFormat format) {
    std::unique_ptr<FrameDecoder>& d = format == TocFormat::estargz ? gzip : zstd;
    if (!d) d = format == TocFormat::estargz ? make_gzip_decoder() : make_zstd_decoder();
    return *d;
  }
};

// A piece of a pending content and where its compressed bytes are. A content's chunks follow
// each other in the blob without gaps.
struct PendingChunk {
  uint64_t offset = 0, size = 0;  // uncompressed: where in the content, how many bytes
  uint64_t begin = 0, end = 0;    // compressed range in the layer blob
  std::string digest;             // "sha256:<hex>" chunkDigest, empty if the TOC gives none
};

struct PendingContent {
  size_t layer = 0;
  uint64_t size = 0;  // uncompressed bytes
  std::string name;   // the first path the TOC gives it, for messages
  std::vector<PendingChunk> chunks;
  uint64_t begin() const { return chunks.front().begin; }
  uint64_t end() const { return chunks.back().end; }
};

// The tar entry of an eStargz layer's TOC member (stargz.index.json), which every pull keeps
// as a file of the layer: its content (the TOC JSON, checked against the toc.digest
// annotation) is written as an object, the entry goes to the merger.
class TocEntryHandler final : public TarHandler {
 public:
  TocEntryHandler(store::Repository& repo, LayerMerger& merger, std::string what)
      : repo_(&repo), merger_(&merger), what_(std::move(what)) {}
  void external_begin(const TarEntry&) override { object_.emplace(repo_->write_object()); }
  void external_bytes(std::span<const std::byte> data) override { object_->write(data); }
  void external_end() override {
    digest_ = object_->commit();
    object_.reset();
  }
  void entry(TarEntry& t) override {
    if (t.external()) t.object = digest_;
    merger_->apply(t, what_);
    written_ = written_ || t.external();
  }
  bool written() const noexcept { return written_; }

 private:
  store::Repository* repo_;
  LayerMerger* merger_;
  std::string what_;
  std::optional<store::ObjectWriter> object_;
  std::optional<Digest> digest_;
  bool written_ = false;
};

// RFC 3339 as Go writes it ("2006-01-02T15:04:05.999999999Z07:00") -> seconds, nanoseconds.
std::pair<int64_t, uint32_t> parse_rfc3339(std::string_view s, const std::string& what) {
  auto bad = [&] {
    return Error(what + ": modtime '" + escape_for_log(s) + "' is not an RFC 3339 time");
  };
  auto num = [&](size_t pos, size_t len) {
    if (pos + len > s.size()) throw bad();
    int v = 0;
    for (size_t i = pos; i < pos + len; ++i) {
      if (s[i] < '0' || s[i] > '9') throw bad();
      v = v * 10 + (s[i] - '0');
    }
    return v;
  };
  if (s.size() < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') ||
      s[13] != ':' || s[16] != ':')
    throw bad();
  struct tm tm {};
  tm.tm_year = num(0, 4) - 1900;
  tm.tm_mon = num(5, 2) - 1;
  tm.tm_mday = num(8, 2);
  tm.tm_hour = num(11, 2);
  tm.tm_min = num(14, 2);
  tm.tm_sec = num(17, 2);
  size_t pos = 19;
  uint32_t nsec = 0;
  if (pos < s.size() && s[pos] == '.') {
    size_t digits = 0;
    for (++pos; pos < s.size() && s[pos] >= '0' && s[pos] <= '9'; ++pos, ++digits)
      if (digits < 9) nsec = nsec * 10 + static_cast<uint32_t>(s[pos] - '0');
    if (digits == 0) throw bad();
    for (; digits < 9; ++digits) nsec *= 10;
  }
  int64_t offset = 0;
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) {
    ++pos;
  } else if (pos + 6 == s.size() && (s[pos] == '+' || s[pos] == '-') && s[pos + 3] == ':') {
    offset = (num(pos + 1, 2) * 60 + num(pos + 4, 2)) * 60;
    if (s[pos] == '-') offset = -offset;
    pos += 6;
  }
  if (pos != s.size()) throw bad();
  return {static_cast<int64_t>(timegm(&tm)) - offset, nsec};
}

TarEntryType toc_type(std::string_view type, const std::string& what) {
  static const std::map<std::string_view, TarEntryType> kTypes = {
      {"reg", TarEntryType::regular},     {"dir", TarEntryType::directory},
      {"symlink", TarEntryType::symlink}, {"hardlink", TarEntryType::hardlink},
      {"char", TarEntryType::chardev},    {"block", TarEntryType::blockdev},
      {"fifo", TarEntryType::fifo},
  };
  auto it = kTypes.find(type);
  if (it == kTypes.end())
    throw Error(what + ": type '" + escape_for_log(type) + "' is not a known TOC entry type");
  return it->second;
}

// A TOC entry (not a "chunk" continuation) as the tar parser would have given its header.
TarEntry toc_entry(const json& e, const std::string& what) {
  TarEntry t;
  t.path = json_string(e, "name", "", what);
  t.type = toc_type(json_string(e, "type", "", what), what);
  t.link = json_string(e, "linkName", "", what);
  t.mode = static_cast<uint32_t>(toc_uint(e, "mode", what) & 07777);
  t.uid = static_cast<uint32_t>(toc_uint(e, "uid", what));
  t.gid = static_cast<uint32_t>(toc_uint(e, "gid", what));
  t.dev_major = static_cast<uint32_t>(toc_uint(e, "devMajor", what));
  t.dev_minor = static_cast<uint32_t>(toc_uint(e, "devMinor", what));
  if (std::string m = json_string(e, "modtime", "", what); !m.empty())
    std::tie(t.mtime_sec, t.mtime_nsec) = parse_rfc3339(m, what);
  if (auto x = e.find("xattrs"); x != e.end() && !x->is_null()) {
    if (!x->is_object()) throw Error(what + ": 'xattrs' is not an object");
    for (const auto& [name, value] : x->items()) {
      if (!value.is_string())
        throw Error(what + ": xattr " + escape_for_log(name) + " not a string");
      std::optional<std::string> raw = tar::base64_decode(value.get<std::string>());
      if (!raw) throw Error(what + ": xattr " + escape_for_log(name) + " is not base64");
      t.xattrs.push_back({name, std::move(*raw)});
    }
  }
  if (t.type == TarEntryType::regular) t.size = toc_uint(e, "size", what);
  return t;
}

std::string hex_of(std::string_view sha256_digest) {
  return std::string(sha256_digest.substr(sha256_digest.find(':') + 1));
}

bool is_sha256_hex(std::string_view hex) {
  if (hex.size() != 64) return false;
  for (char c : hex)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

}  // namespace

struct LazyPull::State {
  std::string repo_path;
  store::Repository* repo = nullptr;
  std::string spec;
  PullOptions options;
  std::unique_ptr<ImageSource> source;
  SourceLayers image;
  std::vector<TocFormat> formats;  // per layer
  UniqueFd image_fd;
  std::unordered_map<std::string, PendingContent> pending;
  std::vector<std::string> order;  // pending contents in layer and TOC order

  mutable std::mutex mutex;
  std::unordered_map<std::string, Digest> done;
  std::unordered_map<std::string, std::shared_future<Digest>> in_flight;
  std::vector<std::pair<std::string, Digest>> unrecorded;  // content sha256, object
  // eStargz: the tails of the last chunks fetched, recorded with the content index entries
  // so the final pull rebuilds those members instead of fetching them again.
  std::vector<estargz_tails::Tail> tails;
  LazyStats stats;

  // Reads one pending content from reader (positioned at its frames) into a new object of
  // repo, checked against the TOC; not yet durable.
  Digest write_content(const std::string& hex, BlobReader& reader, store::Repository& repo,
                       Decoding& decoder);
  // Takes hex for this thread unless it is done or being fetched (then its future is set).
  bool claim(const std::string& hex, std::promise<Digest>& promise,
             std::shared_future<Digest>& other);
  // Marks fetched contents done and wakes their waiters; their content index entries wait in
  // unrecorded for the next record_durable().
  void settle(std::vector<std::pair<std::string, Digest>>& fetched,
              std::vector<std::promise<Digest>>& promises, bool background);
  // Syncs the repository, then records the contents fetched so far in the content index (an
  // entry only ever names a durable object). One sync per many contents: syncfs is costly.
  void record_durable(store::Repository& repo);
  void fail(const std::vector<std::string>& hexes, std::vector<std::promise<Digest>>& promises);
  Digest resolve(const std::string& hex);
  // Fetches up to kRangesPerRequest pending contents of one layer from order[first...] with one
  // request; returns the index after the last content looked at. max_bytes bounds the compressed
  // bytes of one request (0: no bound; at least one content).
  size_t fetch_batch(size_t first, uint64_t max_bytes, store::Repository& repo, Decoding& decoder);
};

Digest LazyPull::State::write_content(const std::string& hex, BlobReader& reader,
                                      store::Repository& repo, Decoding& decoding) {
  const PendingContent& p = pending.at(hex);
  const TocFormat format = formats[p.layer];
  std::string what = source->name() + ": layer " + image.layers[p.layer].digest + ": " +
                     escape_for_log(p.name) + " (content sha256:" + hex + ")";
  store::ObjectWriter object = repo.write_object();
  ContentCheck check(
      p.size, "sha256:" + hex, [&object](std::span<const std::byte> data) { object.write(data); },
      what);
  FrameDecoder& decoder = decoding.decoder(format);
  std::vector<estargz_tails::Tail> new_tails;
  for (size_t k = 0; k < p.chunks.size(); ++k) {
    const PendingChunk& c = p.chunks[k];
    std::string cw = c.digest.empty() ? what
                                      : what + ": chunk " + std::to_string(c.offset) + "+" +
                                            std::to_string(c.size) + " (" + c.digest + ")";
    std::optional<ContentCheck> chunk_check;
    if (!c.digest.empty())
      chunk_check.emplace(
          c.size, c.digest, [&check](std::span<const std::byte> data) { check.add(data); }, cw);
    // eStargz: after a chunk its member may hold tar (the last chunk's: padding and the
    // headers that follow), which is not content; it is kept as the member's tail.
    const bool tar_follows = format == TocFormat::estargz;
    const bool last = tar_follows && k + 1 == p.chunks.size();
    uint64_t left = c.size;
    std::vector<std::byte> tail;
    bool keep_tail = last;
    std::array<std::byte, 8> last8{};
    decode_range(
        decoder, reader, c.end - c.begin, cw, decoding.buffer,
        [&](std::span<const std::byte> raw) {
          {
            std::lock_guard lock(mutex);
            stats.bytes_fetched += raw.size();
          }
          size_t n = std::min(raw.size(), last8.size());
          std::move(last8.begin() + static_cast<ptrdiff_t>(n), last8.end(), last8.begin());
          std::copy(raw.end() - static_cast<ptrdiff_t>(n), raw.end(),
                    last8.end() - static_cast<ptrdiff_t>(n));
        },
        [&](std::span<const std::byte> data) {
          size_t n = tar_follows ? static_cast<size_t>(std::min<uint64_t>(left, data.size()))
                                 : data.size();
          left -= std::min<uint64_t>(left, n);
          if (chunk_check)
            chunk_check->add(data.first(n));
          else
            check.add(data.first(n));
          if (!keep_tail || n == data.size()) return;
          if (tail.size() + (data.size() - n) > estargz_tails::kMaxTail) {
            keep_tail = false;
            tail = {};
            return;
          }
          tail.insert(tail.end(), data.begin() + static_cast<ptrdiff_t>(n), data.end());
        },
        nullptr);
    if (chunk_check) chunk_check->finish();
    // As a partial pull records them (chunked.cc): only a tail its range's last member
    // wholly covers can later pass the trailer check.
    uint32_t isize = estargz_tails::le32(std::span(last8).subspan(4));
    if (keep_tail && c.end - c.begin >= last8.size() && tail.size() <= isize)
      new_tails.push_back(estargz_tails::Tail{
          c.digest, estargz_tails::le32(std::span(last8).first(4)), isize, std::move(tail)});
  }
  check.finish();
  Digest id = object.commit();
  if (!new_tails.empty()) {
    std::lock_guard lock(mutex);
    for (estargz_tails::Tail& t : new_tails) tails.push_back(std::move(t));
  }
  return id;
}

bool LazyPull::State::claim(const std::string& hex, std::promise<Digest>& promise,
                            std::shared_future<Digest>& other) {
  std::lock_guard lock(mutex);
  if (auto it = done.find(hex); it != done.end()) {
    std::promise<Digest> ready;
    ready.set_value(it->second);
    other = ready.get_future().share();
    return false;
  }
  if (!pending.contains(hex))
    throw Error(source->name() + ": sha256:" + hex + " is not a pending content of the image");
  if (auto it = in_flight.find(hex); it != in_flight.end()) {
    other = it->second;
    return false;
  }
  in_flight.emplace(hex, promise.get_future().share());
  return true;
}

void LazyPull::State::settle(std::vector<std::pair<std::string, Digest>>& fetched,
                             std::vector<std::promise<Digest>>& promises, bool background) {
  std::lock_guard lock(mutex);
  for (size_t i = 0; i < fetched.size(); ++i) {
    done.emplace(fetched[i].first, fetched[i].second);
    in_flight.erase(fetched[i].first);
    unrecorded.emplace_back("sha256:" + fetched[i].first, fetched[i].second);
    ++(background ? stats.background : stats.on_demand);
    promises[i].set_value(fetched[i].second);
  }
}

void LazyPull::State::record_durable(store::Repository& repo) {
  std::vector<std::pair<std::string, Digest>> entries;
  std::vector<estargz_tails::Tail> new_tails;
  {
    std::lock_guard lock(mutex);
    entries.swap(unrecorded);
    new_tails.swap(tails);
  }
  // A cache checked at every use (estargz_tails.h): needs no sync.
  if (!new_tails.empty()) estargz_tails::record(repo, new_tails);
  if (entries.empty()) return;
  repo.sync();
  content_index::record(repo, entries);
}

void LazyPull::State::fail(const std::vector<std::string>& hexes,
                           std::vector<std::promise<Digest>>& promises) {
  std::lock_guard lock(mutex);
  for (size_t i = 0; i < hexes.size(); ++i) {
    in_flight.erase(hexes[i]);
    promises[i].set_exception(std::current_exception());
  }
}

Digest LazyPull::State::resolve(const std::string& hex) {
  std::vector<std::promise<Digest>> promises(1);
  std::shared_future<Digest> other;
  if (!claim(hex, promises[0], other)) return other.get();
  try {
    const PendingContent& p = pending.at(hex);
    auto reader = source->open_blob_range(image.layers[p.layer], p.begin(), p.end() - p.begin());
    if (!reader) throw Error(source->name() + ": the source does not serve byte ranges");
    store::Repository repo = store::Repository::open(repo_path);
    Decoding decoder;
    std::vector<std::pair<std::string, Digest>> fetched;
    fetched.emplace_back(hex, write_content(hex, *reader, repo, decoder));
    Digest id = fetched[0].second;
    repo.sync();  // linked under its name before anyone is told it is there
    settle(fetched, promises, false);
    return id;
  } catch (...) {
    fail({hex}, promises);
    throw;
  }
}

size_t LazyPull::State::fetch_batch(size_t first, uint64_t max_bytes, store::Repository& repo,
                                    Decoding& decoder) {
  std::vector<std::string> claimed;
  std::vector<std::promise<Digest>> promises;
  size_t k = first;
  const size_t layer = pending.at(order[first]).layer;
  uint64_t bytes = 0;
  for (; k < order.size() && claimed.size() < kRangesPerRequest; ++k) {
    const PendingContent& p = pending.at(order[k]);
    if (p.layer != layer || (max_bytes && bytes > 0 && bytes + (p.end() - p.begin()) > max_bytes))
      break;
    std::promise<Digest> promise;
    std::shared_future<Digest> other;
    if (!claim(order[k], promise, other)) continue;
    claimed.push_back(order[k]);
    promises.push_back(std::move(promise));
    bytes += p.end() - p.begin();
  }
  if (claimed.empty()) return k;
  try {
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (const std::string& hex : claimed) {
      const PendingContent& p = pending.at(hex);
      ranges.emplace_back(p.begin(), p.end() - p.begin());
    }
    RangeBatch readers(*source, image.layers[layer], std::move(ranges), source->name());
    std::vector<std::pair<std::string, Digest>> fetched;
    for (size_t i = 0; i < claimed.size(); ++i)
      fetched.emplace_back(claimed[i], write_content(claimed[i], readers.at(i), repo, decoder));
    // The store links new objects under their names only at a barrier: before it, an open
    // through the mount would find nothing there.
    repo.sync();
    settle(fetched, promises, true);
  } catch (...) {
    fail(claimed, promises);
    throw;
  }
  return k;
}

LazyPull::LazyPull(std::unique_ptr<State> state) : state_(std::move(state)) {}
LazyPull::~LazyPull() = default;

std::unique_ptr<LazyPull> LazyPull::open(store::Repository& repo, std::string_view source_spec,
                                         const PullOptions& options) {
  repo.require_writable();
  auto s = std::make_unique<State>();
  s->repo_path = repo.path();
  s->repo = &repo;
  s->spec = source_spec;
  s->options = options;
  s->source = open_source(source_spec, options.registry);
  s->image = read_source_layers(*s->source);
  const std::string& name = s->source->name();

  erofs::Tree tree;
  LayerMerger merger(tree);
  for (size_t i = 0; i < s->image.layers.size(); ++i) {
    const Descriptor& layer = s->image.layers[i];
    std::string what = name + ": layer " + layer.digest;
    std::optional<ChunkedToc> toc = chunked_toc_of(layer, what);
    if (!toc)
      throw Error(what +
                  ": neither a zstd:chunked nor an eStargz layer; --lazy needs every layer in "
                  "one of those formats (pull without --lazy)");
    s->formats.push_back(toc->format);
    const bool estargz = toc->format == TocFormat::estargz;
    // An empty range at the blob's end asks whether the source reads ranges at all.
    if (!s->source->open_blob_range(layer, layer.size, 0))
      throw Error(what +
                  ": the source does not serve byte ranges, which --lazy needs (pull "
                  "without --lazy)");
    auto count = [&](uint64_t n) { s->stats.bytes_fetched += n; };
    const std::string toc_what = what + (estargz ? ": eStargz TOC" : ": zstd:chunked TOC");
    EstargzTocMember member;
    json doc = estargz ? fetch_estargz_toc(*s->source, layer, *toc, what, count, member)
                       : fetch_zstd_chunked_toc(*s->source, layer, *toc, what, count);
    // eStargz: every content's chunks, in TOC order (the partial pull's reading of the TOC).
    std::vector<EstargzChunk> chunks;
    if (estargz) chunks = estargz_chunks(doc, member.offset, toc_what);
    size_t next_chunk = 0;
    const uint64_t data_end = estargz ? member.offset : toc->offset - 8;
    size_t index = 0;
    for (const json& e : doc["entries"]) {
      const size_t here = index;
      std::string ew = toc_what + ": entry " + std::to_string(index++);
      if (!e.is_object()) throw Error(ew + ": not an object");
      if (json_string(e, "type", "", ew) == "chunk") continue;
      TarEntry t = toc_entry(e, ew);
      if (t.type == TarEntryType::regular && t.size > 0) {
        std::string digest = json_string(e, "digest", "", ew);
        validate_oci_digest(digest, ew + " ('" + escape_for_log(t.path) + "'): digest");
        if (!digest.starts_with("sha256:"))
          throw Error(ew + ": digest " + digest + " is not a sha256 digest");
        std::vector<PendingChunk> pieces;
        if (estargz) {
          for (; next_chunk < chunks.size() && chunks[next_chunk].entry == here; ++next_chunk) {
            const EstargzChunk& c = chunks[next_chunk];
            pieces.push_back(PendingChunk{c.file_offset, c.size, c.begin, c.end, c.digest});
          }
          if (pieces.empty()) throw Error(ew + ": a regular file without chunks");
        } else {
          pieces.push_back(
              PendingChunk{0, t.size, toc_uint(e, "offset", ew), toc_uint(e, "endOffset", ew), {}});
          const PendingChunk& c = pieces.back();
          if (c.end <= c.begin || c.end > data_end)
            throw Error(ew + ": content frames at " + std::to_string(c.begin) + "-" +
                        std::to_string(c.end) + " are outside the tar's " +
                        std::to_string(data_end) + " bytes");
        }
        std::string hex = hex_of(digest);
        std::optional<Digest> local;
        if (t.size > kTarInlineMax) local = content_index::lookup(repo, digest);
        if (local) {
          t.object = *local;
        } else {
          PendingContent p{i, t.size, t.path, std::move(pieces)};
          if (s->pending.emplace(hex, std::move(p)).second) s->order.push_back(hex);
          t.pending = std::string(kPendingRedirectDir) + "/" + hex;
        }
      }
      merger.apply(t, what);
    }
    if (estargz) {
      // The TOC's own tar entry ends the layer's tar; it is no TOC entry.
      TocEntryHandler handler(repo, merger, what);
      TarParser parser(handler, TarMode::split, what + ": eStargz TOC member", options.xattrs);
      parser.feed(member.tar);
      parser.finish();
      if (handler.written()) repo.sync();  // its object is opened by name through the mount
    }
  }
  merger.finish();
  s->stats.pending = s->pending.size();
  transform_tree(tree, TreeTransform{.oci = true, .xattrs = options.xattrs, .bootable = false},
                 [&](const erofs::Inode&, const std::string& path) -> std::string {
                   throw Error(name + ": " + path + ": not readable in a provisional image");
                 });
  int fd = ::memfd_create("cfs-lazy-image", MFD_CLOEXEC);
  if (fd < 0) throw_errno(name + ": memfd_create for the provisional image");
  s->image_fd = UniqueFd(fd);
  FdSink sink(fd, name + ": provisional image");
  erofs::write_image(tree, sink,
                     erofs::WriterOptions::for_erofs_version(repo.erofs_versions().front()));
  sink.flush();
  return std::unique_ptr<LazyPull>(new LazyPull(std::move(s)));
}

int LazyPull::image_fd() const noexcept {
  return state_->image_fd.get();
}

std::string LazyPull::source_name() const {
  return state_->source->name();
}

Digest LazyPull::resolve(std::string_view sha256_hex) {
  if (!is_sha256_hex(sha256_hex))
    throw Error(source_name() + ": '" + escape_for_log(sha256_hex) +
                "' is not a lowercase sha256 hex digest");
  return state_->resolve(std::string(sha256_hex));
}

LazyStats LazyPull::stats() const {
  std::lock_guard lock(state_->mutex);
  return state_->stats;
}

PullResult LazyPull::finish(std::optional<std::string> tag, uint64_t rate_limit,
                            std::atomic<bool>* cancel) {
  State& s = *state_;
  const auto start = std::chrono::steady_clock::now();
  uint64_t budget = 0;  // compressed bytes of contents fetched by this loop
  store::Repository repo = store::Repository::open(s.repo_path);
  Decoding decoder;
  try {
    constexpr uint64_t kRecordEvery = 256u << 20;  // compressed bytes between syncs
    uint64_t recorded_at = 0;
    for (size_t k = 0; k < s.order.size();) {
      if (cancel && cancel->load()) throw Error("cancelled");
      if (budget - recorded_at >= kRecordEvery) {
        s.record_durable(repo);
        recorded_at = budget;
      }
      // Throttled: requests of about a quarter of a second's worth each.
      size_t next = s.fetch_batch(k, rate_limit / 4, repo, decoder);
      for (; k < next; ++k) {
        const PendingContent& p = s.pending.at(s.order[k]);
        budget += p.end() - p.begin();
      }
      if (!rate_limit) continue;
      auto due = start + std::chrono::nanoseconds(static_cast<int64_t>(
                             static_cast<double>(budget) / static_cast<double>(rate_limit) * 1e9));
      while (std::chrono::steady_clock::now() < due) {
        if (cancel && cancel->load()) throw Error("cancelled");
        std::chrono::steady_clock::duration left = due - std::chrono::steady_clock::now();
        std::this_thread::sleep_for(
            std::min<std::chrono::steady_clock::duration>(left, std::chrono::milliseconds(50)));
      }
    }
  } catch (...) {
    // What was fetched stays, indexed, for a later pull to reuse (or gc to remove).
    s.record_durable(repo);
    throw;
  }
  s.record_durable(repo);
  PullOptions options = s.options;
  options.expect_manifest_digest = s.image.manifest_digest;
  return pull(*s.repo, s.spec, std::move(tag), options);
}

}  // namespace cfs::oci
