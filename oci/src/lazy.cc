// Lazy pulls: the provisional image from the layers' TOCs, contents fetched on demand or in
// the background, then the normal pull (see cfs/oci/lazy.h and docs/CHUNKED.md).
#include "cfs/oci/lazy.h"

#include <sys/mman.h>
#include <sys/stat.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
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
// each other in the blob without gaps. zstd:chunked writes one zstd frame per chunk (the "reg"
// entry, then "chunk" entries), eStargz one gzip member per chunk; a content without chunk
// entries is one chunk.
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

// Contents at most this large are fetched whole on first open (one GET either way).
constexpr uint64_t kWholeFileMax = 1 << 20;
// An on-demand read fetches at least this much of the content from its offset (the kernel
// reads ahead in 128 KiB requests; one GET per chunk would be slow).
constexpr uint64_t kReadAhead = 512 << 10;
// Compressed bytes one unthrottled ensure() round claims, so reads elsewhere in the same file
// do not wait for the background's whole fetch.
constexpr uint64_t kRoundMax = 8 << 20;

// Whether a content is served chunk by chunk (open_pending) rather than whole.
bool by_chunks(const PendingContent& p) {
  if (p.size <= kWholeFileMax || p.chunks.size() < 2) return false;
  for (const PendingChunk& c : p.chunks)
    if (c.digest.empty()) return false;
  return true;
}

// Completes a content's chunk list from its TOC entries (the "reg" entry's chunk first):
// chunk entries of containers/storage give no endOffset (a chunk's frames end where the
// next chunk's start, the last one's at the "reg" entry's endOffset), and chunkSize may be
// absent for the last one. Throws naming what unless the chunks tile the content in order.
void finish_chunks(PendingContent& p, uint64_t reg_end, uint64_t data_end,
                   const std::string& what) {
  auto& c = p.chunks;
  for (size_t i = 0; i < c.size(); ++i) {
    bool last = i + 1 == c.size();
    if (c[i].end == 0) c[i].end = last ? reg_end : c[i + 1].begin;
    if (c[i].size == 0) {
      uint64_t next = last ? p.size : c[i + 1].offset;
      if (next <= c[i].offset)
        throw Error(what + ": chunk " + std::to_string(i) + " at " + std::to_string(c[i].offset) +
                    " is empty or out of order");
      c[i].size = next - c[i].offset;
    }
    uint64_t expect = i == 0 ? 0 : c[i - 1].offset + c[i - 1].size;
    uint64_t min_begin = i == 0 ? 0 : c[i - 1].end;
    if (c[i].offset != expect || c[i].size > p.size - c[i].offset || c[i].begin < min_begin ||
        c[i].end <= c[i].begin || c[i].end > data_end)
      throw Error(what + ": chunk " + std::to_string(i) + " (bytes " + std::to_string(c[i].offset) +
                  "+" + std::to_string(c[i].size) + ", frames " + std::to_string(c[i].begin) + "-" +
                  std::to_string(c[i].end) +
                  ") does not follow the previous one inside the tar's " +
                  std::to_string(data_end) + " bytes and the file's " + std::to_string(p.size));
  }
  if (c.back().offset + c.back().size != p.size)
    throw Error(what + ": the chunks cover " + std::to_string(c.back().offset + c.back().size) +
                " bytes of " + std::to_string(p.size));
}

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

  // Contents served chunk by chunk (by_chunks) that are begun and not yet objects.
  struct Partial;
  std::unordered_map<std::string, std::shared_ptr<Partial>> partials;
  std::condition_variable chunk_cv;  // a chunk or a partial content changed state

  std::string describe(const std::string& hex) const;
  // hex's Partial, begun now if need be (its temporary file created). mutex held.
  std::shared_ptr<Partial> partial_of(const std::string& hex, bool on_demand);
  // Makes the chunks covering [offset, offset + length) of p present. A read (for_read) also
  // fetches up to kReadAhead from offset when it fetches at all; otherwise the range must be
  // the whole content and p ends as an object. round_max bounds the compressed bytes one
  // request claims; paced is told the bytes of each round (and may sleep or throw).
  void ensure(Partial& p, uint64_t offset, uint64_t length, bool for_read, uint64_t round_max,
              const std::function<void(uint64_t)>& paced);
  // Fetches, checks and writes the chunks given (ascending indexes, marked fetching); on a
  // failure the rest go back to missing and error/failed say what and where.
  void fetch_chunks(Partial& p, const std::vector<size_t>& chunks, bool for_read,
                    std::exception_ptr& error, size_t& failed);
  void write_chunk(Partial& p, size_t index, BlobReader& reader, Decoding& decoder);
  // All chunks present: checks the whole content against the TOC, writes its object, syncs.
  void complete(Partial& p);
};

