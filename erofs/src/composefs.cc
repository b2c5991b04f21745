#include "cfs/erofs/composefs.h"

#include <cstring>
#include <span>

#include "cfs/erofs/reader.h"

namespace cfs::erofs::composefs {

std::string escape_xattr_name(std::string_view name) {
  if (!name.starts_with(kOverlayPrefix)) return std::string(name);
  std::string stored(kOverlayEscapedPrefix);
  stored += name.substr(kOverlayPrefix.size());
  return stored;
}

std::optional<std::string> unescape_xattr_name(std::string stored) {
  if (stored.starts_with(kOverlayEscapedPrefix)) {
    stored.erase(kOverlayPrefix.size(), kOverlayEscapeGrowth);
    return stored;
  }
  if (stored.starts_with(kOverlayPrefix)) return std::nullopt;
  return stored;
}

StoredXattr classify(const XattrView& x, bool empty_regular, uint32_t format_version) {
  if (x.name_is(kRedirectXattr)) return StoredXattr::redirect;
  if (x.name_is(kMetacopyXattr)) return StoredXattr::metacopy;
  if (!has_whiteout_stubs(format_version)) return StoredXattr::user;  // V2: no markers
  if (x.value.empty()) {
    if (empty_regular && x.name_is(kEscapedWhiteout)) return StoredXattr::whiteout;
    if (empty_regular && x.name_is(kUserWhiteout)) return StoredXattr::user_whiteout;
    if (x.name_is(kEscapedWhiteouts) || x.name_is(kUserWhiteouts)) return StoredXattr::dir_marker;
  } else if (format_version >= kWhiteoutDirMinVersion && x.value == kWhiteoutDirOpaqueValue &&
             (x.name_is(kEscapedOpaque) || x.name_is(kUserOpaque))) {
    return StoredXattr::dir_marker;
  }
  return StoredXattr::user;
}

namespace {

constexpr MetacopyHeader metacopy_header(HashAlgorithm alg) {
  return {kMetacopyVersion, static_cast<uint8_t>(sizeof(MetacopyHeader) + digest_size(alg)), 0,
          static_cast<uint8_t>(alg)};
}
constexpr MetacopyHeader kSha256Header = metacopy_header(HashAlgorithm::sha256);
constexpr MetacopyHeader kSha512Header = metacopy_header(HashAlgorithm::sha512);

std::span<const uint8_t> as_bytes(std::string_view v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size()};
}

}  // namespace

std::string_view metacopy_header_bytes(HashAlgorithm alg) {
  const MetacopyHeader& h = alg == HashAlgorithm::sha256 ? kSha256Header : kSha512Header;
  return {reinterpret_cast<const char*>(&h), sizeof h};
}

Metacopy parse_metacopy(std::string_view value) {
  if (value.empty()) return {};
  auto error = [](std::string rule) { return Metacopy{std::nullopt, std::move(rule)}; };
  const std::string name(kMetacopyXattr);
  if (value.size() < sizeof(MetacopyHeader))
    return error(name + " value of " + std::to_string(value.size()) +
                 " bytes is shorter than its header");
  MetacopyHeader h;
  std::memcpy(&h, value.data(), sizeof h);
  if (h.version != kMetacopyVersion)
    return error(name + " version " + std::to_string(h.version) + ", expected 0");
  if (h.flags != 0) return error(name + " flags " + std::to_string(h.flags) + ", expected 0");
  if (h.digest_algo != static_cast<uint8_t>(HashAlgorithm::sha256) &&
      h.digest_algo != static_cast<uint8_t>(HashAlgorithm::sha512))
    return error(name + " digest algorithm " + std::to_string(h.digest_algo) +
                 " is neither sha256 (1) nor sha512 (2)");
  auto alg = static_cast<HashAlgorithm>(h.digest_algo);
  size_t want = sizeof(MetacopyHeader) + digest_size(alg);
  if (h.len != want || value.size() != want)
    return error(name + " length " + std::to_string(h.len) + " / value size " +
                 std::to_string(value.size()) + ", expected " + std::to_string(want));
  return {Digest(alg, as_bytes(value.substr(sizeof(MetacopyHeader)))), {}};
}

std::optional<Digest> compat_metacopy_digest(std::string_view value) {
  constexpr size_t kSha256Size = digest_size(HashAlgorithm::sha256);
  if (value.size() != sizeof(MetacopyHeader) + kSha256Size) return std::nullopt;
  return Digest(HashAlgorithm::sha256, as_bytes(value.substr(sizeof(MetacopyHeader))));
}

}  // namespace cfs::erofs::composefs
