#include "cfs/oci/tree.h"

#include <fcntl.h>
#include <selinux/label.h>
#include <selinux/selinux.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cfs/erofs/dumpfile.h"
#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fd.h"
#include "cfs/fsverity.h"
#include "cfs/safe_open.h"
#include "cfs/temp_dir.h"

namespace cfs::oci {

namespace {

constexpr std::string_view kOpaqueWhiteout = ".wh..wh..opq";
constexpr std::string_view kWhiteoutPrefix = ".wh.";

// Splits a tar path into components, refusing anything that could leave the tree.
std::vector<std::string_view> split_path(std::string_view path, const std::string& what,
                                         std::string_view role) {
  if (path.starts_with('/'))
    throw Error(what + ": " + std::string(role) + " '" + escape_for_log(path) +
                "' is absolute; layer paths must be relative to the image root");
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    auto slash = path.find('/');
    std::string_view part = path.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view{} : path.substr(slash + 1);
    if (part.empty() || part == ".") continue;
    if (part == "..")
      throw Error(what + ": " + std::string(role) + " contains '..', refusing to leave the tree");
    if (part.size() > erofs::kNameMax)
      throw Error(what + ": " + std::string(role) + " has a component over 255 bytes");
    parts.push_back(part);
  }
  return parts;
}

// A path for messages only: the components come from the layer, so they are escaped.
std::string join(const std::vector<std::string_view>& parts, size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out.append("/").append(escape_for_log(parts[i]));
  return out.empty() ? "/" : out;
}

void set_stat(erofs::Inode& inode, const TarEntry& e) {
  inode.mode = (inode.mode & S_IFMT) | e.mode;
  inode.uid = e.uid;
  inode.gid = e.gid;
  inode.mtime_sec = e.mtime_sec;
  inode.mtime_nsec = e.mtime_nsec;
  inode.xattrs = e.xattrs;
  inode.sort_xattrs();
}

// The S_IFMT type of each entry type that becomes an inode of its own.
constexpr std::pair<TarEntryType, uint32_t> kInodeTypes[] = {
    {TarEntryType::regular, S_IFREG}, {TarEntryType::symlink, S_IFLNK},
    {TarEntryType::chardev, S_IFCHR}, {TarEntryType::blockdev, S_IFBLK},
    {TarEntryType::fifo, S_IFIFO},    {TarEntryType::directory, S_IFDIR},
};

erofs::InodePtr make_leaf(const TarEntry& e, const std::string& path, const std::string& what) {
  auto it = std::find_if(std::begin(kInodeTypes), std::end(kInodeTypes),
                         [&](const auto& t) { return t.first == e.type; });
  if (it == std::end(kInodeTypes))
    throw Error(what + ": " + path + ": internal: hardlink is not a leaf");
  uint32_t type = it->second;
  erofs::InodePtr inode = erofs::make_inode(type);
  set_stat(*inode, e);
  switch (e.type) {
    case TarEntryType::regular:
      inode->size = e.size;
      if (e.pending && e.size > 0) {
        inode->payload = *e.pending;
      } else if (e.external()) {
        if (!e.object) throw Error(what + ": " + path + ": large file without an object");
        inode->payload = e.object->object_path();
        inode->digest = *e.object;
      } else if (e.size > 0) {
        inode->content = e.content.value_or(std::string());
      }
      break;
    case TarEntryType::symlink:
      if (e.link.empty()) throw Error(what + ": " + path + ": symlink with an empty target");
      if (e.link.size() > erofs::kSymlinkMaxCfs)
        throw Error(what + ": " + path + ": symlink target of " + std::to_string(e.link.size()) +
                    " bytes (at most " + std::to_string(erofs::kSymlinkMaxCfs) + ")");
      inode->payload = e.link;
      inode->size = e.link.size();
      break;
    case TarEntryType::chardev:
    case TarEntryType::blockdev:
      inode->rdev = makedev(e.dev_major, e.dev_minor);
      break;
    default:
      break;
  }
  return inode;
}

}  // namespace

namespace {

bool dirent_less(const erofs::Dirent& d, std::string_view name) {
  return d.name < name;
}

// Out-of-order children wait in a sorted side vector of at most this many entries before
// being merged in: inserting each into the middle of a large children vector is quadratic
// (a 300,000-file directory in readdir order), merging every kPendingMax is not.
constexpr size_t kPendingMax = 4096;

}  // namespace

