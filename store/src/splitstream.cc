#include "cfs/store/splitstream.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <unordered_map>

#include "cfs/error.h"
#include "cfs/fd.h"
#include "splitstream_format.h"
#include "zstd_util.h"

namespace cfs::store {

namespace {

constexpr size_t kSpillThreshold = 8u << 20;
// Named refs are metadata; anything larger than this is corruption, not data.
constexpr size_t kMaxNamedRefsBytes = 64u << 20;

template <typename T>
std::span<const std::byte> struct_bytes(const T& value) {
  return {reinterpret_cast<const std::byte*>(&value), sizeof value};
}
template <typename T>
T struct_at(std::span<const std::byte> file, size_t offset) {
  T value;
  std::memcpy(&value, file.data() + offset, sizeof value);
  return value;
}
uint64_t align8(uint64_t v) {
  return (v + 7) & ~uint64_t{7};
}

std::span<const std::byte> as_bytes(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

struct FileRange {
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t size() const { return end - start; }
  SplitStreamRange on_disk() const { return {start, end}; }
};

}  // namespace

std::string content_type_name(uint64_t type) {
  std::string s;
  for (int i = 0; i < 8; ++i) {
    char c = static_cast<char>((type >> (8 * i)) & 0xff);
    if (c < 0x21 || c > 0x7e) {
      char hex[19];
      std::snprintf(hex, sizeof hex, "0x%016llx", static_cast<unsigned long long>(type));
      return hex;
    }
    s += c;
  }
  return s;
}

// ---------------------------------------------------------------------------------------
// Writer

struct SplitStreamWriter::State {
  State(HashAlgorithm a, uint64_t type) : alg(a), content_type(type) {}
  HashAlgorithm alg;
  uint64_t content_type;
  std::vector<Digest> stream_refs;
  std::unordered_map<Digest, size_t> stream_ref_index;
  std::vector<Digest> object_refs;
  std::unordered_map<Digest, size_t> object_ref_index;
  std::map<std::string, size_t> named_refs;  // sorted by name, as the format requires
  detail::ZstdCompressor stream;
  std::vector<std::byte> pending_inline;
  // A chunk header carries the length of the whole inline run before its bytes, so a run is
  // buffered until it ends; a layer of small files is one run of hundreds of megabytes.
  // Beyond kSpillThreshold the run goes to an unlinked temporary file (gone with the
  // process, however it ends) instead of memory.
  UniqueFd spill;
  uint64_t spilled = 0;
  uint64_t stream_size = 0;
  bool finished = false;

  bool spill_unavailable = false;

  void spill_pending() {
    if (spill_unavailable) return;
    if (!spill) {
      const char* tmp = std::getenv("TMPDIR");
      std::string dir = tmp && *tmp ? tmp : "/var/tmp";
      int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
      if (fd < 0) {
        spill_unavailable = true;  // no temporary file: the run stays in memory
        return;
      }
      spill.reset(fd);
    }
    write_all(spill.get(), pending_inline, "splitstream: spilling inline data");
    spilled += pending_inline.size();
    pending_inline.clear();
  }

