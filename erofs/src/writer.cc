// The composefs EROFS writer. Byte compatibility with mkcomposefs 1.0.8 (libcomposefs
// lcfs-writer-erofs.c) dictates every layout decision here, quirks included. The
// implementation is independent: instead of cloning and rewriting the tree as the C code
// does, it builds a flat table of per-inode records in BFS order and derives the overlay
// rewrite (escaped xattrs, metacopy/redirect, whiteouts, "."/"..", the 00-ff stubs) on the
// fly from the unmodified tree.
//
// Passes: (1) DFS over the tree: validate, pick hardlink primaries, decide the version;
// (2) BFS: build the record table, count (name, value) xattr pairs and remember each
// record's pairs; (3) shared xattr table; (4) layout: sizes, compact/extended, xattr sizes,
// padding, nids; (5) stream the image through a VeritySink. Extra memory is ~40 bytes per
// inode plus ~30 per xattr, all freed on return.
#include "cfs/erofs/writer.h"

#include <xxhash.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cfs/erofs/dumpfile.h"
#include "cfs/erofs/format.h"
#include "cfs/error.h"
#include "cfs/escape.h"

namespace cfs::erofs {
namespace {

constexpr uint64_t kBlock = kBlockSize;
constexpr uint64_t kSlot = kInodeSlotSize;
constexpr uint32_t kMaxChunks = 1024;              // LCFS_MAX_NONINLINE_CHUNKS
constexpr size_t kSymlinkMax = kSymlinkMaxCompat;  // PATH_MAX - 1
constexpr size_t kMaxShared = kMaxSharedXattrsPerInode;

constexpr uint64_t round_up(uint64_t v, uint64_t align) {
  return (v + align - 1) / align * align;
}

// ---- names the overlay rewrite uses ------------------------------------------------------
constexpr std::string_view kOverlayPrefix = "trusted.overlay.";
constexpr std::string_view kEscapedOverlayPrefix = "trusted.overlay.overlay.";
constexpr std::string_view kMetacopyName = "trusted.overlay.metacopy";
constexpr std::string_view kRedirectName = "trusted.overlay.redirect";
constexpr std::string_view kOpaqueName = "trusted.overlay.opaque";
constexpr std::string_view kEscapedWhiteoutName = "trusted.overlay.overlay.whiteout";
constexpr std::string_view kUserWhiteoutName = "user.overlay.whiteout";
constexpr std::string_view kEscapedWhiteoutsName = "trusted.overlay.overlay.whiteouts";
constexpr std::string_view kUserWhiteoutsName = "user.overlay.whiteouts";
constexpr std::string_view kEscapedOpaqueName = "trusted.overlay.overlay.opaque";
constexpr std::string_view kUserOpaqueName = "user.overlay.opaque";
constexpr std::string_view kSelinuxName = "security.selinux";
constexpr std::string_view kAclAccessName = "system.posix_acl_access";
constexpr std::string_view kAclDefaultName = "system.posix_acl_default";

// Metacopy value headers {version, len, flags, algorithm}; the digest follows.
constexpr char kMetacopySha256[4] = {0, 4 + 32, 0, 1};
constexpr char kMetacopySha512[4] = {0, 4 + 64, 0, 2};

// "000102...ff": names of the whiteout stubs added to the root.
constexpr std::array<char, 512> kStubNames = [] {
  std::array<char, 512> names{};
  constexpr char hex[] = "0123456789abcdef";
  for (int i = 0; i < 256; i++) {
    names[2 * i] = hex[i >> 4];
    names[2 * i + 1] = hex[i & 15];
  }
  return names;
}();
std::string_view stub_name(uint32_t i) {
  return {kStubNames.data() + 2 * i, 2};
}

// ---- two-piece byte strings ----------------------------------------------------------------
// Rewritten xattr names and generated values are concatenations of a literal and a tree
// string ("trusted.overlay.overlay." + rest, "/" + payload, header + digest). Keeping them as
// two views avoids allocating a string per xattr per pass.
struct Bytes2 {
  std::string_view head;
  std::string_view tail;

