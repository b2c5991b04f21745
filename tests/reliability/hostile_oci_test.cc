// Hostile OCI layers and manifests pulled into a repository. Every case must be refused with
// an error naming the problem, and leave nothing behind: no tag, stream or image named, a
// clean fsck, and nothing for gc to keep. (Basic '..', absolute, through-symlink and
// hardlink-target cases are in tests/oci HostileLayers; these are the header-level tricks.)
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <filesystem>

#include "cfs/error.h"
#include "cfs/oci/oci.h"
#include "cfs/store/fsck.h"
#include "cfs/store/gc.h"
#include "cfs/store/repository.h"
#include "layout_builder.h"
#include "testdata.h"

namespace cfs::oci {
namespace {

namespace fs = std::filesystem;
using store::Repository;
using namespace cfs::test;
using cfs::test::TempDir;  // not cfs::TempDir, which the test one extends  // the tar and layout builders

size_t files_below(const fs::path& dir) {
  size_t n = 0;
  if (!fs::exists(dir)) return 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) n += !e.is_directory();
  return n;
}

// Pulls the layout; returns the error message (empty if the pull succeeded).
std::string pull_error(Repository& repo, const std::string& layout) {
  try {
    oci::pull(repo, "oci:" + layout, "hostile", {.threads = 1});
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_nothing_left(Repository& repo) {
  EXPECT_TRUE(oci::list_images(repo).empty());
  EXPECT_EQ(files_below(repo.path() + "/streams"), 0u) << "a refused pull named a stream";
  EXPECT_EQ(files_below(repo.path() + "/images"), 0u) << "a refused pull named an image";
  store::FsckReport report = store::fsck(repo);
  EXPECT_TRUE(report.ok()) << (report.errors.empty() ? "" : report.errors[0]);
  store::collect_garbage(repo);
  EXPECT_EQ(files_below(repo.path() + "/objects"), 0u) << "gc kept objects of a refused pull";
}

struct LayerCase {
  std::string name;
  std::string tar;
  std::string error;  // expected in the message
};

std::string file(const std::string& name, const std::string& content = "data") {
  return tar_member({.name = name, .content = content});
}
std::string dir(const std::string& name) {
  return tar_member({.name = name, .type = '5', .mode = 0755});
}

std::vector<LayerCase> hostile_layers() {
  const std::string big(5000, 'b');  // an external object, stored before the failure
  return {
      {"pax-path-dotdot",
       tar_archive({dir("./etc/"), pax_member({{"path", "etc/../../../escape"}}), file("ok")}),
       "'..'"},
      {"pax-path-absolute",
       tar_archive({dir("./etc/"), pax_member({{"path", "/etc/passwd"}}), file("ok")}), "absolute"},
      {"gnu-longname-dotdot",
       tar_archive({dir("./a/"),
                    tar_member({.name = "././@LongLink",
                                .type = 'L',
                                .content = "a/" + std::string(150, 'x') + "/../../../../x"}),
                    file("short")}),
       "'..'"},
      {"gnu-longlink-hardlink-outside",
       tar_archive(
           {file("./a"),
            tar_member({.name = "././@LongLink", .type = 'K', .content = "../../../etc/shadow"}),
            tar_member({.name = "./b", .type = '1', .link = "x"})}),
       "'..'"},
      {"pax-linkpath-hardlink-absolute",
       tar_archive({file("./a"), pax_member({{"linkpath", "/etc/shadow"}}),
                    tar_member({.name = "./b", .type = '1', .link = "a"})}),
       "absolute"},
      {"write-through-replaced-parent",
       tar_archive({dir("./usr/"), file("./usr/f", big),
                    tar_member({.name = "./usr", .type = '2', .link = "/etc"}),
                    file("./usr/passwd")}),
       "goes through the symlink /usr"},
      {"hardlink-through-symlink",
       tar_archive({dir("./d/"), tar_member({.name = "./d/l", .type = '2', .link = "/etc"}),
                    tar_member({.name = "./x", .type = '1', .link = "./d/l/passwd"})}),
       "symlink"},
      {"huge-octal-size",
       tar_archive(
           {file("./big", big),
            tar_member({.name = "./huge", .content = "tiny", .size_field = "77777777777"})}),
       "truncated"},
      {"base256-size-overflow",
       tar_archive(
           {tar_member({.name = "./huge",
                        .content = "tiny",
                        .size_field = "\x80\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"})}),
       "overflows 64 bits"},
      {"base256-negative-size",
       tar_archive({tar_member(
           {.name = "./neg",
            .content = "tiny",
            .size_field = std::string("\xff\xff\xff\xff", 4) + std::string(8, '\xff')})}),
       "negative size"},
      {"pax-size-huge",
       tar_archive(
           {file("./big", big), pax_member({{"size", "18446744073709551615"}}), file("./f")}),
       "truncated"},
      {"pax-size-not-a-number", tar_archive({pax_member({{"size", "12abc"}}), file("./f")}),
       "is not a number"},
      {"pax-record-length-lies",
       tar_archive({tar_member({.name = "PaxHeaders/x", .type = 'x', .content = "999 path=x\n"}),
                    file("./f")}),
       "PAX"},
      {"extension-header-too-large",
       tar_archive({tar_member(
           {.name = "PaxHeaders/x", .type = 'x', .content = "", .size_field = "07777777777"})}),
       "extension header of"},
      {"longname-then-end",
       tar_archive({tar_member({.name = "././@LongLink", .type = 'L', .content = "name"})}),
       "end of archive right after an extension header"},
      {"bad-checksum", tar_archive({tar_member({.name = "./f", .bad_checksum = true})}),
       "checksum"},
      // Bounds enforced while parsing (issue 11).
      {"pax-xattr-over-erofs-limit",
       tar_archive({dir("./"),
                    pax_member({{"SCHILY.xattr.security.capability", std::string(70000, 'c')}}),
                    file("./f")}),
       "EROFS holds 65535"},
      {"pax-path-over-path-max",
       tar_archive({dir("./"), pax_member({{"path", std::string(5000, 'p')}}), file("./f")}),
       "at most 4096"},
      {"gnu-sparse-map-beyond-size",
       tar_archive({tar_member(
           {.name = "./s",
            .type = 'S',
            .content = "abc",
            .magic = test::kGnuMagic,
            .tail = std::string(41, '\0') + "00000000010" + std::string(1, '\0') + "00000000003" +
                    std::string(1, '\0') + std::string(138 - 41 - 24, '\0') + "00000000004"})}),
       "beyond the file size"},
      {"truncated-in-content", (file("./big", big) + file("./f")).substr(0, 3000), "truncated"},
  };
}

TEST(HostileOci, LayersAreRefusedAndLeaveNothing) {
  int n = 0;
  for (const LayerCase& c : hostile_layers()) {
    SCOPED_TRACE(c.name);
    TempDir tmp;
    test::write_layout(tmp / "layout", c.tar);
    Repository repo =
        Repository::init(tmp / "repo", {.algorithm = HashAlgorithm::sha256, .insecure = true});
    std::string error = pull_error(repo, tmp / "layout");
    EXPECT_NE(error.find(c.error), std::string::npos) << "error: " << error;
    expect_nothing_left(repo);
    ++n;
  }
  EXPECT_EQ(n, 20);
}

// Device nodes, fifos and setuid bits in a layer are data in the image, never created on
// this machine: the pull stores them and mounts nothing.
TEST(HostileOci, DeviceNodesAreStoredAsMetadataOnly) {
  TempDir tmp;
  std::string layer = tar_archive(
      {dir("./"), dir("./usr/"), dir("./dev/"),
       tar_member({.name = "./dev/mem", .type = '3', .mode = 0666, .dev_major = 1, .dev_minor = 1}),
       tar_member({.name = "./dev/sda", .type = '4', .mode = 0660, .dev_major = 8, .dev_minor = 0}),
       tar_member({.name = "./dev/fifo", .type = '6', .mode = 0600}),
       tar_member({.name = "./usr/suid", .content = "#!/bin/sh\n", .mode = 04755})});
  test::write_layout(tmp / "layout", layer);
  Repository repo =
      Repository::init(tmp / "repo", {.algorithm = HashAlgorithm::sha256, .insecure = true});
  ASSERT_EQ(pull_error(repo, tmp / "layout"), "");
  erofs::Tree tree = oci::image_tree(repo, "hostile", false);
  const erofs::Inode* mem = tree.lookup("/dev/mem");
  ASSERT_NE(mem, nullptr);
  EXPECT_EQ(mem->type(), static_cast<uint32_t>(S_IFCHR));
  EXPECT_EQ(mem->rdev, makedev(1, 1));
  const erofs::Inode* sda = tree.lookup("/dev/sda");
  ASSERT_NE(sda, nullptr);
  EXPECT_EQ(sda->type(), static_cast<uint32_t>(S_IFBLK));
  EXPECT_EQ(sda->rdev, makedev(8, 0));
  ASSERT_NE(tree.lookup("/dev/fifo"), nullptr);
  EXPECT_EQ(tree.lookup("/dev/fifo")->type(), static_cast<uint32_t>(S_IFIFO));
  EXPECT_EQ(tree.lookup("/usr/suid")->mode & 07777, 04755u);
  // Nothing but regular files, directories and symlinks exists in the repository.
  for (const auto& e : fs::recursive_directory_iterator(tmp / "repo"))
    EXPECT_TRUE(e.is_regular_file() || e.is_directory() || e.is_symlink()) << e.path();
  EXPECT_TRUE(oci::fsck_images(repo, std::nullopt).ok());
}

// Manifests and configs that lie about their blobs.
TEST(HostileOci, ManifestsWithWrongSizesAndDigestsAreRefused) {
  const std::string layer = tar_archive({dir("./"), file("./a", std::string(5000, 'a'))});
  struct ManifestCase {
    std::string name;
    test::LayoutOptions options;
    std::string error;
    bool tamper_layer = false;  // same size, other bytes, under the real digest
  };
  const std::vector<ManifestCase> cases = {
      {"layer-size-short", {.layer_size = layer.size() - 1}, "layer"},
      {"layer-size-long", {.layer_size = layer.size() + 512}, "layer"},
      {"layer-size-huge", {.layer_size = uint64_t{1} << 62}, "layer"},
      {"layer-digest-unknown", {.layer_digest = test::sha256_digest("other")}, "is missing"},
      {"layer-digest-malformed", {.layer_digest = "sha256:../../../etc/passwd"}, "sha256"},
      {"layer-bytes-tampered", {}, "layer", true},
      {"config-size-wrong", {.config_size = 10}, "config"},
      {"config-size-huge", {.config_size = uint64_t{1} << 40}, "config"},
      {"config-digest-wrong", {.config_digest = test::sha256_digest("{}")}, "is missing"},
      {"diff-id-wrong", {.diff_id = test::sha256_digest("not the layer")}, "diff"},
      // Found by fuzz_oci: JSON members of the wrong type escaped as nlohmann exceptions.
      {"manifest-is-a-number", {.manifest = "0"}, "not an image manifest"},
      {"media-type-not-a-string",
       {.manifest = R"({"mediaType":5})"},
       "'mediaType' is not a string"},
      {"layer-media-type-not-a-string",
       {.manifest = R"({"config":{"digest":"sha256:)" + std::string(64, 'a') +
                    R"(","size":2},"layers":[{"mediaType":[],"digest":"sha256:)" +
                    std::string(64, 'b') + R"(","size":1}]})"},
       "'mediaType' is not a string"},
      // Found by the one-hour fuzz_oci campaign: a config whose "os" was not a string was
      // stored, and then every `oci images` and `oci fsck` of the repository failed on it.
      {"config-os-not-a-string",
       {.config_platform = R"("architecture":"amd64","os":7)"},
       "'os' is not a string"},
      {"config-architecture-not-a-string",
       {.config_platform = R"("architecture":{},"os":"linux")"},
       "'architecture' is not a string"},
      // Nesting: a 30,000-deep config made `oci inspect` write 1.8 GB, a 1,000,000-deep one
      // overflowed the stack. Refused at the pull, before nlohmann builds the tree.
      {"manifest-nested-too-deep",
       {.manifest = std::string(30000, '[') + std::string(30000, ']')},
       "JSON nested deeper than 128 levels"},
      {"config-nested-too-deep",
       {.config_platform = R"("architecture":"amd64","os":"linux","x":)" +
                           std::string(1000000, '[') + std::string(1000000, ']')},
       "JSON nested deeper than 128 levels"},
      // Brackets inside strings are not nesting: this one is refused for its media type.
      {"brackets-in-strings-are-not-nesting",
       {.manifest = R"({"mediaType":")" + std::string(1000, '[') + R"("})"},
       "not an image manifest"},
  };
  for (const ManifestCase& c : cases) {
    SCOPED_TRACE(c.name);
    TempDir tmp;
    test::write_layout(tmp / "layout", layer, c.options);
    if (c.tamper_layer) {
      std::string tampered = layer;
      tampered[600] ^= 1;  // inside the content of ./a
      test::write_file(tmp / "layout/blobs/sha256/" + test::sha256_digest(layer).substr(7),
                       tampered);
    }
    Repository repo =
        Repository::init(tmp / "repo", {.algorithm = HashAlgorithm::sha256, .insecure = true});
    std::string error = pull_error(repo, tmp / "layout");
    EXPECT_NE(error, "");
    EXPECT_NE(error.find(c.error), std::string::npos) << "error: " << error;
    expect_nothing_left(repo);
  }
}

