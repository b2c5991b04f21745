// cfs/repo_layout.h: the repository's names and path rules, as the store and cfs-mount use them.
#include "cfs/repo_layout.h"

#include <gtest/gtest.h>

#include "cfs/error.h"

namespace cfs::repo_layout {
namespace {

TEST(RepoLayout, ObjectPaths) {
  auto id = Digest::from_hex(std::string(2, 'a') + std::string(62, 'b'));
  ASSERT_TRUE(id);
  const std::string path = "objects/aa/" + std::string(62, 'b');
  EXPECT_EQ(object_repo_path(*id), path);
  EXPECT_EQ(object_link_target(*id), "../" + path);
  EXPECT_EQ(digest_from_object_path(path, HashAlgorithm::sha256), id);
  EXPECT_FALSE(digest_from_object_path(path, HashAlgorithm::sha512));
  EXPECT_FALSE(
      digest_from_object_path("objectsX/aa/" + std::string(62, 'b'), HashAlgorithm::sha256));
  EXPECT_FALSE(digest_from_object_path("images/aa/" + std::string(62, 'b'), HashAlgorithm::sha256));
  EXPECT_FALSE(digest_from_object_path("objects/aa", HashAlgorithm::sha256));
  EXPECT_EQ(image_entry(*id), "images/" + id->hex());
  EXPECT_EQ(image_ref("a/b"), "images/refs/a/b");
  EXPECT_EQ(stream_entry("oci-config-x"), "streams/oci-config-x");
  EXPECT_EQ(stream_ref("x"), "streams/refs/x");
}

TEST(RepoLayout, RefNames) {
  EXPECT_THROW(validate_ref_name("a//b", "ref"), Error);
  EXPECT_THROW(validate_ref_name("../x", "ref"), Error);
  EXPECT_THROW(validate_ref_name("a/./x", "ref"), Error);
  EXPECT_THROW(validate_ref_name(".hidden", "ref"), Error);
  EXPECT_THROW(validate_ref_name("/abs", "ref"), Error);
  EXPECT_THROW(validate_ref_name("", "ref"), Error);
  EXPECT_THROW(validate_ref_name(std::string_view("a\0b", 3), "ref"), Error);
  EXPECT_THROW(validate_ref_name(std::string(256, 'x'), "ref"), Error);
  EXPECT_NO_THROW(validate_ref_name("oci/quay.io%2Ffoo:latest", "ref"));
  EXPECT_THROW(validate_entry_name("a/b", "content id"), Error);
  EXPECT_NO_THROW(validate_entry_name("oci-config-sha256:00", "content id"));
}

TEST(RepoLayout, RelativeTargets) {
  std::string hex(64, 'a');
  EXPECT_EQ(relative_symlink_target("images/refs/a/b", "images/" + hex), "../../" + hex);
  EXPECT_EQ(relative_symlink_target("images/refs/x", "images/" + hex), "../" + hex);
  EXPECT_EQ(relative_symlink_target("streams/foo", "objects/aa/bb"), "../objects/aa/bb");
}

TEST(RepoLayout, ResolvedTargets) {
  EXPECT_EQ(resolve_link_target("images/refs/a/b", "../../x"), "images/x");
  EXPECT_EQ(resolve_link_target("images/x", "../objects/aa/bb"), "objects/aa/bb");
  EXPECT_EQ(resolve_link_target("images/x", "./y/../z"), "images/z");
  EXPECT_FALSE(resolve_link_target("images/x", "../../etc"));
  EXPECT_FALSE(resolve_link_target("images/x", "/etc/passwd"));
  EXPECT_FALSE(resolve_link_target("images/x", ""));
}

}  // namespace
}  // namespace cfs::repo_layout
