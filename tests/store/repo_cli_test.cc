// cfsctl repository commands end to end: every command, interruption by SIGKILL at random
// points, concurrent writers with gc, and bad input (missing repository, unreadable and
// wrong-type sources, a full filesystem).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "cfs/fsverity.h"
#include "cfs/store/repository.h"
#include "cfsctl_runner.h"
#include "testdata.h"

extern char** environ;

namespace cfs::store {
namespace {

namespace fs = std::filesystem;
using test::quote;
using test::TempDir;

const std::string kCfsctl = cfsctl_binary();

using Result = CliResult;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

Result cfsctl(const std::string& args) {
  return run_cfsctl(args);
}

// files of 10 B .. ~2 MB in a few directories.
void make_tree(const std::string& dir, int files, uint32_t seed, size_t max_size = 2 << 20) {
  std::mt19937 rng(seed);
  for (int i = 0; i < files; ++i) {
    std::string sub = dir + "/d" + std::to_string(i % 7);
    fs::create_directories(sub);
    size_t size = std::uniform_int_distribution<size_t>(0, 4)(rng) == 0
                      ? std::uniform_int_distribution<size_t>(max_size / 2, max_size)(rng)
                      : std::uniform_int_distribution<size_t>(10, 20000)(rng);
    test::write_file(sub + "/f" + std::to_string(i), test::pattern(size, seed * 1000 + i));
  }
}

TEST(RepoCli, EveryCommand) {
  TempDir tmp;
  const std::string repo = quote(tmp / "repo");
  make_tree(tmp / "src", 20, 1, 300000);
  Result r = cfsctl("--repo " + repo + " init --insecure --hash sha256");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("insecure fsverity-sha256-12"), std::string::npos);
  // init again asking for what is there succeeds (composefs-rs' init is idempotent); asking
  // for another algorithm fails.
  r = cfsctl("--repo " + repo + " init --insecure --hash sha256");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("Repository already initialized at"), std::string::npos) << r.out;
  r = cfsctl("--repo " + repo + " init --insecure --algorithm=fsverity-sha512-12");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("already initialized with fsverity-sha256-12"), std::string::npos) << r.out;

  r = cfsctl("--repo " + repo + " create-image " + quote(tmp / "src") + " --name base");
  ASSERT_EQ(r.status, 0) << r.out;
  std::string id = test::trim(r.out);
  ASSERT_EQ(id.size(), 64u) << r.out;
  Result computed = cfsctl("compute-id --hash sha256 " + quote(tmp / "src"));
  EXPECT_EQ(test::trim(computed.out), id) << "create-image and compute-id disagree";

  r = cfsctl("--repo " + repo + " images");
  EXPECT_EQ(r.out, id + " base\n");
  r = cfsctl("--repo " + repo + " images --json");
  auto json = nlohmann::json::parse(r.out);
  ASSERT_EQ(json.size(), 1u);
  EXPECT_EQ(json[0]["id"], id);
  EXPECT_EQ(json[0]["refs"][0], "base");

  // cat: a stream written through the library, read back through the CLI.
  {
    Repository lib = Repository::open(tmp / "repo");
    std::string payload = test::pattern(50000, 77);
    Digest obj =
        lib.ensure_object({reinterpret_cast<const std::byte*>(payload.data()), payload.size()});
    SplitStreamWriter w(lib.algorithm(), kContentOciBlob);
    w.write_inline(std::string_view("head:"));
    w.write_external(obj, payload.size());
    lib.write_stream(w, "blob-1", "blobs/one");
    test::write_file(tmp / "expected", "head:" + payload);
  }
  EXPECT_EQ(test::run(quote(kCfsctl) + " --repo " + repo + " cat blobs/one | cmp - " +
                      quote(tmp / "expected")),
            0);
  r = cfsctl("--repo " + repo + " cat nosuch");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("no stream named 'nosuch'"), std::string::npos) << r.out;

  r = cfsctl("--repo " + repo + " fsck");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("status: ok"), std::string::npos);

  // Corrupt one object in place: fsck names it and exits 1; --json exits 0 with ok=false.
  std::string victim;
  for (auto& e : fs::recursive_directory_iterator(tmp / "repo/objects"))
    if (e.is_regular_file() && e.file_size() > 100000) victim = e.path();
  ASSERT_FALSE(victim.empty());
  std::string name = fs::path(victim).parent_path().filename().string() + "/" +
                     fs::path(victim).filename().string();
  {
    int fd = ::open(victim.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "X", 1, 4097), 1);
    ::close(fd);
  }
  r = cfsctl("--repo " + repo + " fsck");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("object-digest-mismatch: objects/" + name), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("status: 1 error(s)"), std::string::npos) << r.out;
  r = cfsctl("--repo " + repo + " fsck --json");
  EXPECT_EQ(r.status, 0);
  json = nlohmann::json::parse(r.out);
  EXPECT_EQ(json["ok"], false);
  EXPECT_EQ(json["objects_corrupted"], 1);
  ASSERT_EQ(json["errors"].size(), 1u);
  EXPECT_NE(json["errors"][0].get<std::string>().find(name), std::string::npos);
  // --metadata-only does not re-read data: a same-size corruption passes, a missing object not.
  r = cfsctl("--repo " + repo + " fsck --metadata-only");
  EXPECT_EQ(r.status, 0) << r.out;
  // Re-running create-image does not repair a same-size corruption (it trusts existing
  // objects, like composefs-rs); removing the object and re-running does.
  fs::remove(victim);
  r = cfsctl("--repo " + repo + " fsck --metadata-only");
  EXPECT_EQ(r.status, 1) << r.out;
  std::string missing_id = name.substr(0, 2) + name.substr(3);
  EXPECT_NE(r.out.find("object " + missing_id + " does not exist"), std::string::npos) << r.out;
  ASSERT_EQ(
      cfsctl("--repo " + repo + " create-image " + quote(tmp / "src") + " --name base").status, 0);
  EXPECT_EQ(cfsctl("--repo " + repo + " fsck").status, 0);

  // gc: an unnamed second image goes, the named one and the stream stay.
  make_tree(tmp / "src2", 5, 2, 300000);
  Result second = cfsctl("--repo " + repo + " create-image " + quote(tmp / "src2"));
  ASSERT_EQ(second.status, 0);
  // ... unless --root names it (by id), for this run.
  r = cfsctl("--repo " + repo + " gc --root " + test::trim(second.out) + " --root base");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("Images: 0 removed"), std::string::npos) << r.out;
  r = cfsctl("--repo " + repo + " gc --root nosuch");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("gc root \"nosuch\" names no image"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("nothing was removed"), std::string::npos) << r.out;
  r = cfsctl("--repo " + repo + " gc --dry-run");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("Images: 1 would be removed"), std::string::npos) << r.out;
  r = cfsctl("--repo " + repo + " gc");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("Images: 1 removed"), std::string::npos) << r.out;
  EXPECT_EQ(cfsctl("--repo " + repo + " images").out, id + " base\n");
  r = cfsctl("--repo " + repo + " gc");
  EXPECT_NE(r.out.find("Objects: 0 removed (0 bytes)"), std::string::npos) << r.out;
  EXPECT_EQ(cfsctl("--repo " + repo + " fsck").status, 0);
  EXPECT_EQ(test::run(quote(kCfsctl) + " --repo " + repo + " cat blobs/one | cmp - " +
                      quote(tmp / "expected")),
            0);
}

