// On-disk structures of composefs EROFS images. All multi-byte fields are little-endian and
// stored through the Le<T> wrappers, so the structs can be memcpy'd to and from image bytes
// on any host. Layout facts come from the kernel's fs/erofs/erofs_fs.h and composefs'
// lcfs-erofs.h; sizes are pinned by static_asserts.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>
#include <type_traits>

#include <sys/stat.h>

namespace cfs::erofs {

template <typename T>
class Le {
  static_assert(std::is_unsigned_v<T>);

 public:
  Le() = default;
  Le(T v) { set(v); }  // NOLINT: implicit by design, fields read like plain integers
  // One load or store on little-endian hosts (g++ does not merge the byte loop of a 64-bit
  // field, and the reader decodes millions of these); byte-swapped elsewhere.
  T get() const noexcept {
    T v;
    std::memcpy(&v, bytes_, sizeof v);
    return to_host(v);
  }
  void set(T v) noexcept {
    v = to_host(v);
    std::memcpy(bytes_, &v, sizeof v);
  }
  static T to_host(T v) noexcept {  // its own inverse
    if constexpr (std::endian::native == std::endian::big && sizeof(T) > 1) {
      T out = 0;
      for (size_t i = 0; i < sizeof(T); i++)
        out = static_cast<T>((out << 8) | ((v >> (8 * i)) & 0xff));
      return out;
    }
    return v;
  }
  operator T() const noexcept { return get(); }  // NOLINT
  Le& operator=(T v) noexcept {
    set(v);
    return *this;
  }

