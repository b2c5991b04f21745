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

#include "cfs/escape.h"
#include "writer_internal.h"

namespace cfs::erofs {
namespace writer_impl {

ImageWriter::ImageWriter(const Tree& tree, const WriterOptions& options) : tree_(tree) {
  // Format V2 has its own writer (writer_v2.cc); this one writes C's V0 and V1.
  if (options.min_version > 1 || options.max_version > 1)
    throw Error("composefs image: format version " +
                std::to_string(std::max(options.min_version, options.max_version)) +
                " is not supported by the V0/V1 writer");
  version_ = options.min_version;
  max_version_ = std::max(options.max_version, options.min_version);
  compute_digest_ = options.compute_digest;
}

WriteResult ImageWriter::write(OutputSink& out) {
  scan_tree();
  build_records();
  build_shared_table();
  compute_layout();
  return stream_image(out, compute_digest_, [this](Emitter& emit) {
    emit_image(emit);
    return version_;
  });
}

void ImageWriter::fail(const std::string& path, const std::string& what) {
  // Paths and xattr names come from the tree, i.e. from a layer or a dumpfile.
  throw Error("composefs image: " + escape_for_log(path) + ": " + escape_for_log(what));
}

void ImageWriter::validate_name(const std::string& path, std::string_view name) {
  if (name.empty() || name.size() > kNameMax) fail(path, "file name must be 1 to 255 bytes");
  if (name == "." || name == "..") fail(path, "'.' and '..' are not valid file names");
  if (name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos)
    fail(path, "file name contains '/' or a NUL byte");
}

void ImageWriter::validate_inode(const std::string& path, const Inode& inode) {
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
  if (!inode.is_dir() && !inode.children.empty()) fail(path, "only directories can have children");
  if (inode.is_reg()) {
    if (inode.has_content()) {
      if (inode.content && inode.content->size() != inode.size)
        fail(path, "inline content is " + std::to_string(inode.content->size()) +
                       " bytes but the file size is " + std::to_string(inode.size));
      if (!inode.content && !tree_.content_source)
        fail(path, "inline content is referenced but the tree has no content source");
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
    if (inode.payload.size() > kSymlinkMax) fail(path, "symlink target is longer than 4095 bytes");
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

void ImageWriter::scan_tree() {
  const Inode& root = *tree_.root;
  validate_inode("/", root);
  if (!root.is_dir()) fail("/", "the root must be a directory");
  if (tree_.root.use_count() > 1) shared_.emplace(&root, SharedInode{});

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

bool ImageWriter::is_primary(const Dirent& d) const {
  // Inodes referenced once were never entered in shared_ (use_count() is only a hint: an
  // extra reference held outside the tree just costs a lookup).
  if (d.inode.use_count() == 1) return true;
  auto it = shared_.find(d.inode.get());
  return it == shared_.end() || it->second.primary == &d;
}

}  // namespace writer_impl

WriterOptions WriterOptions::for_erofs_version(uint32_t version) {
  switch (version) {
    case 0:
      return {0, 1};
    case 1:
      return {1, 1};
    case kComposefsVersionV2:
      return {kComposefsVersionV2, kComposefsVersionV2};
    default:
      throw Error("EROFS format version " + std::to_string(version) +
                  " is not supported (0, 1 or 2)");
  }
}

WriteResult write_image(const Tree& tree, OutputSink& out, const WriterOptions& options) {
  if (options.min_version > kFormatVersionMax || options.max_version > kFormatVersionMax)
    throw Error("composefs image: format version " +
                std::to_string(std::max(options.min_version, options.max_version)) +
                " is not supported (maximum " + std::to_string(kFormatVersionMax) + ")");
  if (options.min_version == kComposefsVersionV2)
    return writer_impl::write_image_v2(tree, out, options.compute_digest);
  if (options.max_version == kComposefsVersionV2)
    throw Error(
        "composefs image: format version 2 is chosen with min_version 2; no tree is "
        "raised to it");
  return writer_impl::ImageWriter(tree, options).write(out);
}

std::string image_to_string(const Tree& tree, const WriterOptions& options) {
  StringSink sink;
  write_image(tree, sink, options);
  return std::move(sink.str());
}

}  // namespace cfs::erofs
