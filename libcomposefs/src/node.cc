// lcfs_node_*: the reference-counted node tree with C composefs 1.0.8's semantics (sorted
// children, names set by the parent, hardlinks as link_to references, xattr budgets).
#include "node.h"

#include <linux/limits.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <unordered_map>

#include "cfs/erofs/format.h"
#include "guard.h"

namespace cfs::lcfs {
namespace {

constexpr size_t kMaxName = 255;
constexpr size_t kXattrHeaderSize = 12;  // sizeof(struct erofs_xattr_ibody_header)
constexpr size_t kXattrNameMax = 255;

// The space one xattr may take in the inode, assuming the worst alignment.
size_t xattr_cost(size_t name_len, size_t value_len) {
  return 2 * LCFS_INODE_XATTRMETA_SIZE - 1 + name_len + value_len;
}

std::vector<XattrEntry>::iterator find_xattr(lcfs_node_s* node, std::string_view name) {
  return std::find_if(node->xattrs.begin(), node->xattrs.end(),
                      [&](const XattrEntry& x) { return x.name == name; });
}

// Children are kept sorted bytewise, like strcmp orders them.
std::vector<lcfs_node_s*>::iterator child_position(lcfs_node_s* parent, std::string_view name) {
  return std::lower_bound(parent->children.begin(), parent->children.end(), name,
                          [](const lcfs_node_s* c, std::string_view n) { return *c->name < n; });
}

// Detaches every child (recursively, so reference cycles through link_to are broken) and
// drops the references the directory held.
void release_children(lcfs_node_s* node) noexcept {
  auto children = std::move(node->children);
  node->children.clear();
  node->sync();
  for (lcfs_node_s* child : children) {
    child->name.reset();
    child->head.parent = nullptr;
    child->sync();
    release_children(child);
    lcfs_node_unref(child);
  }
}

lcfs_node_s* clone_deep(lcfs_node_s* node,
                        std::unordered_map<const lcfs_node_s*, lcfs_node_s*>& mapping) {
  lcfs_node_s* copy = lcfs_node_clone(node);
  if (copy == nullptr) return nullptr;
  mapping[node] = copy;
  for (lcfs_node_s* child : node->children) {
    lcfs_node_s* child_copy = clone_deep(child, mapping);
    if (child_copy == nullptr || lcfs_node_add_child(copy, child_copy, child->name->c_str()) < 0) {
      if (child_copy != nullptr) lcfs_node_unref(child_copy);
      lcfs_node_unref(copy);
      return nullptr;
    }
  }
  return copy;
}

void rewrite_links(lcfs_node_s* node,
                   const std::unordered_map<const lcfs_node_s*, lcfs_node_s*>& mapping) {
  for (lcfs_node_s* child : node->children) rewrite_links(child, mapping);
  if (node->head.link_to == nullptr) return;
  auto it = mapping.find(node->head.link_to);
  if (it == mapping.end()) return;
  lcfs_node_unref(node->head.link_to);
  node->head.link_to = lcfs_node_ref(it->second);
}

}  // namespace

lcfs_node_s* new_node() {
  // The C API hands out owning raw pointers; lcfs_node_unref deletes.
  auto node = std::make_unique<lcfs_node_s>();
  node->head.ref_count = 1;
  node->head.inode.st_nlink = 1;
  node->sync();
  return node.release();
}

lcfs_node_s* follow_links(lcfs_node_s* node) noexcept {
  // A chain longer than the number of nodes that could exist is a cycle; C limits it too.
  for (int depth = 0; node->head.link_to != nullptr; ++depth) {
    if (depth > 1024) return nullptr;
    node = node->head.link_to;
  }
  return node;
}

bool valid_mode(uint32_t mode) noexcept {
  return erofs::file_type_of(mode) != erofs::kFtUnknown;
}

}  // namespace cfs::lcfs