  size_t size() const noexcept { return head.size() + tail.size(); }
  char at(size_t i) const noexcept { return i < head.size() ? head[i] : tail[i - head.size()]; }
  Bytes2 drop_front(size_t n) const noexcept {
    if (n <= head.size()) return {head.substr(n), tail};
    return {tail.substr(n - head.size()), {}};
  }
  bool starts_with(std::string_view prefix) const noexcept {
    if (prefix.size() > size()) return false;
    size_t in_head = std::min(prefix.size(), head.size());
    return head.substr(0, in_head) == prefix.substr(0, in_head) &&
           tail.substr(0, prefix.size() - in_head) == prefix.substr(in_head);
  }
  size_t copy_to(char* out) const noexcept {
    // Empty views may have a null data(), which memcpy must not be given.
    if (!head.empty()) std::memcpy(out, head.data(), head.size());
    if (!tail.empty()) std::memcpy(out + head.size(), tail.data(), tail.size());
    return size();
  }
};

// Bytewise (unsigned) comparison of the concatenations, as strcmp/memcmp order them.
int compare(const Bytes2& a, const Bytes2& b) noexcept {
  if (a.tail.empty() && b.tail.empty()) return a.head.compare(b.head);
  std::string_view as[2] = {a.head, a.tail};
  std::string_view bs[2] = {b.head, b.tail};
  size_t ai = 0, bi = 0, ao = 0, bo = 0;
  while (true) {
    while (ai < 2 && ao == as[ai].size()) ai++, ao = 0;
    while (bi < 2 && bo == bs[bi].size()) bi++, bo = 0;
    if (ai == 2 || bi == 2) return (ai == 2 ? 0 : 1) - (bi == 2 ? 0 : 1);
    size_t n = std::min(as[ai].size() - ao, bs[bi].size() - bo);
    int r = std::memcmp(as[ai].data() + ao, bs[bi].data() + bo, n);
    if (r != 0) return r;
    ao += n;
    bo += n;
  }
}
bool equal(const Bytes2& a, const Bytes2& b) noexcept {
  return a.size() == b.size() && compare(a, b) == 0;
}

// ---- xattrs --------------------------------------------------------------------------------
// Where an xattr of a record comes from: an index into the owner's Inode::xattrs, or one of
// the xattrs the overlay rewrite adds. Lets a hash-table slot name a pair in 6 bytes.
enum : uint16_t {
  kSrcMetacopy = 0xff00,
  kSrcRedirect,
  kSrcWhiteoutEscaped,
  kSrcWhiteoutUser,
  kSrcWhiteoutsEscaped,
  kSrcWhiteoutsUser,
  kSrcOpaqueEscaped,
  kSrcOpaqueUser,
  kSrcRootOpaque,
};
constexpr size_t kMaxUserXattrs = kSrcMetacopy;  // leaves room for the generated ones in 16 bits

struct XattrView {
  Bytes2 name;
  Bytes2 value;
  uint16_t source;
};

struct XattrKey {
  uint8_t index;
  Bytes2 suffix;
};

// Prefix table of the C writer (str_has_prefix, first match wins; no long-prefix table).
XattrKey xattr_key(const Bytes2& name) noexcept {
  static constexpr std::pair<std::string_view, uint8_t> prefixes[] = {
      {"user.", kXattrIndexUser},
      {kAclAccessName, kXattrIndexPosixAclAccess},
      {kAclDefaultName, kXattrIndexPosixAclDefault},
      {"trusted.", kXattrIndexTrusted},
      {"security.", kXattrIndexSecurity},
  };
  // Every name here is either one piece or has a 24-byte head ("trusted.overlay.overlay."),
  // as long as the longest prefix, so testing the head alone is exact and cheap.
  const bool head_decides = name.tail.empty() || name.head.size() >= kAclDefaultName.size();
  for (const auto& [prefix, index] : prefixes)
    if (head_decides ? name.head.starts_with(prefix) : name.starts_with(prefix))
      return {index, name.drop_front(prefix.size())};
  return {kXattrIndexNone, name};
}

size_t xattr_entry_size(const XattrView& x) noexcept {
  return round_up(sizeof(XattrEntry) + xattr_key(x.name).suffix.size() + x.value.size(), 4);
}

uint64_t hash_pair(const XattrView& x, std::vector<char>& scratch) {
  // Names never contain NUL, so "name\0value" is unambiguous.
  scratch.resize(x.name.size() + 1 + x.value.size());
  size_t n = x.name.copy_to(scratch.data());
  scratch[n++] = '\0';
  x.value.copy_to(scratch.data() + n);
  uint64_t h = XXH3_64bits(scratch.data(), scratch.size());
  return h == 0 ? 1 : h;  // 0 marks an empty slot
}

// ---- per-inode records ------------------------------------------------------------------------
enum RecordFlags : uint8_t {
  kRoot = 1,
  kWhiteout = 2,        // a chr 0/0 in the tree, written as an escaped overlay whiteout
  kWhiteoutParent = 4,  // holds a whiteout: gets the whiteouts (and v1 opaque) markers
  kCompact = 8,
  kStub = 16,          // one of the 00..ff whiteouts added to the root
  kLinkChildren = 32,  // a directory with a later occurrence of a hardlinked inode
};

// Everything the layout and emit passes need besides the inode itself, so that they touch
// the (cache-unfriendly) tree as little as possible.
struct Record {
  const Inode* inode = nullptr;  // nullptr for stubs
  uint32_t parent = 0;
  uint32_t first_child = 0;  // record index of the first non-hardlink child (BFS: contiguous)
  uint32_t nid = 0;
  uint32_t n_blocks = 0;
  uint32_t nlink = 0;
  uint16_t tail = 0;
  uint16_t ipad = 0;
  uint16_t xattr_icount = 0;  // i_xattr_icount: the xattr body is 12 + 4 * (icount - 1) bytes
  uint16_t n_pairs = 0;  // xattrs after the rewrite; their PairRefs follow the previous record's
  uint8_t flags = 0;
  uint8_t stub = 0;
  uint8_t file_type = 0;
};
static_assert(sizeof(Record) <= 40);

// One xattr of one record, in the record's sorted order: where its (name, value) pair sits
// in the counting table (after build_shared_table: its index in the shared table, or
// kNotShared), its inline entry size and its name-filter bit.
constexpr uint32_t kNotShared = UINT32_MAX;
struct PairRef {
  uint32_t slot;
  uint32_t size_and_bit;  // entry size << 5 | filter bit
  uint32_t entry_size() const noexcept { return size_and_bit >> 5; }
  uint32_t filter_bit() const noexcept { return size_and_bit & 31; }
};

struct SharedInode {
  // The inode's home: its dirent not marked Dirent::link, else its first in DFS pre-order
  // (nullptr for the root).
  const Dirent* primary = nullptr;
  uint32_t record = 0;
};

// One directory entry as the image lists it (children merged with ".", ".." and stubs).
struct Entry {
  enum Kind : uint8_t { kChild, kDot, kDotDot, kStubEntry };
  std::string_view name;
  Kind kind;
  uint8_t stub;
  const Dirent* dirent;
};

constexpr std::array<Entry, 2> kDotEntries = {
    {{".", Entry::kDot, 0, nullptr}, {"..", Entry::kDotDot, 0, nullptr}}};

struct Chunking {
  uint32_t bits;
  uint64_t count;
};
Chunking chunking(uint64_t size) {
  uint32_t bits = std::max<uint32_t>(kBlockSizeBits, std::bit_width(size - 1));
  bits = std::min<uint32_t>(bits, kBlockSizeBits + kChunkFormatBlkbitsMask);
  return {bits, (size + (uint64_t{1} << bits) - 1) >> bits};
}

// Buffers the image in large pieces for the verity hasher and the caller's sink.
class Emitter {
 public:
  explicit Emitter(OutputSink& out) : out_(out), buf_(kBufferSize) {}
  void put(const void* data, size_t n) {
    const auto* p = static_cast<const std::byte*>(data);
    while (n > 0) {
      if (used_ == buf_.size()) flush();
      size_t take = std::min(n, buf_.size() - used_);
      std::memcpy(buf_.data() + used_, p, take);
      used_ += take;
      p += take;
      n -= take;
    }
  }
  void put(std::string_view s) { put(s.data(), s.size()); }
  void put(const Bytes2& b) {
    put(b.head);
    put(b.tail);
  }
  template <typename T>
  void put_struct(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    put(&v, sizeof v);
  }
  void zeros(uint64_t n) {
    while (n > 0) {
      if (used_ == buf_.size()) flush();
      size_t take = static_cast<size_t>(std::min<uint64_t>(n, buf_.size() - used_));
      std::memset(buf_.data() + used_, 0, take);
      used_ += take;
      n -= take;
    }
  }
  uint64_t offset() const noexcept { return written_ + used_; }
  void align(uint64_t alignment) { zeros(round_up(offset(), alignment) - offset()); }
  void flush() {
    if (used_ == 0) return;
    out_.write(std::span<const std::byte>(buf_.data(), used_));
    written_ += used_;
    used_ = 0;
  }