 private:
  uint8_t bytes_[sizeof(T)] = {};
};
using le16 = Le<uint16_t>;
using le32 = Le<uint32_t>;
using le64 = Le<uint64_t>;
static_assert(sizeof(le64) == 8 && alignof(le64) == 1);

inline constexpr uint32_t kBlockSizeBits = 12;
inline constexpr uint32_t kBlockSize = 1u << kBlockSizeBits;
inline constexpr uint32_t kInodeSlotBits = 5;  // nid = byte offset / 32 (meta_blkaddr 0)
inline constexpr uint32_t kInodeSlotSize = 1u << kInodeSlotBits;
inline constexpr uint64_t kNullAddr = 0xffffffff;  // EROFS_NULL_ADDR: a hole in a chunk map

// ---- limits ----------------------------------------------------------------------------
// One set of limits for every producer (dumpfile parser, directory scan, writer) and the
// strict reader, so that no cfs command stores an image its own reader refuses.
//
// Symlink targets: cfs's own limit (XFS's) and the C tools' (PATH_MAX - 1).
inline constexpr size_t kSymlinkMaxCfs = 1024;
inline constexpr size_t kSymlinkMaxCompat = 4095;
inline constexpr size_t kInlineContentMax = 5000;  // C LCFS_INLINE_CONTENT_MAX
// Format V2 (composefs-rs' own format) stores inline files and symlink targets whole in the
// inode; composefs-rs refuses larger ones (MAX_INLINE_CONTENT, SYMLINK_MAX) in V2 images.
inline constexpr size_t kInlineContentMaxV2 = 512;
inline constexpr size_t kSymlinkMaxV2 = 1024;
inline constexpr size_t kPathMax = 4096;
inline constexpr size_t kNameMax = 255;
inline constexpr size_t kXattrNameMax = 255;  // full name (prefix included), as the kernel's
inline constexpr size_t kXattrValueMax = 65535;
inline constexpr size_t kXattrLineMax = 65535;  // bytes of the xattr part of one dumpfile line
// The C tools' budget for one inode's xattrs: 12 + the sum of (7 + name + value) per xattr.
inline constexpr size_t kXattrBudgetCompat = 32767;
// A chunk-based (external) file has at most 1024 chunks (C LCFS_MAX_NONINLINE_CHUNKS) of at
// most 2^43 bytes (block size << the 5-bit chunk format): 8 PiB.
inline constexpr uint32_t kMaxChunks = 1024;
inline constexpr uint64_t kFileSizeMax = uint64_t{kMaxChunks} << 43;
// A user's trusted.overlay.NAME is stored escaped as trusted.overlay.overlay.NAME, 8 bytes
// longer, and the stored name must still fit kXattrNameMax.
inline constexpr size_t kOverlayEscapeGrowth = 8;  // "overlay."
inline constexpr size_t kOverlayXattrNameMax = kXattrNameMax - kOverlayEscapeGrowth;
// Directory nesting below the root (the root is depth 0): deeper trees cannot be walked with
// PATH_MAX paths, and the reader refuses them.
inline constexpr uint32_t kMaxDirDepth = 2048;

// The longest a user xattr name may be once stored (trusted.overlay.* names are escaped).
constexpr size_t xattr_name_max(std::string_view name) {
  return name.starts_with("trusted.overlay.") ? kOverlayXattrNameMax : kXattrNameMax;
}

// ---- composefs header, at offset 0 --------------------------------------------------------
inline constexpr uint32_t kComposefsMagic = 0xd078629a;
inline constexpr uint32_t kComposefsHeaderVersion = 1;  // LCFS_EROFS_VERSION (container version)
inline constexpr uint32_t kComposefsFlagHasAcl = 1u << 0;
// composefs_version 2: extended inodes in depth-first order, no root whiteout stubs, native
// whiteouts, absolute shared xattr ids (xattr_blkaddr 0); see composefs-rs.md §7.
inline constexpr uint32_t kComposefsVersionV2 = 2;

struct ComposefsHeader {
  le32 magic;
  le32 version;
  le32 flags;
  le32 composefs_version;  // format V0 / V1 (C layout) or V2 (composefs-rs' own layout)
  le32 unused[4];
};
static_assert(sizeof(ComposefsHeader) == 32);

// ---- EROFS superblock, at offset 1024 -----------------------------------------------------
inline constexpr uint64_t kSuperblockOffset = 1024;
inline constexpr uint32_t kErofsMagic = 0xe0f5e1e2;
inline constexpr uint32_t kFeatureCompatSbChksum = 0x1;
inline constexpr uint32_t kFeatureCompatMtime = 0x2;
inline constexpr uint32_t kFeatureCompatXattrFilter = 0x4;
inline constexpr uint32_t kFeatureIncompatChunkedFile = 0x4;

struct Superblock {
  le32 magic;
  le32 checksum;
  le32 feature_compat;
  uint8_t blkszbits;
  uint8_t sb_extslots;
  le16 root_nid;
  le64 inos;
  le64 build_time;
  le32 build_time_nsec;
  le32 blocks;
  le32 meta_blkaddr;
  le32 xattr_blkaddr;
  uint8_t uuid[16];
  uint8_t volume_name[16];
  le32 feature_incompat;
  le16 u1;  // available_compr_algs / lz4_max_distance
  le16 extra_devices;
  le16 devt_slotoff;
  uint8_t dirblkbits;
  uint8_t xattr_prefix_count;
  le32 xattr_prefix_start;
  le64 packed_nid;
  uint8_t xattr_filter_reserved;
  uint8_t reserved2[23];
};
static_assert(sizeof(Superblock) == 128);

// ---- inodes -------------------------------------------------------------------------------
// i_format: bit 0 = extended layout, bits 1-3 = data layout.
inline constexpr uint16_t kInodeLayoutCompact = 0;
inline constexpr uint16_t kInodeLayoutExtended = 1;
enum class DataLayout : uint16_t {
  flat_plain = 0,
  compressed_full = 1,
  flat_inline = 2,
  compressed_compact = 3,
  chunk_based = 4,
};
inline constexpr uint16_t kDataLayoutBit = 1;
inline constexpr uint16_t kDataLayoutMask = 0x7;
inline constexpr uint16_t kChunkFormatBlkbitsMask = 0x1f;
static_assert(kFileSizeMax == uint64_t{kMaxChunks} << (kBlockSizeBits + kChunkFormatBlkbitsMask));
inline constexpr uint16_t kChunkFormatIndexes = 0x20;

inline constexpr uint16_t make_i_format(bool extended, DataLayout layout) {
  return static_cast<uint16_t>((static_cast<uint16_t>(layout) << kDataLayoutBit) |
                               (extended ? kInodeLayoutExtended : kInodeLayoutCompact));
}

struct InodeCompact {
  le16 i_format;
  le16 i_xattr_icount;
  le16 i_mode;
  le16 i_nlink;
  le32 i_size;
  le32 i_reserved;
  le32 i_u;  // raw_blkaddr / rdev / chunk format (i_u.c.format in the low 16 bits)
  le32 i_ino;
  le16 i_uid;
  le16 i_gid;
  le32 i_reserved2;
};
static_assert(sizeof(InodeCompact) == 32);

struct InodeExtended {
  le16 i_format;
  le16 i_xattr_icount;
  le16 i_mode;
  le16 i_reserved;
  le64 i_size;
  le32 i_u;
  le32 i_ino;
  le32 i_uid;
  le32 i_gid;
  le64 i_mtime;
  le32 i_mtime_nsec;
  le32 i_nlink;
  uint8_t i_reserved2[16];
};
static_assert(sizeof(InodeExtended) == 64);

// ---- xattrs -------------------------------------------------------------------------------
struct XattrIbodyHeader {
  le32 h_name_filter;  // bit set = name hash NOT present (bloom filter, inverted)
  uint8_t h_shared_count;
  uint8_t h_reserved2[7];
  // followed by h_shared_count x le32 shared xattr ids, then inline XattrEntry records
};
static_assert(sizeof(XattrIbodyHeader) == 12);

struct XattrEntry {
  uint8_t e_name_len;
  uint8_t e_name_index;
  le16 e_value_size;
  // followed by the name suffix and the value, the whole record padded to 4 bytes
};
static_assert(sizeof(XattrEntry) == 4);

inline constexpr uint32_t kXattrFilterSeed = 0x25bbe08f;
inline constexpr uint32_t kXattrFilterBits = 32;
inline constexpr size_t kMaxSharedXattrsPerInode = 128;

enum XattrIndex : uint8_t {
  kXattrIndexNone = 0,
  kXattrIndexUser = 1,
  kXattrIndexPosixAclAccess = 2,
  kXattrIndexPosixAclDefault = 3,
  kXattrIndexTrusted = 4,
  kXattrIndexLustre = 5,
  kXattrIndexSecurity = 6,
};

// i_xattr_icount -> bytes of the inode's xattr area.
inline constexpr size_t xattr_ibody_size(uint16_t icount) {
  return icount == 0 ? 0 : sizeof(XattrIbodyHeader) + (static_cast<size_t>(icount) - 1) * 4;
}

// ---- directories --------------------------------------------------------------------------
// Named DiskDirent so it can coexist with the tree's Dirent (tree.h) in one translation unit.
struct DiskDirent {
  le64 nid;
  le16 nameoff;
  uint8_t file_type;
  uint8_t reserved;
};
static_assert(sizeof(DiskDirent) == 12);

// Dirent file types (the kernel's FT_*), numbered 0..7 in this order.
enum FileType : uint8_t {
  kFtUnknown,
  kFtRegFile,
  kFtDir,
  kFtChrdev,
  kFtBlkdev,
  kFtFifo,
  kFtSock,
  kFtSymlink
};

// The S_IFMT bits each FileType stands for, indexed by FileType.
inline constexpr std::array<uint32_t, 8> kFileTypeModes = {0,       S_IFREG, S_IFDIR,  S_IFCHR,
                                                           S_IFBLK, S_IFIFO, S_IFSOCK, S_IFLNK};

// The dirent file type of an st_mode (kFtUnknown for invalid types).
constexpr uint8_t file_type_of(uint32_t mode) {
  for (uint8_t ft = kFtRegFile; ft < kFileTypeModes.size(); ft++)
    if (kFileTypeModes[ft] == (mode & S_IFMT)) return ft;
  return kFtUnknown;
}

// The S_IFMT bits of a dirent file type (0 for unknown ones).
constexpr uint32_t mode_type_of(uint8_t file_type) {
  return file_type < kFileTypeModes.size() ? kFileTypeModes[file_type] : 0;
}
static_assert(file_type_of(S_IFLNK | 0777) == kFtSymlink && mode_type_of(kFtDir) == S_IFDIR);
static_assert(file_type_of(0) == kFtUnknown && mode_type_of(8) == 0);

// ---- overlayfs metacopy xattr value -------------------------------------------------------
inline constexpr uint8_t kMetacopyVersion = 0;
struct MetacopyHeader {
  uint8_t version;
  uint8_t len;  // header + digest
  uint8_t flags;
  uint8_t digest_algo;  // FS_VERITY_HASH_ALG_*
};
static_assert(sizeof(MetacopyHeader) == 4);

}  // namespace cfs::erofs
