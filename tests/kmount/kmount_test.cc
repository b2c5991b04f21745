// Privileged tests of cfs-mount against the running kernel (root; a private mount namespace).
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <cstddef>

#include "cfs/erofs/format.h"
#include "cfs/erofs/reader.h"
#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/fsverity.h"
#include "kmount_fixture.h"

namespace fs = std::filesystem;
using namespace cfs::test;

namespace {

class KmountTest : public PrivilegedMountTest {
 protected:
  void SetUp() override {
    PrivilegedMountTest::SetUp();
    if (IsSkipped()) return;
    src = dir / "src";
    mnt = dir / "mnt";
    fs::create_directories(mnt);
    populate_source_tree(src);
    image = build_image(src, dir / "objects", dir / "image.cfs");
    expected = describe_tree(src);
  }

  void TearDown() override {
    if (::geteuid() == 0) expect_nothing_left();
    PrivilegedMountTest::TearDown();
  }

  void expect_nothing_left() {
    EXPECT_EQ(mounts_below(dir.path()), std::vector<std::string>{});
    EXPECT_EQ(loop_devices_for(image.path), std::vector<std::string>{});
    EXPECT_EQ(leftover_temp_dirs(), std::vector<std::string>{});
  }

  RunResult mount_file(const std::string& extra = "", const std::string& env = "") {
    return run_tool("-v --basedir " + image.objects + " " + extra + " " + image.path + " " + mnt,
                    env);
  }

  void unmount() { ASSERT_EQ(::umount2(mnt.c_str(), 0), 0) << std::strerror(errno); }

  std::string src, mnt;
  BuiltImage image;
  std::map<std::string, std::string> expected;
};

std::string read_or_errno(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return "errno " + std::to_string(errno);
  char buf[64];
  ssize_t n = ::read(fd, buf, sizeof buf);
  int code = errno;
  ::close(fd);
  return n < 0 ? "errno " + std::to_string(code) : std::string(buf, static_cast<size_t>(n));
}

TEST_F(KmountTest, BinaryIsStatic) {
  // No dynamic section and no program interpreter: it runs in an initramfs without ld.so.
  // (readelf comes with binutils, which every build host has; `file` may be missing.)
  for (const char* name : {"cfs-mount", "mount.composefs"}) {
    std::string out;
    ASSERT_EQ(run("readelf -d -l " + binary_path(name) + " 2>&1", &out), 0);
    EXPECT_NE(out.find("There is no dynamic section in this file."), std::string::npos) << out;
    EXPECT_EQ(out.find("INTERP"), std::string::npos) << out;
  }
}

TEST_F(KmountTest, HelperPrintsUsage) {
  // mount.composefs -h is the usage (C's helper has it), not an "unknown flag" error.
  for (const char* flag : {"-h", "--help"}) {
    std::string out;
    ASSERT_EQ(run(binary_path("mount.composefs") + " " + flag + " 2>&1", &out), 0) << out;
    EXPECT_EQ(out.rfind("usage: mount.composefs", 0), 0u) << out;
    EXPECT_NE(out.find("basedir="), std::string::npos) << out;
  }
  std::string out;
  EXPECT_NE(run(binary_path("mount.composefs") + " -x img mnt 2>&1", &out), 0);
  EXPECT_EQ(out, "mount.composefs: unknown flag -x (-h for usage)\n");
}

TEST_F(KmountTest, DefaultPathOnThisKernelIsDetachedFdTier) {
  RunResult r = mount_file();
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("tier=fd erofs=file(detached)"), std::string::npos) << r.output;
  EXPECT_EQ(describe_tree(mnt), expected);
  // Only the overlay is visible: the EROFS layer stays detached.
  std::vector<std::string> mounts = mounts_below(dir.path());
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_NE(mounts[0].find(" - overlay composefs ro,"), std::string::npos) << mounts[0];
  unmount();
}

struct TierCase {
  std::string tier;
  bool loop;
  bool attached;
};

class KmountTierTest : public KmountTest, public ::testing::WithParamInterface<TierCase> {};