struct LazyPull::State::Partial : PendingFile {
  enum : uint8_t { kMissing, kFetching, kPresent };
  State* state = nullptr;
  std::string hex;
  const PendingContent* content = nullptr;
  UniqueFd file;
  // Guarded by State::mutex:
  std::vector<uint8_t> chunk_state;
  size_t present = 0;
  bool completing = false, completed = false;
  bool on_demand = false;  // begun by a read (counted as fetched on demand)

  int fd() const noexcept override { return file.get(); }
  void ensure(uint64_t offset, uint64_t length) override {
    state->ensure(*this, offset, length, true, kRoundMax, nullptr);
  }
};

std::string LazyPull::State::describe(const std::string& hex) const {
  const PendingContent& p = pending.at(hex);
  return source->name() + ": layer " + image.layers[p.layer].digest + ": " +
         escape_for_log(p.name) + " (content sha256:" + hex + ")";
}

std::shared_ptr<LazyPull::State::Partial> LazyPull::State::partial_of(const std::string& hex,
                                                                      bool on_demand) {
  std::shared_ptr<Partial>& p = partials[hex];
  if (p) return p;
  auto fresh = std::make_shared<Partial>();
  fresh->state = this;
  fresh->hex = hex;
  fresh->content = &pending.at(hex);
  fresh->chunk_state.assign(fresh->content->chunks.size(), Partial::kMissing);
  fresh->on_demand = on_demand;
  // Beside the objects (where ObjectWriter keeps its temporary files), else in memory.
  const std::string what = describe(hex) + ": temporary file";
  int fd = ::open((repo_path + "/objects").c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL))
    fd = ::memfd_create("cfs-lazy-chunks", MFD_CLOEXEC);
  if (fd < 0) {
    partials.erase(hex);
    throw_errno(what);
  }
  fresh->file = UniqueFd(fd);
  if (::ftruncate(fd, static_cast<off_t>(fresh->content->size)) != 0) {
    partials.erase(hex);
    throw_errno(what + ": ftruncate");
  }
  p = std::move(fresh);
  return p;
}

void LazyPull::State::ensure(Partial& p, uint64_t offset, uint64_t length, bool for_read,
                             uint64_t round_max, const std::function<void(uint64_t)>& paced) {
  const std::vector<PendingChunk>& ch = p.content->chunks;
  const uint64_t size = p.content->size;
  if (offset >= size || length == 0) return;
  const uint64_t last = offset + std::min(length, size - offset);
  auto index_of = [&ch](uint64_t pos) {  // the chunk holding byte pos
    auto it = std::upper_bound(ch.begin(), ch.end(), pos,
                               [](uint64_t v, const PendingChunk& c) { return v < c.offset; });
    return static_cast<size_t>(it - ch.begin()) - 1;
  };
  const size_t first = index_of(offset), need_end = index_of(last - 1) + 1;
  size_t ahead_end = for_read
                         ? std::max(need_end, index_of(std::min(size, offset + kReadAhead) - 1) + 1)
                         : need_end;
  std::unique_lock lock(mutex);
  for (;;) {
    if (p.completed) return;
    std::vector<size_t> mine;
    bool wait = false;
    uint64_t bytes = 0;
    auto take = [&](size_t i) {
      if (round_max && !mine.empty() && bytes + (ch[i].end - ch[i].begin) > round_max) return false;
      p.chunk_state[i] = Partial::kFetching;
      mine.push_back(i);
      bytes += ch[i].end - ch[i].begin;
      return true;
    };
    for (size_t i = first; i < need_end; ++i) {
      if (p.chunk_state[i] == Partial::kFetching) wait = true;
      if (p.chunk_state[i] == Partial::kMissing && !take(i)) break;
    }
    // Read ahead only when this read fetches anyway, and only chunks nobody has.
    if (!mine.empty() && mine.back() + 1 == need_end)
      for (size_t i = need_end; i < ahead_end && p.chunk_state[i] == Partial::kMissing; ++i)
        if (!take(i)) break;
    if (mine.empty()) {
      if (!wait) break;
      chunk_cv.wait(lock);
      continue;
    }
    lock.unlock();
    std::exception_ptr error;
    size_t failed = 0;
    fetch_chunks(p, mine, for_read, error, failed);
    if (paced) paced(bytes);
    lock.lock();
    if (error) {
      if (failed < need_end) std::rethrow_exception(error);
      ahead_end = need_end;  // a chunk read ahead failed: this read does not need it
    }
  }
  // The range is present. The content becomes an object once every chunk is: by whoever
  // sees that first (a failed completion is retried by the next one).
  for (;;) {
    if (p.completed || p.present != ch.size()) return;
    if (!p.completing) break;
    if (for_read) return;
    chunk_cv.wait(lock);
  }
  p.completing = true;
  lock.unlock();
  try {
    complete(p);
  } catch (...) {
    lock.lock();
    p.completing = false;
    chunk_cv.notify_all();
    throw;
  }
  lock.lock();
  p.completing = false;
  p.completed = true;
  chunk_cv.notify_all();
}

