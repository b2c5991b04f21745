// Opening composefs images and the lazy, bounds-checked accessors. The whole-image walk
// (validate, to_tree, objects) lives in reader_walk.cc.
#include "cfs/erofs/reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstring>
#include <variant>
#include <vector>

#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fd.h"
#include "reader_internal.h"

namespace cfs::erofs {

using detail::as_chars;
using detail::InodeError;
using detail::load_le;

namespace detail {

// The project's one escaper for untrusted strings (cfs/escape.h).
std::string printable(std::string_view bytes) {
  return escape_for_log(bytes);
}

}  // namespace detail

namespace {

constexpr uint32_t kKnownCompat =
    kFeatureCompatSbChksum | kFeatureCompatMtime | kFeatureCompatXattrFilter;
constexpr uint32_t kKnownIncompat = kFeatureIncompatChunkedFile;
constexpr uint16_t kKnownIFormatBits = 0x0f;  // layout bit + 3 data layout bits

bool valid_file_type(uint32_t mode) {
  switch (mode & S_IFMT) {
    case S_IFREG:
    case S_IFDIR:
    case S_IFLNK:
    case S_IFCHR:
    case S_IFBLK:
    case S_IFIFO:
    case S_IFSOCK:
      return true;
    default:
      return false;
  }
}

std::string hex32(uint32_t v) {
  char buf[16];
  snprintf(buf, sizeof buf, "0x%x", v);
  return buf;
}

// The kernel's superblock checksum: CRC32C (seed ~0, no final inversion) over the rest of
// the first block from the superblock on, with the checksum field read as zero.
uint32_t superblock_crc(std::span<const std::byte> image) {
  uint32_t crc = 0xffffffff;
  for (size_t i = kSuperblockOffset; i < kBlockSize; i++) {
    bool in_field = i >= kSuperblockOffset + offsetof(Superblock, checksum) &&
                    i < kSuperblockOffset + offsetof(Superblock, checksum) + 4;
    crc ^= in_field ? 0 : std::to_integer<uint8_t>(image[i]);
    for (int bit = 0; bit < 8; bit++) crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1)));
  }
  return crc;
}

// Number of data blocks a flat inode keeps outside its inode slot.
uint64_t flat_block_count(const InodeInfo& inode) {
  if (inode.layout == DataLayout::flat_inline) return inode.size / kBlockSize;
  return inode.size / kBlockSize + (inode.size % kBlockSize != 0);
}

bool has_flat_data(const InodeInfo& inode) {
  return (inode.is_reg() || inode.is_dir() || inode.is_symlink()) &&
         inode.layout != DataLayout::chunk_based;
}

// A directory's data is a sequence of chunks: full blocks, then the inline tail.
struct DirChunk {
  std::span<const std::byte> bytes;
  uint32_t count = 0;
};

uint64_t dir_chunk_count(const InodeInfo& dir) {
  return flat_block_count(dir) + (dir.layout == DataLayout::flat_inline ? 1 : 0);
}

DirChunk load_dir_chunk(const Image& image, const InodeInfo& dir, uint64_t k) {
  DirChunk chunk;
  uint64_t blocks = flat_block_count(dir);
  if (k < blocks) {
    uint64_t len = std::min<uint64_t>(kBlockSize, dir.size - k * kBlockSize);
    // inode() checked the block range, so this never builds an error string.
    chunk.bytes =
        image.slice((uint64_t{dir.raw_u} + k) * kBlockSize, len, dir.nid, "directory block");
  } else {
    chunk.bytes =
        image.slice(dir.tail_offset, dir.size % kBlockSize, dir.nid, "inline directory tail");
  }
  auto where = [&] {
    return k < blocks ? "directory block " + std::to_string(k) : std::string("inline directory");
  };
  if (chunk.bytes.size() < sizeof(DiskDirent))
    image.fail(dir.nid,
               where() + ": " + std::to_string(chunk.bytes.size()) + " bytes cannot hold a dirent");
  uint16_t first_nameoff = load_le<uint16_t>(chunk.bytes, offsetof(DiskDirent, nameoff));
  if (first_nameoff < sizeof(DiskDirent) || first_nameoff % sizeof(DiskDirent) != 0 ||
      first_nameoff >= chunk.bytes.size())
    image.fail(dir.nid, where() + ": first nameoff " + std::to_string(first_nameoff) +
                            " is not a dirent table size below " +
                            std::to_string(chunk.bytes.size()));
  chunk.count = first_nameoff / sizeof(DiskDirent);
  return chunk;
}