 private:
  static constexpr size_t kBufferSize = 256 * 1024;
  OutputSink& out_;
  std::vector<std::byte> buf_;
  size_t used_ = 0;
  uint64_t written_ = 0;
};

class ImageWriter {
 public:
  ImageWriter(const Tree& tree, const WriterOptions& options) : tree_(tree) {
    if (options.min_version > kFormatVersionMax || options.max_version > kFormatVersionMax)
      throw Error("composefs image: format version " +
                  std::to_string(std::max(options.min_version, options.max_version)) +
                  " is not supported (maximum " + std::to_string(kFormatVersionMax) + ")");
    version_ = options.min_version;
    max_version_ = std::max(options.max_version, options.min_version);
  }

  WriteResult write(OutputSink& out) {
    scan_tree();
    build_records();
    build_shared_table();
    compute_layout();
    VeritySink verity(&out);
    Emitter emit(verity);
    emit_image(emit);
    emit.flush();
    verity.flush();
    WriteResult result;
    result.version = version_;
    result.size = verity.size();
    result.digest = verity.finish();
    return result;
  }

 private:
  // ---- pass 1: DFS validation ---------------------------------------------------------------
  [[noreturn]] static void fail(const std::string& path, const std::string& what) {
    // Paths and xattr names come from the tree, i.e. from a layer or a dumpfile.
    throw Error("composefs image: " + escape_for_log(path) + ": " + escape_for_log(what));
  }

  void validate_name(const std::string& path, std::string_view name) {
    if (name.empty() || name.size() > kNameMax) fail(path, "file name must be 1 to 255 bytes");
    if (name == "." || name == "..") fail(path, "'.' and '..' are not valid file names");
    if (name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos)
      fail(path, "file name contains '/' or a NUL byte");
  }

  void validate_inode(const std::string& path, const Inode& inode) {
    switch (inode.type()) {
      case S_IFREG:
      case S_IFDIR:
      case S_IFLNK:
      case S_IFBLK:
      case S_IFCHR:
      case S_IFSOCK:
      case S_IFIFO:
        break;
      default: {
        char mode[16];
        std::snprintf(mode, sizeof mode, "0%o", inode.mode);
        fail(path, std::string("invalid file type in mode ") + mode);
      }
    }
    if (!inode.is_dir() && !inode.children.empty())
      fail(path, "only directories can have children");
    if (inode.is_reg()) {
      if (inode.content) {
        if (inode.content->size() != inode.size)
          fail(path, "inline content is " + std::to_string(inode.content->size()) +
                         " bytes but the file size is " + std::to_string(inode.size));
        if (inode.size > kInlineContentMax)
          fail(path, "inline content of " + std::to_string(inode.size) +
                         " bytes exceeds the maximum of " + std::to_string(kInlineContentMax));
      } else if (inode.size > 0) {
        if (chunking(inode.size).count > kMaxChunks)
          throw SystemError(EFBIG, "composefs image: " + path + ": file size " +
                                       std::to_string(inode.size) + " needs more than 1024 chunks");
        if (inode.payload.size() >= kPathMax || inode.payload.find('\0') != std::string::npos)
          fail(path, "backing path is longer than 4095 bytes or contains a NUL byte");
      }
    } else if (inode.is_symlink()) {
      if (inode.payload.empty()) fail(path, "symlink target is empty");
      if (inode.payload.size() > kSymlinkMax)
        fail(path, "symlink target is longer than 4095 bytes");
      if (inode.payload.find('\0') != std::string::npos)
        fail(path, "symlink target contains a NUL byte");
    }
    if (inode.xattrs.size() >= kMaxUserXattrs) fail(path, "too many xattrs");
    for (const Xattr& x : inode.xattrs) {
      // Escaping makes a user's trusted.overlay.* name 8 bytes longer on disk.
      if (x.name.empty() || x.name.size() > xattr_name_max(x.name))
        fail(path, "xattr name '" + x.name + "' must be 1 to " +
                       std::to_string(xattr_name_max(x.name)) + " bytes");
      if (x.name.find('\0') != std::string::npos) fail(path, "xattr name contains a NUL byte");
      if (x.value.size() > kXattrValueMax)
        fail(path, "value of xattr '" + x.name + "' is longer than 65535 bytes");
    }
  }

  // Upper bound of the xattr pairs an inode contributes (sizes the pair-count table):
  // its own, plus metacopy/redirect, whiteout markers, or a directory's markers and opaque.
  static size_t pair_bound(const Inode& inode) {
    size_t generated = 0;
    if (inode.is_dir())
      generated = 5;
    else if (inode.is_external())
      generated = 2;
    else if (inode.is_whiteout())
      generated = 2;
    return inode.xattrs.size() + generated;
  }

  void scan_tree() {
    const Inode& root = *tree_.root;
    validate_inode("/", root);
    if (!root.is_dir()) fail("/", "the root must be a directory");
    if (tree_.root.use_count() > 1) shared_.emplace(&root, SharedInode{});
    pair_bound_ = pair_bound(root) + 256;

    struct Frame {
      const Inode* dir;
      size_t next;
      size_t path_len;
    };
    std::vector<Frame> stack;
    std::string path = "/";
    stack.push_back({&root, 0, 1});
    while (!stack.empty()) {
      Frame& frame = stack.back();
      if (frame.next == frame.dir->children.size()) {
        stack.pop_back();
        continue;
      }
      const size_t index = frame.next++;
      const Dirent& d = frame.dir->children[index];
      path.resize(frame.path_len);
      if (path.size() > 1) path += '/';
      path += d.name;
      validate_name(path, d.name);
      if (index > 0 && !(frame.dir->children[index - 1].name < d.name))
        fail(path, "directory entries are not sorted by name or not unique");
      if (!d.inode) fail(path, "entry has no inode");

      bool first = d.inode.use_count() == 1;
      if (!first) {
        auto [it, inserted] = shared_.try_emplace(d.inode.get(), SharedInode{&d, 0});
        first = inserted;
        // The inode's home is its dirent not marked as a link (C: the hardlink target),
        // else its first name in DFS order.
        if (!inserted && it->second.primary && it->second.primary->link && !d.link)
          it->second.primary = &d;
      }
      if (!first) {
        if (d.inode->is_dir()) fail(path, "directories cannot be hardlinked");
        continue;
      }
      const Inode& inode = *d.inode;
      validate_inode(path, inode);
      pair_bound_ += pair_bound(inode);
      n_inodes_++;
      if (inode.is_whiteout()) has_whiteout_ = true;
      if (inode.is_dir()) {
        // stack.size() is the new directory's depth below the root.
        if (stack.size() > kMaxDirDepth)
          fail(path.substr(0, 256) + "...",
               "directories nested deeper than " + std::to_string(kMaxDirDepth) + " levels");
        stack.push_back({&inode, 0, path.size()});  // invalidates frame
      }
    }
    // Version 1 marks whiteout directories for Linux >= 6.8 xwhiteouts; only trees that
    // have whiteouts move up, so their older digests stay the same.
    if (has_whiteout_ && version_ < 1 && max_version_ >= 1) version_ = 1;
  }

