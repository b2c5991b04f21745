// The C API of libcomposefs.so.1, called as a C program calls it: trees built with
// lcfs_node_* and written with lcfs_write_to must be byte-identical to what cfs's own writer
// makes of the same dumpfile, and images must load back into the same tree.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "cfs/digest.h"
#include "cfs/erofs/dumpfile.h"
#include "cfs/erofs/writer.h"
#include "cfs/fsverity.h"
#include "libcomposefs/lcfs-erofs.h"
#include "libcomposefs/lcfs-mount.h"
#include "libcomposefs/lcfs-writer.h"
#include "testdata.h"

namespace {

using cfs::erofs::DumpfileParseOptions;

struct Unref {
  void operator()(lcfs_node_s* n) const { lcfs_node_unref(n); }
};
using Node = std::unique_ptr<lcfs_node_s, Unref>;

ssize_t append(void* file, void* buf, size_t count) {
  static_cast<std::string*>(file)->append(static_cast<const char*>(buf), count);
  return static_cast<ssize_t>(count);
}

struct Written {
  int rc = 0;
  std::string image;
  std::string digest_hex;
  uint32_t version = 0;
};

Written write(lcfs_node_s* root, uint32_t version = 0, uint32_t max_version = 1) {
  Written w;
  uint8_t digest[LCFS_DIGEST_SIZE] = {};
  lcfs_write_options_s options{};
  options.format = LCFS_FORMAT_EROFS;
  options.version = version;
  options.max_version = max_version;
  options.digest_out = digest;
  options.file = &w.image;
  options.file_write_cb = append;
  w.rc = lcfs_write_to(root, &options);
  w.digest_hex = cfs::to_hex(digest);
  w.version = options.version;
  return w;
}

std::string cfs_image(std::string_view dump, uint32_t min = 0, uint32_t max = 1) {
  auto tree = cfs::erofs::parse_dumpfile(dump, "test.dump", {.strict = false, .max_symlink = 4095});
  return cfs::erofs::image_to_string(tree, {min, max});
}

lcfs_node_s* add(lcfs_node_s* dir, const char* name, uint32_t mode) {
  lcfs_node_s* n = lcfs_node_new();
  lcfs_node_set_mode(n, mode);
  lcfs_node_set_mtime(n, std::array<timespec, 1>{timespec{1700000000, 5}}.data());
  EXPECT_EQ(lcfs_node_add_child(dir, n, name), 0) << name;
  return n;
}

Node sample_tree() {
  Node root(lcfs_node_new());
  lcfs_node_set_mode(root.get(), S_IFDIR | 0755);
  timespec t{1700000000, 5};
  lcfs_node_set_mtime(root.get(), &t);
  lcfs_node_set_xattr(root.get(), "user.root", "r", 1);

  lcfs_node_s* etc = add(root.get(), "etc", S_IFDIR | 0700);
  lcfs_node_set_uid(etc, 10);
  lcfs_node_s* small = add(etc, "small", S_IFREG | 0644);
  const uint8_t data[] = {'h', 'i', '\n'};
  EXPECT_EQ(lcfs_node_set_content(small, data, sizeof data), 0);
  lcfs_node_set_xattr(small, "user.b", "2", 1);
  lcfs_node_set_xattr(small, "user.a", "1", 1);

  lcfs_node_s* big = add(root.get(), "big", S_IFREG | 0644);
  lcfs_node_set_size(big, 100000);
  uint8_t digest[LCFS_DIGEST_SIZE];
  for (size_t i = 0; i < sizeof digest; ++i) digest[i] = static_cast<uint8_t>(i * 7);
  lcfs_node_set_fsverity_digest(big, digest);
  EXPECT_EQ(lcfs_node_set_payload(
                big, cfs::Digest(cfs::HashAlgorithm::sha256, digest).object_path().c_str()),
            0);

  lcfs_node_s* link = add(root.get(), "link", S_IFLNK | 0777);
  EXPECT_EQ(lcfs_node_set_symlink_payload(link, "etc/small"), 0);

  lcfs_node_s* hard = lcfs_node_new();
  lcfs_node_make_hardlink(hard, small);
  EXPECT_EQ(lcfs_node_add_child(root.get(), hard, "hard"), 0);

  lcfs_node_s* dev = add(root.get(), "null", S_IFCHR | 0666);
  lcfs_node_set_rdev64(dev, makedev(1, 3));
  add(root.get(), "fifo", S_IFIFO | 0600);
  return root;
}

// The same tree as sample_tree, as composefs-dump(5).
std::string sample_dump() {
  const std::string digest_hex = [] {
    std::string s;
    for (int i = 0; i < 32; ++i) s += cfs::to_hex(std::array<uint8_t, 1>{uint8_t(i * 7)});
    return s;
  }();
  const std::string object = digest_hex.substr(0, 2) + "/" + digest_hex.substr(2);
  const std::string mt = "1700000000.5";
  return "/ 0 40755 2 0 0 0 " + mt + " - - - user.root=r\n" + "/big 100000 100644 1 0 0 0 " + mt +
         " " + object + " - " + digest_hex + "\n" + "/etc 0 40700 2 10 0 0 " + mt + " - - -\n" +
         "/etc/small 3 100644 2 0 0 0 " + mt + " - hi\\n - user.a=1 user.b=2\n" +
         "/fifo 0 10600 1 0 0 0 " + mt + " - - -\n" +
         "/hard 0 @120000 - - - - 0.0 /etc/small - -\n" + "/link 9 120777 1 0 0 0 " + mt +
         " etc/small - -\n" + "/null 0 20666 1 0 0 " + std::to_string(makedev(1, 3)) + " " + mt +
         " - - -\n";
}

TEST(LibComposefs, BuiltTreeIsByteIdenticalToCfsWriter) {
  Node root = sample_tree();
  Written w = write(root.get());
  ASSERT_EQ(w.rc, 0) << std::strerror(errno);
  std::string expected = cfs_image(sample_dump());
  EXPECT_EQ(w.image.size(), expected.size());
  EXPECT_TRUE(w.image == expected);
  EXPECT_EQ(w.digest_hex, cfs::fsverity_digest(expected).hex());
  EXPECT_EQ(w.version, 0u);
}

TEST(LibComposefs, WhiteoutRaisesVersionWithinMax) {
  Node root(lcfs_node_new());
  lcfs_node_set_mode(root.get(), S_IFDIR | 0755);
  add(root.get(), "gone", S_IFCHR | 0);
  EXPECT_EQ(write(root.get(), 0, 1).version, 1u);
  EXPECT_EQ(write(root.get(), 0, 0).version, 0u);
  Written v1 = write(root.get(), 0, 1);
  EXPECT_TRUE(
      v1.image ==
      cfs_image("/ 0 40755 2 0 0 0 0.0 - - -\n/gone 0 20000 1 0 0 0 1700000000.5 - - -\n", 0, 1));
}

TEST(LibComposefs, ReferenceVectorsLoadAndRewriteIdentically) {
  for (const auto& row : cfs::test::load_vectors()) {
    SCOPED_TRACE(row.asset);
    std::string image =
        cfs_image(cfs::test::read_vector(row.asset), row.min_version, row.max_version);
    ASSERT_EQ(cfs::test::sha256_hex(image), row.sha256);
    Node root(
        lcfs_load_node_from_image(reinterpret_cast<const uint8_t*>(image.data()), image.size()));
    ASSERT_TRUE(root) << std::strerror(errno);
    Written w = write(root.get(), row.min_version, row.max_version);
    ASSERT_EQ(w.rc, 0) << std::strerror(errno);
    EXPECT_EQ(cfs::test::sha256_hex(w.image), row.sha256);
    EXPECT_EQ(w.digest_hex, row.fsverity);
  }
}

TEST(LibComposefs, LoadedTreeHasTheWrittenNodes) {
  Node root = sample_tree();
  Written w = write(root.get());
  ASSERT_EQ(w.rc, 0);
  Node back(
      lcfs_load_node_from_image(reinterpret_cast<const uint8_t*>(w.image.data()), w.image.size()));
  ASSERT_TRUE(back);
  ASSERT_EQ(lcfs_node_get_n_children(back.get()), 6u);
  EXPECT_STREQ(lcfs_node_get_name(lcfs_node_get_child(back.get(), 0)), "big");
  lcfs_node_s* big = lcfs_node_lookup_child(back.get(), "big");
  ASSERT_NE(big, nullptr);
  EXPECT_EQ(lcfs_node_get_size(big), 100000u);
  EXPECT_EQ(std::memcmp(lcfs_node_get_fsverity_digest(big),
                        lcfs_node_get_fsverity_digest(lcfs_node_lookup_child(root.get(), "big")),
                        LCFS_DIGEST_SIZE),
            0);
  lcfs_node_s* small = lcfs_node_lookup_child(lcfs_node_lookup_child(back.get(), "etc"), "small");
  ASSERT_NE(small, nullptr);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(lcfs_node_get_content(small)), 3), "hi\n");
  EXPECT_EQ(lcfs_node_get_nlink(small), 2u);
  EXPECT_EQ(lcfs_node_get_n_xattr(small), 2u);
  size_t len = 0;
  const char* value = lcfs_node_get_xattr(small, "user.b", &len);
  ASSERT_NE(value, nullptr);
  EXPECT_EQ(std::string(value, len), "2");
  lcfs_node_s* hard = lcfs_node_lookup_child(back.get(), "hard");
  EXPECT_EQ(lcfs_node_get_hardlink_target(hard), small);
  EXPECT_STREQ(lcfs_node_get_payload(lcfs_node_lookup_child(back.get(), "link")), "etc/small");
  EXPECT_EQ(lcfs_node_get_rdev64(lcfs_node_lookup_child(back.get(), "null")), makedev(1, 3));
  EXPECT_EQ(lcfs_node_get_parent(small), lcfs_node_lookup_child(back.get(), "etc"));

  const char* const only[] = {"link", nullptr};
  lcfs_read_options_s opts{};
  opts.toplevel_entries = only;
  Node filtered(lcfs_load_node_from_image_ext(reinterpret_cast<const uint8_t*>(w.image.data()),
                                              w.image.size(), &opts));
  ASSERT_TRUE(filtered);
  ASSERT_EQ(lcfs_node_get_n_children(filtered.get()), 1u);

  // The rewritten image is the original.
  EXPECT_TRUE(write(back.get()).image == w.image);
  Node deep(lcfs_node_clone_deep(back.get()));
  EXPECT_TRUE(write(deep.get()).image == w.image);
  EXPECT_EQ(lcfs_node_get_hardlink_target(lcfs_node_lookup_child(deep.get(), "hard")),
            lcfs_node_lookup_child(lcfs_node_lookup_child(deep.get(), "etc"), "small"));
}