DirEntry dir_chunk_entry(const Image& image, const InodeInfo& dir, uint64_t k,
                         const DirChunk& chunk, uint32_t i) {
  size_t off = size_t{i} * sizeof(DiskDirent);
  DirEntry e;
  e.nid = load_le<uint64_t>(chunk.bytes, off + offsetof(DiskDirent, nid));
  e.file_type = std::to_integer<uint8_t>(chunk.bytes[off + offsetof(DiskDirent, file_type)]);
  size_t start = load_le<uint16_t>(chunk.bytes, off + offsetof(DiskDirent, nameoff));
  size_t end;
  if (i + 1 < chunk.count) {
    end = load_le<uint16_t>(chunk.bytes, off + sizeof(DiskDirent) + offsetof(DiskDirent, nameoff));
  } else {
    // The last name runs to the first NUL (block padding) or the end of the chunk.
    end = start;
    while (end < chunk.bytes.size() && chunk.bytes[end] != std::byte{0}) end++;
  }
  if (start < size_t{chunk.count} * sizeof(DiskDirent) || end <= start || end > chunk.bytes.size())
    image.fail(dir.nid, "directory block " + std::to_string(k) + ": dirent " + std::to_string(i) +
                            " has name bytes [" + std::to_string(start) + ", " +
                            std::to_string(end) + ") outside the name area or empty");
  e.name = as_chars(chunk.bytes.subspan(start, end - start));
  return e;
}

}  // namespace

// ---- storage and opening -------------------------------------------------------------------

struct Image::Storage {
  std::variant<MappedFile, std::string> data;
  std::span<const std::byte> bytes() const {
    if (auto* m = std::get_if<MappedFile>(&data)) return m->bytes();
    const auto& s = std::get<std::string>(data);
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
  }
};

Image::Image(std::unique_ptr<Storage> storage, std::string name, const ReaderOptions& options)
    : storage_(std::move(storage)),
      bytes_(storage_->bytes()),
      name_(std::move(name)),
      options_(options) {
  parse_superblock();
}

Image::Image(Image&&) noexcept = default;
Image& Image::operator=(Image&&) noexcept = default;
Image::~Image() = default;

namespace {

// Images up to this size are read in whole when opened: every consumer walks the whole image
// first, so the pages are needed anyway; an unreadable block becomes an error naming the file
// instead of a SIGBUS, and the walk takes no page faults (costly under virtualisation). A
// larger file (real images take ~150 bytes per entry) is mapped lazily, so that a hostile
// image padded with a hole costs what its reachable metadata costs, not its apparent size.
constexpr uint64_t kReadWholeMax = uint64_t{512} << 20;

// Reads the whole file through a small buffer, so that an unreadable block is an error here,
// without keeping its pages in this process.
void check_readable(int fd, uint64_t size, const std::string& name) {
  std::vector<std::byte> buffer(size_t{1} << 20);
  for (uint64_t at = 0; at < size; at += buffer.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), size - at));
    pread_exact(fd, std::span(buffer).first(n), at, name + ": reading the file");
  }
}

MappedFile load_image(int fd, const std::string& name, const ReaderOptions& options) {
  struct stat st;
  if (::fstat(fd, &st) < 0) throw_errno(name);
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) <= kReadWholeMax) {
    if (!options.low_memory) return MappedFile::map_read(fd, name);
    check_readable(fd, static_cast<uint64_t>(st.st_size), name);
  }
  return MappedFile::map(fd, name);
}

}  // namespace

void Image::release_pages() const noexcept {
  if (!options_.low_memory || !std::holds_alternative<MappedFile>(storage_->data) || bytes_.empty())
    return;
  // A private, read-only file mapping: dropping pages loses nothing (mmap's address is page
  // aligned). Failure only means the pages stay.
  ::madvise(const_cast<std::byte*>(bytes_.data()), bytes_.size(), MADV_DONTNEED);
}

