// Writer pass 3: sizes, compact or extended inodes, tail padding and nids, decided as the C
// writer decides them.
#include "writer_internal.h"

namespace cfs::erofs::writer_impl {

uint32_t ImageWriter::mode_of(const Record& rec) const {
  if (rec.flags & kStub) return S_IFCHR | 0644;
  if (rec.flags & kWhiteout) return S_IFREG | (rec.inode->mode & ~S_IFMT);
  return rec.inode->mode;
}

uint64_t ImageWriter::size_of(const Record& rec) const {
  if (rec.flags & (kStub | kWhiteout)) return 0;
  if (rec.inode->is_dir()) return uint64_t{rec.n_blocks} * kBlock + rec.tail;
  if (rec.inode->is_symlink()) return rec.inode->payload.size();
  return rec.inode->size;
}

std::pair<uint64_t, uint64_t> ImageWriter::pack_dir(const Inode& dir, bool is_root) const {
  uint64_t blocks = 0, cur = 0;
  for_each_entry(dir, is_root, [&](const Entry& e) {
    uint64_t len = sizeof(DiskDirent) + e.name.size();
    if (cur + len > kBlock) {
      blocks++;
      cur = 0;
    }
    cur += len;
  });
  return {blocks, cur};
}

void ImageWriter::compute_sizes(Record& rec, bool is_root) const {
  uint64_t blocks = 0, tail = 0;
  if (rec.inode && !(rec.flags & kWhiteout)) {
    const Inode& inode = *rec.inode;
    if (inode.is_dir()) {
      std::tie(blocks, tail) = pack_dir(inode, is_root);
      // Never inline more than half a block.
      if (tail > kBlock / 2) {
        blocks++;
        tail = 0;
      }
    } else if (inode.is_symlink()) {
      tail = inode.payload.size();
    } else if (inode.is_reg() && inode.size > 0) {
      if (inode.has_content()) {
        blocks = inode.size / kBlock;
        tail = inode.size % kBlock;
        if (tail > kBlock / 2) {
          blocks++;
          tail = 0;
        }
      } else {
        tail = chunking(inode.size).count * sizeof(uint32_t);
      }
    }
  }
  if (blocks > UINT32_MAX) fail(record_path(rec), "directory is too large");
  rec.n_blocks = static_cast<uint32_t>(blocks);
  rec.tail = static_cast<uint16_t>(tail);
}

bool ImageWriter::fits_compact(const Record& rec) const {
  const Inode& attrs = owner_of(rec);
  return std::pair<int64_t, uint32_t>{attrs.mtime_sec, attrs.mtime_nsec} == min_mtime_ &&
         nlink_of(rec) <= UINT16_MAX && attrs.uid <= UINT16_MAX && attrs.gid <= UINT16_MAX &&
         size_of(rec) <= UINT32_MAX;
}

uint64_t ImageWriter::tail_padding(Record& rec, uint64_t pos, uint64_t inode_size) const {
  const uint64_t non_tail = inode_size + xattr_ibody_size(rec.xattr_icount);
  if (rec.inode && !(rec.flags & kWhiteout) && rec.inode->is_symlink()) {
    const uint64_t total = non_tail + rec.tail;
    const bool crosses = pos / kBlock != (pos + total - 1) / kBlock;
    if (total >= kBlock) {
      rec.n_blocks++;
      rec.tail = 0;
    }
    return crosses ? round_up(pos, kBlock) - pos : 0;
  }
  uint64_t remainder = kBlock - (pos + non_tail) % kBlock;
  if (remainder >= rec.tail) return 0;
  const uint64_t pad = round_up(remainder, kSlot);
  remainder = kBlock - (pos + non_tail + pad) % kBlock;
  if (rec.tail <= remainder) return pad;
  rec.n_blocks++;
  rec.tail = 0;
  return round_up(pos, kBlock) - pos;
}

void ImageWriter::compute_layout() {
  std::vector<int64_t> shared;
  uint64_t pos = kSuperblockOffset + sizeof(Superblock);
  size_t pair_cursor = 0;
  for (size_t i = 0; i < records_.size(); i++) {
    Record& rec = records_[i];
    compute_sizes(rec, i == 0);
    if (fits_compact(rec)) rec.flags |= kCompact;
    const uint64_t inode_size =
        (rec.flags & kCompact) ? sizeof(InodeCompact) : sizeof(InodeExtended);

    const size_t xattr_size =
        classify_pairs(std::span(pairs_).subspan(pair_cursor, rec.n_pairs), shared);
    pair_cursor += rec.n_pairs;
    // i_xattr_icount is 16 bits: at most 262148 bytes of xattrs per inode. (Tighter
    // limits, such as the C tools' 32767-byte budget, belong to the input parsers.)
    if (xattr_size > xattr_ibody_size(UINT16_MAX))
      fail(record_path(rec),
           "xattrs need " + std::to_string(xattr_size) + " bytes, more than the " +
               std::to_string(xattr_ibody_size(UINT16_MAX)) + " an inode can hold");
    rec.xattr_icount = xattr_size == 0
                           ? 0
                           : static_cast<uint16_t>((xattr_size - sizeof(XattrIbodyHeader)) / 4 + 1);

    const uint64_t slot_pos = round_up(pos, kSlot);
    const uint64_t extra = tail_padding(rec, slot_pos, inode_size);
    rec.ipad = static_cast<uint16_t>(slot_pos - pos + extra);
    pos = slot_pos + extra;
    if (pos / kSlot > UINT32_MAX) throw Error("composefs image: too much inode metadata");
    rec.nid = static_cast<uint32_t>(pos / kSlot);
    pos += inode_size + xattr_ibody_size(rec.xattr_icount) + rec.tail;
    n_data_blocks_ += rec.n_blocks;
  }
  inodes_end_ = round_up(pos, kSlot);
  data_start_ = round_up(inodes_end_ + shared_size_, kBlock);
  if (data_start_ / kBlock + n_data_blocks_ > UINT32_MAX)
    throw Error("composefs image: image would exceed 2^32 blocks");
}

std::string ImageWriter::record_path(const Record& rec) const {
  if (rec.flags & kRoot) return "/";
  std::vector<std::string_view> parts;
  const Record* cur = &rec;
  while (!(cur->flags & kRoot)) {
    const Record& parent = records_[cur->parent];
    if (cur->flags & kStub) {
      parts.push_back(composefs::whiteout_stub_name(cur->stub));
    } else {
      for (const Dirent& d : parent.inode->children)
        if (d.inode.get() == cur->inode) {
          parts.push_back(d.name);
          break;
        }
    }
    cur = &parent;
  }
  std::string path;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) path.append("/").append(*it);
  return path;
}

}  // namespace cfs::erofs::writer_impl