// SIGKILL at random points of create-image: the repository must pass fsck right away, and
// a re-run must finish the job with the same image id. Each round starts from an empty
// repository, so the kill lands at a comparable point of the work every time.
TEST(RepoCli, KillNineDuringCreateImageLeavesConsistentRepository) {
  TempDir tmp;
  make_tree(tmp / "src", 400, 3);
  auto fresh_repo = [&](int round) {
    std::string repo = tmp / ("repo" + std::to_string(round));
    EXPECT_EQ(cfsctl("--repo " + quote(repo) + " init --insecure --hash sha256").status, 0);
    return repo;
  };
  std::string expected = test::trim(cfsctl("compute-id --hash sha256 " + quote(tmp / "src")).out);
  // How long a full run takes (fastest of two), to spread the kills over it.
  long duration = 0;
  for (int i = 0; i < 2; ++i) {
    std::string repo = fresh_repo(100 + i);
    auto start = std::chrono::steady_clock::now();
    Result full = cfsctl("--repo " + quote(repo) + " create-image " + quote(tmp / "src"));
    ASSERT_EQ(full.status, 0) << full.out;
    long us = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now() - start)
                  .count();
    duration = i == 0 ? us : std::min(duration, us);
  }
  test::RandomKiller killer(duration * 9 / 10, 42);
  for (int round = 0; killer.landed() < 6 && round < 25; ++round) {
    const std::string repo = fresh_repo(round);
    killer.run({kCfsctl, "--repo", repo, "create-image", tmp / "src", "--name", "img"});
    Result check = cfsctl("--repo " + quote(repo) + " fsck");
    ASSERT_EQ(check.status, 0) << "round " << round << ":\n" << check.out;
    Result rerun =
        cfsctl("--repo " + quote(repo) + " create-image " + quote(tmp / "src") + " --name img");
    ASSERT_EQ(rerun.status, 0) << rerun.out;
    EXPECT_EQ(test::trim(rerun.out), expected);
    check = cfsctl("--repo " + quote(repo) + " fsck");
    ASSERT_EQ(check.status, 0) << "round " << round << " after the re-run:\n" << check.out;
    EXPECT_EQ(cfsctl("--repo " + quote(repo) + " images").out, expected + " img\n");
    // Whatever the killed run linked without naming is exactly what gc may take.
    ASSERT_EQ(cfsctl("--repo " + quote(repo) + " gc").status, 0);
    EXPECT_EQ(cfsctl("--repo " + quote(repo) + " fsck").status, 0);
    fs::remove_all(repo);
  }
  EXPECT_GE(killer.landed(), 6) << "only " << killer.landed() << " of " << killer.attempts()
                                << " runs were interrupted (full run: " << duration << " us)";
}