TEST(LibComposefs, NodeErrorsAreErrnoValues) {
  Node root(lcfs_node_new());
  Node file(lcfs_node_new());
  lcfs_node_set_mode(file.get(), S_IFREG | 0644);
  errno = 0;
  EXPECT_EQ(lcfs_node_add_child(file.get(), root.get(), "x"), -1);
  EXPECT_EQ(errno, ENOTDIR);
  lcfs_node_set_mode(root.get(), S_IFDIR | 0755);
  EXPECT_EQ(lcfs_node_add_child(root.get(), file.get(), ""), -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(lcfs_node_add_child(root.get(), file.get(), std::string(256, 'a').c_str()), -1);
  EXPECT_EQ(errno, ENAMETOOLONG);
  ASSERT_EQ(lcfs_node_add_child(root.get(), lcfs_node_ref(file.get()), "f"), 0);
  EXPECT_EQ(lcfs_node_add_child(root.get(), file.get(), "g"), -1);
  EXPECT_EQ(errno, EMLINK);
  Node other(lcfs_node_new());
  EXPECT_EQ(lcfs_node_add_child(root.get(), other.get(), "f"), -1);
  EXPECT_EQ(errno, EEXIST);
  EXPECT_EQ(lcfs_node_try_set_mode(other.get(), 0170000), -1);
  EXPECT_EQ(errno, EINVAL);
  std::string big(LCFS_INLINE_CONTENT_MAX + 1, 'x');
  EXPECT_EQ(
      lcfs_node_set_content(file.get(), reinterpret_cast<const uint8_t*>(big.data()), big.size()),
      -1);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(lcfs_node_unset_xattr(file.get(), "user.none"), -1);
  EXPECT_EQ(errno, ENODATA);
  EXPECT_EQ(lcfs_node_set_xattr(file.get(), "", "", 0), -1);
  EXPECT_EQ(errno, ERANGE);
  std::string huge(LCFS_INODE_EXTERNAL_XATTR_MAX, 'v');
  EXPECT_EQ(lcfs_node_set_xattr(file.get(), "user.big", huge.data(), huge.size()), -1);
  EXPECT_EQ(errno, ERANGE);

  // Unset moves the last xattr into the hole, as C does.
  lcfs_node_set_xattr(file.get(), "user.1", "", 0);
  lcfs_node_set_xattr(file.get(), "user.2", "", 0);
  lcfs_node_set_xattr(file.get(), "user.3", "", 0);
  ASSERT_EQ(lcfs_node_unset_xattr(file.get(), "user.1"), 0);
  EXPECT_STREQ(lcfs_node_get_xattr_name(file.get(), 0), "user.3");
  EXPECT_EQ(lcfs_node_get_xattr_name(file.get(), 2), nullptr);

  // A size change drops inline content.
  const uint8_t d[] = {1, 2};
  lcfs_node_set_content(file.get(), d, 2);
  lcfs_node_set_size(file.get(), 5);
  EXPECT_EQ(lcfs_node_get_content(file.get()), nullptr);

  lcfs_write_options_s options{};
  options.flags = 1;
  EXPECT_EQ(lcfs_write_to(root.get(), &options), -1);
  EXPECT_EQ(errno, EINVAL);
  options.flags = 0;
  options.version = 2;
  EXPECT_EQ(lcfs_write_to(root.get(), &options), -1);
  EXPECT_EQ(errno, EINVAL);

  // Invalid trees fail with errno, never an exception.
  Node bad(lcfs_node_new());
  lcfs_node_set_mode(bad.get(), S_IFDIR | 0755);
  add(bad.get(), "weird", 0170000);
  EXPECT_EQ(write(bad.get()).rc, -1);
  EXPECT_EQ(errno, EINVAL);
  const uint8_t garbage[64] = {};
  EXPECT_EQ(lcfs_load_node_from_image(garbage, sizeof garbage), nullptr);
  EXPECT_EQ(errno, EINVAL);
  // Children are sorted bytewise whatever the insertion order.
  Node dir(lcfs_node_new());
  lcfs_node_set_mode(dir.get(), S_IFDIR | 0755);
  add(dir.get(), "b", S_IFREG | 0644);
  add(dir.get(), "a", S_IFREG | 0644);
  add(dir.get(), "\xff", S_IFREG | 0644);
  EXPECT_STREQ(lcfs_node_get_name(lcfs_node_get_child(dir.get(), 0)), "a");
  EXPECT_STREQ(lcfs_node_get_name(lcfs_node_get_child(dir.get(), 2)), "\xff");
}

TEST(LibComposefs, FsverityMatchesCfs) {
  std::string data = cfs::test::pattern(100000, 7);
  uint8_t digest[LCFS_DIGEST_SIZE];
  ASSERT_EQ(
      lcfs_compute_fsverity_from_data(digest, reinterpret_cast<uint8_t*>(data.data()), data.size()),
      0);
  EXPECT_EQ(cfs::to_hex(digest), cfs::fsverity_digest(data).hex());
  cfs::test::TempDir dir;
  cfs::test::write_file(dir / "f", data);
  int fd = open((dir / "f").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  uint8_t from_fd[LCFS_DIGEST_SIZE];
  ASSERT_EQ(lcfs_fd_get_fsverity(from_fd, fd), 0);
  close(fd);
  EXPECT_EQ(std::memcmp(digest, from_fd, LCFS_DIGEST_SIZE), 0);
}

TEST(LibComposefs, BuildScansADirectory) {
  cfs::test::TempDir dir;
  mkdir((dir / "root").c_str(), 0755);
  mkdir((dir / "root/sub").c_str(), 0700);
  cfs::test::write_file(dir / "root/small", "tiny");
  std::string big = cfs::test::pattern(5000, 3);
  cfs::test::write_file(dir / "root/sub/big", big);
  ASSERT_EQ(symlink("small", (dir / "root/ln").c_str()), 0);
  char* failed = nullptr;
  Node root(lcfs_build(AT_FDCWD, (dir / "root").c_str(),
                       LCFS_BUILD_COMPUTE_DIGEST | LCFS_BUILD_BY_DIGEST | LCFS_BUILD_USE_EPOCH,
                       &failed));
  ASSERT_TRUE(root) << (failed ? failed : "");
  ASSERT_EQ(lcfs_node_get_n_children(root.get()), 3u);
  lcfs_node_s* small = lcfs_node_lookup_child(root.get(), "small");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(lcfs_node_get_content(small)), 4), "tiny");
  lcfs_node_s* b = lcfs_node_lookup_child(lcfs_node_lookup_child(root.get(), "sub"), "big");
  EXPECT_EQ(lcfs_node_get_content(b), nullptr);
  EXPECT_EQ(lcfs_node_get_payload(b), cfs::fsverity_digest(big).object_path());
  EXPECT_STREQ(lcfs_node_get_payload(lcfs_node_lookup_child(root.get(), "ln")), "small");
  timespec t{};
  lcfs_node_get_mtime(b, &t);
  EXPECT_EQ(t.tv_sec, 0);
  EXPECT_EQ(write(root.get()).rc, 0);

  Node missing(lcfs_build(AT_FDCWD, (dir / "nope").c_str(), 0, &failed));
  EXPECT_FALSE(missing);
  EXPECT_EQ(errno, ENOENT);
  ASSERT_NE(failed, nullptr);
  EXPECT_EQ(std::string(failed), dir / "nope");
  free(failed);
}

