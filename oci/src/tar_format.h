// The 512-byte tar header block in the layouts real writers produce. Numeric fields are ASCII
// octal (or GNU base-256) in fixed-width character arrays, so there is no byte order; the
// structs pin the field offsets with static_asserts. The v7 part is common to every format;
// the 167 bytes after devminor differ:
//
//   ustar  "ustar\0" "00":  155-byte name prefix
//   star   ustar magic and "tar\0" at 508: 131-byte prefix, atime, ctime
//   GNU    "ustar " " \0" (gnu and oldgnu): atime, ctime, four sparse map entries, the
//          "more map blocks follow" flag and the expanded size of a sparse member; no prefix
//   v7     no magic: no device numbers, no prefix, directories by a trailing '/'
#pragma once

#include <cstddef>
#include <cstring>
#include <span>

namespace cfs::oci {

inline constexpr size_t kTarBlockSize = 512;

struct TarHeader {
  char name[100];
  char mode[8];
  char uid[8];
  char gid[8];
  char size[12];
  char mtime[12];
  char checksum[8];
  char typeflag;
  char linkname[100];
  char magic[6];
  char version[2];
  char uname[32];
  char gname[32];
  char devmajor[8];
  char devminor[8];
  char format_specific[167];  // one of the tails below
};

struct TarUstarTail {
  char prefix[155];
  char pad[12];
};

struct TarStarTail {
  char prefix[131];
  char atime[12];
  char ctime[12];
  char pad[8];
  char trailer[4];  // "tar\0"
};

struct TarSparseEntry {
  char offset[12];
  char numbytes[12];
};

struct TarGnuTail {
  char atime[12];
  char ctime[12];
  char offset[12];
  char longnames[4];
  char unused;
  TarSparseEntry sparse[4];
  char is_extended;  // non-zero: TarGnuSparseBlocks follow the header
  char realsize[12];
  char pad[17];
};

// The blocks that continue a GNU sparse member's map.
struct TarGnuSparseBlock {
  TarSparseEntry sparse[21];
  char is_extended;
  char pad[7];
};

static_assert(sizeof(TarHeader) == kTarBlockSize);
static_assert(offsetof(TarHeader, mode) == 100);
static_assert(offsetof(TarHeader, size) == 124);
static_assert(offsetof(TarHeader, mtime) == 136);
static_assert(offsetof(TarHeader, checksum) == 148);
static_assert(offsetof(TarHeader, typeflag) == 156);
static_assert(offsetof(TarHeader, linkname) == 157);
static_assert(offsetof(TarHeader, magic) == 257);
static_assert(offsetof(TarHeader, devmajor) == 329);
static_assert(offsetof(TarHeader, devminor) == 337);
static_assert(offsetof(TarHeader, format_specific) == 345);
static_assert(sizeof(TarUstarTail) == sizeof(TarHeader::format_specific));
static_assert(sizeof(TarStarTail) == sizeof(TarHeader::format_specific));
static_assert(offsetof(TarStarTail, trailer) == 508 - 345);
static_assert(sizeof(TarGnuTail) == sizeof(TarHeader::format_specific));
static_assert(offsetof(TarGnuTail, sparse) == 386 - 345);
static_assert(offsetof(TarGnuTail, is_extended) == 482 - 345);
static_assert(offsetof(TarGnuTail, realsize) == 483 - 345);
static_assert(sizeof(TarGnuSparseBlock) == kTarBlockSize);
static_assert(offsetof(TarGnuSparseBlock, is_extended) == 504);

// A copy of the struct T held in raw bytes (a header block, or a header's tail).
template <typename T>
T tar_struct(std::span<const std::byte> bytes) {
  static_assert(sizeof(T) <= kTarBlockSize);
  T value;
  std::memcpy(&value, bytes.data(), sizeof value);
  return value;
}
template <typename T>
T tar_tail(const TarHeader& header) {
  return tar_struct<T>(std::as_bytes(std::span(header.format_specific)));
}

}  // namespace cfs::oci
