// The format V2 writer: composefs-rs' own layout (composefs_version 2; composefs-rs.md §7),
// byte-identical to composefs-rs 0.9.0 with --erofs-version 2. It shares nothing of the
// V0/V1 writer's pass structure, only its helpers (Bytes2, Emitter, chunk and xattr sizes).
//
// The layout: inodes in depth-first pre-order (a directory before its children, children by
// name; a hardlinked inode at its first name), all extended, ino = nid, mtime_nsec 0, no root
// stubs, whiteouts stored as they are (chr 0/0), regular files' and symlinks' data wholly
// inline; an inline tail whose last byte would land in another block than the inode's
// metadata end moves the inode to the next block (then to a 32-byte slot); shared xattrs in
// (prefix index, suffix, value) order, referenced by absolute offset / 4; build_time 0,
// xattr_blkaddr 0; directory blocks after the shared xattrs, in inode order.
#include <xxhash.h>

#include <array>
#include <deque>
#include <map>
#include <unordered_map>

#include "cfs/escape.h"
#include "writer_internal.h"

namespace cfs::erofs::writer_impl {

namespace {

// composefs-rs' prefix table, longest index first ("lustre." included, unlike C's).
XattrKey v2_xattr_key(const Bytes2& name) {
  static constexpr std::pair<std::string_view, uint8_t> prefixes[] = {
      {"security.", kXattrIndexSecurity},
      {"lustre.", kXattrIndexLustre},
      {"trusted.", kXattrIndexTrusted},
      {kAclDefaultName, kXattrIndexPosixAclDefault},
      {kAclAccessName, kXattrIndexPosixAclAccess},
      {"user.", kXattrIndexUser},
  };
  for (const auto& [prefix, index] : prefixes)
    if (name.starts_with(prefix)) return {index, name.drop_front(prefix.size())};
  return {kXattrIndexNone, name};
}

// composefs-rs keeps a dumpfile's backing path even for an empty file: such a file is
// external (chunk-based, size 0) too.
bool is_external_v2(const Inode& inode) {
  return inode.is_reg() && !inode.has_content() && (inode.size > 0 || !inode.payload.empty());
}

// One stored xattr of one inode.
struct V2Xattr {
  uint8_t index;
  Bytes2 suffix;
  Bytes2 value;
  int64_t shared = -1;  // index into the shared table

  size_t entry_size() const {
    return round_up(sizeof(XattrEntry) + suffix.size() + value.size(), 4);
  }
};

// (prefix index, suffix, value), bytewise: composefs-rs' derived order.
struct V2XattrLess {
  bool operator()(const V2Xattr* a, const V2Xattr* b) const {
    if (a->index != b->index) return a->index < b->index;
    if (int c = compare(a->suffix, b->suffix)) return c < 0;
    return compare(a->value, b->value) < 0;
  }
};

struct Node {
  const Inode* inode;
  uint32_t parent;        // node of the parent directory (the root's is itself)
  uint32_t nlink = 0;     // directories: 2 + subdirectories; others: their names in the tree
  uint32_t children = 0;  // directories: first index into child_nodes_
  uint32_t xattrs = 0;    // first index into xattrs_
  uint16_t n_xattrs = 0;
  DataLayout layout = DataLayout::flat_plain;
  uint32_t i_u = 0;
  uint64_t size = 0;
  uint32_t n_blocks = 0;  // directories only
  uint32_t tail = 0;      // inline bytes after the xattrs
  uint32_t xattr_size = 0;
  uint32_t pad = 0;  // zero bytes before the inode
  uint64_t nid = 0;
};

class V2Writer {
 public:
  explicit V2Writer(const Tree& tree) : tree_(tree) {}

  WriteResult write(OutputSink& sink, bool compute_digest) {
    collect();
    share();
    layout();
    return stream_image(sink, compute_digest, [this](Emitter& out) {
      emit(out);
      return kComposefsVersionV2;
    });
  }