  bool is_primary(const Dirent& d) const {
    // Inodes referenced once were never entered in shared_ (use_count() is only a hint: an
    // extra reference held outside the tree just costs a lookup).
    if (d.inode.use_count() == 1) return true;
    auto it = shared_.find(d.inode.get());
    return it == shared_.end() || it->second.primary == &d;
  }

  // ---- directory entries ---------------------------------------------------------------------
  // Calls fn(const Entry&) for every entry of a directory in image order: the tree's children
  // merged (bytewise) with "." and "..", and for the root the missing 00..ff stubs.
  template <typename Fn>
  void for_each_entry(const Inode& dir, bool is_root, Fn&& fn) const {
    std::span<const Entry> extras =
        is_root ? std::span<const Entry>(root_extras_) : std::span<const Entry>(kDotEntries);
    const auto& children = dir.children;
    size_t ci = 0, ei = 0;
    while (ci < children.size() || ei < extras.size()) {
      if (ei == extras.size() ||
          (ci < children.size() && std::string_view(children[ci].name) < extras[ei].name)) {
        const Dirent& d = children[ci++];
        fn(Entry{d.name, Entry::kChild, 0, &d});
      } else {
        fn(extras[ei++]);
      }
    }
  }

  void prepare_root_extras() {
    root_extras_.assign(kDotEntries.begin(), kDotEntries.end());
    for (uint32_t i = 0; i < 256; i++)
      if (!tree_.root->find(stub_name(i)))
        root_extras_.push_back({stub_name(i), Entry::kStubEntry, static_cast<uint8_t>(i), nullptr});
  }

  // ---- pass 2: BFS records and xattr pair counts ----------------------------------------
  void build_records() {
    prepare_root_extras();
    const Inode& root = *tree_.root;
    for (size_t i = 0; i < root.xattrs.size(); i++)
      if (root.xattrs[i].name == kSelinuxName) root_selinux_ = static_cast<int>(i);

    count_table_.assign(pair_bound_ * 10 / 7 + 64, CountSlot{});
    pairs_.reserve(pair_bound_);
    records_.reserve(n_inodes_ + 256);
    min_mtime_ = {root.mtime_sec, root.mtime_nsec};
    records_.push_back(Record{.inode = &root, .flags = kRoot, .file_type = kFtDir});
    std::vector<XattrView> xattrs;
    for (size_t i = 0; i < records_.size(); i++) {
      const Record rec = records_[i];
      if (rec.inode && rec.inode->is_dir()) {
        const bool is_root = i == 0;
        const auto parent = static_cast<uint32_t>(i);
        uint8_t dir_flags = 0;
        uint64_t nlink = 2;
        records_[i].first_child = checked_index(records_.size());
        for_each_entry(*rec.inode, is_root, [&](const Entry& e) {
          if (e.kind == Entry::kStubEntry) {
            records_.push_back(Record{.parent = parent,
                                      .nlink = 1,
                                      .flags = kStub,
                                      .stub = e.stub,
                                      .file_type = kFtChrdev});
          } else if (e.kind == Entry::kChild) {
            const Inode* child = e.dirent->inode.get();
            nlink += child->is_dir();
            if (!is_primary(*e.dirent)) {
              dir_flags |= kLinkChildren;
              return;
            }
            uint8_t flags = 0;
            uint8_t type = file_type_of(child->mode);
            if (child->is_whiteout()) {
              flags = kWhiteout;
              type = kFtRegFile;
              dir_flags |= kWhiteoutParent;
            }
            if (e.dirent->inode.use_count() > 1) {
              if (auto it = shared_.find(child); it != shared_.end())
                it->second.record = checked_index(records_.size());
            }
            records_.push_back(Record{.inode = child,
                                      .parent = parent,
                                      .nlink = child->nlink,
                                      .flags = flags,
                                      .file_type = type});
          }
        });
        records_[i].flags |= dir_flags;
        records_[i].nlink = static_cast<uint32_t>(std::min<uint64_t>(nlink, UINT32_MAX));
      }
      if (rec.inode) {
        std::pair<int64_t, uint32_t> mtime{rec.inode->mtime_sec, rec.inode->mtime_nsec};
        min_mtime_ = std::min(min_mtime_, mtime);
      }
      collect_xattrs(static_cast<uint32_t>(i), xattrs);
      records_[i].n_pairs = static_cast<uint16_t>(xattrs.size());
      for (const XattrView& x : xattrs) {
        const XattrKey key = xattr_key(x.name);
        const size_t entry_size =
            round_up(sizeof(XattrEntry) + key.suffix.size() + x.value.size(), 4);
        pairs_.push_back({count_pair(static_cast<uint32_t>(i), x),
                          static_cast<uint32_t>(entry_size << 5) | filter_bit(key)});
        if (equal(x.name, {kAclAccessName, {}}) || equal(x.name, {kAclDefaultName, {}}))
          has_acl_ = true;
      }
    }
  }

  static uint32_t filter_bit(const XattrKey& key) {
    std::array<char, 2 * kXattrNameMax> buf;
    const size_t n = key.suffix.copy_to(buf.data());
    return XXH32(buf.data(), n, kXattrFilterSeed + key.index) & (kXattrFilterBits - 1);
  }

  uint32_t checked_index(size_t n) const {
    if (n >= std::numeric_limits<uint32_t>::max())
      throw Error("composefs image: too many inodes (more than 2^32)");
    return static_cast<uint32_t>(n);
  }

  const Inode& owner_of(const Record& rec) const { return rec.inode ? *rec.inode : *tree_.root; }

  XattrView user_xattr(const Inode& owner, uint16_t index) const {
    const Xattr& x = owner.xattrs[index];
    std::string_view name = x.name;
    // Escaping keeps user-supplied overlay xattrs from being interpreted by overlayfs.
    if (name.starts_with(kOverlayPrefix))
      return {{kEscapedOverlayPrefix, name.substr(kOverlayPrefix.size())}, {x.value, {}}, index};
    return {{name, {}}, {x.value, {}}, index};
  }

