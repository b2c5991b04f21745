// kmount's object lookup before a mount: which objects an image names are in no object
// directory. Listing a directory and looking names up one by one must agree.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "object_lookup.h"

namespace fs = std::filesystem;
using cfs::UniqueFd;
using cfs::kmount::detail::missing_objects;

namespace {

class ObjectLookup : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cfs-object-lookup-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { fs::remove_all(root_); }

  static std::string name(int i) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%062d", i);
    return buf;
  }
  void touch(const fs::path& p) {
    fs::create_directories(p.parent_path());
    std::ofstream(p).put('x');
  }
  UniqueFd open_dir(const fs::path& p) {
    fs::create_directories(p);
    return UniqueFd(::open(p.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  }
  std::vector<std::string_view> views(const std::vector<std::string>& refs) {
    return {refs.begin(), refs.end()};
  }

  fs::path root_;
};

TEST_F(ObjectLookup, ListedAndLookedUpDirectoriesAgree) {
  // "ab" holds enough of the image's objects to be listed; "cd" few enough to be looked up.
  std::vector<std::string> refs;
  for (int i = 0; i < 300; i++) {
    refs.push_back("ab/" + name(i));
    if (i % 7 != 0) touch(root_ / "objects/ab" / name(i));
  }
  for (int i = 0; i < 4; i++) {
    refs.push_back("cd/" + name(i));
    if (i != 2) touch(root_ / "objects/cd" / name(i));
  }
  refs.push_back("ef/" + name(1));  // a fan-out directory that does not exist
  refs.push_back("ab/" + name(0));  // a repeat of a missing object is reported again
  std::vector<UniqueFd> dirs;
  dirs.push_back(open_dir(root_ / "objects"));
  std::vector<std::string_view> missing = missing_objects(dirs, views(refs));

  std::vector<std::string> want;
  for (int i = 0; i < 300; i += 7) want.push_back("ab/" + name(i));
  want.push_back("cd/" + name(2));
  want.push_back("ef/" + name(1));
  want.push_back("ab/" + name(0));
  EXPECT_EQ(std::vector<std::string>(missing.begin(), missing.end()), want);
}

TEST_F(ObjectLookup, SymlinksDirectoriesAndFifosAreNotObjects) {
  std::vector<std::string> refs;
  for (int i = 0; i < 20; i++) {
    refs.push_back("ab/" + name(i));
    fs::path p = root_ / "objects/ab" / name(i);
    fs::create_directories(p.parent_path());
    if (i == 3) {
      fs::create_symlink(root_ / "elsewhere", p);
      touch(root_ / "elsewhere");
    } else if (i == 4) {
      fs::create_directory(p);
    } else if (i == 5) {
      ASSERT_EQ(::mkfifo(p.c_str(), 0600), 0);
    } else {
      touch(p);
    }
  }
  std::vector<UniqueFd> dirs;
  dirs.push_back(open_dir(root_ / "objects"));
  std::vector<std::string_view> missing = missing_objects(dirs, views(refs));
  EXPECT_EQ(std::vector<std::string>(missing.begin(), missing.end()),
            (std::vector<std::string>{"ab/" + name(3), "ab/" + name(4), "ab/" + name(5)}));
}

TEST_F(ObjectLookup, ALargeDirectoryIsNotReadWholeForAFewNames) {
  // 3000 entries, 10 sought, the last ones created last: the listing gives up early and the
  // remaining names are looked up one by one; the answer is the same.
  for (int i = 0; i < 3000; i++) touch(root_ / "objects/ab" / name(i));
  std::vector<std::string> refs;
  for (int i = 2990; i < 3000; i++) refs.push_back("ab/" + name(i));
  refs.push_back("ab/" + name(5000));
  std::vector<UniqueFd> dirs;
  dirs.push_back(open_dir(root_ / "objects"));
  std::vector<std::string_view> missing = missing_objects(dirs, views(refs));
  EXPECT_EQ(std::vector<std::string>(missing.begin(), missing.end()),
            std::vector<std::string>{"ab/" + name(5000)});
}

TEST_F(ObjectLookup, EveryObjectDirectoryIsSearchedAndAnyRelativePathWorks) {
  // C images redirect to any relative path: nested directories and top-level names too.
  touch(root_ / "first/ab" / name(1));
  touch(root_ / "second/ab" / name(2));
  touch(root_ / "second/x/y/z");
  touch(root_ / "first/top");
  std::vector<std::string> refs = {"ab/" + name(1), "ab/" + name(2), "ab/" + name(3),
                                   "x/y/z",         "top",           "nowhere"};
  std::vector<UniqueFd> dirs;
  dirs.push_back(open_dir(root_ / "first"));
  dirs.push_back(open_dir(root_ / "second"));
  std::vector<std::string_view> missing = missing_objects(dirs, views(refs));
  EXPECT_EQ(std::vector<std::string>(missing.begin(), missing.end()),
            (std::vector<std::string>{"ab/" + name(3), "nowhere"}));
  // No object directory at all: everything is missing.
  EXPECT_EQ(missing_objects({}, views(refs)).size(), refs.size());
}

}  // namespace