TEST_P(KmountTierTest, ContentsEqualTheImage) {
  const TierCase& c = GetParam();
  std::string env = "CFS_MOUNT_FORCE_TIER=" + c.tier;
  if (c.loop) env += " CFS_MOUNT_FORCE_LOOP=1";
  if (c.attached) env += " CFS_MOUNT_FORCE_ATTACHED=1";
  RunResult r = mount_file("", env);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("tier=" + c.tier + " "), std::string::npos) << r.output;
  bool attached = c.attached || c.tier.starts_with("legacy");
  EXPECT_NE(r.output.find(attached ? "(attached)" : "(detached)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(c.loop ? "erofs=/dev/loop" : "erofs=file"), std::string::npos)
      << r.output;
  if (c.loop) {
    EXPECT_EQ(loop_devices_for(image.path).size(), 1u);
  }
  EXPECT_EQ(describe_tree(mnt), expected);
  // The temporary attachment is gone once the overlay exists.
  EXPECT_EQ(leftover_temp_dirs(), std::vector<std::string>{});
  EXPECT_EQ(mounts_below(dir.path()).size(), 1u);
  unmount();
}

INSTANTIATE_TEST_SUITE_P(
    AllPaths, KmountTierTest,
    ::testing::Values(TierCase{"fd", false, false}, TierCase{"fd", true, false},
                      TierCase{"fd", false, true}, TierCase{"string", false, false},
                      TierCase{"string", true, false}, TierCase{"string", false, true},
                      TierCase{"legacy-dataonly", false, true},
                      TierCase{"legacy-dataonly", true, true},
                      TierCase{"legacy-lower", false, true}, TierCase{"legacy-lower", true, true}),
    [](const auto& info) {
      std::string name = info.param.tier + (info.param.loop ? "_loop" : "_file") +
                         (info.param.attached ? "_attached" : "");
      std::replace(name.begin(), name.end(), '-', '_');
      return name;
    });

TEST_F(KmountTest, MountByIdAndRefFromRepository) {
  std::string repo = dir / "repo";
  fs::create_directories(repo + "/images/refs/os");
  fs::rename(image.objects, repo + "/objects");
  write_file(repo + "/meta.json", "{\"version\":1,\"algorithm\":\"fsverity-sha256-12\"}\n");
  fs::copy_file(image.path, repo + "/images/" + image.digest.hex());
  fs::create_symlink("../../" + image.digest.hex(), repo + "/images/refs/os/stable");

  RunResult r = run_tool("-v --repo " + repo + " " + image.digest.hex() + " " + mnt);
  ASSERT_EQ(r.status, 0) << r.output;
  // An insecure repository (meta.json without fs-verity): the id is still checked, in userspace.
  EXPECT_NE(r.output.find("digest-check=userspace"), std::string::npos) << r.output;
  EXPECT_EQ(describe_tree(mnt), expected);
  unmount();

  r = run_tool("-v --repo " + repo + " os/stable " + mnt);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(describe_tree(mnt), expected);
  unmount();

  r = run_tool("--repo " + repo + " docker.io/library/fedora:40 " + mnt);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("OCI references are not handled"), std::string::npos) << r.output;

  std::string absent(64, 'a');
  r = run_tool("--repo " + repo + " " + absent + " " + mnt);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("no image " + absent + " in images/"), std::string::npos) << r.output;

  // An image whose bytes no longer match its name is refused.
  std::string tampered = repo + "/images/" + image.digest.hex();
  {
    std::fstream f(tampered, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(0, std::ios::end);
    f << "trailing garbage";
  }
  r = run_tool("--repo " + repo + " " + image.digest.hex() + " " + mnt);
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("Image has wrong fs-verity"), std::string::npos) << r.output;
  image.path = tampered;  // for the loop-device check in TearDown
}

