// The strict whole-image walk behind Image::validate(), to_tree() and objects().
//
// Directories are visited breadth-first from an explicit queue (no recursion), every
// inode is checked once, on its first reference. The per-slot and per-block bookkeeping is
// kept in pages allocated only where reachable inodes and blocks lie, so memory follows the
// metadata actually reached, not the image's apparent size (a small image extended to
// 64 GiB with a hole costs no more than the small image).
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <unordered_map>

#include "cfs/erofs/reader.h"
#include "cfs/error.h"
#include "reader_internal.h"

namespace cfs::erofs {

using detail::InodeError;
using detail::printable;

namespace {

constexpr uint64_t kFirstInodeOffset = kSuperblockOffset + sizeof(Superblock);
constexpr uint64_t kSlotsPerBlock = kBlockSize / kInodeSlotSize;

// What check_xattrs remembers of a checked xattr name (one byte per shared xattr id).
constexpr uint8_t kNameChecked = 0x80;
constexpr uint8_t kFilterBitMask = 0x1f;  // its bit in the inode's xattr name filter
// Unescaped "trusted.overlay.*" names (".overlay.overlay.*" are escaped user data):
constexpr uint8_t kOverlayMask = 0x60;
constexpr uint8_t kOverlayRedirect = 0x20;
constexpr uint8_t kOverlayMetacopy = 0x40;
constexpr uint8_t kOverlayOther = 0x60;
static_assert(kXattrFilterBits - 1 == kFilterBitMask);

using composefs::is_lower_hex;

// For a dirent name: one pass eight bytes at a time (most names are short, so two memchr
// calls or a byte loop cost more), with the classic "has a zero byte" word test applied to
// the word and to the word xor '/'.
bool has_slash_or_nul(std::string_view name) {
  constexpr uint64_t kOnes = 0x0101010101010101ULL;
  constexpr uint64_t kHighs = 0x8080808080808080ULL;
  auto has_zero_byte = [](uint64_t w) { return ((w - kOnes) & ~w & kHighs) != 0; };
  size_t i = 0;
  for (; i + 8 <= name.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, name.data() + i, sizeof w);
    if (has_zero_byte(w) || has_zero_byte(w ^ (kOnes * '/'))) return true;
  }
  for (; i < name.size(); i++)
    if (name[i] == '/' || name[i] == '\0') return true;
  return false;
}

// Per-index values (0 when never set) in 512-entry pages allocated on first write.
template <typename T>
class SparseArray {
 public:
  T get(uint64_t i) const {
    uint64_t key = i >> kPageBits;
    if (last_page_ && key == last_key_) return last_page_[i & kMask];
    if (absent_known_ && key == absent_key_) return T{};
    auto it = pages_.find(key);
    if (it == pages_.end()) {
      absent_known_ = true;
      absent_key_ = key;
      return T{};
    }
    last_key_ = key;
    // The cache is shared with at(): the pages belong to this object either way.
    last_page_ = const_cast<T*>(it->second.data());
    return last_page_[i & kMask];
  }
  T& at(uint64_t i) {
    // Inodes and blocks are mostly visited in layout order: the last page is usually the one.
    uint64_t key = i >> kPageBits;
    if (!last_page_ || key != last_key_) {
      if (absent_known_ && key == absent_key_) absent_known_ = false;
      std::vector<T>& page = pages_[key];
      if (page.empty()) page.resize(size_t{1} << kPageBits);
      last_key_ = key;
      last_page_ = page.data();  // stable: map nodes never move, pages never resize again
    }
    return last_page_[i & kMask];
  }

 private:
  static constexpr unsigned kPageBits = 9;  // an isolated reachable inode costs ~2.5 KB
  static constexpr uint64_t kMask = (uint64_t{1} << kPageBits) - 1;
  std::unordered_map<uint64_t, std::vector<T>> pages_;
  // Lookup caches (get() is logically const): the page used last, and a page known absent.
  mutable uint64_t last_key_ = 0;
  mutable T* last_page_ = nullptr;
  mutable uint64_t absent_key_ = 0;
  mutable bool absent_known_ = false;
};

// One bit per index, in 4096-bit pages allocated on first set: 1 bit per 32-byte inode slot
// or block keeps the walk's bookkeeping to a few pages even for large images (each new page
// of memory costs a page fault, which dominates under virtualisation).
class SparseBitmap {
 public:
  bool test(uint64_t i) const {
    const uint64_t* page = find(i >> kPageBits);
    return page && ((page[(i & kMask) >> 6] >> (i & 63)) & 1);
  }
  // Sets bit i and returns its previous value.
  bool test_and_set(uint64_t i) {
    uint64_t& word = page_for(i >> kPageBits)[(i & kMask) >> 6];
    const uint64_t bit = uint64_t{1} << (i & 63);
    const bool was = word & bit;
    word |= bit;
    return was;
  }
  // Sets the bits [first, first + count), which must lie within one page; returns whether
  // any of them was set before.
  bool test_and_set_in_page(uint64_t first, uint64_t count) {
    uint64_t* page = page_for(first >> kPageBits);
    bool was = false;
    for (uint64_t i = first & kMask, end = i + count; i < end;) {
      uint64_t n = std::min<uint64_t>(64 - (i & 63), end - i);
      uint64_t bits = (n < 64 ? (uint64_t{1} << n) - 1 : ~uint64_t{0}) << (i & 63);
      was |= (page[i >> 6] & bits) != 0;
      page[i >> 6] |= bits;
      i += n;
    }
    return was;
  }
  // Whether any bit in [first, first + count) is set; the range must lie within one page.
  bool any_in_page(uint64_t first, uint64_t count) const {
    const uint64_t* page = find(first >> kPageBits);
    if (!page) return false;
    for (uint64_t i = first & kMask, end = i + count; i < end;) {
      uint64_t word = page[i >> 6] >> (i & 63);
      uint64_t n = std::min<uint64_t>(64 - (i & 63), end - i);
      if (n < 64) word &= (uint64_t{1} << n) - 1;
      if (word) return true;
      i += n;
    }
    return false;
  }
  static constexpr unsigned kPageBits = 12;

