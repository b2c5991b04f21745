// scan_directory against real directories: what the Tree records for every file type, how
// hardlinks and the inline limit are handled, and what the options filter out.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "cfs/erofs/scan.h"
#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/fsverity.h"
#include "testdata.h"

namespace {

using cfs::erofs::Inode;
using cfs::erofs::ScanOptions;
using cfs::erofs::Tree;
using cfs::test::TempDir;

void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  f << data;
  ASSERT_TRUE(f.good()) << path;
}

// Records every sink call and answers with the real fs-verity digest.
struct RecordingSink {
  std::map<std::string, uint64_t> calls;  // path -> size
  cfs::erofs::ObjectSink sink() {
    return [this](int fd, uint64_t size, const std::string& path) {
      calls[path] = size;
      return cfs::fsverity_digest_fd(fd, cfs::HashAlgorithm::sha256, path);
    };
  }
};

class ScanTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_ / "root";
    std::filesystem::create_directories(root_ + "/dir/sub");
    write_file(root_ + "/small", "0123456789");
    write_file(root_ + "/limit", std::string(64, 'L'));
    write_file(root_ + "/over", std::string(65, 'O'));
    write_file(root_ + "/empty", "");
    write_file(root_ + "/dir/linked", std::string(4096 * 3 + 1, 'H'));
    ASSERT_EQ(::link((root_ + "/dir/linked").c_str(), (root_ + "/link1").c_str()), 0);
    ASSERT_EQ(::link((root_ + "/dir/linked").c_str(), (root_ + "/dir/sub/link2").c_str()), 0);
    // A link outside the scanned tree does not count towards nlink.
    ASSERT_EQ(::link((root_ + "/dir/linked").c_str(), (tmp_ / "outside").c_str()), 0);
    ASSERT_EQ(::symlink("dir/../small", (root_ + "/symlink").c_str()), 0);
    ASSERT_EQ(::mkfifo((root_ + "/fifo").c_str(), 0640), 0);
    ASSERT_EQ(::setxattr((root_ + "/small").c_str(), "user.a", "1", 1, 0), 0);
    ASSERT_EQ(::setxattr((root_ + "/dir").c_str(), "user.b", "\0\x01", 2, 0), 0);
    is_root_ = ::geteuid() == 0;
    if (is_root_) {
      ASSERT_EQ(::mknod((root_ + "/blk").c_str(), S_IFBLK | 0600, makedev(8, 1)), 0);
      ASSERT_EQ(::mknod((root_ + "/chr").c_str(), S_IFCHR | 0666, makedev(1, 5)), 0);
      ASSERT_EQ(::setxattr((root_ + "/small").c_str(), "trusted.t", "x", 1, 0), 0);
    }
    // Fixed, distinct mtimes with nanoseconds.
    struct timespec times[2] = {{0, UTIME_OMIT}, {1700000000, 123456789}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (root_ + "/small").c_str(), times, 0), 0);
  }

  Tree scan(const ScanOptions& options = {}) {
    return cfs::erofs::scan_directory(root_, options, sink_.sink());
  }

  TempDir tmp_;
  std::string root_;
  bool is_root_ = false;
  RecordingSink sink_;
};

