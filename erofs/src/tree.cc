#include "cfs/erofs/tree.h"

#include <algorithm>
#include <unordered_set>

#include "cfs/error.h"

namespace cfs::erofs {

namespace {
auto child_less = [](const Dirent& d, std::string_view name) {
  return std::string_view(d.name) < name;
};
auto xattr_less = [](const Xattr& x, std::string_view name) {
  return std::string_view(x.name) < name;
};
}  // namespace

InodePtr make_inode(uint32_t mode) {
  InodePtr inode(std::make_unique<InodePtr::Box>().release());
  inode->mode = mode;
  return inode;
}

Inode* Inode::find(std::string_view name) const {
  auto it = std::lower_bound(children.begin(), children.end(), name, child_less);
  if (it == children.end() || it->name != name) return nullptr;
  return it->inode.get();
}

const InodePtr& Inode::set_child(std::string name, InodePtr inode) {
  // Fast path: input usually arrives sorted (dumpfiles, readdir after sorting).
  if (children.empty() || children.back().name < name) {
    // Grown by a quarter, not doubled: directories are filled one entry at a time and never
    // shrunk, so doubling leaves a third of all dirents' memory unused on average.
    if (children.size() == children.capacity())
      children.reserve(children.size() + children.size() / 4 + 4);
    children.push_back({std::move(name), std::move(inode)});
    return children.back().inode;
  }
  auto it = std::lower_bound(children.begin(), children.end(), name, child_less);
  if (it != children.end() && it->name == name) {
    it->inode = std::move(inode);
    return it->inode;
  }
  it = children.insert(it, {std::move(name), std::move(inode)});
  return it->inode;
}

bool Inode::remove_child(std::string_view name) {
  auto it = std::lower_bound(children.begin(), children.end(), name, child_less);
  if (it == children.end() || it->name != name) return false;
  children.erase(it);
  return true;
}

const Xattr* Inode::find_xattr(std::string_view name) const {
  auto it = std::lower_bound(xattrs.begin(), xattrs.end(), name, xattr_less);
  if (it == xattrs.end() || it->name != name) return nullptr;
  return &*it;
}

void Inode::set_xattr(std::string name, std::string value) {
  auto it = std::lower_bound(xattrs.begin(), xattrs.end(), name, xattr_less);
  if (it != xattrs.end() && it->name == name) {
    it->value = std::move(value);
    return;
  }
  xattrs.insert(it, {std::move(name), std::move(value)});
}

bool Inode::remove_xattr(std::string_view name) {
  auto it = std::lower_bound(xattrs.begin(), xattrs.end(), name, xattr_less);
  if (it == xattrs.end() || it->name != name) return false;
  xattrs.erase(it);
  return true;
}

void Inode::sort_xattrs() {
  std::stable_sort(xattrs.begin(), xattrs.end(),
                   [](const Xattr& a, const Xattr& b) { return a.name < b.name; });
}

std::string_view Tree::inline_content(const Inode& inode, std::string& buf) const {
  if (inode.content) return *inode.content;
  const ContentRef ref = inode.content.ref();
  if (ref.length == 0) return {};
  if (!content_source) throw Error("composefs tree: inline content without a content source");
  content_source->read(ref, inode.size, buf);
  return buf;
}

Inode* Tree::lookup(std::string_view path) const {
  if (path.empty() || path[0] != '/') return nullptr;
  Inode* cur = root.get();
  size_t pos = 1;
  while (pos < path.size()) {
    size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    if (end > pos) {
      if (!cur->is_dir()) return nullptr;
      cur = cur->find(path.substr(pos, end - pos));
      if (!cur) return nullptr;
    }
    pos = end + 1;
  }
  return cur;
}

namespace {
void walk_dir(const Inode& dir, std::string& path, std::unordered_set<const Inode*>& seen,
              const WalkFn& fn) {
  for (const Dirent& d : dir.children) {
    size_t old = path.size();
    if (path.size() > 1) path += '/';
    path += d.name;
    // An inode referenced once cannot have been seen before; skip the set for it.
    bool shared = d.inode.use_count() > 1;
    bool first = !shared || seen.insert(d.inode.get()).second;
    fn(WalkEntry{path, *d.inode, first, shared, d.link});
    if (d.inode->is_dir() && first) walk_dir(*d.inode, path, seen, fn);
    path.resize(old);
  }
}
}  // namespace

void walk(const Tree& tree, const WalkFn& fn) {
  std::unordered_set<const Inode*> seen;
  std::string path = "/";
  seen.insert(tree.root.get());
  fn(WalkEntry{path, *tree.root, true, false});
  walk_dir(*tree.root, path, seen, fn);
}

uint32_t directory_nlink(const Inode& dir) {
  uint32_t n = 2;
  for (const Dirent& d : dir.children)
    if (d.inode->is_dir()) n++;
  return n;
}

}  // namespace cfs::erofs