  XattrView generated_xattr(const Inode& owner, uint16_t source) const {
    switch (source) {
      case kSrcMetacopy: {
        if (!owner.digest) return {{kMetacopyName, {}}, {}, source};
        const Digest& d = *owner.digest;
        const char* header =
            d.algorithm() == HashAlgorithm::sha256 ? kMetacopySha256 : kMetacopySha512;
        std::string_view bytes(reinterpret_cast<const char*>(d.bytes().data()), d.size());
        return {{kMetacopyName, {}}, {{header, 4}, bytes}, source};
      }
      case kSrcRedirect:
        return {{kRedirectName, {}}, {"/", owner.payload}, source};
      case kSrcWhiteoutEscaped:
        return {{kEscapedWhiteoutName, {}}, {}, source};
      case kSrcWhiteoutUser:
        return {{kUserWhiteoutName, {}}, {}, source};
      case kSrcWhiteoutsEscaped:
        return {{kEscapedWhiteoutsName, {}}, {}, source};
      case kSrcWhiteoutsUser:
        return {{kUserWhiteoutsName, {}}, {}, source};
      case kSrcOpaqueEscaped:
        return {{kEscapedOpaqueName, {}}, {"x", {}}, source};
      case kSrcOpaqueUser:
        return {{kUserOpaqueName, {}}, {"x", {}}, source};
      default:
        return {{kOpaqueName, {}}, {"y", {}}, source};
    }
  }

  XattrView resolve(uint32_t record, uint16_t source) const {
    const Inode& owner = owner_of(records_[record]);
    return source < kMaxUserXattrs ? user_xattr(owner, source) : generated_xattr(owner, source);
  }

  // The record's final xattrs (after the overlay rewrite), sorted by name.
  void collect_xattrs(uint32_t r, std::vector<XattrView>& out) const {
    out.clear();
    const Record& rec = records_[r];
    if (rec.flags & kStub) {
      // Stubs inherit the root's SELinux label so the lower layer's object dirs stay hidden
      // under the same policy.
      if (root_selinux_ >= 0) out.push_back(user_xattr(*tree_.root, root_selinux_));
      return;
    }
    const Inode& inode = *rec.inode;
    for (size_t i = 0; i < inode.xattrs.size(); i++)
      out.push_back(user_xattr(inode, static_cast<uint16_t>(i)));
    // Sets (adds or replaces) a generated xattr. Only the whiteout markers can meet an
    // existing name: user trusted.overlay.* xattrs were escaped, so the metacopy, redirect
    // and opaque=y names are always new.
    auto set = [&](uint16_t source, bool may_exist = true) {
      XattrView x = generated_xattr(inode, source);
      auto it = may_exist ? std::find_if(out.begin(), out.end(),
                                         [&](const XattrView& e) { return equal(e.name, x.name); })
                          : out.end();
      if (it != out.end()) out.erase(it);
      out.push_back(x);
    };
    if (inode.is_external()) {
      set(kSrcMetacopy, false);
      if (!inode.payload.empty()) set(kSrcRedirect, false);
    }
    if (rec.flags & kWhiteout) {
      set(kSrcWhiteoutEscaped);
      set(kSrcWhiteoutUser);
    }
    if (rec.flags & kWhiteoutParent) {
      set(kSrcWhiteoutsEscaped);
      set(kSrcWhiteoutsUser);
      if (version_ >= 1) {
        set(kSrcOpaqueEscaped);
        set(kSrcOpaqueUser);
      }
    }
    if (rec.flags & kRoot) set(kSrcRootOpaque, false);
    std::sort(out.begin(), out.end(),
              [](const XattrView& a, const XattrView& b) { return compare(a.name, b.name) < 0; });
    for (size_t i = 1; i < out.size(); i++)
      if (equal(out[i - 1].name, out[i].name))
        fail(record_path(r), "duplicate xattr name after escaping overlay xattrs");
  }

  // Counting table: open addressing, linear probing; a slot names its pair by
  // (record, source) so equal hashes are confirmed against the real bytes.
  struct CountSlot {
    uint64_t hash = 0;
    uint32_t record = 0;
    uint16_t source = 0;
    uint16_t count = 0;  // saturates at 2: only "used more than once" matters
  };

  size_t slot_for(uint64_t hash, size_t capacity) const {
    return static_cast<size_t>((static_cast<unsigned __int128>(hash) * capacity) >> 64);
  }

  uint32_t count_pair(uint32_t record, const XattrView& x) {
    const uint64_t hash = hash_pair(x, scratch_);
    const size_t cap = count_table_.size();
    for (size_t i = slot_for(hash, cap);; i = i + 1 == cap ? 0 : i + 1) {
      CountSlot& slot = count_table_[i];
      if (slot.hash == 0) {
        slot = {hash, record, x.source, 1};
        return static_cast<uint32_t>(i);
      }
      if (slot.hash == hash) {
        XattrView other = resolve(slot.record, slot.source);
        if (equal(other.name, x.name) && equal(other.value, x.value)) {
          slot.count = 2;
          return static_cast<uint32_t>(i);
        }
      }
    }
  }

  // ---- shared xattr table ---------------------------------------------------------------
  struct SharedXattr {
    XattrView xattr;
    uint32_t slot;    // in the counting table
    uint32_t offset;  // bytes from the start of the shared table
  };

  void build_shared_table() {
    for (size_t i = 0; i < count_table_.size(); i++) {
      const CountSlot& slot = count_table_[i];
      if (slot.count > 1)
        shared_xattrs_.push_back({resolve(slot.record, slot.source), static_cast<uint32_t>(i), 0});
    }

    // Name descending, then value length descending, then value bytes descending.
    std::sort(shared_xattrs_.begin(), shared_xattrs_.end(),
              [](const SharedXattr& a, const SharedXattr& b) {
                int r = compare(a.xattr.name, b.xattr.name);
                if (r != 0) return r > 0;
                if (a.xattr.value.size() != b.xattr.value.size())
                  return a.xattr.value.size() > b.xattr.value.size();
                return compare(a.xattr.value, b.xattr.value) > 0;
              });
    uint64_t offset = 0;
    for (SharedXattr& s : shared_xattrs_) {
      s.offset = static_cast<uint32_t>(offset);
      offset += xattr_entry_size(s.xattr);
      if (offset > std::numeric_limits<uint32_t>::max())
        throw Error("composefs image: shared xattr table is larger than 4 GiB");
    }
    shared_size_ = offset;

    // Resolve every pair to its shared index once, so later passes read pairs_ sequentially
    // and the counting table can go.
    for (uint32_t k = 0; k < shared_xattrs_.size(); k++)
      count_table_[shared_xattrs_[k].slot].record = k;
    for (PairRef& p : pairs_) {
      const CountSlot& slot = count_table_[p.slot];
      p.slot = slot.count > 1 ? slot.record : kNotShared;
    }
    std::vector<CountSlot>().swap(count_table_);
  }