TEST_F(ScanTest, RecordsMetadataOfEveryType) {
  Tree tree = scan();
  struct stat st;
  ASSERT_EQ(::lstat(root_.c_str(), &st), 0);
  EXPECT_EQ(tree.root->mode, st.st_mode);
  EXPECT_EQ(tree.root->mtime_sec, static_cast<uint64_t>(st.st_mtim.tv_sec));

  const Inode* small = tree.lookup("/small");
  ASSERT_NE(small, nullptr);
  EXPECT_EQ(small->mode, S_IFREG | 0644u);
  EXPECT_EQ(small->mtime_sec, 1700000000u);
  EXPECT_EQ(small->mtime_nsec, 123456789u);
  EXPECT_EQ(small->size, 10u);
  EXPECT_EQ(small->content, "0123456789");
  EXPECT_TRUE(small->payload.empty());
  EXPECT_FALSE(small->digest);
  ASSERT_NE(small->find_xattr("user.a"), nullptr);
  EXPECT_EQ(small->find_xattr("user.a")->value, "1");
  EXPECT_EQ(tree.lookup("/dir")->find_xattr("user.b")->value, std::string("\0\x01", 2));

  const Inode* symlink = tree.lookup("/symlink");
  ASSERT_NE(symlink, nullptr);
  EXPECT_TRUE(symlink->is_symlink());
  EXPECT_EQ(symlink->payload, "dir/../small");
  EXPECT_EQ(symlink->size, 12u);

  EXPECT_EQ(tree.lookup("/fifo")->mode, S_IFIFO | 0640u);
  const Inode* empty = tree.lookup("/empty");
  EXPECT_EQ(empty->size, 0u);
  EXPECT_FALSE(empty->content);
  EXPECT_TRUE(empty->payload.empty());
  EXPECT_FALSE(empty->is_external());

  if (is_root_) {
    EXPECT_EQ(tree.lookup("/blk")->rdev, makedev(8, 1));
    EXPECT_EQ(tree.lookup("/chr")->rdev, makedev(1, 5));
    EXPECT_EQ(tree.lookup("/small")->find_xattr("trusted.t")->value, "x");
  }
  // Children are sorted and never include . or ..
  const auto& children = tree.root->children;
  EXPECT_TRUE(std::is_sorted(children.begin(), children.end(),
                             [](const auto& a, const auto& b) { return a.name < b.name; }));
}

TEST_F(ScanTest, LargeFilesGoToTheSinkOncePerInode) {
  Tree tree = scan();
  // 64 bytes is still inline; the hardlinked file is hashed once, under its first path.
  EXPECT_EQ(tree.lookup("/limit")->content, std::string(64, 'L'));
  EXPECT_EQ(sink_.calls.size(), 2u);
  EXPECT_EQ(sink_.calls.at(root_ + "/over"), 65u);
  EXPECT_EQ(sink_.calls.at(root_ + "/dir/linked"), 4096u * 3 + 1);

  const Inode* over = tree.lookup("/over");
  cfs::Digest digest = cfs::fsverity_digest(std::string(65, 'O'));
  EXPECT_FALSE(over->content);
  EXPECT_EQ(over->digest, digest);
  EXPECT_EQ(over->payload, digest.object_path());
  EXPECT_TRUE(over->is_external());
}

TEST_F(ScanTest, HardlinksShareOneInodeCountingLinksInsideTheTree) {
  Tree tree = scan();
  const Inode* a = tree.lookup("/dir/linked");
  EXPECT_EQ(a, tree.lookup("/link1"));
  EXPECT_EQ(a, tree.lookup("/dir/sub/link2"));
  EXPECT_EQ(a->nlink, 3u);  // the fourth link is outside the tree
  EXPECT_EQ(tree.lookup("/small")->nlink, 1u);

  ScanOptions separate;
  separate.detect_hardlinks = false;
  sink_.calls.clear();
  Tree flat = scan(separate);
  EXPECT_NE(flat.lookup("/dir/linked"), flat.lookup("/link1"));
  EXPECT_EQ(flat.lookup("/link1")->nlink, 1u);
  EXPECT_EQ(flat.lookup("/link1")->digest, a->digest);
  EXPECT_EQ(sink_.calls.size(), 4u);
}

TEST_F(ScanTest, OptionsFilter) {
  ScanOptions o;
  o.use_epoch = true;
  o.skip_devices = true;
  o.user_xattrs_only = true;
  o.inline_max = 0;
  Tree tree = scan(o);
  cfs::erofs::walk(tree, [](const cfs::erofs::WalkEntry& e) {
    EXPECT_EQ(e.inode.mtime_sec, 0u) << e.path;
    EXPECT_EQ(e.inode.mtime_nsec, 0u) << e.path;
    EXPECT_FALSE(e.inode.is_device()) << e.path;
    for (const auto& x : e.inode.xattrs) EXPECT_TRUE(x.name.starts_with("user.")) << e.path;
    if (e.inode.is_reg()) {
      EXPECT_FALSE(e.inode.content) << e.path;
    }
  });
  EXPECT_NE(tree.lookup("/small")->find_xattr("user.a"), nullptr);
  EXPECT_EQ(tree.lookup("/blk"), nullptr);
  EXPECT_TRUE(tree.lookup("/small")->is_external());

  o = {};
  o.skip_xattrs = true;
  tree = scan(o);
  cfs::erofs::walk(
      tree, [](const cfs::erofs::WalkEntry& e) { EXPECT_TRUE(e.inode.xattrs.empty()) << e.path; });

  o.user_xattrs_only = true;
  EXPECT_THROW(scan(o), cfs::Error);
}

