// Writer pass 2: the BFS record table with every record's xattrs after the overlay rewrite,
// counted by (name, value) pair; then the shared xattr table from the pairs used twice.
#include <xxhash.h>

#include "writer_internal.h"

namespace cfs::erofs::writer_impl {

namespace {

uint64_t hash_pair(const XattrView& x, std::vector<char>& scratch) {
  // Names never contain NUL, so "name\0value" is unambiguous.
  scratch.resize(x.name.size() + 1 + x.value.size());
  size_t n = x.name.copy_to(scratch.data());
  scratch[n++] = '\0';
  x.value.copy_to(scratch.data() + n);
  return XXH3_64bits(scratch.data(), scratch.size());
}

}  // namespace

void ImageWriter::prepare_root_extras() {
  root_extras_.assign(kDotEntries.begin(), kDotEntries.end());
  for (uint32_t i = 0; i < composefs::kWhiteoutStubCount; i++)
    if (!tree_.root->find(composefs::whiteout_stub_name(i)))
      root_extras_.push_back(
          {composefs::whiteout_stub_name(i), Entry::kStubEntry, static_cast<uint8_t>(i), nullptr});
}

void ImageWriter::build_records() {
  prepare_root_extras();
  const Inode& root = *tree_.root;
  for (size_t i = 0; i < root.xattrs.size(); i++)
    if (root.xattrs[i].name == kSelinuxName) root_selinux_ = static_cast<int>(i);

  records_.reserve(n_inodes_ + composefs::kWhiteoutStubCount);
  min_mtime_ = {root.mtime_sec, root.mtime_nsec};
  records_.push_back(Record{.inode = &root, .flags = kRoot, .file_type = kFtDir});
  // First the record table in BFS order, with each record's number of xattrs after the
  // rewrite (a directory's flags are known once its children are listed); then the pairs are
  // counted in a table sized by their exact number, which an upper bound taken from the tree
  // overestimated by half on real images.
  std::vector<XattrView> xattrs;
  size_t n_pairs = 0;
  for (size_t i = 0; i < records_.size(); i++) {
    const Record rec = records_[i];
    if (rec.inode && rec.inode->is_dir()) {
      const bool is_root = i == 0;
      const auto parent = static_cast<uint32_t>(i);
      uint8_t dir_flags = 0;
      uint64_t nlink = 2;
      records_[i].first_child = checked_index(records_.size());
      for_each_entry(*rec.inode, is_root, [&](const Entry& e) {
        if (e.kind == Entry::kStubEntry) {
          records_.push_back(Record{.parent = parent,
                                    .nlink = 1,
                                    .flags = kStub,
                                    .stub = e.stub,
                                    .file_type = kFtChrdev});
        } else if (e.kind == Entry::kChild) {
          const Inode* child = e.dirent->inode.get();
          nlink += child->is_dir();
          if (!is_primary(*e.dirent)) {
            dir_flags |= kLinkChildren;
            return;
          }
          uint8_t flags = 0;
          uint8_t type = file_type_of(child->mode);
          if (child->is_whiteout()) {
            flags = kWhiteout;
            type = kFtRegFile;
            dir_flags |= kWhiteoutParent;
          }
          if (e.dirent->inode.use_count() > 1) {
            if (auto it = shared_.find(child); it != shared_.end())
              it->second.record = checked_index(records_.size());
          }
          records_.push_back(Record{.inode = child,
                                    .parent = parent,
                                    .nlink = child->nlink,
                                    .flags = flags,
                                    .file_type = type});
        }
      });
      records_[i].flags |= dir_flags;
      records_[i].nlink = static_cast<uint32_t>(std::min<uint64_t>(nlink, UINT32_MAX));
    }
    if (rec.inode) {
      std::pair<int64_t, uint32_t> mtime{rec.inode->mtime_sec, rec.inode->mtime_nsec};
      min_mtime_ = std::min(min_mtime_, mtime);
    }
    collect_xattrs(static_cast<uint32_t>(i), xattrs);
    records_[i].n_pairs = static_cast<uint16_t>(xattrs.size());
    n_pairs += xattrs.size();
  }

  count_table_.assign(n_pairs * 10 / 7 + 64, CountSlot{});
  pairs_.reserve(n_pairs);
  for (size_t i = 0; i < records_.size(); i++) {
    if (records_[i].n_pairs == 0) continue;
    collect_xattrs(static_cast<uint32_t>(i), xattrs);
    for (const XattrView& x : xattrs) {
      const XattrKey key = xattr_key(x.name);
      const size_t entry_size =
          round_up(sizeof(XattrEntry) + key.suffix.size() + x.value.size(), 4);
      pairs_.push_back({count_pair(static_cast<uint32_t>(i), x),
                        static_cast<uint32_t>(entry_size << 5) | filter_bit(key)});
      if (equal(x.name, {kAclAccessName, {}}) || equal(x.name, {kAclDefaultName, {}}))
        has_acl_ = true;
    }
  }
}

uint32_t ImageWriter::filter_bit(const XattrKey& key) {
  std::array<char, 2 * kXattrNameMax> buf;
  const size_t n = key.suffix.copy_to(buf.data());
  return XXH32(buf.data(), n, kXattrFilterSeed + key.index) & (kXattrFilterBits - 1);
}

uint32_t ImageWriter::checked_index(size_t n) const {
  if (n >= std::numeric_limits<uint32_t>::max())
    throw Error("composefs image: too many inodes (more than 2^32)");
  return static_cast<uint32_t>(n);
}

XattrView ImageWriter::user_xattr(const Inode& owner, uint16_t index) const {
  const Xattr& x = owner.xattrs[index];
  std::string_view name = x.name;
  // Escaping keeps user-supplied overlay xattrs from being interpreted by overlayfs.
  if (name.starts_with(composefs::kOverlayPrefix))
    return {{composefs::kOverlayEscapedPrefix, name.substr(composefs::kOverlayPrefix.size())},
            {x.value, {}},
            index};
  return {{name, {}}, {x.value, {}}, index};
}

XattrView ImageWriter::generated_xattr(const Inode& owner, uint16_t source) const {
  switch (source) {
    case kSrcMetacopy: {
      if (!owner.digest) return {{composefs::kMetacopyXattr, {}}, {}, source};
      // Views of the inode's own digest bytes (*owner.digest would be a temporary copy).
      const std::span<const uint8_t> digest = owner.digest.bytes();
      std::string_view bytes(reinterpret_cast<const char*>(digest.data()), digest.size());
      return {{composefs::kMetacopyXattr, {}},
              {composefs::metacopy_header_bytes(owner.digest.algorithm()), bytes},
              source};
    }
    case kSrcRedirect:
      return {{composefs::kRedirectXattr, {}}, {"/", owner.payload}, source};
    case kSrcWhiteoutEscaped:
      return {{composefs::kEscapedWhiteout, {}}, {}, source};
    case kSrcWhiteoutUser:
      return {{composefs::kUserWhiteout, {}}, {}, source};
    case kSrcWhiteoutsEscaped:
      return {{composefs::kEscapedWhiteouts, {}}, {}, source};
    case kSrcWhiteoutsUser:
      return {{composefs::kUserWhiteouts, {}}, {}, source};
    case kSrcOpaqueEscaped:
      return {{composefs::kEscapedOpaque, {}}, {composefs::kWhiteoutDirOpaqueValue, {}}, source};
    case kSrcOpaqueUser:
      return {{composefs::kUserOpaque, {}}, {composefs::kWhiteoutDirOpaqueValue, {}}, source};
    default:
      return {{composefs::kOpaqueXattr, {}}, {composefs::kRootOpaqueValue, {}}, source};
  }
}

XattrView ImageWriter::resolve(uint32_t record, uint16_t source) const {
  const Inode& owner = owner_of(records_[record]);
  return source < kMaxUserXattrs ? user_xattr(owner, source) : generated_xattr(owner, source);
}

void ImageWriter::collect_xattrs(uint32_t r, std::vector<XattrView>& out) const {
  out.clear();
  const Record& rec = records_[r];
  if (rec.flags & kStub) {
    // Stubs inherit the root's SELinux label so the lower layer's object dirs stay hidden
    // under the same policy.
    if (root_selinux_ >= 0) out.push_back(user_xattr(*tree_.root, root_selinux_));
    return;
  }
  const Inode& inode = *rec.inode;
  for (size_t i = 0; i < inode.xattrs.size(); i++)
    out.push_back(user_xattr(inode, static_cast<uint16_t>(i)));
  // Sets (adds or replaces) a generated xattr. Only the whiteout markers can meet an
  // existing name: user trusted.overlay.* xattrs were escaped, so the metacopy, redirect
  // and opaque=y names are always new.
  auto set = [&](uint16_t source, bool may_exist = true) {
    XattrView x = generated_xattr(inode, source);
    auto it = may_exist ? std::find_if(out.begin(), out.end(),
                                       [&](const XattrView& e) { return equal(e.name, x.name); })
                        : out.end();
    if (it != out.end()) out.erase(it);
    out.push_back(x);
  };
  if (inode.is_external()) {
    set(kSrcMetacopy, false);
    if (!inode.payload.empty()) set(kSrcRedirect, false);
  }
  if (rec.flags & kWhiteout) {
    set(kSrcWhiteoutEscaped);
    set(kSrcWhiteoutUser);
  }
  if (rec.flags & kWhiteoutParent) {
    set(kSrcWhiteoutsEscaped);
    set(kSrcWhiteoutsUser);
    if (version_ >= composefs::kWhiteoutDirMinVersion) {
      set(kSrcOpaqueEscaped);
      set(kSrcOpaqueUser);
    }
  }
  if (rec.flags & kRoot) set(kSrcRootOpaque, false);
  std::sort(out.begin(), out.end(),
            [](const XattrView& a, const XattrView& b) { return compare(a.name, b.name) < 0; });
  for (size_t i = 1; i < out.size(); i++)
    if (equal(out[i - 1].name, out[i].name))
      fail(record_path(r), "duplicate xattr name after escaping overlay xattrs");
}

size_t ImageWriter::slot_for(uint64_t hash, size_t capacity) const {
  return static_cast<size_t>((static_cast<unsigned __int128>(hash) * capacity) >> 64);
}

uint32_t ImageWriter::count_pair(uint32_t record, const XattrView& x) {
  const uint64_t hash = hash_pair(x, scratch_);
  const size_t cap = count_table_.size();
  // slot_for uses the high bits; the tag comes from the low ones.
  const auto tag = static_cast<uint16_t>(hash & 0x3fff);
  for (size_t i = slot_for(hash, cap);; i = i + 1 == cap ? 0 : i + 1) {
    CountSlot& slot = count_table_[i];
    if (slot.count() == 0) {
      slot = {record, x.source, static_cast<uint16_t>(tag << 2 | 1)};
      return static_cast<uint32_t>(i);
    }
    if (slot.tag() == tag) {
      XattrView other = resolve(slot.record, slot.source);
      if (equal(other.name, x.name) && equal(other.value, x.value)) {
        slot.tag_count = static_cast<uint16_t>(tag << 2 | 2);
        return static_cast<uint32_t>(i);
      }
    }
  }
}

void ImageWriter::build_shared_table() {
  for (size_t i = 0; i < count_table_.size(); i++) {
    const CountSlot& slot = count_table_[i];
    if (slot.count() > 1)
      shared_xattrs_.push_back({resolve(slot.record, slot.source), static_cast<uint32_t>(i), 0});
  }

  // Name descending, then value length descending, then value bytes descending.
  std::sort(shared_xattrs_.begin(), shared_xattrs_.end(),
            [](const SharedXattr& a, const SharedXattr& b) {
              int r = compare(a.xattr.name, b.xattr.name);
              if (r != 0) return r > 0;
              if (a.xattr.value.size() != b.xattr.value.size())
                return a.xattr.value.size() > b.xattr.value.size();
              return compare(a.xattr.value, b.xattr.value) > 0;
            });
  uint64_t offset = 0;
  for (SharedXattr& s : shared_xattrs_) {
    s.offset = static_cast<uint32_t>(offset);
    offset += xattr_entry_size(s.xattr);
    if (offset > std::numeric_limits<uint32_t>::max())
      throw Error("composefs image: shared xattr table is larger than 4 GiB");
  }
  shared_size_ = offset;

  // Resolve every pair to its shared index once, so later passes read pairs_ sequentially
  // and the counting table can go.
  for (uint32_t k = 0; k < shared_xattrs_.size(); k++)
    count_table_[shared_xattrs_[k].slot].record = k;
  for (PairRef& p : pairs_) {
    const CountSlot& slot = count_table_[p.slot];
    p.slot = slot.count() > 1 ? slot.record : kNotShared;
  }
  std::vector<CountSlot>().swap(count_table_);
}

size_t ImageWriter::classify_pairs(std::span<const PairRef> pairs,
                                   std::vector<int64_t>& shared) const {
  shared.clear();
  if (pairs.empty()) return 0;
  size_t n_shared = 0;
  size_t size = sizeof(XattrIbodyHeader);
  for (const PairRef& p : pairs) {
    if (p.slot != kNotShared && n_shared < kMaxShared) {
      n_shared++;
      shared.push_back(p.slot);
      size += sizeof(uint32_t);
    } else {
      shared.push_back(-1);
      size += p.entry_size();
    }
  }
  return size;
}

}  // namespace cfs::erofs::writer_impl
