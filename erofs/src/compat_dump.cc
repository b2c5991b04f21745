// composefs-info 1.0.8's dump and ls, byte for byte.
#include "cfs/erofs/compat_dump.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cfs/erofs/composefs.h"
#include "cfs/erofs/dumpfile.h"
#include "cfs/error.h"
#include "reader_internal.h"

namespace cfs::erofs {

namespace {

// composefs-info dump, printed straight from the image as the C tool's reader sees it. The
// Tree keeps xattrs sorted and drops the overlay markers, while the C tool prints each
// inode's xattrs in stored order (inline, then shared), keeps the opaque markers, and gives
// '@' lines the target's content, digest and xattrs; going through the image directly is
// the only way to print byte for byte the same text.
//
// Linear in the output: xattr names are indexed per inode, a hardlinked inode is decoded once
// (its later names reuse the formatted fields), and the output is capped like `cfsctl dump`'s
// decoded tree (32 x image size + 64 MiB), since a small image can share a large xattr value
// with every inode.
//
// The same walk prints `cfsctl dump` (Style::tree): write_dumpfile(image.to_tree()) byte for
// byte, each inode decoded as the tree holds it (detail::InodeDecoder), one at a time.
class CompatDumper {
 public:
  enum class Style { compat, tree };

  CompatDumper(const Image& image, OutputSink& out, std::span<const std::string> filter,
               Style style = Style::compat,
               std::unordered_map<uint64_t, std::string> link_homes = {})
      : image_(image),
        out_(out),
        filter_(filter),
        budget_(image.decode_budget()),
        style_(style),
        decoder_(image, "decoded tree"),
        link_homes_(std::move(link_homes)) {}

  void dump() {
    std::string path;
    InodeInfo root = image_.root();
    if (style_ == Style::tree) {
      Children children = children_of(root, true);
      emit_tree(root, "/", nullptr, has_whiteout_child(children, true));
      walk_dir(std::move(children), path);
      flush();
      return;
    }
    emit(path, format(root), nullptr);
    walk_dir(children_of(root, true), path);
  }

 private:
  // An inode as the C reader rebuilds it.
  struct Node {
    uint32_t mode = 0;
    uint64_t size = 0;
    uint64_t rdev = 0;
    std::optional<std::string_view> payload;
    std::optional<std::string> content;
    std::optional<Digest> digest;
    std::vector<std::pair<std::string, std::string_view>> xattrs;
    std::unordered_map<std::string, size_t> xattr_index;  // name -> position in xattrs
  };

  // One inode's line without its path: the fields before the payload (after "PATH "), the
  // payload, and the rest from the content field on (with the newline).
  struct Formatted {
    std::string head;  // "SIZE MODE NLINK UID GID RDEV MTIME " (MODE without '@')
    std::string payload;
    std::string tail;
  };

  Node load(const InodeInfo& inode) const {
    Node node;
    node.mode = inode.mode;
    node.size = inode.size;
    if (inode.type() == S_IFCHR || inode.type() == S_IFBLK) node.rdev = inode.rdev;
    if (inode.is_symlink()) node.payload = image_.symlink_target(inode);
    if (inode.is_reg() && !inode.is_external() && inode.size > 0) {
      std::string data(static_cast<size_t>(inode.size), '\0');
      size_t n = image_.read(inode, 0, std::as_writable_bytes(std::span(data)));
      data.resize(n);
      node.content = std::move(data);
    }
    XattrCursor cursor = image_.xattrs(inode);
    XattrView x;
    while (cursor.next(x)) {
      std::string name = x.name();
      const bool is_reg = (node.mode & S_IFMT) == S_IFREG;
      if (name == composefs::kRedirectXattr) {
        if (is_reg) {
          std::string_view v = x.value;
          if (v.size() > 1 && v[0] == '/') v.remove_prefix(1);
          node.payload = v;
        }
      } else if (name == composefs::kMetacopyXattr) {
        if (is_reg) node.digest = composefs::compat_metacopy_digest(x.value);
      } else if (name == composefs::kEscapedWhiteout && is_reg) {
        node.mode = (node.mode & ~S_IFMT) | S_IFCHR;
        node.rdev = 0;
        node.size = 0;
      } else if (name == composefs::kEscapedWhiteouts || name == composefs::kUserWhiteout ||
                 name == composefs::kUserWhiteouts) {
        // bookkeeping of the writer, not part of the tree
      } else if (auto user_name = composefs::unescape_xattr_name(std::move(name))) {
        set_xattr(node, std::move(*user_name), x.value);
      }
    }
    return node;
  }

  // C's lcfs_node_set_xattr: a repeated name replaces the value in place.
  static void set_xattr(Node& node, std::string name, std::string_view value) {
    auto [it, inserted] = node.xattr_index.try_emplace(name, node.xattrs.size());
    if (!inserted) {
      node.xattrs[it->second].second = value;
      return;
    }
    node.xattrs.emplace_back(std::move(name), value);
  }

