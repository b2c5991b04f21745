// libFuzzer target: the strict EROFS reader on arbitrary bytes.
//  * the lazy API must be safe on images that were never validated (the FUSE server path);
//  * validate() / to_tree() / objects() may only ever throw cfs::Error;
//  * an image that validates must give a tree the writer can turn back into an image that
//    also validates and means the same (equal dumps).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "cfs/erofs/dumpfile.h"
#include "cfs/erofs/reader.h"
#include "cfs/erofs/writer.h"
#include "cfs/error.h"

namespace {

using namespace cfs::erofs;

// Touches every lazy accessor on the first entries of the first directories, breadth first.
void poke_lazily(const Image& image) {
  std::vector<uint64_t> dirs{image.root_nid()};
  size_t budget = 2000;
  for (size_t i = 0; i < dirs.size() && budget > 0; i++) {
    try {
      InodeInfo dir = image.inode(dirs[i]);
      DirCursor cursor = image.dirents(dir);
      DirEntry e;
      while (budget > 0 && cursor.next(e)) {
        budget--;
        try {
          (void)image.lookup(dir, e.name);
          InodeInfo child = image.inode(e.nid);
          XattrCursor xc = image.xattrs(child);
          XattrView x;
          while (xc.next(x)) (void)x.name();
          if (child.is_symlink()) (void)image.symlink_target(child);
          if (child.is_external()) {
            (void)image.redirect(child);
            (void)image.metacopy_digest(child);
          } else if (child.is_reg()) {
            char buf[512];
            (void)image.read(child, child.size / 2, std::as_writable_bytes(std::span(buf)));
          }
          if (child.is_dir() && e.name != "." && e.name != ".." && dirs.size() < 64)
            dirs.push_back(e.nid);
        } catch (const cfs::Error&) {
        }
      }
    } catch (const cfs::Error&) {
    }
  }
}

// Directory sizes depend on how the producer packed the entries, not on the tree.
void zero_dir_sizes(Inode& inode) {
  if (!inode.is_dir()) return;
  inode.size = 0;
  for (auto& d : inode.children) zero_dir_sizes(*d.inode);
}

void check(const std::string& bytes, const ReaderOptions& options) {
  std::optional<Image> image;
  try {
    image.emplace(Image::from_bytes(bytes, "fuzz", options));
  } catch (const cfs::Error&) {
    return;
  }
  poke_lazily(*image);
  Tree tree;
  try {
    image->validate();
    tree = image->to_tree();
    (void)image->objects();
  } catch (const cfs::Error&) {
    return;
  }
  std::string again;
  try {
    again = image_to_string(
        tree, {.min_version = image->format_version(), .max_version = image->format_version()});
  } catch (const cfs::Error&) {
    return;  // a tree the writer refuses (its own limits) is not a reader bug
  }
  Tree reread = Image::from_bytes(again, "again", options).to_tree();  // must not throw
  zero_dir_sizes(*reread.root);
  zero_dir_sizes(*tree.root);
  if (dumpfile_to_string(reread) != dumpfile_to_string(tree)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  check(bytes, ReaderOptions::compat());
  check(bytes, ReaderOptions{});
  return 0;
}
