// Fault injection against the built cfsctl (complements tests/store/repo_cli_test.cc, which
// covers SIGKILL during create-image, concurrent create-image + gc and a full tmpfs during
// create-image):
//  - SIGKILL at random points of gc and of an OCI pull: fsck is clean right away, the
//    referenced images keep every byte, and a re-run finishes the job;
//  - ENOSPC during an OCI pull on a small tmpfs;
//  - EIO from a device-mapper "error" segment under a source file and under a stored object;
//  - OCI pulls racing gc.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <sstream>
#include <thread>

#include "eio_fuse.h"
#include "layout_builder.h"
#include "testdata.h"

extern char** environ;

namespace cfs::test {
namespace {

namespace fs = std::filesystem;

const std::string kCfsctl = std::string(CFS_BINDIR) + "/cfsctl";

struct Result {
  int status;
  std::string out;
};

Result cfsctl(const std::string& repo, const std::string& args) {
  Result r;
  r.status = run(quote(kCfsctl) + " --repo " + quote(repo) + " " + args + " 2>&1", &r.out);
  return r;
}

void make_tree(const std::string& dir, int files, uint32_t seed, size_t max_size) {
  std::mt19937 rng(seed);
  for (int i = 0; i < files; ++i) {
    std::string sub = dir + "/d" + std::to_string(i % 5);
    fs::create_directories(sub);
    size_t size = std::uniform_int_distribution<size_t>(100, max_size)(rng);
    write_file(sub + "/f" + std::to_string(i), pattern(size, seed * 1000 + i));
  }
}

// A layer of many files of up to max_size bytes (so a pull takes long enough to be hit).
std::string big_layer(int files, uint32_t seed, size_t max_size) {
  std::mt19937 rng(seed);
  std::vector<std::string> members{tar_member({.name = "./", .type = '5', .mode = 0755}),
                                   tar_member({.name = "./usr/", .type = '5', .mode = 0755})};
  for (int i = 0; i < files; ++i) {
    size_t size = std::uniform_int_distribution<size_t>(10, max_size)(rng);
    members.push_back(tar_member(
        {.name = "./usr/f" + std::to_string(i), .content = pattern(size, seed * 7919 + i)}));
  }
  return tar_archive(members);
}

long elapsed_us(const std::function<void()>& fn) {
  auto start = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() -
                                                               start)
      .count();
}

// Kills wanted in each kill test, and the most runs it may take to get them.
constexpr int kKillsWanted = 8;
constexpr int kMaxRuns = 30;

// SIGKILL at random points of gc: what is named keeps every byte (fsck re-hashes every
// object), what is not goes at the next complete gc.
TEST(Fault, KillNineDuringGcNeverLosesReferencedData) {
  TempDir tmp;
  const std::string repo = tmp / "repo";
  ASSERT_EQ(cfsctl(repo, "init --insecure --hash sha256").status, 0);
  make_tree(tmp / "keep1", 60, 1, 200000);
  make_tree(tmp / "keep2", 60, 2, 200000);
  ASSERT_EQ(cfsctl(repo, "create-image " + quote(tmp / "keep1") + " --name keep1").status, 0);
  ASSERT_EQ(cfsctl(repo, "create-image " + quote(tmp / "keep2") + " --name keep2").status, 0);
  const std::string dump1 = cfsctl(repo, "dump keep1").out;
  const std::string dump2 = cfsctl(repo, "dump keep2").out;
  const std::string images = cfsctl(repo, "images").out;
  for (int g = 0; g < 4; ++g) make_tree(tmp / ("junk" + std::to_string(g)), 80, 10 + g, 100000);
  auto add_junk = [&] {
    for (int g = 0; g < 4; ++g)
      ASSERT_EQ(cfsctl(repo, "create-image " + quote(tmp / ("junk" + std::to_string(g)))).status,
                0);
  };
  add_junk();
  // How long a full gc of this much garbage takes, measured on a copy.
  ASSERT_EQ(run("cp -a " + quote(repo) + " " + quote(tmp / "copy")), 0);
  long full = elapsed_us([&] { ASSERT_EQ(cfsctl(tmp / "copy", "gc").status, 0); });
  // Garbage is added back before every run, so each gc has as much to remove as the timed one.
  RandomKiller killer(full, 7);
  for (int round = 0; killer.landed() < kKillsWanted && round < kMaxRuns; ++round) {
    killer.run({kCfsctl, "--repo", repo, "gc"});
    Result check = cfsctl(repo, "fsck");
    ASSERT_EQ(check.status, 0) << "round " << round << ":\n" << check.out;
    ASSERT_EQ(cfsctl(repo, "dump keep1").out, dump1) << "round " << round;
    ASSERT_EQ(cfsctl(repo, "dump keep2").out, dump2) << "round " << round;
    add_junk();
  }
  ASSERT_GE(killer.landed(), kKillsWanted)
      << "only " << killer.landed() << " of " << killer.attempts()
      << " gc runs were interrupted (full run " << full << " us)";
  Result gc = cfsctl(repo, "gc");
  ASSERT_EQ(gc.status, 0) << gc.out;
  EXPECT_EQ(cfsctl(repo, "images").out, images);
  EXPECT_EQ(cfsctl(repo, "fsck").status, 0);
  // Exactly the referenced objects remain: a second gc finds nothing.
  EXPECT_NE(cfsctl(repo, "gc").out.find("Objects: 0 removed"), std::string::npos);
  RecordProperty("gc_kills", killer.landed());
  RecordProperty("gc_runs", killer.attempts());
}

// SIGKILL at random points of an OCI pull: the repository stays consistent, the tag either
// does not exist or names a complete image, and a re-run gives the same image as a clean
// pull.
// Other processes whose environment holds text: helpers (the skopeo proxy) inherit the
// environment of the cfsctl that started them.
int processes_with_environment(const std::string& text) {
  int n = 0;
  const std::string self = std::to_string(::getpid());
  for (const auto& entry : fs::directory_iterator("/proc")) {
    std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos || name == self) continue;
    std::ifstream in(entry.path() / "environ");
    std::string env((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    n += env.find(text) != std::string::npos;
  }
  return n;
}

// SIGKILL at random points of `oci pull` from source_prefix + a 300-file layout.
void kill_during_oci_pull(const std::string& source_prefix) {
  TempDir tmp;
  write_layout(tmp / "layout", big_layer(300, 3, 60000));
  const std::string source = source_prefix + tmp / "layout";
  // Marks every process this test starts, and through them their helpers.
  const std::string mark = "CFS_FAULT_TEST_MARK=" + tmp.path();
  ::setenv("CFS_FAULT_TEST_MARK", tmp.path().c_str(), 1);
  struct Unset {
    ~Unset() { ::unsetenv("CFS_FAULT_TEST_MARK"); }
  } unset;
  const std::string clean = tmp / "clean";
  ASSERT_EQ(cfsctl(clean, "init --insecure --hash sha256").status, 0);
  Result first;
  long full = elapsed_us([&] { first = cfsctl(clean, "oci pull -q " + quote(source) + " img"); });
  ASSERT_EQ(first.status, 0) << first.out;
  const std::string expected_id = trim(cfsctl(clean, "oci image-id img").out);
  ASSERT_EQ(expected_id.size(), 64u);

  const std::string repo = tmp / "repo";
  ASSERT_EQ(cfsctl(repo, "init --insecure --hash sha256").status, 0);
  RandomKiller killer(full * 3 / 4, 11);
  for (int round = 0; killer.landed() < kKillsWanted && round < kMaxRuns; ++round) {
    killer.run({kCfsctl, "--repo", repo, "oci", "pull", "-q", source, "img"});
    // A helper process of the killed pull (the skopeo proxy) must not outlive it for long.
    for (int wait = 0; wait < 50 && processes_with_environment(mark) > 0; ++wait)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_EQ(processes_with_environment(mark), 0) << "round " << round;
    Result check = cfsctl(repo, "fsck");
    ASSERT_EQ(check.status, 0) << "round " << round << ":\n" << check.out;
    std::string tags = cfsctl(repo, "oci images").out;
    if (tags.find("img") != std::string::npos) {
      Result oci_check = cfsctl(repo, "oci fsck img");
      ASSERT_EQ(oci_check.status, 0) << "round " << round << ":\n" << oci_check.out;
      ASSERT_EQ(trim(cfsctl(repo, "oci image-id img").out), expected_id);
      // Untag and collect, so the next round pulls every layer again (a pull of present
      // layers is too quick to interrupt).
      ASSERT_EQ(cfsctl(repo, "oci untag img").status, 0);
      ASSERT_EQ(cfsctl(repo, "gc").status, 0);
    } else if (round % 4 == 3) {
      ASSERT_EQ(cfsctl(repo, "gc").status, 0);
    }
  }
  ASSERT_GE(killer.landed(), kKillsWanted)
      << "only " << killer.landed() << " of " << killer.attempts()
      << " pulls were interrupted (full run " << full << " us)";
  Result rerun = cfsctl(repo, "oci pull -q " + quote(source) + " img");
  ASSERT_EQ(rerun.status, 0) << rerun.out;
  EXPECT_EQ(trim(cfsctl(repo, "oci image-id img").out), expected_id);
  EXPECT_EQ(cfsctl(repo, "oci fsck").status, 0);
  ASSERT_EQ(cfsctl(repo, "gc").status, 0);
  EXPECT_EQ(cfsctl(repo, "fsck").status, 0);
  EXPECT_EQ(cfsctl(repo, "oci fsck").status, 0);
  // After gc the repository holds what a clean pull holds, nothing more.
  auto count = [](const std::string& dir) {
    size_t n = 0;
    for (const auto& e : fs::recursive_directory_iterator(dir + "/objects"))
      n += e.is_regular_file();
    return n;
  };
  EXPECT_EQ(count(repo), count(clean));
  ::testing::Test::RecordProperty("pull_kills", killer.landed());
  ::testing::Test::RecordProperty("pull_runs", killer.attempts());
}

TEST(Fault, KillNineDuringOciPull) {
  kill_during_oci_pull("oci:");
}

// The same through skopeo's image proxy (the path registries and containers-storage take).
TEST(Fault, KillNineDuringOciPullThroughSkopeo) {
  if (run("command -v skopeo >/dev/null") != 0) GTEST_SKIP() << "skopeo is not installed";
  kill_during_oci_pull("skopeo:oci:");
}

struct TmpfsMount {
  std::string path;
  bool mounted = false;
  TmpfsMount(std::string p, const std::string& size) : path(std::move(p)) {
    fs::create_directories(path);
    mounted = ::mount("tmpfs", path.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
  }
  ~TmpfsMount() {
    if (mounted) ::umount2(path.c_str(), MNT_DETACH);
  }
};

TEST(Fault, FullDiskDuringOciPull) {
  TempDir tmp;
  TmpfsMount small(tmp / "small", "2m");
  if (!small.mounted) GTEST_SKIP() << "cannot mount tmpfs: " << std::strerror(errno);
  write_layout(tmp / "layout", big_layer(80, 4, 100000));  // ~4 MB of content
  write_layout(tmp / "tiny", big_layer(3, 5, 1000));
  const std::string repo = small.path + "/repo";
  ASSERT_EQ(cfsctl(repo, "init --insecure --hash sha256").status, 0);
  ASSERT_EQ(cfsctl(repo, "oci pull -q " + quote("oci:" + tmp / "tiny") + " tiny").status, 0);
  Result r = cfsctl(repo, "oci pull -q " + quote("oci:" + tmp / "layout") + " big");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("No space left on device"), std::string::npos) << r.out;
  EXPECT_EQ(cfsctl(repo, "fsck").status, 0);
  std::string tags = cfsctl(repo, "oci images").out;
  EXPECT_EQ(tags.find("big"), std::string::npos) << tags;
  EXPECT_NE(tags.find("tiny"), std::string::npos) << tags;
  ASSERT_EQ(cfsctl(repo, "gc").status, 0);
  Result check = cfsctl(repo, "oci fsck");
  EXPECT_EQ(check.status, 0) << check.out;
  // gc gave back the space: the small image can be pulled again under another tag.
  EXPECT_EQ(cfsctl(repo, "oci pull -q " + quote("oci:" + tmp / "tiny") + " tiny2").status, 0);
}

// A data object of repo over 8 KiB: not the EROFS image of `image` (also stored as an
// object), whose loss is another failure than the one the callers stage.
std::string large_data_object(const std::string& repo, const std::string& image) {
  std::string image_name = fs::read_symlink(repo + "/images/refs/" + image).filename();
  std::string object;
  for (const auto& e : fs::recursive_directory_iterator(repo + "/objects")) {
    std::string name = e.path().parent_path().filename().string() + e.path().filename().string();
    if (e.is_regular_file() && e.file_size() > 8192 && name != image_name) object = e.path();
  }
  return object;
}

// fsck of repo fails naming object (a path to its file) with EIO, and nothing else.
void expect_fsck_reports_only_unreadable(const std::string& repo, const std::string& object) {
  Result r = cfsctl(repo, "fsck");
  EXPECT_EQ(r.status, 1) << r.out;
  std::string object_name = fs::path(object).parent_path().filename().string() + "/" +
                            fs::path(object).filename().string();
  EXPECT_NE(r.out.find(object_name), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Input/output error"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("status: 1 error(s)"), std::string::npos) << r.out;
}

// A loop-backed ext4 filesystem seen through device-mapper, with "error" segments over the
// first block of chosen files: reads there fail with EIO.
class FailingDisk {
 public:
  explicit FailingDisk(const std::string& dir) : dir_(dir) {
    name_ = "cfs-rel-eio-" + std::to_string(::getpid());
    image_ = dir + "/disk.img";
    mnt_ = dir + "/mnt";
    fs::create_directories(mnt_);
  }
  ~FailingDisk() {
    if (mounted_) ::umount2(mnt_.c_str(), MNT_DETACH);
    if (mapped_) run("dmsetup remove --retry " + name_ + " >/dev/null 2>&1");
    if (!loop_.empty()) run("losetup -d " + loop_);
  }
  // Creates and mounts the plain filesystem to be filled.
  bool prepare(std::string& why) {
    if (run("grep -qw device-mapper /proc/misc") != 0) {
      why = "this kernel has no device-mapper (no device-mapper in /proc/misc)";
      return false;
    }
    if (run("command -v dmsetup debugfs mkfs.ext4 >/dev/null") != 0) {
      why = "dmsetup, debugfs or mkfs.ext4 missing";
      return false;
    }
    if (run("truncate -s 64M " + quote(image_) + " && mkfs.ext4 -q -O ^has_journal " +
            quote(image_)) != 0) {
      why = "mkfs.ext4 failed";
      return false;
    }
    if (run("losetup --find --show " + quote(image_), &loop_) != 0) {
      why = "no loop device";
      return false;
    }
    loop_ = trim(loop_);
    if (::mount(loop_.c_str(), mnt_.c_str(), "ext4", 0, nullptr) != 0) {
      why = std::string("mount ext4: ") + std::strerror(errno);
      return false;
    }
    mounted_ = true;
    return true;
  }
  const std::string& mnt() const { return mnt_; }
  // Unmounts, maps the device with the first block of each file (paths relative to the
  // filesystem root) failing, and mounts the mapped device.
  bool fail_files(const std::vector<std::string>& files, std::string& why) {
    ::umount2(mnt_.c_str(), 0);
    mounted_ = false;
    std::vector<uint64_t> sectors;
    for (const auto& f : files) {
      std::string out;
      if (run("debugfs -R " + quote("bmap /" + f + " 0") + " " + loop_ + " 2>/dev/null", &out) !=
              0 ||
          trim(out).empty()) {
        why = "debugfs bmap failed for " + f;
        return false;
      }
      sectors.push_back(std::stoull(trim(out)) * 8);  // 4 KiB blocks, 512-byte sectors
    }
    std::sort(sectors.begin(), sectors.end());
    std::string size_out;
    run("blockdev --getsz " + loop_, &size_out);
    uint64_t total = std::stoull(trim(size_out));
    std::ostringstream table;
    uint64_t at = 0;
    for (uint64_t s : sectors) {
      if (s > at) table << at << " " << s - at << " linear " << loop_ << " " << at << "\n";
      table << s << " 8 error\n";
      at = s + 8;
    }
    if (at < total) table << at << " " << total - at << " linear " << loop_ << " " << at << "\n";
    write_file(dir_ + "/table", table.str());
    if (run("dmsetup create " + name_ + " < " + quote(dir_ + "/table")) != 0) {
      why = "dmsetup create failed (no device-mapper in this kernel?)";
      return false;
    }
    mapped_ = true;
    std::string dev = "/dev/mapper/" + name_;
    if (::mount(dev.c_str(), mnt_.c_str(), "ext4", 0, nullptr) != 0) {
      why = std::string("mount of the mapped device: ") + std::strerror(errno);
      return false;
    }
    mounted_ = true;
    return true;
  }

 private:
  std::string dir_, image_, mnt_, loop_, name_;
  bool mounted_ = false, mapped_ = false;
};

TEST(Fault, IoErrorsGiveClearErrorsAndLeaveRepositoriesConsistent) {
  TempDir tmp;
  FailingDisk disk(tmp.path());
  std::string why;
  if (!disk.prepare(why)) GTEST_SKIP() << why;
  // On the failing disk: a source tree, and a repository holding one image.
  make_tree(disk.mnt() + "/src", 20, 21, 100000);
  write_file(disk.mnt() + "/src/victim", pattern(300000, 22));
  make_tree(tmp / "stored", 10, 23, 100000);
  const std::string disk_repo = disk.mnt() + "/repo";
  ASSERT_EQ(cfsctl(disk_repo, "init --insecure --hash sha256").status, 0);
  ASSERT_EQ(cfsctl(disk_repo, "create-image " + quote(tmp / "stored") + " --name s").status, 0);
  std::string object = large_data_object(disk_repo, "s");
  ASSERT_FALSE(object.empty());
  std::string object_rel = fs::relative(object, disk.mnt());
  ASSERT_TRUE(disk.fail_files({"src/victim", object_rel}, why)) << why;

  // 1. A source file that cannot be read: create-image names it and names nothing.
  const std::string repo = tmp / "repo";
  ASSERT_EQ(cfsctl(repo, "init --insecure --hash sha256").status, 0);
  Result r = cfsctl(repo, "create-image " + quote(disk.mnt() + "/src") + " --name x");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("victim"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Input/output error"), std::string::npos) << r.out;
  EXPECT_EQ(cfsctl(repo, "images").out, "");
  EXPECT_EQ(cfsctl(repo, "fsck").status, 0);
  // 2. An object that cannot be read: fsck reports it (and only it) instead of crashing.
  expect_fsck_reports_only_unreadable(disk_repo, object);
  // 3. cat / dump through the failing object: a clear error, not a crash.
  r = cfsctl(disk_repo, "dump s");
  EXPECT_EQ(r.status, 0) << r.out;  // metadata only: the image is readable
}

// EIO while reading a source tree and an OCI layout: the command names the file and the
// error, and the repository gets nothing named.
TEST(Fault, IoErrorsFromFailingFilesThroughFuse) {
  TempDir tmp;
  make_tree(tmp / "backing/src", 20, 31, 100000);
  write_file(tmp / "backing/src/victim", pattern(300000, 32));
  std::string layer = big_layer(40, 33, 60000);
  write_layout(tmp / "backing/layout", layer);
  fs::create_directories(tmp / "mnt");
  EioFuse disk(tmp / "backing", tmp / "mnt",
               {"src/victim", "layout/blobs/sha256/" + sha256_digest(layer).substr(7)});
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount FUSE";
  const std::string repo = tmp / "repo";
  ASSERT_EQ(cfsctl(repo, "init --insecure --hash sha256").status, 0);

  Result r = cfsctl(repo, "create-image " + quote(tmp / "mnt/src") + " --name x");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("victim"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Input/output error"), std::string::npos) << r.out;
  EXPECT_EQ(cfsctl(repo, "images").out, "");

  r = cfsctl(repo, "oci pull -q " + quote("oci:" + tmp / "mnt/layout") + " y");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("Input/output error"), std::string::npos) << r.out;
  EXPECT_EQ(cfsctl(repo, "oci images").out.find(" y"), std::string::npos);
  Result check = cfsctl(repo, "fsck");
  EXPECT_EQ(check.status, 0) << check.out;
  ASSERT_EQ(cfsctl(repo, "gc").status, 0);
  size_t left = 0;
  for (const auto& e : fs::recursive_directory_iterator(repo + "/objects"))
    left += e.is_regular_file();
  EXPECT_EQ(left, 0u) << "gc kept objects of the failed commands";
  // The same commands work once the files read again.
  EXPECT_EQ(cfsctl(repo, "oci pull -q " + quote("oci:" + tmp / "backing/layout") + " y").status, 0);
}

// A stored object that cannot be read (the repository seen through a failing view): fsck names
// that object and only it, and reading the image's metadata still works. The dm-error test
// above does the same on a real block device where the kernel has device-mapper.
TEST(Fault, UnreadableObjectIsReportedByFsck) {
  TempDir tmp;
  make_tree(tmp / "stored", 10, 41, 100000);
  const std::string backing_repo = tmp / "backing/repo";
  fs::create_directories(tmp / "backing");
  ASSERT_EQ(cfsctl(backing_repo, "init --insecure --hash sha256").status, 0);
  ASSERT_EQ(cfsctl(backing_repo, "create-image " + quote(tmp / "stored") + " --name s").status, 0);
  std::string object = large_data_object(backing_repo, "s");
  ASSERT_FALSE(object.empty());
  fs::create_directories(tmp / "mnt");
  EioFuse disk(tmp / "backing", tmp / "mnt", {fs::relative(object, tmp / "backing").string()});
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount FUSE";
  const std::string repo = tmp / "mnt/repo";

  expect_fsck_reports_only_unreadable(repo, object);
  Result r = cfsctl(repo, "dump s");
  EXPECT_EQ(r.status, 0) << r.out;  // metadata only: the image itself reads fine
  // The same repository, readable again, is clean: the failure was reported, not recorded.
  EXPECT_EQ(cfsctl(backing_repo, "fsck").status, 0);
}

// An image file that cannot be read: every reader of it (dump, fsck, composefs-info) fails
// with a clear error naming it; none dies of SIGBUS, as a lazily mapped image did.
TEST(Fault, UnreadableImageIsAnErrorNotACrash) {
  TempDir tmp;
  make_tree(tmp / "stored", 10, 43, 100000);
  const std::string backing_repo = tmp / "backing/repo";
  fs::create_directories(tmp / "backing");
  ASSERT_EQ(cfsctl(backing_repo, "init --insecure --hash sha256").status, 0);
  ASSERT_EQ(cfsctl(backing_repo, "create-image " + quote(tmp / "stored") + " --name s").status, 0);
  const std::string image = fs::canonical(backing_repo + "/images/refs/s");
  fs::create_directories(tmp / "mnt");
  EioFuse disk(tmp / "backing", tmp / "mnt", {fs::relative(image, tmp / "backing").string()});
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount FUSE";
  const std::string repo = tmp / "mnt/repo";
  const std::string image_name = fs::path(image).filename();

  for (const std::string& args : {std::string("dump s"), std::string("fsck")}) {
    Result r = cfsctl(repo, args);
    EXPECT_EQ(r.status, 1) << args << ": " << r.out;
    EXPECT_NE(r.out.find("Input/output error"), std::string::npos) << args << ": " << r.out;
    EXPECT_TRUE(r.out.find(image_name.substr(0, 20)) != std::string::npos ||
                r.out.find("image s") != std::string::npos)
        << args << ": " << r.out;
  }
  const std::string info = std::string(CFS_BINDIR) + "/composefs-info";
  std::string out;
  int status = run(
      quote(info) + " dump " + quote(tmp / "mnt" / fs::relative(image, tmp / "backing")) + " 2>&1",
      &out);
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("Input/output error"), std::string::npos) << out;
}

size_t count_temp_files(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    n += e.path().filename().string().starts_with(".tmp-");
  return n;
}

// A repository on a filesystem without O_TMPFILE (a writable FUSE view): every write takes the
// named-temp fallback (".tmp-*" name, then rename without replace). The results equal a normal
// repository's, and writers killed mid-run leave only ".tmp-" names, which fsck passes over and
// gc removes.
TEST(Fault, RepositoryWithoutTmpfileUsesNamedTemporaries) {
  TempDir tmp;
  fs::create_directories(tmp / "backing");
  fs::create_directories(tmp / "mnt");
  EioFuse view(tmp / "backing", tmp / "mnt", {}, 0, /*writable=*/true);
  if (!view.mounted()) GTEST_SKIP() << "cannot mount FUSE";
  int probe = ::open((tmp / "mnt").c_str(), O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);
  ASSERT_LT(probe, 0) << "the view was meant to lack O_TMPFILE";
  make_tree(tmp / "src", 30, 51, 100000);
  write_layout(tmp / "layout", big_layer(40, 52, 60000));
  const std::string repo = tmp / "mnt/repo", normal = tmp / "normal";
  for (const auto& r : {repo, normal}) {
    ASSERT_EQ(cfsctl(r, "init --insecure --hash sha256").status, 0);
    Result made = cfsctl(r, "create-image " + quote(tmp / "src") + " --name s");
    ASSERT_EQ(made.status, 0) << made.out;
    Result pulled = cfsctl(r, "oci pull -q " + quote("oci:" + tmp / "layout") + " img");
    ASSERT_EQ(pulled.status, 0) << pulled.out;
  }
  EXPECT_EQ(cfsctl(repo, "images").out, cfsctl(normal, "images").out);
  EXPECT_EQ(cfsctl(repo, "oci image-id img").out, cfsctl(normal, "oci image-id img").out);
  EXPECT_EQ(cfsctl(repo, "dump s").out, cfsctl(normal, "dump s").out);
  EXPECT_EQ(count_temp_files(tmp / "backing/repo"), 0u);

  // Interrupted writers.
  make_tree(tmp / "src2", 200, 53, 60000);
  ASSERT_EQ(cfsctl(normal, "create-image " + quote(tmp / "src2") + " --name t").status, 0);
  // Timed on the view itself (a second repository there), which is slower than a disk.
  const std::string timing = tmp / "mnt/timing";
  ASSERT_EQ(cfsctl(timing, "init --insecure --hash sha256").status, 0);
  long full = elapsed_us([&] {
    ASSERT_EQ(cfsctl(timing, "create-image " + quote(tmp / "src2") + " --name t").status, 0);
  });
  // Each round starts from a collected repository, so it runs as long as the timed one and a
  // kill within the first 3/4 of that time lands mid-run.
  // Fewer kills than elsewhere: every round goes through the (slow) FUSE view.
  RandomKiller killer(full * 3 / 4, 17);
  size_t left = 0;
  for (int round = 0; killer.landed() < 4 && round < kMaxRuns; ++round) {
    killer.run({kCfsctl, "--repo", repo, "create-image", tmp / "src2", "--name", "t"});
    Result check = cfsctl(repo, "fsck");
    ASSERT_EQ(check.status, 0) << "round " << round << ":\n" << check.out;
    left += count_temp_files(tmp / "backing/repo");
    // A run the kill missed (or caught after naming) has named "t": drop that ref so that gc
    // collects its objects and the next round writes them all again.
    fs::remove(tmp / "backing/repo/images/refs/t");
    Result gc = cfsctl(repo, "gc");
    ASSERT_EQ(gc.status, 0) << gc.out;
    ASSERT_EQ(count_temp_files(tmp / "backing/repo"), 0u) << "round " << round << ": " << gc.out;
  }
  ASSERT_GE(killer.landed(), 4) << "only " << killer.landed() << " of " << killer.attempts()
                                << " runs were interrupted (full run " << full << " us)";
  EXPECT_GT(left, 0u) << "no kill landed while an object was being written";
  RecordProperty("temp_files_left", static_cast<int>(left));
  RecordProperty("kills", killer.landed());
  ASSERT_EQ(cfsctl(repo, "create-image " + quote(tmp / "src2") + " --name t").status, 0);
  EXPECT_EQ(cfsctl(repo, "images").out, cfsctl(normal, "images").out);
  EXPECT_EQ(cfsctl(repo, "fsck").status, 0);
  EXPECT_EQ(cfsctl(repo, "oci fsck").status, 0);
}

// OCI pulls of images sharing a layer race gc: every pull completes and both tags stay
// complete.
TEST(Fault, ConcurrentOciPullsAndGc) {
  TempDir tmp;
  std::string shared = big_layer(60, 6, 50000);
  write_layout(tmp / "a", shared);
  write_layout(tmp / "b", big_layer(60, 7, 50000));
  const std::string repo = tmp / "repo";
  ASSERT_EQ(cfsctl(repo, "init --insecure --hash sha256").status, 0);
  for (int round = 0; round < 3; ++round) {
    pid_t a = spawn({kCfsctl, "--repo", repo, "oci", "pull", "-q", "oci:" + tmp / "a", "a"});
    pid_t b = spawn({kCfsctl, "--repo", repo, "oci", "pull", "-q", "oci:" + tmp / "b", "b"});
    std::vector<pid_t> gcs;
    for (int i = 0; i < 3; ++i) {
      gcs.push_back(spawn({kCfsctl, "--repo", repo, "gc"}));
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
    }
    EXPECT_EQ(wait_status(a), 0);
    EXPECT_EQ(wait_status(b), 0);
    for (pid_t g : gcs) EXPECT_EQ(wait_status(g), 0);
    Result check = cfsctl(repo, "fsck");
    ASSERT_EQ(check.status, 0) << check.out;
    Result oci_check = cfsctl(repo, "oci fsck");
    ASSERT_EQ(oci_check.status, 0) << oci_check.out;
    if (round == 1) {
      ASSERT_EQ(cfsctl(repo, "oci untag a").status, 0);
    }
  }
  ASSERT_EQ(cfsctl(repo, "gc").status, 0);
  EXPECT_EQ(cfsctl(repo, "oci fsck").status, 0);
  EXPECT_EQ(cfsctl(repo, "fsck").status, 0);
}

}  // namespace
}  // namespace cfs::test