 private:
  static constexpr uint64_t kMask = (uint64_t{1} << kPageBits) - 1;
  static constexpr size_t kWords = (size_t{1} << kPageBits) / 64;

  const uint64_t* find(uint64_t key) const {
    if (last_page_ && key == last_key_) return last_page_;
    auto it = pages_.find(key);
    if (it == pages_.end()) return nullptr;
    last_key_ = key;
    last_page_ = it->second.get();
    return last_page_;
  }
  uint64_t* page_for(uint64_t key) {
    if (last_page_ && key == last_key_) return last_page_;
    auto& page = pages_[key];
    if (!page) page = std::make_unique<uint64_t[]>(kWords);  // zeroed
    last_key_ = key;
    last_page_ = page.get();
    return last_page_;
  }

  std::unordered_map<uint64_t, std::unique_ptr<uint64_t[]>> pages_;
  mutable uint64_t last_key_ = 0;
  mutable uint64_t* last_page_ = nullptr;
};

// claim_blocks checks a block's slots with one any_in_page().
static_assert((uint64_t{1} << SparseBitmap::kPageBits) % kSlotsPerBlock == 0);

// The 256 "00".."ff" whiteouts the writer puts in the root to hide the object directories
// of a non-data-only lower layer.
bool is_root_stub(const Image& image, std::string_view name, const InodeInfo& inode) {
  return composefs::has_whiteout_stubs(image.format_version()) &&
         composefs::is_whiteout_stub(name, inode.mode, inode.rdev);
}

// "/ab/" + 62 (sha256) or 126 (sha512) lowercase hex digits.
bool is_object_redirect(std::string_view v) {
  if (v.size() != 4 + 62 && v.size() != 4 + 126) return false;
  if (v[0] != '/' || v[3] != '/') return false;
  for (size_t i = 1; i < v.size(); i++)
    if (i != 3 && !is_lower_hex(v[i])) return false;
  return true;
}

// "/" + a relative path whose components are all real names.
bool is_safe_relative_redirect(std::string_view v) {
  if (v.size() < 2 || v[0] != '/' || v.size() > kPathMax) return false;
  std::string_view rest = v.substr(1);
  while (true) {
    size_t slash = rest.find('/');
    std::string_view comp = rest.substr(0, slash);
    if (comp.empty() || comp == "." || comp == ".." || comp.find('\0') != comp.npos) return false;
    if (slash == rest.npos) return true;
    rest = rest.substr(slash + 1);
  }
}

// Full-name comparison of two stored xattrs (prefix + suffix) without building the names;
// memcmp over the overlapping pieces keeps hostile 255-byte names cheap.
int compare_names(const XattrView& a, const XattrView& b) {
  std::string_view ra = a.prefix(), rb = b.prefix();
  bool a_in_suffix = false, b_in_suffix = false;
  while (true) {
    if (ra.empty() && !a_in_suffix) {
      ra = a.suffix;
      a_in_suffix = true;
      continue;
    }
    if (rb.empty() && !b_in_suffix) {
      rb = b.suffix;
      b_in_suffix = true;
      continue;
    }
    if (ra.empty() || rb.empty()) return ra.empty() ? (rb.empty() ? 0 : -1) : 1;
    size_t n = std::min(ra.size(), rb.size());
    if (int c = std::memcmp(ra.data(), rb.data(), n)) return c < 0 ? -1 : 1;
    ra.remove_prefix(n);
    rb.remove_prefix(n);
  }
}

// Names of equal length: the same name index makes it a suffix comparison.
bool same_name(const XattrView& a, const XattrView& b) {
  if (a.name_index == b.name_index) return a.suffix == b.suffix;
  return compare_names(a, b) == 0;
}

}  // namespace

// Declared a friend of Image so it can reach the superblock fields it checks.
class ImageWalker {
 public:
  struct Visitor {
    virtual ~Visitor() = default;
    virtual void begin_dir(uint32_t /*dir_index*/, const InodeInfo& /*dir*/) {}
    // One named entry other than "." and "..", in on-disk order. first: the first
    // reference to this inode; child_dir_index: the queue index when child is a directory.
    virtual void entry(uint32_t /*dir_index*/, std::string_view /*name*/,
                       const InodeInfo& /*child*/, bool /*first*/, uint32_t /*child_dir_index*/) {}
    virtual void end_dir(uint32_t /*dir_index*/, const InodeInfo& /*dir*/) {}
  };

  ImageWalker(const Image& image, Visitor* visitor)
      : image_(image), visitor_(visitor), slot_count_(image.bytes().size() / kInodeSlotSize) {
    // The composefs header and the superblock occupy the first slots.
    for (uint64_t s = 0; s < kFirstInodeOffset / kInodeSlotSize && s < slot_count_; s++)
      slot_used_.test_and_set(s);
  }

  void walk();
  // How many entries per-inode vectors should reserve: the superblock's inode count, bounded
  // by what the image can hold and by a sane maximum (it is untrusted). Reserving only takes
  // address space; without it, growing copies the vectors and touches twice the memory.
  size_t expected_inodes() const {
    constexpr uint64_t kMaxReserve = uint64_t{1} << 22;
    return static_cast<size_t>(std::min({image_.inode_count(), slot_count_, kMaxReserve}));
  }
  // The trusted.overlay.redirect of the inode checked last: visitors see each inode right after
  // its check, so they need not look it up again.
  const std::optional<std::string_view>& checked_redirect() const { return checked_redirect_; }

 private:
  struct DirRecord {
    uint64_t nid;
    uint64_t parent_nid;
    uint32_t parent_index;
    uint32_t depth;
    std::string_view name;
  };