erofs::InodePtr LayerMerger::child(erofs::Inode& dir, std::string_view name) const {
  auto it = std::lower_bound(dir.children.begin(), dir.children.end(), name, dirent_less);
  if (it != dir.children.end() && it->name == name) return it->inode;
  auto p = pending_.find(&dir);
  if (p == pending_.end()) return nullptr;
  auto jt = std::lower_bound(p->second.begin(), p->second.end(), name, dirent_less);
  if (jt != p->second.end() && jt->name == name) return jt->inode;
  return nullptr;
}

void LayerMerger::set_child(erofs::Inode& dir, std::string_view name, erofs::InodePtr inode) {
  auto& children = dir.children;
  auto it = std::lower_bound(children.begin(), children.end(), name, dirent_less);
  if (it != children.end() && it->name == name) {
    it->inode = std::move(inode);
    return;
  }
  auto p = pending_.find(&dir);
  if (p != pending_.end()) {
    auto jt = std::lower_bound(p->second.begin(), p->second.end(), name, dirent_less);
    if (jt != p->second.end() && jt->name == name) {
      jt->inode = std::move(inode);
      return;
    }
  }
  if (it == children.end()) {  // in order: the common case
    children.push_back({std::string(name), std::move(inode)});
    return;
  }
  auto& side = pending_[&dir];
  side.insert(std::lower_bound(side.begin(), side.end(), name, dirent_less),
              {std::string(name), std::move(inode)});
  if (side.size() >= kPendingMax) merge_pending(dir);
}

void LayerMerger::merge_pending(erofs::Inode& dir) {
  auto p = pending_.find(&dir);
  if (p == pending_.end()) return;
  std::vector<erofs::Dirent> merged;
  merged.reserve(dir.children.size() + p->second.size());
  std::merge(std::make_move_iterator(dir.children.begin()),
             std::make_move_iterator(dir.children.end()),
             std::make_move_iterator(p->second.begin()), std::make_move_iterator(p->second.end()),
             std::back_inserter(merged),
             [](const erofs::Dirent& a, const erofs::Dirent& b) { return a.name < b.name; });
  dir.children = std::move(merged);
  pending_.erase(p);
}

bool LayerMerger::remove_child(erofs::Inode& dir, std::string_view name) {
  if (dir.remove_child(name)) return true;
  auto p = pending_.find(&dir);
  if (p == pending_.end()) return false;
  auto jt = std::lower_bound(p->second.begin(), p->second.end(), name, dirent_less);
  if (jt == p->second.end() || jt->name != name) return false;
  p->second.erase(jt);
  return true;
}

void LayerMerger::forget_dirs() {
  // A directory is about to be removed or replaced: raw pointers to it (the cursor, the
  // pending map's keys) must not outlive it.
  cursor_names_.clear();
  cursor_dirs_.clear();
  while (!pending_.empty()) merge_pending(*pending_.begin()->first);
}

// The directory that holds the last component; every step must be a real directory.
erofs::Inode& LayerMerger::parent_dir(const std::vector<std::string_view>& parts,
                                      const std::string& what) {
  size_t depth = parts.size() - 1;
  size_t reuse = 0;
  while (reuse < depth && reuse < cursor_names_.size() && cursor_names_[reuse] == parts[reuse])
    ++reuse;
  cursor_names_.resize(reuse);
  cursor_dirs_.resize(reuse);
  erofs::Inode* dir = reuse ? cursor_dirs_.back() : tree_.root.get();
  for (size_t i = reuse; i < depth; ++i) {
    erofs::Inode* next = child(*dir, parts[i]).get();
    if (!next)
      throw Error(what + ": " + join(parts, parts.size()) + ": parent directory " +
                  join(parts, i + 1) + " does not exist");
    if (next->is_symlink())
      throw Error(what + ": " + join(parts, parts.size()) + ": path goes through the symlink " +
                  join(parts, i + 1));
    if (!next->is_dir())
      throw Error(what + ": " + join(parts, parts.size()) + ": " + join(parts, i + 1) +
                  " is not a directory");
    dir = next;
    cursor_names_.emplace_back(parts[i]);
    cursor_dirs_.push_back(dir);
  }
  return *dir;
}