void LazyPull::State::fetch_chunks(Partial& p, const std::vector<size_t>& chunks, bool for_read,
                                   std::exception_ptr& error, size_t& failed) {
  const std::vector<PendingChunk>& ch = p.content->chunks;
  // Runs of chunks whose frames are adjacent in the blob, [first, last) in chunks: one range.
  std::vector<std::pair<size_t, size_t>> runs;
  for (size_t k = 0; k < chunks.size();) {
    size_t j = k + 1;
    while (j < chunks.size() && chunks[j] == chunks[j - 1] + 1 &&
           ch[chunks[j]].begin == ch[chunks[j - 1]].end)
      ++j;
    runs.emplace_back(k, j);
    k = j;
  }
  size_t next = 0;  // in chunks: the first not present yet
  try {
    Decoding decoder;
    for (size_t r = 0; r < runs.size(); r += kRangesPerRequest) {
      const size_t r_end = std::min(runs.size(), r + kRangesPerRequest);
      std::vector<std::pair<uint64_t, uint64_t>> ranges;
      for (size_t q = r; q < r_end; ++q) {
        uint64_t b = ch[chunks[runs[q].first]].begin, e = ch[chunks[runs[q].second - 1]].end;
        ranges.emplace_back(b, e - b);
      }
      RangeBatch readers(*source, image.layers[p.content->layer], std::move(ranges),
                         source->name());
      for (size_t q = r; q < r_end; ++q) {
        BlobReader& reader = readers.at(q - r);
        for (size_t k = runs[q].first; k < runs[q].second; ++k) {
          write_chunk(p, chunks[k], reader, decoder);
          std::lock_guard lock(mutex);
          p.chunk_state[chunks[k]] = Partial::kPresent;
          ++p.present;
          if (for_read) ++stats.chunks_on_demand;
          next = k + 1;
          chunk_cv.notify_all();
        }
      }
    }
  } catch (...) {
    error = std::current_exception();
    failed = chunks[next];
    std::lock_guard lock(mutex);
    for (size_t k = next; k < chunks.size(); ++k) p.chunk_state[chunks[k]] = Partial::kMissing;
    chunk_cv.notify_all();
  }
}

void LazyPull::State::write_chunk(Partial& p, size_t index, BlobReader& reader, Decoding& decoder) {
  const PendingChunk& c = p.content->chunks[index];
  const std::string what = describe(p.hex) + ": chunk " + std::to_string(index) + " (bytes " +
                           std::to_string(c.offset) + "+" + std::to_string(c.size) + ")";
  // eStargz: after a chunk's bytes its gzip member may hold tar (the padding and headers that
  // follow a file's last chunk), which is not content; zstd:chunked frames hold the chunk only.
  const bool tar_follows = formats[p.content->layer] == TocFormat::estargz;
  Sha256 h;
  uint64_t n = 0;
  decode_range(
      decoder.decoder(formats[p.content->layer]), reader, c.end - c.begin, what, decoder.buffer,
      [&](std::span<const std::byte> raw) {
        std::lock_guard lock(mutex);
        stats.bytes_fetched += raw.size();
      },
      [&](std::span<const std::byte> data) {
        if (tar_follows)
          data = data.first(static_cast<size_t>(std::min<uint64_t>(data.size(), c.size - n)));
        if (data.size() > c.size - n)
          throw Error(what + ": more than the TOC's chunkSize (corrupt or tampered)");
        for (size_t done_bytes = 0; done_bytes < data.size();) {
          ssize_t w = ::pwrite(p.file.get(), data.data() + done_bytes, data.size() - done_bytes,
                               static_cast<off_t>(c.offset + n + done_bytes));
          if (w < 0 && errno == EINTR) continue;
          if (w <= 0) throw_errno(what + ": writing the temporary file");
          done_bytes += static_cast<size_t>(w);
        }
        h.update(data);
        n += data.size();
      },
      nullptr);
  if (n != c.size)
    throw Error(what + ": " + std::to_string(n) + " bytes, the TOC says " + std::to_string(c.size) +
                " (corrupt or tampered)");
  if (std::string actual = h.finish(); actual != c.digest)
    throw Error(what + ": hashes to " + actual + ", the TOC's chunkDigest is " + c.digest +
                " (corrupt or tampered)");
}