Image Image::open(const std::string& path, const ReaderOptions& options) {
  UniqueFd fd = open_file(path, O_RDONLY);
  return open_fd(fd.get(), path, options);
}

Image Image::open_fd(int fd, std::string name, const ReaderOptions& options) {
  auto storage = std::make_unique<Storage>();
  storage->data = load_image(fd, name, options);
  return Image(std::move(storage), std::move(name), options);
}

Image Image::from_bytes(std::string bytes, std::string name, const ReaderOptions& options) {
  auto storage = std::make_unique<Storage>();
  storage->data = std::move(bytes);
  return Image(std::move(storage), std::move(name), options);
}

void Image::parse_superblock() {
  auto bad = [&](const std::string& where, const std::string& rule) {
    throw Error(name_ + ": " + where + ": " + rule);
  };
  if (bytes_.size() < kBlockSize)
    bad("composefs header",
        "image is " + std::to_string(bytes_.size()) + " bytes, smaller than one 4096-byte block");
  ComposefsHeader header;
  std::memcpy(&header, bytes_.data(), sizeof header);
  if (header.magic != kComposefsMagic)
    bad("composefs header", "bad magic " + hex32(header.magic) + " (not a composefs image)");
  if (header.version != kComposefsHeaderVersion)
    bad("composefs header", "unsupported header version " + std::to_string(header.version));
  if (header.composefs_version > kComposefsVersionV2)
    bad("composefs header",
        "unsupported composefs format version " + std::to_string(header.composefs_version));
  if (header.flags & ~kComposefsFlagHasAcl)
    bad("composefs header", "unknown flags " + hex32(header.flags));
  format_version_ = header.composefs_version;
  // V2 writers never set the flag: whether the image holds ACLs is unknown, so keep them.
  has_acl_ = (header.flags & kComposefsFlagHasAcl) || format_version_ == kComposefsVersionV2;

  Superblock sb;
  std::memcpy(&sb, bytes_.data() + kSuperblockOffset, sizeof sb);
  const std::string where = "superblock";
  if (sb.magic != kErofsMagic) bad(where, "bad EROFS magic " + hex32(sb.magic));
  if (sb.blkszbits != kBlockSizeBits)
    bad(where, "block size bits " + std::to_string(sb.blkszbits) + ", expected 12");
  if (sb.feature_compat & ~kKnownCompat)
    bad(where, "unsupported compat features " + hex32(sb.feature_compat & ~kKnownCompat));
  if ((sb.feature_compat & kFeatureCompatSbChksum) && superblock_crc(bytes_) != sb.checksum)
    bad(where, "checksum " + hex32(sb.checksum) + " does not match the superblock (" +
                   hex32(superblock_crc(bytes_)) + ")");
  if (sb.feature_incompat & ~kKnownIncompat)
    bad(where, "unsupported incompat features " + hex32(sb.feature_incompat & ~kKnownIncompat));
  if (sb.sb_extslots != 0) bad(where, "superblock extension slots are not supported");
  if (sb.meta_blkaddr != 0)
    bad(where, "meta_blkaddr " + std::to_string(sb.meta_blkaddr) + ", expected 0");
  if (sb.extra_devices != 0) bad(where, "extra devices are not supported");
  if (sb.xattr_prefix_count != 0) bad(where, "long xattr name prefixes are not supported");
  if (sb.packed_nid != 0) bad(where, "a packed inode is not supported");
  if (sb.dirblkbits != 0) bad(where, "directory block size bits must be 0");
  uint64_t image_blocks = bytes_.size() / kBlockSize;
  if (sb.blocks == 0 || sb.blocks > image_blocks)
    bad(where, "block count " + std::to_string(sb.blocks) + " does not fit the " +
                   std::to_string(bytes_.size()) + "-byte image");
  // V2 shared xattr ids are absolute (offset / 4): the table has no base block.
  if (format_version_ == kComposefsVersionV2 && sb.xattr_blkaddr != 0)
    bad(where, "xattr_blkaddr " + std::to_string(sb.xattr_blkaddr) +
                   " in a format V2 image, expected 0 (absolute shared xattr ids)");
  blocks_ = sb.blocks;
  if (uint64_t{sb.xattr_blkaddr} >= image_blocks)
    bad(where, "xattr_blkaddr " + std::to_string(sb.xattr_blkaddr) + " beyond the image");
  xattr_base_ = uint64_t{sb.xattr_blkaddr} * kBlockSize;
  root_nid_ = sb.root_nid;
  inode_count_ = sb.inos;
  build_time_sec_ = static_cast<int64_t>(sb.build_time);
  build_time_nsec_ = sb.build_time_nsec;
  xattr_filter_ = (sb.feature_compat & kFeatureCompatXattrFilter) && sb.xattr_filter_reserved == 0;

  InodeInfo root_inode;
  try {
    root_inode = inode(root_nid_);
  } catch (const InodeError& e) {
    bad("/", e.rule() + " (inode " + std::to_string(e.nid()) + ")");
  }
  if (!root_inode.is_dir())
    bad(where, "root inode " + std::to_string(root_nid_) + " is not a directory");
}

