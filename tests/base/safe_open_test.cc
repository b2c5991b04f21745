// cfs/safe_open.h: paths are resolved beneath a directory fd, never through a symlink, with
// openat2 and with the O_NOFOLLOW walk used where the kernel lacks openat2.
#include "cfs/safe_open.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include "cfs/error.h"
#include "testdata.h"

namespace cfs {
namespace {

namespace fs = std::filesystem;

class SafeOpenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(tmp / "root/dir/sub");
    fs::create_directories(tmp / "outside");
    test::write_file(tmp / "root/dir/file", "inside");
    test::write_file(tmp / "outside/file", "outside");
    fs::create_symlink(tmp / "outside", tmp / "root/link");  // absolute, leaves root
    fs::create_symlink("dir", tmp / "root/rel");             // relative, stays inside
    fs::create_symlink("file", tmp / "root/dir/filelink");   // final component
    root = open_file(tmp / "root", O_RDONLY | O_DIRECTORY);
  }

  std::string read(UniqueFd fd) { return read_fd(fd.get(), "test"); }

  test::TempDir tmp;
  UniqueFd root;
};

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST_F(SafeOpenTest, OpensPlainPathsBothWays) {
  EXPECT_EQ(read(open_beneath(root.get(), "dir/file", O_RDONLY, 0, "f")), "inside");
  EXPECT_EQ(read(open_beneath_walk(root.get(), "dir/file", O_RDONLY, 0, "f")), "inside");
  EXPECT_EQ(read(open_regular_beneath(root.get(), "./dir//file", O_RDONLY, "f")), "inside");
  EXPECT_TRUE(open_dir_beneath(root.get(), "dir/sub", "d"));
  EXPECT_FALSE(open_beneath_if_exists(root.get(), "dir/none", O_RDONLY, "n"));
}

TEST_F(SafeOpenTest, RefusesEverySymlinkAndNamesIt) {
  for (bool walk : {false, true}) {
    SCOPED_TRACE(walk ? "O_NOFOLLOW walk" : "openat2");
    auto open = [&](const std::string& rel, int flags) {
      return walk ? open_beneath_walk(root.get(), rel, flags, 0, "W")
                  : open_beneath(root.get(), rel, flags, 0, "W");
    };
    // Through a directory symlink leaving the root, through one staying inside, and as the
    // final component: all refused, each naming the symlink.
    EXPECT_NE(error_of([&] { open("link/file", O_RDONLY); }).find("W: link is a symlink"),
              std::string::npos);
    EXPECT_NE(error_of([&] { open("rel/file", O_RDONLY); }).find("W: rel is a symlink"),
              std::string::npos);
    EXPECT_NE(error_of([&] { open("dir/filelink", O_RDONLY); }).find("dir/filelink is a symlink"),
              std::string::npos);
    EXPECT_NE(error_of([&] { open("link", O_PATH | O_DIRECTORY); }).find("link is a symlink"),
              std::string::npos);
    EXPECT_NE(error_of([&] { open("dir/../dir/file", O_RDONLY); }).find("'..'"), std::string::npos);
    EXPECT_NE(error_of([&] { open("/etc/hostname", O_RDONLY); }).find("absolute"),
              std::string::npos);
    // Creating through a symlinked directory writes nothing outside.
    EXPECT_FALSE(error_of([&] { open("link/new", O_WRONLY | O_CREAT | O_EXCL); }).empty());
    EXPECT_FALSE(fs::exists(tmp / "outside/new"));
  }
}

TEST_F(SafeOpenTest, DirectoryHelpersNeverCreateOrRemoveOutside) {
  EXPECT_NE(error_of([&] {
              mkdir_beneath(root.get(), "link/made", 0755, "M");
            }).find("M: link is a symlink"),
            std::string::npos);
  EXPECT_NE(error_of([&] { mkdir_beneath(root.get(), "link", 0755, "M"); }).find("is a symlink"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              mkdirs_beneath(root.get(), "link/a/b", 0755, "M");
            }).find("M: link is a symlink"),
            std::string::npos);
  EXPECT_FALSE(fs::exists(tmp / "outside/made"));
  EXPECT_FALSE(fs::exists(tmp / "outside/a"));
  EXPECT_TRUE(mkdir_beneath(root.get(), "dir/new", 0755, "M"));
  EXPECT_FALSE(mkdir_beneath(root.get(), "dir/new", 0755, "M"));
  EXPECT_TRUE(mkdirs_beneath(root.get(), "dir/x/y/z", 0700, "M"));
  EXPECT_TRUE(fs::is_directory(tmp / "root/dir/x/y/z"));

  EXPECT_FALSE(error_of([&] { unlink_beneath(root.get(), "link/file", 0, "U"); }).empty());
  EXPECT_TRUE(fs::exists(tmp / "outside/file"));
  EXPECT_TRUE(unlink_beneath(root.get(), "link", 0, "U"));  // the symlink itself may go
  EXPECT_TRUE(fs::exists(tmp / "outside/file"));
  EXPECT_FALSE(unlink_beneath(root.get(), "dir/none", 0, "U"));

  EXPECT_NE(error_of([&] { lstat_beneath(root.get(), "rel/file", "S"); }).find("rel is a symlink"),
            std::string::npos);
  EXPECT_EQ(lstat_beneath(root.get(), "dir/none/x", "S"), std::nullopt);
  auto st = lstat_beneath(root.get(), "dir/filelink", "S");
  ASSERT_TRUE(st);
  EXPECT_TRUE(S_ISLNK(st->st_mode));
  EXPECT_EQ(readlink_beneath(root.get(), "dir/filelink", "R"), "file");
  EXPECT_EQ(readlink_beneath(root.get(), "dir/file", "R"), std::nullopt);
}

TEST_F(SafeOpenTest, FifoIsRefusedAtOnceNotWaitedFor) {
  ASSERT_EQ(::mkfifo((tmp / "root/dir/fifo").c_str(), 0644), 0);
  auto start = std::chrono::steady_clock::now();
  std::string error =
      error_of([&] { open_regular_beneath(root.get(), "dir/fifo", O_RDONLY, "F"); });
  EXPECT_EQ(error, "F: not a regular file");
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  // The descriptor of a regular file comes back blocking.
  UniqueFd fd = open_regular_beneath(root.get(), "dir/file", O_RDONLY, "F");
  EXPECT_EQ(::fcntl(fd.get(), F_GETFL) & O_NONBLOCK, 0);
}

}  // namespace
}  // namespace cfs