  std::string dir_path(uint32_t index) const;
  std::string entry_path(uint32_t dir_index, std::string_view name) const;
  [[noreturn]] void fail(const std::string& path, const std::string& rule) const {
    throw Error(image_.name() + ": " + path + ": " + rule);
  }
  void process_dir(uint32_t index);
  void check_inode(const InodeInfo& info, uint32_t dir_index, std::string_view name);
  void check_xattrs(const InodeInfo& info, uint32_t dir_index);
  uint8_t classify_xattr_name(const InodeInfo& info, const XattrView& x, size_t full_len) const;
  struct NamedXattr {
    XattrView view;
    uint32_t name_len;  // prefix + suffix
  };
  void check_unique_names(const InodeInfo& info, std::vector<NamedXattr>& list) const;
  void claim_slots(const InodeInfo& info, uint64_t end);
  void claim_blocks(const InodeInfo& info, uint64_t first, uint64_t count);
  void check_chunk_map(const InodeInfo& info, uint64_t& inline_len);
  void check_link_counts();
  std::string find_path_of(uint64_t nid) const;

  const Image& image_;
  Visitor* visitor_;
  uint64_t slot_count_;  // 32-byte slots in the image
  // Per inode slot: referenced by a dirent (or the superblock, for the root).
  SparseBitmap seen_;
  // Dirent references of the non-directories whose count may disagree with their nlink:
  // those with nlink other than 1, and any referenced twice. Every other file is a single
  // reference to an inode saying nlink 1 (most of a real image), already consistent.
  std::unordered_map<uint64_t, uint32_t> link_refs_;
  SparseBitmap slot_used_;
  SparseBitmap block_used_;
  std::vector<DirRecord> dirs_;
  std::vector<NamedXattr> xattr_scratch_;
  // Per shared xattr id: 0 until its name was checked, then kNameChecked | flags | filter bit.
  SparseArray<uint8_t> shared_checked_;
  // The same for the last few inline xattr names: every external file repeats
  // trusted.overlay.metacopy and .redirect with values of its own.
  class RecentNames {
   public:
    uint8_t find(const XattrView& x) const {
      for (const Entry& e : entries_)
        if (e.known && e.name_index == x.name_index && e.suffix == x.suffix) return e.known;
      return 0;
    }
    void add(const XattrView& x, uint8_t known) {
      entries_[next_] = {x.suffix, x.name_index, known};
      next_ = (next_ + 1) % entries_.size();
    }

   private:
    struct Entry {
      std::string_view suffix;  // into the image
      uint8_t name_index = 0;
      uint8_t known = 0;
    };
    std::array<Entry, 4> entries_{};
    size_t next_ = 0;
  };
  RecentNames recent_names_;
  std::optional<std::string_view> checked_redirect_;
  uint64_t inodes_seen_ = 0;
};

std::string ImageWalker::dir_path(uint32_t index) const {
  if (index == 0) return "/";
  std::vector<std::string_view> parts;
  for (uint32_t i = index; i != 0; i = dirs_[i].parent_index) parts.push_back(dirs_[i].name);
  std::string path;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    path += '/';
    path += printable(*it);
  }
  return path;
}

std::string ImageWalker::entry_path(uint32_t dir_index, std::string_view name) const {
  std::string path = dir_path(dir_index);
  if (path.size() > 1) path += '/';
  path += printable(name);
  return path;
}

void ImageWalker::walk() {
  uint64_t root = image_.root_nid();
  if (root >= slot_count_) fail("/", "root nid beyond the image");
  seen_.test_and_set(root);
  dirs_.reserve(expected_inodes() / 4 + 1);  // real trees: 1 directory in 5-10 entries
  dirs_.push_back({root, root, 0, 0, {}});
  inodes_seen_ = 1;
  try {
    check_inode(image_.inode(root), 0, {});
  } catch (const InodeError& e) {
    fail("/", e.rule());
  }
  for (uint32_t i = 0; i < dirs_.size(); i++) {
    process_dir(i);
    // Every page is checked once; with ReaderOptions::low_memory only recent ones stay.
    if ((i & 255) == 255) image_.release_pages();
  }
  check_link_counts();
  if (inodes_seen_ != image_.inode_count())
    fail("/", "superblock counts " + std::to_string(image_.inode_count()) + " inodes but " +
                  std::to_string(inodes_seen_) + " are reachable");
}