 private:
  [[noreturn]] static void fail(const std::string& path, const std::string& what) {
    throw Error("composefs image (format V2): " + escape_for_log(path) + ": " +
                escape_for_log(what));
  }

  void check(const std::string& path, const Inode& inode) {
    switch (inode.type()) {
      case S_IFREG:
        if (inode.has_content()) {
          if (!inode.content && !tree_.content_source)
            fail(path, "inline content is referenced but the tree has no content source");
          if (inode.content && inode.content->size() != inode.size)
            fail(path, "inline content is " + std::to_string(inode.content->size()) +
                           " bytes but the file size is " + std::to_string(inode.size));
          if (inode.size > kInlineContentMaxV2)
            fail(path, "inline content of " + std::to_string(inode.size) +
                           " bytes exceeds the format V2 maximum of " +
                           std::to_string(kInlineContentMaxV2));
        }
        break;
      case S_IFLNK:
        if (inode.payload.empty() || inode.payload.size() > kSymlinkMaxV2)
          fail(path, "symlink target must be 1 to " + std::to_string(kSymlinkMaxV2) +
                         " bytes in format V2");
        if (inode.payload.find('\0') != std::string::npos)
          fail(path, "symlink target contains a NUL byte");
        break;
      case S_IFDIR:
      case S_IFCHR:
      case S_IFBLK:
      case S_IFIFO:
      case S_IFSOCK:
        break;
      default:
        fail(path, "invalid file type in mode " + std::to_string(inode.mode));
    }
    if (!inode.is_dir() && !inode.children.empty())
      fail(path, "only directories can have children");
    for (const Xattr& x : inode.xattrs) {
      if (x.name.empty() || x.name.size() > xattr_name_max(x.name))
        fail(path, "xattr name '" + x.name + "' must be 1 to " +
                       std::to_string(xattr_name_max(x.name)) + " bytes");
      if (x.name.find('\0') != std::string::npos) fail(path, "xattr name contains a NUL byte");
      if (x.value.size() > kXattrValueMax)
        fail(path, "value of xattr '" + x.name + "' is longer than 65535 bytes");
    }
  }

  // Depth-first pre-order: the node table, each directory's child nodes, link counts.
  void collect() {
    if (!tree_.root->is_dir()) fail("/", "the root must be a directory");
    new_node("/", *tree_.root, 0);
    struct Frame {
      uint32_t node;
      size_t next;
      size_t path_len;
    };
    std::vector<Frame> stack{{0, 0, 1}};
    std::string path = "/";
    nodes_[0].children = 0;
    child_nodes_.resize(tree_.root->children.size());
    std::unordered_map<const Inode*, uint32_t> links;
    while (!stack.empty()) {
      Frame& frame = stack.back();
      const Inode& dir = *nodes_[frame.node].inode;
      if (frame.next == dir.children.size()) {
        stack.pop_back();
        continue;
      }
      const size_t i = frame.next++;
      const Dirent& d = dir.children[i];
      const uint32_t parent = frame.node;
      path.resize(frame.path_len);
      if (path.size() > 1) path += '/';
      path += d.name;
      if (d.name.empty() || d.name.size() > kNameMax || d.name == "." || d.name == ".." ||
          d.name.find_first_of(std::string_view("/\0", 2)) != std::string::npos)
        fail(path, "invalid file name");
      if (i > 0 && !(dir.children[i - 1].name < d.name))
        fail(path, "directory entries are not sorted by name or not unique");
      if (!d.inode) fail(path, "entry has no inode");
      const Inode& inode = *d.inode;
      uint32_t child;
      if (inode.is_dir()) {
        if (d.inode.use_count() > 1 && !links.emplace(&inode, 0).second)
          fail(path, "directories cannot be hardlinked");
        if (stack.size() > kMaxDirDepth)
          fail(path.substr(0, 256) + "...",
               "directories nested deeper than " + std::to_string(kMaxDirDepth) + " levels");
        nodes_[parent].nlink++;
        child = new_node(path, inode, parent);
        nodes_[child].children = static_cast<uint32_t>(child_nodes_.size());
        child_nodes_.resize(child_nodes_.size() + inode.children.size());
        child_nodes_[nodes_[parent].children + i] = child;
        stack.push_back({child, 0, path.size()});  // invalidates frame
        continue;
      }
      if (d.inode.use_count() > 1) {
        auto [it, inserted] = links.try_emplace(&inode, 0);
        if (inserted) it->second = new_node(path, inode, parent);
        child = it->second;
      } else {
        child = new_node(path, inode, parent);
      }
      nodes_[child].nlink++;
      if (inode.is_whiteout() && nodes_[child].nlink > 1)
        fail(path, "a whiteout cannot be hardlinked");
      child_nodes_[nodes_[parent].children + i] = child;
    }
    for (Node& n : nodes_)
      if (n.inode->is_dir()) n.nlink += 2;
  }

