// Decoders for the fields of tar headers and the values of PAX records. Each reports a
// malformed field through the caller's fail function (which throws), so that the message
// carries the parser's stream name and offset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "tar_format.h"

namespace cfs::oci::tar {

using Failer = std::function<void(const std::string&)>;

// The header layouts that decide which fields exist past the v7 part (tar_format.h).
enum class Format { v7, ustar, star, gnu };
Format header_format(const TarHeader& h);

// A NUL-terminated (or full-width) character field.
template <size_t N>
std::string_view text(const char (&field)[N]) {
  return {field, strnlen(field, N)};
}

// The member name: the prefix of ustar and star headers joined with the name field.
std::string header_path(const TarHeader& h, Format format);

// Octal (NUL/space padded, possibly unterminated) or GNU base-256 (big-endian two's
// complement, first byte 0x80/0xff). Negative values are refused (mtime has its own parser).
uint64_t parse_number(std::string_view field, const char* name, const Failer& fail);
template <size_t N>
uint64_t parse_number(const char (&field)[N], const char* name, const Failer& fail) {
  return parse_number(std::string_view(field, N), name, fail);
}

// The mtime field: octal, or base-256 two's complement that may be negative (GNU tar and
// libarchive write times before 1970 so). Values beyond 64 bits are refused.
int64_t parse_time_field(std::string_view field, const Failer& fail);

// The checksum over the block with the checksum field read as spaces matches the stored one,
// summed as unsigned or (as some old writers did) signed bytes.
bool checksum_ok(const TarHeader& h, const Failer& fail);

// A whole string of decimal digits.
bool parse_decimal(std::string_view s, uint64_t& out);

// A PAX time, [-]SECONDS[.FRACTION]: a negative time counts back from the epoch, fraction
// included (-5.25 is 5.25 s before it: seconds -6, nanoseconds 750000000). Finer digits than
// nanoseconds are truncated.
bool parse_pax_time(std::string_view v, int64_t& seconds, uint32_t& nanoseconds);

// libarchive writes LIBARCHIVE.xattr names URL-encoded ("%3D" for '=', etc) and values in
// base64.
std::optional<std::string> url_decode(std::string_view s);
std::optional<std::string> base64_decode(std::string_view s);

}  // namespace cfs::oci::tar
