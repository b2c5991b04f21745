// `cfs-mount setup-root` in a private mount namespace with a fake /sysroot and cmdline file.
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>

#include "cfs/fd.h"
#include "kmount_fixture.h"

namespace fs = std::filesystem;
using namespace cfs::test;

namespace {

class SetupRootTest : public PrivilegedMountTest {
 protected:
  void SetUp() override {
    PrivilegedMountTest::SetUp();
    if (IsSkipped()) return;
    sysroot = dir / "sysroot";
    std::string repo = sysroot + "/composefs";
    fs::create_directories(repo + "/images");
    populate_source_tree(dir / "src");
    image = build_image(dir / "src", repo + "/objects", repo + "/images/tmp");
    hex = image.digest.hex();
    fs::rename(repo + "/images/tmp", repo + "/images/" + hex);
    image.path = repo + "/images/" + hex;
    // After setup-root the physical root is only visible below the new root's /sysroot.
    state = sysroot + "/sysroot/state/deploy/" + hex;
    write_file(sysroot + "/marker", "physical root\n");
  }

  RunResult setup_root(const std::string& cmdline, const std::string& config = "",
                       const std::string& env = "") {
    write_file(dir / "cmdline", cmdline + "\n");
    std::string config_path = dir / "setup-root.conf";
    if (!config.empty()) write_file(config_path, config);
    // The gpt-auto-root workaround looks at test paths, never the host's /dev and /run.
    return run_tool("setup-root --cmdline " + (dir / "cmdline") + " --sysroot " + sysroot +
                        " --config " + config_path + " --gpt-auto-root " + (dir / "gpt-auto-root") +
                        " --volatile-root " + (dir / "volatile-root"),
                    env);
  }

  std::string sysroot, hex, state;
  BuiltImage image;
};

// systemd#35017: /run/systemd/volatile-root names the gpt-auto root's block device, so
// systemd finds the physical root below the composefs one; an existing link is kept.
TEST_F(SetupRootTest, LinksVolatileRootToTheGptAutoRootDevice) {
  RunResult r = setup_root("composefs.digest=?v1-sha256-12:" + hex);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("gpt-auto-root: No such file or directory"), std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::is_symlink(dir / "volatile-root"));
  detach_all_below(dir.path());
  ASSERT_EQ(::mknod((dir / "gpt-auto-root").c_str(), S_IFBLK | 0600, makedev(7, 200)), 0);
  r = setup_root("composefs.digest=?v1-sha256-12:" + hex);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(fs::read_symlink(dir / "volatile-root"), "/dev/block/7:200") << r.output;
  detach_all_below(dir.path());
  fs::remove(dir / "volatile-root");
  fs::create_symlink("/dev/block/1:1", dir / "volatile-root");
  r = setup_root("composefs.digest=?v1-sha256-12:" + hex);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("exists already; kept"), std::string::npos) << r.output;
  EXPECT_EQ(fs::read_symlink(dir / "volatile-root"), "/dev/block/1:1");
}

TEST_F(SetupRootTest, MountsImageWithEtcOverlayAndVarBind) {
  RunResult r = setup_root("root=/dev/vda rw composefs.digest=?v1-sha256-12:" + hex + " quiet");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("image " + hex + " (insecure"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("new root ready on " + sysroot), std::string::npos) << r.output;

  // The new root is the image.
  EXPECT_EQ(cfs::read_file(sysroot + "/big"), cfs::read_file(dir / "src/big"));
  EXPECT_FALSE(fs::exists(sysroot + "/marker"));
  // /etc: image content, writes land in the state directory's upper.
  EXPECT_EQ(cfs::read_file(sysroot + "/etc/app.conf"), "setting = 1\n");
  write_file(sysroot + "/etc/hostname", "configured\n");
  EXPECT_EQ(cfs::read_file(state + "/etc/upper/hostname"), "configured\n");
  EXPECT_EQ(fs::status(state + "/etc/work").permissions(), fs::perms::owner_all);
  // /var: the state directory itself.
  write_file(sysroot + "/var/log-entry", "x");
  EXPECT_TRUE(fs::exists(state + "/var/log-entry"));
  // The physical root stays reachable below the new root.
  EXPECT_EQ(cfs::read_file(sysroot + "/sysroot/marker"), "physical root\n");
  EXPECT_TRUE(fs::exists(sysroot + "/sysroot/composefs/images/" + hex));

  // Booting again (a new namespace-less run after taking it all down) keeps the /etc change.
  detach_all_below(dir.path());
  r = setup_root("composefs=?" + hex);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(cfs::read_file(sysroot + "/etc/hostname"), "configured\n");
}