void lcfs_node_s::sync() noexcept {
  head.children = children.empty() ? nullptr : children.data();
  head.children_capacity = children.capacity();
  head.children_size = children.size();
  head.name = name ? name->data() : nullptr;
  head.payload = payload ? payload->data() : nullptr;
  head.content = content ? reinterpret_cast<uint8_t*>(content->data()) : nullptr;
  head.xattrs = nullptr;  // C's xattr array is not mirrored: its tools never read it
  head.n_xattrs = xattrs.size();
}

using cfs::lcfs::with_errno;

extern "C" {

lcfs_node_s* lcfs_node_new(void) {
  return with_errno([] { return cfs::lcfs::new_node(); }, static_cast<lcfs_node_s*>(nullptr));
}

lcfs_node_s* lcfs_node_ref(lcfs_node_s* node) {
  node->head.ref_count++;
  return node;
}

void lcfs_node_unref(lcfs_node_s* node) {
  if (--node->head.ref_count > 0) return;
  cfs::lcfs::release_children(node);
  if (node->head.link_to != nullptr) lcfs_node_unref(node->head.link_to);
  std::unique_ptr<lcfs_node_s> owned(node);
}

lcfs_node_s* lcfs_node_clone(lcfs_node_s* node) {
  return with_errno(
      [&] {
        lcfs_node_s* copy = cfs::lcfs::new_node();
        if (node->head.link_to != nullptr) copy->head.link_to = lcfs_node_ref(node->head.link_to);
        copy->payload = node->payload;
        copy->content = node->content;
        copy->xattrs = node->xattrs;
        copy->head.xattr_size = node->head.xattr_size;
        copy->head.digest_set = node->head.digest_set;
        std::memcpy(copy->head.digest, node->head.digest, LCFS_DIGEST_SIZE);
        copy->head.inode = node->head.inode;
        copy->sync();
        return copy;
      },
      static_cast<lcfs_node_s*>(nullptr));
}

lcfs_node_s* lcfs_node_clone_deep(lcfs_node_s* node) {
  return with_errno(
      [&]() -> lcfs_node_s* {
        std::unordered_map<const lcfs_node_s*, lcfs_node_s*> mapping;
        lcfs_node_s* copy = cfs::lcfs::clone_deep(node, mapping);
        if (copy != nullptr) cfs::lcfs::rewrite_links(copy, mapping);
        return copy;
      },
      static_cast<lcfs_node_s*>(nullptr));
}

const char* lcfs_node_get_xattr(lcfs_node_s* node, const char* name, size_t* length) {
  auto it = cfs::lcfs::find_xattr(node, name);
  if (it == node->xattrs.end()) return nullptr;
  if (length != nullptr) *length = it->value.size();
  return it->value.data();
}

int lcfs_node_unset_xattr(lcfs_node_s* node, const char* name) {
  auto it = cfs::lcfs::find_xattr(node, name);
  if (it == node->xattrs.end()) {
    errno = ENODATA;
    return -1;
  }
  const size_t cost = cfs::lcfs::xattr_cost(it->name.size(), it->value.size());
  if (it != node->xattrs.end() - 1) *it = std::move(node->xattrs.back());
  node->xattrs.pop_back();
  node->head.xattr_size = node->xattrs.empty() ? 0 : node->head.xattr_size - cost;
  node->sync();
  return 0;
}

int lcfs_node_set_xattr(lcfs_node_s* node, const char* name, const char* value, size_t value_len) {
  const size_t name_len = std::strlen(name);
  if (name_len == 0 || name_len > cfs::lcfs::kXattrNameMax) {
    errno = ERANGE;
    return -1;
  }
  if (value_len > UINT16_MAX) {
    errno = EINVAL;
    return -1;
  }
  lcfs_node_unset_xattr(node, name);
  size_t cost = cfs::lcfs::xattr_cost(name_len, value_len);
  if (node->xattrs.empty()) cost += cfs::lcfs::kXattrHeaderSize;
  if (node->head.xattr_size + cost > LCFS_INODE_EXTERNAL_XATTR_MAX) {
    errno = ERANGE;
    return -1;
  }
  return with_errno(
      [&] {
        node->xattrs.push_back({std::string(name, name_len), std::string(value, value_len)});
        node->head.xattr_size += cost;
        node->sync();
        return 0;
      },
      -1);
}

size_t lcfs_node_get_n_xattr(lcfs_node_s* node) {
  return node->xattrs.size();
}

const char* lcfs_node_get_xattr_name(lcfs_node_s* node, size_t index) {
  return index < node->xattrs.size() ? node->xattrs[index].name.c_str() : nullptr;
}

int lcfs_node_set_payload(lcfs_node_s* node, const char* payload) {
  if (payload != nullptr && std::strlen(payload) >= PATH_MAX) {
    errno = ENAMETOOLONG;
    return -1;
  }
  return with_errno(
      [&] {
        if (payload != nullptr)
          node->payload = payload;
        else
          node->payload.reset();
        node->sync();
        return 0;
      },
      -1);
}

int lcfs_node_set_symlink_payload(lcfs_node_s* node, const char* payload) {
  if (payload == nullptr || *payload == '\0') {
    errno = EINVAL;
    return -1;
  }
  if (lcfs_node_set_payload(node, payload) < 0) return -1;
  // The target length is a symlink's size, whatever size was set before.
  node->head.inode.st_size = node->payload->size();
  return 0;
}

const char* lcfs_node_get_payload(lcfs_node_s* node) {
  return node->head.payload;
}

int lcfs_node_set_content(lcfs_node_s* node, const uint8_t* data, size_t data_size) {
  if (data != nullptr && data_size > LCFS_INLINE_CONTENT_MAX) {
    errno = EINVAL;
    return -1;
  }
  return with_errno(
      [&] {
        if (data != nullptr && data_size != 0)
          node->content.emplace(reinterpret_cast<const char*>(data), data_size);
        else
          node->content.reset();
        node->head.inode.st_size = data_size;
        node->sync();
        return 0;
      },
      -1);
}

const uint8_t* lcfs_node_get_content(lcfs_node_s* node) {
  return node->head.content;
}

lcfs_node_s* lcfs_node_lookup_child(lcfs_node_s* node, const char* name) {
  auto it = cfs::lcfs::child_position(node, name);
  return it != node->children.end() && *(*it)->name == name ? *it : nullptr;
}

lcfs_node_s* lcfs_node_get_parent(lcfs_node_s* node) {
  return node->head.parent;
}

int lcfs_node_add_child(lcfs_node_s* parent, lcfs_node_s* child, const char* name) {
  if ((parent->head.inode.st_mode & S_IFMT) != S_IFDIR) {
    errno = ENOTDIR;
    return -1;
  }
  const size_t name_len = std::strlen(name);
  if (name_len == 0) {
    errno = EINVAL;
    return -1;
  }
  if (name_len > cfs::lcfs::kMaxName) {
    errno = ENAMETOOLONG;
    return -1;
  }
  if (child->name) {  // a node lives in one directory only
    errno = EMLINK;
    return -1;
  }
  auto pos = cfs::lcfs::child_position(parent, name);
  if (pos != parent->children.end() && *(*pos)->name == name) {
    errno = EEXIST;
    return -1;
  }
  return with_errno(
      [&] {
        child->name.emplace(name, name_len);
        parent->children.insert(pos, child);
        child->head.parent = parent;
        child->sync();
        parent->sync();
        return 0;
      },
      -1);
}

const char* lcfs_node_get_name(lcfs_node_s* node) {
  return node->head.name;
}

size_t lcfs_node_get_n_children(lcfs_node_s* node) {
  return node->children.size();
}

lcfs_node_s* lcfs_node_get_child(lcfs_node_s* node, size_t i) {
  return i < node->children.size() ? node->children[i] : nullptr;
}

void lcfs_node_make_hardlink(lcfs_node_s* node, lcfs_node_s* target) {
  // No error return: a cycle marks the node invalid and lcfs_write_to reports it.
  if (node == target || cfs::lcfs::follow_links(target) == nullptr) {
    node->head.link_to_invalid = true;
    return;
  }
  if (node->head.link_to != nullptr) lcfs_node_unref(node->head.link_to);
  node->head.link_to = lcfs_node_ref(target);
  node->head.link_to_invalid = false;
  target->head.inode.st_nlink++;
}

lcfs_node_s* lcfs_node_get_hardlink_target(lcfs_node_s* node) {
  return node->head.link_to;
}

bool lcfs_node_dirp(lcfs_node_s* node) {
  return (node->head.inode.st_mode & S_IFMT) == S_IFDIR;
}
uint32_t lcfs_node_get_mode(lcfs_node_s* node) {
  return node->head.inode.st_mode;
}
void lcfs_node_set_mode(lcfs_node_s* node, uint32_t mode) {
  node->head.inode.st_mode = mode;
}

int lcfs_node_try_set_mode(lcfs_node_s* node, uint32_t mode) {
  if (!cfs::lcfs::valid_mode(mode)) {
    errno = EINVAL;
    return -1;
  }
  node->head.inode.st_mode = mode;
  return 0;
}

uint32_t lcfs_node_get_uid(lcfs_node_s* node) {
  return node->head.inode.st_uid;
}
void lcfs_node_set_uid(lcfs_node_s* node, uint32_t uid) {
  node->head.inode.st_uid = uid;
}
uint32_t lcfs_node_get_gid(lcfs_node_s* node) {
  return node->head.inode.st_gid;
}
void lcfs_node_set_gid(lcfs_node_s* node, uint32_t gid) {
  node->head.inode.st_gid = gid;
}
// The node keeps 32 bits of device number, as 1.0.8 does; rdev64 truncates on the way in.
uint32_t lcfs_node_get_rdev(lcfs_node_s* node) {
  return node->head.inode.st_rdev;
}
uint64_t lcfs_node_get_rdev64(lcfs_node_s* node) {
  return node->head.inode.st_rdev;
}
void lcfs_node_set_rdev(lcfs_node_s* node, uint32_t rdev) {
  node->head.inode.st_rdev = rdev;
}
void lcfs_node_set_rdev64(lcfs_node_s* node, uint64_t rdev) {
  node->head.inode.st_rdev = static_cast<uint32_t>(rdev);
}
uint32_t lcfs_node_get_nlink(lcfs_node_s* node) {
  return node->head.inode.st_nlink;
}
void lcfs_node_set_nlink(lcfs_node_s* node, uint32_t nlink) {
  node->head.inode.st_nlink = nlink;
}
uint64_t lcfs_node_get_size(lcfs_node_s* node) {
  return node->head.inode.st_size;
}

void lcfs_node_set_size(lcfs_node_s* node, uint64_t size) {
  if (size == node->head.inode.st_size) return;
  node->content.reset();  // inline content no longer matches
  node->head.inode.st_size = size;
  node->sync();
}

void lcfs_node_set_mtime(lcfs_node_s* node, struct timespec* time) {
  node->head.inode.st_mtim_sec = time->tv_sec;
  node->head.inode.st_mtim_nsec = static_cast<uint32_t>(time->tv_nsec);
}

void lcfs_node_get_mtime(lcfs_node_s* node, struct timespec* time) {
  time->tv_sec = node->head.inode.st_mtim_sec;
  time->tv_nsec = node->head.inode.st_mtim_nsec;
}

const uint8_t* lcfs_node_get_fsverity_digest(lcfs_node_s* node) {
  return node->head.digest_set ? node->head.digest : nullptr;
}

void lcfs_node_set_fsverity_digest(lcfs_node_s* node, uint8_t digest[LCFS_DIGEST_SIZE]) {
  node->head.digest_set = true;
  std::memcpy(node->head.digest, digest, LCFS_DIGEST_SIZE);
}

}  // extern "C"
