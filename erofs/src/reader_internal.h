// Private helpers shared by the reader's translation units.
#pragma once

#include "cfs/erofs/reader.h"

#include "cfs/erofs/composefs.h"

#include <optional>
#include <unordered_map>

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

#include "cfs/erofs/tree.h"
#include "cfs/error.h"

namespace cfs::erofs::detail {

// A format violation found at one inode; validate() re-throws it with the path instead of
// the nid. The message (what()) is complete on its own for lazy-API callers.
class InodeError : public cfs::Error {
 public:
  InodeError(const std::string& message, uint64_t nid, std::string rule)
      : cfs::Error(message), nid_(nid), rule_(std::move(rule)) {}
  uint64_t nid() const noexcept { return nid_; }
  const std::string& rule() const noexcept { return rule_; }

 private:
  uint64_t nid_;
  std::string rule_;
};

template <typename T>
T load_le(std::span<const std::byte> bytes, size_t offset) {
  T v;
  std::memcpy(&v, bytes.data() + offset, sizeof v);
  return Le<T>::to_host(v);
}

inline std::string_view as_chars(std::span<const std::byte> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

// Names and values from a hostile image can hold any byte: show them printable.
std::string printable(std::string_view bytes);

// The digest in a trusted.overlay.metacopy value of inode nid (nullopt when empty); throws
// through image.fail on a malformed value. Image::metacopy_digest looks the value up first.
std::optional<Digest> metacopy_from_value(const Image& image, uint64_t nid, std::string_view value);

// The composefs names, as the reader's code spells them.
using composefs::kEscapedOpaque;
using composefs::kEscapedWhiteout;
using composefs::kEscapedWhiteouts;
using composefs::kMetacopyXattr;
using composefs::kOpaqueXattr;
using composefs::kOverlayEscapedPrefix;
using composefs::kOverlayPrefix;
using composefs::kRedirectXattr;
using composefs::kUserOpaque;
using composefs::kUserWhiteout;
using composefs::kUserWhiteouts;

// An image inode as the tree (Image::to_tree) holds it, one inode at a time: shared by the
// tree builder and the streaming `cfsctl dump`, which prints the same text without a tree.
// Every decoded byte is charged against the image's decode budget; `what` names the
// output in the error when it runs out.
class InodeDecoder {
 public:
  InodeDecoder(const Image& image, std::string what);
  // The stat fields, symlink target, redirect, digest and inline content.
  void fill_stat(Inode& out, const InodeInfo& in);
  // The xattrs the tree shows, sorted; a whiteout stored escaped becomes a 0/0 device. A
  // directory's opaque markers are the writer's own when it has a whiteout child.
  void map_xattrs(const InodeInfo& in, Inode& out, bool has_whiteout_child);
  // Whether the inode decodes to a whiteout (without decoding it).
  bool is_whiteout(const InodeInfo& in) const;
  // A V0/V1 root's 00-ff whiteout stub, which the tree leaves out.
  bool is_root_stub(std::string_view name, const InodeInfo& inode) const;
  void charge(uint64_t bytes);

 private:
  const Image& image_;
  std::string what_;
  uint64_t budget_;
};

// Validates the image strictly (Image::validate) and returns, for V0/V1 images laid out by a
// writer that put hardlinked inodes at a later name, the path of the name that holds each
// hardlinked inode (nid -> "/a/b"), as Image::to_tree marks it. Empty: every hardlinked
// inode's home is its first name in a depth-first walk.
std::unordered_map<uint64_t, std::string> validate_and_find_link_homes(const Image& image);

}  // namespace cfs::erofs::detail