TEST_F(SetupRootTest, ConfigChoosesTransientEtcAndNoVar) {
  RunResult r =
      setup_root("composefs.digest=?v1-sha256-12:" + hex,
                 "# test config\n[etc]\nmount = \"transient\"\n[var]\nmount = \"none\"\n");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("etc=transient var=none"), std::string::npos) << r.output;
  write_file(sysroot + "/etc/hostname", "temporary\n");
  EXPECT_EQ(cfs::read_file(sysroot + "/etc/hostname"), "temporary\n");
  EXPECT_FALSE(fs::exists(state + "/etc/upper/hostname"));
  // /var is the image's (read-only) directory.
  EXPECT_NE(::access((sysroot + "/var").c_str(), F_OK), -1);
  EXPECT_LT(::mkdir((sysroot + "/var/x").c_str(), 0755), 0);
  EXPECT_EQ(errno, EROFS);
}

// [root] transient = true: the whole root is writable and forgets its changes at the next boot,
// while /etc (overlay) and /var (bind) still keep theirs in the state directory.
TEST_F(SetupRootTest, TransientRootForgetsChangesAndStateKeepsThem) {
  const std::string config = "[root]\ntransient = true\n";
  RunResult r = setup_root("composefs.digest=?v1-sha256-12:" + hex, config);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("root=transient etc=overlay var=bind"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("/: transient overlay over the image"), std::string::npos) << r.output;
  EXPECT_EQ(cfs::read_file(sysroot + "/big"), cfs::read_file(dir / "src/big"));
  write_file(sysroot + "/big", "changed\n");
  write_file(sysroot + "/new-in-root", "x");
  fs::create_directories(sysroot + "/dir/made");
  write_file(sysroot + "/etc/hostname", "kept\n");
  write_file(sysroot + "/var/kept", "y");
  EXPECT_EQ(cfs::read_file(state + "/etc/upper/hostname"), "kept\n");
  EXPECT_TRUE(fs::exists(state + "/var/kept"));
  EXPECT_EQ(cfs::read_file(sysroot + "/sysroot/marker"), "physical root\n");
  // Nothing of the root's changes reached the physical root or the objects.
  EXPECT_FALSE(fs::exists(sysroot + "/sysroot/new-in-root"));

  // The next boot: the image as built, the state's changes back.
  detach_all_below(dir.path());
  r = setup_root("composefs.digest=?v1-sha256-12:" + hex, config);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(cfs::read_file(sysroot + "/big"), cfs::read_file(dir / "src/big"));
  EXPECT_FALSE(fs::exists(sysroot + "/new-in-root"));
  EXPECT_FALSE(fs::exists(sysroot + "/dir/made"));
  EXPECT_EQ(cfs::read_file(sysroot + "/etc/hostname"), "kept\n");
  EXPECT_TRUE(fs::exists(sysroot + "/var/kept"));
  detach_all_below(dir.path());

  // With a transient /etc as well, and on the oldest tier.
  r = setup_root("composefs.digest=?v1-sha256-12:" + hex, config + "[etc]\nmount = \"transient\"\n",
                 "CFS_MOUNT_FORCE_TIER=legacy-lower CFS_MOUNT_FORCE_LOOP=1");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(cfs::read_file(sysroot + "/etc/hostname"), cfs::read_file(dir / "src/etc/hostname"));
  write_file(sysroot + "/etc/hostname", "lost\n");
  write_file(sysroot + "/new-in-root", "x");
  EXPECT_EQ(cfs::read_file(state + "/etc/upper/hostname"), "kept\n");
}

TEST_F(SetupRootTest, FirstExistingImageWinsAndEveryTierWorks) {
  std::string absent(64, 'e');
  for (const char* env : {"CFS_MOUNT_FORCE_TIER=legacy-lower CFS_MOUNT_FORCE_LOOP=1",
                          "CFS_MOUNT_FORCE_TIER=string"}) {
    RunResult r = setup_root(
        "composefs.digest=?v1-sha256-12:" + absent + " composefs.digest=?v1-sha256-12:" + hex, "",
        env);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("image " + absent + " not in"), std::string::npos) << r.output;
    EXPECT_EQ(cfs::read_file(sysroot + "/etc/app.conf"), "setting = 1\n");
    detach_all_below(dir.path());
  }
}