TEST(RepoCli, ConcurrentWritersAndGc) {
  TempDir tmp;
  make_tree(tmp / "a", 150, 5, 1 << 20);
  make_tree(tmp / "b", 150, 6, 1 << 20);
  const std::string repo = tmp / "repo";
  ASSERT_EQ(cfsctl("--repo " + quote(repo) + " init --insecure --hash sha256").status, 0);
  std::string id_a =
      test::trim(cfsctl("--repo " + quote(repo) + " compute-id " + quote(tmp / "a")).out);
  std::string id_b =
      test::trim(cfsctl("--repo " + quote(repo) + " compute-id " + quote(tmp / "b")).out);
  for (int round = 0; round < 3; ++round) {
    pid_t a = test::spawn({kCfsctl, "--repo", repo, "create-image", tmp / "a", "--name", "a"});
    pid_t b = test::spawn({kCfsctl, "--repo", repo, "create-image", tmp / "b", "--name", "b"});
    pid_t unnamed = test::spawn({kCfsctl, "--repo", repo, "create-image", tmp / "a"});
    std::vector<pid_t> gcs;
    for (int i = 0; i < 3; ++i) {
      gcs.push_back(test::spawn({kCfsctl, "--repo", repo, "gc"}));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_EQ(test::wait_status(a), 0);
    EXPECT_EQ(test::wait_status(b), 0);
    EXPECT_EQ(test::wait_status(unnamed), 0);
    for (pid_t g : gcs) EXPECT_EQ(test::wait_status(g), 0);
    Result check = cfsctl("--repo " + quote(repo) + " fsck");
    ASSERT_EQ(check.status, 0) << check.out;
    Result images = cfsctl("--repo " + quote(repo) + " images");
    EXPECT_NE(images.out.find(id_a + " a\n"), std::string::npos) << images.out;
    EXPECT_NE(images.out.find(id_b + " b\n"), std::string::npos) << images.out;
  }
  ASSERT_EQ(cfsctl("--repo " + quote(repo) + " gc").status, 0);
  EXPECT_EQ(cfsctl("--repo " + quote(repo) + " images").out,
            id_a < id_b ? id_a + " a\n" + id_b + " b\n" : id_b + " b\n" + id_a + " a\n");
  EXPECT_EQ(cfsctl("--repo " + quote(repo) + " fsck").status, 0);
}

// dump and compute-id take --repo: images by id or ref, ids in the repository's algorithm.
TEST(RepoCli, DumpAndComputeIdInsideSha512Repository) {
  TempDir tmp;
  make_tree(tmp / "src", 12, 4, 300000);
  const std::string repo = quote(tmp / "repo");
  ASSERT_EQ(cfsctl("--repo " + repo + " init --insecure").status, 0);  // sha512 by default
  Result created = cfsctl("--repo " + repo + " create-image " + quote(tmp / "src") + " tag");
  ASSERT_EQ(created.status, 0) << created.out;
  std::string id = test::trim(created.out);
  EXPECT_EQ(id.size(), 128u);
  EXPECT_EQ(test::trim(cfsctl("--repo " + repo + " compute-id " + quote(tmp / "src")).out), id);
  Result by_ref = cfsctl("--repo " + repo + " dump tag");
  ASSERT_EQ(by_ref.status, 0) << by_ref.out;
  EXPECT_EQ(cfsctl("--repo " + repo + " dump " + id).out, by_ref.out);
  // Every external file's payload names an object that exists in the repository.
  size_t externals = 0;
  std::istringstream lines(by_ref.out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::vector<std::string> f{std::istream_iterator<std::string>(fields), {}};
    ASSERT_GE(f.size(), 11u) << line;
    if (f[8].size() == 129 && f[8][2] == '/') {
      ++externals;
      EXPECT_TRUE(fs::exists(tmp / "repo/objects/" + f[8])) << line;
    }
  }
  EXPECT_GT(externals, 5u);
  Result missing = cfsctl("--repo " + repo + " dump nosuch");
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.out.find("no image named 'nosuch'"), std::string::npos) << missing.out;
}

