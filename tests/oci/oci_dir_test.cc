// The directory commands take the transforms of a pull: for every test OCI layout, the root
// extracted from its layers by libarchive gives, through cfsctl compute-id / create-image /
// create-dumpfile / compute-karg, exactly the image the pull of the layout stores (plain and
// bootable, sha256 and sha512 repositories).
#include <gtest/gtest.h>

#include <filesystem>

#include "cfs/erofs/dumpfile.h"
#include "cfs/oci/boot.h"
#include "cfs/oci/oci.h"
#include "cfs/store/repository.h"
#include "layout_extract.h"
#include "oci_fixture.h"
#include "testdata.h"

namespace cfs::test::oci {
namespace {

namespace fs = std::filesystem;
namespace so = cfs::oci;
using store::Repository;

const std::string kCfsctl = std::string(CFS_BINDIR) + "/cfsctl";

std::string cfsctl(const std::string& args) {
  std::string out;
  int status = run(kCfsctl + " " + args + " 2>&1", &out);
  if (status != 0) ADD_FAILURE() << "cfsctl " << args << " exited " << status << ": " << out;
  return status == 0 ? trim(out) : std::string();
}

TEST(OciDirectory, ExtractedRootGivesThePulledImage) {
  if (::geteuid() != 0) GTEST_SKIP() << "extracting layers keeps owners and devices: needs root";
  TempDir tmp;
  std::vector<TestLayout> layouts = build_test_layouts(tmp.path());
  for (HashAlgorithm alg : {HashAlgorithm::sha256, HashAlgorithm::sha512}) {
    std::string hash(algorithm_name(alg));
    std::string repo_path = tmp.path() + "/repo-" + hash;
    store::InitOptions init;
    init.insecure = true;
    init.algorithm = alg;
    Repository repo = Repository::init(repo_path, init);
    for (const TestLayout& l : layouts) {
      SCOPED_TRACE(l.name + " " + hash);
      so::PullOptions options;
      options.bootable = true;
      so::pull(repo, "oci:" + l.dir + ":" + l.ref, l.name, options);
      std::string root = tmp.path() + "/root-" + l.name;
      if (!fs::exists(root)) {
        fs::create_directory(root);
        extract_image(l.dir, l.ref, root);
      }
      for (bool bootable : {false, true}) {
        SCOPED_TRACE(bootable ? "bootable" : "plain");
        std::string flags = "--hash " + hash + (bootable ? " --bootable " : " ");
        std::string pulled = so::image_id(repo, l.name, bootable).hex();
        EXPECT_EQ(cfsctl("compute-id " + flags + quote(root)), pulled);
        std::string dump = erofs::dumpfile_to_string(so::image_tree(repo, l.name, bootable));
        std::string out;
        ASSERT_EQ(run(kCfsctl + " create-dumpfile " + flags + quote(root), &out), 0) << out;
        EXPECT_EQ(out, dump);
        // create-image stores the same image (named, so it differs from the pull's only by
        // its ref).
        EXPECT_EQ(cfsctl("--repo " + quote(repo_path) + " create-image " +
                         (bootable ? "--bootable " : "") + quote(root) + " d-" + l.name +
                         (bootable ? "-boot" : "")),
                  pulled);
      }
      EXPECT_EQ(cfsctl("compute-karg --hash " + hash + " " + quote(root)),
                so::composefs_kernel_argument(so::image_id(repo, l.name, true), false));
      // With --repo the repository's algorithm is the default.
      EXPECT_EQ(cfsctl("--repo " + quote(repo_path) + " compute-id " + quote(root)),
                so::image_id(repo, l.name, false).hex());
    }
  }
}

// What each transform does, on the layout built for them: seen in the dumpfile of the root.
TEST(OciDirectory, TransformsOfTheRootDirectory) {
  if (::geteuid() != 0) GTEST_SKIP() << "extracting layers keeps owners and devices: needs root";
  TempDir tmp;
  TestLayout l = build_transform_layout(tmp.path());
  std::string root = tmp.path() + "/root";
  fs::create_directory(root);
  extract_image(l.dir, l.ref, root);
  std::string out;
  ASSERT_EQ(run(kCfsctl + " create-dumpfile --hash sha256 " + quote(root), &out), 0) << out;
  erofs::Tree t = erofs::parse_dumpfile(out, "create-dumpfile");
  // The root takes /usr's metadata, nanoseconds and xattrs included (then filtered).
  EXPECT_EQ(t.root->mode, 040755u);
  EXPECT_EQ(t.root->uid, 0u);
  EXPECT_EQ(t.root->mtime_sec, 1700000000);
  EXPECT_EQ(t.root->mtime_nsec, 123456789u);
  EXPECT_TRUE(t.root->xattrs.empty());
  // /run is emptied and takes /usr's mtime; the hardlink's other name keeps nlink 1.
  ASSERT_NE(t.lookup("/run"), nullptr);
  EXPECT_TRUE(t.lookup("/run")->children.empty());
  EXPECT_EQ(t.lookup("/run")->mtime_nsec, 123456789u);
  EXPECT_EQ(t.lookup("/etc/also-shared")->nlink, 1u);
  // Only security.capability survives the allowlist.
  const erofs::Inode* tool = t.lookup("/usr/bin/tool");
  ASSERT_EQ(tool->xattrs.size(), 1u);
  EXPECT_EQ(tool->xattrs[0].name, "security.capability");
  // keep-user-xattrs also keeps user.*; the plain scan keeps the root's own metadata.
  ASSERT_EQ(run(kCfsctl + " create-dumpfile --xattrs keep-user-xattrs " + quote(root), &out), 0);
  EXPECT_EQ(erofs::parse_dumpfile(out, "keep").lookup("/usr/bin/tool")->xattrs.size(), 2u);
  ASSERT_EQ(run(kCfsctl + " create-dumpfile --no-propagate-usr-to-root " + quote(root), &out), 0);
  erofs::Tree plain = erofs::parse_dumpfile(out, "plain");
  EXPECT_EQ(plain.root->mode, 040711u);
  EXPECT_EQ(plain.root->uid, 7u);
  EXPECT_FALSE(plain.lookup("/run")->children.empty());
  // --bootable: /boot and /sysroot emptied, their seconds from /usr, their nanoseconds kept.
  ASSERT_EQ(run(kCfsctl + " create-dumpfile --bootable " + quote(root), &out), 0);
  erofs::Tree boot = erofs::parse_dumpfile(out, "boot");
  EXPECT_TRUE(boot.lookup("/boot")->children.empty());
  EXPECT_EQ(boot.lookup("/boot")->mtime_sec, 1700000000);
  EXPECT_EQ(boot.lookup("/boot")->mtime_nsec, 987654321u);
  EXPECT_TRUE(boot.lookup("/sysroot")->children.empty());
  // The karg names the bootable image in the chosen hash.
  std::string karg = cfsctl("compute-karg --hash sha256 --insecure " + quote(root));
  EXPECT_EQ(karg, "composefs.digest=?v1-sha256-12:" +
                      cfsctl("compute-id --hash sha256 --bootable " + quote(root)));
  EXPECT_TRUE(cfsctl("compute-karg " + quote(root)).starts_with("composefs.digest=v1-sha512-12:"));
}

}  // namespace
}  // namespace cfs::test::oci
