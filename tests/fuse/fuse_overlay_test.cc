// cfs-fuse --overlay: the metadata-only FUSE under a kernel overlayfs (userxattr) in a user
// and mount namespace of its own. Real mounts: as root (every uid mapped to itself, so the
// tree compares exactly with the image's), and as a throwaway unprivileged user.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <thread>

#include "cfs/erofs/reader.h"
#include "cfs/fd.h"
#include "fuse_helpers.h"
#include "testdata.h"

namespace cfs::test {
namespace {

bool have(const std::string& tool) {
  return run_argv({"sh", "-c", "command -v " + tool}) == 0;
}

// Whether this kernel lets an unprivileged user stack overlayfs (userxattr) with a data-only
// lower layer over FUSE: user namespaces, FUSE and overlayfs mountable in them (5.11+),
// data-only layers (6.5+). Probed with the real thing on a tmpfs, not a version number.
std::string overlay_unsupported() {
  std::string out;
  int rc = run_argv({"unshare", "-Urm", "sh", "-c",
                     "cd \"$(mktemp -d)\" && mount -t tmpfs t . && mkdir l d m && "
                     "mount -t overlay o -o ro,userxattr,lowerdir+=l,datadir+=d m"},
                    &out);
  return rc == 0 ? "" : "no rootless overlayfs with data-only layers here: " + out;
}

// A small image: inline, external (objects in dir/objects), a shared object, a symlink, a
// subdirectory, and an xattr.
std::string make_image(const TempDir& dir) {
  std::string src = dir / "src";
  ::mkdir(src.c_str(), 0755);
  write_file(src + "/inline", "inline data\n");
  write_file(src + "/external", std::string(100000, 'e') + "end");
  write_file(src + "/same", std::string(100000, 'e') + "end");
  ::symlink("inline", (src + "/link").c_str());
  ::mkdir((src + "/sub").c_str(), 0755);
  write_file(src + "/sub/file", std::string(30000, 's'));
  ::mkdir((dir / "objects").c_str(), 0755);
  erofs::Tree tree = scan_with_objects(src, dir / "objects");
  std::string image = dir / "image.cfs";
  write_image_file(tree, image);
  ::mkdir((dir / "mnt").c_str(), 0755);
  return image;
}

// The object path ("ab/cdef…") of the external file at path ("a/b").
std::string object_of(const std::string& image, const std::string& path) {
  erofs::Image img = erofs::Image::open(image);
  erofs::InodeInfo inode = img.root();
  std::string_view rest = path;
  while (!rest.empty()) {
    std::string_view name = rest.substr(0, rest.find('/'));
    rest.remove_prefix(std::min(rest.size(), name.size() + 1));
    auto e = img.lookup(inode, name);
    if (!e) throw std::runtime_error("no " + path + " in the image");
    inode = img.inode(e->nid);
  }
  return std::string(img.redirect(inode)->substr(1));
}

uint64_t nid_of(const std::string& image, const std::string& name) {
  erofs::Image img = erofs::Image::open(image);
  auto e = img.lookup(img.root(), name);
  if (!e) throw std::runtime_error("no " + name + " in the image");
  return e->nid;
}

bool wait_for_log(const FuseProcess& p, const std::string& text) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    if (p.log().find(text) != std::string::npos) return true;
    if (::kill(p.pid(), 0) != 0) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// As root the namespace maps every uid to itself: the tree seen through the overlay is the
// image's, and the object data never passes through the server.
TEST(FuseOverlay, RootSeesTheImageAndTheOverlayReadsObjectsItself) {
  if (::geteuid() != 0) GTEST_SKIP() << "the exact comparison needs every uid mapped (root)";
  if (!have("unshare")) GTEST_SKIP() << "unshare(1) missing";
  if (auto why = overlay_unsupported(); !why.empty()) GTEST_SKIP() << why;
  TempDir dir;
  std::string image = make_image(dir);
  // -d: libfuse traces every request, so the log shows which files the server opened.
  FuseProcess fuse({"--overlay", "-d", image, dir / "mnt", "--basedir", dir / "objects"},
                   dir / "mnt", dir / "log");
  ASSERT_TRUE(wait_for_log(fuse, "mounted at")) << fuse.log();
  EXPECT_NE(fuse.log().find("verified 2 object(s)"), std::string::npos) << fuse.log();

  std::string expected = describe_tree(erofs::Image::open(image).to_tree(), [&](const auto& in) {
    return sha256_hex(read_file(dir / "objects/" + in.payload));
  });
  std::string seen = run_in_namespaces_of(fuse.pid(), [&] { return describe_mount(dir / "mnt"); });
  EXPECT_EQ(seen, expected);
  // Not visible outside the namespace.
  EXPECT_FALSE(is_mounted(dir / "mnt"));

  // Every file was read: the inline one through the server, the external ones by the overlay
  // straight from the object (the server never opened them).
  std::string log = fuse.log();
  auto opened = [&](uint64_t nid) {
    return std::regex_search(
        log, std::regex("opcode: OPEN \\(14\\), nodeid: " + std::to_string(nid) + ","));
  };
  EXPECT_TRUE(opened(nid_of(image, "inline"))) << log;
  EXPECT_FALSE(opened(nid_of(image, "external"))) << log;
  EXPECT_FALSE(opened(nid_of(image, "same"))) << log;

  ASSERT_EQ(::kill(fuse.pid(), SIGTERM), 0);
  EXPECT_EQ(fuse.wait_exit(), 0) << fuse.log();
}

class UnprivilegedOverlay : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "creating a throwaway user needs root";
    if (!have("useradd") || !have("userdel") || !have("unshare"))
      GTEST_SKIP() << "useradd/userdel/unshare missing";
    if (::access("/dev/fuse", F_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
    if (auto why = overlay_unsupported(); !why.empty()) GTEST_SKIP() << why;
    ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
    image_ = make_image(dir_);
    ASSERT_EQ(run_argv({"chown", "-R", std::to_string(user_.as().uid), dir_ / "mnt"}), 0);
    ASSERT_TRUE(dev_.set(0666));
  }
  // cfs-fuse --overlay ... -- sh -c SCRIPT, as the user, SCRIPT starting in the test's
  // directory (mnt is the mount); exit status, output in out.
  int run(const std::vector<std::string>& options, const std::string& script, std::string& out) {
    std::vector<std::string> argv = {cfs_fuse_binary(), "--overlay", image_,
                                     dir_ / "mnt",      "--basedir", dir_ / "objects"};
    argv.insert(argv.end(), options.begin(), options.end());
    for (const char* a : {"--", "sh", "-c"}) argv.push_back(a);
    argv.push_back("cd " + std::string(dir_.path()) + " && " + script);
    return run_argv(argv, &out, user_.as());
  }

  TempDir dir_;
  TempUser user_;
  DevFuseMode dev_;
  std::string image_;
};

TEST_F(UnprivilegedOverlay, CommandRunsWhereTheMountIs) {
  std::string out;
  ASSERT_EQ(run({},
                "cd mnt && sha256sum external sub/file && cat inline && readlink link && "
                "id -u && touch new",
                out),
            1)
      << out;  // touch: read-only
  EXPECT_NE(out.find(sha256_hex(read_file(dir_ / "src/external")) + "  external"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find(sha256_hex(read_file(dir_ / "src/sub/file")) + "  sub/file"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("inline data\ninline\n0\n"), std::string::npos) << out;
  EXPECT_NE(out.find("Read-only file system"), std::string::npos) << out;
  EXPECT_NE(out.find("digested here"), std::string::npos) << out;
  // The command's status is cfs-fuse's, and nothing stays mounted.
  EXPECT_EQ(run({}, "exit 7", out), 7) << out;
  EXPECT_FALSE(is_mounted(dir_ / "mnt"));
}

TEST_F(UnprivilegedOverlay, CorruptedObjectRefusesTheMount) {
  std::string object = dir_ / ("objects/" + object_of(image_, "external"));
  std::string bytes = read_file(object);
  bytes[5000] ^= 1;  // same size, other content
  ::chmod(object.c_str(), 0644);
  write_file(object, bytes);
  std::string out;
  EXPECT_EQ(run({}, "cat mnt/external", out), 1) << out;
  EXPECT_NE(out.find("fs-verity digest does not match"), std::string::npos) << out;
  EXPECT_NE(out.find("refusing to mount"), std::string::npos) << out;
  EXPECT_EQ(out.find("eeee"), std::string::npos) << out;  // the command never ran
}

TEST_F(UnprivilegedOverlay, MissingObjectsAreRefusedUnlessAllowedAndThenReadAsEio) {
  std::string object = dir_ / ("objects/" + object_of(image_, "sub/file"));
  ASSERT_EQ(::unlink(object.c_str()), 0);
  std::string out;
  EXPECT_EQ(run({}, "true", out), 1) << out;
  EXPECT_NE(out.find("missing"), std::string::npos) << out;
  EXPECT_NE(out.find("--allow-missing-objects"), std::string::npos) << out;

  // Allowed: the file reads as EIO, even when the object appears after the check (it was not
  // verified, so the overlay is never sent to it: the server opens and verifies it instead).
  write_file(dir_ / "planted", std::string(30000, 'X'));
  ASSERT_EQ(
      run_argv({"chown", "-R", std::to_string(user_.as().uid), dir_ / "objects", dir_ / "planted"}),
      0);
  ASSERT_EQ(
      run({"--allow-missing-objects"},
          "cat mnt/sub/file; mv planted " + object + " && cat mnt/sub/file; sha256sum mnt/external",
          out),
      0)
      << out;
  EXPECT_EQ(out.find("XXXX"), std::string::npos) << out;
  EXPECT_NE(out.find("Input/output error"), std::string::npos) << out;
  EXPECT_NE(out.find(sha256_hex(read_file(dir_ / "src/external"))), std::string::npos) << out;
}

TEST_F(UnprivilegedOverlay, UpperDirectoryMakesItWritable) {
  std::string state = dir_ / "state";
  ASSERT_EQ(::mkdir(state.c_str(), 0755), 0);
  ASSERT_EQ(run_argv({"chown", std::to_string(user_.as().uid), state}), 0);
  std::string out;
  ASSERT_EQ(run({"--upper", state},
                "echo changed > mnt/new && echo more >> mnt/inline && "
                "cat mnt/new mnt/inline",
                out),
            0)
      << out;
  EXPECT_NE(out.find("changed\ninline data\nmore\n"), std::string::npos) << out;
  EXPECT_EQ(read_file(state + "/upper/new"), "changed\n");
  EXPECT_EQ(read_file(state + "/upper/inline"), "inline data\nmore\n");
  // The image and its objects are untouched.
  EXPECT_EQ(run({}, "cat mnt/inline", out), 0) << out;
  EXPECT_NE(out.find("inline data\n"), std::string::npos);
  EXPECT_EQ(out.find("more"), std::string::npos) << out;
}

}  // namespace
}  // namespace cfs::test