  // Shared index of each of the record's pairs (only the first kMaxShared shared ones;
  // the rest are stored inline), -1 for inline ones. Returns the xattr body size.
  size_t classify_pairs(std::span<const PairRef> pairs, std::vector<int64_t>& shared) const {
    shared.clear();
    if (pairs.empty()) return 0;
    size_t n_shared = 0;
    size_t size = sizeof(XattrIbodyHeader);
    for (const PairRef& p : pairs) {
      if (p.slot != kNotShared && n_shared < kMaxShared) {
        n_shared++;
        shared.push_back(p.slot);
        size += sizeof(uint32_t);
      } else {
        shared.push_back(-1);
        size += p.entry_size();
      }
    }
    return size;
  }

  // ---- pass 3: layout ------------------------------------------------------------------
  uint32_t mode_of(const Record& rec) const {
    if (rec.flags & kStub) return S_IFCHR | 0644;
    if (rec.flags & kWhiteout) return S_IFREG | (rec.inode->mode & ~S_IFMT);
    return rec.inode->mode;
  }

  static uint32_t nlink_of(const Record& rec) { return rec.nlink; }

  // st_size as the C writer sees it after the rewrite (directories: the EROFS size).
  uint64_t size_of(const Record& rec) const {
    if (rec.flags & (kStub | kWhiteout)) return 0;
    if (rec.inode->is_dir()) return uint64_t{rec.n_blocks} * kBlock + rec.tail;
    if (rec.inode->is_symlink()) return rec.inode->payload.size();
    return rec.inode->size;
  }

  // Greedy packing of dirents into blocks; returns {full blocks, bytes of the last chunk}.
  std::pair<uint64_t, uint64_t> pack_dir(const Inode& dir, bool is_root) const {
    uint64_t blocks = 0, cur = 0;
    for_each_entry(dir, is_root, [&](const Entry& e) {
      uint64_t len = sizeof(DiskDirent) + e.name.size();
      if (cur + len > kBlock) {
        blocks++;
        cur = 0;
      }
      cur += len;
    });
    return {blocks, cur};
  }

  void compute_sizes(Record& rec, bool is_root) const {
    uint64_t blocks = 0, tail = 0;
    if (rec.inode && !(rec.flags & kWhiteout)) {
      const Inode& inode = *rec.inode;
      if (inode.is_dir()) {
        std::tie(blocks, tail) = pack_dir(inode, is_root);
        // Never inline more than half a block.
        if (tail > kBlock / 2) {
          blocks++;
          tail = 0;
        }
      } else if (inode.is_symlink()) {
        tail = inode.payload.size();
      } else if (inode.is_reg() && inode.size > 0) {
        if (inode.content) {
          blocks = inode.size / kBlock;
          tail = inode.size % kBlock;
          if (tail > kBlock / 2) {
            blocks++;
            tail = 0;
          }
        } else {
          tail = chunking(inode.size).count * sizeof(uint32_t);
        }
      }
    }
    if (blocks > UINT32_MAX) fail(record_path(rec), "directory is too large");
    rec.n_blocks = static_cast<uint32_t>(blocks);
    rec.tail = static_cast<uint16_t>(tail);
  }

  bool fits_compact(const Record& rec) const {
    const Inode& attrs = owner_of(rec);
    return std::pair<int64_t, uint32_t>{attrs.mtime_sec, attrs.mtime_nsec} == min_mtime_ &&
           nlink_of(rec) <= UINT16_MAX && attrs.uid <= UINT16_MAX && attrs.gid <= UINT16_MAX &&
           size_of(rec) <= UINT32_MAX;
  }

  // Padding before an inode so that its inline tail never crosses a block boundary
  // (symlinks: the whole inode, or the target moves to its own block).
  uint64_t tail_padding(Record& rec, uint64_t pos, uint64_t inode_size) const {
    const uint64_t non_tail = inode_size + xattr_ibody_size(rec.xattr_icount);
    if (rec.inode && !(rec.flags & kWhiteout) && rec.inode->is_symlink()) {
      const uint64_t total = non_tail + rec.tail;
      const bool crosses = pos / kBlock != (pos + total - 1) / kBlock;
      if (total >= kBlock) {
        rec.n_blocks++;
        rec.tail = 0;
      }
      return crosses ? round_up(pos, kBlock) - pos : 0;
    }
    uint64_t remainder = kBlock - (pos + non_tail) % kBlock;
    if (remainder >= rec.tail) return 0;
    const uint64_t pad = round_up(remainder, kSlot);
    remainder = kBlock - (pos + non_tail + pad) % kBlock;
    if (rec.tail <= remainder) return pad;
    rec.n_blocks++;
    rec.tail = 0;
    return round_up(pos, kBlock) - pos;
  }

  void compute_layout() {
    std::vector<int64_t> shared;
    uint64_t pos = kSuperblockOffset + sizeof(Superblock);
    size_t pair_cursor = 0;
    for (size_t i = 0; i < records_.size(); i++) {
      Record& rec = records_[i];
      compute_sizes(rec, i == 0);
      if (fits_compact(rec)) rec.flags |= kCompact;
      const uint64_t inode_size =
          (rec.flags & kCompact) ? sizeof(InodeCompact) : sizeof(InodeExtended);

      const size_t xattr_size =
          classify_pairs(std::span(pairs_).subspan(pair_cursor, rec.n_pairs), shared);
      pair_cursor += rec.n_pairs;
      // i_xattr_icount is 16 bits: at most 262148 bytes of xattrs per inode. (Tighter
      // limits, such as the C tools' 32767-byte budget, belong to the input parsers.)
      if (xattr_size > xattr_ibody_size(UINT16_MAX))
        fail(record_path(rec),
             "xattrs need " + std::to_string(xattr_size) + " bytes, more than the " +
                 std::to_string(xattr_ibody_size(UINT16_MAX)) + " an inode can hold");
      rec.xattr_icount =
          xattr_size == 0 ? 0
                          : static_cast<uint16_t>((xattr_size - sizeof(XattrIbodyHeader)) / 4 + 1);

      const uint64_t slot_pos = round_up(pos, kSlot);
      const uint64_t extra = tail_padding(rec, slot_pos, inode_size);
      rec.ipad = static_cast<uint16_t>(slot_pos - pos + extra);
      pos = slot_pos + extra;
      if (pos / kSlot > UINT32_MAX) throw Error("composefs image: too much inode metadata");
      rec.nid = static_cast<uint32_t>(pos / kSlot);
      pos += inode_size + xattr_ibody_size(rec.xattr_icount) + rec.tail;
      n_data_blocks_ += rec.n_blocks;
    }
    inodes_end_ = round_up(pos, kSlot);
    data_start_ = round_up(inodes_end_ + shared_size_, kBlock);
    if (data_start_ / kBlock + n_data_blocks_ > UINT32_MAX)
      throw Error("composefs image: image would exceed 2^32 blocks");
  }