  static void append_optional(std::string& out, std::optional<std::string_view> value) {
    if (!value)
      out += '-';
    else if (*value == "-")
      out += "\\x2d";
    else
      append_escaped(out, *value, false);
  }

  Formatted format(const InodeInfo& inode) const {
    Node node = load(inode);
    Formatted f;
    char mode[16];
    std::snprintf(mode, sizeof mode, "%o", node.mode);
    f.head = std::to_string(node.size) + ' ' + mode + ' ' + std::to_string(inode.nlink) + ' ' +
             std::to_string(inode.uid) + ' ' + std::to_string(inode.gid) + ' ' +
             std::to_string(node.rdev) + ' ' + std::to_string(inode.mtime_sec) + '.' +
             std::to_string(inode.mtime_nsec) + ' ';
    append_optional(f.payload, node.payload);
    f.tail += ' ';
    append_optional(f.tail,
                    node.content ? std::optional<std::string_view>(*node.content) : std::nullopt);
    f.tail += ' ';
    f.tail += node.digest ? node.digest->hex() : "-";
    for (const auto& [name, value] : node.xattrs) {
      f.tail += ' ';
      append_escaped(f.tail, name, true);
      f.tail += '=';
      append_escaped(f.tail, value, true);
    }
    f.tail += '\n';
    return f;
  }

  void emit(const std::string& path, const Formatted& f, const std::string* hardlink_to) {
    line_.clear();
    append_escaped(line_, path.empty() ? "/" : path, false);
    line_ += ' ';
    if (hardlink_to) {
      // The head starts with SIZE, then MODE: the '@' goes right before MODE.
      size_t mode_at = f.head.find(' ') + 1;
      line_.append(f.head, 0, mode_at);
      line_ += '@';
      line_.append(f.head, mode_at);
      append_optional(line_, *hardlink_to);
    } else {
      line_ += f.head;
      line_ += f.payload;
    }
    charge(line_.size() + f.tail.size());
    out_.write(line_);
    out_.write(f.tail);
  }

  void charge(uint64_t bytes) {
    if (bytes > budget_)
      throw Error(image_.name() + ": dump exceeds " + std::to_string(image_.decode_budget()) +
                  " bytes (xattrs or data shared implausibly often)");
    budget_ -= bytes;
  }

  using Children = std::vector<std::pair<std::string, uint64_t>>;

  Children children_of(const InodeInfo& dir, bool top) const {
    DirCursor cursor = image_.dirents(dir);
    DirEntry entry;
    Children children;
    while (cursor.next(entry)) {
      if (entry.name == "." || entry.name == "..") continue;
      if (top && !filter_.empty() &&
          std::find(filter_.begin(), filter_.end(), entry.name) == filter_.end())
        continue;
      children.emplace_back(std::string(entry.name), entry.nid);
    }
    return children;
  }

  // Tree style: whether a directory with these entries has a whiteout among them (its
  // opaque markers are then the writer's own, left out of the tree).
  bool has_whiteout_child(const Children& children, bool root) const {
    for (const auto& [name, nid] : children) {
      InodeInfo child = image_.inode(nid);
      if (root && decoder_.is_root_stub(name, child)) continue;
      if (decoder_.is_whiteout(child)) return true;
    }
    return false;
  }

  // Tree style: one entry as write_dumpfile prints it from the tree.
  void emit_tree(const InodeInfo& info, const std::string& path, const std::string* hardlink_to,
                 bool has_whiteout_child) {
    Inode inode;
    decoder_.fill_stat(inode, info);
    decoder_.map_xattrs(info, inode, has_whiteout_child);
    emit_tree(inode, path, hardlink_to);
  }

  void emit_tree(const Inode& inode, const std::string& path, const std::string* hardlink_to) {
    // The tree's directory nlink is 2 + subdirectories, which validation made the stored one.
    append_dump_entry(buf_, path, inode, inode.nlink, hardlink_to,
                      inode.content ? std::string_view(*inode.content) : std::string_view());
    if (buf_.size() >= (1 << 20)) flush();
  }

  void flush() {
    out_.write(buf_);
    buf_.clear();
  }

  // Tree style: a hardlinked inode's name. Its full line goes to its home (link_homes_, else
  // its first name), every other name is a '@' line, which may come before the home's.
  void emit_tree_link(uint64_t nid, const InodeInfo& info, const std::string& path) {
    auto it = tree_links_.find(nid);
    if (it == tree_links_.end()) {
      TreeLink link;
      decoder_.fill_stat(link.inode, info);
      decoder_.map_xattrs(info, link.inode, false);
      auto home = link_homes_.find(nid);
      link.home = home != link_homes_.end() ? home->second : path;
      it = tree_links_.emplace(nid, std::move(link)).first;
    }
    TreeLink& link = it->second;
    if (link.home == path) {
      emit_tree(link.inode, path, nullptr);
      link.inode.content.reset();  // no later line prints it
    } else {
      emit_tree(link.inode, path, &link.home);
    }
  }

