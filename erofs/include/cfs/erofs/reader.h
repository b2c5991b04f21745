// The strict composefs EROFS reader: the one reader every cfs consumer uses (dump, the
// composefs-info drop-in, repository fsck and GC, the FUSE server, mounting).
//
// Two layers:
//  * Lazy access by nid (inode(), dirents(), lookup(), xattrs(), read()...): no tree is
//    built, nothing is copied, every offset is bounds-checked when it is touched, so the
//    FUSE server stays within bounded memory on huge images. These functions check only
//    what they need to stay in bounds; a malformed structure they touch throws cfs::Error
//    ("IMAGE: inode NID: RULE"). Run validate() once first to get the full rule set.
//  * validate() / to_tree() / objects(): one iterative strict walk over the whole image
//    that checks every rule and throws cfs::Error("IMAGE: PATH: RULE") on the first broken
//    one. Memory is proportional to the image size, never to numbers read from it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/digest.h"
#include "cfs/erofs/dumpfile.h"
#include "cfs/erofs/format.h"
#include "cfs/erofs/tree.h"

namespace cfs::erofs {

struct ReaderOptions {
  // Longest symlink target accepted: kSymlinkMaxCfs (XFS's limit, what cfs writes) or
  // kSymlinkMaxCompat (PATH_MAX - 1, what the C tools accept).
  size_t max_symlink = kSymlinkMaxCfs;
  // true (cfs): a trusted.overlay.redirect must be exactly "/" + 2 hex + "/" + 62 or 126
  // lowercase hex, and must name the metacopy digest's object when there is one.
  // false (C-compatible): any "/"-rooted relative path without empty, "." or ".."
  // components (the C test vectors carry names like "ab/cdef….file").
  bool object_redirects_only = true;
  // false: every page of the image is read in when it is opened and stays resident (an
  // unreadable block is an error at open, and walks take no page faults). true, for one-pass
  // tools over large images (composefs-info): the file is checked readable when opened
  // without keeping its pages, mapped lazily, and release_pages() drops what was read.
  bool low_memory = false;

  // The rules the composefs-info / mkcomposefs drop-ins apply to C-made images.
  static ReaderOptions compat() { return {kSymlinkMaxCompat, false, false}; }
};

// The decoded fixed part of one inode, plus where its variable parts live in the image.
struct InodeInfo {
  uint64_t nid = 0;
  uint32_t mode = 0;  // st_mode (16 bits on disk)
  uint32_t nlink = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t rdev = 0;      // character/block devices only, as stored (low 32 bits of st_rdev)
  uint64_t size = 0;      // i_size; for directories the EROFS directory size
  int64_t mtime_sec = 0;  // compact inodes: the superblock build time
  uint32_t mtime_nsec = 0;
  uint32_t ino = 0;  // i_ino
  bool extended = false;
  DataLayout layout = DataLayout::flat_plain;
  uint32_t raw_u = 0;  // i_u: block address / rdev / chunk format
  uint16_t xattr_icount = 0;
  uint64_t xattr_offset = 0;  // image offset of the xattr body (xattr_size bytes)
  uint32_t xattr_size = 0;
  uint64_t tail_offset = 0;  // image offset of the inline data right after the xattrs

  uint32_t type() const noexcept { return mode & S_IFMT; }
  bool is_dir() const noexcept { return type() == S_IFDIR; }
  bool is_reg() const noexcept { return type() == S_IFREG; }
  bool is_symlink() const noexcept { return type() == S_IFLNK; }
  // A regular file whose data lives in the object store (chunk-based, holes only).
  bool is_external() const noexcept { return is_reg() && layout == DataLayout::chunk_based; }
};

// One directory entry; name points into the image.
struct DirEntry {
  std::string_view name;
  uint64_t nid = 0;
  uint8_t file_type = kFtUnknown;  // FileType
};

// One xattr as stored; suffix and value point into the image.
struct XattrView {
  uint8_t name_index = 0;  // XattrIndex
  std::string_view suffix;
  std::string_view value;
  bool shared = false;
  uint32_t shared_id = 0;  // index into the shared xattr area, when shared

  std::string_view prefix() const noexcept;  // "user.", "trusted.", ... ("" for index 0)
  std::string name() const;                  // prefix + suffix
  bool name_is(std::string_view full_name) const noexcept;
};

class Image;

// Iterates one directory's entries in on-disk (sorted) order without allocating.
class DirCursor {
 public:
  // Fills entry and returns true, or returns false at the end. Throws on a malformed block.
  bool next(DirEntry& entry);
  // Ordinal of the entry the next call to next() returns (0 = the first, usually ".").
  // A FUSE readdir offset: Image::dirents(dir, position) resumes there.
  uint64_t position() const noexcept { return position_; }

