// The composefs view of an EROFS image: how overlayfs metadata is encoded in xattrs and in
// the root's whiteout stubs (composefs-c.md §2.1 step 3), and how readers turn it back.
// The writer, the reader's to_tree(), the FUSE server and the C-compatible dumper all take
// their names and rules from here.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <sys/stat.h>

#include "cfs/digest.h"
#include "cfs/erofs/format.h"

namespace cfs::erofs {

struct XattrView;

namespace composefs {

// ---- xattr names --------------------------------------------------------------------------
// A user's trusted.overlay.NAME is stored as trusted.overlay.overlay.NAME, so overlayfs never
// acts on it; every other stored trusted.overlay.* name is composefs' own.
inline constexpr std::string_view kOverlayPrefix = "trusted.overlay.";
inline constexpr std::string_view kOverlayEscapedPrefix = "trusted.overlay.overlay.";
static_assert(kOverlayEscapedPrefix.size() - kOverlayPrefix.size() == kOverlayEscapeGrowth);

inline constexpr std::string_view kRedirectXattr = "trusted.overlay.redirect";  // "/" + payload
inline constexpr std::string_view kMetacopyXattr = "trusted.overlay.metacopy";  // MetacopyHeader
inline constexpr std::string_view kOpaqueXattr = "trusted.overlay.opaque";      // the root's "y"
inline constexpr std::string_view kRootOpaqueValue = "y";

// A whiteout (chr 0/0 in the tree) is stored as an empty regular file carrying both whiteout
// names; its directory carries both whiteouts names and, from format version 1, both opaque
// names with value "x" (Linux >= 6.8 xwhiteouts). The user.* forms serve unprivileged mounts.
inline constexpr std::string_view kEscapedWhiteout = "trusted.overlay.overlay.whiteout";
inline constexpr std::string_view kEscapedWhiteouts = "trusted.overlay.overlay.whiteouts";
inline constexpr std::string_view kEscapedOpaque = "trusted.overlay.overlay.opaque";
inline constexpr std::string_view kUserWhiteout = "user.overlay.whiteout";
inline constexpr std::string_view kUserWhiteouts = "user.overlay.whiteouts";
inline constexpr std::string_view kUserOpaque = "user.overlay.opaque";
inline constexpr std::string_view kWhiteoutDirOpaqueValue = "x";
inline constexpr uint32_t kWhiteoutDirMinVersion = 1;

// The stored name of a user xattr (trusted.overlay.* escaped).
std::string escape_xattr_name(std::string_view name);
// The user's name of a stored xattr: escaped names lose their escape, composefs' own
// trusted.overlay.* names give nullopt, everything else is unchanged. This is the rule of
// C composefs-info as well as of cfs's readers.
std::optional<std::string> unescape_xattr_name(std::string stored);

// What a stored xattr is to a reader that undoes the composefs encoding. Only exact names
// with the values the writer gives them are markers; anything else is a user's xattr.
enum class StoredXattr : uint8_t {
  user,           // shown (after unescape_xattr_name)
  redirect,       // trusted.overlay.redirect: the backing path
  metacopy,       // trusted.overlay.metacopy: the fs-verity digest
  whiteout,       // escaped whiteout on an empty regular file: the inode is a whiteout
  user_whiteout,  // user.overlay.whiteout on an empty regular file
  dir_marker,     // whiteouts (or v1 opaque "x") marker: hidden if the directory holds a whiteout
};
// empty_regular: the inode is a regular file of size 0 (the only kind that can be a whiteout).
StoredXattr classify(const XattrView& x, bool empty_regular, uint32_t format_version);

// ---- format V2 ------------------------------------------------------------------------------
// V0/V1 (C's layout) add the root's 00-ff stubs and store whiteouts escaped as regular files;
// V2 (composefs-rs' layout) stores neither: a chr 0/0 anywhere is a user's whiteout, and only
// the redirect and metacopy xattrs are composefs' own (user trusted.overlay.* stay escaped).
constexpr bool has_whiteout_stubs(uint32_t format_version) {
  return format_version < kComposefsVersionV2;
}

// ---- the root's whiteout stubs ------------------------------------------------------------
// The writer adds chr 0/0 inodes "00".."ff" to the root (unless the tree has the name) so
// that a lower layer's object directories stay hidden under the overlay. They are not part
// of the tree: every reader skips them. The strict reader accepts a stored chr 0/0 nowhere
// else, so after validate() "a chr 0/0 in the root named by two lowercase hex digits" and
// C composefs-info's "any stored chr 0/0" pick the same entries.
inline constexpr uint32_t kWhiteoutStubCount = 256;

inline constexpr std::array<char, 2 * kWhiteoutStubCount> kWhiteoutStubNames = [] {
  std::array<char, 2 * kWhiteoutStubCount> names{};
  constexpr char hex[] = "0123456789abcdef";
  for (uint32_t i = 0; i < kWhiteoutStubCount; i++) {
    names[2 * i] = hex[i >> 4];
    names[2 * i + 1] = hex[i & 15];
  }
  return names;
}();

// "00".."ff" for i in 0..255.
constexpr std::string_view whiteout_stub_name(uint32_t i) {
  return {kWhiteoutStubNames.data() + 2 * i, 2};
}

constexpr bool is_lower_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

constexpr bool is_whiteout_stub_name(std::string_view name) {
  return name.size() == 2 && is_lower_hex(name[0]) && is_lower_hex(name[1]);
}

// An entry of the root directory that is one of the writer's stubs.
constexpr bool is_whiteout_stub(std::string_view name, uint32_t mode, uint64_t rdev) {
  return (mode & S_IFMT) == S_IFCHR && rdev == 0 && is_whiteout_stub_name(name);
}

// ---- metacopy -----------------------------------------------------------------------------
// The stored bytes of the MetacopyHeader for a digest of alg; the digest follows them.
std::string_view metacopy_header_bytes(HashAlgorithm alg);

// A strictly checked trusted.overlay.metacopy value: the digest (nullopt for an empty value),
// or in error the rule the value breaks.
struct Metacopy {
  std::optional<Digest> digest;
  std::string error;
};
Metacopy parse_metacopy(std::string_view value);

// C composefs-info's reading: a value of exactly header + 32 bytes holds a sha256 digest,
// anything else holds none.
std::optional<Digest> compat_metacopy_digest(std::string_view value);

}  // namespace composefs
}  // namespace cfs::erofs
