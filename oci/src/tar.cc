#include "cfs/oci/tar.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <functional>
#include <string_view>

#include "cfs/erofs/dumpfile.h"
#include "cfs/error.h"
#include "cfs/escape.h"

namespace cfs::oci {

namespace {

constexpr size_t kBlock = 512;
// A GNU long name or link holds a path and its NUL.
constexpr uint64_t kLongNameMax = erofs::kPathMax + 1;
// XATTR_SIZE_MAX: the largest xattr value any Linux filesystem stores.
constexpr size_t kLinuxXattrValueMax = 65536;
// Bytes of a PAX 1.0 sparse map: a count and two numbers per entry, each at most 20 digits
// and a newline.
constexpr size_t kSparseMapTextMax = (2 * kTarSparseEntriesMax + 1) * 21;

std::string_view field(const std::byte* block, size_t offset, size_t length) {
  const char* p = reinterpret_cast<const char*>(block) + offset;
  return {p, strnlen(p, length)};
}

// The header layouts that decide which fields exist past the v7 part of the header.
enum class Format {
  v7,     // no magic: no devices, no prefix, directories by a trailing '/'
  ustar,  // "ustar\0" "00": 155-byte prefix at 345
  star,   // ustar magic and "tar\0" at 508: 131-byte prefix, then atime/ctime
  gnu     // "ustar  \0" (gnu and oldgnu): 345.. holds atime/ctime/sparse data, no prefix
};

Format header_format(const std::byte* h) {
  std::string_view magic(reinterpret_cast<const char*>(h) + 257, 8);
  if (magic == std::string_view("ustar  \0", 8)) return Format::gnu;
  if (magic.substr(0, 6) != std::string_view("ustar\0", 6)) return Format::v7;
  if (std::string_view(reinterpret_cast<const char*>(h) + 508, 4) == std::string_view("tar\0", 4))
    return Format::star;
  // Version other than "00": still POSIX-shaped (some writers leave it blank).
  return Format::ustar;
}

using Failer = std::function<void(const std::string&)>;

// Octal (NUL/space padded, possibly unterminated) or GNU base-256 (big-endian two's
// complement, first byte 0x80/0xff). Negative values are refused (mtime has its own parser).
uint64_t parse_number(const std::byte* p, size_t len, const char* name, const Failer& fail) {
  auto b = [&](size_t i) { return static_cast<uint8_t>(p[i]); };
  if (b(0) & 0x80) {
    if (b(0) & 0x40) fail(std::string("negative ") + name + " field");
    uint64_t v = b(0) & 0x3f;
    for (size_t i = 1; i < len; ++i) {
      if (v >> 56) fail(std::string(name) + " field overflows 64 bits");
      v = (v << 8) | b(i);
    }
    return v;
  }
  size_t i = 0;
  while (i < len && (b(i) == ' ' || b(i) == 0)) {
    if (b(i) == 0) return 0;  // an all-NUL field is zero
    ++i;
  }
  uint64_t v = 0;
  for (; i < len && b(i) != ' ' && b(i) != 0; ++i) {
    if (b(i) < '0' || b(i) > '7') fail(std::string("bad octal digit in the ") + name + " field");
    if (v >> 61) fail(std::string(name) + " field overflows 64 bits");
    v = v * 8 + (b(i) - '0');
  }
  return v;
}

// The mtime field: octal, or base-256 two's complement that may be negative (GNU tar and
// libarchive write times before 1970 so). Values beyond 64 bits are refused.
int64_t parse_time_field(const std::byte* p, size_t len, const Failer& fail) {
  auto b = [&](size_t i) { return static_cast<uint8_t>(p[i]); };
  if ((b(0) & 0xc0) != 0xc0) {
    uint64_t v = parse_number(p, len, "mtime", fail);
    if (v > uint64_t(INT64_MAX)) fail("mtime field overflows 64 bits");
    return static_cast<int64_t>(v);
  }
  // Negative: every byte before the last eight is sign extension (0xff), and the last eight
  // hold a negative int64.
  for (size_t i = 0; i + 8 < len; ++i)
    if (b(i) != 0xff) fail("mtime field overflows 64 bits");
  if (!(b(len - 8) & 0x80)) fail("mtime field overflows 64 bits");
  uint64_t v = 0;
  for (size_t i = len - 8; i < len; ++i) v = (v << 8) | b(i);
  return static_cast<int64_t>(v);
}

bool parse_decimal(std::string_view s, uint64_t& out) {
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

// libarchive writes LIBARCHIVE.xattr names URL-encoded ("%3D" for '=', etc).
std::optional<std::string> url_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    unsigned v = 0;
    auto [ptr, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
    if (ec != std::errc() || ptr != s.data() + i + 3) return std::nullopt;
    out += static_cast<char>(v);
    i += 2;
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view s) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  while (!s.empty() && s.back() == '=') s.remove_suffix(1);
  std::string out;
  out.reserve(s.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    int v = value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  if (bits >= 6) return std::nullopt;  // a lone trailing character
  return out;
}

}  // namespace

bool xattr_kept(std::string_view name, XattrMode mode) noexcept {
  if (name == "security.capability") return true;
  return mode == XattrMode::keep_user_xattrs && name.starts_with("user.");
}

std::string tar_sparse_ref(const TarEntry& entry) {
  return "cfs.tar-sparse." + std::to_string(entry.header_offset);
}

TarParser::TarParser(TarHandler& handler, TarMode mode, std::string what, XattrMode xattrs)
    : handler_(handler), mode_(mode), what_(std::move(what)), xattr_mode_(xattrs) {}

TarParser::~TarParser() = default;

void TarParser::fail(const std::string& message) const {
  // Every message quotes something from the archive (paths, PAX values, type bytes); they are
  // escaped here, once, instead of at each of those call sites.
  throw Error(what_ + ": tar offset " + std::to_string(offset_) + ": " + escape_for_log(message));
}

void TarParser::feed(std::span<const std::byte> data) {
  while (!data.empty()) {
    switch (state_) {
      case State::header: {
        size_t n = std::min(kBlock - block_fill_, data.size());
        std::memcpy(block_ + block_fill_, data.data(), n);
        block_fill_ += n;
        data = data.subspan(n);
        offset_ += n;
        if (block_fill_ == kBlock) {
          block_fill_ = 0;
          handler_.inline_bytes({block_, kBlock});
          if (sparse_extension_)
            on_sparse_extension();
          else
            on_header();
        }
        break;
      }
      case State::content: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, data.size()));
        auto piece = data.first(n);
        switch (kind_) {
          case ContentKind::external:
            if (mode_ == TarMode::read_back)
              fail(entry_.path + ": content of a regular file over " +
                   std::to_string(kTarInlineMax) + " bytes stored inline");
            handler_.external_bytes(piece);
            break;
          case ContentKind::extension:
            extension_.append(reinterpret_cast<const char*>(piece.data()), piece.size());
            handler_.inline_bytes(piece);
            break;
          case ContentKind::small:
            entry_.content->append(reinterpret_cast<const char*>(piece.data()), piece.size());
            handler_.inline_bytes(piece);
            break;
          case ContentKind::sparse:
            // The tar bytes stay inline in the splitstream; the expanded content is extra.
            handler_.inline_bytes(piece);
            sparse_content(piece);
            break;
          case ContentKind::skip:
            handler_.inline_bytes(piece);
            break;
        }
        remaining_ -= n;
        offset_ += n;
        data = data.subspan(n);
        if (remaining_ == 0) end_content();
        break;
      }
      case State::padding: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(padding_, data.size()));
        handler_.inline_bytes(data.first(n));
        padding_ -= n;
        offset_ += n;
        data = data.subspan(n);
        if (padding_ == 0) state_ = State::header;
        break;
      }
      case State::trailer:
        // Zero blocks and record padding after the end marker: kept so the stream
        // reproduces the layer byte for byte (its diff_id covers them).
        handler_.inline_bytes(data);
        offset_ += data.size();
        data = {};
        break;
    }
  }
}