TEST(RepoCli, BadInputGivesClearErrors) {
  TempDir tmp;
  Result r = cfsctl("--repo " + quote(tmp / "none") + " images");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find(tmp / "none" + ": no such repository"), std::string::npos) << r.out;
  {
    // Without --repo: --user is $HOME/.var/lib/composefs, as in composefs-rs.
    const char* home = std::getenv("HOME");
    std::string saved = home ? home : "";
    ::setenv("HOME", (tmp / "home").c_str(), 1);
    r = cfsctl("--user images");
    if (home) ::setenv("HOME", saved.c_str(), 1);
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find(tmp / "home/.var/lib/composefs: no such repository"), std::string::npos)
        << r.out;
  }
  test::write_file(tmp / "plain", "x");
  r = cfsctl("--repo " + quote(tmp / "plain") + " fsck");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("not a directory"), std::string::npos) << r.out;

  const std::string repo = quote(tmp / "repo");
  ASSERT_EQ(cfsctl("--repo " + repo + " init --insecure --hash sha256").status, 0);
  r = cfsctl("--repo " + repo + " create-image " + quote(tmp / "plain"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find(tmp / "plain" + ": not a directory"), std::string::npos) << r.out;
  r = cfsctl("--repo " + repo + " create-image " + quote(tmp / "missing"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find(tmp / "missing"), std::string::npos) << r.out;
  r = cfsctl("--repo " + repo + " create-image " + quote(tmp.path()) + " --name ../escape");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("'..'"), std::string::npos) << r.out;
  test::write_file(
      tmp / "repo/meta.json",
      R"({"version":1,"algorithm":"fsverity-sha256-12","features":{"incompatible":["new"]}})");
  r = cfsctl("--repo " + repo + " images");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("unknown incompatible feature 'new'"), std::string::npos) << r.out;
}

// What composefs-rs 0.9.0 writes when Repository::open_upgrade upgrades a repository without
// meta.json (RepoMetadata::new(algorithm): the default EROFS format V1, hence the v1_erofs
// flag, serialised by serde_json's pretty printer plus a newline).
std::string composefs_rs_upgrade_meta(const std::string& algorithm) {
  return "{\n  \"version\": 1,\n  \"algorithm\": \"" + algorithm +
         "\",\n  \"features\": {\n    \"compatible\": [],\n    \"read-only-compatible\": [\n"
         "      \"v1_erofs\"\n    ],\n    \"incompatible\": []\n  },\n  \"erofs_formats\": {\n"
         "    \"default\": 1\n  }\n}\n";
}