  uint32_t new_node(const std::string& path, const Inode& inode, uint32_t parent) {
    check(path, inode);
    if (nodes_.size() >= UINT32_MAX) fail(path, "too many inodes");
    const auto index = static_cast<uint32_t>(nodes_.size());
    nodes_.push_back({&inode, parent});
    Node& n = nodes_.back();
    n.xattrs = static_cast<uint32_t>(xattrs_.size());
    // composefs-rs' order: metacopy and redirect first, then the user's, sorted by name.
    if (is_external_v2(inode)) {
      if (inode.digest) {
        // Views of the inode's own digest bytes (*inode.digest would be a temporary copy).
        const std::span<const uint8_t> digest = inode.digest.bytes();
        std::string_view bytes(reinterpret_cast<const char*>(digest.data()), digest.size());
        add_xattr({composefs::kMetacopyXattr, {}},
                  {composefs::metacopy_header_bytes(inode.digest.algorithm()), bytes});
        const Digest d = *inode.digest;
        // composefs-rs names the object after the digest.
        owned_.push_back(d.object_path());
        add_xattr({composefs::kRedirectXattr, {}}, {"/", owned_.back()});
      } else {
        add_xattr({composefs::kMetacopyXattr, {}}, {});
        if (!inode.payload.empty())
          add_xattr({composefs::kRedirectXattr, {}}, {"/", inode.payload});
      }
    }
    for (const Xattr& x : inode.xattrs) {
      std::string_view name = x.name;
      if (name.starts_with(composefs::kOverlayPrefix))
        add_xattr({composefs::kOverlayEscapedPrefix, name.substr(composefs::kOverlayPrefix.size())},
                  {x.value, {}});
      else
        add_xattr({name, {}}, {x.value, {}});
    }
    const size_t count = xattrs_.size() - n.xattrs;
    if (count > UINT16_MAX) fail(path, "too many xattrs");
    n.n_xattrs = static_cast<uint16_t>(count);
    return index;
  }

  void add_xattr(const Bytes2& name, const Bytes2& value) {
    const XattrKey key = v2_xattr_key(name);
    xattrs_.push_back({key.index, key.suffix, value});
  }

  std::span<V2Xattr> xattrs_of(const Node& n) {
    return std::span(xattrs_).subspan(n.xattrs, n.n_xattrs);
  }

  // Pairs used by more than one inode go to the shared table, in ascending order.
  void share() {
    std::map<const V2Xattr*, uint32_t, V2XattrLess> counts;
    for (const V2Xattr& x : xattrs_) counts[&x]++;
    for (auto& [x, count] : counts) {
      if (count < 2) {
        count = UINT32_MAX;
        continue;
      }
      count = static_cast<uint32_t>(shared_.size());
      shared_.push_back(x);
    }
    for (V2Xattr& x : xattrs_)
      if (uint32_t k = counts.at(&x); k != UINT32_MAX) x.shared = k;
  }