// Names from a layer reach error messages (stderr, syslog, journald) escaped: no terminal
// escape sequences, no line breaks that could fake a log line.
TEST(HostileOci, TarPathsInErrorsAreEscaped) {
  TempDir tmp;
  test::write_layout(tmp / "layout",
                     tar_archive({dir("./"), file("/evil\x1b[2J\ncfs: all images verified")}));
  Repository repo =
      Repository::init(tmp / "repo", {.algorithm = HashAlgorithm::sha256, .insecure = true});
  std::string error = pull_error(repo, tmp / "layout");
  EXPECT_NE(error.find("'/evil\\x1b[2J\\x0acfs: all images verified' is absolute"),
            std::string::npos)
      << error;
  EXPECT_EQ(error.find_first_of("\n\x1b"), std::string::npos) << error;
  expect_nothing_left(repo);
}

// Tags are printed in listings, JSON and logs: a new one must be UTF-8 without controls.
TEST(HostileOci, TagsMustBeUtf8WithoutControlCharacters) {
  TempDir tmp;
  test::write_layout(tmp / "layout", tar_archive({dir("./"), file("./a")}));
  Repository repo =
      Repository::init(tmp / "repo", {.algorithm = HashAlgorithm::sha256, .insecure = true});
  for (const std::string tag : {"bad\xff", "line\nbreak", "esc\x1b[0m", "c1\xc2\x9b"}) {
    SCOPED_TRACE(tag);
    try {
      oci::pull(repo, "oci:" + tmp / "layout", tag, {.threads = 1});
      ADD_FAILURE() << "pulled under a bad tag";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("is not valid UTF-8 or holds control characters"),
                std::string::npos)
          << e.what();
    }
  }
  expect_nothing_left(repo);
  oci::pull(repo, "oci:" + tmp / "layout", "good-täg", {.threads = 1});
  EXPECT_THROW(oci::tag_image(repo, "good-täg", "bad\xfe"), Error);
  EXPECT_EQ(oci::list_images(repo).size(), 1u);
}

}  // namespace
}  // namespace cfs::oci