// A populated repository whose meta.json is removed (what composefs-rs before meta.json
// left) is upgraded by the first command, refused with --no-upgrade, and works afterwards.
TEST(RepoCli, RepositoryWithoutMetaJsonIsUpgraded) {
  for (const char* hash : {"sha256", "sha512"}) {
    SCOPED_TRACE(hash);
    TempDir tmp;
    const std::string repo = quote(tmp / "repo");
    make_tree(tmp / "src", 12, 5, 100000);
    ASSERT_EQ(cfsctl("--repo " + repo + " init --insecure --hash " + std::string(hash)).status, 0);
    Result r = cfsctl("--repo " + repo + " create-image " + quote(tmp / "src") + " --name base");
    ASSERT_EQ(r.status, 0) << r.out;
    const std::string id = test::trim(r.out);
    // New repositories get the same bytes composefs-rs writes for them.
    const std::string algorithm = std::string("fsverity-") + hash + "-12";
    EXPECT_EQ(slurp(tmp / "repo/meta.json"), composefs_rs_upgrade_meta(algorithm));
    fs::remove(tmp / "repo/meta.json");

    r = cfsctl("--repo " + repo + " --no-upgrade images");
    EXPECT_EQ(r.status, 1) << r.out;
    EXPECT_NE(r.out.find("no meta.json"), std::string::npos) << r.out;
    EXPECT_FALSE(fs::exists(tmp / "repo/meta.json")) << "--no-upgrade wrote meta.json";

    r = cfsctl("--repo " + repo + " images");
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find(id + " base\n"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("upgraded a repository without meta.json"), std::string::npos) << r.out;
    // Byte for byte what composefs-rs' open_upgrade writes; insecure (the objects have no
    // fs-verity here) and not left behind as a temporary.
    EXPECT_EQ(slurp(tmp / "repo/meta.json"), composefs_rs_upgrade_meta(algorithm));
    for (const auto& e : fs::directory_iterator(tmp / "repo"))
      EXPECT_FALSE(e.path().filename().string().starts_with(".tmp")) << e.path();

    // The upgraded repository is writable and consistent.
    {
      Repository lib = Repository::open(tmp / "repo");
      EXPECT_TRUE(lib.has_meta());
      EXPECT_TRUE(lib.writable());
      EXPECT_EQ(lib.meta().erofs_default, 1u);
    }
    make_tree(tmp / "src2", 3, 6, 5000);
    r = cfsctl("--repo " + repo + " create-image " + quote(tmp / "src2") + " second");
    EXPECT_EQ(r.status, 0) << r.out;
    r = cfsctl("--repo " + repo + " fsck");
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("meta.json: ok"), std::string::npos) << r.out;

    // init --ensure upgrades too, and keeps an existing repository as it is.
    fs::remove(tmp / "repo/meta.json");
    r = cfsctl("--repo " + repo + " init --ensure --insecure --algorithm=" + algorithm);
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("Upgraded legacy repository at"), std::string::npos) << r.out;
    EXPECT_EQ(slurp(tmp / "repo/meta.json"), composefs_rs_upgrade_meta(algorithm));
    r = cfsctl("--repo " + repo + " init --ensure --algorithm=" + algorithm);
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("existing configuration preserved"), std::string::npos) << r.out;
  }
}

// The object names decide the algorithm; a repository with no usable object cannot be
// upgraded and says so, and a read-only one opens read-only.
TEST(RepoCli, UpgradeNeedsAnObjectAndAWritableRepository) {
  TempDir tmp;
  fs::create_directories(tmp / "empty/objects/ab");
  test::write_file(tmp / "empty/objects/ab/short", "x");
  Result r = cfsctl("--repo " + quote(tmp / "empty") + " images");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("no meta.json and no objects to infer the hash algorithm from"),
            std::string::npos)
      << r.out;
  EXPECT_FALSE(fs::exists(tmp / "empty/meta.json"));
}

// init --reset-metadata keeps objects/ and starts streams, images and meta.json afresh.
TEST(RepoCli, InitResetMetadata) {
  TempDir tmp;
  const std::string repo = quote(tmp / "repo");
  make_tree(tmp / "src", 4, 7, 5000);
  ASSERT_EQ(cfsctl("--repo " + repo + " init --insecure --hash sha512").status, 0);
  ASSERT_EQ(cfsctl("--repo " + repo + " create-image " + quote(tmp / "src") + " a").status, 0);
  Result r =
      cfsctl("--repo " + repo + " init --insecure --reset-metadata --algorithm=fsverity-sha256-12");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_FALSE(fs::exists(tmp / "repo/images/refs/a"));
  EXPECT_FALSE(fs::is_empty(tmp / "repo/objects"));
  EXPECT_EQ(slurp(tmp / "repo/meta.json"), composefs_rs_upgrade_meta("fsverity-sha256-12"));
}

