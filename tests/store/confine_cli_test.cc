// Repository confinement through the real cfsctl: symlinks planted in place of a repository's
// own directories are refused and nothing outside the repository is created, written or
// removed; FIFOs in place of repository files give errors instead of hangs; gc names the
// processes holding the lock and can give up; gc names an unreadable image and how to drop it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "cfs/fd.h"
#include "cfs/store/repository.h"
#include "cfs/store/splitstream.h"
#include "cfsctl_runner.h"
#include "testdata.h"

namespace cfs::store {
namespace {

namespace fs = std::filesystem;
using test::quote;
using test::TempDir;

using Result = CliResult;

// Under `timeout`: these tests look for hangs.
Result cfsctl(const std::string& args) {
  return run_cfsctl(args, 20);
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Every path below root (symlinks not followed), relative.
std::set<std::string> listing(const std::string& root) {
  std::set<std::string> out;
  for (auto& e : fs::recursive_directory_iterator(root))
    out.insert(fs::relative(e.path(), root).string());
  return out;
}

void make_source(const std::string& dir, int files) {
  fs::create_directories(dir + "/sub");
  for (int i = 0; i < files; ++i)
    test::write_file(dir + (i % 2 ? "/sub/f" : "/f") + std::to_string(i),
                     test::pattern(100 + 3000 * i, 40 + i));
}

// An insecure sha256 repository with one image named "base"; returns the image id.
std::string make_repo(const TempDir& tmp, const std::string& name) {
  make_source(tmp / (name + "-src"), 6);
  Result r = cfsctl("--repo " + quote(tmp / name) + " init --insecure --hash sha256");
  EXPECT_EQ(r.status, 0) << r.out;
  r = cfsctl("--repo " + quote(tmp / name) + " create-image " + quote(tmp / (name + "-src")) +
             " --name base");
  EXPECT_EQ(r.status, 0) << r.out;
  return test::trim(r.out);
}

std::string object_path(const std::string& hex) {
  return "objects/" + hex.substr(0, 2) + "/" + hex.substr(2);
}

TEST(RepoConfinement, GcRefusesSymlinkedRefsDirAndLeavesTheOtherTreeAlone) {
  TempDir tmp;
  make_repo(tmp, "repo");
  // Another tree full of symlinks (dangling and not), nested: the old gc took every one of
  // them for a broken ref and removed it.
  const std::string outside = tmp / "outside";
  fs::create_directories(outside + "/nested/deeper");
  fs::create_symlink("/nonexistent", outside + "/dangling");
  fs::create_symlink("../nested", outside + "/nested/deeper/up");
  fs::create_symlink("/etc/hostname", outside + "/nested/real");
  test::write_file(outside + "/file", "keep");
  const auto before = listing(outside);

  fs::rename(tmp / "repo/images/refs", tmp / "refs-moved");
  fs::create_symlink(outside, tmp / "repo/images/refs");
  Result r = cfsctl("--repo " + quote(tmp / "repo") + " gc");
  EXPECT_NE(r.status, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "images/refs")) << r.out;
  EXPECT_TRUE(contains(r.out, "is a symlink")) << r.out;
  EXPECT_EQ(listing(outside), before) << "gc touched a tree outside the repository";
  // The repository itself was not collected either.
  EXPECT_TRUE(fs::exists(tmp / "repo/images")) << r.out;
  EXPECT_FALSE(fs::is_empty(tmp / "repo/objects"));
}

TEST(RepoConfinement, GcRefusesSymlinkedObjectsOfAnotherRepository) {
  TempDir tmp;
  make_repo(tmp, "other");
  const auto other_objects = listing(tmp / "other/objects");
  ASSERT_FALSE(other_objects.empty());
  Result r = cfsctl("--repo " + quote(tmp / "repo") + " init --insecure --hash sha256");
  ASSERT_EQ(r.status, 0) << r.out;
  fs::remove(tmp / "repo/objects");
  fs::create_symlink(tmp / "other/objects", tmp / "repo/objects");

  // No ref in "repo" reaches any of them: the old gc removed every object of "other".
  r = cfsctl("--repo " + quote(tmp / "repo") + " gc");
  EXPECT_NE(r.status, 0) << r.out;
  EXPECT_TRUE(contains(r.out, tmp / "repo/objects: is a symlink")) << r.out;
  EXPECT_EQ(listing(tmp / "other/objects"), other_objects);
  r = cfsctl("--repo " + quote(tmp / "other") + " fsck");
  EXPECT_EQ(r.status, 0) << r.out;
}

TEST(RepoConfinement, CreateImageRefusesSymlinkedObjectDirAndWritesNothingOutside) {
  TempDir tmp;
  // Learn which objects/XX directories this source needs from a scratch repository.
  std::string id = make_repo(tmp, "scratch");
  std::set<std::string> fanout;
  for (auto& e : fs::directory_iterator(tmp / "scratch/objects"))
    if (e.is_directory()) fanout.insert(e.path().filename().string());
  ASSERT_FALSE(fanout.empty());

  Result r = cfsctl("--repo " + quote(tmp / "repo") + " init --insecure --hash sha256");
  ASSERT_EQ(r.status, 0) << r.out;
  const std::string outside = tmp / "outside";
  fs::create_directories(outside);
  const std::string xx = *fanout.begin();
  fs::create_symlink(outside, tmp / ("repo/objects/" + xx));

  r = cfsctl("--repo " + quote(tmp / "repo") + " create-image " + quote(tmp / "scratch-src"));
  EXPECT_NE(r.status, 0) << r.out;
  EXPECT_TRUE(contains(r.out, "objects/" + xx)) << r.out;
  EXPECT_TRUE(contains(r.out, "is a symlink")) << r.out;
  EXPECT_TRUE(fs::is_empty(outside)) << "create-image wrote outside the repository";
  EXPECT_FALSE(fs::exists(tmp / ("repo/images/" + id)));
}

TEST(RepoConfinement, ReadersRefuseASymlinkedImagesDir) {
  TempDir tmp;
  make_repo(tmp, "repo");
  fs::rename(tmp / "repo/images", tmp / "images-moved");
  fs::create_symlink(tmp / "images-moved", tmp / "repo/images");
  Result r = cfsctl("--repo " + quote(tmp / "repo") + " images");
  EXPECT_NE(r.status, 0) << r.out;
  EXPECT_TRUE(contains(r.out, tmp / "repo/images: is a symlink")) << r.out;
}

TEST(RepoConfinement, FifoInPlaceOfMetaJsonOrAnImageIsAnErrorNotAHang) {
  TempDir tmp;
  std::string id = make_repo(tmp, "repo");
  const std::string image = tmp / ("repo/" + object_path(id));
  fs::remove(image);
  ASSERT_EQ(::mkfifo(image.c_str(), 0644), 0);
  Result r = cfsctl("--repo " + quote(tmp / "repo") + " dump " + id);
  EXPECT_NE(r.status, 0) << r.out;
  EXPECT_NE(r.status, 124) << "dump hung on a FIFO";
  EXPECT_TRUE(contains(r.out, object_path(id) + ": not a regular file")) << r.out;
  EXPECT_LT(r.seconds, 10);
  r = cfsctl("--repo " + quote(tmp / "repo") + " fsck");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_LT(r.seconds, 10);

  fs::remove(tmp / "repo/meta.json");
  ASSERT_EQ(::mkfifo((tmp / "repo/meta.json").c_str(), 0644), 0);
  for (const char* command : {"images", "fsck", "gc"}) {
    r = cfsctl("--repo " + quote(tmp / "repo") + " " + command);
    EXPECT_NE(r.status, 0) << command << ": " << r.out;
    EXPECT_NE(r.status, 124) << command << " hung on a FIFO meta.json";
    EXPECT_TRUE(contains(r.out, "meta.json: not a regular file")) << command << r.out;
    EXPECT_LT(r.seconds, 10) << command;
  }
}

TEST(RepoConfinement, GcNoWaitAndTimeoutNameTheLockHolder) {
  TempDir tmp;
  make_repo(tmp, "repo");
  // What a cfs-fuse mount does for its whole life: hold the shared repository lock.
  UniqueFd held = open_file(tmp / "repo", O_RDONLY | O_DIRECTORY);
  ASSERT_EQ(::flock(held.get(), LOCK_SH), 0);
  const std::string pid = "pid " + std::to_string(::getpid());

  Result r = cfsctl("--repo " + quote(tmp / "repo") + " gc --no-wait");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_TRUE(contains(r.out, pid)) << r.out;
  EXPECT_TRUE(contains(r.out, "did not wait")) << r.out;
  EXPECT_LT(r.seconds, 10);

  r = cfsctl("--repo " + quote(tmp / "repo") + " gc --timeout 1");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "waiting for the repository lock held by " + pid)) << r.out;
  EXPECT_TRUE(contains(r.out, "gave up after waiting 1 s")) << r.out;
  EXPECT_GE(r.seconds, 0.9);
  EXPECT_LT(r.seconds, 10);