  std::string node_path(uint32_t index) const {
    std::vector<std::string_view> parts;
    for (uint32_t i = index; i != 0; i = nodes_[i].parent) {
      const Node& parent = nodes_[nodes_[i].parent];
      for (size_t c = 0; c < parent.inode->children.size(); c++)
        if (child_nodes_[parent.children + c] == i) {
          parts.push_back(parent.inode->children[c].name);
          break;
        }
    }
    std::string path;
    for (auto it = parts.rbegin(); it != parts.rend(); ++it) path.append("/").append(*it);
    return path.empty() ? "/" : path;
  }

  // The directory's entries in image order: its children merged with "." and "..".
  template <typename Fn>
  void for_each_entry(uint32_t index, Fn&& fn) const {
    const Node& n = nodes_[index];
    const auto& children = n.inode->children;
    const std::pair<std::string_view, uint32_t> dots[2] = {{".", index}, {"..", n.parent}};
    size_t ci = 0, di = 0;
    while (ci < children.size() || di < 2) {
      if (di == 2 ||
          (ci < children.size() && std::string_view(children[ci].name) < dots[di].first)) {
        fn(std::string_view(children[ci].name), child_nodes_[n.children + ci]);
        ci++;
      } else {
        fn(dots[di].first, dots[di].second);
        di++;
      }
    }
  }

  void layout() {
    uint64_t pos = kSuperblockOffset + sizeof(Superblock);
    for (uint32_t i = 0; i < nodes_.size(); i++) {
      Node& n = nodes_[i];
      const Inode& inode = *n.inode;
      if (!xattrs_of(n).empty()) {
        size_t size = sizeof(XattrIbodyHeader);
        size_t n_shared = 0;
        for (const V2Xattr& x : xattrs_of(n)) {
          if (x.shared >= 0) {
            size += sizeof(uint32_t);
            n_shared++;
          } else {
            size += x.entry_size();
          }
        }
        if (n_shared > UINT8_MAX) fail(node_path(i), "more than 255 shared xattrs");
        if (size > xattr_ibody_size(UINT16_MAX)) fail(node_path(i), "xattrs too large");
        n.xattr_size = static_cast<uint32_t>(size);
      }
      switch (inode.type()) {
        case S_IFDIR: {
          uint64_t blocks = 0, cur = 0;
          for_each_entry(i, [&](std::string_view name, uint32_t) {
            const uint64_t len = sizeof(DiskDirent) + name.size();
            if (cur + len > kBlock) {
              blocks++;
              cur = 0;
            }
            cur += len;
          });
          if (cur > kBlock / 2) {
            blocks++;
            cur = 0;
          }
          if (blocks > UINT32_MAX) fail(node_path(i), "directory is too large");
          n.n_blocks = static_cast<uint32_t>(blocks);
          n.tail = static_cast<uint32_t>(cur);
          n.size = blocks * kBlock + cur;
          n.layout = cur > 0 ? DataLayout::flat_inline : DataLayout::flat_plain;
          break;
        }
        case S_IFREG:
          n.size = inode.size;
          if (is_external_v2(inode)) {
            n.layout = DataLayout::chunk_based;
            n.i_u = kChunkFormatBlkbitsMask;  // one chunk covers any file
            n.tail = inode.digest ? sizeof(uint32_t) : 0;
          } else if (inode.size > 0) {
            n.layout = DataLayout::flat_inline;
            n.tail = static_cast<uint32_t>(inode.size);
          }
          break;
        case S_IFLNK:
          n.size = inode.payload.size();
          n.layout = DataLayout::flat_inline;
          n.tail = static_cast<uint32_t>(n.size);
          break;
        case S_IFCHR:
        case S_IFBLK:
          n.i_u = inode.rdev;
          break;
        default:
          break;
      }
      const uint64_t start = round_up(pos, kSlot);
      uint64_t at = start;
      if (n.layout == DataLayout::flat_inline) {
        const uint64_t inline_start = at + sizeof(InodeExtended) + n.xattr_size;
        const uint64_t metadata_last = inline_start - 1;
        const uint64_t inline_end = inline_start + n.tail % kBlock;
        if (metadata_last / kBlock != inline_end / kBlock)
          at = round_up(at + kBlock - metadata_last % kBlock, kSlot);
      }
      n.pad = static_cast<uint32_t>(at - pos);
      if (at / kSlot > UINT32_MAX) throw Error("composefs image: too much inode metadata");
      n.nid = at / kSlot;
      pos = round_up(at + sizeof(InodeExtended) + n.xattr_size + n.tail, kSlot);
    }
    inodes_end_ = pos;
    uint64_t offset = inodes_end_;
    for (const V2Xattr* x : shared_) {
      if (offset / 4 > UINT32_MAX) throw Error("composefs image: shared xattrs beyond 16 GiB");
      shared_offsets_.push_back(offset);
      offset += x->entry_size();
    }
    uint64_t block = round_up(offset, kBlock) / kBlock;
    for (Node& n : nodes_) {
      if (!n.inode->is_dir()) continue;
      if (n.n_blocks > 0 || n.layout == DataLayout::flat_plain)
        n.i_u = static_cast<uint32_t>(block);
      block += n.n_blocks;
      if (block > UINT32_MAX) throw Error("composefs image: image would exceed 2^32 blocks");
    }
    blocks_ = block;
  }