// dump-files prints composefs-rs' dumpfile lines of chosen paths of an image: a file's line,
// a directory with its subtree (SIZE 0, later names of a hardlinked file as @120000 lines),
// and with --backing-path-only "inline" or the object path. Where the composefs-rs oracle is
// built, the lines of a directory equal its dumpfile of the same tree.
TEST(RepoCli, DumpFiles) {
  TempDir tmp;
  const std::string repo = quote(tmp / "repo");
  const std::string src = tmp / "src";
  fs::create_directories(src + "/d/sub");
  test::write_file(src + "/d/a", "hi\n");
  test::write_file(src + "/d/big", test::pattern(5000, 7));
  ASSERT_EQ(::link((src + "/d/big").c_str(), (src + "/d/sub/big2").c_str()), 0);
  fs::create_symlink("a", src + "/d/link");
  ASSERT_EQ(::setxattr((src + "/d/a").c_str(), "user.k", "v=1", 3, 0), 0);
  for (const char* p : {"/d/sub/big2", "/d/sub", "/d/link", "/d/big", "/d/a", "/d"}) {
    struct timespec times[2] = {{1700000000, 5}, {1700000000, 5}};
    ASSERT_EQ(::utimensat(AT_FDCWD, (src + p).c_str(), times, AT_SYMLINK_NOFOLLOW), 0);
  }
  ASSERT_EQ(cfsctl("--repo " + repo + " init --insecure --hash sha256").status, 0);
  Result r =
      cfsctl("--repo " + repo + " create-image --no-propagate-usr-to-root " + quote(src) + " img");
  ASSERT_EQ(r.status, 0) << r.out;
  const std::string big = fsverity_digest(test::pattern(5000, 7), HashAlgorithm::sha256).hex();
  const std::string big_path = big.substr(0, 2) + "/" + big.substr(2);
  const std::string mode_d = [&] {
    struct stat st;
    ::stat((src + "/d").c_str(), &st);
    char buf[16];
    std::snprintf(buf, sizeof buf, "%o", st.st_mode);
    return std::string(buf);
  }();
  const std::string uid = std::to_string(::getuid()) + " " + std::to_string(::getgid());
  r = cfsctl("--repo " + repo + " dump-files img /d d/a");
  ASSERT_EQ(r.status, 0) << r.out;
  const std::string a_line = " 3 100644 1 " + uid + " 0 1700000000.5 - hi\\n - user.k=v\\x3d1\n";
  const std::string d_lines =
      "/d 0 " + mode_d + " 3 " + uid + " 0 1700000000.5 - - -\n" + "/d/a" + a_line +
      "/d/big 5000 100644 2 " + uid + " 0 1700000000.5 " + big_path + " - " + big + "\n" +
      "/d/link 1 120777 1 " + uid + " 0 1700000000.5 a - -\n" + "/d/sub 0 " + mode_d + " 2 " + uid +
      " 0 1700000000.5 - - -\n" + "/d/sub/big2 0 @120000 - - - - 0.0 /d/big - -\n";
  EXPECT_EQ(r.out, d_lines + "d/a" + a_line);
  r = cfsctl("--repo " + repo + " dump-files --backing-path-only img /d/a /d/sub/big2");
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, "/d/a inline\n/d/sub/big2 " + big_path + "\n");
  r = cfsctl("--repo " + repo + " dump-files --backing-path-only img /d");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("/d is a directory"), std::string::npos) << r.out;
  r = cfsctl("--repo " + repo + " dump-files img /d/missing");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("/d/missing not found"), std::string::npos) << r.out;

  const char* env = std::getenv("CFS_RS_ORACLE");
  const std::string oracle = env && *env ? env : "/var/tmp/rs-oracle/bin/rsoracle";
  if (::access(oracle.c_str(), X_OK) != 0) {
    std::printf("composefs-rs oracle %s not built: dump-files not compared with it\n",
                oracle.c_str());
    return;
  }
  std::string theirs;
  ASSERT_EQ(test::run(oracle + " --hash sha256 create-dumpfile --no-propagate-usr-to-root " +
                          quote(src) + " | grep '^/d'",
                      &theirs),
            0);
  EXPECT_EQ(theirs, d_lines) << "composefs-rs' dumpfile of the same tree";
}