 private:
  friend class Image;
  DirCursor(const Image& image, const InodeInfo& dir);
  bool load_chunk();

  const Image* image_;
  InodeInfo dir_;
  uint64_t chunk_ = 0;  // index of the next directory block (the inline tail is last)
  uint64_t chunk_count_ = 0;
  std::span<const std::byte> bytes_;
  uint32_t index_ = 0;
  uint32_t count_ = 0;
  uint64_t position_ = 0;
};

// Iterates one inode's xattrs, inline ones first, then shared ones, without allocating.
class XattrCursor {
 public:
  bool next(XattrView& xattr);
  uint8_t shared_count() const noexcept { return shared_count_; }

 private:
  friend class Image;
  XattrCursor(const Image& image, const InodeInfo& inode);

  const Image* image_;
  uint64_t nid_ = 0;
  uint64_t shared_ids_ = 0;  // image offset of the shared id array
  uint8_t shared_count_ = 0;
  uint8_t shared_next_ = 0;
  uint64_t pos_ = 0;  // next inline entry
  uint64_t end_ = 0;  // end of the xattr body
};

class Image {
 public:
  // Maps the file read-only; validates the composefs header and the superblock.
  static Image open(const std::string& path, const ReaderOptions& options = {});
  // Maps an open fd (not owned); name is used in error messages.
  static Image open_fd(int fd, std::string name, const ReaderOptions& options = {});
  static Image from_bytes(std::string bytes, std::string name, const ReaderOptions& options = {});

  Image(Image&&) noexcept;
  Image& operator=(Image&&) noexcept;
  ~Image();

  const std::string& name() const noexcept { return name_; }
  const ReaderOptions& options() const noexcept { return options_; }
  std::span<const std::byte> bytes() const noexcept { return bytes_; }
  uint32_t format_version() const noexcept { return format_version_; }  // composefs_version
  // The header's ACL flag (false: mount with noacl); always true for V2, which has no flag.
  bool has_acl() const noexcept { return has_acl_; }
  uint64_t root_nid() const noexcept { return root_nid_; }
  uint64_t inode_count() const noexcept { return inode_count_; }  // superblock inos
  uint32_t build_time_nsec() const noexcept { return build_time_nsec_; }

  // ---- lazy access ---------------------------------------------------------------------
  InodeInfo inode(uint64_t nid) const;
  InodeInfo root() const { return inode(root_nid_); }

  XattrCursor xattrs(const InodeInfo& inode) const { return XattrCursor(*this, inode); }
  // The value of the xattr with this full name, pointing into the image.
  std::optional<std::string_view> find_xattr(const InodeInfo& inode, std::string_view name) const;

  // Starting at entry ordinal start (see DirCursor::position); whole blocks are skipped by
  // reading only their entry count.
  DirCursor dirents(const InodeInfo& dir, uint64_t start = 0) const;
  // Binary search over the directory blocks, then within the block.
  std::optional<DirEntry> lookup(const InodeInfo& dir, std::string_view name) const;

  // The target of a symlink, pointing into the image.
  std::string_view symlink_target(const InodeInfo& link) const;

  // Data stored in the image (flat layouts): the longest contiguous run of the inode's
  // bytes starting at offset, at most max_len, pointing into the image; empty at EOF.
  std::span<const std::byte> data_at(const InodeInfo& inode, uint64_t offset, size_t max_len) const;
  // Copies up to out.size() bytes from offset; returns the count (0 at EOF).
  size_t read(const InodeInfo& inode, uint64_t offset, std::span<std::byte> out) const;

  // External files: the raw trusted.overlay.redirect value ("/ab/cdef…"), if any.
  std::optional<std::string_view> redirect(const InodeInfo& inode) const;
  // External files: the fs-verity digest from trusted.overlay.metacopy (nullopt when the
  // value is empty, i.e. written without a digest). Throws if the value is malformed.
  std::optional<Digest> metacopy_digest(const InodeInfo& inode) const;

