// The cfs-fuse command: clear errors before daemonising, clean exits on signals and on
// fusermount3 -u, daemon mode, and the unprivileged path (a throwaway user mounting through
// fusermount3).
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "cfs/erofs/reader.h"
#include "cfs/fd.h"
#include "cfs/store/images.h"
#include "cfs/store/repository.h"
#include "fuse_helpers.h"
#include "testdata.h"

namespace cfs::test {
namespace {

namespace fs = std::filesystem;

void require_fuse() {
  if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/fuse is not usable here";
}

bool have(const std::string& tool) {
  return run_argv({"sh", "-c", "command -v " + tool}) == 0;
}

// A small image with an inline file, an external file (object in dir/objects) and a symlink.
std::string make_image(const TempDir& dir) {
  std::string src = dir / "src";
  ::mkdir(src.c_str(), 0755);
  write_file(src + "/inline", "inline data\n");
  write_file(src + "/external", std::string(10000, 'e'));
  ::symlink("inline", (src + "/link").c_str());
  ::mkdir((src + "/sub").c_str(), 0755);
  write_file(src + "/sub/file", std::string(3000, 's'));
  ::mkdir((dir / "objects").c_str(), 0755);
  erofs::Tree tree = scan_with_objects(src, dir / "objects");
  std::string image = dir / "image.cfs";
  write_image_file(tree, image);
  ::mkdir((dir / "mnt").c_str(), 0755);
  return image;
}

TEST(FuseCli, ClearErrorsBeforeMounting) {
  TempDir dir;
  std::string image = make_image(dir);
  std::string out;
  EXPECT_EQ(run_argv({cfs_fuse_binary(), dir / "absent.cfs", dir / "mnt", "-f"}, &out), 1);
  EXPECT_NE(out.find(dir / "absent.cfs"), std::string::npos) << out;
  EXPECT_NE(out.find("No such file"), std::string::npos) << out;

  EXPECT_EQ(run_argv({cfs_fuse_binary(), image, dir / "no-such-dir", "-f"}, &out), 1);
  EXPECT_NE(out.find("mountpoint " + dir / "no-such-dir"), std::string::npos) << out;

  EXPECT_EQ(run_argv({cfs_fuse_binary(), image, image, "-f"}, &out), 1);
  EXPECT_NE(out.find("not a directory"), std::string::npos) << out;

  EXPECT_EQ(run_argv({cfs_fuse_binary(), image}, &out), 2);
  EXPECT_NE(out.find("usage"), std::string::npos) << out;
  EXPECT_EQ(
      run_argv({cfs_fuse_binary(), "--repo", dir / "r", "--basedir", dir / "o", image, dir / "mnt"},
               &out),
      2);
  EXPECT_EQ(run_argv({cfs_fuse_binary(), image, dir / "mnt", "-f", "-o", "no_such_option"}, &out),
            1);
  EXPECT_EQ(run_argv({cfs_fuse_binary(), image, dir / "mnt", "-f", "-o", "noatime,rw"}, &out), 2);
  EXPECT_NE(out.find("read-only"), std::string::npos) << out;
  EXPECT_FALSE(is_mounted(dir / "mnt"));
}

// A root server with allow_other and -o suid used to give other users the image's setuid
// binaries; suid and dev are refused, and every mount is nosuid,nodev.
TEST(FuseCli, SuidAndDevAreRefusedAndMountsAreNosuidNodev) {
  TempDir dir;
  std::string image = make_image(dir);
  std::string out;
  for (const char* opts : {"suid", "allow_other,suid", "dev", "nosuid,dev"}) {
    EXPECT_EQ(run_argv({cfs_fuse_binary(), image, dir / "mnt", "-f", "-o", opts}, &out), 2) << opts;
    EXPECT_NE(out.find("always nosuid,nodev"), std::string::npos) << out;
  }
  EXPECT_EQ(run_argv({cfs_fuse_binary(), image, dir / "mnt", "-f", "-osuid"}, &out), 2);
  EXPECT_FALSE(is_mounted(dir / "mnt"));

  if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/fuse is not usable here";
  FuseProcess fuse({image, dir / "mnt", "-f"}, dir / "mnt", dir / "log");
  ASSERT_TRUE(fuse.wait_mounted()) << fuse.log();
  char real[PATH_MAX];
  ASSERT_NE(::realpath((dir / "mnt").c_str(), real), nullptr);
  std::ifstream in("/proc/self/mountinfo");
  std::string line, options;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mnt;
    fields >> id >> parent >> devno >> root >> mnt >> options;
    if (mnt == real) break;
    options.clear();
  }
  EXPECT_NE(options.find("nosuid"), std::string::npos) << options;
  EXPECT_NE(options.find("nodev"), std::string::npos) << options;
}

// cfs-fuse --repo opens meta.json, images and objects/ only beneath the repository, never
// through a symlink, and never waits on a FIFO planted in place of a file.
TEST(FuseCli, RepositoryFifosAndSymlinksAreErrorsNotHangs) {
  TempDir dir;
  make_image(dir);
  const std::string repo = dir / "repo";
  std::string id;
  {
    store::Repository r = store::Repository::init(repo, {.insecure = true});
    id = store::create_image(r, dir / "src", std::nullopt).id.hex();
  }
  auto mount = [&](std::string* out) {
    return run_argv({"timeout", "20", cfs_fuse_binary(), "--repo", repo, id, dir / "mnt", "-f"},
                    out);
  };
  std::string out;
  const std::string object = repo + "/objects/" + id.substr(0, 2) + "/" + id.substr(2);
  fs::rename(object, dir / "image-object");
  ASSERT_EQ(::mkfifo(object.c_str(), 0644), 0);
  EXPECT_EQ(mount(&out), 1) << out;  // 124 would be timeout's: a hang
  EXPECT_NE(out.find(object + ": not a regular file"), std::string::npos) << out;
  fs::remove(object);
  fs::rename(dir / "image-object", object);

  fs::rename(repo + "/meta.json", dir / "meta.json");
  ASSERT_EQ(::mkfifo((repo + "/meta.json").c_str(), 0644), 0);
  EXPECT_EQ(mount(&out), 1) << out;
  EXPECT_NE(out.find(repo + "/meta.json: not a regular file"), std::string::npos) << out;
  fs::remove(repo + "/meta.json");
  fs::rename(dir / "meta.json", repo + "/meta.json");

  fs::rename(repo + "/objects", dir / "objects-elsewhere");
  fs::create_symlink(dir / "objects-elsewhere", repo + "/objects");
  EXPECT_EQ(mount(&out), 1) << out;
  EXPECT_NE(out.find(repo + "/objects: is a symlink"), std::string::npos) << out;
  EXPECT_FALSE(is_mounted(dir / "mnt"));
}

TEST(FuseCli, BusyMountpointIsRefused) {
  require_fuse();
  TempDir dir;
  std::string image = make_image(dir);
  FuseProcess first({image, dir / "mnt", "-f"}, dir / "mnt", dir / "log");
  ASSERT_TRUE(first.wait_mounted()) << first.log();
  std::string out;
  EXPECT_EQ(run_argv({cfs_fuse_binary(), image, dir / "mnt", "-f"}, &out), 1);
  EXPECT_NE(out.find("busy"), std::string::npos) << out;
  EXPECT_EQ(read_file(dir / "mnt/inline"), "inline data\n");  // the first one is unharmed
}

TEST(FuseCli, NoDevFuseIsReportedBeforeDaemonising) {
  if (::geteuid() != 0 || !have("unshare")) GTEST_SKIP() << "needs root and unshare(1)";
  TempDir dir;
  std::string image = make_image(dir);
  // A private mount namespace whose /dev lacks the fuse node.
  std::string out;
  int rc = run_argv({"unshare", "-m", "--propagation", "private", "sh", "-c",
                     "mount -t tmpfs none /dev && exec \"$0\" \"$1\" \"$2\"", cfs_fuse_binary(),
                     image, dir / "mnt"},
                    &out);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("/dev/fuse"), std::string::npos) << out;
  EXPECT_NE(out.find("FUSE is not available"), std::string::npos) << out;
}

