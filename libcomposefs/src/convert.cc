#include "convert.h"

#include <cstring>
#include <memory>
#include <unordered_map>

#include "cfs/error.h"

namespace cfs::lcfs {
namespace {

[[noreturn]] void refuse() {
  throw_errno(EINVAL, "libcomposefs: invalid node");
}

class ToTree {
 public:
  erofs::InodePtr inode_for(lcfs_node_s* node) {
    auto [it, added] = inodes_.try_emplace(node);
    if (!added) return it->second;
    const InodeHead& in = node->head.inode;
    if (!valid_mode(in.st_mode)) refuse();
    auto inode = erofs::make_inode(in.st_mode);
    inode->nlink = in.st_nlink;
    inode->uid = in.st_uid;
    inode->gid = in.st_gid;
    inode->rdev = in.st_rdev;
    inode->size = in.st_size;
    inode->mtime_sec = in.st_mtim_sec;
    inode->mtime_nsec = in.st_mtim_nsec;
    if (node->payload) inode->payload = *node->payload;
    if (node->content && inode->is_reg()) inode->content = *node->content;
    if (node->head.digest_set)
      inode->digest = Digest(HashAlgorithm::sha256, std::span<const uint8_t>(node->head.digest));
    for (const XattrEntry& x : node->xattrs) inode->xattrs.push_back({x.name, x.value});
    inode->sort_xattrs();
    it->second = inode;
    return inode;
  }

  void add_children(lcfs_node_s* dir, erofs::Inode& out) {
    out.children.reserve(dir->children.size());
    for (lcfs_node_s* child : dir->children) {
      if (child->head.link_to_invalid) refuse();
      lcfs_node_s* target = child;
      bool link = false;
      if (child->head.link_to != nullptr) {
        target = follow_links(child);
        if (target == nullptr || (target->head.inode.st_mode & S_IFMT) == S_IFDIR) refuse();
        link = true;
      }
      auto inode = inode_for(target);
      out.children.push_back({*child->name, inode, link});
      if (!link && inode->is_dir()) add_children(target, *inode);
    }
  }

 private:
  std::unordered_map<const lcfs_node_s*, erofs::InodePtr> inodes_;
};

class FromTree {
 public:
  NodePtr node_for(const erofs::Inode& inode) {
    auto first = nodes_.find(&inode);
    NodePtr node(new_node());
    if (first != nodes_.end()) {  // a further name of a hardlinked inode
      node->head.link_to = lcfs_node_ref(first->second);
      return node;
    }
    nodes_.emplace(&inode, node.get());
    InodeHead& in = node->head.inode;
    in.st_mode = inode.mode;
    in.st_nlink = inode.nlink;
    in.st_uid = inode.uid;
    in.st_gid = inode.gid;
    in.st_rdev = inode.rdev;
    in.st_size = inode.size;
    in.st_mtim_sec = inode.mtime_sec;
    in.st_mtim_nsec = inode.mtime_nsec;
    if (!inode.payload.empty()) node->payload = inode.payload;
    if (inode.content && !inode.content->empty()) node->content = *inode.content;
    if (inode.digest) {
      node->head.digest_set = true;
      std::memcpy(node->head.digest, inode.digest.bytes().data(), LCFS_DIGEST_SIZE);
    }
    for (const erofs::Xattr& x : inode.xattrs) {
      // The budget lcfs_node_set_xattr keeps, so later edits see the same limits as in C.
      node->head.xattr_size += (node->xattrs.empty() ? 12 : 0) + 2 * LCFS_INODE_XATTRMETA_SIZE - 1 +
                               x.name.size() + x.value.size();
      node->xattrs.push_back({x.name, x.value});
    }
    node->sync();
    for (const erofs::Dirent& d : inode.children) {
      NodePtr child = node_for(*d.inode);
      child->name = d.name;
      child->head.parent = node.get();
      child->sync();
      node->children.push_back(child.release());
    }
    node->sync();
    return node;
  }

 private:
  std::unordered_map<const erofs::Inode*, lcfs_node_s*> nodes_;
};

}  // namespace

erofs::Tree to_tree(lcfs_node_s* root) {
  if (root->head.link_to != nullptr || (root->head.inode.st_mode & S_IFMT) != S_IFDIR) refuse();
  ToTree builder;
  erofs::Tree tree;
  tree.root = builder.inode_for(root);
  builder.add_children(root, *tree.root);
  return tree;
}

lcfs_node_s* from_tree(const erofs::Tree& tree) {
  FromTree builder;
  return builder.node_for(*tree.root).release();
}

}  // namespace cfs::lcfs