// ---- errors and raw access -----------------------------------------------------------------

void Image::fail(uint64_t nid, const std::string& rule) const {
  throw InodeError(name_ + ": inode " + std::to_string(nid) + ": " + rule, nid, rule);
}

void Image::fail_beyond_end(uint64_t offset, uint64_t len, uint64_t nid,
                            std::string_view what) const {
  fail(nid, std::string(what) + " at offset " + std::to_string(offset) + " (+" +
                std::to_string(len) + ") is beyond the end of the image (" +
                std::to_string(bytes_.size()) + " bytes)");
}

// ---- inodes --------------------------------------------------------------------------------

namespace {

// An inode's fields that compact and extended inodes both have (in their own widths).
template <typename RawInode>
InodeInfo common_fields(uint64_t nid, const RawInode& raw, DataLayout layout) {
  return {.nid = nid,
          .mode = raw.i_mode,
          .nlink = raw.i_nlink,
          .uid = raw.i_uid,
          .gid = raw.i_gid,
          .size = raw.i_size,
          .ino = raw.i_ino,
          .extended = std::is_same_v<RawInode, InodeExtended>,
          .layout = layout,
          .raw_u = raw.i_u,
          .xattr_icount = raw.i_xattr_icount};
}

}  // namespace

InodeInfo Image::inode(uint64_t nid) const {
  if (nid >= bytes_.size() / kInodeSlotSize) fail(nid, "inode number beyond the end of the image");
  uint64_t off = nid * kInodeSlotSize;
  auto head = slice(off, sizeof(InodeCompact), nid, "inode");
  uint16_t i_format = load_le<uint16_t>(head, 0);
  if (i_format & ~kKnownIFormatBits) fail(nid, "unsupported i_format " + hex32(i_format));
  const bool extended = (i_format & kInodeLayoutExtended) != 0;
  uint16_t layout = (i_format >> kDataLayoutBit) & kDataLayoutMask;
  if (layout != static_cast<uint16_t>(DataLayout::flat_plain) &&
      layout != static_cast<uint16_t>(DataLayout::flat_inline) &&
      layout != static_cast<uint16_t>(DataLayout::chunk_based))
    fail(nid, "unsupported data layout " + std::to_string(layout) + " (compressed or unknown)");
  const auto data_layout = static_cast<DataLayout>(layout);

  InodeInfo info;
  size_t isize;
  if (extended) {
    auto raw = slice(off, sizeof(InodeExtended), nid, "extended inode");
    InodeExtended e;
    std::memcpy(&e, raw.data(), sizeof e);
    info = common_fields(nid, e, data_layout);
    info.mtime_sec = static_cast<int64_t>(e.i_mtime);  // two's complement before 1970
    info.mtime_nsec = e.i_mtime_nsec;
    isize = sizeof(InodeExtended);
  } else {
    InodeCompact c;
    std::memcpy(&c, head.data(), sizeof c);
    info = common_fields(nid, c, data_layout);
    info.mtime_sec = build_time_sec_;
    info.mtime_nsec = build_time_nsec_;
    isize = sizeof(InodeCompact);
  }
  if (!valid_file_type(info.mode)) fail(nid, "invalid file type in mode " + hex32(info.mode));
  if (info.type() == S_IFCHR || info.type() == S_IFBLK) info.rdev = info.raw_u;

  info.xattr_offset = off + isize;
  info.xattr_size = static_cast<uint32_t>(xattr_ibody_size(info.xattr_icount));
  slice(info.xattr_offset, info.xattr_size, nid, "xattr body");
  info.tail_offset = info.xattr_offset + info.xattr_size;

  switch (info.layout) {
    case DataLayout::flat_inline:
      if (info.size % kBlockSize == 0)
        fail(nid, "inline data layout with an empty tail (size " + std::to_string(info.size) + ")");
      slice(info.tail_offset, info.size % kBlockSize, nid, "inline data");
      break;
    case DataLayout::chunk_based:
      if (!info.is_reg()) fail(nid, "chunk-based data layout on a non-regular file");
      if ((info.raw_u & 0xffff) & ~kChunkFormatBlkbitsMask)
        fail(nid, "unsupported chunk format " + hex32(info.raw_u & 0xffff));
      break;
    default:
      break;
  }
  if (has_flat_data(info)) {
    uint64_t blocks = flat_block_count(info);
    uint64_t image_blocks = bytes_.size() / kBlockSize;
    if (blocks > 0 && (info.raw_u >= image_blocks || blocks > image_blocks - info.raw_u))
      fail(nid, "data blocks " + std::to_string(info.raw_u) + "+" + std::to_string(blocks) +
                    " beyond the end of the image (" + std::to_string(image_blocks) + " blocks)");
  }
  return info;
}