// --no-repo (composefs-rs): compute-id ignores --repo and takes the global --hash (default
// sha512); commands that need the repository refuse it.
TEST(RepoCli, NoRepo) {
  TempDir tmp;
  const std::string repo = quote(tmp / "repo");
  make_tree(tmp / "src", 4, 3, 1000);
  ASSERT_EQ(cfsctl("--repo " + repo + " init --insecure --hash sha256").status, 0);
  Result in_repo = cfsctl("--repo " + repo + " compute-id " + quote(tmp / "src"));
  ASSERT_EQ(in_repo.status, 0) << in_repo.out;
  EXPECT_EQ(test::trim(in_repo.out).size(), 64u);
  Result r = cfsctl("--repo " + repo + " --no-repo compute-id " + quote(tmp / "src"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(test::trim(r.out).size(), 128u) << "sha512 without a repository";
  r = cfsctl("--no-repo --hash sha256 compute-id " + quote(tmp / "src"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, in_repo.out);
  r = cfsctl("--repo " + repo + " --hash sha512 compute-id " + quote(tmp / "src"));
  EXPECT_EQ(r.status, 1) << r.out;
  r = cfsctl("--repo " + repo + " --no-repo images");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("--no-repo is only supported for"), std::string::npos) << r.out;
}

// import-image stores an image read from stdin (after the strict reader accepted it) and
// image-objects lists the objects it names.
TEST(RepoCli, ImportImageAndImageObjects) {
  TempDir tmp;
  const std::string repo = quote(tmp / "repo");
  make_tree(tmp / "src", 6, 8, 20000);
  ASSERT_EQ(cfsctl("--repo " + repo + " init --insecure --hash sha256").status, 0);
  Result r = cfsctl("--repo " + repo + " create-image " + quote(tmp / "src") + " orig");
  ASSERT_EQ(r.status, 0) << r.out;
  const std::string id = test::trim(r.out);
  r = cfsctl("--repo " + repo + " image-objects orig");
  ASSERT_EQ(r.status, 0) << r.out;
  std::set<std::string> listed;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) listed.insert(line);
  std::set<std::string> expected;
  for (const auto& e : fs::recursive_directory_iterator(tmp / "src"))
    if (e.is_regular_file() && e.file_size() > 64)
      expected.insert(fsverity_digest(slurp(e.path()), HashAlgorithm::sha256).hex());
  EXPECT_EQ(listed, expected);

  const std::string image = tmp / "repo/images/" + id;
  r = run_cfsctl("--repo " + repo + " import-image copy < " + quote(image));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(test::trim(r.out), id);
  EXPECT_EQ(fs::read_symlink(tmp / "repo/images/refs/copy").filename(), id);
  test::write_file(tmp / "junk", std::string(8192, 'j'));
  r = run_cfsctl("--repo " + repo + " import-image junk < " + quote(tmp / "junk"));
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_FALSE(fs::exists(tmp / "repo/images/refs/junk"));
}

// meta.json is read by every command: a huge or deeply nested one is refused before it costs
// memory (a 20 MB nested one used to take 768 MB each time).
TEST(RepoCli, OversizedOrDeepMetaJsonIsRefused) {
  TempDir tmp;
  const std::string repo = quote(tmp / "repo");
  ASSERT_EQ(cfsctl("--repo " + repo + " init --insecure --hash sha256").status, 0);
  test::write_file(tmp / "repo/meta.json", std::string(10000, '[') + std::string(10000, ']'));
  Result r = cfsctl("--repo " + repo + " images");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("meta.json: JSON nested deeper than 128 levels"), std::string::npos)
      << r.out.substr(0, 500);
  test::write_file(tmp / "repo/meta.json", std::string(20 << 20, '['));
  r = cfsctl("--repo " + repo + " images");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("meta.json: larger than 65536 bytes"), std::string::npos)
      << r.out.substr(0, 500);
}