void LazyPull::State::complete(Partial& p) {
  const PendingContent& c = *p.content;
  const std::string what = describe(p.hex);
  store::Repository repo = store::Repository::open(repo_path);
  store::ObjectWriter object = repo.write_object();
  ContentCheck check(
      c.size, "sha256:" + p.hex, [&object](std::span<const std::byte> data) { object.write(data); },
      what);
  std::vector<std::byte> buffer(1 << 20);
  for (uint64_t pos = 0; pos < c.size;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), c.size - pos));
    pread_exact(p.file.get(), std::span(buffer).first(n), pos, what + ": temporary file");
    check.add(std::span(buffer).first(n));
    pos += n;
  }
  check.finish();
  Digest id = object.commit();
  repo.sync();  // linked under its name before anyone is told it is there
  std::lock_guard lock(mutex);
  done.emplace(p.hex, id);
  unrecorded.emplace_back("sha256:" + p.hex, id);
  ++(p.on_demand ? stats.on_demand : stats.background);
  partials.erase(p.hex);  // open handles keep their temporary file
}

Digest LazyPull::State::write_content(const std::string& hex, BlobReader& reader,
                                      store::Repository& repo, Decoding& decoding) {
  const PendingContent& p = pending.at(hex);
  const TocFormat format = formats[p.layer];
  const std::string what = describe(hex);
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
  if (auto it = pending.find(hex); it != pending.end() && by_chunks(it->second)) {
    std::shared_ptr<Partial> p;
    {
      std::lock_guard lock(mutex);
      if (auto d = done.find(hex); d != done.end()) return d->second;
      p = partial_of(hex, true);
    }
    ensure(*p, 0, it->second.size, false, kRoundMax, nullptr);
    std::lock_guard lock(mutex);
    return done.at(hex);
  }
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
    if (p.layer != layer || by_chunks(p) ||
        (max_bytes && bytes > 0 && bytes + (p.end() - p.begin()) > max_bytes))
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
    // The content whose chunk entries follow (a new pending one), and its frames' end.
    PendingContent* open_content = nullptr;
    uint64_t open_end = 0;
    std::string open_what;
    auto close_content = [&] {
      if (open_content) finish_chunks(*open_content, open_end, data_end, open_what);
      open_content = nullptr;
    };
    auto chunk_of = [&](const json& e, const std::string& ew) {
      std::string type = json_string(e, "chunkType", "", ew);
      if (!type.empty() && type != "data" && type != "zeros")
        throw Error(ew + ": chunkType '" + escape_for_log(type) +
                    "' is not supported by --lazy (pull without --lazy)");
      PendingChunk c{toc_uint(e, "chunkOffset", ew), toc_uint(e, "chunkSize", ew),
                     toc_uint(e, "offset", ew), 0, json_string(e, "chunkDigest", "", ew)};
      if (!c.digest.empty()) {
        validate_oci_digest(c.digest, ew + ": chunkDigest");
        if (!c.digest.starts_with("sha256:"))
          throw Error(ew + ": chunkDigest " + c.digest + " is not a sha256 digest");
      }
      return c;
    };
    size_t index = 0;
    for (const json& e : doc["entries"]) {
      const size_t here = index;
      std::string ew = toc_what + ": entry " + std::to_string(index++);
      if (!e.is_object()) throw Error(ew + ": not an object");
      if (json_string(e, "type", "", ew) == "chunk") {
        if (open_content) {
          PendingChunk c = chunk_of(e, ew);
          c.end = toc_uint(e, "endOffset", ew);
          open_content->chunks.push_back(std::move(c));
        }
        continue;
      }
      close_content();
      TarEntry t = toc_entry(e, ew);
      if (t.type == TarEntryType::regular && t.size > 0) {
        std::string digest = json_string(e, "digest", "", ew);
        validate_oci_digest(digest, ew + " ('" + escape_for_log(t.path) + "'): digest");
        if (!digest.starts_with("sha256:"))
          throw Error(ew + ": digest " + digest + " is not a sha256 digest");
        std::vector<PendingChunk> pieces;
        uint64_t reg_end = 0;  // zstd:chunked: where the content's last frame ends
        if (estargz) {
          for (; next_chunk < chunks.size() && chunks[next_chunk].entry == here; ++next_chunk) {
            const EstargzChunk& c = chunks[next_chunk];
            pieces.push_back(PendingChunk{c.file_offset, c.size, c.begin, c.end, c.digest});
          }
          if (pieces.empty()) throw Error(ew + ": a regular file without chunks");
        } else {
          pieces.push_back(chunk_of(e, ew));
          pieces.back().offset = 0;  // the "reg" entry's chunk starts the file
          reg_end = toc_uint(e, "endOffset", ew);
          if (reg_end <= pieces.back().begin || reg_end > data_end)
            throw Error(ew + ": content frames at " + std::to_string(pieces.back().begin) + "-" +
                        std::to_string(reg_end) + " are outside the tar's " +
                        std::to_string(data_end) + " bytes");
        }
        std::string hex = hex_of(digest);
        std::optional<Digest> local;
        if (t.size > kTarInlineMax) local = content_index::lookup(repo, digest);
        if (local) {
          t.object = *local;
        } else {
          PendingContent p{i, t.size, t.path, std::move(pieces)};
          if (auto [it, added] = s->pending.emplace(hex, std::move(p)); added) {
            s->order.push_back(hex);
            if (!estargz) {  // its "chunk" entries follow
              open_content = &it->second;
              open_end = reg_end;
              open_what = ew + " ('" + escape_for_log(t.path) + "')";
            }
          }
          t.pending = std::string(kPendingRedirectDir) + "/" + hex;
        }
      }
      merger.apply(t, what);
    }
    close_content();
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

namespace {
// The hex digest a caller of resolve() / open_pending() gives, checked.
std::string pending_hex(std::string_view sha256_hex, const std::string& source_name) {
  if (!is_sha256_hex(sha256_hex))
    throw Error(source_name + ": '" + escape_for_log(sha256_hex) +
                "' is not a lowercase sha256 hex digest");
  return std::string(sha256_hex);
}
}  // namespace

Digest LazyPull::resolve(std::string_view sha256_hex) {
  return state_->resolve(pending_hex(sha256_hex, source_name()));
}

PendingAnswer LazyPull::open_pending(std::string_view sha256_hex) {
  State& s = *state_;
  const std::string hex = pending_hex(sha256_hex, source_name());
  {
    std::lock_guard lock(s.mutex);
    if (auto d = s.done.find(hex); d != s.done.end()) return {d->second, nullptr};
    auto it = s.pending.find(hex);
    if (it == s.pending.end())
      throw Error(s.source->name() + ": sha256:" + hex + " is not a pending content of the image");
    if (by_chunks(it->second)) return {std::nullopt, s.partial_of(hex, true)};
  }
  return {s.resolve(hex), nullptr};
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
    // Throttled: requests of about a quarter of a second's worth each.
    auto pace = [&](uint64_t bytes) {
      budget += bytes;
      if (!rate_limit) return;
      auto due = start + std::chrono::nanoseconds(static_cast<int64_t>(
                             static_cast<double>(budget) / static_cast<double>(rate_limit) * 1e9));
      while (std::chrono::steady_clock::now() < due) {
        if (cancel && cancel->load()) throw Error("cancelled");
        std::chrono::steady_clock::duration left = due - std::chrono::steady_clock::now();
        std::this_thread::sleep_for(
            std::min<std::chrono::steady_clock::duration>(left, std::chrono::milliseconds(50)));
      }
    };
    const uint64_t round_max = rate_limit ? std::max<uint64_t>(rate_limit / 4, 1) : kRoundMax;
    for (size_t k = 0; k < s.order.size();) {
      if (cancel && cancel->load()) throw Error("cancelled");
      if (budget - recorded_at >= kRecordEvery) {
        s.record_durable(repo);
        recorded_at = budget;
      }
      const PendingContent& first = s.pending.at(s.order[k]);
      if (by_chunks(first)) {
        // Chunk by chunk, so that reads of the same file interleave; chunks read on demand
        // already are not fetched again.
        std::shared_ptr<State::Partial> p;
        {
          std::lock_guard lock(s.mutex);
          if (!s.done.contains(s.order[k])) p = s.partial_of(s.order[k], false);
        }
        if (p) s.ensure(*p, 0, first.size, false, round_max, pace);
        ++k;
        continue;
      }
      size_t next = s.fetch_batch(k, rate_limit / 4, repo, decoder);
      uint64_t bytes = 0;
      for (; k < next; ++k) {
        const PendingContent& p = s.pending.at(s.order[k]);
        bytes += p.end() - p.begin();
      }
      pace(bytes);
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