TEST_F(ScanTest, ErrorsNameThePath) {
  try {
    cfs::erofs::scan_directory(root_ + "/missing", {}, sink_.sink());
    FAIL() << "no error";
  } catch (const cfs::Error& e) {
    EXPECT_NE(std::string(e.what()).find(root_ + "/missing"), std::string::npos) << e.what();
  }
  try {
    cfs::erofs::scan_directory(root_ + "/small", {}, sink_.sink());
    FAIL() << "no error";
  } catch (const cfs::Error& e) {
    EXPECT_NE(std::string(e.what()).find("small"), std::string::npos) << e.what();
  }
  // A failing sink aborts the scan with its own error.
  auto failing = [](int, uint64_t, const std::string& path) -> cfs::Digest {
    throw cfs::Error(path + ": store full");
  };
  EXPECT_THROW(cfs::erofs::scan_directory(root_, {}, failing), cfs::Error);
}

std::string scan_error(const std::string& dir, const ScanOptions& options = {}) {
  try {
    cfs::erofs::scan_directory(dir, options, [](int, uint64_t, const std::string&) {
      return cfs::Digest(cfs::HashAlgorithm::sha256, {});
    });
  } catch (const cfs::Error& e) {
    return e.what();
  }
  return "";
}

TEST(ScanLimits, DirectoriesDeeperThanTheImageLimitAreAClearError) {
  // The scanner keeps one open directory per level: allow that many descriptors.
  struct rlimit limit {};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &limit), 0);
  if (limit.rlim_max < 4096) GTEST_SKIP() << "needs 4096 file descriptors";
  struct rlimit raised = {limit.rlim_max, limit.rlim_max};
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &raised), 0);

  TempDir tmp;
  std::string top = tmp / "deep";
  ASSERT_EQ(::mkdir(top.c_str(), 0755), 0);
  auto nest = [&](int levels) {
    cfs::UniqueFd dir = cfs::open_file(top, O_RDONLY | O_DIRECTORY);
    for (int i = 0; i < levels; i++) {
      if (::mkdirat(dir.get(), "d", 0755) != 0 && errno != EEXIST) return false;
      dir = cfs::open_at(dir.get(), "d", O_RDONLY | O_DIRECTORY);
    }
    return true;
  };
  ASSERT_TRUE(nest(cfs::erofs::kMaxDirDepth));
  EXPECT_EQ(scan_error(top), "");
  ASSERT_TRUE(nest(cfs::erofs::kMaxDirDepth + 1));
  EXPECT_NE(scan_error(top).find("nested deeper than 2048 levels"), std::string::npos)
      << scan_error(top);
  ::setrlimit(RLIMIT_NOFILE, &limit);
}

TEST(ScanLimits, SymlinksAndOverlayXattrNamesBeyondTheLimits) {
  TempDir tmp;
  std::string top = tmp / "t";
  ASSERT_EQ(::mkdir(top.c_str(), 0755), 0);
  ASSERT_EQ(::symlink(std::string(2000, 'x').c_str(), (top + "/long").c_str()), 0);
  // cfs's own commands: 1024 bytes; the mkcomposefs drop-in keeps C's 4095.
  EXPECT_NE(scan_error(top).find("longer than the 1024-byte limit"), std::string::npos)
      << scan_error(top);
  EXPECT_EQ(scan_error(top, {.max_symlink = cfs::erofs::kSymlinkMaxCompat}), "");
  ASSERT_EQ(::unlink((top + "/long").c_str()), 0);

  if (::geteuid() != 0) GTEST_SKIP() << "trusted.* xattrs need root";
  write_file(top + "/f", "");
  std::string name = "trusted.overlay." + std::string(250 - 16, 'k');
  if (::setxattr((top + "/f").c_str(), name.c_str(), "v", 1, 0) != 0)
    GTEST_SKIP() << "no trusted xattrs here";
  EXPECT_NE(scan_error(top).find("longer than 247 bytes"), std::string::npos) << scan_error(top);
}

}  // namespace