void LayerMerger::apply(const TarEntry& e, const std::string& what) {
  auto parts = split_path(e.path, what, "entry '" + escape_for_log(e.path) + "'");
  if (parts.empty()) {
    if (e.type != TarEntryType::directory)
      throw Error(what + ": the root entry '" + escape_for_log(e.path) + "' is not a directory");
    set_stat(*tree_.root, e);
    return;
  }
  std::string path = join(parts, parts.size());
  erofs::Inode* dir = &parent_dir(parts, what);
  std::string_view name = parts.back();

  if (name.starts_with(kWhiteoutPrefix)) {
    if (name == kOpaqueWhiteout) {
      forget_dirs();
      dir->children.clear();
    } else {
      std::string_view victim = name.substr(kWhiteoutPrefix.size());
      if (erofs::InodePtr old = child(*dir, victim); old && old->is_dir()) forget_dirs();
      remove_child(*dir, victim);
    }
    return;
  }

  if (e.type == TarEntryType::hardlink) {
    auto target_parts = split_path(e.link, what, "hardlink target of " + path);
    if (target_parts.empty()) throw Error(what + ": " + path + ": hardlink to the root directory");
    erofs::Inode& target_dir = parent_dir(target_parts, what);
    std::string target_path = join(target_parts, target_parts.size());
    erofs::InodePtr target = child(target_dir, target_parts.back());
    if (!target)
      throw Error(what + ": " + path + ": hardlink target " + target_path + " does not exist");
    if (target->is_dir())
      throw Error(what + ": " + path + ": hardlink target " + target_path + " is a directory");
    // The hardlink's own parent (the cursor now holds the target's chain).
    dir = &parent_dir(parts, what);
    if (erofs::InodePtr existing = child(*dir, name); existing && existing->is_dir()) {
      forget_dirs();
      dir = &parent_dir(parts, what);
    }
    set_child(*dir, name, std::move(target));
    return;
  }

  erofs::InodePtr existing = child(*dir, name);
  if (e.type == TarEntryType::directory && existing && existing->is_dir()) {
    set_stat(*existing, e);
    return;
  }
  if (existing && existing->is_dir()) {
    forget_dirs();
    dir = &parent_dir(parts, what);
  }
  set_child(*dir, name, make_leaf(e, path, what));
}

void LayerMerger::finish() {
  forget_dirs();
  count_links(tree_);
}

void count_links(erofs::Tree& tree) {
  std::unordered_map<erofs::Inode*, uint32_t> links;
  std::vector<erofs::Inode*> stack{tree.root.get()};
  while (!stack.empty()) {
    erofs::Inode* dir = stack.back();
    stack.pop_back();
    for (auto& child : dir->children) {
      if (child.inode->is_dir())
        stack.push_back(child.inode.get());
      else
        ++links[child.inode.get()];
    }
  }
  for (auto& [inode, count] : links) inode->nlink = count;
}

namespace {

erofs::Inode* top_dir(const erofs::Tree& tree, std::string_view name) {
  erofs::Inode* inode = tree.root->find(name);
  return inode && inode->is_dir() ? inode : nullptr;
}

template <typename Fn>
void for_each_inode(const erofs::Tree& tree, Fn&& fn) {
  erofs::walk(tree, [&](const erofs::WalkEntry& e) {
    if (e.first_visit) fn(const_cast<erofs::Inode&>(e.inode));
  });
}

}  // namespace

void transform_for_oci(erofs::Tree& tree) {
  erofs::Inode* usr = top_dir(tree, "usr");
  if (!usr) return;
  erofs::Inode& root = *tree.root;
  root.mode = usr->mode;
  root.uid = usr->uid;
  root.gid = usr->gid;
  root.mtime_sec = usr->mtime_sec;
  root.mtime_nsec = usr->mtime_nsec;
  root.xattrs = usr->xattrs;
  if (erofs::Inode* run = top_dir(tree, "run")) {
    run->children.clear();
    run->mtime_sec = usr->mtime_sec;
    run->mtime_nsec = usr->mtime_nsec;
    count_links(tree);
  }
}

void filter_xattrs(erofs::Tree& tree, XattrMode mode) {
  for_each_inode(tree, [&](erofs::Inode& inode) {
    erase_if(inode.xattrs, [&](const erofs::Xattr& x) { return !xattr_kept(x.name, mode); });
  });
}

namespace {

struct SelabelCloser {
  void operator()(selabel_handle* h) const { selabel_close(h); }
};

std::optional<std::string> policy_type(const std::string& config) {
  size_t pos = 0;
  while (pos < config.size()) {
    size_t end = config.find('\n', pos);
    std::string_view line(config.data() + pos,
                          (end == std::string::npos ? config.size() : end) - pos);
    pos = end == std::string::npos ? config.size() : end + 1;
    auto eq = line.find('=');
    if (eq == std::string_view::npos) continue;
    auto trim = [](std::string_view s) {
      while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
      while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
      return s;
    };
    std::string key(trim(line.substr(0, eq)));
    for (char& c : key) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (key == "SELINUXTYPE") return std::string(trim(line.substr(eq + 1)));
  }
  return std::nullopt;
}

const erofs::Inode* regular_file(const erofs::Tree& tree, const std::string& path) {
  const erofs::Inode* inode = tree.lookup(path);
  return inode && inode->is_reg() ? inode : nullptr;
}

}  // namespace