  void emit_chunk_header(int64_t value) {
    SplitStreamChunkHeader header(static_cast<uint64_t>(value));
    stream.add(struct_bytes(header));
  }
  void flush_inline() {
    if (pending_inline.empty() && spilled == 0) return;
    emit_chunk_header(-static_cast<int64_t>(spilled + pending_inline.size()));
    if (spilled > 0) {
      std::vector<std::byte> buf(1 << 20);
      uint64_t pos = 0;
      while (pos < spilled) {
        ssize_t n = ::pread(spill.get(), buf.data(),
                            static_cast<size_t>(std::min<uint64_t>(buf.size(), spilled - pos)),
                            static_cast<off_t>(pos));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("splitstream: reading back spilled inline data");
        if (n == 0) throw Error("splitstream: spilled inline data is truncated");
        stream.add(std::span(buf).first(static_cast<size_t>(n)));
        pos += static_cast<uint64_t>(n);
      }
      if (::ftruncate(spill.get(), 0) < 0) throw_errno("splitstream: reusing the spill file");
      if (::lseek(spill.get(), 0, SEEK_SET) < 0) throw_errno("splitstream: reusing the spill file");
      spilled = 0;
    }
    stream.add(pending_inline);
    pending_inline.clear();
    if (pending_inline.capacity() > kSpillThreshold) pending_inline.shrink_to_fit();
  }
  void check_open() const {
    if (finished) throw Error("splitstream writer used after finish()");
  }
};

SplitStreamWriter::SplitStreamWriter(HashAlgorithm alg, uint64_t content_type)
    : state_(std::make_unique<State>(alg, content_type)) {}
SplitStreamWriter::~SplitStreamWriter() = default;
SplitStreamWriter::SplitStreamWriter(SplitStreamWriter&&) noexcept = default;
SplitStreamWriter& SplitStreamWriter::operator=(SplitStreamWriter&&) noexcept = default;

HashAlgorithm SplitStreamWriter::algorithm() const noexcept {
  return state_->alg;
}

void SplitStreamWriter::write_inline(std::span<const std::byte> data) {
  state_->check_open();
  state_->pending_inline.insert(state_->pending_inline.end(), data.begin(), data.end());
  state_->stream_size += data.size();
  if (state_->pending_inline.size() >= kSpillThreshold) state_->spill_pending();
}

void SplitStreamWriter::write_external(const Digest& object, uint64_t size) {
  State& s = *state_;
  s.check_open();
  if (object.algorithm() != s.alg)
    throw Error("splitstream: external object " + object.hex() + " uses another hash algorithm");
  s.flush_inline();
  auto [it, inserted] = s.object_ref_index.try_emplace(object, s.object_refs.size());
  if (inserted) s.object_refs.push_back(object);
  s.emit_chunk_header(static_cast<int64_t>(it->second));
  s.stream_size += size;
}

size_t SplitStreamWriter::add_stream_ref(const Digest& target) {
  State& s = *state_;
  s.check_open();
  if (target.algorithm() != s.alg)
    throw Error("splitstream: reference " + target.hex() + " uses another hash algorithm");
  auto [it, inserted] = s.stream_ref_index.try_emplace(target, s.stream_refs.size());
  if (inserted) s.stream_refs.push_back(target);
  return it->second;
}

void SplitStreamWriter::add_named_ref(std::string name, const Digest& target) {
  if (name.find('\0') != std::string::npos)
    throw Error("splitstream: named ref contains a NUL byte");
  size_t index = add_stream_ref(target);
  state_->named_refs[std::move(name)] = index;
}

void SplitStreamWriter::finish(OutputSink& out) {
  State& s = *state_;
  s.check_open();
  s.flush_inline();
  s.finished = true;
  std::vector<std::byte> stream = s.stream.finish();

  std::string named;
  for (const auto& [name, index] : s.named_refs) {
    named += std::to_string(index);
    named += ':';
    named += name;
    named += '\0';
  }
  detail::ZstdCompressor named_compressor;
  named_compressor.add(as_bytes(named));
  std::vector<std::byte> named_z = named_compressor.finish();

  const size_t ds = digest_size(s.alg);
  FileRange info{kSplitStreamHeaderSize, kSplitStreamHeaderSize + kSplitStreamInfoSize};
  FileRange stream_refs{align8(info.end), 0};
  stream_refs.end = stream_refs.start + s.stream_refs.size() * ds;
  FileRange object_refs{align8(stream_refs.end), 0};
  object_refs.end = object_refs.start + s.object_refs.size() * ds;
  FileRange named_refs{align8(object_refs.end), 0};
  named_refs.end = named_refs.start + named_z.size();
  FileRange stream_range{align8(named_refs.end), 0};
  stream_range.end = stream_range.start + stream.size();

  SplitStreamHeader header{};
  std::memcpy(header.magic, kSplitStreamMagic.data(), sizeof header.magic);
  header.version = kSplitStreamVersion;
  header.algorithm = static_cast<uint8_t>(s.alg);
  header.lg_blocksize = kSplitStreamLgBlockSize;
  header.info = info.on_disk();
  SplitStreamInfo body{};
  body.stream_refs = stream_refs.on_disk();
  body.object_refs = object_refs.on_disk();
  body.stream = stream_range.on_disk();
  body.named_refs = named_refs.on_disk();
  body.content_type = s.content_type;
  body.stream_size = s.stream_size;

  std::vector<std::byte> head(stream_range.start, std::byte{0});
  std::memcpy(head.data(), &header, sizeof header);
  std::memcpy(&head[info.start], &body, sizeof body);
  for (size_t k = 0; k < s.stream_refs.size(); ++k)
    std::memcpy(&head[stream_refs.start + k * ds], s.stream_refs[k].bytes().data(), ds);
  for (size_t k = 0; k < s.object_refs.size(); ++k)
    std::memcpy(&head[object_refs.start + k * ds], s.object_refs[k].bytes().data(), ds);
  std::memcpy(&head[named_refs.start], named_z.data(), named_z.size());
  out.write(head);
  out.write(stream);
}

// ---------------------------------------------------------------------------------------
// Reader

struct SplitStreamReader::State {
  std::vector<std::byte> file;
  std::string what;
  HashAlgorithm alg = HashAlgorithm::sha256;
  bool legacy = false;
  uint64_t content_type = 0;
  uint64_t stream_size = 0;
  std::vector<Digest> stream_refs;
  std::vector<Digest> object_refs;
  std::vector<NamedRef> named_refs;
  FileRange stream;