  void emit_entry(Emitter& out, const V2Xattr& x) {
    XattrEntry e{};
    e.e_name_len = static_cast<uint8_t>(x.suffix.size());
    e.e_name_index = x.index;
    e.e_value_size = static_cast<uint16_t>(x.value.size());
    out.put_struct(e);
    out.put(x.suffix);
    out.put(x.value);
    out.align(4);
  }

  // Entries [begin, end) of the directory listing as one dirent chunk.
  void emit_dirents(Emitter& out, uint32_t index, bool blocks) {
    entries_.clear();
    for_each_entry(index, [&](std::string_view name, uint32_t target) {
      entries_.push_back({name, target});
    });
    const Node& n = nodes_[index];
    size_t first = 0, cur = 0, chunk = 0;
    auto put_chunk = [&](size_t begin, size_t end, bool full) {
      const uint64_t start = out.offset();
      uint64_t nameoff = (end - begin) * sizeof(DiskDirent);
      for (size_t i = begin; i < end; i++) {
        const Node& t = nodes_[entries_[i].second];
        DiskDirent d{};
        d.nid = t.nid;
        d.nameoff = static_cast<uint16_t>(nameoff);
        d.file_type = file_type_of(t.inode->mode);
        out.put_struct(d);
        nameoff += entries_[i].first.size();
      }
      for (size_t i = begin; i < end; i++) out.put(entries_[i].first);
      if (full) out.zeros(kBlock - (out.offset() - start));
    };
    for (size_t i = 0; i < entries_.size(); i++) {
      const size_t len = sizeof(DiskDirent) + entries_[i].first.size();
      if (cur + len > kBlock) {
        if (blocks) put_chunk(first, i, true);
        chunk++;
        first = i;
        cur = 0;
      }
      cur += len;
    }
    if (chunk < n.n_blocks) {
      if (blocks) put_chunk(first, entries_.size(), true);
    } else if (!blocks && cur > 0) {
      put_chunk(first, entries_.size(), false);
    }
  }

