// OCI layers merged into one filesystem tree, and the canonicalisations composefs-rs applies
// before writing the EROFS image, so that the same image gets the same composefs image id.
//
// Merge rules (in layer order, entry by entry):
//  - paths are relative to the image root ("./" prefixes are dropped); absolute names, ".."
//    components, paths through symlinks or non-directories and missing parent directories
//    are errors: a layer tar cannot reach outside its tree or write through a link;
//  - the tar root entry ("./") only sets the root directory's metadata;
//  - ".wh..wh..opq" clears its directory, ".wh.NAME" removes NAME;
//  - a directory over a directory replaces the metadata (most-derived layer wins) and keeps
//    the children; anything else replaces the entry;
//  - hardlinks share the target's inode; the target must already exist and not be a
//    directory; nlink counts the dirents of each inode;
//  - mtime keeps PAX nanoseconds, xattrs come from PAX SCHILY.xattr.* records.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cfs/erofs/tree.h"
#include "cfs/oci/tar.h"

namespace cfs::oci {

class LayerMerger {
 public:
  explicit LayerMerger(erofs::Tree& tree) : tree_(tree) {}
  // what names the layer in errors.
  void apply(const TarEntry& entry, const std::string& what);
  // Sets nlink of every non-directory inode to the number of dirents that share it.
  void finish();

 private:
  erofs::Inode& parent_dir(const std::vector<std::string_view>& parts, const std::string& what);
  erofs::InodePtr child(erofs::Inode& dir, std::string_view name) const;
  void set_child(erofs::Inode& dir, std::string_view name, erofs::InodePtr inode);
  bool remove_child(erofs::Inode& dir, std::string_view name);
  void merge_pending(erofs::Inode& dir);
  void forget_dirs();

  erofs::Tree& tree_;
  // The directory chain of the last parent looked up: tar entries come grouped by
  // directory, so most lookups reuse it and the merge stays linear in the entries instead
  // of walking the whole depth per entry. Cleared whenever a directory may be removed or
  // replaced (whiteouts, replacing an entry), since the pointers would dangle.
  std::vector<std::string> cursor_names_;
  std::vector<erofs::Inode*> cursor_dirs_;
  // Children that arrived out of name order, per directory, sorted; merged into the
  // directory when large and at finish() (see kPendingMax in tree.cc).
  std::unordered_map<erofs::Inode*, std::vector<erofs::Dirent>> pending_;
};

// XattrMode and xattr_kept are in oci_tar.h: the tar parser drops unkept xattrs early.
// transform_for_oci (composefs-rs' transform_for_oci without the xattr filter): the root takes
// /usr's mode, uid, gid, mtime (seconds and nanoseconds) and xattrs; /run is emptied and gets
// /usr's mtime. Trees without /usr are left as they are.
void transform_for_oci(erofs::Tree& tree);
void filter_xattrs(erofs::Tree& tree, XattrMode mode);
// Sets nlink of every non-directory inode to the number of dirents that share it (after a
// transform has emptied directories, a hardlink's other names may be gone).
void count_links(erofs::Tree& tree);

// Reads the data of a regular file of the tree (inline content or its object); path is the
// file's absolute path in the tree.
using TreeFileReader = std::function<std::string(const erofs::Inode&, const std::string& path)>;

// transform_for_boot: /boot and /sysroot emptied (mtime seconds := /usr's), then SELinux
// labels from the image's own policy (/etc/selinux/config SELINUXTYPE and
// /etc/selinux/<type>/contexts/files/file_contexts{,.local,.homedirs,.subs,.subs_dist})
// through libselinux, or security.selinux stripped everywhere if the image has no policy.
// Returns true if the tree was relabelled.
bool transform_for_boot(erofs::Tree& tree, const TreeFileReader& read_file);

// The transforms an image gets, the same for a pull and for a directory (cfsctl compute-id,
// create-image, create-dumpfile, compute-karg), so a root directory and the OCI image built
// from it get the same image id.
struct TreeTransform {
  // composefs-rs' OCI transform (transform_for_oci + filter_xattrs); false is composefs-rs'
  // --no-propagate-usr-to-root, which leaves the tree as scanned (xattrs included).
  bool oci = true;
  XattrMode xattrs = XattrMode::allowlist_only;
  bool bootable = false;  // then transform_for_boot
};
void transform_tree(erofs::Tree& tree, const TreeTransform& transform,
                    const TreeFileReader& read_file);

// A TreeFileReader for a tree scanned from the directory dir: inline content from the tree,
// other files read from dir (beneath it, following no symlink) and checked against the
// digest the scan recorded, so a file changed since the scan is an error, not a label from
// other data.
TreeFileReader directory_file_reader(std::string dir);

}  // namespace cfs::oci