void ImageWalker::process_dir(uint32_t index) {
  const DirRecord rec = dirs_[index];
  std::string_view current;  // the entry being checked, for error paths
  bool in_entry = false;
  try {
    InodeInfo dir = image_.inode(rec.nid);
    if (visitor_) visitor_->begin_dir(index, dir);
    bool seen_dot = false, seen_dotdot = false;
    uint32_t subdirs = 0;
    uint32_t stub_like = 0;  // V2 root: chr 0/0 entries named 00..ff
    std::string_view prev;
    bool has_prev = false;
    DirCursor cursor = image_.dirents(dir);
    DirEntry e;
    while (cursor.next(e)) {
      current = e.name;
      in_entry = true;
      if (e.name.size() > kNameMax) fail(entry_path(index, e.name), "name longer than 255 bytes");
      if (has_slash_or_nul(e.name)) fail(entry_path(index, e.name), "name contains '/' or NUL");
      if (has_prev && !(prev < e.name)) {
        if (prev == e.name) fail(entry_path(index, e.name), "duplicate name in directory");
        fail(entry_path(index, e.name), "directory entries not sorted ('" + printable(e.name) +
                                            "' after '" + printable(prev) + "')");
      }
      prev = e.name;
      has_prev = true;
      if (e.name == "." || e.name == "..") {
        bool dot = e.name == ".";
        uint64_t want = dot ? rec.nid : rec.parent_nid;
        if (e.nid != want)
          fail(entry_path(index, e.name), std::string("dirent '") + std::string(e.name) +
                                              "' points to nid " + std::to_string(e.nid) +
                                              ", expected " +
                                              (dot ? "the directory itself" : "its parent") +
                                              " (nid " + std::to_string(want) + ")");
        if (e.file_type != kFtDir)
          fail(entry_path(index, e.name),
               "dirent type " + std::to_string(e.file_type) + ", expected directory (2)");
        (dot ? seen_dot : seen_dotdot) = true;
        continue;
      }
      InodeInfo child = image_.inode(e.nid);
      if (index == 0 && composefs::is_whiteout_stub(e.name, child.mode, child.rdev)) stub_like++;
      uint8_t want_type = file_type_of(child.mode);
      if (e.file_type != want_type)
        fail(entry_path(index, e.name), "dirent type " + std::to_string(e.file_type) +
                                            " does not match the inode's type " +
                                            std::to_string(want_type));
      const bool seen = seen_.test_and_set(e.nid);
      if (child.is_dir()) {
        if (seen)
          fail(entry_path(index, e.name),
               "directory nid " + std::to_string(e.nid) +
                   " is reachable twice (hardlinked directory or cycle)");
        if (rec.depth + 1 > kMaxDirDepth)
          fail(entry_path(index, e.name),
               "directory nesting deeper than " + std::to_string(kMaxDirDepth));
        inodes_seen_++;
        subdirs++;
        if (dirs_.size() >= UINT32_MAX) fail(entry_path(index, e.name), "too many directories");
        uint32_t child_index = static_cast<uint32_t>(dirs_.size());
        dirs_.push_back({e.nid, rec.nid, index, rec.depth + 1, e.name});
        check_inode(child, index, e.name);
        if (visitor_) visitor_->entry(index, e.name, child, true, child_index);
      } else {
        const bool first = !seen;
        if (first) {
          inodes_seen_++;
          check_inode(child, index, e.name);
          if (child.nlink != 1) link_refs_[e.nid] = 1;
        } else {
          uint32_t& refs = link_refs_[e.nid];
          if (refs == 0) refs = 1;  // the first reference, of an inode saying nlink 1
          if (refs < UINT32_MAX) refs++;
        }
        if (visitor_) visitor_->entry(index, e.name, child, first, 0);
      }
      in_entry = false;
    }
    in_entry = false;
    if (!seen_dot) fail(dir_path(index), "directory has no '.' entry");
    if (!seen_dotdot) fail(dir_path(index), "directory has no '..' entry");
    if (!composefs::has_whiteout_stubs(image_.format_version()) &&
        stub_like == composefs::kWhiteoutStubCount)
      fail("/", "format V2 image with the 00-ff whiteout stub table of format V0/V1");
    if (dir.nlink != 2 + uint64_t{subdirs})
      fail(dir_path(index), "directory nlink " + std::to_string(dir.nlink) + ", expected " +
                                std::to_string(2 + uint64_t{subdirs}) + " (2 + subdirectories)");
    if (visitor_) visitor_->end_dir(index, dir);
  } catch (const InodeError& e) {
    std::string path = in_entry ? entry_path(index, current) : dir_path(index);
    fail(path, e.rule() + " (inode " + std::to_string(e.nid()) + ")");
  }
}

void ImageWalker::claim_slots(const InodeInfo& info, uint64_t end) {
  uint64_t first = info.nid;
  uint64_t last = (end + kInodeSlotSize - 1) / kInodeSlotSize;  // exclusive
  if (last > slot_count_) image_.fail(info.nid, "inode extends beyond the image");
  // Block by block (an inode rarely spans two), so each block's state is looked up once.
  for (uint64_t s = first; s < last;) {
    uint64_t block = s / kSlotsPerBlock;
    uint64_t block_end = std::min(last, (block + 1) * kSlotsPerBlock);
    if (slot_used_.test_and_set_in_page(s, block_end - s))
      image_.fail(info.nid, "inode bytes overlap another inode or the superblock");
    if (block_used_.test(block))
      image_.fail(info.nid, "inode bytes overlap data block " + std::to_string(block));
    s = block_end;
  }
}

void ImageWalker::claim_blocks(const InodeInfo& info, uint64_t first, uint64_t count) {
  // inode() already checked the range lies inside the image.
  for (uint64_t b = first; b < first + count; b++) {
    if (b >= image_.blocks_)
      image_.fail(info.nid, "data block " + std::to_string(b) +
                                " beyond the superblock block count " +
                                std::to_string(image_.blocks_));
    if (block_used_.test_and_set(b))
      image_.fail(info.nid, "data block " + std::to_string(b) + " is used twice");
    if (slot_used_.any_in_page(b * kSlotsPerBlock, kSlotsPerBlock))
      image_.fail(info.nid,
                  "data block " + std::to_string(b) + " overlaps inode metadata or the superblock");
  }
}

// External files carry a chunk map of holes (EROFS_NULL_ADDR): their data comes from the
// overlay redirect, never from the image.
void ImageWalker::check_chunk_map(const InodeInfo& info, uint64_t& inline_len) {
  // composefs-rs writes V2 files without a digest (empty metacopy) with no chunk map at all,
  // even empty ones (a dumpfile line with a backing path and size 0).
  if (image_.format_version() == kComposefsVersionV2) {
    auto metacopy = image_.find_xattr(info, detail::kMetacopyXattr);
    if (metacopy && metacopy->empty()) {
      inline_len = 0;
      return;
    }
  }
  if (info.size == 0) image_.fail(info.nid, "chunk-based file of size 0");
  uint32_t chunkbits = kBlockSizeBits + (info.raw_u & kChunkFormatBlkbitsMask);
  uint64_t count = ((info.size - 1) >> chunkbits) + 1;
  uint64_t bytes = count * 4;
  uint64_t in_block = info.tail_offset % kBlockSize;
  if (in_block + bytes > kBlockSize) {
    // mkcomposefs moves a map that cannot share the inode's block (files over ~8 PiB)
    // out of line, where the kernel never looks; it only has to fit that one block.
    if (bytes > kBlockSize)
      image_.fail(info.nid,
                  "chunk map of " + std::to_string(count) + " entries does not fit a block");
    inline_len = 0;
    return;
  }
  auto map = image_.slice(info.tail_offset, bytes, info.nid, "chunk map");
  for (uint64_t i = 0; i < count; i++) {
    uint32_t addr = detail::load_le<uint32_t>(map, i * 4);
    if (addr != kNullAddr)
      image_.fail(info.nid, "chunk " + std::to_string(i) + " maps to block " +
                                std::to_string(addr) +
                                "; external files must be holes backed by the redirect");
  }
  inline_len = bytes;
}