void TarParser::feed_external(const Digest& object, std::optional<uint64_t> known_size) {
  uint64_t size = known_size.value_or(remaining_);
  if (mode_ != TarMode::read_back) fail("external object in a raw tar stream");
  if (state_ != State::content || kind_ != ContentKind::external)
    fail("object " + object.hex() + " where no large regular file content is due");
  if (size != remaining_ || remaining_ != entry_.size)
    fail(entry_.path + ": object " + object.hex() + " has " + std::to_string(size) +
         " bytes, the entry needs " + std::to_string(entry_.size));
  entry_.object = object;
  remaining_ = 0;
  offset_ += size;
  end_content();
}

void TarParser::finish() {
  if (state_ == State::trailer) return;
  // Some writers omit the end-of-archive marker; a stream that stops at an entry
  // boundary is complete.
  if (state_ == State::header && block_fill_ == 0 && !sparse_extension_) return;
  fail("truncated tar stream (ends inside " +
       std::string(state_ == State::header ? "a header" : "the content of " + entry_.path) + ")");
}

void TarParser::check_path(const std::string& path, const char* role) const {
  if (path.size() > erofs::kPathMax)
    fail(std::string(role) + " of " + std::to_string(path.size()) + " bytes (at most " +
         std::to_string(erofs::kPathMax) + ")");
  if (path.find('\0') != std::string::npos) fail(std::string(role) + " contains a NUL byte");
  size_t depth = 0;
  for (size_t i = 0; i < path.size();) {
    size_t slash = path.find('/', i);
    if (slash == std::string::npos) slash = path.size();
    std::string_view part(path.data() + i, slash - i);
    if (!part.empty() && part != ".") ++depth;
    i = slash + 1;
  }
  if (depth > erofs::kMaxDirDepth)
    fail(std::string(role) + " '" + path.substr(0, 64) + "…' nests " + std::to_string(depth) +
         " levels deep (at most " + std::to_string(erofs::kMaxDirDepth) + ")");
}