// ---- xattrs --------------------------------------------------------------------------------

std::string_view XattrView::prefix() const noexcept {
  switch (name_index) {
    case kXattrIndexUser:
      return "user.";
    case kXattrIndexPosixAclAccess:
      return "system.posix_acl_access";
    case kXattrIndexPosixAclDefault:
      return "system.posix_acl_default";
    case kXattrIndexTrusted:
      return "trusted.";
    case kXattrIndexLustre:
      return "lustre.";
    case kXattrIndexSecurity:
      return "security.";
    default:
      return "";
  }
}

std::string XattrView::name() const {
  std::string out(prefix());
  out += suffix;
  return out;
}

bool XattrView::name_is(std::string_view full_name) const noexcept {
  std::string_view p = prefix();
  return full_name.size() == p.size() + suffix.size() && full_name.starts_with(p) &&
         full_name.substr(p.size()) == suffix;
}

XattrCursor::XattrCursor(const Image& image, const InodeInfo& inode)
    : image_(&image), nid_(inode.nid) {
  if (inode.xattr_size == 0) return;
  auto header = image.slice(inode.xattr_offset, sizeof(XattrIbodyHeader), nid_, "xattr header");
  shared_count_ = std::to_integer<uint8_t>(header[offsetof(XattrIbodyHeader, h_shared_count)]);
  shared_ids_ = inode.xattr_offset + sizeof(XattrIbodyHeader);
  pos_ = shared_ids_ + 4 * uint64_t{shared_count_};
  end_ = inode.xattr_offset + inode.xattr_size;
  if (pos_ > end_)
    image.fail(nid_, "xattr body of " + std::to_string(inode.xattr_size) + " bytes cannot hold " +
                         std::to_string(shared_count_) + " shared xattr ids");
}

namespace {
// C's writer has no "lustre." prefix; composefs-rs uses it in V2 images.
bool valid_xattr_index(uint8_t index, uint32_t format_version) {
  return index <= kXattrIndexTrusted || index == kXattrIndexSecurity ||
         (index == kXattrIndexLustre && format_version == kComposefsVersionV2);
}
}  // namespace