TEST_F(KmountTest, RepositoryFifoAndSymlinksAreRefusedNotFollowed) {
  std::string repo = dir / "repo";
  fs::create_directories(repo + "/images/refs");
  fs::rename(image.objects, repo + "/objects");
  fs::copy_file(image.path, repo + "/images/" + image.digest.hex());
  const std::string id = image.digest.hex();

  // A FIFO as meta.json: an error at once, not a boot that hangs ("timeout" catches a hang).
  ASSERT_EQ(::mkfifo((repo + "/meta.json").c_str(), 0644), 0);
  RunResult r = run_tool("--repo " + repo + " " + id + " " + mnt, "timeout 20");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find(repo + "/meta.json: not a regular file"), std::string::npos) << r.output;
  fs::remove(repo + "/meta.json");

  // objects/ a symlink to objects elsewhere: refused, nothing mounted.
  fs::rename(repo + "/objects", dir / "objects-elsewhere");
  fs::create_symlink(dir / "objects-elsewhere", repo + "/objects");
  r = run_tool("--repo " + repo + " " + id + " " + mnt, "timeout 20");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find(repo + "/objects: is a symlink"), std::string::npos) << r.output;
  // The same when the image is given as a path and only the objects come from --repo.
  r = run_tool("--repo " + repo + " " + repo + "/images/" + id + " " + mnt, "timeout 20");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find(repo + "/objects: is a symlink"), std::string::npos) << r.output;
  fs::remove(repo + "/objects");
  fs::rename(dir / "objects-elsewhere", repo + "/objects");

  // images/<id> a symlink out of the repository (to a good image): not followed.
  fs::rename(repo + "/images/" + id, dir / "image-elsewhere");
  fs::create_symlink(dir / "image-elsewhere", repo + "/images/" + id);
  r = run_tool("--repo " + repo + " " + id + " " + mnt, "timeout 20");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("images/" + id + ": links to " + dir.path()), std::string::npos)
      << r.output;
  image.path = dir / "image-elsewhere";  // for the loop-device check in TearDown
}

TEST_F(KmountTest, OptionsMayFollowThePositionals) {
  std::string upper = dir / "upper", work = dir / "work";
  fs::create_directories(upper);
  fs::create_directories(work);
  RunResult r = run_tool(image.path + " " + mnt + " --basedir " + image.objects +
                         " --rw --upperdir " + upper + " --workdir " + work + " -v");
  ASSERT_EQ(r.status, 0) << r.output;
  write_file(mnt + "/after", "x");
  unmount();
  EXPECT_TRUE(fs::exists(upper + "/after"));
}

TEST_F(KmountTest, DigestIsCheckedBeforeMounting) {
  RunResult r = mount_file("--digest " + image.digest.hex());
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("digest-check=userspace"), std::string::npos) << r.output;
  unmount();

  std::string wrong = cfs::fsverity_digest("something else").hex();
  for (const char* env : {"", "CFS_MOUNT_FORCE_LOOP=1"}) {
    r = mount_file("--digest " + wrong, env);
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.output.find("Image has wrong fs-verity: expected sha256:" + wrong),
              std::string::npos)
        << r.output;
    EXPECT_NE(r.output.find("refusing to mount"), std::string::npos) << r.output;
    expect_nothing_left();
  }
  r = mount_file("--digest 1234");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("not a sha256 or sha512 digest"), std::string::npos) << r.output;
}

TEST_F(KmountTest, VerityOptionPlumbing) {
  // This host has no fs-verity: overlayfs accepts verity=require, but every external file then
  // fails to read; inline files are unaffected.
  RunResult r = mount_file("--verity require");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("verity=require"), std::string::npos) << r.output;
  std::vector<std::string> mounts = mounts_below(dir.path());
  ASSERT_EQ(mounts.size(), 1u);
  EXPECT_NE(mounts[0].find("verity=require"), std::string::npos) << mounts[0];
  EXPECT_EQ(read_or_errno(mnt + "/big"), "errno " + std::to_string(EIO));
  EXPECT_EQ(read_or_errno(mnt + "/small"), "inline content\n");
  unmount();

  for (const char* tier : {"string", "legacy-dataonly", "legacy-lower"}) {
    r = mount_file("--verity require", std::string("CFS_MOUNT_FORCE_TIER=") + tier);
    ASSERT_EQ(r.status, 0) << tier << r.output;
    mounts = mounts_below(dir.path());
    ASSERT_EQ(mounts.size(), 1u);
    EXPECT_NE(mounts[0].find("verity=require"), std::string::npos) << mounts[0];
    unmount();
  }

  r = mount_file("--verity try");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("verity=require"), std::string::npos) << r.output;
  unmount();

  // With verity required, a userspace digest of the image is not enough.
  r = mount_file("--verity require --digest " + image.digest.hex());
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("has no fs-verity, but verity is required"), std::string::npos)
      << r.output;

  r = mount_file("--verity sometimes");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("expected require, try or off"), std::string::npos) << r.output;
}

