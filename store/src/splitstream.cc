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
#include "zstd_util.h"

namespace cfs::store {

namespace {

constexpr std::string_view kMagic = "SplitStream";
constexpr uint8_t kVersion = 0;
constexpr uint8_t kLgBlockSize = 12;
constexpr size_t kSpillThreshold = 8u << 20;
constexpr size_t kLegacyMagicOffset = 18;
// Named refs are metadata; anything larger than this is corruption, not data.
constexpr size_t kMaxNamedRefsBytes = 64u << 20;

void put_u64(std::byte* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
uint64_t get_u64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
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
    std::byte header[8];
    put_u64(header, static_cast<uint64_t>(value));
    stream.add(header);
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

  std::vector<std::byte> head(stream_range.start, std::byte{0});
  std::memcpy(head.data(), kMagic.data(), kMagic.size());
  head[11] = std::byte{kVersion};
  // bytes 12..13: flags, zero
  head[14] = static_cast<std::byte>(s.alg);
  head[15] = std::byte{kLgBlockSize};
  put_u64(&head[16], info.start);
  put_u64(&head[24], info.end);
  std::byte* i = &head[info.start];
  put_u64(i + 0, stream_refs.start);
  put_u64(i + 8, stream_refs.end);
  put_u64(i + 16, object_refs.start);
  put_u64(i + 24, object_refs.end);
  put_u64(i + 32, stream_range.start);
  put_u64(i + 40, stream_range.end);
  put_u64(i + 48, named_refs.start);
  put_u64(i + 56, named_refs.end);
  put_u64(i + 64, s.content_type);
  put_u64(i + 72, s.stream_size);
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
  FileRange range_at(const std::byte* p, const char* name) const {
    FileRange r{get_u64(p), get_u64(p + 8)};
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
  auto magic_at = [&](size_t off) {
    return std::memcmp(f.data() + off, kMagic.data(), kMagic.size()) == 0;
  };
  size_t version_off, alg_off, lg_off, info_off;
  if (magic_at(0)) {
    version_off = 11, alg_off = 14, lg_off = 15, info_off = 16;
  } else if (magic_at(kLegacyMagicOffset)) {
    s.legacy = true;
    version_off = 29, alg_off = 30, lg_off = 31, info_off = 0;
  } else {
    throw Error(s.what + ": not a splitstream (no \"SplitStream\" magic)");
  }
  auto version = static_cast<uint8_t>(f[version_off]);
  if (version != kVersion)
    throw Error(s.what + ": unsupported splitstream version " + std::to_string(version));
  auto file_alg = static_cast<uint8_t>(f[alg_off]);
  if (file_alg != static_cast<uint8_t>(alg)) {
    std::string name = file_alg == 1 ? "sha256" : file_alg == 2 ? "sha512" : "unknown";
    throw Error(s.what + ": splitstream uses hash algorithm " + std::to_string(file_alg) + " (" +
                name + "), the repository uses " + std::string(algorithm_name(alg)));
  }
  auto lg = static_cast<uint8_t>(f[lg_off]);
  if (lg != kLgBlockSize)
    throw Error(s.what + ": unsupported fs-verity block size 2^" + std::to_string(lg));

  FileRange info = s.range_at(&f[info_off], "info");
  if (info.size() < kSplitStreamInfoSize)
    throw Error(s.what + ": info block is " + std::to_string(info.size()) + " bytes, expected " +
                std::to_string(kSplitStreamInfoSize));
  const std::byte* ip = &f[info.start];
  FileRange stream_refs = s.range_at(ip + 0, "stream_refs");
  FileRange object_refs = s.range_at(ip + 16, "object_refs");
  s.stream = s.range_at(ip + 32, "stream");
  FileRange named = s.range_at(ip + 48, "named_refs");
  s.content_type = get_u64(ip + 64);
  s.stream_size = get_u64(ip + 72);
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
    std::byte header[8];
    if (!source.read_exact(header, "a chunk header")) return;
    auto value = static_cast<int64_t>(get_u64(header));
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
