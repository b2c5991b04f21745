#include "cfs/fuse/image_fs.h"

#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "cfs/erofs/composefs.h"
#include "truncation_guard.h"

namespace cfs::fuse {

using erofs::DirEntry;
using erofs::InodeInfo;
using erofs::XattrView;

ImageFs::ImageFs(erofs::Image image, std::unique_ptr<ObjectStore> objects, LogFn log)
    : image_(std::move(image)),
      objects_(std::move(objects)),
      log_(std::move(log)),
      numbers_(image_.root_nid()) {}

int ImageFs::settled() const {
  // Zero pages stand in for a truncated image: whatever was computed from them is void.
  if (!image_mapping_truncated()) return 0;
  if (log_) log_(image_.name() + ": the image file was truncated while mounted");
  return EIO;
}

int ImageFs::image_error(uint64_t ino, const std::exception& e) const {
  if (image_mapping_truncated()) return settled();  // the real cause, not its zero pages
  if (log_) log_(std::string(e.what()) + " (serving inode " + std::to_string(ino) + ")");
  return EIO;
}

InodeInfo ImageFs::inode_of(uint64_t ino) const {
  uint64_t nid = numbers_.nid(ino);
  if (nid == 0) image_.fail(0, "nid 0 is the composefs header, not an inode");
  return image_.inode(nid);
}

bool ImageFs::is_whiteout(const InodeInfo& inode) const {
  if (!inode.is_reg() || inode.size != 0 || inode.xattr_size == 0) return false;
  auto v = image_.find_xattr(inode, erofs::composefs::kEscapedWhiteout);
  return v && v->empty();
}

void ImageFs::fill_stat(const InodeInfo& inode, struct stat& st) const {
  st = {};
  st.st_ino = numbers_.ino(inode.nid);
  st.st_mode = inode.mode;
  st.st_nlink = inode.nlink;
  st.st_uid = inode.uid;
  st.st_gid = inode.gid;
  switch (inode.type()) {
    case S_IFCHR:
    case S_IFBLK:
      st.st_rdev = inode.rdev;
      break;
    case S_IFREG:
    case S_IFDIR:
    case S_IFLNK:
      st.st_size = static_cast<off_t>(inode.size);
      break;
    default:
      break;
  }
  if (!overlay_lower_ && is_whiteout(inode)) {
    st.st_mode = S_IFCHR | (inode.mode & ~S_IFMT);
    st.st_rdev = 0;
    st.st_size = 0;
  }
  st.st_blksize = erofs::kBlockSize;
  st.st_blocks = static_cast<blkcnt_t>((inode.size + 511) / 512);
  st.st_mtim.tv_sec = static_cast<time_t>(inode.mtime_sec);
  st.st_mtim.tv_nsec = inode.mtime_nsec;
  st.st_atim = st.st_mtim;
  st.st_ctim = st.st_mtim;
}

bool ImageFs::hidden(const InodeInfo& dir, const DirEntry& entry) const {
  // As an overlay's lower layer the image is served as it is, stubs included.
  if (overlay_lower_) return false;
  // The writer's 00-ff whiteout stubs in the root exist only for the kernel overlay; V2
  // images have none (a chr 0/0 there is the tree's own whiteout).
  if (!erofs::composefs::has_whiteout_stubs(image_.format_version())) return false;
  if (dir.nid != image_.root_nid() || entry.file_type != erofs::kFtChrdev) return false;
  if (!erofs::composefs::is_whiteout_stub_name(entry.name)) return false;
  InodeInfo child = image_.inode(entry.nid);
  return erofs::composefs::is_whiteout_stub(entry.name, child.mode, child.rdev);
}

uint32_t ImageFs::entry_type(const DirEntry& entry) const {
  if (!overlay_lower_ && entry.file_type == erofs::kFtRegFile &&
      is_whiteout(image_.inode(entry.nid)))
    return S_IFCHR;
  return erofs::mode_type_of(entry.file_type);
}

bool ImageFs::has_whiteout_child(const InodeInfo& dir) const {
  {
    std::lock_guard lock(whiteout_dirs_mutex_);
    if (auto it = whiteout_dirs_.find(dir.nid); it != whiteout_dirs_.end()) return it->second;
  }
  // Scanned outside the lock; two threads racing here compute the same answer.
  bool found = false;
  erofs::DirCursor cursor = image_.dirents(dir);
  DirEntry e;
  while (!found && cursor.next(e))
    found = e.file_type == erofs::kFtRegFile && is_whiteout(image_.inode(e.nid));
  // A truncated image reads zero pages: do not remember what was computed from them.
  if (image_mapping_truncated()) return found;
  std::lock_guard lock(whiteout_dirs_mutex_);
  whiteout_dirs_.emplace(dir.nid, found);
  return found;
}

void ImageFs::visible_xattrs(
    const InodeInfo& inode,
    const std::function<bool(const std::string&, std::string_view)>& fn) const {
  if (inode.xattr_size == 0) return;
  if (overlay_lower_) return overlay_xattrs(inode, fn);
  namespace composefs = erofs::composefs;
  const bool whiteout = is_whiteout(inode);
  const bool empty_regular = inode.is_reg() && inode.size == 0;
  std::optional<bool> whiteout_child;  // computed only if a marker needs it
  erofs::XattrCursor cursor = image_.xattrs(inode);
  XattrView x;
  while (cursor.next(x)) {
    switch (composefs::classify(x, empty_regular, image_.format_version())) {
      case composefs::StoredXattr::redirect:
      case composefs::StoredXattr::metacopy:
      case composefs::StoredXattr::whiteout:
        continue;
      case composefs::StoredXattr::user_whiteout:
        if (whiteout) continue;
        break;
      case composefs::StoredXattr::dir_marker:
        if (inode.is_dir()) {
          if (!whiteout_child) whiteout_child = has_whiteout_child(inode);
          if (*whiteout_child) continue;
        }
        break;
      case composefs::StoredXattr::user:
        break;
    }
    auto name = composefs::unescape_xattr_name(x.name());
    if (!name) continue;  // composefs' own (root opaque, ...)
    if (!fn(*name, x.value)) return;
  }
}

void ImageFs::serve_as_overlay_lower(std::unordered_set<std::string> usable_objects) {
  overlay_lower_ = true;
  usable_objects_ = std::move(usable_objects);
}

void ImageFs::overlay_xattrs(
    const InodeInfo& inode,
    const std::function<bool(const std::string&, std::string_view)>& fn) const {
  namespace composefs = erofs::composefs;
  constexpr std::string_view kUserOverlay = "user.overlay.";
  const bool empty_regular = inode.is_reg() && inode.size == 0;
  // Redirect and metacopy go together: an object that was not verified gets neither, and
  // the overlay then reads the file from this server (which verifies at open).
  bool usable = false;
  if (inode.is_external()) {
    auto redirect = image_.redirect(inode);
    usable = redirect && redirect->starts_with('/') &&
             usable_objects_.contains(std::string(redirect->substr(1)));
  }
  erofs::XattrCursor cursor = image_.xattrs(inode);
  XattrView x;
  std::string name;
  while (cursor.next(x)) {
    if (x.name_is(composefs::kRedirectXattr) || x.name_is(composefs::kMetacopyXattr)) {
      if (!usable) continue;
    } else if (x.name_is(composefs::kOpaqueXattr)) {
      // the root's opaque marker, composefs' own
    } else if (x.prefix() == "trusted.") {
      continue;  // escaped user trusted.* and the rest: unreadable in a user namespace
    }
    name = x.name();
    if (name.starts_with(composefs::kOverlayPrefix)) {
      name.replace(0, composefs::kOverlayPrefix.size(), kUserOverlay);
    } else if (name.starts_with(kUserOverlay)) {
      auto kind = composefs::classify(x, empty_regular, image_.format_version());
      // The writer's whiteout markers are meant for exactly this overlay; any other
      // user.overlay.* is the image's data, escaped so the overlay shows it and never acts on
      // it (a redirect of the image's own would bypass the object verification).
      if (kind != composefs::StoredXattr::user_whiteout &&
          kind != composefs::StoredXattr::dir_marker)
        name.insert(kUserOverlay.size(), "overlay.");
    }
    if (!fn(name, x.value)) return;
  }
}

// ---- operations ----------------------------------------------------------------------------

int ImageFs::getattr(uint64_t ino, struct stat& st) const {
  try {
    fill_stat(inode_of(ino), st);
    return settled();
  } catch (const std::exception& e) {
    return image_error(ino, e);
  }
}

int ImageFs::lookup(uint64_t parent, std::string_view name, struct stat& st) const {
  try {
    InodeInfo dir = inode_of(parent);
    if (!dir.is_dir()) return ENOTDIR;
    if (name.size() > erofs::kNameMax) return ENAMETOOLONG;
    auto entry = image_.lookup(dir, name);
    if (!entry || hidden(dir, *entry)) return ENOENT;
    if (entry->nid == 0) image_.fail(dir.nid, "dirent points to nid 0");
    fill_stat(image_.inode(entry->nid), st);
    return settled();
  } catch (const std::exception& e) {
    return image_error(parent, e);
  }
}

int ImageFs::readlink(uint64_t ino, std::string_view& target) const {
  try {
    InodeInfo inode = inode_of(ino);
    if (!inode.is_symlink()) return EINVAL;
    target = image_.symlink_target(inode);
    return settled();
  } catch (const std::exception& e) {
    return image_error(ino, e);
  }
}

int ImageFs::opendir(uint64_t ino, std::unique_ptr<DirStream>& out) const {
  try {
    InodeInfo dir = inode_of(ino);
    if (!dir.is_dir()) return ENOTDIR;
    out = std::make_unique<DirStream>(image_.dirents(dir));
    out->dir = dir;
    return settled();
  } catch (const std::exception& e) {
    return image_error(ino, e);
  }
}

int ImageFs::readdir(DirStream& dir, uint64_t offset, bool plus, const DirSink& sink) const {
  std::lock_guard lock(dir.mutex);
  try {
    if (offset != dir.position) {
      // A seek or a restart: the reader skips whole blocks by their entry counts.
      dir.cursor = image_.dirents(dir.dir, offset);
      dir.pending.reset();
      dir.position = offset;
    }
    struct stat st;
    for (;;) {
      DirEntry e;
      if (dir.pending) {
        e = *dir.pending;
      } else if (!dir.cursor.next(e)) {
        return 0;
      }
      dir.pending.reset();
      if (e.nid == 0) image_.fail(dir.dir.nid, "dirent points to nid 0");
      if (hidden(dir.dir, e)) {
        dir.position++;
        continue;
      }
      DirItem item;
      item.name = e.name;
      item.ino = numbers_.ino(e.nid);
      item.next_offset = dir.position + 1;
      if (plus) {
        fill_stat(image_.inode(e.nid), st);
        item.type = st.st_mode & S_IFMT;
        item.attr = &st;
      } else {
        item.type = entry_type(e);
      }
      if (!sink(item)) {
        dir.pending = e;
        return 0;
      }
      dir.position++;
    }
  } catch (const std::exception& e) {
    // Start over next time rather than resume from a cursor in an unknown state.
    dir.cursor = image_.dirents(dir.dir);
    dir.pending.reset();
    dir.position = 0;
    return image_error(numbers_.ino(dir.dir.nid), e);
  }
}

int ImageFs::getxattr(uint64_t ino, std::string_view name, std::string& value) const {
  try {
    InodeInfo inode = inode_of(ino);
    bool found = false;
    visible_xattrs(inode, [&](const std::string& n, std::string_view v) {
      if (n != name) return true;
      value.assign(v);
      found = true;
      return false;
    });
    return found ? 0 : ENODATA;
  } catch (const std::exception& e) {
    return image_error(ino, e);
  }
}

int ImageFs::listxattr(uint64_t ino, std::string& names) const {
  try {
    InodeInfo inode = inode_of(ino);
    names.clear();
    visible_xattrs(inode, [&](const std::string& n, std::string_view) {
      names += n;
      names += '\0';
      return true;
    });
    return settled();
  } catch (const std::exception& e) {
    return image_error(ino, e);
  }
}

int ImageFs::open(uint64_t ino, int flags, std::unique_ptr<FileHandle>& out) const {
  if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC)) return EROFS;
  try {
    InodeInfo inode = inode_of(ino);
    if (inode.is_dir()) return EISDIR;
    if (!inode.is_reg()) return EINVAL;
    auto handle = std::make_unique<FileHandle>();
    handle->inode = inode;
    if (inode.is_external()) {
      auto redirect = image_.redirect(inode);
      std::string where = image_.name() + ": inode " + std::to_string(inode.nid) + ": ";
      if (!redirect) {
        if (log_) log_(where + "external file without a redirect");
        return EIO;
      }
      if (!objects_) {
        if (log_) log_(where + "external file, but no object directory (--basedir/--repo)");
        return EIO;
      }
      try {
        handle->object =
            objects_->open(*redirect, image_.metacopy_digest(inode), inode.size, &handle->pending);
      } catch (const ObjectError& e) {
        if (log_) log_(e.what());
        return EIO;
      }
    }
    out = std::move(handle);
    return settled();
  } catch (const std::exception& e) {
    return image_error(ino, e);
  }
}

int ImageFs::read_inline(const FileHandle& file, uint64_t offset, size_t size,
                         std::vector<std::span<const std::byte>>& pieces) const {
  pieces.clear();
  try {
    while (size > 0) {
      auto piece = image_.data_at(file.inode, offset, size);
      if (piece.empty()) break;
      pieces.push_back(piece);
      offset += piece.size();
      size -= piece.size();
    }
    return settled();
  } catch (const std::exception& e) {
    return image_error(numbers_.ino(file.inode.nid), e);
  }
}

int ImageFs::ensure(const FileHandle& file, uint64_t offset, size_t size) const {
  try {
    file.pending->ensure(offset, size);
    return 0;
  } catch (const std::exception& e) {
    if (log_) log_(e.what());
    return EIO;
  }
}

void ImageFs::statfs(struct statvfs& st) const {
  st = {};
  st.f_bsize = erofs::kBlockSize;
  st.f_frsize = erofs::kBlockSize;
  st.f_blocks = image_.bytes().size() / erofs::kBlockSize;
  st.f_files = image_.inode_count();
  st.f_namemax = erofs::kNameMax;
  st.f_flag = ST_RDONLY;
}

}  // namespace cfs::fuse