bool transform_for_boot(erofs::Tree& tree, const TreeFileReader& read_file) {
  if (erofs::Inode* usr = top_dir(tree, "usr")) {
    for (const char* name : {"boot", "sysroot"}) {
      // composefs-rs sets the seconds only: the nanoseconds stay the directory's own.
      if (erofs::Inode* dir = top_dir(tree, name)) {
        dir->children.clear();
        dir->mtime_sec = usr->mtime_sec;
      }
    }
    count_links(tree);
  }

  std::optional<std::string> type;
  if (const erofs::Inode* config = regular_file(tree, "/etc/selinux/config"))
    type = policy_type(read_file(*config, "/etc/selinux/config"));
  if (type && (type->empty() || type->find('/') != std::string::npos || *type == ".."))
    throw Error("/etc/selinux/config: SELINUXTYPE '" + escape_for_log(*type) +
                "' is not a policy name");
  std::string contexts = type ? "/etc/selinux/" + *type + "/contexts/files/" : "";
  if (!type || !regular_file(tree, contexts + "file_contexts")) {
    for_each_inode(tree, [](erofs::Inode& inode) { inode.remove_xattr("security.selinux"); });
    return false;
  }

  // A private directory for the policy files libselinux reads, removed afterwards.
  TempDir dir(TempDir::default_parent(), "cfs-selinux-");
  for (const char* suffix : {"", ".local", ".homedirs", ".subs", ".subs_dist"}) {
    std::string name = std::string("file_contexts") + suffix;
    const erofs::Inode* file = regular_file(tree, contexts + name);
    if (!file) continue;
    std::string data = read_file(*file, contexts + name);
    UniqueFd fd = open_file(dir.path() + "/" + name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    write_all(fd.get(), {reinterpret_cast<const std::byte*>(data.data()), data.size()},
              dir.path() + "/" + name);
  }
  std::string spec = dir.path() + "/file_contexts";
  selinux_opt opts[] = {{SELABEL_OPT_PATH, spec.c_str()}};
  std::unique_ptr<selabel_handle, SelabelCloser> handle(selabel_open(SELABEL_CTX_FILE, opts, 1));
  if (!handle)
    throw SystemError(errno, contexts + "file_contexts: libselinux cannot load the image's policy");

  // Hardlinked inodes are labelled for each of their paths; the last one wins, as in
  // composefs-rs.
  erofs::walk(tree, [&](const erofs::WalkEntry& e) {
    auto& inode = const_cast<erofs::Inode&>(e.inode);
    char* con = nullptr;
    if (selabel_lookup(handle.get(), &con, e.path.c_str(), inode.type()) == 0 && con) {
      std::string label(con);
      freecon(con);
      if (label == "<<none>>")
        inode.remove_xattr("security.selinux");
      else
        inode.set_xattr("security.selinux", std::move(label));
    } else {
      if (errno != ENOENT)
        throw SystemError(errno, escape_for_log(e.path) + ": SELinux label lookup failed");
      inode.remove_xattr("security.selinux");
    }
  });
  return true;
}

void transform_tree(erofs::Tree& tree, const TreeTransform& transform,
                    const TreeFileReader& read_file) {
  if (transform.oci) {
    transform_for_oci(tree);
    filter_xattrs(tree, transform.xattrs);
  }
  if (transform.bootable) transform_for_boot(tree, read_file);
}

TreeFileReader directory_file_reader(std::string dir) {
  return [dir = std::move(dir)](const erofs::Inode& inode, const std::string& path) {
    if (inode.content) return *inode.content;
    if (!inode.digest) return std::string();
    std::string what = dir + path;
    UniqueFd root = open_file(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    std::string_view rel = path;
    while (rel.starts_with('/')) rel.remove_prefix(1);
    UniqueFd fd = open_regular_beneath(root.get(), rel, O_RDONLY, what);
    std::string data = read_fd(fd.get(), what);
    if (data.size() != inode.size ||
        fsverity_digest(data, inode.digest->algorithm()) != *inode.digest)
      throw Error(what + ": the file changed after it was scanned");
    return data;
  };
}

}  // namespace cfs::oci
