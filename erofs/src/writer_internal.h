// Internals of the composefs EROFS writer, shared by its passes: validation and tree scan
// (writer.cc), records and xattrs (writer_records.cc), layout (writer_layout.cc) and output
// (writer_emit.cc). See writer.cc for the design.
#pragma once

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cfs/erofs/composefs.h"
#include "cfs/erofs/format.h"
#include "cfs/erofs/writer.h"
#include "cfs/error.h"

namespace cfs::erofs::writer_impl {

constexpr uint64_t kBlock = kBlockSize;
constexpr uint64_t kSlot = kInodeSlotSize;
constexpr size_t kSymlinkMax = kSymlinkMaxCompat;  // PATH_MAX - 1
constexpr size_t kMaxShared = kMaxSharedXattrsPerInode;

constexpr uint64_t round_up(uint64_t v, uint64_t align) {
  return (v + align - 1) / align * align;
}

// ---- xattr names the writer looks for ------------------------------------------------------
constexpr std::string_view kSelinuxName = "security.selinux";
constexpr std::string_view kAclAccessName = "system.posix_acl_access";
constexpr std::string_view kAclDefaultName = "system.posix_acl_default";

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
inline int compare(const Bytes2& a, const Bytes2& b) noexcept {
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
inline bool equal(const Bytes2& a, const Bytes2& b) noexcept {
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
inline XattrKey xattr_key(const Bytes2& name) noexcept {
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

inline size_t xattr_entry_size(const XattrView& x) noexcept {
  return round_up(sizeof(XattrEntry) + xattr_key(x.name).suffix.size() + x.value.size(), 4);
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
inline Chunking chunking(uint64_t size) {
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

// Streams an image: body(Emitter&) emits it, and the bytes are counted and, if asked, hashed
// on their way to out.
template <typename Body>
WriteResult stream_image(OutputSink& out, bool compute_digest, Body&& body) {
  VeritySink verity(&out, compute_digest ? std::optional(HashAlgorithm::sha256) : std::nullopt);
  Emitter emit(verity);
  const uint32_t version = body(emit);
  emit.flush();
  verity.flush();
  WriteResult result;
  result.version = version;
  result.size = verity.size();
  if (verity.hashing()) result.digest = verity.finish();
  return result;
}

class ImageWriter {
 public:
  ImageWriter(const Tree& tree, const WriterOptions& options);
  WriteResult write(OutputSink& out);

 private:
  // ---- pass 1: DFS validation ---------------------------------------------------------------
  [[noreturn]] static void fail(const std::string& path, const std::string& what);
  void validate_name(const std::string& path, std::string_view name);
  void validate_inode(const std::string& path, const Inode& inode);

  void scan_tree();
  bool is_primary(const Dirent& d) const;

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

  void prepare_root_extras();

  // ---- pass 2: BFS records and xattr pair counts ----------------------------------------
  void build_records();
  static uint32_t filter_bit(const XattrKey& key);
  uint32_t checked_index(size_t n) const;
  const Inode& owner_of(const Record& rec) const { return rec.inode ? *rec.inode : *tree_.root; }

  XattrView user_xattr(const Inode& owner, uint16_t index) const;
  XattrView generated_xattr(const Inode& owner, uint16_t source) const;
  XattrView resolve(uint32_t record, uint16_t source) const;

  // The record's final xattrs (after the overlay rewrite), sorted by name.
  void collect_xattrs(uint32_t r, std::vector<XattrView>& out) const;

  // Counting table: open addressing, linear probing; a slot names its pair by
  // (record, source) so a matching tag is confirmed against the real bytes. 8 bytes a slot:
  // the table holds every distinct pair of the image (two for each external file).
  struct CountSlot {
    uint32_t record = 0;
    uint16_t source = 0;
    // 14 bits of the pair's hash (those not used for the slot index) << 2 | count; the
    // count saturates at 2 (only "used more than once" matters), 0 marks an empty slot.
    uint16_t tag_count = 0;
    uint32_t count() const noexcept { return tag_count & 3u; }
    uint16_t tag() const noexcept { return static_cast<uint16_t>(tag_count >> 2); }
  };
  static_assert(sizeof(CountSlot) == 8);

  size_t slot_for(uint64_t hash, size_t capacity) const;
  uint32_t count_pair(uint32_t record, const XattrView& x);

  // ---- shared xattr table ---------------------------------------------------------------
  struct SharedXattr {
    XattrView xattr;
    uint32_t slot;    // in the counting table
    uint32_t offset;  // bytes from the start of the shared table
  };

  void build_shared_table();

  // Shared index of each of the record's pairs (only the first kMaxShared shared ones;
  // the rest are stored inline), -1 for inline ones. Returns the xattr body size.
  size_t classify_pairs(std::span<const PairRef> pairs, std::vector<int64_t>& shared) const;

  // ---- pass 3: layout ------------------------------------------------------------------
  uint32_t mode_of(const Record& rec) const;
  static uint32_t nlink_of(const Record& rec) { return rec.nlink; }

  // st_size as the C writer sees it after the rewrite (directories: the EROFS size).
  uint64_t size_of(const Record& rec) const;

  // Greedy packing of dirents into blocks; returns {full blocks, bytes of the last chunk}.
  std::pair<uint64_t, uint64_t> pack_dir(const Inode& dir, bool is_root) const;
  void compute_sizes(Record& rec, bool is_root) const;
  bool fits_compact(const Record& rec) const;

  // Padding before an inode so that its inline tail never crosses a block boundary
  // (symlinks: the whole inode, or the target moves to its own block).
  uint64_t tail_padding(Record& rec, uint64_t pos, uint64_t inode_size) const;
  void compute_layout();

  // ---- error paths -----------------------------------------------------------------------
  std::string record_path(uint32_t r) const { return record_path(records_[r]); }
  std::string record_path(const Record& rec) const;

  // ---- pass 4: emit --------------------------------------------------------------------
  void emit_image(Emitter& out);
  void emit_inode(Emitter& out, uint32_t r, std::span<const PairRef> pairs,
                  const std::vector<XattrView>& xattrs, const std::vector<int64_t>& shared,
                  uint64_t& next_block);
  static void emit_xattr_entry(Emitter& out, const XattrView& x);
  static void emit_null_chunks(Emitter& out, uint64_t count);

  struct OutEntry {
    std::string_view name;
    uint64_t nid;
    uint8_t file_type;
  };

  uint32_t record_of(const Dirent& d, bool all_primary, uint32_t& next_primary) const;

  // Writes a directory's full blocks (blocks=true) or its inline tail (blocks=false).
  void emit_dirents(Emitter& out, uint32_t r, bool blocks);
  void emit_dirent_chunk(Emitter& out, size_t begin, size_t end, bool full_block);
  void emit_data_blocks(Emitter& out, uint32_t r);

  const Tree& tree_;
  uint32_t version_ = 0;
  uint32_t max_version_ = 1;
  bool compute_digest_ = true;
  bool has_whiteout_ = false;
  bool has_acl_ = false;
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
  std::string content_buf_;  // inline content read back from Tree::content_source
  uint64_t shared_size_ = 0;
  uint64_t n_data_blocks_ = 0;
  uint64_t inodes_end_ = 0;
  uint64_t data_start_ = 0;
};

// Format V2 (composefs-rs' layout): writer_v2.cc.
WriteResult write_image_v2(const Tree& tree, OutputSink& out, bool compute_digest);

}  // namespace cfs::erofs::writer_impl