bool XattrCursor::next(XattrView& x) {
  const Image& img = *image_;
  if (pos_ < end_) {
    if (end_ - pos_ < sizeof(XattrEntry)) img.fail(nid_, "truncated inline xattr entry");
    auto head = img.slice(pos_, sizeof(XattrEntry), nid_, "inline xattr entry");
    uint8_t name_len = std::to_integer<uint8_t>(head[0]);
    x.name_index = std::to_integer<uint8_t>(head[1]);
    uint16_t value_size = load_le<uint16_t>(head, 2);
    uint64_t total = sizeof(XattrEntry) + uint64_t{name_len} + value_size;
    uint64_t padded = (total + 3) & ~uint64_t{3};
    if (padded > end_ - pos_)
      img.fail(nid_,
               "inline xattr entry of " + std::to_string(total) + " bytes overruns the xattr body");
    auto body = img.slice(pos_ + sizeof(XattrEntry), uint64_t{name_len} + value_size, nid_,
                          "inline xattr entry");
    x.suffix = as_chars(body.first(name_len));
    x.value = as_chars(body.subspan(name_len));
    x.shared = false;
    pos_ += padded;
  } else if (shared_next_ < shared_count_) {
    uint32_t id = load_le<uint32_t>(
        img.slice(shared_ids_ + 4 * uint64_t{shared_next_}, 4, nid_, "shared xattr id"), 0);
    uint64_t off = img.xattr_base_ + uint64_t{id} * 4;
    uint64_t size = img.bytes_.size();
    auto out_of_bounds = [&] {
      img.fail(nid_, "shared xattr id " + std::to_string(id) + " at offset " + std::to_string(off) +
                         " is beyond the end of the image (" + std::to_string(size) + " bytes)");
    };
    if (off > size || size - off < sizeof(XattrEntry)) out_of_bounds();
    auto head = img.bytes_.subspan(off, sizeof(XattrEntry));
    uint8_t name_len = std::to_integer<uint8_t>(head[0]);
    x.name_index = std::to_integer<uint8_t>(head[1]);
    uint16_t value_size = load_le<uint16_t>(head, 2);
    if (size - off - sizeof(XattrEntry) < uint64_t{name_len} + value_size) out_of_bounds();
    auto body = img.bytes_.subspan(off + sizeof(XattrEntry), name_len + size_t{value_size});
    x.suffix = as_chars(body.first(name_len));
    x.value = as_chars(body.subspan(name_len));
    x.shared = true;
    x.shared_id = id;
    shared_next_++;
  } else {
    return false;
  }
  if (!valid_xattr_index(x.name_index, img.format_version_))
    img.fail(nid_, "unknown xattr name index " + std::to_string(x.name_index));
  if (x.name_index == kXattrIndexNone && x.suffix.empty()) img.fail(nid_, "empty xattr name");
  return true;
}

std::optional<std::string_view> Image::find_xattr(const InodeInfo& inode,
                                                  std::string_view name) const {
  XattrCursor cursor = xattrs(inode);
  XattrView x;
  while (cursor.next(x))
    if (x.name_is(name)) return x.value;
  return std::nullopt;
}

// ---- directories ---------------------------------------------------------------------------

DirCursor::DirCursor(const Image& image, const InodeInfo& dir)
    : image_(&image), dir_(dir), chunk_count_(dir_chunk_count(dir)) {}

bool DirCursor::load_chunk() {
  while (index_ >= count_) {
    if (chunk_ >= chunk_count_) return false;
    DirChunk c = load_dir_chunk(*image_, dir_, chunk_);
    bytes_ = c.bytes;
    count_ = c.count;
    index_ = 0;
    chunk_++;
  }
  return true;
}

bool DirCursor::next(DirEntry& entry) {
  if (!load_chunk()) return false;
  entry = dir_chunk_entry(*image_, dir_, chunk_ - 1, DirChunk{bytes_, count_}, index_);
  index_++;
  position_++;
  return true;
}

DirCursor Image::dirents(const InodeInfo& dir, uint64_t start) const {
  if (!dir.is_dir()) fail(dir.nid, "not a directory");
  DirCursor cursor(*this, dir);
  while (start > 0 && cursor.load_chunk()) {
    uint64_t step = std::min<uint64_t>(start, cursor.count_ - cursor.index_);
    cursor.index_ += static_cast<uint32_t>(step);
    cursor.position_ += step;
    start -= step;
  }
  return cursor;
}

