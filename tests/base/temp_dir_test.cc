// cfs/temp_dir.h: one owner per temporary directory, and the tree goes with it.
#include "cfs/temp_dir.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>

#include "cfs/error.h"
#include "testdata.h"

namespace cfs {
namespace {

namespace fs = std::filesystem;

TEST(TempDir, PrivateAndRemovedWithItsContents) {
  test::TempDir parent;
  std::string path;
  {
    TempDir dir(parent.path(), "unit-");
    path = dir.path();
    EXPECT_TRUE(path.starts_with(parent.path() + "/unit-")) << path;
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_TRUE(S_ISDIR(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    fs::create_directories(dir / "a/b");
    test::write_file(dir / "a/b/f", "x");
  }
  EXPECT_FALSE(fs::exists(path));
}

// A symlink inside names something else: only the link goes.
TEST(TempDir, RemovalDoesNotFollowSymlinks) {
  test::TempDir parent;
  fs::create_directory(parent / "keep");
  test::write_file(parent / "keep/f", "x");
  {
    TempDir dir(parent.path(), "unit-");
    fs::create_directory_symlink(parent / "keep", dir / "link");
  }
  EXPECT_TRUE(fs::exists(parent / "keep/f"));
}

TEST(TempDir, MoveAndRelease) {
  test::TempDir parent;
  TempDir a(parent.path(), "a-");
  const std::string path = a.path();
  TempDir b = std::move(a);
  EXPECT_EQ(b.path(), path);
  EXPECT_TRUE(a.path().empty());
  EXPECT_EQ(b.release(), path);
  b.remove();
  EXPECT_TRUE(fs::exists(path));
  fs::remove(path);
}

TEST(TempDir, MissingParentIsAnError) {
  test::TempDir parent;
  EXPECT_THROW(TempDir(parent / "missing", "x-"), SystemError);
}

}  // namespace
}  // namespace cfs
