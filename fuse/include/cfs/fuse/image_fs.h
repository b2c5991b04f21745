// The filesystem a composefs image presents, as the FUSE server serves it: the image's tree
// with the composefs encoding undone (the same view as Image::to_tree()), read lazily by nid
// so that memory stays bounded however large the image is.
//
// Everything here is independent of libfuse so it can be exercised without a mount. Calls
// return 0 or an errno value; a malformed structure in the image yields EIO and one log line,
// never a crash. All calls are thread-safe.
#pragma once

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "cfs/erofs/reader.h"
#include "cfs/fd.h"
#include "cfs/fuse/objects.h"

namespace cfs::fuse {

inline constexpr uint64_t kRootIno = 1;  // FUSE_ROOT_ID

// Inode numbers are nids, except that the root's nid and 1 trade places so the root is
// FUSE_ROOT_ID. nid 0 (the composefs header) can never be an inode.
class InodeNumbers {
 public:
  explicit InodeNumbers(uint64_t root_nid) : root_nid_(root_nid) {}
  uint64_t ino(uint64_t nid) const noexcept {
    return nid == root_nid_ ? kRootIno : nid == kRootIno ? root_nid_ : nid;
  }
  uint64_t nid(uint64_t ino) const noexcept { return this->ino(ino); }  // an involution

 private:
  uint64_t root_nid_;
};

using LogFn = std::function<void(const std::string&)>;

// An open directory: a cursor that continues where the previous readdir stopped, so a
// sequential listing of any size costs O(entries); a seek skips whole blocks.
struct DirStream {
  explicit DirStream(erofs::DirCursor c) : cursor(std::move(c)) {}
  std::mutex mutex;
  erofs::InodeInfo dir;
  erofs::DirCursor cursor;
  uint64_t position = 0;                   // on-disk ordinal of the entry cursor returns next
  std::optional<erofs::DirEntry> pending;  // read but not yet delivered (buffer was full)
};

// One readdir entry as delivered: name, inode number, type bits (S_IFMT) and, when asked
// for, the full attributes.
struct DirItem {
  std::string_view name;
  uint64_t ino = 0;
  uint32_t type = 0;
  const struct stat* attr = nullptr;  // readdirplus only
  uint64_t next_offset = 0;           // offset to resume after this entry
};
// Returns false when the entry did not fit (it is then delivered again next time).
using DirSink = std::function<bool(const DirItem&)>;

// An open regular file: inline data comes from the image, external data from its object.
struct FileHandle {
  erofs::InodeInfo inode;
  UniqueFd object;                       // external files only
  std::shared_ptr<PendingFile> pending;  // or, a lazy pull's content not local yet
};

class ImageFs {
 public:
  // objects may be null: external files then fail with EIO.
  ImageFs(erofs::Image image, std::unique_ptr<ObjectStore> objects, LogFn log);

  const erofs::Image& image() const noexcept { return image_; }

  // Serve the raw EROFS layout as the lower layer of a kernel overlayfs mounted with
  // userxattr (cfs-fuse --overlay) instead of the decoded tree: composefs' own
  // trusted.overlay.* xattrs appear as user.overlay.*, other trusted.* are dropped (a user
  // namespace cannot read them), the image's own user.overlay.* names (other than the
  // whiteout markers the writer stores for such mounts) are escaped as user.overlay.overlay.*,
  // and the root's whiteout stubs and whiteout files are left for the overlay to interpret.
  // Only files whose object path is in usable_objects get their redirect and metacopy; the
  // overlay reads every other file from this server, which verifies at open as usual. Call
  // before serving.
  void serve_as_overlay_lower(std::unordered_set<std::string> usable_objects);
  bool overlay_lower() const noexcept { return overlay_lower_; }
  const ObjectStore* objects() const noexcept { return objects_.get(); }
  const InodeNumbers& numbers() const noexcept { return numbers_; }

  int getattr(uint64_t ino, struct stat& st) const;
  // st.st_ino is the child's inode number.
  int lookup(uint64_t parent, std::string_view name, struct stat& st) const;
  int readlink(uint64_t ino, std::string_view& target) const;

  int opendir(uint64_t ino, std::unique_ptr<DirStream>& out) const;
  // Delivers entries from offset (0 = start; otherwise a next_offset given earlier) until
  // sink refuses one or the directory ends.
  int readdir(DirStream& dir, uint64_t offset, bool plus, const DirSink& sink) const;

  // Xattrs as the image's user sees them (escapes undone, composefs internals hidden).
  int getxattr(uint64_t ino, std::string_view name, std::string& value) const;
  // NUL-terminated names, concatenated (the listxattr(2) format).
  int listxattr(uint64_t ino, std::string& names) const;

  // flags: open(2) flags; anything but read-only access gives EROFS.
  int open(uint64_t ino, int flags, std::unique_ptr<FileHandle>& out) const;
  // Inline data: the pieces of [offset, offset + size) inside the image (no copy).
  int read_inline(const FileHandle& file, uint64_t offset, size_t size,
                  std::vector<std::span<const std::byte>>& pieces) const;

  // A pending file: makes [offset, offset + size) valid in file.pending->fd(); EIO (and one
  // log line naming the file) when its chunks cannot be fetched or verified.
  int ensure(const FileHandle& file, uint64_t offset, size_t size) const;

  void statfs(struct statvfs& st) const;

 private:
  // Throws cfs::Error on malformed image structures.
  erofs::InodeInfo inode_of(uint64_t ino) const;
  void fill_stat(const erofs::InodeInfo& inode, struct stat& st) const;
  bool is_whiteout(const erofs::InodeInfo& inode) const;
  bool hidden(const erofs::InodeInfo& dir, const erofs::DirEntry& entry) const;
  bool has_whiteout_child(const erofs::InodeInfo& dir) const;
  uint32_t entry_type(const erofs::DirEntry& entry) const;
  // Calls fn(name, value) for every visible xattr; stops when fn returns false.
  void visible_xattrs(const erofs::InodeInfo& inode,
                      const std::function<bool(const std::string&, std::string_view)>& fn) const;
  // 0, or EIO once the image file was found truncated under the mapping.
  int settled() const;
  int image_error(uint64_t ino, const std::exception& e) const;

  // The overlay-lower view's xattrs (see serve_as_overlay_lower).
  void overlay_xattrs(const erofs::InodeInfo& inode,
                      const std::function<bool(const std::string&, std::string_view)>& fn) const;

  erofs::Image image_;
  std::unique_ptr<ObjectStore> objects_;
  bool overlay_lower_ = false;
  std::unordered_set<std::string> usable_objects_;
  LogFn log_;
  InodeNumbers numbers_;
  // Directories (by nid) already scanned for a whiteout child: the answer decides whether
  // their overlay marker xattrs are composefs's or the user's, and a 500k-entry directory
  // must not be scanned on every getxattr. Bounded by the image's directory count.
  mutable std::mutex whiteout_dirs_mutex_;
  mutable std::unordered_map<uint64_t, bool> whiteout_dirs_;
};

}  // namespace cfs::fuse
