// Conversions between the libcomposefs node tree and cfs's erofs::Tree, the one tree cfs's
// writer and reader work on.
#pragma once

#include "cfs/erofs/tree.h"
#include "node.h"

namespace cfs::lcfs {

// Throws cfs::SystemError(EINVAL) for nodes lcfs_write_to must refuse (unknown file types,
// hardlink cycles, hardlinks to directories).
erofs::Tree to_tree(lcfs_node_s* root);

// A new node tree (one reference to the root); a hardlinked inode becomes a full node at its
// first name in depth-first order and link_to nodes at the others.
lcfs_node_s* from_tree(const erofs::Tree& tree);

}  // namespace cfs::lcfs