void TarParser::on_header() {
  const std::byte* h = block_;
  if (std::all_of(h, h + kBlock, [](std::byte c) { return c == std::byte{0}; })) {
    if (long_name_ || long_link_ || pax_.any)
      fail("end of archive right after an extension header");
    state_ = State::trailer;
    ended_ = true;
    return;
  }
  Failer failer = [this](const std::string& m) { fail(m); };

  uint64_t stored_sum = parse_number(h + 148, 8, "checksum", failer);
  uint64_t unsigned_sum = 0;
  int64_t signed_sum = 0;
  for (size_t i = 0; i < kBlock; ++i) {
    uint8_t c = (i >= 148 && i < 156) ? ' ' : static_cast<uint8_t>(h[i]);
    unsigned_sum += c;
    signed_sum += static_cast<int8_t>(c);
  }
  if (stored_sum != unsigned_sum && static_cast<int64_t>(stored_sum) != signed_sum)
    fail("header checksum mismatch (not a tar stream, or corrupt)");

  char type = static_cast<char>(h[156]);
  uint64_t size = parse_number(h + 124, 12, "size", failer);
  switch (type) {
    case 'x':
    case 'X':  // Solaris' name for the POSIX.1-2001 extended header
    case 'g':
      if (size > kTarPaxHeaderMax)
        fail("extension header of " + std::to_string(size) + " bytes (at most " +
             std::to_string(kTarPaxHeaderMax) + ")");
      extension_type_ = type == 'X' ? 'x' : type;
      extension_.clear();
      begin_content(size, ContentKind::extension);
      return;
    case 'L':
    case 'K':
      if (size > kLongNameMax)
        fail(std::string("extension header of ") + std::to_string(size) + " bytes: GNU long " +
             (type == 'L' ? "name" : "link") + " over " + std::to_string(erofs::kPathMax) +
             " bytes");
      extension_type_ = type;
      extension_.clear();
      begin_content(size, ContentKind::extension);
      return;
    case 'M':
    case 'N':
      fail(std::string("GNU multi-volume entry type '") + type + "' is not supported");
    case 'V':
      extension_type_ = 'V';
      begin_content(size, ContentKind::skip);  // GNU volume label: no filesystem entry
      return;
    default:
      break;
  }

  Format format = header_format(h);
  TarEntry e;
  e.header_offset = offset_ - kBlock;
  if (long_name_) {
    e.path = std::move(*long_name_);
  } else {
    std::string_view prefix = format == Format::ustar  ? field(h, 345, 155)
                              : format == Format::star ? field(h, 345, 131)
                                                       : std::string_view{};
    e.path = prefix.empty() ? std::string(field(h, 0, 100))
                            : std::string(prefix) + "/" + std::string(field(h, 0, 100));
  }
  e.link = long_link_ ? std::move(*long_link_) : std::string(field(h, 157, 100));
  long_name_.reset();
  long_link_.reset();
  e.mode = static_cast<uint32_t>(parse_number(h + 100, 8, "mode", failer) & 07777);
  uint64_t uid = parse_number(h + 108, 8, "uid", failer);
  uint64_t gid = parse_number(h + 116, 8, "gid", failer);
  e.mtime_sec = parse_time_field(h + 136, 12, failer);
  uint64_t dev_major = 0, dev_minor = 0;
  if (format != Format::v7) {
    dev_major = parse_number(h + 329, 8, "devmajor", failer);
    dev_minor = parse_number(h + 337, 8, "devminor", failer);
  }

  // GNU old-style sparse member: map in the header (and extension blocks), real size at 483.
  uint64_t realsize = 0;
  bool sparse = false;
  sparse_.clear();
  if (type == 'S') {
    sparse = true;
    for (size_t i = 0; i < 4; ++i) {
      const std::byte* entry = h + 386 + i * 24;
      if (entry[0] == std::byte{0}) break;
      sparse_.push_back({parse_number(entry, 12, "sparse offset", failer),
                         parse_number(entry + 12, 12, "sparse numbytes", failer)});
    }
    realsize = parse_number(h + 483, 12, "sparse realsize", failer);
    sparse_extension_ = h[482] != std::byte{0};
  }

  Pax pax = std::move(pax_);
  pax_ = Pax{};
  auto number = [&](const std::optional<std::string>& v, const char* key, uint64_t& out) {
    if (v && !parse_decimal(*v, out))
      fail(std::string("PAX ") + key + " '" + *v + "' is not a number");
  };
  if (pax.path) e.path = std::move(*pax.path);
  if (pax.linkpath) e.link = std::move(*pax.linkpath);
  number(pax.size, "size", size);
  number(pax.uid, "uid", uid);
  number(pax.gid, "gid", gid);
  number(pax.devmajor, "SCHILY.devmajor", dev_major);
  number(pax.devminor, "SCHILY.devminor", dev_minor);
  if (pax.mtime) {
    // [-]SECONDS[.FRACTION]: a negative time counts back from the epoch, fraction included
    // (-5.25 is 5.25 s before it: seconds -6, nanoseconds 750000000).
    std::string_view v = *pax.mtime;
    bool minus = !v.empty() && v[0] == '-';
    if (minus) v.remove_prefix(1);
    auto dot = v.find('.');
    uint64_t seconds = 0;
    uint32_t nanoseconds = 0;
    bool ok = parse_decimal(v.substr(0, dot), seconds) && seconds <= uint64_t(INT64_MAX) - 1;
    if (ok && dot != std::string_view::npos) {
      std::string frac(v.substr(dot + 1));
      ok = !frac.empty() && frac.find_first_not_of("0123456789") == std::string::npos;
      frac.resize(9, '0');  // nanoseconds; finer digits are truncated
      if (ok) nanoseconds = static_cast<uint32_t>(std::stoul(frac));
    }
    if (!ok) fail("PAX mtime '" + *pax.mtime + "' is not a time");
    e.mtime_sec = static_cast<int64_t>(seconds);
    e.mtime_nsec = nanoseconds;
    if (minus) {
      e.mtime_sec = -e.mtime_sec;
      if (nanoseconds) {
        e.mtime_sec -= 1;
        e.mtime_nsec = 1000000000 - nanoseconds;
      }
    }
  }
  e.xattrs = std::move(pax.xattrs);
  std::stable_sort(e.xattrs.begin(), e.xattrs.end(),
                   [](const erofs::Xattr& a, const erofs::Xattr& b) { return a.name < b.name; });
  // A repeated name: the last record wins (it is last among equals after the stable sort).
  size_t kept = 0;
  for (size_t i = 0; i < e.xattrs.size(); ++i) {
    if (i + 1 < e.xattrs.size() && e.xattrs[i].name == e.xattrs[i + 1].name) continue;
    if (kept != i) e.xattrs[kept] = std::move(e.xattrs[i]);
    ++kept;
  }
  e.xattrs.resize(kept);

  // PAX sparse members (GNU tar --posix -S): 0.0 offset/numbytes records, 0.1 a map
  // record, 1.0 the map at the start of the data area. The real name and size are records.
  bool pax_sparse = pax.sparse_map || !pax.sparse_00.empty() || pax.sparse_major ||
                    pax.sparse_realsize || pax.sparse_name;
  sparse_map_in_data_ = false;
  if (pax_sparse && type != 'S') {
    sparse = true;
    if (pax.sparse_name) e.path = std::move(*pax.sparse_name);
    if (pax.sparse_major) {
      if (*pax.sparse_major != "1" || pax.sparse_minor.value_or("0") != "0")
        fail(e.path + ": GNU sparse format " + *pax.sparse_major + "." +
             pax.sparse_minor.value_or("?") + " is not supported");
      sparse_map_in_data_ = true;
    } else if (pax.sparse_map) {
      std::string_view m = *pax.sparse_map;
      std::vector<uint64_t> numbers;
      while (!m.empty()) {
        auto comma = m.find(',');
        uint64_t n = 0;
        if (!parse_decimal(m.substr(0, comma), n)) fail(e.path + ": malformed GNU.sparse.map");
        numbers.push_back(n);
        if (numbers.size() > 2 * kTarSparseEntriesMax) fail(e.path + ": sparse map too large");
        m = comma == std::string_view::npos ? std::string_view{} : m.substr(comma + 1);
      }
      if (numbers.size() % 2) fail(e.path + ": GNU.sparse.map has an odd count");
      for (size_t i = 0; i < numbers.size(); i += 2)
        sparse_.push_back({numbers[i], numbers[i + 1]});
    } else {
      if (pax.sparse_00.size() % 2)
        fail(e.path + ": GNU.sparse.offset without GNU.sparse.numbytes");
      for (size_t i = 0; i < pax.sparse_00.size(); i += 2)
        sparse_.push_back({pax.sparse_00[i], pax.sparse_00[i + 1]});
    }
    if (!pax.sparse_realsize) fail(e.path + ": sparse member without GNU.sparse.size");
    number(pax.sparse_realsize, "GNU.sparse.size", realsize);
  }

  if (uid > UINT32_MAX || gid > UINT32_MAX) fail(e.path + ": uid/gid out of range");
  e.uid = static_cast<uint32_t>(uid);
  e.gid = static_cast<uint32_t>(gid);
  if (dev_major > UINT32_MAX || dev_minor > UINT32_MAX)
    fail(e.path + ": device number out of range");
  e.dev_major = static_cast<uint32_t>(dev_major);
  e.dev_minor = static_cast<uint32_t>(dev_minor);

  switch (type) {
    case '0':
    case '\0':
    case '7':
      // v7 and early ustar writers mark directories only by the trailing slash.
      e.type = (!sparse && e.path.size() > 1 && e.path.back() == '/') ? TarEntryType::directory
                                                                      : TarEntryType::regular;
      break;
    case 'S':
      e.type = TarEntryType::regular;
      break;
    case '1':
      e.type = TarEntryType::hardlink;
      break;
    case '2':
      e.type = TarEntryType::symlink;
      break;
    case '3':
      e.type = TarEntryType::chardev;
      break;
    case '4':
      e.type = TarEntryType::blockdev;
      break;
    case '5':
    case 'D':  // GNU dumpdir: a directory whose content lists its names (skipped)
      e.type = TarEntryType::directory;
      break;
    case '6':
      e.type = TarEntryType::fifo;
      break;
    default:
      fail(e.path + ": unsupported tar entry type '" + std::string(1, type) + "'");
  }
  if (e.path.empty()) fail("entry with an empty name");
  check_path(e.path, "entry name");
  if (e.type == TarEntryType::hardlink || e.type == TarEntryType::symlink)
    check_path(e.link, (e.path + ": link target").c_str());
  if (sparse && e.type != TarEntryType::regular) sparse = false;
  e.sparse = sparse;
  e.size = e.type != TarEntryType::regular ? 0 : sparse ? realsize : size;
  entry_ = std::move(e);
  sparse_data_size_ = size;
  if (sparse_extension_) {
    // The content starts after the extension blocks.
    state_ = State::header;
    return;
  }
  begin_entry_content(size);
}