  // ---- error paths -----------------------------------------------------------------------
  std::string record_path(uint32_t r) const { return record_path(records_[r]); }
  std::string record_path(const Record& rec) const {
    if (rec.flags & kRoot) return "/";
    std::vector<std::string_view> parts;
    const Record* cur = &rec;
    while (!(cur->flags & kRoot)) {
      const Record& parent = records_[cur->parent];
      if (cur->flags & kStub) {
        parts.push_back(stub_name(cur->stub));
      } else {
        for (const Dirent& d : parent.inode->children)
          if (d.inode.get() == cur->inode) {
            parts.push_back(d.name);
            break;
          }
      }
      cur = &parent;
    }
    std::string path;
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) path.append("/").append(*it);
    return path;
  }

  // ---- pass 4: emit --------------------------------------------------------------------
  void emit_image(Emitter& out) {
    ComposefsHeader header{};
    header.magic = kComposefsMagic;
    header.version = kComposefsHeaderVersion;
    header.flags = has_acl_ ? kComposefsFlagHasAcl : 0;
    header.composefs_version = version_;
    out.put_struct(header);
    out.zeros(kSuperblockOffset - sizeof header);

    Superblock sb{};
    sb.magic = kErofsMagic;
    sb.feature_compat = kFeatureCompatMtime | kFeatureCompatXattrFilter;
    sb.blkszbits = kBlockSizeBits;
    sb.root_nid = static_cast<uint16_t>(records_[0].nid);
    sb.inos = records_.size();
    sb.build_time = static_cast<uint64_t>(min_mtime_.first);  // two's complement, as C
    sb.build_time_nsec = min_mtime_.second;
    sb.blocks = static_cast<uint32_t>(data_start_ / kBlock + n_data_blocks_);
    sb.meta_blkaddr = 0;
    sb.xattr_blkaddr = static_cast<uint32_t>(inodes_end_ / kBlock);
    out.put_struct(sb);

    uint64_t next_block = data_start_;
    std::vector<XattrView> xattrs;
    std::vector<int64_t> shared;
    size_t pair_cursor = 0;
    for (size_t i = 0; i < records_.size(); i++) {
      const Record& rec = records_[i];
      const auto pairs = std::span(pairs_).subspan(pair_cursor, rec.n_pairs);
      pair_cursor += rec.n_pairs;
      classify_pairs(pairs, shared);
      xattrs.clear();
      // The bytes are needed only for xattrs stored inline.
      if (std::find(shared.begin(), shared.end(), -1) != shared.end())
        collect_xattrs(static_cast<uint32_t>(i), xattrs);
      emit_inode(out, static_cast<uint32_t>(i), pairs, xattrs, shared, next_block);
    }
    out.align(kSlot);
    for (const SharedXattr& s : shared_xattrs_) emit_xattr_entry(out, s.xattr);
    out.align(kBlock);
    for (size_t i = 0; i < records_.size(); i++) emit_data_blocks(out, static_cast<uint32_t>(i));
  }

  void emit_inode(Emitter& out, uint32_t r, std::span<const PairRef> pairs,
                  const std::vector<XattrView>& xattrs, const std::vector<int64_t>& shared,
                  uint64_t& next_block) {
    const Record& rec = records_[r];
    const Inode& attrs = owner_of(rec);
    const uint32_t mode = mode_of(rec);
    const uint32_t type = mode & S_IFMT;
    out.zeros(rec.ipad);

    DataLayout layout = rec.tail > 0 ? DataLayout::flat_inline : DataLayout::flat_plain;
    uint32_t i_u = 0;
    uint64_t chunk_count = 0;
    if (rec.n_blocks > 0) {
      i_u = static_cast<uint32_t>(next_block / kBlock);
      next_block += uint64_t{rec.n_blocks} * kBlock;
    }
    if (type == S_IFCHR || type == S_IFBLK) {
      i_u = static_cast<uint32_t>(rec.inode ? rec.inode->rdev : 0);
    } else if (type == S_IFREG && rec.inode && !(rec.flags & kWhiteout) &&
               rec.inode->is_external()) {
      const Chunking c = chunking(rec.inode->size);
      chunk_count = c.count;
      layout = DataLayout::chunk_based;
      // The chunk format shares i_u with raw_blkaddr and overwrites only its low half.
      i_u = (i_u & 0xffff0000u) | (c.bits - kBlockSizeBits);
    }

    const uint16_t icount = rec.xattr_icount;
    // Devices, fifos and sockets store size 0 whatever st_size said (it still decided
    // compact vs extended above, as in the C writer).
    const uint64_t size = type == S_IFREG || type == S_IFDIR || type == S_IFLNK ? size_of(rec) : 0;
    const uint64_t ino = r;
    if (rec.flags & kCompact) {
      InodeCompact in{};
      in.i_format = make_i_format(false, layout);
      in.i_xattr_icount = icount;
      in.i_mode = static_cast<uint16_t>(mode);
      in.i_nlink = static_cast<uint16_t>(nlink_of(rec));
      in.i_size = static_cast<uint32_t>(size);
      in.i_u = i_u;
      in.i_ino = static_cast<uint32_t>(ino);
      in.i_uid = static_cast<uint16_t>(attrs.uid);
      in.i_gid = static_cast<uint16_t>(attrs.gid);
      out.put_struct(in);
    } else {
      InodeExtended in{};
      in.i_format = make_i_format(true, layout);
      in.i_xattr_icount = icount;
      in.i_mode = static_cast<uint16_t>(mode);
      in.i_size = size;
      in.i_u = i_u;
      in.i_ino = static_cast<uint32_t>(ino);
      in.i_uid = attrs.uid;
      in.i_gid = attrs.gid;
      in.i_mtime = static_cast<uint64_t>(attrs.mtime_sec);
      in.i_mtime_nsec = attrs.mtime_nsec;
      in.i_nlink = nlink_of(rec);
      out.put_struct(in);
    }

    if (!pairs.empty()) {
      XattrIbodyHeader h{};
      uint32_t bits = 0;
      for (const PairRef& p : pairs) bits |= 1u << p.filter_bit();
      h.h_name_filter = ~bits;
      size_t n_shared = 0;
      for (int64_t s : shared) n_shared += s >= 0;
      h.h_shared_count = static_cast<uint8_t>(n_shared);
      out.put_struct(h);
      for (int64_t s : shared) {
        if (s < 0) continue;
        le32 id = static_cast<uint32_t>((inodes_end_ % kBlock + shared_xattrs_[s].offset) / 4);
        out.put_struct(id);
      }
      for (size_t i = 0; i < shared.size(); i++)
        if (shared[i] < 0) emit_xattr_entry(out, xattrs[i]);
    }

    if (rec.tail == 0) return;
    if (type == S_IFDIR) {
      emit_dirents(out, r, false);
    } else if (type == S_IFLNK) {
      out.put(rec.inode->payload);
    } else if (chunk_count > 0) {
      emit_null_chunks(out, chunk_count);
    } else {
      const std::string& content = *rec.inode->content;
      out.put(std::string_view(content).substr(content.size() - rec.tail));
    }
  }

