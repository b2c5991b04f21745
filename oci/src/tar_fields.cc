#include "tar_fields.h"

#include <charconv>
#include <climits>

namespace cfs::oci::tar {

Format header_format(const TarHeader& h) {
  std::string_view magic(h.magic, sizeof h.magic);
  std::string_view version(h.version, sizeof h.version);
  if (magic == std::string_view("ustar ", 6) && version == std::string_view(" \0", 2))
    return Format::gnu;
  if (magic != std::string_view("ustar\0", 6)) return Format::v7;
  auto star = tar_tail<TarStarTail>(h);
  if (std::string_view(star.trailer, sizeof star.trailer) == std::string_view("tar\0", 4))
    return Format::star;
  // Version other than "00": still POSIX-shaped (some writers leave it blank).
  return Format::ustar;
}

std::string header_path(const TarHeader& h, Format format) {
  std::string_view prefix;
  TarUstarTail ustar;
  TarStarTail star;
  if (format == Format::ustar) {
    ustar = tar_tail<TarUstarTail>(h);
    prefix = text(ustar.prefix);
  } else if (format == Format::star) {
    star = tar_tail<TarStarTail>(h);
    prefix = text(star.prefix);
  }
  std::string name(text(h.name));
  return prefix.empty() ? name : std::string(prefix) + "/" + name;
}

uint64_t parse_number(std::string_view field, const char* name, const Failer& fail) {
  auto b = [&](size_t i) { return static_cast<uint8_t>(field[i]); };
  size_t len = field.size();
  if (b(0) & 0x80) {
    if (b(0) & 0x40) fail(std::string("negative ") + name + " field");
    uint64_t v = b(0) & 0x3f;
    for (size_t i = 1; i < len; ++i) {
      if (v >> 56) fail(std::string(name) + " field overflows 64 bits");
      v = (v << 8) | b(i);
    }
    return v;
  }
  size_t i = 0;
  while (i < len && (b(i) == ' ' || b(i) == 0)) {
    if (b(i) == 0) return 0;  // an all-NUL field is zero
    ++i;
  }
  uint64_t v = 0;
  for (; i < len && b(i) != ' ' && b(i) != 0; ++i) {
    if (b(i) < '0' || b(i) > '7') fail(std::string("bad octal digit in the ") + name + " field");
    if (v >> 61) fail(std::string(name) + " field overflows 64 bits");
    v = v * 8 + (b(i) - '0');
  }
  return v;
}

int64_t parse_time_field(std::string_view field, const Failer& fail) {
  auto b = [&](size_t i) { return static_cast<uint8_t>(field[i]); };
  size_t len = field.size();
  if ((b(0) & 0xc0) != 0xc0) {
    uint64_t v = parse_number(field, "mtime", fail);
    if (v > uint64_t(INT64_MAX)) fail("mtime field overflows 64 bits");
    return static_cast<int64_t>(v);
  }
  // Negative: every byte before the last eight is sign extension (0xff), and the last eight
  // hold a negative int64.
  for (size_t i = 0; i + 8 < len; ++i)
    if (b(i) != 0xff) fail("mtime field overflows 64 bits");
  if (!(b(len - 8) & 0x80)) fail("mtime field overflows 64 bits");
  uint64_t v = 0;
  for (size_t i = len - 8; i < len; ++i) v = (v << 8) | b(i);
  return static_cast<int64_t>(v);
}

bool checksum_ok(const TarHeader& h, const Failer& fail) {
  uint64_t stored_sum = parse_number(h.checksum, "checksum", fail);
  const auto* bytes = reinterpret_cast<const uint8_t*>(&h);
  constexpr size_t kSumStart = offsetof(TarHeader, checksum);
  constexpr size_t kSumEnd = kSumStart + sizeof h.checksum;
  uint64_t unsigned_sum = 0;
  int64_t signed_sum = 0;
  for (size_t i = 0; i < sizeof h; ++i) {
    uint8_t c = (i >= kSumStart && i < kSumEnd) ? ' ' : bytes[i];
    unsigned_sum += c;
    signed_sum += static_cast<int8_t>(c);
  }
  return stored_sum == unsigned_sum || static_cast<int64_t>(stored_sum) == signed_sum;
}

bool parse_decimal(std::string_view s, uint64_t& out) {
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

bool parse_pax_time(std::string_view v, int64_t& seconds_out, uint32_t& nanoseconds_out) {
  bool minus = !v.empty() && v[0] == '-';
  if (minus) v.remove_prefix(1);
  auto dot = v.find('.');
  uint64_t seconds = 0;
  uint32_t nanoseconds = 0;
  bool ok = parse_decimal(v.substr(0, dot), seconds) && seconds <= uint64_t(INT64_MAX) - 1;
  if (ok && dot != std::string_view::npos) {
    std::string frac(v.substr(dot + 1));
    ok = !frac.empty() && frac.find_first_not_of("0123456789") == std::string::npos;
    frac.resize(9, '0');
    if (ok) nanoseconds = static_cast<uint32_t>(std::stoul(frac));
  }
  if (!ok) return false;
  seconds_out = static_cast<int64_t>(seconds);
  nanoseconds_out = nanoseconds;
  if (minus) {
    seconds_out = -seconds_out;
    if (nanoseconds) {
      seconds_out -= 1;
      nanoseconds_out = 1000000000 - nanoseconds;
    }
  }
  return true;
}

std::optional<std::string> url_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    unsigned v = 0;
    auto [ptr, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
    if (ec != std::errc() || ptr != s.data() + i + 3) return std::nullopt;
    out += static_cast<char>(v);
    i += 2;
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view s) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  while (!s.empty() && s.back() == '=') s.remove_suffix(1);
  std::string out;
  out.reserve(s.size() * 3 / 4);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    int v = value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xff);
    }
  }
  if (bits >= 6) return std::nullopt;  // a lone trailing character
  return out;
}

}  // namespace cfs::oci::tar