void TarParser::on_sparse_extension() {
  Failer failer = [this](const std::string& m) { fail(m); };
  const std::byte* h = block_;
  for (size_t i = 0; i < 21; ++i) {
    const std::byte* entry = h + i * 24;
    if (entry[0] == std::byte{0}) break;
    if (sparse_.size() >= kTarSparseEntriesMax) fail(entry_.path + ": sparse map too large");
    sparse_.push_back({parse_number(entry, 12, "sparse offset", failer),
                       parse_number(entry + 12, 12, "sparse numbytes", failer)});
  }
  sparse_extension_ = h[504] != std::byte{0};
  if (!sparse_extension_) begin_entry_content(sparse_data_size_);
}

void TarParser::check_sparse_map(uint64_t data_size) {
  uint64_t end = 0, stored = 0;
  for (const SparseSegment& s : sparse_) {
    if (s.offset < end || s.length > entry_.size || s.offset > entry_.size - s.length)
      fail(entry_.path + ": sparse map segment " + std::to_string(s.offset) + "+" +
           std::to_string(s.length) + " overlaps another or lies beyond the file size " +
           std::to_string(entry_.size));
    end = s.offset + s.length;
    stored += s.length;
  }
  if (stored != data_size)
    fail(entry_.path + ": sparse map holds " + std::to_string(stored) +
         " bytes, the member stores " + std::to_string(data_size));
  // Holes cost no I/O but are hashed (one precomputed hash per 4 KiB block): a few bytes
  // of tar claiming exabytes of holes would hash for hours.
  sparse_holes_ += entry_.size - stored;
  if (sparse_holes_ > kTarSparseHolesMax)
    fail(entry_.path + ": the layer's sparse members hold more than " +
         std::to_string(kTarSparseHolesMax >> 30) + " GiB of holes");
  sparse_index_ = 0;
  sparse_left_ = 0;
  sparse_pos_ = 0;
}

