// The parts of the FUSE kernel protocol that libfuse 3.14 does not know: the INIT flags2 word
// and FUSE passthrough (Linux 6.9, protocol 7.40). Values are the kernel's
// (include/uapi/linux/fuse.h); the protocol is host-endian.
#pragma once

#include <sys/ioctl.h>

#include <cstdint>

namespace cfs::fuse::abi {

inline constexpr uint32_t kOpcodeOpen = 14;
inline constexpr uint32_t kOpcodeInit = 26;

inline constexpr uint32_t kInitExt = 1u << 30;  // FUSE_INIT_EXT: flags2 is valid
inline constexpr uint32_t kInitPassthroughFlags2 = 1u << (37 - 32);  // FUSE_PASSTHROUGH
inline constexpr uint32_t kOpenPassthrough = 1u << 7;                // FOPEN_PASSTHROUGH
// The FUSE superblock's stack depth when passthrough is on: backing files must live on a
// filesystem of lower depth (a plain disk filesystem has depth 0).
inline constexpr uint32_t kPassthroughStackDepth = 1;

struct InHeader {
  uint32_t len;
  uint32_t opcode;
  uint64_t unique;
  uint64_t nodeid;
  uint32_t uid;
  uint32_t gid;
  uint32_t pid;
  uint32_t padding;
};
static_assert(sizeof(InHeader) == 40);

struct OutHeader {
  uint32_t len;
  int32_t error;
  uint64_t unique;
};
static_assert(sizeof(OutHeader) == 16);

// Protocol 7.36 and later (the whole struct is sent only then).
struct InitIn {
  uint32_t major;
  uint32_t minor;
  uint32_t max_readahead;
  uint32_t flags;
  uint32_t flags2;
  uint32_t unused[11];
};
static_assert(sizeof(InitIn) == 64);

struct InitOut {
  uint32_t major;
  uint32_t minor;
  uint32_t max_readahead;
  uint32_t flags;
  uint16_t max_background;
  uint16_t congestion_threshold;
  uint32_t max_write;
  uint32_t time_gran;
  uint16_t max_pages;
  uint16_t map_alignment;
  uint32_t flags2;
  uint32_t max_stack_depth;
  uint32_t unused[6];
};
static_assert(sizeof(InitOut) == 64);

struct OpenOut {
  uint64_t fh;
  uint32_t open_flags;
  int32_t backing_id;
};
static_assert(sizeof(OpenOut) == 16);

struct BackingMap {
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};
static_assert(sizeof(BackingMap) == 16);

inline constexpr unsigned long kIocBackingOpen = _IOW(229, 1, BackingMap);
inline constexpr unsigned long kIocBackingClose = _IOW(229, 2, uint32_t);

}  // namespace cfs::fuse::abi
