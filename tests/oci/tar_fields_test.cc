// The tar header field decoders (oci/src/tar_fields.h) on hand-made fields.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

#include "tar_fields.h"
#include "tar_format.h"

namespace cfs::oci::tar {
namespace {

const Failer kThrow = [](const std::string& m) { throw std::runtime_error(m); };

TEST(TarFields, OctalAndBase256Numbers) {
  EXPECT_EQ(parse_number(std::string_view("0000644\0", 8), "mode", kThrow), 0644u);
  EXPECT_EQ(parse_number(std::string_view("  755 \0\0", 8), "mode", kThrow), 0755u);
  EXPECT_EQ(parse_number(std::string_view("\0\0\0\0\0\0\0\0", 8), "uid", kThrow), 0u);
  std::string big(12, '\0');
  big[0] = '\x80';
  big[11] = '\x01';
  big[10] = '\x02';
  EXPECT_EQ(parse_number(big, "size", kThrow), 0x201u);
  EXPECT_THROW(parse_number(std::string_view("0000899\0", 8), "mode", kThrow), std::runtime_error);
  std::string negative(12, '\xff');
  EXPECT_THROW(parse_number(negative, "size", kThrow), std::runtime_error);
}

TEST(TarFields, TimeFieldMayBeNegative) {
  EXPECT_EQ(parse_time_field(std::string_view("00000000012\0", 12), kThrow), 10);
  std::string minus_one(12, '\xff');
  EXPECT_EQ(parse_time_field(minus_one, kThrow), -1);
}

TEST(TarFields, PaxTime) {
  int64_t s = 0;
  uint32_t ns = 0;
  ASSERT_TRUE(parse_pax_time("-5.25", s, ns));
  EXPECT_EQ(s, -6);
  EXPECT_EQ(ns, 750000000u);
  ASSERT_TRUE(parse_pax_time("1700000000.1234567891", s, ns));
  EXPECT_EQ(s, 1700000000);
  EXPECT_EQ(ns, 123456789u);
  EXPECT_FALSE(parse_pax_time("1.", s, ns));
  EXPECT_FALSE(parse_pax_time("x", s, ns));
}

TEST(TarFields, LibarchiveXattrEncodings) {
  EXPECT_EQ(url_decode("user.a%3Db"), "user.a=b");
  EXPECT_FALSE(url_decode("user.%3"));
  EXPECT_EQ(base64_decode("aGVsbG8="), "hello");
  EXPECT_FALSE(base64_decode("a"));
}

TarHeader header_with(std::string_view magic8) {
  TarHeader h{};
  std::memcpy(h.magic, magic8.data(), 8);
  return h;
}

TEST(TarFields, HeaderFormats) {
  EXPECT_EQ(header_format(header_with(std::string_view("ustar  \0", 8))), Format::gnu);
  EXPECT_EQ(header_format(header_with(std::string_view("ustar\0"
                                                       "00",
                                                       8))),
            Format::ustar);
  EXPECT_EQ(header_format(header_with(std::string_view("\0\0\0\0\0\0\0\0", 8))), Format::v7);
  TarHeader star =
      header_with(std::string_view("ustar\0"
                                   "00",
                                   8));
  std::memcpy(reinterpret_cast<char*>(&star) + 508, "tar", 4);
  EXPECT_EQ(header_format(star), Format::star);
}

TEST(TarFields, PrefixJoinsTheName) {
  TarHeader h =
      header_with(std::string_view("ustar\0"
                                   "00",
                                   8));
  std::memcpy(h.name, "file", 4);
  std::memcpy(h.format_specific, "dir/sub", 7);
  EXPECT_EQ(header_path(h, Format::ustar), "dir/sub/file");
  EXPECT_EQ(header_path(h, Format::gnu), "file");  // GNU headers have no prefix
}

TEST(TarFields, ChecksumAcceptsUnsignedAndSignedSums) {
  TarHeader h = header_with(std::string_view("ustar  \0", 8));
  h.name[0] = '\xe9';  // a byte whose signed and unsigned values differ
  auto sum = [&](bool is_signed) {
    const auto* b = reinterpret_cast<const unsigned char*>(&h);
    long total = 0;
    for (size_t i = 0; i < sizeof h; ++i) {
      unsigned char c = (i >= 148 && i < 156) ? ' ' : b[i];
      total += is_signed ? static_cast<signed char>(c) : c;
    }
    return total;
  };
  for (bool is_signed : {false, true}) {
    std::snprintf(h.checksum, sizeof h.checksum, "%06lo", sum(is_signed));
    EXPECT_TRUE(checksum_ok(h, kThrow)) << is_signed;
  }
  h.name[1] = 'x';
  EXPECT_FALSE(checksum_ok(h, kThrow));
}

}  // namespace
}  // namespace cfs::oci::tar