// Names in the repository need not be UTF-8; --json output must still be produced (it used to
// abort with nlohmann's type_error, exit 134), as valid JSON with the bad bytes replaced.
TEST(RepoCli, JsonOutputSurvivesNonUtf8Names) {
  TempDir tmp;
  const std::string repo = quote(tmp / "repo");
  make_tree(tmp / "src", 3, 7, 1000);
  ASSERT_EQ(cfsctl("--repo " + repo + " init --insecure --hash sha256").status, 0);
  ASSERT_EQ(
      cfsctl("--repo " + repo + " create-image " + quote(tmp / "src") + " --name base").status, 0);
  const fs::path refs = tmp / "repo/images/refs";
  fs::create_symlink(fs::read_symlink(refs / "base"), refs / "bad\xff");
  test::write_file(tmp / "repo/objects/\xff\xfe", "stray");

  Result r = cfsctl("--repo " + repo + " images --json");
  EXPECT_EQ(r.status, 0) << r.out;
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << r.out;
  EXPECT_NE(j.dump().find("bad\xef\xbf\xbd"), std::string::npos) << r.out;  // U+FFFD

  r = cfsctl("--repo " + repo + " fsck --json");
  EXPECT_NE(r.status, 134) << r.out;
  EXPECT_EQ(r.out.find("terminate called"), std::string::npos) << r.out;
  j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << r.out;

  // fsck messages name the file escaped, in JSON and in the text report alike.
  test::write_file(tmp / "repo/objects/a\x1b[2J\nfake", "stray");
  r = cfsctl("--repo " + repo + " fsck");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("objects/\\xff\\xfe: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("objects/a\\x1b[2J\\x0afake: "), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find('\x1b'), std::string::npos) << r.out;
}

TEST(RepoCli, UnreadableSourceFileLeavesRepositoryConsistent) {
  if (::access("/usr/bin/setpriv", X_OK) != 0) GTEST_SKIP() << "setpriv (util-linux) missing";
  TempDir tmp;
  make_tree(tmp / "src", 10, 7, 200000);
  test::write_file(tmp / "src/secret", test::pattern(1000, 9));
  ::chmod((tmp / "src/secret").c_str(), 0);
  const std::string repo = tmp / "repo";
  ASSERT_EQ(cfsctl("--repo " + quote(repo) + " init --insecure --hash sha256").status, 0);
  ASSERT_EQ(test::run("chown -R nobody " + quote(repo) + " && chmod 755 " + quote(tmp.path())), 0);
  std::string out;
  int status = test::run("setpriv --reuid=nobody --regid=nogroup --clear-groups " + quote(kCfsctl) +
                             " --repo " + quote(repo) + " create-image " + quote(tmp / "src") +
                             " --name x 2>&1",
                         &out);
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find(tmp / "src/secret"), std::string::npos) << out;
  EXPECT_NE(out.find("Permission denied"), std::string::npos) << out;
  Result check = cfsctl("--repo " + quote(repo) + " fsck");
  EXPECT_EQ(check.status, 0) << check.out;
  EXPECT_EQ(cfsctl("--repo " + quote(repo) + " images").out, "");
}

// A small tmpfs fills up in the middle of create-image.
TEST(RepoCli, FullDiskLeavesRepositoryConsistent) {
  TempDir tmp;
  const std::string mnt = tmp / "small";
  fs::create_directories(mnt);
  if (::mount("tmpfs", mnt.c_str(), "tmpfs", 0, "size=3m") != 0)
    GTEST_SKIP() << "cannot mount tmpfs: " << std::strerror(errno);
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{mnt};
  make_tree(tmp / "src", 40, 8, 1 << 20);
  make_tree(tmp / "tiny", 5, 9, 20000);
  const std::string repo = quote(mnt + "/repo");
  ASSERT_EQ(cfsctl("--repo " + repo + " init --insecure --hash sha256").status, 0);
  ASSERT_EQ(
      cfsctl("--repo " + repo + " create-image " + quote(tmp / "tiny") + " --name tiny").status, 0);
  Result r = cfsctl("--repo " + repo + " create-image " + quote(tmp / "src") + " --name big");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("No space left on device"), std::string::npos) << r.out;
  Result check = cfsctl("--repo " + repo + " fsck");
  EXPECT_EQ(check.status, 0) << check.out;
  EXPECT_EQ(cfsctl("--repo " + repo + " images").out.find("big"), std::string::npos);
  // gc frees what the failed run linked; the surviving image is intact.
  EXPECT_EQ(cfsctl("--repo " + repo + " gc").status, 0);
  EXPECT_EQ(cfsctl("--repo " + repo + " fsck").status, 0);
  EXPECT_NE(cfsctl("--repo " + repo + " images").out.find(" tiny"), std::string::npos);
}

}  // namespace
}  // namespace cfs::store