void ImageWalker::check_inode(const InodeInfo& info, uint32_t dir_index, std::string_view name) {
  const ReaderOptions& opt = image_.options();
  uint64_t off = info.nid * kInodeSlotSize;
  if (off < kFirstInodeOffset)
    image_.fail(info.nid, "inode overlaps the composefs header or superblock");

  const bool v2 = image_.format_version() == kComposefsVersionV2;
  uint64_t inline_len = 0;
  uint64_t flat_blocks = 0;
  switch (info.type()) {
    case S_IFDIR:
      if (info.size == 0) image_.fail(info.nid, "directory of size 0");
      break;
    case S_IFREG:
      if (info.layout == DataLayout::chunk_based) {
        check_chunk_map(info, inline_len);
      } else if (const size_t max = v2 ? kInlineContentMaxV2 : kInlineContentMax; info.size > max) {
        image_.fail(info.nid, "inline file data of " + std::to_string(info.size) +
                                  " bytes exceeds " + std::to_string(max) +
                                  (v2 ? " (format V2)" : ""));
      }
      break;
    case S_IFLNK: {
      const size_t max = v2 ? std::min(opt.max_symlink, kSymlinkMaxV2) : opt.max_symlink;
      if (info.size == 0 || info.size > max)
        image_.fail(info.nid, "symlink target length " + std::to_string(info.size) +
                                  " outside 1.." + std::to_string(max) +
                                  (v2 ? " (format V2)" : ""));
      std::string_view target = image_.symlink_target(info);
      if (target.find('\0') != target.npos)
        image_.fail(info.nid, "symlink target contains a NUL byte");
      // Kernels before 6.12 reject fast symlinks whose inode and target straddle blocks.
      // V2's layout only keeps the target itself in one block (checked below).
      if (!v2 && info.layout == DataLayout::flat_inline &&
          off / kBlockSize != (info.tail_offset + info.size - 1) / kBlockSize)
        image_.fail(info.nid, "symlink inode and inline target cross a block boundary");
      break;
    }
    default:
      if (info.size != 0)
        image_.fail(info.nid, "special file with size " + std::to_string(info.size));
      if (info.layout != DataLayout::flat_plain)
        image_.fail(info.nid, "special file with a data layout other than flat");
      if (info.type() == S_IFCHR && info.rdev == 0) {
        // V2 stores the tree's whiteouts as they are; V0/V1 only the root's stubs.
        if (v2) {
          if (info.nlink != 1)
            image_.fail(info.nid, "whiteout with nlink " + std::to_string(info.nlink));
        } else {
          if (dir_index != 0 || !is_root_stub(image_, name, info))
            image_.fail(info.nid,
                        "overlay whiteout (character device 0/0) outside the root's 00-ff stubs");
          if (info.nlink != 1)
            image_.fail(info.nid, "root whiteout stub with nlink " + std::to_string(info.nlink));
        }
      }
      break;
  }
  if (info.layout == DataLayout::flat_inline) {
    inline_len = info.size % kBlockSize;
    if (info.tail_offset % kBlockSize + inline_len > kBlockSize)
      image_.fail(info.nid, "inline data crosses a block boundary");
  }
  if (info.layout != DataLayout::chunk_based &&
      (info.is_dir() || info.is_reg() || info.is_symlink()))
    flat_blocks = info.layout == DataLayout::flat_inline
                      ? info.size / kBlockSize
                      : info.size / kBlockSize + (info.size % kBlockSize != 0);

  uint64_t end = info.tail_offset + inline_len;
  if (end > image_.blocks_ * kBlockSize)
    image_.fail(info.nid, "inode extends beyond the superblock block count");
  claim_slots(info, end);
  claim_blocks(info, info.raw_u, flat_blocks);
  check_xattrs(info, dir_index);
}