TEST_F(SetupRootTest, FailuresAreClearAndLeaveNothingMounted) {
  struct Case {
    std::string cmdline, config, message;
  };
  std::vector<Case> cases = {
      // Secure boot: the image must carry fs-verity, which this host cannot provide.
      {"composefs.digest=v1-sha256-12:" + hex, "", "has no fs-verity, but verity is required"},
      {"root=/dev/sda1 quiet", "", "no composefs.digest= or composefs= argument"},
      {"composefs.digest=?v1-sha256-12:" + std::string(64, 'e'), "",
       "none of the images named on the kernel command line exists"},
      {"composefs.digest=?v1-md5-12:" + hex, "", "unknown digest kind v1-md5-12"},
      {"composefs.digest=?v1-sha256-12:" + hex, "[etc]\nmount = \"sideways\"\n",
       "setup-root.conf:2: mount = \"sideways\""},
  };
  for (const Case& c : cases) {
    fs::remove(dir / "setup-root.conf");
    RunResult r = setup_root(c.cmdline, c.config);
    EXPECT_EQ(r.status, 1) << c.cmdline;
    EXPECT_NE(r.output.find("composefs-setup-root: FAILED: "), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << r.output;
    EXPECT_EQ(mounts_below(dir.path()), std::vector<std::string>{});
  }

  // A failure after the root is mounted (the image has no /var to bind over) takes it down.
  fs::remove_all(dir / "src/var");
  BuiltImage no_var = build_image(dir / "src", sysroot + "/composefs/objects", dir / "novar.cfs");
  fs::rename(dir / "novar.cfs", sysroot + "/composefs/images/" + no_var.digest.hex());
  fs::remove(dir / "setup-root.conf");
  RunResult r = setup_root("composefs.digest=?v1-sha256-12:" + no_var.digest.hex());
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("the image's /var"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("taken down again"), std::string::npos) << r.output;
  EXPECT_EQ(mounts_below(dir.path()), std::vector<std::string>{});
  EXPECT_EQ(leftover_temp_dirs(),
            std::vector<std::string>{});  // The same with a transient root: its tmpfs and overlay
                                          // come off as well.
  r = setup_root("composefs.digest=?v1-sha256-12:" + no_var.digest.hex(),
                 "[root]\ntransient = true\n");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("/: transient overlay"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("taken down again"), std::string::npos) << r.output;
  EXPECT_EQ(mounts_below(dir.path()), std::vector<std::string>{});
}

TEST_F(SetupRootTest, SymlinksInTheStateTreeOrRepositoryAreNotFollowed) {
  const std::string cmdline = "composefs.digest=?v1-sha256-12:" + hex;
  // sysroot/state pointing elsewhere: root would create (and bind-mount) directories there.
  const std::string outside = dir / "outside";
  fs::create_directories(outside);
  fs::create_symlink(outside, sysroot + "/state");
  RunResult r = setup_root(cmdline);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find(sysroot + "/state/deploy/" + hex + "/etc/upper"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("state is a symlink"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::is_empty(outside)) << "setup-root created directories outside the sysroot";
  EXPECT_EQ(mounts_below(dir.path()), std::vector<std::string>{});
  fs::remove(sysroot + "/state");

  // A deeper component of the state path, planted as a symlink, is refused the same way.
  fs::create_directories(sysroot + "/state/deploy");
  fs::create_symlink(outside, sysroot + "/state/deploy/" + hex);
  r = setup_root(cmdline);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("is a symlink"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::is_empty(outside));
  EXPECT_EQ(mounts_below(dir.path()), std::vector<std::string>{});
  fs::remove_all(sysroot + "/state");

  // The repository's objects/ replaced by a symlink to another tree of objects.
  fs::rename(sysroot + "/composefs/objects", dir / "objects-elsewhere");
  fs::create_symlink(dir / "objects-elsewhere", sysroot + "/composefs/objects");
  r = setup_root(cmdline);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("composefs/objects: is a symlink"), std::string::npos) << r.output;
  EXPECT_EQ(mounts_below(dir.path()), std::vector<std::string>{});
}

}  // namespace
