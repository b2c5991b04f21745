// The node of the libcomposefs API. C composefs' own tools include its private header and
// read node->inode.st_mode directly, so the leading part of the struct keeps the byte layout
// of 1.0.8's struct lcfs_node_s; cfs keeps the authoritative data in C++ members after it and
// mirrors the pointers into the head whenever they change.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "libcomposefs/lcfs-writer.h"

namespace cfs::lcfs {

// Same field order, types and padding as 1.0.8's struct lcfs_inode_s.
struct InodeHead {
  uint32_t st_mode;
  uint32_t st_nlink;
  uint32_t st_uid;
  uint32_t st_gid;
  uint32_t st_rdev;
  uint64_t st_size;
  int64_t st_mtim_sec;
  uint32_t st_mtim_nsec;
};

// Same field order, types and padding as the leading part of 1.0.8's struct lcfs_node_s, up
// to and including the inode.
struct NodeHead {
  int ref_count;
  lcfs_node_s* parent;
  lcfs_node_s** children;
  size_t children_capacity;
  size_t children_size;
  lcfs_node_s* link_to;
  bool link_to_invalid;
  char* name;
  char* payload;
  uint8_t* content;
  void* xattrs;
  size_t n_xattrs;
  size_t xattr_size;
  bool digest_set;
  uint8_t digest[LCFS_DIGEST_SIZE];
  InodeHead inode;
};
#if defined(__x86_64__) || defined(__aarch64__)
static_assert(offsetof(NodeHead, inode) == 144, "C composefs' tools read node->inode here");
#endif

struct XattrEntry {
  std::string name;
  std::string value;
};

}  // namespace cfs::lcfs

struct lcfs_node_s {
  cfs::lcfs::NodeHead head{};
  std::vector<lcfs_node_s*> children;  // sorted by name; each holds a reference
  std::optional<std::string> name;     // set while the node is in a directory
  std::optional<std::string> payload;
  std::optional<std::string> content;
  std::vector<cfs::lcfs::XattrEntry> xattrs;  // in C's order (removal moves the last one)

  // Re-points the C-layout head at the C++ members after any of them changed.
  void sync() noexcept;
};

namespace cfs::lcfs {

// The ownership rules of the C API: a new node holds one reference.
lcfs_node_s* new_node();
// Follows link_to to the node that owns the data; nullptr on a cycle.
lcfs_node_s* follow_links(lcfs_node_s* node) noexcept;
bool valid_mode(uint32_t mode) noexcept;

// Owns one reference, for nodes under construction.
struct NodeRef {
  void operator()(lcfs_node_s* node) const noexcept { lcfs_node_unref(node); }
};
using NodePtr = std::unique_ptr<lcfs_node_s, NodeRef>;

}  // namespace cfs::lcfs