void ImageWalker::check_xattrs(const InodeInfo& info, uint32_t dir_index) {
  const ReaderOptions& opt = image_.options();
  auto& list = xattr_scratch_;
  list.clear();
  uint32_t filter = 0;
  if (info.xattr_size > 0)
    filter = detail::load_le<uint32_t>(
        image_.slice(info.xattr_offset, sizeof(XattrIbodyHeader), info.nid, "xattr header"), 0);
  (void)dir_index;
  bool is_root = info.nid == image_.root_nid();
  const bool v2 = image_.format_version() == kComposefsVersionV2;
  bool has_metacopy = false;
  std::optional<std::string_view> metacopy;
  std::optional<std::string_view>& redirect = checked_redirect_;
  redirect.reset();
  XattrCursor cursor = image_.xattrs(info);
  XattrView x;
  while (cursor.next(x)) {
    size_t full_len = x.prefix().size() + x.suffix.size();
    // A shared xattr is usually referenced by thousands of inodes (SELinux labels): its name
    // is checked once, and what the per-inode checks need of it is remembered.
    uint8_t known = x.shared ? shared_checked_.get(x.shared_id) : recent_names_.find(x);
    if (!known) {
      known = classify_xattr_name(info, x, full_len);
      if (x.shared)
        shared_checked_.at(x.shared_id) = known;
      else
        recent_names_.add(x, known);
    }
    if (image_.xattr_filter_ && (filter & (1u << (known & kFilterBitMask))))
      image_.fail(info.nid, "xattr name filter hides " + printable(x.name()));
    switch (known & kOverlayMask) {
      case kOverlayRedirect:
        if (!info.is_external())
          image_.fail(info.nid,
                      "trusted.overlay.redirect on an inode that is not an external file");
        redirect = x.value;
        break;
      case kOverlayMetacopy:
        if (!info.is_external())
          image_.fail(info.nid,
                      "trusted.overlay.metacopy on an inode that is not an external file");
        has_metacopy = true;
        metacopy = x.value;
        break;
      case kOverlayOther:
        if (!(is_root && !v2 && x.name_is(detail::kOpaqueXattr) && x.value == "y"))
          image_.fail(info.nid, "unexpected overlay xattr " + printable(x.name()) +
                                    " (only redirect, metacopy and the root's opaque=y are "
                                    "stored unescaped)");
        break;
      default:
        break;
    }
    // V2 stores whiteouts as chr 0/0: an escaped whiteout is V1's encoding (as composefs-rs).
    if (v2 && info.is_reg() && x.name_is(detail::kEscapedWhiteout))
      image_.fail(info.nid, "escaped overlay whiteout (" + std::string(detail::kEscapedWhiteout) +
                                ") in a format V2 image");
    list.push_back({x, static_cast<uint32_t>(full_len)});
  }
  check_unique_names(info, list);
  if (info.is_external()) {
    if (!has_metacopy) image_.fail(info.nid, "external file without trusted.overlay.metacopy");
    // The values found above: looking them up again would walk the xattrs twice more.
    std::optional<Digest> digest = detail::metacopy_from_value(image_, info.nid, *metacopy);
    if (redirect) {
      if (opt.object_redirects_only) {
        if (!is_object_redirect(*redirect))
          image_.fail(info.nid, "redirect '" + printable(*redirect) +
                                    "' is not an object path \"/xx/<hex digest>\"");
        if (digest && !digest->is_object_path(redirect->substr(1)))
          image_.fail(info.nid, "redirect '" + printable(*redirect) +
                                    "' does not name the metacopy digest's object " +
                                    digest->object_path());
      } else if (!is_safe_relative_redirect(*redirect)) {
        image_.fail(info.nid, "redirect '" + printable(*redirect) +
                                  "' is not a relative path below the object directory");
      }
    }
  }
}

uint8_t ImageWalker::classify_xattr_name(const InodeInfo& info, const XattrView& x,
                                         size_t full_len) const {
  if (full_len > kXattrNameMax)
    image_.fail(info.nid, "xattr name longer than 255 bytes: " + printable(x.name()));
  if (x.suffix.find('\0') != x.suffix.npos)
    image_.fail(info.nid, "xattr name contains NUL: " + printable(x.name()));
  uint8_t known = kNameChecked;
  if (image_.xattr_filter_)
    known |=
        XXH32(x.suffix.data(), x.suffix.size(), kXattrFilterSeed + x.name_index) & kFilterBitMask;
  // The part after "trusted.overlay.", for names that have that prefix.
  // Only the trusted index or the prefix-less one (full name in the suffix) can spell it.
  std::optional<std::string_view> rest;
  constexpr std::string_view kTrusted = "trusted.";
  if (x.name_index == kXattrIndexTrusted) {
    if (x.suffix.starts_with(detail::kOverlayPrefix.substr(kTrusted.size())))
      rest = x.suffix.substr(detail::kOverlayPrefix.size() - kTrusted.size());
  } else if (x.prefix().empty() && x.suffix.starts_with(detail::kOverlayPrefix)) {
    rest = x.suffix.substr(detail::kOverlayPrefix.size());
  }
  auto tail = [](std::string_view full) { return full.substr(detail::kOverlayPrefix.size()); };
  if (!rest || rest->starts_with(tail(detail::kOverlayEscapedPrefix))) return known;
  if (*rest == tail(detail::kRedirectXattr)) return known | kOverlayRedirect;
  if (*rest == tail(detail::kMetacopyXattr)) return known | kOverlayMetacopy;
  return known | kOverlayOther;
}

void ImageWalker::check_unique_names(const InodeInfo& info, std::vector<NamedXattr>& list) const {
  auto duplicate = [&](const XattrView& x) {
    image_.fail(info.nid, "duplicate xattr " + printable(x.name()));
  };
  // Most inodes carry a handful of xattrs: comparing every pair, and only those of equal
  // length byte by byte, beats sorting them.
  if (list.size() <= 8) {
    for (size_t i = 1; i < list.size(); i++)
      for (size_t j = 0; j < i; j++)
        if (list[i].name_len == list[j].name_len && same_name(list[i].view, list[j].view))
          duplicate(list[i].view);
    return;
  }
  std::sort(list.begin(), list.end(), [](const NamedXattr& a, const NamedXattr& b) {
    return compare_names(a.view, b.view) < 0;
  });
  for (size_t i = 1; i < list.size(); i++)
    if (compare_names(list[i - 1].view, list[i].view) == 0) duplicate(list[i].view);
}

void ImageWalker::check_link_counts() {
  // The lowest mismatching inode is reported, whatever order the map holds them in.
  std::optional<std::pair<uint64_t, uint32_t>> worst;
  for (const auto& [nid, refs] : link_refs_) {
    if (worst && nid > worst->first) continue;
    if (image_.inode(nid).nlink != refs) worst = {nid, refs};
  }
  if (!worst) return;
  auto [nid, refs] = *worst;
  fail(find_path_of(nid), "nlink " + std::to_string(image_.inode(nid).nlink) + " but " +
                              std::to_string(refs) + " directory entries refer to inode " +
                              std::to_string(nid));
}

std::string ImageWalker::find_path_of(uint64_t nid) const {
  for (uint32_t i = 0; i < dirs_.size(); i++) {
    DirCursor cursor = image_.dirents(image_.inode(dirs_[i].nid));
    DirEntry e;
    while (cursor.next(e))
      if (e.nid == nid && e.name != "." && e.name != "..") return entry_path(i, e.name);
  }
  return "inode " + std::to_string(nid);
}

// ---- public entry points -------------------------------------------------------------------

void Image::validate() const {
  ImageWalker walker(*this, nullptr);
  walker.walk();
}

