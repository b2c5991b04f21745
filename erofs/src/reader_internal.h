// Private helpers shared by the reader's translation units.
#pragma once

#include "cfs/erofs/reader.h"

#include "cfs/erofs/composefs.h"

#include <optional>

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>

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

}  // namespace cfs::erofs::detail
