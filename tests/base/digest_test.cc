#include "cfs/digest.h"

#include <gtest/gtest.h>

namespace cfs {
namespace {

TEST(Digest, HexRoundTripAndObjectPath) {
  std::string hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  auto d = Digest::from_hex(hex);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->algorithm(), HashAlgorithm::sha256);
  EXPECT_EQ(d->hex(), hex);
  EXPECT_EQ(d->object_path(), "01/23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  EXPECT_EQ(Digest::from_object_path(d->object_path()), d);
  EXPECT_EQ(Digest::from_hex(std::string(128, 'a'))->algorithm(), HashAlgorithm::sha512);
}

TEST(Digest, RejectsMalformed) {
  EXPECT_FALSE(Digest::from_hex("abc"));
  EXPECT_FALSE(Digest::from_hex(std::string(63, 'a') + "g"));
  EXPECT_FALSE(Digest::from_hex(std::string(64, 'a'), HashAlgorithm::sha512));
  EXPECT_FALSE(Digest::from_object_path(std::string(64, 'a')));
  EXPECT_FALSE(Digest::from_object_path("aa/" + std::string(61, 'a')));
  EXPECT_FALSE(Digest::from_object_path("../" + std::string(62, 'a')));
}

}  // namespace
}  // namespace cfs