detail::InodeDecoder::InodeDecoder(const Image& image, std::string what)
    : image_(image), what_(std::move(what)), budget_(image.decode_budget()) {}

void detail::InodeDecoder::charge(uint64_t bytes) {
  if (bytes > budget_)
    throw Error(image_.name() + ": " + what_ + " exceeds " +
                std::to_string(image_.decode_budget()) +
                " bytes (xattrs or data shared implausibly often)");
  budget_ -= bytes;
}

void detail::InodeDecoder::fill_stat(Inode& out, const InodeInfo& in) {
  out.mode = in.mode;
  out.nlink = in.nlink;
  out.uid = in.uid;
  out.gid = in.gid;
  out.mtime_sec = in.mtime_sec;
  out.mtime_nsec = in.mtime_nsec;
  out.rdev = (in.type() == S_IFCHR || in.type() == S_IFBLK) ? in.rdev : 0;
  switch (in.type()) {
    case S_IFDIR:
      out.size = in.size;
      break;
    case S_IFLNK:
      out.payload = std::string(image_.symlink_target(in));
      out.size = out.payload.size();
      charge(out.payload.size());
      break;
    case S_IFREG:
      out.size = in.size;
      if (in.is_external()) {
        if (auto r = image_.redirect(in)) out.payload = std::string(r->substr(1));
        out.digest = image_.metacopy_digest(in);
        charge(out.payload.size());
      } else if (in.size > 0) {
        charge(in.size);
        std::string content(in.size, '\0');
        size_t got = image_.read(in, 0, std::as_writable_bytes(std::span(content)));
        if (got != content.size()) image_.fail(in.nid, "short inline data");
        out.content = std::move(content);
      }
      break;
    default:
      out.size = 0;
      break;
  }
}

// The reverse of the writer's overlay xattr rewrite (composefs-c.md §2.1 step 3), dropping
// the markers only where the writer itself would put them back, so that writing the
// tree again reproduces the image.
void detail::InodeDecoder::map_xattrs(const InodeInfo& in, Inode& out, bool has_whiteout_child) {
  bool whiteout = false, user_whiteout = false;
  XattrCursor cursor = image_.xattrs(in);
  XattrView x;
  const bool empty_regular = in.is_reg() && in.size == 0;
  while (cursor.next(x)) {
    charge(x.prefix().size() + x.suffix.size() + x.value.size());
    switch (composefs::classify(x, empty_regular, image_.format_version())) {
      case composefs::StoredXattr::redirect:
      case composefs::StoredXattr::metacopy:
        continue;
      case composefs::StoredXattr::whiteout:
        whiteout = true;
        continue;
      case composefs::StoredXattr::user_whiteout:
        user_whiteout = true;
        continue;
      case composefs::StoredXattr::dir_marker:
        if (has_whiteout_child) continue;
        break;
      case composefs::StoredXattr::user:
        break;
    }
    // The writer's own trusted.overlay.* (root opaque) have no name here; it adds them again.
    if (auto name = composefs::unescape_xattr_name(x.name()))
      out.xattrs.push_back({std::move(*name), std::string(x.value)});
  }
  if (user_whiteout && !whiteout) out.xattrs.push_back({std::string(detail::kUserWhiteout), ""});
  if (whiteout) {
    out.mode = S_IFCHR | (out.mode & ~S_IFMT);
    out.rdev = 0;
    out.size = 0;
    out.content.reset();
  }
  out.sort_xattrs();
}

bool detail::InodeDecoder::is_whiteout(const InodeInfo& in) const {
  if (in.type() == S_IFCHR) return in.rdev == 0;
  // Only an empty regular file can be a whiteout stored escaped (V0/V1).
  if (!in.is_reg() || in.size != 0 || !composefs::has_whiteout_stubs(image_.format_version()))
    return false;
  XattrCursor cursor = image_.xattrs(in);
  XattrView x;
  while (cursor.next(x))
    if (composefs::classify(x, true, image_.format_version()) == composefs::StoredXattr::whiteout)
      return true;
  return false;
}

bool detail::InodeDecoder::is_root_stub(std::string_view name, const InodeInfo& inode) const {
  return cfs::erofs::is_root_stub(image_, name, inode);
}

namespace {

// Indices (into nids, the named entries in walk order) of the names of hardlinked inodes that
// are not their inode's home. The writer lays inodes out in the walk's (BFS) order of their
// home dirents, so the homes, read in walk order, carry the image's nids in increasing order,
// each once. The first name of a hardlinked inode met when its nid is the next one due is its
// home; the others are aliases, so that writing the tree again places the inode where the
// image has it (C mkcomposefs puts it at the dumpfile's target line, which need not be the
// first name). Names met together in one run give the same layout whichever is the home.
// If the image was not laid out that way, nothing is returned (the first name is the home).
std::vector<size_t> hardlink_aliases(std::span<const uint64_t> nids_in_order,
                                     const std::vector<bool>& hardlinked) {
  if (std::find(hardlinked.begin(), hardlinked.end(), true) == hardlinked.end()) return {};
  std::vector<uint64_t> nids(nids_in_order.begin(), nids_in_order.end());
  std::sort(nids.begin(), nids.end());
  nids.erase(std::unique(nids.begin(), nids.end()), nids.end());
  std::vector<size_t> aliases;
  size_t next = 0;
  for (size_t i = 0; i < nids_in_order.size(); i++) {
    if (next < nids.size() && nids_in_order[i] == nids[next]) {
      next++;
    } else if (hardlinked[i]) {
      aliases.push_back(i);
    } else {
      return {};  // a singly-linked inode out of order: not the writer's layout
    }
  }
  if (next != nids.size()) return {};
  return aliases;
}

class TreeBuilder : public ImageWalker::Visitor {
 public:
  explicit TreeBuilder(const Image& image) : image_(image), decoder_(image, "decoded tree") {}