  // Depth-first pre-order with an explicit stack: a hostile image may nest directories far
  // deeper than the call stack could follow.
  void walk_dir(Children top, std::string& path) {
    struct Frame {
      Children children;
      size_t next = 0;
      size_t path_len = 0;
    };
    std::vector<Frame> stack;
    stack.push_back({std::move(top), 0, path.size()});
    while (!stack.empty()) {
      Frame& frame = stack.back();
      if (frame.next == frame.children.size()) {
        stack.pop_back();
        continue;
      }
      // The walk touches each page of the image about once: keep only the recent ones.
      if ((++visited_ & 4095) == 0) image_.release_pages();
      const bool in_root = stack.size() == 1;
      const auto& [name, nid] = frame.children[frame.next++];
      path.resize(frame.path_len);
      path += '/';
      path += name;
      InodeInfo inode = image_.inode(nid);
      if (style_ == Style::tree) {
        if (in_root && decoder_.is_root_stub(name, inode)) continue;
        decoder_.charge(name.size());
        if (inode.is_dir()) {
          Children children = children_of(inode, false);
          emit_tree(inode, path, nullptr, has_whiteout_child(children, false));
          stack.push_back({std::move(children), 0, path.size()});
        } else if (inode.nlink > 1) {
          emit_tree_link(nid, inode, path);
        } else {
          emit_tree(inode, path, nullptr, false);
        }
        continue;
      }
      // C's reader skips every stored 0/0 device; validate() allowed them only as root stubs,
      // or anywhere in a V2 image (the tree's own whiteouts, which C skips as well).
      const bool v2 = !composefs::has_whiteout_stubs(image_.format_version());
      if (inode.type() == S_IFCHR && inode.rdev == 0 &&
          (v2 || (in_root && composefs::is_whiteout_stub_name(name))))
        continue;
      if (inode.is_dir() || inode.nlink <= 1) {
        // validate() made sure such an inode has exactly one name.
        emit(path, format(inode), nullptr);
        if (inode.is_dir()) stack.push_back({children_of(inode, false), 0, path.size()});
        continue;
      }
      auto it = links_.find(nid);
      if (it == links_.end()) {
        it = links_.emplace(nid, Link{path, format(inode)}).first;
        emit(path, it->second.fields, nullptr);
      } else {
        emit(path, it->second.fields, &it->second.path);
      }
    }
  }

  struct Link {
    std::string path;  // the first name, which later names point to
    Formatted fields;
  };
  struct TreeLink {
    std::string home;  // the name with the full line
    Inode inode;
  };

  const Image& image_;
  OutputSink& out_;
  std::span<const std::string> filter_;
  std::unordered_map<uint64_t, Link> links_;  // hardlinked inodes by nid
  std::string line_;
  uint64_t budget_;
  uint64_t visited_ = 0;
  Style style_;
  detail::InodeDecoder decoder_;
  std::unordered_map<uint64_t, std::string> link_homes_;  // tree style: nid -> home path
  std::unordered_map<uint64_t, TreeLink> tree_links_;
  std::string buf_;
};

}  // namespace

void write_compat_dump(const Image& image, OutputSink& out,
                       std::span<const std::string> top_filter) {
  // The dumper trusts what validate() checks (one name per non-directory inode, stubs only
  // in the root).
  image.validate();
  CompatDumper(image, out, top_filter).dump();
}

void write_image_dumpfile(const Image& image, OutputSink& out) {
  std::unordered_map<uint64_t, std::string> homes = detail::validate_and_find_link_homes(image);
  CompatDumper(image, out, {}, CompatDumper::Style::tree, std::move(homes)).dump();
}

void write_compat_listing(const Tree& tree, OutputSink& out) {
  std::string line;
  walk(tree, [&](const WalkEntry& entry) {
    if (entry.path == "/") return;
    const Inode& inode = entry.inode;
    line.clear();
    append_listing_escaped(line, entry.path);
    // Later links to an inode are bare names, as the C tool prints them.
    if (entry.first_visit) {
      if (inode.is_dir()) {
        line += "/\t";
      } else if (inode.is_symlink()) {
        line += "\t-> ";
        append_escaped(line, inode.payload, false);
      } else if (inode.is_reg() && !inode.payload.empty()) {
        line += "\t@ ";
        append_escaped(line, inode.payload, false);
      }
    }
    line += '\n';
    out.write(line);
  });
}

}  // namespace cfs::erofs
