// Header blocks: end of archive, extension headers ('x', 'g', 'L', 'K', 'V') and the
// header of a filesystem entry, decoded in the order its fields override each other (the
// header, then GNU long names, then PAX records).
#include <algorithm>
#include <optional>
#include <utility>

#include "cfs/erofs/format.h"
#include "cfs/oci/tar.h"
#include "tar_fields.h"
#include "tar_format.h"
#include "tar_raw_entry.h"

namespace cfs::oci {

namespace {

// A GNU long name or link holds a path and its NUL.
constexpr uint64_t kLongNameMax = erofs::kPathMax + 1;

// The entry types of the typeflags other than the regular-file ones (whose type depends on
// the name).
constexpr std::pair<char, TarEntryType> kSpecialEntryTypes[] = {
    {'1', TarEntryType::hardlink},
    {'2', TarEntryType::symlink},
    {'3', TarEntryType::chardev},
    {'4', TarEntryType::blockdev},
    {'5', TarEntryType::directory},
    {'D', TarEntryType::directory},  // GNU dumpdir: a directory listing its names (skipped)
    {'6', TarEntryType::fifo},
};

std::optional<TarEntryType> special_entry_type(char type) {
  for (const auto& [flag, entry_type] : kSpecialEntryTypes)
    if (flag == type) return entry_type;
  return std::nullopt;
}

}  // namespace

void TarParser::on_header() {
  if (std::all_of(block_, block_ + kTarBlockSize, [](std::byte c) { return c == std::byte{0}; })) {
    end_of_archive();
    return;
  }
  auto h = tar_struct<TarHeader>(block_);
  tar::Failer failer = [this](const std::string& m) { fail(m); };
  if (!tar::checksum_ok(h, failer)) fail("header checksum mismatch (not a tar stream, or corrupt)");
  uint64_t size = tar::parse_number(h.size, "size", failer);
  if (begin_extension(h.typeflag, size)) return;
  RawEntry raw = decode_header(h, size);
  apply_pax(raw);
  start_entry(std::move(raw));
}

void TarParser::end_of_archive() {
  if (long_name_ || long_link_ || pax_.any) fail("end of archive right after an extension header");
  state_ = State::trailer;
  ended_ = true;
}

// Starts the content of an extension header; false for the header of an entry.
bool TarParser::begin_extension(char type, uint64_t size) {
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
      return true;
    case 'L':
    case 'K':
      if (size > kLongNameMax)
        fail(std::string("extension header of ") + std::to_string(size) + " bytes: GNU long " +
             (type == 'L' ? "name" : "link") + " over " + std::to_string(erofs::kPathMax) +
             " bytes");
      extension_type_ = type;
      extension_.clear();
      begin_content(size, ContentKind::extension);
      return true;
    case 'M':
    case 'N':
      fail(std::string("GNU multi-volume entry type '") + type + "' is not supported");
    case 'V':
      extension_type_ = 'V';
      begin_content(size, ContentKind::skip);  // GNU volume label: no filesystem entry
      return true;
    default:
      return false;
  }
}

TarParser::RawEntry TarParser::decode_header(const TarHeader& h, uint64_t size) {
  tar::Failer failer = [this](const std::string& m) { fail(m); };
  tar::Format format = tar::header_format(h);
  RawEntry raw;
  raw.type = h.typeflag;
  raw.size = size;
  TarEntry& e = raw.entry;
  e.header_offset = offset_ - kTarBlockSize;
  e.path = long_name_ ? std::move(*long_name_) : tar::header_path(h, format);
  e.link = long_link_ ? std::move(*long_link_) : std::string(tar::text(h.linkname));
  long_name_.reset();
  long_link_.reset();
  e.mode = static_cast<uint32_t>(tar::parse_number(h.mode, "mode", failer) & 07777);
  raw.uid = tar::parse_number(h.uid, "uid", failer);
  raw.gid = tar::parse_number(h.gid, "gid", failer);
  e.mtime_sec = tar::parse_time_field(std::string_view(h.mtime, sizeof h.mtime), failer);
  if (format != tar::Format::v7) {
    raw.dev_major = tar::parse_number(h.devmajor, "devmajor", failer);
    raw.dev_minor = tar::parse_number(h.devminor, "devminor", failer);
  }
  read_gnu_sparse_header(h, raw);
  return raw;
}

// The entry the header and its extensions describe; starts reading its content.
void TarParser::start_entry(RawEntry raw) {
  TarEntry& e = raw.entry;
  if (raw.uid > UINT32_MAX || raw.gid > UINT32_MAX) fail(e.path + ": uid/gid out of range");
  e.uid = static_cast<uint32_t>(raw.uid);
  e.gid = static_cast<uint32_t>(raw.gid);
  if (raw.dev_major > UINT32_MAX || raw.dev_minor > UINT32_MAX)
    fail(e.path + ": device number out of range");
  e.dev_major = static_cast<uint32_t>(raw.dev_major);
  e.dev_minor = static_cast<uint32_t>(raw.dev_minor);

  if (raw.type == '0' || raw.type == '\0' || raw.type == '7') {
    // v7 and early ustar writers mark directories only by the trailing slash.
    bool slash = !raw.sparse && e.path.size() > 1 && e.path.back() == '/';
    e.type = slash ? TarEntryType::directory : TarEntryType::regular;
  } else if (raw.type == 'S') {
    e.type = TarEntryType::regular;
  } else if (auto type = special_entry_type(raw.type)) {
    e.type = *type;
  } else {
    fail(e.path + ": unsupported tar entry type '" + std::string(1, raw.type) + "'");
  }
  if (e.path.empty()) fail("entry with an empty name");
  check_path(e.path, "entry name");
  if (e.type == TarEntryType::hardlink || e.type == TarEntryType::symlink)
    check_path(e.link, (e.path + ": link target").c_str());
  e.sparse = raw.sparse && e.type == TarEntryType::regular;
  e.size = e.type != TarEntryType::regular ? 0 : e.sparse ? raw.realsize : raw.size;
  entry_ = std::move(e);
  sparse_data_size_ = raw.size;
  if (sparse_extension_) {
    // The content starts after the extension blocks.
    state_ = State::header;
    return;
  }
  begin_entry_content(raw.size);
}

}  // namespace cfs::oci