  void begin_dir(uint32_t index, const InodeInfo& dir) override {
    if (index == 0) {
      decoder_.fill_stat(*tree_.root, dir);
      dirs_.push_back(tree_.root.get());
    }
    dir_has_whiteout_ = false;
  }

  void entry(uint32_t dir_index, std::string_view name, const InodeInfo& child, bool first,
             uint32_t child_dir_index) override {
    const bool hardlinked = !child.is_dir() && child.nlink > 1;
    order_.push_back({hardlinked ? dirs_[dir_index] : nullptr,
                      hardlinked ? dirs_[dir_index]->children.size() : 0});
    nids_.push_back(child.nid);
    hardlinked_.push_back(hardlinked);
    if (dir_index == 0 && is_root_stub(image_, name, child)) return;
    InodePtr inode;
    if (first) {
      inode = make_inode(child.mode);
      decoder_.fill_stat(*inode, child);
      if (!child.is_dir()) {
        decoder_.map_xattrs(child, *inode, false);
        if (child.nlink > 1) links_.emplace(child.nid, inode);
      } else {
        if (dirs_.size() <= child_dir_index) dirs_.resize(child_dir_index + 1, nullptr);
        dirs_[child_dir_index] = inode.get();
      }
    } else {
      auto it = links_.find(child.nid);
      if (it == links_.end())
        throw Error(image_.name() + ": inode " + std::to_string(child.nid) +
                    ": hardlink target missing");
      inode = it->second;
    }
    if (inode->is_whiteout()) dir_has_whiteout_ = true;
    decoder_.charge(name.size());
    dirs_[dir_index]->children.push_back({std::string(name), std::move(inode)});
  }

  void end_dir(uint32_t index, const InodeInfo& dir) override {
    decoder_.map_xattrs(dir, *dirs_[index], dir_has_whiteout_);
  }

  Tree take() {
    // V2 is laid out depth-first, and its writer puts a hardlinked inode at its first name.
    if (composefs::has_whiteout_stubs(image_.format_version()))
      for (size_t i : hardlink_aliases(nids_, hardlinked_))
        order_[i].dir->children[order_[i].index].link = true;
    return std::move(tree_);
  }

 private:
  // Where each named entry of a hardlinked inode (in walk order) is: its directory and index.
  struct Named {
    Inode* dir;
    size_t index;
  };
  std::vector<Named> order_;
  std::vector<uint64_t> nids_;
  std::vector<bool> hardlinked_;

  const Image& image_;
  detail::InodeDecoder decoder_;
  Tree tree_;
  std::vector<Inode*> dirs_;  // by walker directory index
  std::unordered_map<uint64_t, InodePtr> links_;
  bool dir_has_whiteout_ = false;
};

// The walk behind link_homes(): the path of every name of a hardlinked inode.
class LinkNamer : public ImageWalker::Visitor {
 public:
  explicit LinkNamer(const Image& image) : image_(image) { dir_paths_.emplace_back(); }

  void entry(uint32_t dir_index, std::string_view name, const InodeInfo& child, bool,
             uint32_t child_dir_index) override {
    const bool hardlinked = !child.is_dir() && child.nlink > 1;
    nids_.push_back(child.nid);
    hardlinked_.push_back(hardlinked);
    if (child.is_dir()) {
      if (dir_paths_.size() <= child_dir_index) dir_paths_.resize(child_dir_index + 1);
      dir_paths_[child_dir_index] = dir_paths_[dir_index] + '/' + std::string(name);
    }
    if (hardlinked && !(dir_index == 0 && is_root_stub(image_, name, child)))
      paths_.emplace(nids_.size() - 1, dir_paths_[dir_index] + '/' + std::string(name));
  }

  std::unordered_map<uint64_t, std::string> homes() {
    std::unordered_map<uint64_t, std::string> homes;
    std::vector<size_t> aliases = hardlink_aliases(nids_, hardlinked_);
    if (aliases.empty()) return homes;
    for (size_t i : aliases) paths_.erase(i);
    for (auto& [i, path] : paths_) homes.emplace(nids_[i], std::move(path));
    return homes;
  }

 private:
  const Image& image_;
  std::vector<std::string> dir_paths_;  // by walker directory index; the root's is ""
  std::vector<uint64_t> nids_;
  std::vector<bool> hardlinked_;
  std::unordered_map<size_t, std::string> paths_;  // index in nids_ -> path
};

class ObjectCollector : public ImageWalker::Visitor {
 public:
  // first == true: the walker has just checked child, and kept its redirect.
  void entry(uint32_t, std::string_view, const InodeInfo& child, bool first, uint32_t) override {
    if (!first || !child.is_external()) return;
    if (const auto& r = walker->checked_redirect()) objects.push_back(r->substr(1));
  }
  const ImageWalker* walker = nullptr;
  std::vector<std::string_view> objects;  // into the image: no allocation per object
};

}  // namespace

Tree Image::to_tree() const {
  TreeBuilder builder(*this);
  ImageWalker walker(*this, &builder);
  walker.walk();
  return builder.take();
}

std::unordered_map<uint64_t, std::string> detail::validate_and_find_link_homes(const Image& image) {
  if (!composefs::has_whiteout_stubs(image.format_version())) {
    image.validate();
    return {};
  }
  LinkNamer namer(image);
  ImageWalker walker(image, &namer);
  walker.walk();
  return namer.homes();
}

std::vector<std::string_view> Image::object_refs(bool unique) const {
  ObjectCollector collector;
  ImageWalker walker(*this, &collector);
  collector.walker = &walker;
  collector.objects.reserve(walker.expected_inodes());
  walker.walk();
  auto& v = collector.objects;
  if (unique) {
    std::sort(v.begin(), v.end());
    v.erase(std::unique(v.begin(), v.end()), v.end());
  }
  return std::move(v);
}

std::vector<std::string> Image::objects() const {
  std::vector<std::string_view> refs = object_refs();
  return {refs.begin(), refs.end()};
}

}  // namespace cfs::erofs
