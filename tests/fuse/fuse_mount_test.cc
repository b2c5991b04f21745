// cfs-fuse mounted for real: every reference vector walked through FUSE equals the reader's
// to_tree(); a tree with real objects walked through FUSE equals the kernel's overlay+EROFS
// mount of the same image; directory offsets survive seeks.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <sys/statvfs.h>

#include <filesystem>
#include <random>
#include <set>

#include "cfs/erofs/dumpfile.h"
#include "cfs/erofs/reader.h"
#include "cfs/erofs/writer.h"
#include "cfs/fd.h"
#include "cfs/fsverity.h"
#include "cfs/store/repository.h"
#include "fuse_helpers.h"
#include "testdata.h"

namespace cfs::test {
namespace {

void require_fuse() {
  if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/fuse is not usable here";
}

erofs::Tree parse_vector(const VectorRow& row) {
  erofs::DumpfileParseOptions options;
  options.strict = row.strict;
  options.max_symlink = erofs::kSymlinkMaxCompat;
  return erofs::parse_dumpfile(read_vector(row.asset), row.asset, options);
}

TEST(FuseMount, EveryVectorMatchesTheReadersTree) {
  require_fuse();
  for (const auto& row : load_vectors()) {
    SCOPED_TRACE(row.asset);
    TempDir dir;
    std::string image = dir / "image.cfs";
    write_image_file(parse_vector(row), image, row.min_version, row.max_version);
    std::string expected =
        describe_tree(erofs::Image::open(image, erofs::ReaderOptions::compat()).to_tree(),
                      // No objects exist for the vectors' external files.
                      [](const erofs::Inode&) { return std::string("EIO"); });
    ASSERT_EQ(::mkdir((dir / "objects").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir((dir / "mnt").c_str(), 0755), 0);
    FuseProcess fuse({image, dir / "mnt", "-f", "--basedir", dir / "objects"}, dir / "mnt",
                     dir / "log");
    ASSERT_TRUE(fuse.wait_mounted()) << fuse.log();
    std::string actual = describe_mount(dir / "mnt");
    EXPECT_EQ(actual, expected);
    ASSERT_EQ(run_argv({"fusermount3", "-u", dir / "mnt"}), 0);
    EXPECT_EQ(fuse.wait_exit(), 0) << fuse.log();
  }
}

// A directory of real files covering every type, hardlinks, xattrs (one needing the overlay
// escape), odd modes and owners, inline and external sizes, and a multi-block directory.
void make_source_tree(const std::string& src) {
  std::mt19937_64 rng(42);
  auto random_bytes = [&](size_t n) {
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(rng());
    return s;
  };
  auto mk = [](const std::string& p) { ASSERT_EQ(::mkdir(p.c_str(), 0755), 0) << p; };
  mk(src);
  mk(src + "/dir");
  mk(src + "/dir/sub");
  mk(src + "/big");
  write_file(src + "/empty", "");
  write_file(src + "/small", "hello world\n");
  write_file(src + "/sixty-five", std::string(65, 'x'));
  write_file(src + "/five-thousand", random_bytes(5000));
  write_file(src + "/block", random_bytes(8192));
  write_file(src + "/mib", random_bytes(1 << 20));
  write_file(src + "/dir/sub/nested", random_bytes(300));
  write_file(src + "/dir/same-a", "same content in two files\n" + std::string(100, 's'));
  write_file(src + "/dir/same-b", "same content in two files\n" + std::string(100, 's'));
  ASSERT_EQ(::link((src + "/mib").c_str(), (src + "/dir/mib-link").c_str()), 0);
  ASSERT_EQ(::symlink("small", (src + "/link").c_str()), 0);
  ASSERT_EQ(::symlink(std::string(1000, 'L').c_str(), (src + "/dir/long-link").c_str()), 0);
  ASSERT_EQ(::mkfifo((src + "/fifo").c_str(), 0640), 0);
  ASSERT_EQ(::mknod((src + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
  ASSERT_EQ(::mknod((src + "/blk").c_str(), S_IFBLK | 0600, makedev(7, 200)), 0);
  for (int i = 0; i < 700; i++)
    write_file(src + "/big/entry-with-a-longish-name-" + std::to_string(i), std::to_string(i));
  ASSERT_EQ(::chmod((src + "/five-thousand").c_str(), 04755), 0);
  ASSERT_EQ(::chmod((src + "/dir/sub").c_str(), 0700), 0);
  ASSERT_EQ(::chmod((src + "/small").c_str(), 0600), 0);
  ASSERT_EQ(::lchown((src + "/small").c_str(), 1234, 5678), 0);
  ASSERT_EQ(::lchown((src + "/link").c_str(), 4321, 8765), 0);
  ASSERT_EQ(::setxattr((src + "/small").c_str(), "user.greeting", "hi", 2, 0), 0);
  ASSERT_EQ(::setxattr((src + "/dir").c_str(), "user.dir", "d\0x", 3, 0), 0);
  ASSERT_EQ(::setxattr((src + "/mib").c_str(), "user.big", std::string(300, 'v').c_str(), 300, 0),
            0);
  // Stored escaped (trusted.overlay.overlay.custom); both mounts must show it unescaped.
  ASSERT_EQ(::setxattr((src + "/dir/sub/nested").c_str(), "trusted.overlay.custom", "c", 1, 0), 0);
  timespec times[2] = {{1700000000, 123456789}, {1700000000, 123456789}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (src + "/small").c_str(), times, AT_SYMLINK_NOFOLLOW), 0);
  times[0] = times[1] = {1600000000, 5};
  ASSERT_EQ(::utimensat(AT_FDCWD, (src + "/dir").c_str(), times, AT_SYMLINK_NOFOLLOW), 0);
}

TEST(FuseMount, EqualsTheKernelOverlayMount) {
  require_fuse();
  if (::geteuid() != 0) GTEST_SKIP() << "kernel EROFS/overlay mounts need root";
  TempDir dir;
  make_source_tree(dir / "src");
  ASSERT_EQ(::mkdir((dir / "objects").c_str(), 0755), 0);
  erofs::Tree tree = scan_with_objects(dir / "src", dir / "objects");
  std::string image = dir / "image.cfs";
  write_image_file(tree, image);
  for (auto sub : {"erofs", "overlay", "fuse"}) ASSERT_EQ(::mkdir((dir / sub).c_str(), 0755), 0);

  KernelMount kernel(image, dir / "objects", dir / "erofs", dir / "overlay");
  ASSERT_TRUE(kernel.ok()) << kernel.error();
  FuseProcess fuse({image, dir / "fuse", "-f", "--basedir", dir / "objects"}, dir / "fuse",
                   dir / "log");
  ASSERT_TRUE(fuse.wait_mounted()) << fuse.log();

  std::string via_kernel = describe_mount(dir / "overlay");
  std::string via_fuse = describe_mount(dir / "fuse");
  EXPECT_EQ(via_fuse, via_kernel);
  // And both equal the source as the reader decodes it, contents included.
  std::string via_reader = describe_tree(
      erofs::Image::open(image).to_tree(),
      [&](const erofs::Inode& in) { return sha256_hex(read_file(dir / "objects/" + in.payload)); });
  EXPECT_EQ(via_fuse, via_reader);
  EXPECT_NE(via_fuse.find("x:trusted.overlay.custom=63"), std::string::npos) << via_fuse;
  EXPECT_EQ(via_fuse.find("redirect"), std::string::npos);
  EXPECT_EQ(via_fuse.find("metacopy"), std::string::npos);

  struct statvfs sv;
  ASSERT_EQ(::statvfs((dir / "fuse").c_str(), &sv), 0);
  EXPECT_TRUE(sv.f_flag & ST_RDONLY);
  EXPECT_EQ(sv.f_bsize, 4096u);
  EXPECT_EQ(sv.f_blocks * 4096, std::filesystem::file_size(image));

  // Read-only in every way.
  EXPECT_LT(::open((dir / "fuse/new").c_str(), O_CREAT | O_WRONLY, 0644), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_LT(::open((dir / "fuse/small").c_str(), O_WRONLY), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_NE(::mkdir((dir / "fuse/newdir").c_str(), 0755), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_NE(::unlink((dir / "fuse/small").c_str()), 0);
  EXPECT_EQ(errno, EROFS);
  EXPECT_NE(::setxattr((dir / "fuse/small").c_str(), "user.x", "y", 1, 0), 0);
  EXPECT_EQ(errno, EROFS);
}

// --repo: the image is found by id in REPO/images, objects come from REPO/objects (sha512
// here, the repository default), checked in userspace because the repository is insecure.
TEST(FuseMount, ServesAnImageFromARepository) {
  require_fuse();
  TempDir dir;
  std::string repo_path = dir / "repo";
  std::string image_hex;
  Digest tampered_id;
  {
    store::InitOptions init;
    init.insecure = true;
    store::Repository repo = store::Repository::init(repo_path, init);
    ASSERT_EQ(repo.algorithm(), HashAlgorithm::sha512);
    erofs::Tree tree;
    for (int i = 0; i < 3; i++) {
      std::string data(70000 + i, char('A' + i));
      Digest id = repo.ensure_object(std::as_bytes(std::span(data)));
      auto f = erofs::make_inode(S_IFREG | 0644);
      f->size = data.size();
      f->digest = id;
      f->payload = id.object_path();
      tree.root->set_child("file" + std::to_string(i), f);
      if (i == 2) tampered_id = id;
    }
    store::ObjectWriter writer = repo.write_object();
    erofs::write_image(tree, writer);
    Digest image_id = writer.commit();
    repo.link_image(image_id);
    repo.sync();
    image_hex = image_id.hex();
  }
  // Damage one object in place (same size).
  std::string obj = repo_path + "/objects/" + tampered_id.object_path();
  ::chmod(obj.c_str(), 0644);
  std::string bytes = read_file(obj);
  bytes[100] = 'x';
  write_file(obj, bytes);

  ASSERT_EQ(::mkdir((dir / "mnt").c_str(), 0755), 0);
  FuseProcess fuse({"--repo", repo_path, image_hex, dir / "mnt", "-f"}, dir / "mnt", dir / "log");
  ASSERT_TRUE(fuse.wait_mounted()) << fuse.log();
  EXPECT_EQ(read_file(dir / "mnt/file0"), std::string(70000, 'A'));
  EXPECT_EQ(read_file(dir / "mnt/file1"), std::string(70001, 'B'));
  int fd = ::open((dir / "mnt/file2").c_str(), O_RDONLY);
  EXPECT_LT(fd, 0);
  EXPECT_EQ(errno, EIO);
  if (fd >= 0) ::close(fd);
  EXPECT_NE(fuse.log().find("fs-verity digest does not match"), std::string::npos) << fuse.log();

  std::string out;
  EXPECT_EQ(
      run_argv({cfs_fuse_binary(), "--repo", repo_path, std::string(128, 'f'), dir / "mnt2", "-f"},
               &out),
      1);
  EXPECT_FALSE(out.empty());
}

TEST(FuseMount, DirectoryOffsetsSurviveSeeks) {
  require_fuse();
  TempDir dir;
  erofs::Tree tree;
  auto big = erofs::make_inode(S_IFDIR | 0755);
  std::vector<std::string> names;
  for (int i = 0; i < 5000; i++) {
    auto f = erofs::make_inode(S_IFREG | 0644);
    names.push_back("file-" + std::to_string(i) + std::string(size_t(i % 40), 'n'));
    big->set_child(names.back(), f);
  }
  tree.root->set_child("big", big);
  std::string image = dir / "image.cfs";
  write_image_file(tree, image);
  ASSERT_EQ(::mkdir((dir / "mnt").c_str(), 0755), 0);
  FuseProcess fuse({image, dir / "mnt", "-f"}, dir / "mnt", dir / "log");
  ASSERT_TRUE(fuse.wait_mounted()) << fuse.log();

  DIR* d = ::opendir((dir / "mnt/big").c_str());
  ASSERT_NE(d, nullptr);
  std::vector<std::pair<std::string, long>> seen;  // name, telldir before it
  for (;;) {
    long pos = ::telldir(d);
    dirent* e = ::readdir(d);
    if (!e) break;
    seen.emplace_back(e->d_name, pos);
  }
  std::set<std::string> listed;
  for (auto& [n, p] : seen)
    if (n != "." && n != "..") listed.insert(n);
  EXPECT_EQ(listed, std::set<std::string>(names.begin(), names.end()));
  EXPECT_EQ(seen.size(), names.size() + 2);
  // Jump back to a few positions: the same entries follow, in the same order.
  for (size_t start : {size_t(4321), size_t(17), size_t(2500), size_t(0), seen.size() - 1}) {
    ::seekdir(d, seen[start].second);
    for (size_t i = start; i < std::min(seen.size(), start + 300); i++) {
      dirent* e = ::readdir(d);
      ASSERT_NE(e, nullptr) << i;
      ASSERT_EQ(std::string(e->d_name), seen[i].first) << "after seek to " << start;
    }
  }
  ::closedir(d);
}

}  // namespace
}  // namespace cfs::test