TEST_F(KmountTest, WritableMountKeepsChangesInUpperOnly) {
  std::string upper = dir / "upper", work = dir / "work";
  fs::create_directories(upper);
  fs::create_directories(work);
  auto objects_before = describe_tree(image.objects);
  std::string image_bytes = cfs::read_file(image.path);

  RunResult r = mount_file("--rw --upperdir " + upper + " --workdir " + work);
  ASSERT_EQ(r.status, 0) << r.output;
  write_file(mnt + "/new-file", "written\n");
  write_file(mnt + "/big", "replaced\n");
  ASSERT_EQ(::unlink((mnt + "/dir/nested/other").c_str()), 0);
  unmount();

  EXPECT_EQ(cfs::read_file(upper + "/new-file"), "written\n");
  EXPECT_EQ(cfs::read_file(upper + "/big"), "replaced\n");
  struct stat st {};
  ASSERT_EQ(::lstat((upper + "/dir/nested/other").c_str(), &st), 0);  // a whiteout
  EXPECT_TRUE(S_ISCHR(st.st_mode) && st.st_rdev == 0);
  EXPECT_EQ(describe_tree(image.objects), objects_before);
  EXPECT_EQ(cfs::read_file(image.path), image_bytes);

  // Mounted again read-only with the same upper: the changes are there, writes are refused.
  r = mount_file("--upperdir " + upper + " --workdir " + work);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(cfs::read_file(mnt + "/big"), "replaced\n");
  EXPECT_FALSE(fs::exists(mnt + "/dir/nested/other"));
  EXPECT_LT(::open((mnt + "/x").c_str(), O_CREAT | O_WRONLY, 0644), 0);
  EXPECT_EQ(errno, EROFS);
  unmount();

  // And every tier handles the upper layer.
  for (const char* tier : {"string", "legacy-dataonly", "legacy-lower"}) {
    r = mount_file("--rw --upperdir " + upper + " --workdir " + work,
                   std::string("CFS_MOUNT_FORCE_TIER=") + tier);
    ASSERT_EQ(r.status, 0) << tier << r.output;
    write_file(mnt + "/by-" + std::string(tier), "x");
    unmount();
    EXPECT_TRUE(fs::exists(upper + "/by-" + std::string(tier)));
  }

  r = mount_file("--rw");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("a writable mount needs an upper and a work directory"),
            std::string::npos)
      << r.output;
}

TEST_F(KmountTest, ClearErrorsAndNothingLeftBehind) {
  struct Case {
    std::string args, env, message;
  };
  write_file(dir / "not-a-dir", "x");
  write_file(dir / "random.img", std::string(8192, 'r'));
  std::vector<Case> cases = {
      {"--basedir " + image.objects + " " + (dir / "missing.cfs") + " " + mnt, "",
       "missing.cfs: no such image file"},
      {"--basedir " + image.objects + " " + image.path + " " + (dir / "not-a-dir"), "",
       "not-a-dir: mount point is not a directory"},
      {"--basedir " + image.objects + " " + image.path + " " + (dir / "nowhere"), "",
       "nowhere: mount point does not exist"},
      {"--basedir " + (dir / "no-objects") + " " + image.path + " " + mnt, "",
       "no-objects: object directory does not exist"},
      {"--basedir " + image.objects + " " + (dir / "random.img") + " " + mnt, "",
       "random.img: not an EROFS image"},
      // Fails only after the EROFS layer (and its loop device) exist: the work directory is on
      // another filesystem than the upper one.
      {"--basedir " + image.objects + " --rw --upperdir " + (dir / "upper") +
           " --workdir /dev/shm " + image.path + " " + mnt,
       "CFS_MOUNT_FORCE_LOOP=1 CFS_MOUNT_FORCE_TIER=legacy-lower", "cannot mount on"},
      {"--basedir " + image.objects + " --rw --upperdir " + (dir / "upper") +
           " --workdir /dev/shm " + image.path + " " + mnt,
       "CFS_MOUNT_FORCE_LOOP=1", "cannot mount on"},
      {"--basedir " + image.objects + " " + image.path + " " + mnt, "CFS_MOUNT_FORCE_TIER=newest",
       "CFS_MOUNT_FORCE_TIER=newest: unknown tier"},
  };
  fs::create_directories(dir / "upper");
  for (const Case& c : cases) {
    RunResult r = run_tool(c.args, c.env);
    EXPECT_EQ(r.status, 1) << c.args;
    EXPECT_NE(r.output.find(c.message), std::string::npos) << c.args << "\n" << r.output;
    expect_nothing_left();
  }
}