  static void emit_xattr_entry(Emitter& out, const XattrView& x) {
    const XattrKey key = xattr_key(x.name);
    XattrEntry e{};
    e.e_name_len = static_cast<uint8_t>(key.suffix.size());
    e.e_name_index = key.index;
    e.e_value_size = static_cast<uint16_t>(x.value.size());
    out.put_struct(e);
    out.put(key.suffix);
    out.put(x.value);
    out.align(4);
  }

  static void emit_null_chunks(Emitter& out, uint64_t count) {
    const le32 null_addr = static_cast<uint32_t>(kNullAddr);
    for (uint64_t i = 0; i < count; i++) out.put_struct(null_addr);
  }

  struct OutEntry {
    std::string_view name;
    uint64_t nid;
    uint8_t file_type;
  };

  uint32_t record_of(const Dirent& d, bool all_primary, uint32_t& next_primary) const {
    if (all_primary || is_primary(d)) return next_primary++;
    return shared_.find(d.inode.get())->second.record;
  }

  // Writes a directory's full blocks (blocks=true) or its inline tail (blocks=false).
  void emit_dirents(Emitter& out, uint32_t r, bool blocks) {
    const Record& rec = records_[r];
    uint32_t next_primary = rec.first_child;
    const bool all_primary = !(rec.flags & kLinkChildren);
    entries_.clear();
    for_each_entry(*rec.inode, r == 0, [&](const Entry& e) {
      uint32_t target = r;
      switch (e.kind) {
        case Entry::kChild:
          target = record_of(*e.dirent, all_primary, next_primary);
          break;
        case Entry::kStubEntry:
          target = next_primary++;
          break;
        case Entry::kDot:
          break;
        case Entry::kDotDot:
          target = rec.parent;
          break;
      }
      const Record& t = records_[target];
      entries_.push_back({e.name, t.nid, t.file_type});
    });

    size_t first = 0, cur = 0, full_blocks = 0;
    for (size_t i = 0; i < entries_.size(); i++) {
      size_t len = sizeof(DiskDirent) + entries_[i].name.size();
      if (cur + len > kBlock) {
        if (blocks) emit_dirent_chunk(out, first, i, true);
        full_blocks++;
        first = i;
        cur = 0;
      }
      cur += len;
    }
    // The last chunk is a block if layout decided so, else the inline tail.
    if (full_blocks < rec.n_blocks) {
      if (blocks) emit_dirent_chunk(out, first, entries_.size(), true);
    } else if (!blocks && cur > 0) {
      emit_dirent_chunk(out, first, entries_.size(), false);
    }
  }

  void emit_dirent_chunk(Emitter& out, size_t begin, size_t end, bool full_block) {
    const uint64_t start = out.offset();
    uint64_t nameoff = (end - begin) * sizeof(DiskDirent);
    for (size_t i = begin; i < end; i++) {
      DiskDirent d{};
      d.nid = entries_[i].nid;
      d.nameoff = static_cast<uint16_t>(nameoff);
      d.file_type = entries_[i].file_type;
      out.put_struct(d);
      nameoff += entries_[i].name.size();
    }
    for (size_t i = begin; i < end; i++) out.put(entries_[i].name);
    if (full_block) out.zeros(kBlock - (out.offset() - start));
  }

  void emit_data_blocks(Emitter& out, uint32_t r) {
    const Record& rec = records_[r];
    if (rec.n_blocks == 0) return;
    const uint32_t type = mode_of(rec) & S_IFMT;
    if (type == S_IFDIR) {
      emit_dirents(out, r, true);
    } else if (type == S_IFLNK) {
      out.put(rec.inode->payload);
      out.align(kBlock);
    } else if (!rec.inode->content) {
      // A chunk map too big to inline: one block of null chunk addresses.
      emit_null_chunks(out, kBlock / sizeof(uint32_t));
    } else {
      out.put(std::string_view(*rec.inode->content).substr(0, uint64_t{rec.n_blocks} * kBlock));
      out.align(kBlock);
    }
  }

  const Tree& tree_;
  uint32_t version_ = 0;
  uint32_t max_version_ = 1;
  bool has_whiteout_ = false;
  bool has_acl_ = false;
  size_t pair_bound_ = 0;
  size_t n_inodes_ = 1;
  int root_selinux_ = -1;
  // Signed: C compares time_t values, so an inode before 1970 sets the build time.
  std::pair<int64_t, uint32_t> min_mtime_{};
  std::unordered_map<const Inode*, SharedInode> shared_;
  std::vector<Entry> root_extras_;
  std::vector<Record> records_;
  std::vector<CountSlot> count_table_;
  std::vector<SharedXattr> shared_xattrs_;
  std::vector<PairRef> pairs_;
  std::vector<char> scratch_;
  std::vector<OutEntry> entries_;
  uint64_t shared_size_ = 0;
  uint64_t n_data_blocks_ = 0;
  uint64_t inodes_end_ = 0;
  uint64_t data_start_ = 0;
};

}  // namespace

WriteResult write_image(const Tree& tree, OutputSink& out, const WriterOptions& options) {
  return ImageWriter(tree, options).write(out);
}

std::string image_to_string(const Tree& tree, const WriterOptions& options) {
  StringSink sink;
  write_image(tree, sink, options);
  return std::move(sink.str());
}

}  // namespace cfs::erofs
