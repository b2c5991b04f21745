// Writer pass 4: the image bytes, streamed in order: header, superblock, inodes with their
// xattrs and inline tails, the shared xattr table, then the data blocks.
#include "writer_internal.h"

namespace cfs::erofs::writer_impl {

void ImageWriter::emit_image(Emitter& out) {
  ComposefsHeader header{};
  header.magic = kComposefsMagic;
  header.version = kComposefsHeaderVersion;
  header.flags = has_acl_ ? kComposefsFlagHasAcl : 0;
  header.composefs_version = version_;
  out.put_struct(header);
  out.zeros(kSuperblockOffset - sizeof header);

  Superblock sb{};
  sb.magic = kErofsMagic;
  sb.feature_compat = kFeatureCompatMtime | kFeatureCompatXattrFilter;
  sb.blkszbits = kBlockSizeBits;
  sb.root_nid = static_cast<uint16_t>(records_[0].nid);
  sb.inos = records_.size();
  sb.build_time = static_cast<uint64_t>(min_mtime_.first);  // two's complement, as C
  sb.build_time_nsec = min_mtime_.second;
  sb.blocks = static_cast<uint32_t>(data_start_ / kBlock + n_data_blocks_);
  sb.meta_blkaddr = 0;
  sb.xattr_blkaddr = static_cast<uint32_t>(inodes_end_ / kBlock);
  out.put_struct(sb);

  uint64_t next_block = data_start_;
  std::vector<XattrView> xattrs;
  std::vector<int64_t> shared;
  size_t pair_cursor = 0;
  for (size_t i = 0; i < records_.size(); i++) {
    const Record& rec = records_[i];
    const auto pairs = std::span(pairs_).subspan(pair_cursor, rec.n_pairs);
    pair_cursor += rec.n_pairs;
    classify_pairs(pairs, shared);
    xattrs.clear();
    // The bytes are needed only for xattrs stored inline.
    if (std::find(shared.begin(), shared.end(), -1) != shared.end())
      collect_xattrs(static_cast<uint32_t>(i), xattrs);
    emit_inode(out, static_cast<uint32_t>(i), pairs, xattrs, shared, next_block);
  }
  out.align(kSlot);
  for (const SharedXattr& s : shared_xattrs_) emit_xattr_entry(out, s.xattr);
  out.align(kBlock);
  for (size_t i = 0; i < records_.size(); i++) emit_data_blocks(out, static_cast<uint32_t>(i));
}

void ImageWriter::emit_inode(Emitter& out, uint32_t r, std::span<const PairRef> pairs,
                             const std::vector<XattrView>& xattrs,
                             const std::vector<int64_t>& shared, uint64_t& next_block) {
  const Record& rec = records_[r];
  const Inode& attrs = owner_of(rec);
  const uint32_t mode = mode_of(rec);
  const uint32_t type = mode & S_IFMT;
  out.zeros(rec.ipad);

  DataLayout layout = rec.tail > 0 ? DataLayout::flat_inline : DataLayout::flat_plain;
  uint32_t i_u = 0;
  uint64_t chunk_count = 0;
  if (rec.n_blocks > 0) {
    i_u = static_cast<uint32_t>(next_block / kBlock);
    next_block += uint64_t{rec.n_blocks} * kBlock;
  }
  if (type == S_IFCHR || type == S_IFBLK) {
    i_u = static_cast<uint32_t>(rec.inode ? rec.inode->rdev : 0);
  } else if (type == S_IFREG && rec.inode && !(rec.flags & kWhiteout) && rec.inode->is_external()) {
    const Chunking c = chunking(rec.inode->size);
    chunk_count = c.count;
    layout = DataLayout::chunk_based;
    // The chunk format shares i_u with raw_blkaddr and overwrites only its low half.
    i_u = (i_u & 0xffff0000u) | (c.bits - kBlockSizeBits);
  }

  const uint16_t icount = rec.xattr_icount;
  // Devices, fifos and sockets store size 0 whatever st_size said (it still decided
  // compact vs extended above, as in the C writer).
  const uint64_t size = type == S_IFREG || type == S_IFDIR || type == S_IFLNK ? size_of(rec) : 0;
  const uint64_t ino = r;
  if (rec.flags & kCompact) {
    InodeCompact in{};
    in.i_format = make_i_format(false, layout);
    in.i_xattr_icount = icount;
    in.i_mode = static_cast<uint16_t>(mode);
    in.i_nlink = static_cast<uint16_t>(nlink_of(rec));
    in.i_size = static_cast<uint32_t>(size);
    in.i_u = i_u;
    in.i_ino = static_cast<uint32_t>(ino);
    in.i_uid = static_cast<uint16_t>(attrs.uid);
    in.i_gid = static_cast<uint16_t>(attrs.gid);
    out.put_struct(in);
  } else {
    InodeExtended in{};
    in.i_format = make_i_format(true, layout);
    in.i_xattr_icount = icount;
    in.i_mode = static_cast<uint16_t>(mode);
    in.i_size = size;
    in.i_u = i_u;
    in.i_ino = static_cast<uint32_t>(ino);
    in.i_uid = attrs.uid;
    in.i_gid = attrs.gid;
    in.i_mtime = static_cast<uint64_t>(attrs.mtime_sec);
    in.i_mtime_nsec = attrs.mtime_nsec;
    in.i_nlink = nlink_of(rec);
    out.put_struct(in);
  }

  if (!pairs.empty()) {
    XattrIbodyHeader h{};
    uint32_t bits = 0;
    for (const PairRef& p : pairs) bits |= 1u << p.filter_bit();
    h.h_name_filter = ~bits;
    size_t n_shared = 0;
    for (int64_t s : shared) n_shared += s >= 0;
    h.h_shared_count = static_cast<uint8_t>(n_shared);
    out.put_struct(h);
    for (int64_t s : shared) {
      if (s < 0) continue;
      le32 id = static_cast<uint32_t>((inodes_end_ % kBlock + shared_xattrs_[s].offset) / 4);
      out.put_struct(id);
    }
    for (size_t i = 0; i < shared.size(); i++)
      if (shared[i] < 0) emit_xattr_entry(out, xattrs[i]);
  }

  if (rec.tail == 0) return;
  if (type == S_IFDIR) {
    emit_dirents(out, r, false);
  } else if (type == S_IFLNK) {
    out.put(rec.inode->payload);
  } else if (chunk_count > 0) {
    emit_null_chunks(out, chunk_count);
  } else {
    const std::string_view content = tree_.inline_content(*rec.inode, content_buf_);
    out.put(content.substr(content.size() - rec.tail));
  }
}

void ImageWriter::emit_xattr_entry(Emitter& out, const XattrView& x) {
  const XattrKey key = xattr_key(x.name);
  XattrEntry e{};
  e.e_name_len = static_cast<uint8_t>(key.suffix.size());
  e.e_name_index = key.index;
  e.e_value_size = static_cast<uint16_t>(x.value.size());
  out.put_struct(e);
  out.put(key.suffix);
  out.put(x.value);
  out.align(4);
}

void ImageWriter::emit_null_chunks(Emitter& out, uint64_t count) {
  const le32 null_addr = static_cast<uint32_t>(kNullAddr);
  for (uint64_t i = 0; i < count; i++) out.put_struct(null_addr);
}

uint32_t ImageWriter::record_of(const Dirent& d, bool all_primary, uint32_t& next_primary) const {
  if (all_primary || is_primary(d)) return next_primary++;
  return shared_.find(d.inode.get())->second.record;
}

void ImageWriter::emit_dirents(Emitter& out, uint32_t r, bool blocks) {
  const Record& rec = records_[r];
  uint32_t next_primary = rec.first_child;
  const bool all_primary = !(rec.flags & kLinkChildren);
  entries_.clear();
  for_each_entry(*rec.inode, r == 0, [&](const Entry& e) {
    uint32_t target = r;
    switch (e.kind) {
      case Entry::kChild:
        target = record_of(*e.dirent, all_primary, next_primary);
        break;
      case Entry::kStubEntry:
        target = next_primary++;
        break;
      case Entry::kDot:
        break;
      case Entry::kDotDot:
        target = rec.parent;
        break;
    }
    const Record& t = records_[target];
    entries_.push_back({e.name, t.nid, t.file_type});
  });

  size_t first = 0, cur = 0, full_blocks = 0;
  for (size_t i = 0; i < entries_.size(); i++) {
    size_t len = sizeof(DiskDirent) + entries_[i].name.size();
    if (cur + len > kBlock) {
      if (blocks) emit_dirent_chunk(out, first, i, true);
      full_blocks++;
      first = i;
      cur = 0;
    }
    cur += len;
  }
  // The last chunk is a block if layout decided so, else the inline tail.
  if (full_blocks < rec.n_blocks) {
    if (blocks) emit_dirent_chunk(out, first, entries_.size(), true);
  } else if (!blocks && cur > 0) {
    emit_dirent_chunk(out, first, entries_.size(), false);
  }
}

void ImageWriter::emit_dirent_chunk(Emitter& out, size_t begin, size_t end, bool full_block) {
  const uint64_t start = out.offset();
  uint64_t nameoff = (end - begin) * sizeof(DiskDirent);
  for (size_t i = begin; i < end; i++) {
    DiskDirent d{};
    d.nid = entries_[i].nid;
    d.nameoff = static_cast<uint16_t>(nameoff);
    d.file_type = entries_[i].file_type;
    out.put_struct(d);
    nameoff += entries_[i].name.size();
  }
  for (size_t i = begin; i < end; i++) out.put(entries_[i].name);
  if (full_block) out.zeros(kBlock - (out.offset() - start));
}

void ImageWriter::emit_data_blocks(Emitter& out, uint32_t r) {
  const Record& rec = records_[r];
  if (rec.n_blocks == 0) return;
  const uint32_t type = mode_of(rec) & S_IFMT;
  if (type == S_IFDIR) {
    emit_dirents(out, r, true);
  } else if (type == S_IFLNK) {
    out.put(rec.inode->payload);
    out.align(kBlock);
  } else if (!rec.inode->has_content()) {
    // A chunk map too big to inline: one block of null chunk addresses.
    emit_null_chunks(out, kBlock / sizeof(uint32_t));
  } else {
    const std::string_view content = tree_.inline_content(*rec.inode, content_buf_);
    out.put(content.substr(0, uint64_t{rec.n_blocks} * kBlock));
    out.align(kBlock);
  }
}

}  // namespace cfs::erofs::writer_impl