TEST(FuseCli, SignalsUnmountAndExitCleanly) {
  require_fuse();
  TempDir dir;
  std::string image = make_image(dir);
  for (int sig : {SIGTERM, SIGINT}) {
    // The SIGINT round also serves object data by splice instead of copying.
    std::vector<std::string> args = {image, dir / "mnt", "-f", "--basedir", dir / "objects"};
    if (sig == SIGINT) args.push_back("--splice");
    FuseProcess fuse(args, dir / "mnt", dir / "log");
    ASSERT_TRUE(fuse.wait_mounted()) << fuse.log();
    EXPECT_EQ(read_file(dir / "mnt/external"), std::string(10000, 'e'));
    EXPECT_EQ(read_file(dir / "mnt/sub/file"), std::string(3000, 's'));
    // Handles still open when the signal comes never get a RELEASE: the server must free them
    // itself (the sanitizer build fails this test on a leak).
    UniqueFd held_file(::open((dir / "mnt/external").c_str(), O_RDONLY | O_CLOEXEC));
    UniqueFd held_dir(::open((dir / "mnt/sub").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    ASSERT_TRUE(held_file && held_dir);
    char byte;
    ASSERT_EQ(::read(held_file.get(), &byte, 1), 1);
    ASSERT_EQ(::kill(fuse.pid(), sig), 0);
    EXPECT_EQ(fuse.wait_exit(), 0) << "signal " << sig << ": " << fuse.log();
    EXPECT_FALSE(is_mounted(dir / "mnt"));
  }
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// The external file read with read(2) and through a mapping.
void expect_external_content(const std::string& path) {
  EXPECT_EQ(read_file(path), std::string(10000, 'e'));
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  void* map = ::mmap(nullptr, 10000, PROT_READ, MAP_PRIVATE, fd.get(), 0);
  ASSERT_NE(map, MAP_FAILED) << std::strerror(errno);
  EXPECT_EQ(std::string(static_cast<const char*>(map), 10000), std::string(10000, 'e'));
  ::munmap(map, 10000);
}

bool kernel_at_least(int major, int minor) {
  struct utsname u;
  if (::uname(&u) != 0) return false;
  int ma = 0, mi = 0;
  std::sscanf(u.release, "%d.%d", &ma, &mi);
  return ma > major || (ma == major && mi >= minor);
}

// As root on Linux 6.9+, object files are read by the kernel from the object itself: the
// server sees OPEN but no READ for them. --no-passthrough brings the READs back.
TEST(FusePassthrough, ObjectsAreReadByTheKernelAsRoot) {
  require_fuse();
  if (::geteuid() != 0) GTEST_SKIP() << "FUSE passthrough needs CAP_SYS_ADMIN";
  TempDir dir;
  std::string image = make_image(dir);
  {
    FuseProcess fuse({image, dir / "mnt", "-d", "--basedir", dir / "objects"}, dir / "mnt",
                     dir / "log");
    ASSERT_TRUE(fuse.wait_mounted()) << fuse.log();
    expect_external_content(dir / "mnt/external");
    EXPECT_EQ(read_file(dir / "mnt/sub/file"), std::string(3000, 's'));
    EXPECT_EQ(read_file(dir / "mnt/inline"), "inline data\n");  // image data: served
    if (!kernel_at_least(6, 9)) {
      EXPECT_NE(fuse.log().find("passthrough off"), std::string::npos) << fuse.log();
      GTEST_SKIP() << "this kernel has no FUSE passthrough (Linux 6.9+)";
    }
    std::string log = fuse.log();
    EXPECT_NE(log.find("FUSE passthrough on"), std::string::npos) << log;
    EXPECT_GE(count_of(log, "opcode: OPEN (14)"), 3u) << log;
    EXPECT_EQ(count_of(log, "opcode: READ (15)"), 1u) << "only the inline file is served\n" << log;
  }
  FuseProcess plain({image, dir / "mnt", "-d", "--no-passthrough", "--basedir", dir / "objects"},
                    dir / "mnt", dir / "log2");
  ASSERT_TRUE(plain.wait_mounted()) << plain.log();
  expect_external_content(dir / "mnt/external");
  std::string log = plain.log();
  EXPECT_EQ(log.find("FUSE passthrough"), std::string::npos) << log;
  EXPECT_GE(count_of(log, "opcode: READ (15)"), 1u) << log;
}

// Objects on a stacked filesystem (here overlayfs) cannot back a passthrough file: the
// server says so once and serves their data itself.
TEST(FusePassthrough, StackedObjectDirectoryFallsBackToTheServer) {
  require_fuse();
  if (::geteuid() != 0 || !kernel_at_least(6, 9))
    GTEST_SKIP() << "needs root and a kernel with FUSE passthrough (Linux 6.9+)";
  TempDir dir;
  std::string image = make_image(dir);
  std::filesystem::create_directories(dir / "empty");
  std::filesystem::create_directories(dir / "stacked");
  std::string opts = "ro,lowerdir=" + (dir / "objects") + ":" + (dir / "empty");
  ASSERT_EQ(::mount("overlay", (dir / "stacked").c_str(), "overlay", MS_RDONLY, opts.c_str()), 0)
      << std::strerror(errno);
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{dir / "stacked"};
  FuseProcess fuse({image, dir / "mnt", "-d", "--basedir", dir / "stacked"}, dir / "mnt",
                   dir / "log");
  ASSERT_TRUE(fuse.wait_mounted()) << fuse.log();
  expect_external_content(dir / "mnt/external");
  expect_external_content(dir / "mnt/external");
  std::string log = fuse.log();
  EXPECT_EQ(count_of(log, "FUSE passthrough refused"), 1u) << log;
  EXPECT_NE(log.find("stacked filesystem"), std::string::npos) << log;
  EXPECT_GE(count_of(log, "opcode: READ (15)"), 1u) << log;
}

// libfuse moves the server to "/", also in the foreground: a relative mountpoint must still be
// unmounted when the server stops (it used to be left behind, "not connected").
TEST(FuseCli, RelativeMountpointIsUnmountedOnExit) {
  require_fuse();
  TempDir dir;
  std::string image = make_image(dir);
  UniqueFd cwd(::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(cwd);
  ASSERT_EQ(::chdir(dir.path().c_str()), 0);
  struct Return {
    int fd;
    ~Return() { EXPECT_EQ(::fchdir(fd), 0); }
  } back{cwd.get()};
  FuseProcess fuse({image, "mnt", "-f", "--basedir", dir / "objects"}, dir / "mnt", dir / "log");
  ASSERT_TRUE(fuse.wait_mounted()) << fuse.log();
  EXPECT_EQ(read_file(dir / "mnt/inline"), "inline data\n");
  ASSERT_EQ(::kill(fuse.pid(), SIGTERM), 0);
  EXPECT_EQ(fuse.wait_exit(), 0) << fuse.log();
  EXPECT_FALSE(is_mounted(dir / "mnt")) << fuse.log();
  EXPECT_EQ(fuse.log().find("failed to unmount"), std::string::npos) << fuse.log();
}

// The number --stats logged for a counter ("cfs-fuse:   read      12"), or -1 if absent.
long long stat_of(const std::string& log, const std::string& counter) {
  std::string key = "cfs-fuse:   " + counter + " ";
  size_t at = log.find(key);
  if (at == std::string::npos) return -1;
  return std::stoll(log.substr(at + key.size()));
}

// --stats counts every request by kind. Reading a file six times costs the server the READs of
// one reading (the kernel serves the rest from its page cache: keep_cache) but six OPENs.
TEST(FuseCli, StatsCountRequestsAndCachedReadsNeverReachTheServer) {
  require_fuse();
  TempDir dir;
  std::string image = make_image(dir);
  std::map<int, std::string> logs;
  for (int readings : {1, 6}) {
    std::string log = dir / ("log" + std::to_string(readings));
    FuseProcess fuse(
        {image, dir / "mnt", "-f", "--stats", "--no-passthrough", "--basedir", dir / "objects"},
        dir / "mnt", log);
    ASSERT_TRUE(fuse.wait_mounted()) << fuse.log();
    for (int i = 0; i < readings; i++)
      EXPECT_EQ(read_file(dir / "mnt/external"), std::string(10000, 'e'));
    char value[8];
    EXPECT_EQ(::lgetxattr((dir / "mnt/inline").c_str(), "user.absent", value, 0), -1);
    EXPECT_EQ(errno, ENODATA);
    ASSERT_EQ(::kill(fuse.pid(), SIGTERM), 0);
    EXPECT_EQ(fuse.wait_exit(), 0) << fuse.log();
    logs[readings] = fuse.log();
  }
  const std::string& once = logs[1];
  const std::string& six = logs[6];
  EXPECT_NE(once.find("requests served:"), std::string::npos) << once;
  EXPECT_EQ(stat_of(once, "open"), 1) << once;
  EXPECT_EQ(stat_of(six, "open"), 6) << six;
  EXPECT_GE(stat_of(once, "read"), 1) << once;
  EXPECT_EQ(stat_of(six, "read"), stat_of(once, "read")) << once << six;
  EXPECT_EQ(stat_of(six, "getxattr"), 1) << six;
  EXPECT_EQ(stat_of(six, "  of which size queries"), 1) << six;
  EXPECT_EQ(stat_of(six, "  of which ENODATA"), 1) << six;
  EXPECT_NE(six.find("getxattr user.absent: 1"), std::string::npos) << six;
}

// The pid of the process whose command line is exactly args (the daemon we started).
std::optional<pid_t> find_process(const std::vector<std::string>& args) {
  std::string want;
  for (auto& a : args) want += a + '\0';
  for (auto& entry : std::filesystem::directory_iterator("/proc")) {
    std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(entry.path() / "cmdline");
    std::stringstream s;
    s << in.rdbuf();
    if (s.str() == want) return std::stoi(name);
  }
  return std::nullopt;
}

TEST(FuseCli, DaemonisesAndExitsOnUnmount) {
  require_fuse();
  TempDir dir;
  std::string image = make_image(dir);
  std::vector<std::string> args = {cfs_fuse_binary(), image, dir / "mnt", "--basedir",
                                   dir / "objects"};
  std::string out;
  ASSERT_EQ(run_argv(args, &out), 0) << out;  // returns once the mount is up
  struct Cleanup {
    std::string mnt;
    ~Cleanup() {
      if (is_mounted(mnt)) run_argv({"umount", "-l", mnt});
    }
  } cleanup{dir / "mnt"};
  ASSERT_TRUE(is_mounted(dir / "mnt"));
  EXPECT_EQ(read_file(dir / "mnt/sub/file"), std::string(3000, 's'));
  auto daemon = find_process(args);
  ASSERT_TRUE(daemon) << "daemon not found";
  ASSERT_EQ(run_argv({"fusermount3", "-u", dir / "mnt"}, &out), 0) << out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (::kill(*daemon, 0) == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_NE(::kill(*daemon, 0), 0) << "daemon still running after unmount";
}

TEST(FuseCli, UnprivilegedUserMountsThroughFusermount) {
  if (::geteuid() != 0) GTEST_SKIP() << "creating a throwaway user needs root";
  if (!have("useradd") || !have("userdel")) GTEST_SKIP() << "useradd/userdel missing";
  if (!have("fusermount3")) GTEST_SKIP() << "fusermount3 missing";
  if (::access("/dev/fuse", F_OK) != 0) GTEST_SKIP() << "no /dev/fuse";
  TempDir dir;
  ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  std::string image = make_image(dir);
  TempUser user;
  ASSERT_EQ(::chown((dir / "mnt").c_str(), user.as().uid, user.as().gid), 0);
  DevFuseMode dev;

  // With /dev/fuse closed to the user: a clear message, no mount.
  ASSERT_TRUE(dev.set(0600));
  std::string out;
  EXPECT_EQ(run_argv({cfs_fuse_binary(), image, dir / "mnt", "-f"}, &out, user.as()), 1);
  EXPECT_NE(out.find("/dev/fuse"), std::string::npos) << out;
  EXPECT_NE(out.find("0666"), std::string::npos) << out;

  ASSERT_TRUE(dev.set(0666));
  FuseProcess fuse({image, dir / "mnt", "-f", "--basedir", dir / "objects"}, dir / "mnt",
                   dir / "log", user.as());
  ASSERT_TRUE(fuse.wait_mounted()) << fuse.log();
  std::string expected = describe_tree(
      erofs::Image::open(image).to_tree(),
      [&](const erofs::Inode& in) { return sha256_hex(read_file(dir / "objects/" + in.payload)); });
  std::string seen_by_user =
      run_in_child_as(user.as(), [&] { return describe_mount(dir / "mnt"); });
  EXPECT_EQ(seen_by_user, expected);
  // Without allow_other, nobody else (not even root) may look inside.
  struct stat st;
  EXPECT_NE(::stat((dir / "mnt/inline").c_str(), &st), 0);
  EXPECT_EQ(errno, EACCES);
  // The user unmounts with fusermount3; the server notices and exits cleanly.
  ASSERT_EQ(run_argv({"fusermount3", "-u", dir / "mnt"}, &out, user.as()), 0) << out;
  EXPECT_EQ(fuse.wait_exit(), 0) << fuse.log();
  EXPECT_FALSE(is_mounted(dir / "mnt"));
}

}  // namespace
}  // namespace cfs::test