TEST_F(KmountTest, MissingObjectIsAMountTimeErrorNamingIt) {
  std::string object_path = cfs::fsverity_digest_file(src + "/big").object_path();
  ASSERT_TRUE(fs::remove(image.objects + "/" + object_path));
  RunResult r = mount_file();
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(": 1 of 3 objects the image names are in no object directory: " +
                          object_path + " (mount anyway with --allow-missing-objects"),
            std::string::npos)
      << r.output;
  EXPECT_TRUE(mounts_below(dir.path()).empty());
  // The same through the mount(8) helper's option parsing.
  std::string out;
  EXPECT_NE(run(binary_path("mount.composefs") + " -o basedir=" + image.objects + " " + image.path +
                    " " + mnt + " 2>&1",
                &out),
            0);
  EXPECT_NE(out.find(object_path), std::string::npos) << out;
}

TEST_F(KmountTest, MissingObjectsAllowedFailTheReadNotTheMount) {
  std::string object = image.objects + "/" + cfs::fsverity_digest_file(src + "/big").object_path();
  ASSERT_TRUE(fs::remove(object));
  RunResult r = mount_file("--allow-missing-objects");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("objects=3(unchecked)"), std::string::npos) << r.output;
  std::string result = read_or_errno(mnt + "/big");
  // overlayfs looks the object up lazily at open: ENOENT ("lazy lowerdata lookup failed").
  EXPECT_EQ(result, "errno " + std::to_string(ENOENT));
  EXPECT_EQ(read_or_errno(mnt + "/small"), "inline content\n");
  unmount();
}

TEST_F(KmountTest, ImageTheStrictReaderRefusesNeverReachesTheKernel) {
  // A directory's nlink off by one: the kernel would mount it as it is; the reader names the
  // path and the rule, and nothing is mounted.
  std::string bytes = cfs::read_file(image.path);
  cfs::erofs::Image reader = cfs::erofs::Image::from_bytes(bytes, image.path);
  cfs::erofs::InodeInfo root = reader.root();
  cfs::erofs::Superblock sb;
  std::memcpy(&sb, bytes.data() + cfs::erofs::kSuperblockOffset, sizeof sb);
  // nids count 32-byte slots from meta_blkaddr; i_nlink's low byte is bumped.
  size_t nlink_offset = uint64_t{sb.meta_blkaddr.get()} * cfs::erofs::kBlockSize +
                        root.nid * cfs::erofs::kInodeSlotSize +
                        (root.extended ? offsetof(cfs::erofs::InodeExtended, i_nlink)
                                       : offsetof(cfs::erofs::InodeCompact, i_nlink));
  bytes[nlink_offset] = static_cast<char>(bytes[nlink_offset] + 1);
  { std::ofstream(image.path, std::ios::binary | std::ios::trunc) << bytes; }
  RunResult r = mount_file();
  EXPECT_NE(r.status, 0) << r.output;
  EXPECT_NE(r.output.find(image.path + ": /: "), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("nlink"), std::string::npos) << r.output;
  EXPECT_TRUE(mounts_below(dir.path()).empty());
}

