// On-disk structures of a splitstream (composefs-rs' format; splitstream.h describes the
// whole file). Every integer is little-endian and stored through erofs::Le<T>, so the structs
// can be memcpy'd to and from file bytes on any host; sizes and offsets are pinned below.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "cfs/erofs/format.h"
#include "cfs/store/splitstream.h"

namespace cfs::store {

inline constexpr std::string_view kSplitStreamMagic = "SplitStream";
inline constexpr uint8_t kSplitStreamVersion = 0;
inline constexpr uint8_t kSplitStreamLgBlockSize = 12;

// [start, end) as absolute file offsets.
struct SplitStreamRange {
  erofs::le64 start;
  erofs::le64 end;
};

// At offset 0.
struct SplitStreamHeader {
  char magic[11];  // kSplitStreamMagic, no NUL
  uint8_t version;
  erofs::le16 flags;  // zero
  uint8_t algorithm;  // HashAlgorithm
  uint8_t lg_blocksize;
  SplitStreamRange info;  // where SplitStreamInfo is
};

// The header bootc <= 1.15 wrote: the same fields in another order. Readers accept both.
struct SplitStreamLegacyHeader {
  SplitStreamRange info;
  erofs::le16 flags;
  char magic[11];
  uint8_t version;
  uint8_t algorithm;
  uint8_t lg_blocksize;
};

struct SplitStreamInfo {
  SplitStreamRange stream_refs;  // raw digests
  SplitStreamRange object_refs;  // raw digests
  SplitStreamRange stream;       // zstd of the chunks
  SplitStreamRange named_refs;   // zstd of "<stream ref index>:<name>\0" records
  erofs::le64 content_type;
  erofs::le64 stream_size;
};

// Each chunk of the decompressed stream starts with an i64 (two's complement): -n means n
// inline bytes follow, k >= 0 means the whole content of object_refs[k].
using SplitStreamChunkHeader = erofs::le64;

static_assert(sizeof(SplitStreamRange) == 16);
static_assert(sizeof(SplitStreamHeader) == kSplitStreamHeaderSize);
static_assert(offsetof(SplitStreamHeader, version) == 11);
static_assert(offsetof(SplitStreamHeader, algorithm) == 14);
static_assert(offsetof(SplitStreamHeader, lg_blocksize) == 15);
static_assert(offsetof(SplitStreamHeader, info) == 16);
static_assert(sizeof(SplitStreamLegacyHeader) == kSplitStreamHeaderSize);
static_assert(offsetof(SplitStreamLegacyHeader, flags) == 16);
static_assert(offsetof(SplitStreamLegacyHeader, magic) == 18);
static_assert(offsetof(SplitStreamLegacyHeader, version) == 29);
static_assert(offsetof(SplitStreamLegacyHeader, algorithm) == 30);
static_assert(offsetof(SplitStreamLegacyHeader, lg_blocksize) == 31);
static_assert(sizeof(SplitStreamInfo) == kSplitStreamInfoSize);
static_assert(offsetof(SplitStreamInfo, stream) == 32);
static_assert(offsetof(SplitStreamInfo, named_refs) == 48);
static_assert(offsetof(SplitStreamInfo, content_type) == 64);
static_assert(sizeof(SplitStreamChunkHeader) == 8);

}  // namespace cfs::store