  void emit(Emitter& out) {
    ComposefsHeader header{};
    header.magic = kComposefsMagic;
    header.version = kComposefsHeaderVersion;
    header.flags = 0;
    header.composefs_version = kComposefsVersionV2;
    out.put_struct(header);
    out.zeros(kSuperblockOffset - sizeof header);

    Superblock sb{};
    sb.magic = kErofsMagic;
    sb.feature_compat = kFeatureCompatMtime | kFeatureCompatXattrFilter;
    sb.blkszbits = kBlockSizeBits;
    sb.root_nid = static_cast<uint16_t>(nodes_[0].nid);
    sb.inos = nodes_.size();
    sb.blocks = static_cast<uint32_t>(blocks_);
    out.put_struct(sb);

    for (uint32_t i = 0; i < nodes_.size(); i++) {
      const Node& n = nodes_[i];
      const Inode& inode = *n.inode;
      out.zeros(n.pad);
      InodeExtended in{};
      in.i_format = make_i_format(true, n.layout);
      in.i_xattr_icount =
          n.xattr_size == 0
              ? 0
              : static_cast<uint16_t>((n.xattr_size - sizeof(XattrIbodyHeader)) / 4 + 1);
      in.i_mode = static_cast<uint16_t>(inode.mode);
      in.i_size = n.size;
      in.i_u = n.i_u;
      in.i_ino = static_cast<uint32_t>(n.nid);
      in.i_uid = inode.uid;
      in.i_gid = inode.gid;
      in.i_mtime = static_cast<uint64_t>(inode.mtime_sec);
      in.i_mtime_nsec = 0;
      in.i_nlink = n.nlink;
      out.put_struct(in);
      if (n.xattr_size > 0) {
        XattrIbodyHeader h{};
        uint32_t bits = 0;
        uint8_t n_shared = 0;
        for (const V2Xattr& x : xattrs_of(n)) {
          std::array<char, 2 * kXattrNameMax> buf;
          const size_t len = x.suffix.copy_to(buf.data());
          bits |=
              1u << (XXH32(buf.data(), len, kXattrFilterSeed + x.index) & (kXattrFilterBits - 1));
          n_shared += x.shared >= 0;
        }
        h.h_name_filter = ~bits;
        h.h_shared_count = n_shared;
        out.put_struct(h);
        for (const V2Xattr& x : xattrs_of(n))
          if (x.shared >= 0) {
            le32 id = static_cast<uint32_t>(shared_offsets_[x.shared] / 4);
            out.put_struct(id);
          }
        for (const V2Xattr& x : xattrs_of(n))
          if (x.shared < 0) emit_entry(out, x);
      }
      if (n.tail > 0) {
        if (inode.is_dir()) {
          emit_dirents(out, i, false);
        } else if (inode.is_symlink()) {
          out.put(inode.payload);
        } else if (n.layout == DataLayout::chunk_based) {
          const le32 null_addr = static_cast<uint32_t>(kNullAddr);
          out.put_struct(null_addr);
        } else {
          out.put(tree_.inline_content(inode, content_buf_));
        }
      }
      out.align(kSlot);
    }
    for (const V2Xattr* x : shared_) emit_entry(out, *x);
    out.align(kBlock);
    for (uint32_t i = 0; i < nodes_.size(); i++)
      if (nodes_[i].n_blocks > 0) emit_dirents(out, i, true);
  }

  const Tree& tree_;
  std::string content_buf_;  // inline content read back from the tree's content source
  std::vector<Node> nodes_;
  std::vector<uint32_t> child_nodes_;  // per directory, its children's nodes in name order
  std::vector<V2Xattr> xattrs_;
  std::vector<const V2Xattr*> shared_;
  std::vector<uint64_t> shared_offsets_;  // absolute image offsets
  std::deque<std::string> owned_;         // redirect paths made from digests
  std::vector<std::pair<std::string_view, uint32_t>> entries_;
  uint64_t inodes_end_ = 0;
  uint64_t blocks_ = 0;
};

}  // namespace

WriteResult write_image_v2(const Tree& tree, OutputSink& out, bool compute_digest) {
  return V2Writer(tree).write(out, compute_digest);
}

}  // namespace cfs::erofs::writer_impl