TEST_F(KmountTest, MountComposefsHelperThroughMount8) {
  // mount(8) looks for /sbin/mount.composefs; give it ours in this namespace only.
  std::string sbin = dir / "sbin";
  fs::create_directories(sbin);
  fs::create_symlink(binary_path("cfs-mount"), sbin + "/mount.composefs");
  ASSERT_EQ(::mount(sbin.c_str(), "/sbin", nullptr, MS_BIND, nullptr), 0) << std::strerror(errno);

  // A comma in the object directory's name, escaped as the C tool expects.
  std::string objects = dir / "obj,store";
  fs::rename(image.objects, objects);
  image.objects = objects;
  std::string escaped = dir / "obj\\\\,store";
  std::string out;
  int status = run(
      "mount -t composefs -o ro,basedir=" + escaped + " " + image.path + " " + mnt + " 2>&1", &out);
  EXPECT_EQ(status, 0) << out;
  if (status == 0) {
    EXPECT_EQ(describe_tree(mnt), expected);
    unmount();
  }

  // busybox mount binds a regular-file source to a loop device before it runs the helper: the
  // helper mounts the loop's backing file, and the loop device goes with busybox's descriptor.
  if (run("busybox mount --help >/dev/null 2>&1") == 0) {
    status = run("busybox mount -t composefs -o ro,basedir=" + escaped + " " + image.path + " " +
                     mnt + " 2>&1",
                 &out);
    EXPECT_EQ(status, 0) << out;
    if (status == 0) {
      EXPECT_EQ(describe_tree(mnt), expected);
      // Mounted from the file (this kernel has file-backed EROFS), not from busybox's loop.
      EXPECT_EQ(loop_devices_for(image.path), std::vector<std::string>{});
      unmount();
    }
  } else {
    std::printf("busybox is not installed: the busybox mount case is not run\n");
  }

  status = run(
      "mount -t composefs -o basedir=" + escaped + ",tryverity " + image.path + " " + mnt + " 2>&1",
      &out);
  EXPECT_EQ(status, 0) << out;
  if (status == 0) {
    ASSERT_EQ(mounts_below(mnt).size(), 1u);
    EXPECT_NE(mounts_below(mnt)[0].find("verity=require"), std::string::npos);
    unmount();
  }

  // digest= implies verity, which a userspace digest cannot satisfy.
  status = run("mount -t composefs -o basedir=" + escaped + ",digest=" + image.digest.hex() + " " +
                   image.path + " " + mnt + " 2>&1",
               &out);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("has no fs-verity"), std::string::npos) << out;

  status = run(
      "mount -t composefs -o basedir=" + escaped + ",noverity " + image.path + " " + mnt + " 2>&1",
      &out);
  EXPECT_NE(status, 0);
  EXPECT_NE(out.find("unsupported composefs mount option: noverity"), std::string::npos) << out;
  ASSERT_EQ(::umount2("/sbin", 0), 0);
}

TEST_F(KmountTest, IdmapShiftsOwnership) {
  // A child in a new user namespace where uid/gid 0 is 100000 outside.
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    if (::unshare(CLONE_NEWUSER) < 0) ::_exit(1);
    char c = 'x';
    if (::write(ready[1], &c, 1) != 1) ::_exit(1);
    ::pause();
    ::_exit(0);
  }
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  std::string proc = "/proc/" + std::to_string(child);
  write_file(proc + "/uid_map", "0 100000 65536\n");
  write_file(proc + "/gid_map", "0 100000 65536\n");

  RunResult r = mount_file("--idmap " + proc + "/ns/user");
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ASSERT_EQ(r.status, 0) << r.output;
  struct stat st {};
  ASSERT_EQ(::stat((mnt + "/small").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 100000u);
  EXPECT_EQ(st.st_gid, 100000u);
  EXPECT_EQ(cfs::read_file(mnt + "/big"), cfs::read_file(src + "/big"));
  unmount();

  r = mount_file("--idmap /proc/self/ns/nothing");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("/proc/self/ns/nothing"), std::string::npos) << r.output;
}

}  // namespace
