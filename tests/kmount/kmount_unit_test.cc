// Parsing in kmount that needs no privileges: mount.composefs options, kernel command lines,
// the setup-root configuration and the test overrides.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "cfs/error.h"
#include "cfs/kmount/options.h"
#include "cfs/kmount/setup_root.h"

using namespace cfs::kmount;

namespace {

const std::string kHex256(64, 'a');
const std::string kHex512(128, 'b');

TEST(MountOptions, SplitHonoursEscapedCommas) {
  EXPECT_EQ(split_mount_options("a,b\\,c,,d\\\\"), (std::vector<std::string>{"a", "b,c", "d\\"}));
  EXPECT_EQ(split_mount_options(""), std::vector<std::string>{});
}

TEST(MountOptions, ComposefsOptionsLikeTheCTool) {
  MountOptions o;
  apply_composefs_options("basedir=/a:/b\\,c,upperdir=/u,workdir=/w,rw,idmap=/proc/1/ns/user", &o);
  EXPECT_EQ(o.object_dirs, (std::vector<std::string>{"/a", "/b,c"}));
  EXPECT_EQ(o.upperdir, "/u");
  EXPECT_EQ(o.workdir, "/w");
  EXPECT_TRUE(o.writable);
  EXPECT_EQ(o.idmap_userns, "/proc/1/ns/user");
  EXPECT_EQ(o.verity, VerityMode::off);

  MountOptions d;
  apply_composefs_options("basedir=/o,digest=" + kHex256 + ",tryverity", &d);
  ASSERT_TRUE(d.expected_digest);
  EXPECT_EQ(d.expected_digest->hex(), kHex256);
  EXPECT_EQ(d.verity, VerityMode::require);  // digest= implies verity

  MountOptions t;
  apply_composefs_options("basedir=/o,tryverity,rw", &t);
  EXPECT_EQ(t.verity, VerityMode::attempt);
  EXPECT_FALSE(t.writable);  // mount(8)'s default "rw" without an upper layer means nothing

  MountOptions v;
  apply_composefs_options("verity,ro,defaults,nofail,x-systemd.requires=/srv", &v);
  EXPECT_EQ(v.verity, VerityMode::require);
}

TEST(MountOptions, RejectsUnknownAndMalformedOptions) {
  MountOptions o;
  EXPECT_THROW(apply_composefs_options("noverity", &o), cfs::Error);
  EXPECT_THROW(apply_composefs_options("digest=xyz", &o), cfs::Error);
  EXPECT_THROW(apply_composefs_options("basedir=", &o), cfs::Error);
  EXPECT_THROW(apply_composefs_options("verity=1", &o), cfs::Error);
  try {
    apply_composefs_options("basedir=/x,bogus=1", &o);
    FAIL();
  } catch (const cfs::Error& e) {
    EXPECT_STREQ(e.what(), "unsupported composefs mount option: bogus=1");
  }
}

// A block device of this machine with a fake /sys/dev/block describing it as a loop device.
TEST(MountOptions, HelperSourceOnALoopDeviceIsItsBackingFile) {
  namespace fs = std::filesystem;
  std::string device;
  struct stat st {};
  for (const auto& e : fs::directory_iterator("/dev"))
    if (::stat(e.path().c_str(), &st) == 0 && S_ISBLK(st.st_mode)) {
      device = e.path();
      break;
    }
  if (device.empty()) GTEST_SKIP() << "no block device in /dev";
  fs::path sysfs = fs::temp_directory_path() / ("cfs-sysfs-" + std::to_string(::getpid()));
  fs::path entry =
      sysfs / (std::to_string(major(st.st_rdev)) + ":" + std::to_string(minor(st.st_rdev)));
  fs::create_directories(entry);
  // Not a loop device (no loop/ directory): unchanged. Nor are regular files.
  EXPECT_EQ(helper_image_source(device, sysfs), device);
  EXPECT_EQ(helper_image_source("/etc/hostname", sysfs), "/etc/hostname");
  EXPECT_EQ(helper_image_source("/no/such/image", sysfs), "/no/such/image");
  fs::create_directories(entry / "loop");
  std::ofstream(entry / "loop/backing_file") << "/srv/images/with space.cfs\n";
  EXPECT_EQ(helper_image_source(device, sysfs), "/srv/images/with space.cfs");
  std::ofstream(entry / "loop/backing_file") << "/srv/images/old.cfs (deleted)\n";
  try {
    helper_image_source(device, sysfs);
    ADD_FAILURE() << "a deleted backing file was accepted";
  } catch (const cfs::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/srv/images/old.cfs was deleted"), std::string::npos)
        << e.what();
  }
  fs::remove_all(sysfs);
}

TEST(KernelCmdline, FindsEveryComposefsForm) {
  auto images = parse_kernel_cmdline(
      "BOOT_IMAGE=/vmlinuz root=UUID=1 composefs.digest=v1-sha256-12:" + kHex256 +
      " \"composefs.digest=?v1-sha512-12:" + kHex512 + "\" composefs=?" + kHex256 +
      " composefs=" + kHex512 + " composefs.other=1 quiet\n");
  ASSERT_EQ(images.size(), 4u);
  EXPECT_EQ(images[0].digest.algorithm(), cfs::HashAlgorithm::sha256);
  EXPECT_FALSE(images[0].insecure);
  EXPECT_EQ(images[1].digest.algorithm(), cfs::HashAlgorithm::sha512);
  EXPECT_EQ(images[1].digest.hex(), kHex512);
  EXPECT_TRUE(images[1].insecure);
  EXPECT_TRUE(images[2].insecure);
  EXPECT_EQ(images[3].digest.algorithm(), cfs::HashAlgorithm::sha512);
  EXPECT_TRUE(parse_kernel_cmdline("root=/dev/sda quiet").empty());
}

TEST(KernelCmdline, MalformedComposefsArgumentsAreErrors) {
  EXPECT_THROW(parse_kernel_cmdline("composefs.digest=v1-sha256-12:" + kHex512), cfs::Error);
  EXPECT_THROW(parse_kernel_cmdline("composefs.digest=v1-sha256-16:" + kHex256), cfs::Error);
  EXPECT_THROW(parse_kernel_cmdline("composefs.digest=" + kHex256), cfs::Error);
  EXPECT_THROW(parse_kernel_cmdline("composefs=xyz"), cfs::Error);
}

TEST(SetupRootConfig, ReadsTheTomlSubset) {
  SetupRootConfig defaults = parse_setup_root_config("", "c");
  EXPECT_EQ(defaults.etc, StateMount::overlay);
  EXPECT_EQ(defaults.var, StateMount::bind);
  SetupRootConfig c = parse_setup_root_config(
      "# comment\n[root]\ntransient = false\n\n[etc]\nmount = \"bind\"  # trailing\n"
      "[var]\ntransient = true\n",
      "c");
  EXPECT_FALSE(c.root_transient);
  EXPECT_EQ(c.etc, StateMount::bind);
  EXPECT_EQ(c.var, StateMount::transient);
  EXPECT_TRUE(parse_setup_root_config("[root]\ntransient = true\n", "c").root_transient);
}

TEST(SetupRootConfig, ErrorsNameFileAndLine) {
  auto message = [](const std::string& text) {
    try {
      parse_setup_root_config(text, "conf.toml");
    } catch (const cfs::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message("[etc]\nmount = overlay\n"), "conf.toml:2: mount takes a quoted string");
  EXPECT_EQ(message("[usr]\n"),
            "conf.toml:1: unknown section [usr] (expected [root], [etc], [var])");
  EXPECT_EQ(message("mount = \"bind\"\n"), "conf.toml:1: mount outside of a section");
  EXPECT_EQ(message("[root]\ntransient = yes\n"), "conf.toml:2: transient must be true or false");
  EXPECT_EQ(message("[root]\nmount = \"bind\"\n"), "conf.toml:2: unknown key mount in [root]");
  EXPECT_EQ(message("[var]\nsize = 3\n"), "conf.toml:2: unknown key size in [var]");
}

TEST(KernelOverrides, ReadFromEnvironment) {
  ::setenv("CFS_MOUNT_FORCE_TIER", "legacy-dataonly", 1);
  ::setenv("CFS_MOUNT_FORCE_LOOP", "1", 1);
  ::unsetenv("CFS_MOUNT_FORCE_ATTACHED");
  KernelOverrides o = KernelOverrides::from_environment();
  EXPECT_EQ(o.force_tier, OverlayTier::legacy_dataonly);
  EXPECT_TRUE(o.force_loop);
  EXPECT_FALSE(o.force_attached);
  ::setenv("CFS_MOUNT_FORCE_TIER", "bogus", 1);
  EXPECT_THROW(KernelOverrides::from_environment(), cfs::Error);
  ::unsetenv("CFS_MOUNT_FORCE_TIER");
  ::unsetenv("CFS_MOUNT_FORCE_LOOP");
}

}  // namespace