  std::span<const std::byte> bytes(FileRange r) const {
    return std::span<const std::byte>(file).subspan(r.start, r.size());
  }
  FileRange range(const SplitStreamRange& on_disk, const char* name) const {
    FileRange r{on_disk.start, on_disk.end};
    if (r.start > r.end || r.end > file.size()) {
      throw Error(what + ": " + name + " range [" + std::to_string(r.start) + ", " +
                  std::to_string(r.end) + ") lies outside the " + std::to_string(file.size()) +
                  "-byte file");
    }
    return r;
  }
  std::vector<Digest> digests(FileRange r, const char* name) const {
    size_t ds = digest_size(alg);
    if (r.size() % ds != 0) {
      throw Error(what + ": " + name + " is " + std::to_string(r.size()) +
                  " bytes, not a multiple of the " + std::to_string(ds) + "-byte digest size");
    }
    std::vector<Digest> out;
    auto data = bytes(r);
    for (size_t off = 0; off < data.size(); off += ds)
      out.emplace_back(alg, std::span(reinterpret_cast<const uint8_t*>(data.data() + off), ds));
    return out;
  }
};

SplitStreamReader::SplitStreamReader() : state_(std::make_unique<State>()) {}
SplitStreamReader::SplitStreamReader(SplitStreamReader&&) noexcept = default;
SplitStreamReader& SplitStreamReader::operator=(SplitStreamReader&&) noexcept = default;
SplitStreamReader::~SplitStreamReader() = default;

SplitStreamReader SplitStreamReader::from_bytes(std::vector<std::byte> file, HashAlgorithm alg,
                                                std::string what) {
  SplitStreamReader reader;
  State& s = *reader.state_;
  s.file = std::move(file);
  s.what = std::move(what);
  s.alg = alg;
  const auto& f = s.file;
  if (f.size() < kSplitStreamHeaderSize)
    throw Error(s.what + ": too short for a splitstream header (" + std::to_string(f.size()) +
                " bytes)");
  auto is_magic = [](const char(&magic)[11]) {
    return std::string_view(magic, sizeof magic) == kSplitStreamMagic;
  };
  // The legacy header carries the same fields; it is normalised into the current one.
  auto header = struct_at<SplitStreamHeader>(f, 0);
  if (!is_magic(header.magic)) {
    auto legacy = struct_at<SplitStreamLegacyHeader>(f, 0);
    if (!is_magic(legacy.magic))
      throw Error(s.what + ": not a splitstream (no \"SplitStream\" magic)");
    s.legacy = true;
    header.version = legacy.version;
    header.algorithm = legacy.algorithm;
    header.lg_blocksize = legacy.lg_blocksize;
    header.info = legacy.info;
  }
  uint8_t version = header.version;
  if (version != kSplitStreamVersion)
    throw Error(s.what + ": unsupported splitstream version " + std::to_string(version));
  uint8_t file_alg = header.algorithm;
  if (file_alg != static_cast<uint8_t>(alg)) {
    std::string name = file_alg == 1 ? "sha256" : file_alg == 2 ? "sha512" : "unknown";
    throw Error(s.what + ": splitstream uses hash algorithm " + std::to_string(file_alg) + " (" +
                name + "), the repository uses " + std::string(algorithm_name(alg)));
  }
  uint8_t lg = header.lg_blocksize;
  if (lg != kSplitStreamLgBlockSize)
    throw Error(s.what + ": unsupported fs-verity block size 2^" + std::to_string(lg));

  FileRange info = s.range(header.info, "info");
  if (info.size() < kSplitStreamInfoSize)
    throw Error(s.what + ": info block is " + std::to_string(info.size()) + " bytes, expected " +
                std::to_string(kSplitStreamInfoSize));
  auto body = struct_at<SplitStreamInfo>(f, info.start);
  FileRange stream_refs = s.range(body.stream_refs, "stream_refs");
  FileRange object_refs = s.range(body.object_refs, "object_refs");
  s.stream = s.range(body.stream, "stream");
  FileRange named = s.range(body.named_refs, "named_refs");
  s.content_type = body.content_type;
  s.stream_size = body.stream_size;
  s.stream_refs = s.digests(stream_refs, "stream_refs");
  s.object_refs = s.digests(object_refs, "object_refs");

  if (named.size() > 0) {
    detail::ZstdSource source(s.bytes(named), s.what + ": named_refs");
    std::string text;
    std::vector<std::byte> buf(65536);
    while (size_t n = source.read(buf)) {
      text.append(reinterpret_cast<const char*>(buf.data()), n);
      if (text.size() > kMaxNamedRefsBytes)
        throw Error(s.what + ": named_refs section is implausibly large");
    }
    std::string_view rest = text;
    while (!rest.empty()) {
      auto nul = rest.find('\0');
      if (nul == std::string_view::npos)
        throw Error(s.what + ": named_refs ends with an unterminated record");
      std::string_view record = rest.substr(0, nul);
      rest.remove_prefix(nul + 1);
      auto colon = record.find(':');
      std::string_view index_text = record.substr(0, colon);
      bool digits = colon != std::string_view::npos && !index_text.empty() &&
                    std::all_of(index_text.begin(), index_text.end(),
                                [](char c) { return c >= '0' && c <= '9'; });
      if (!digits || index_text.size() > 18)
        throw Error(s.what + ": malformed named ref record '" + std::string(record) + "'");
      uint64_t index = std::stoull(std::string(index_text));
      if (index >= s.stream_refs.size()) {
        throw Error(s.what + ": named ref '" + std::string(record.substr(colon + 1)) +
                    "' points to stream ref " + std::to_string(index) + " of " +
                    std::to_string(s.stream_refs.size()));
      }
      s.named_refs.push_back({std::string(record.substr(colon + 1)), s.stream_refs[index]});
    }
    std::sort(s.named_refs.begin(), s.named_refs.end(),
              [](const NamedRef& a, const NamedRef& b) { return a.name < b.name; });
  }
  return reader;
}

SplitStreamReader SplitStreamReader::from_fd(int fd, HashAlgorithm alg, std::string what) {
  struct stat st;
  if (::fstat(fd, &st) < 0) throw_errno(what);
  if (!S_ISREG(st.st_mode)) throw Error(what + ": not a regular file");
  std::vector<std::byte> data(static_cast<size_t>(st.st_size));
  if (!data.empty()) pread_exact(fd, data, 0, what);
  return from_bytes(std::move(data), alg, std::move(what));
}

bool SplitStreamReader::legacy_header() const noexcept {
  return state_->legacy;
}
uint64_t SplitStreamReader::content_type() const noexcept {
  return state_->content_type;
}
uint64_t SplitStreamReader::stream_size() const noexcept {
  return state_->stream_size;
}
const std::vector<Digest>& SplitStreamReader::stream_refs() const noexcept {
  return state_->stream_refs;
}
const std::vector<Digest>& SplitStreamReader::object_refs() const noexcept {
  return state_->object_refs;
}
const std::vector<NamedRef>& SplitStreamReader::named_refs() const noexcept {
  return state_->named_refs;
}
const Digest* SplitStreamReader::find_named_ref(std::string_view name) const {
  for (const auto& ref : state_->named_refs)
    if (ref.name == name) return &ref.target;
  return nullptr;
}

void SplitStreamReader::for_each_chunk(
    const std::function<void(std::span<const std::byte>)>& on_inline,
    const std::function<void(const Digest&)>& on_external) const {
  const State& s = *state_;
  detail::ZstdSource source(s.bytes(s.stream), s.what + ": stream");
  std::vector<std::byte> buf(1 << 20);
  for (;;) {
    SplitStreamChunkHeader header;
    if (!source.read_exact({reinterpret_cast<std::byte*>(&header), sizeof header},
                           "a chunk header"))
      return;
    auto value = static_cast<int64_t>(header.get());
    if (value >= 0) {
      if (static_cast<uint64_t>(value) >= s.object_refs.size()) {
        throw Error(s.what + ": stream references object " + std::to_string(value) + " of " +
                    std::to_string(s.object_refs.size()));
      }
      on_external(s.object_refs[static_cast<size_t>(value)]);
      continue;
    }
    if (value == std::numeric_limits<int64_t>::min())
      throw Error(s.what + ": invalid inline chunk length");
    uint64_t remaining = static_cast<uint64_t>(-value);
    while (remaining > 0) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(remaining, buf.size()));
      std::span<std::byte> piece(buf.data(), n);
      if (!source.read_exact(piece, "inline data"))
        throw Error(s.what + ": stream ends inside inline data (" + std::to_string(remaining) +
                    " bytes missing)");
      on_inline(piece);
      remaining -= n;
    }
  }
}

}  // namespace cfs::store