void TarParser::begin_entry_content(uint64_t size) {
  if (entry_.type != TarEntryType::regular) {
    begin_content(size, ContentKind::skip);
    return;
  }
  if (entry_.sparse) {
    if (!entry_.external()) entry_.content.emplace();
    if (mode_ == TarMode::split && entry_.external()) handler_.external_begin(entry_);
    sparse_map_text_.clear();
    sparse_map_bytes_ = 0;
    sparse_map_count_.reset();
    sparse_map_offset_.reset();
    if (!sparse_map_in_data_) check_sparse_map(size);
    begin_content(size, ContentKind::sparse);
    return;
  }
  if (entry_.external()) {
    if (mode_ == TarMode::split) handler_.external_begin(entry_);
    begin_content(size, ContentKind::external);
  } else {
    entry_.content.emplace();
    begin_content(size, ContentKind::small);
  }
}

void TarParser::begin_content(uint64_t size, ContentKind kind) {
  kind_ = kind;
  remaining_ = size;
  padding_ = (kBlock - size % kBlock) % kBlock;
  if (size == 0)
    end_content();
  else
    state_ = State::content;
}

void TarParser::sparse_emit_zeros(uint64_t n) {
  if (n == 0) return;
  sparse_pos_ += n;
  if (!entry_.external())
    entry_.content->append(static_cast<size_t>(n), '\0');
  else if (mode_ == TarMode::split)
    handler_.external_zeros(n);
}