  // Released: the same command collects.
  held.reset();
  r = cfsctl("--repo " + quote(tmp / "repo") + " gc --no-wait");
  EXPECT_EQ(r.status, 0) << r.out;
}

TEST(RepoConfinement, GcNamesAnUnreadableImageAndTheCommandThatDropsIt) {
  TempDir tmp;
  std::string id = make_repo(tmp, "repo");
  // Break the superblock: the strict reader refuses the image (an insecure repository does not
  // re-hash objects on open).
  const std::string image = tmp / ("repo/" + object_path(id));
  {
    UniqueFd fd = open_file(image, O_WRONLY);
    ASSERT_EQ(::pwrite(fd.get(), "XXXXXXXX", 8, 1024), 8);
  }
  Result r = cfsctl("--repo " + quote(tmp / "repo") + " gc");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_TRUE(contains(r.out, tmp / ("repo/images/" + id) + ": the strict image reader refuses"))
      << r.out;
  EXPECT_TRUE(contains(r.out, "kept alive by " + tmp / "repo/images/refs/base")) << r.out;
  EXPECT_TRUE(contains(r.out, "rm " + tmp / "repo/images/refs/base")) << r.out;
  EXPECT_TRUE(contains(r.out, "gc removed nothing")) << r.out;
  // An image kept alive by an OCI tag (a config stream's named ref): the hint is oci untag.
  {
    Repository lib = Repository::open(tmp / "repo");
    SplitStreamWriter w(lib.algorithm(), kContentOciConfig);
    w.write_inline(std::string_view("{}"));
    w.add_named_ref("composefs.image", *Digest::from_hex(id));
    lib.write_stream(w, "oci-config-sha256:00", "oci/mytag");
  }
  fs::remove(tmp / "repo/images/refs/base");
  r = cfsctl("--repo " + quote(tmp / "repo") + " gc");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_TRUE(contains(r.out, "kept alive by " + tmp / "repo/streams/refs/oci/mytag")) << r.out;
  EXPECT_TRUE(contains(r.out, "oci untag TAG")) << r.out;
  // Following the advice lets gc proceed.
  fs::remove(tmp / "repo/streams/refs/oci/mytag");
  r = cfsctl("--repo " + quote(tmp / "repo") + " gc");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_FALSE(fs::exists(tmp / ("repo/images/" + id)));
}

}  // namespace
}  // namespace cfs::store
