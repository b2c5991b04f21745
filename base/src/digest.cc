#include "cfs/digest.h"

#include <algorithm>

#include "cfs/error.h"

namespace cfs {

namespace {
int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

std::string_view algorithm_name(HashAlgorithm alg) {
  return alg == HashAlgorithm::sha256 ? "sha256" : "sha512";
}

std::optional<HashAlgorithm> parse_algorithm_name(std::string_view name) {
  if (name == "sha256") return HashAlgorithm::sha256;
  if (name == "sha512") return HashAlgorithm::sha512;
  return std::nullopt;
}

Digest::Digest(HashAlgorithm alg, std::span<const uint8_t> bytes) : alg_(alg) {
  if (bytes.size() != digest_size(alg)) throw Error("digest has wrong length");
  std::copy(bytes.begin(), bytes.end(), bytes_.begin());
}

std::string to_hex(std::span<const uint8_t> bytes) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(bytes.size() * 2, '\0');
  for (size_t i = 0; i < bytes.size(); i++) {
    out[2 * i] = digits[bytes[i] >> 4];
    out[2 * i + 1] = digits[bytes[i] & 15];
  }
  return out;
}

std::optional<std::string> from_hex(std::string_view hex) {
  if (hex.size() % 2) return std::nullopt;
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); i++) {
    int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return out;
}

std::string Digest::hex() const {
  return to_hex(bytes());
}

std::string Digest::object_path() const {
  std::string h = hex();
  return h.substr(0, 2) + "/" + h.substr(2);
}

bool Digest::is_object_path(std::string_view path) const noexcept {
  constexpr char kDigits[] = "0123456789abcdef";
  if (path.size() != 2 * size() + 1 || path[2] != '/') return false;
  // Hex digit k sits at path[k], or path[k + 1] once past the slash.
  auto digit_at = [&](size_t k) { return path[k < 2 ? k : k + 1]; };
  std::span<const uint8_t> raw = bytes();
  for (size_t i = 0; i < raw.size(); i++)
    if (digit_at(2 * i) != kDigits[raw[i] >> 4] || digit_at(2 * i + 1) != kDigits[raw[i] & 0xf])
      return false;
  return true;
}

std::optional<Digest> Digest::from_hex(std::string_view hex) {
  if (hex.size() == 64) return from_hex(hex, HashAlgorithm::sha256);
  if (hex.size() == 128) return from_hex(hex, HashAlgorithm::sha512);
  return std::nullopt;
}

std::optional<Digest> Digest::from_hex(std::string_view hex, HashAlgorithm alg) {
  if (hex.size() != 2 * digest_size(alg)) return std::nullopt;
  auto raw = cfs::from_hex(hex);
  if (!raw) return std::nullopt;
  return Digest(alg, {reinterpret_cast<const uint8_t*>(raw->data()), raw->size()});
}

std::optional<Digest> Digest::from_object_path(std::string_view path) {
  if (path.size() < 3 || path[2] != '/') return std::nullopt;
  std::string joined;
  joined.reserve(path.size() - 1);
  joined.append(path.substr(0, 2)).append(path.substr(3));
  return from_hex(joined);
}

std::strong_ordering operator<=>(const Digest& a, const Digest& b) noexcept {
  if (auto c = a.alg_ <=> b.alg_; c != 0) return c;
  return std::lexicographical_compare_three_way(a.bytes().begin(), a.bytes().end(),
                                                b.bytes().begin(), b.bytes().end());
}

}  // namespace cfs