void TarParser::sparse_emit_data(std::span<const std::byte> data) {
  sparse_pos_ += data.size();
  if (!entry_.external())
    entry_.content->append(reinterpret_cast<const char*>(data.data()), data.size());
  else if (mode_ == TarMode::split)
    handler_.external_bytes(data);
}

// PAX 1.0: the data area starts with decimal lines (count, then offset and size per
// segment), padded to a block. Parses the complete lines collected so far (consuming them)
// and returns true once the map is complete.
bool TarParser::parse_sparse_map_text() {
  size_t pos = 0;
  bool done = false;
  for (;;) {
    if (sparse_map_count_ && sparse_.size() == *sparse_map_count_ && !sparse_map_offset_) {
      done = true;
      break;
    }
    auto nl = sparse_map_text_.find('\n', pos);
    if (nl == std::string::npos) break;
    uint64_t n = 0;
    if (!parse_decimal(std::string_view(sparse_map_text_).substr(pos, nl - pos), n))
      fail(entry_.path + ": malformed GNU sparse 1.0 map");
    pos = nl + 1;
    if (!sparse_map_count_) {
      if (n > kTarSparseEntriesMax) fail(entry_.path + ": sparse map too large");
      sparse_map_count_ = n;
    } else if (!sparse_map_offset_) {
      sparse_map_offset_ = n;
    } else {
      sparse_.push_back({*sparse_map_offset_, n});
      sparse_map_offset_.reset();
    }
  }
  sparse_map_text_.erase(0, pos);
  return done;
}