TEST(LibComposefs, VersionFromFdAndMountArgumentChecks) {
  Node root = sample_tree();
  Written w = write(root.get());
  cfs::test::TempDir dir;
  cfs::test::write_file(dir / "img", w.image);
  int fd = open((dir / "img").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(lcfs_version_from_fd(fd), 0);
  Node loaded(lcfs_load_node_from_fd(fd));
  EXPECT_TRUE(loaded);
  lcfs_mount_options_s options{};
  EXPECT_EQ(lcfs_mount_fd(fd, (dir / "mnt").c_str(), &options), -1);
  EXPECT_EQ(errno, EINVAL);  // no object directory
  const char* objdirs[] = {dir.path().c_str()};
  options.objdirs = objdirs;
  options.n_objdirs = 1;
  options.expected_fsverity_digest = "zz";
  EXPECT_EQ(lcfs_mount_fd(fd, (dir / "mnt").c_str(), &options), -1);
  EXPECT_EQ(errno, EINVAL);
  close(fd);
}

TEST(LibComposefs, MountImageServesTheTree) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting needs root";
  cfs::test::TempDir dir;
  const std::string data = cfs::test::pattern(10000, 5);
  const cfs::Digest digest = cfs::fsverity_digest(data);
  mkdir((dir / "objects").c_str(), 0755);
  mkdir((dir / "objects/" + digest.object_path().substr(0, 2)).c_str(), 0755);
  cfs::test::write_file(dir / "objects/" + digest.object_path(), data);
  mkdir((dir / "mnt").c_str(), 0755);

  Node root(lcfs_node_new());
  lcfs_node_set_mode(root.get(), S_IFDIR | 0755);
  lcfs_node_s* file = add(root.get(), "file", S_IFREG | 0644);
  lcfs_node_set_size(file, data.size());
  ASSERT_EQ(lcfs_node_set_payload(file, digest.object_path().c_str()), 0);
  Written w = write(root.get());
  ASSERT_EQ(w.rc, 0);
  cfs::test::write_file(dir / "image.cfs", w.image);

  const char* objdirs[] = {nullptr};
  const std::string objects = dir / "objects";
  objdirs[0] = objects.c_str();
  lcfs_mount_options_s options{};
  options.objdirs = objdirs;
  options.n_objdirs = 1;
  options.flags = LCFS_MOUNT_FLAGS_READONLY;
  ASSERT_EQ(lcfs_mount_image((dir / "image.cfs").c_str(), (dir / "mnt").c_str(), &options), 0)
      << std::strerror(errno);
  std::string read_back;
  {
    int fd = open((dir / "mnt/file").c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    char buf[4096];
    for (ssize_t n; fd >= 0 && (n = read(fd, buf, sizeof buf)) > 0;) read_back.append(buf, n);
    if (fd >= 0) close(fd);
  }
  EXPECT_EQ(umount2((dir / "mnt").c_str(), MNT_DETACH), 0);
  EXPECT_TRUE(read_back == data);

  // A required digest on an image without fs-verity: C's ENOVERITY, nothing mounted.
  options.expected_fsverity_digest =
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
  EXPECT_EQ(lcfs_mount_image((dir / "image.cfs").c_str(), (dir / "mnt").c_str(), &options), -1);
  EXPECT_EQ(errno, ENOVERITY);
}

}  // namespace