  // ---- whole-image operations ----------------------------------------------------------
  // Checks every rule; throws cfs::Error("IMAGE: PATH: RULE") on the first broken one:
  //  - every inode, xattr body, shared xattr entry, dirent block, inline tail and data
  //    block lies inside the image (and the superblock's block count); inodes do not
  //    overlap each other, the superblock or any data block; no data block is used twice;
  //    inline tails and symlink inodes+targets do not cross a block boundary;
  //  - directories: blocks well formed (nameoff table, names 1..255 bytes without '/' or
  //    NUL, strictly sorted across blocks, so no duplicates), exactly one "." (itself) and
  //    one ".." (parent; the root's is itself), dirent type == inode type, each directory
  //    reached once (no cycles, no hardlinked directories), depth <= 2048,
  //    nlink == 2 + subdirectories; other inodes: nlink == number of dirents naming them;
  //    superblock inos == inodes reached;
  //  - file types: symlinks 1..max_symlink bytes without NUL; flat regular files <= 5000
  //    bytes; external (chunk-based) files have a chunk map of holes and a well-formed
  //    trusted.overlay.metacopy; devices, fifos and sockets have no data; character
  //    devices 0/0 only as the root's "00".."ff" whiteout stubs with nlink 1;
  //  - xattrs: known name prefixes, names 1..255 bytes without NUL, no duplicates, not
  //    hidden by the inode's name filter; unescaped trusted.overlay.* only as redirect and
  //    metacopy on external files and opaque=y on the root; redirects as the options say.
  //  - format V2 (composefs-rs): inline files <= 512 bytes, symlinks <= 1024 bytes (their
  //    whole target inline, which may share a block with the next inode's start rather than
  //    its own); whiteouts are chr 0/0 anywhere with nlink 1, never escaped regular files,
  //    and the root holds no 00-ff stub table; no root opaque=y; external files without a
  //    digest may have no chunk map (as composefs-rs writes them).
  void validate() const;
  // validate(), then the reverse composefs mapping (composefs-c.md §2.9): root 00-ff stubs
  // dropped, overlay xattrs turned back into payload/digest/whiteouts, escapes undone,
  // hardlinks as shared inodes, directory size = EROFS i_size. The decoded size is capped
  // (32 x image size + 64 MiB) so hostile sharing of xattrs cannot exhaust memory.
  Tree to_tree() const;
  // The most bytes a decoding of this image (to_tree, a dump) may produce: 32 x its size +
  // 64 MiB, so hostile sharing of xattrs or data cannot exhaust memory or disk.
  // With ReaderOptions::low_memory, drops the resident pages of the mapped image (they are
  // read back from the file when touched again): a walk over a large image calls it now and
  // then to keep its memory small. Data stays valid; other images are untouched.
  void release_pages() const noexcept;
  uint64_t decode_budget() const noexcept { return 32 * uint64_t{bytes_.size()} + (64u << 20); }
  // validate(), then the object-store paths ("ab/cdef…", no leading '/') of every
  // trusted.overlay.redirect, sorted and deduplicated.
  std::vector<std::string> objects() const;
  // The same as views into the image (valid while it lives), without a copy of each path:
  // what a caller that only looks objects up needs (cfs-mount before every mount). With
  // unique false, one per external file in walk order (files with equal content repeat).
  std::vector<std::string_view> object_refs(bool unique = true) const;

  // Internal: the raw image bytes at [offset, offset + len), or throw naming nid and what.
  // Inline: every inode, dirent block and xattr of a walk goes through it.
  std::span<const std::byte> slice(uint64_t offset, uint64_t len, uint64_t nid,
                                   std::string_view what) const {
    if (offset > bytes_.size() || len > bytes_.size() - offset) [[unlikely]]
      fail_beyond_end(offset, len, nid, what);
    return bytes_.subspan(offset, len);
  }
  [[noreturn]] void fail(uint64_t nid, const std::string& rule) const;

 private:
  struct Storage;
  Image(std::unique_ptr<Storage> storage, std::string name, const ReaderOptions& options);
  void parse_superblock();
  [[noreturn]] void fail_beyond_end(uint64_t offset, uint64_t len, uint64_t nid,
                                    std::string_view what) const;

  std::unique_ptr<Storage> storage_;
  std::span<const std::byte> bytes_;
  std::string name_;
  ReaderOptions options_;
  uint32_t format_version_ = 0;
  bool has_acl_ = false;
  uint64_t root_nid_ = 0;
  uint64_t inode_count_ = 0;
  int64_t build_time_sec_ = 0;
  uint32_t build_time_nsec_ = 0;
  uint64_t xattr_base_ = 0;  // xattr_blkaddr * block size
  uint64_t blocks_ = 0;      // superblock block count
  bool xattr_filter_ = false;

  friend class DirCursor;
  friend class XattrCursor;
  friend class ImageWalker;
};

}  // namespace cfs::erofs