void TarParser::sparse_content(std::span<const std::byte> piece) {
  // The map occupies whole blocks at the start of the data area; collect them block by
  // block until it is complete.
  while (sparse_map_in_data_ && !piece.empty()) {
    size_t want = kBlock - static_cast<size_t>(sparse_map_bytes_ % kBlock);
    size_t take = std::min(want, piece.size());
    sparse_map_text_.append(reinterpret_cast<const char*>(piece.data()), take);
    sparse_map_bytes_ += take;
    piece = piece.subspan(take);
    if (sparse_map_bytes_ % kBlock != 0) return;
    if (!parse_sparse_map_text()) {
      if (sparse_map_bytes_ > kSparseMapTextMax)
        fail(entry_.path + ": GNU sparse 1.0 map too large");
      continue;
    }
    sparse_map_in_data_ = false;
    sparse_map_text_.clear();
    sparse_map_text_.shrink_to_fit();
    if (sparse_map_bytes_ > sparse_data_size_)
      fail(entry_.path + ": GNU sparse 1.0 map is truncated");
    check_sparse_map(sparse_data_size_ - sparse_map_bytes_);
  }
  while (!piece.empty()) {
    while (sparse_left_ == 0) {
      if (sparse_index_ >= sparse_.size()) fail(entry_.path + ": sparse data beyond the map");
      const SparseSegment& s = sparse_[sparse_index_++];
      sparse_emit_zeros(s.offset - sparse_pos_);
      sparse_left_ = s.length;
    }
    size_t take = static_cast<size_t>(std::min<uint64_t>(sparse_left_, piece.size()));
    sparse_emit_data(piece.first(take));
    sparse_left_ -= take;
    piece = piece.subspan(take);
  }
}

void TarParser::end_content() {
  state_ = padding_ > 0 ? State::padding : State::header;
  if (kind_ == ContentKind::extension) {
    switch (extension_type_) {
      case 'x':
        parse_pax(extension_, false);
        break;
      case 'g':
        parse_pax(extension_, true);
        break;
      case 'L':
        long_name_ = extension_.substr(0, extension_.find('\0'));
        break;
      case 'K':
        long_link_ = extension_.substr(0, extension_.find('\0'));
        break;
    }
    extension_.clear();
    if (extension_.capacity() > kBlock * 8) extension_.shrink_to_fit();
    return;
  }
  if (kind_ == ContentKind::skip && extension_type_ == 'V') {
    extension_type_ = 0;
    return;
  }
  if (kind_ == ContentKind::sparse) {
    if (sparse_map_in_data_) fail(entry_.path + ": GNU sparse 1.0 map is truncated");
    // Zero-length segments may remain (GNU marks the size with one at the end).
    while (sparse_index_ < sparse_.size() && sparse_[sparse_index_].length == 0) ++sparse_index_;
    if (sparse_left_ != 0 || sparse_index_ != sparse_.size())
      fail(entry_.path + ": sparse data ends before its map");
    sparse_emit_zeros(entry_.size - sparse_pos_);
    std::vector<SparseSegment>().swap(sparse_);
    if (mode_ == TarMode::split && entry_.external()) handler_.external_end();
    handler_.entry(entry_);
    return;
  }
  if (kind_ == ContentKind::external && mode_ == TarMode::split) handler_.external_end();
  handler_.entry(entry_);
}