std::optional<DirEntry> Image::lookup(const InodeInfo& dir, std::string_view name) const {
  if (!dir.is_dir()) fail(dir.nid, "not a directory");
  uint64_t chunks = dir_chunk_count(dir);
  if (chunks == 0) return std::nullopt;
  // Find the last chunk whose first name is <= name.
  uint64_t lo = 0, hi = chunks;  // answer in [lo, hi)
  while (hi - lo > 1) {
    uint64_t mid = lo + (hi - lo) / 2;
    DirChunk c = load_dir_chunk(*this, dir, mid);
    DirEntry first = dir_chunk_entry(*this, dir, mid, c, 0);
    if (first.name <= name)
      lo = mid;
    else
      hi = mid;
  }
  DirChunk c = load_dir_chunk(*this, dir, lo);
  uint32_t a = 0, b = c.count;
  while (a < b) {
    uint32_t mid = a + (b - a) / 2;
    DirEntry e = dir_chunk_entry(*this, dir, lo, c, mid);
    int cmp = e.name.compare(name);
    if (cmp == 0) return e;
    if (cmp < 0)
      a = mid + 1;
    else
      b = mid;
  }
  return std::nullopt;
}

// ---- data ----------------------------------------------------------------------------------

std::span<const std::byte> Image::data_at(const InodeInfo& inode, uint64_t offset,
                                          size_t max_len) const {
  if (!has_flat_data(inode)) fail(inode.nid, "no data stored in the image for this inode");
  if (offset >= inode.size || max_len == 0) return {};
  uint64_t block_bytes =
      inode.layout == DataLayout::flat_inline ? flat_block_count(inode) * kBlockSize : inode.size;
  if (offset < block_bytes) {
    uint64_t len = std::min<uint64_t>(max_len, block_bytes - offset);
    return slice(uint64_t{inode.raw_u} * kBlockSize + offset, len, inode.nid, "data block");
  }
  uint64_t tail_pos = offset - block_bytes;
  uint64_t len = std::min<uint64_t>(max_len, inode.size - offset);
  return slice(inode.tail_offset + tail_pos, len, inode.nid, "inline data");
}

size_t Image::read(const InodeInfo& inode, uint64_t offset, std::span<std::byte> out) const {
  size_t done = 0;
  while (done < out.size()) {
    auto piece = data_at(inode, offset + done, out.size() - done);
    if (piece.empty()) break;
    std::memcpy(out.data() + done, piece.data(), piece.size());
    done += piece.size();
  }
  return done;
}

std::string_view Image::symlink_target(const InodeInfo& link) const {
  if (!link.is_symlink()) fail(link.nid, "not a symlink");
  if (link.size == 0) fail(link.nid, "empty symlink target");
  if (link.size > kBlockSize)
    fail(link.nid,
         "symlink target of " + std::to_string(link.size) + " bytes is longer than a block");
  auto data = data_at(link, 0, link.size);
  // Inline targets are never split between a block and the tail (size < block size), and
  // block targets occupy a single block, so one piece is the whole target.
  if (data.size() != link.size) fail(link.nid, "symlink target is not stored contiguously");
  return as_chars(data);
}

std::optional<std::string_view> Image::redirect(const InodeInfo& inode) const {
  return find_xattr(inode, detail::kRedirectXattr);
}

std::optional<Digest> Image::metacopy_digest(const InodeInfo& inode) const {
  auto value = find_xattr(inode, detail::kMetacopyXattr);
  if (!value) return std::nullopt;
  return detail::metacopy_from_value(*this, inode.nid, *value);
}

std::optional<Digest> detail::metacopy_from_value(const Image& image, uint64_t nid,
                                                  std::string_view value) {
  composefs::Metacopy metacopy = composefs::parse_metacopy(value);
  if (!metacopy.error.empty()) image.fail(nid, metacopy.error);
  return metacopy.digest;
}

}  // namespace cfs::erofs
