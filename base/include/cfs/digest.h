// fs-verity digests: the names of objects, images and streams throughout cfs.
#pragma once

#include <algorithm>
#include <array>
#include <compare>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace cfs {

// fs-verity hash algorithms, numbered as in the kernel (FS_VERITY_HASH_ALG_*).
enum class HashAlgorithm : uint8_t { sha256 = 1, sha512 = 2 };

constexpr size_t digest_size(HashAlgorithm alg) {
  return alg == HashAlgorithm::sha256 ? 32 : 64;
}
std::string_view algorithm_name(HashAlgorithm alg);  // "sha256" / "sha512"
std::optional<HashAlgorithm> parse_algorithm_name(std::string_view name);

// A digest of either algorithm, stored inline (no allocation).
class Digest {
 public:
  Digest() = default;
  Digest(HashAlgorithm alg, std::span<const uint8_t> bytes);

  HashAlgorithm algorithm() const noexcept { return alg_; }
  size_t size() const noexcept { return digest_size(alg_); }
  std::span<const uint8_t> bytes() const noexcept { return {bytes_.data(), size()}; }

  std::string hex() const;
  // "ab/cdef…": the object path below objects/ (also the composefs redirect payload).
  std::string object_path() const;
  // Whether path is exactly object_path() (lowercase hex), compared without building it.
  bool is_object_path(std::string_view path) const noexcept;

  // Accepts 64 (sha256) or 128 (sha512) hex digits, either case; nullopt otherwise.
  static std::optional<Digest> from_hex(std::string_view hex);
  // Like from_hex, but requires the given algorithm.
  static std::optional<Digest> from_hex(std::string_view hex, HashAlgorithm alg);
  // Parses "ab/cdef…" (the object path form); nullopt if not exactly that shape.
  static std::optional<Digest> from_object_path(std::string_view path);

  friend bool operator==(const Digest& a, const Digest& b) noexcept {
    return a.alg_ == b.alg_ && std::equal(a.bytes().begin(), a.bytes().end(), b.bytes().begin());
  }
  friend std::strong_ordering operator<=>(const Digest& a, const Digest& b) noexcept;

 private:
  HashAlgorithm alg_ = HashAlgorithm::sha256;
  std::array<uint8_t, 64> bytes_{};
};

std::string to_hex(std::span<const uint8_t> bytes);
// Strict hex decoding (even length, [0-9a-fA-F] only); nullopt on anything else.
std::optional<std::string> from_hex(std::string_view hex);

}  // namespace cfs

template <>
struct std::hash<cfs::Digest> {
  size_t operator()(const cfs::Digest& d) const noexcept {
    size_t h;
    std::memcpy(&h, d.bytes().data(), sizeof h);  // digests are uniformly distributed
    return h;
  }
};