void TarParser::add_xattr(std::string_view name, std::string_view value) {
  if (name.empty()) fail("PAX xattr record with an empty name");
  // No Linux filesystem holds a larger value (XATTR_SIZE_MAX): such a record is made up,
  // whatever its name.
  if (value.size() > kLinuxXattrValueMax && !xattr_kept(name, xattr_mode_))
    fail("xattr " + std::string(name.substr(0, 64)) + " has a value of " +
         std::to_string(value.size()) + " bytes (Linux holds " +
         std::to_string(kLinuxXattrValueMax) + ")");
  // Every xattr record counts, kept or not: a layer that is mostly xattrs is a bomb (each
  // value within the limit, millions of them), refused before it costs minutes.
  xattr_bytes_ += name.size() + value.size();
  if (xattr_bytes_ > kTarXattrBudget)
    fail("the layer carries more than " + std::to_string(kTarXattrBudget >> 20) + " MiB of xattrs");
  // Dropped here, not after the merge: a layer can carry megabytes per entry that the image
  // never holds.
  if (!xattr_kept(name, xattr_mode_)) return;
  if (name.size() > erofs::kXattrNameMax)
    fail("xattr name '" + std::string(name.substr(0, 64)) + "…' over " +
         std::to_string(erofs::kXattrNameMax) + " bytes");
  if (value.size() > erofs::kXattrValueMax)
    fail("xattr " + std::string(name) + " has a value of " + std::to_string(value.size()) +
         " bytes (EROFS holds " + std::to_string(erofs::kXattrValueMax) + ")");
  // Repeated names are resolved (last wins) when the entry is complete.
  pax_.xattrs.push_back({std::string(name), std::string(value)});
}

void TarParser::parse_pax(std::string_view records, bool global) {
  while (!records.empty()) {
    auto space = records.find(' ');
    uint64_t length = 0;
    if (space == std::string_view::npos || !parse_decimal(records.substr(0, space), length) ||
        length <= space + 1 || length > records.size() || records[length - 1] != '\n')
      fail("malformed PAX extended header record");
    std::string_view record = records.substr(space + 1, length - space - 2);
    records.remove_prefix(length);
    auto eq = record.find('=');
    if (eq == std::string_view::npos || eq == 0) fail("PAX record without key=value");
    // Global headers only carry archive-wide defaults that layer tools do not rely on.
    if (global) continue;
    std::string_view key = record.substr(0, eq);
    std::string_view value = record.substr(eq + 1);
    pax_.any = true;
    // Only the keys the image uses are kept: the rest (atime, uname, comments, …) would
    // only cost memory.
    auto set = [&](std::optional<std::string>& slot) {
      // An empty value removes the override (POSIX: "the field is deleted").
      if (value.empty())
        slot.reset();
      else
        slot = std::string(value);
    };
    if (key == "path") {
      set(pax_.path);
      if (pax_.path) check_path(*pax_.path, "PAX path");
    } else if (key == "linkpath") {
      set(pax_.linkpath);
      if (pax_.linkpath) check_path(*pax_.linkpath, "PAX linkpath");
    } else if (key == "size") {
      set(pax_.size);
    } else if (key == "uid") {
      set(pax_.uid);
    } else if (key == "gid") {
      set(pax_.gid);
    } else if (key == "mtime") {
      set(pax_.mtime);
    } else if (key == "SCHILY.devmajor") {
      set(pax_.devmajor);
    } else if (key == "SCHILY.devminor") {
      set(pax_.devminor);
    } else if (key.starts_with("SCHILY.xattr.")) {
      add_xattr(key.substr(13), value);
    } else if (key.starts_with("LIBARCHIVE.xattr.")) {
      auto name = url_decode(key.substr(17));
      auto decoded = base64_decode(value);
      if (!name || !decoded) fail("malformed PAX record " + std::string(key.substr(0, 64)));
      add_xattr(*name, *decoded);
    } else if (key == "GNU.sparse.name") {
      set(pax_.sparse_name);
      if (pax_.sparse_name) check_path(*pax_.sparse_name, "GNU.sparse.name");
    } else if (key == "GNU.sparse.size" || key == "GNU.sparse.realsize") {
      set(pax_.sparse_realsize);
    } else if (key == "GNU.sparse.major") {
      set(pax_.sparse_major);
    } else if (key == "GNU.sparse.minor") {
      set(pax_.sparse_minor);
    } else if (key == "GNU.sparse.map") {
      set(pax_.sparse_map);
    } else if (key == "GNU.sparse.offset" || key == "GNU.sparse.numbytes") {
      // Format 0.0 repeats these two keys in order, one pair per segment.
      uint64_t n = 0;
      if (!parse_decimal(value, n)) fail("PAX " + std::string(key) + " is not a number");
      bool offset = key == "GNU.sparse.offset";
      if ((pax_.sparse_00.size() % 2 == 0) != offset)
        fail("PAX GNU.sparse.offset/numbytes records out of order");
      if (pax_.sparse_00.size() >= 2 * kTarSparseEntriesMax) fail("sparse map too large");
      pax_.sparse_00.push_back(n);
    }
  }
}

}  // namespace cfs::oci
