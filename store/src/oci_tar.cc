#include "cfs/store/oci_tar.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <functional>
#include <string_view>

#include "cfs/error.h"
#include "cfs/escape.h"

namespace cfs::store {

namespace {

constexpr size_t kBlock = 512;
// PAX records and GNU long names are metadata; more than this is an attack, not a layer.
constexpr size_t kMaxExtension = 16u << 20;

std::string_view field(const std::byte* block, size_t offset, size_t length) {
  const char* p = reinterpret_cast<const char*>(block) + offset;
  return {p, strnlen(p, length)};
}

}  // namespace

TarParser::TarParser(TarHandler& handler, TarMode mode, std::string what)
    : handler_(handler), mode_(mode), what_(std::move(what)) {}

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
  if (state_ == State::header && block_fill_ == 0) return;
  fail("truncated tar stream (ends inside " +
       std::string(state_ == State::header ? "a header" : "the content of " + entry_.path) + ")");
}

namespace {

uint64_t parse_number(const std::byte* p, size_t len, const char* name,
                      const std::function<void(const std::string&)>& fail) {
  auto b = [&](size_t i) { return static_cast<uint8_t>(p[i]); };
  if (b(0) & 0x80) {
    // GNU base-256: big-endian two's complement; negative values are refused.
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
  bool any = false;
  for (; i < len && b(i) != ' ' && b(i) != 0; ++i) {
    if (b(i) < '0' || b(i) > '7') fail(std::string("bad octal digit in the ") + name + " field");
    if (v >> 61) fail(std::string(name) + " field overflows 64 bits");
    v = v * 8 + (b(i) - '0');
    any = true;
  }
  if (!any && i < len) return 0;
  return v;
}

bool parse_decimal(std::string_view s, uint64_t& out) {
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

}  // namespace

void TarParser::on_header() {
  const std::byte* h = block_;
  if (std::all_of(h, h + kBlock, [](std::byte c) { return c == std::byte{0}; })) {
    if (long_name_ || long_link_ || !pax_.empty())
      fail("end of archive right after an extension header");
    state_ = State::trailer;
    ended_ = true;
    return;
  }
  auto failer = [this](const std::string& m) { fail(m); };

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
    case 'g':
    case 'L':
    case 'K':
      if (size > kMaxExtension) fail("extension header of " + std::to_string(size) + " bytes");
      extension_type_ = type;
      extension_.clear();
      begin_content(size, ContentKind::extension);
      return;
    case 'S':
      fail("sparse entries are not supported");
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

  std::string_view magic = field(h, 257, 6);
  bool ustar = magic == "ustar" && field(h, 263, 2) == "00";

  TarEntry e;
  if (long_name_) {
    e.path = std::move(*long_name_);
  } else {
    std::string_view prefix = ustar ? field(h, 345, 155) : std::string_view{};
    e.path = prefix.empty() ? std::string(field(h, 0, 100))
                            : std::string(prefix) + "/" + std::string(field(h, 0, 100));
  }
  e.link = long_link_ ? std::move(*long_link_) : std::string(field(h, 157, 100));
  long_name_.reset();
  long_link_.reset();
  e.mode = static_cast<uint32_t>(parse_number(h + 100, 8, "mode", failer) & 07777);
  uint64_t uid = parse_number(h + 108, 8, "uid", failer);
  uint64_t gid = parse_number(h + 116, 8, "gid", failer);
  e.mtime_sec = parse_number(h + 136, 12, "mtime", failer);
  if (magic == "ustar") {
    e.dev_major = static_cast<uint32_t>(parse_number(h + 329, 8, "devmajor", failer));
    e.dev_minor = static_cast<uint32_t>(parse_number(h + 337, 8, "devminor", failer));
  }

  for (auto& [key, value] : pax_) {
    uint64_t n = 0;
    if (key == "path") {
      e.path = value;
    } else if (key == "linkpath") {
      e.link = value;
    } else if (key == "size") {
      if (!parse_decimal(value, size)) fail("PAX size '" + value + "' is not a number");
    } else if (key == "uid") {
      if (!parse_decimal(value, uid)) fail("PAX uid '" + value + "' is not a number");
    } else if (key == "gid") {
      if (!parse_decimal(value, gid)) fail("PAX gid '" + value + "' is not a number");
    } else if (key == "mtime") {
      std::string_view v = value;
      if (!v.empty() && v[0] == '-') {
        e.mtime_sec = 0;  // before the epoch: EROFS cannot store it
        continue;
      }
      auto dot = v.find('.');
      if (!parse_decimal(v.substr(0, dot), n)) fail("PAX mtime '" + value + "' is not a time");
      e.mtime_sec = n;
      e.mtime_nsec = 0;
      if (dot != std::string_view::npos) {
        std::string frac(v.substr(dot + 1));
        if (frac.empty() || frac.find_first_not_of("0123456789") != std::string::npos)
          fail("PAX mtime '" + value + "' is not a time");
        frac.resize(9, '0');  // nanoseconds; finer digits are truncated
        e.mtime_nsec = static_cast<uint32_t>(std::stoul(frac));
      }
    } else if (key.starts_with("SCHILY.xattr.")) {
      std::string name = key.substr(13);
      if (name.empty()) fail("PAX xattr record with an empty name");
      auto it = std::find_if(e.xattrs.begin(), e.xattrs.end(),
                             [&](const erofs::Xattr& x) { return x.name == name; });
      if (it != e.xattrs.end())
        it->value = value;
      else
        e.xattrs.push_back({std::move(name), value});
    }
  }
  pax_.clear();
  if (uid > UINT32_MAX || gid > UINT32_MAX) fail(e.path + ": uid/gid out of range");
  e.uid = static_cast<uint32_t>(uid);
  e.gid = static_cast<uint32_t>(gid);
  std::sort(e.xattrs.begin(), e.xattrs.end(),
            [](const erofs::Xattr& a, const erofs::Xattr& b) { return a.name < b.name; });

  switch (type) {
    case '0':
    case '\0':
    case '7':
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
      e.type = TarEntryType::directory;
      break;
    case '6':
      e.type = TarEntryType::fifo;
      break;
    default:
      fail(e.path + ": unsupported tar entry type '" + std::string(1, type) + "'");
  }
  if (e.path.empty()) fail("entry with an empty name");
  e.size = e.type == TarEntryType::regular ? size : 0;
  entry_ = std::move(e);
  if (entry_.type != TarEntryType::regular) {
    begin_content(size, ContentKind::skip);
  } else if (entry_.external()) {
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
    return;
  }
  if (kind_ == ContentKind::skip && extension_type_ == 'V') {
    extension_type_ = 0;
    return;
  }
  if (kind_ == ContentKind::external && mode_ == TarMode::split) handler_.external_end();
  handler_.entry(entry_);
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
    std::string key(record.substr(0, eq));
    std::string value(record.substr(eq + 1));
    auto it = std::find_if(pax_.begin(), pax_.end(), [&](auto& kv) { return kv.first == key; });
    if (it != pax_.end())
      it->second = std::move(value);
    else
      pax_.emplace_back(std::move(key), std::move(value));
  }
}

}  // namespace cfs::store
