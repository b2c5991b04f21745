// End-to-end tests of the built command-line tools: mkcomposefs and composefs-info (the
// C-compatible drop-ins) and the cfsctl image commands, run as a user would run them.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cfs/erofs/reader.h"
#include "cfs/erofs/writer.h"
#include "cfs/fd.h"
#include "cfs/fsverity.h"
#include "testdata.h"

namespace cfs::test {
// Names the vector in gtest messages instead of dumping the struct's bytes.
void PrintTo(const VectorRow& row, std::ostream* os) {
  *os << row.asset;
}
}  // namespace cfs::test

namespace {

namespace fs = std::filesystem;
using cfs::test::quote;
using cfs::test::TempDir;
using cfs::test::trim;

const std::string kBin = CFS_BINDIR;

struct RunResult {
  int status = -1;  // exit code, or -1 if killed by a signal
  std::string out;
  std::string err;
};

// Runs a shell command line with the given stdin, capturing stdout and stderr.
RunResult run(const std::string& command, const std::string& input = "") {
  TempDir io;
  { std::ofstream(io / "in", std::ios::binary) << input; }
  // bash for pipefail: a failing producer in a pipeline must fail the test.
  std::string line = "bash -o pipefail -c " + quote(command) + " <" + quote(io / "in") + " >" +
                     quote(io / "out") + " 2>" + quote(io / "err");
  int raw = std::system(line.c_str());
  RunResult r;
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  r.out = cfs::read_file(io / "out");
  r.err = cfs::read_file(io / "err");
  return r;
}

std::string tool(const std::string& name) {
  return quote(kBin + "/" + name);
}

// The drop-in mkcomposefs building the image of the C vector file `dump` at `image`.
RunResult mkcomposefs_vector(const std::string& dump, const std::string& image) {
  return run(tool("mkcomposefs") + " --from-file " + quote(cfs::test::vectors_dir() + "/" + dump) +
             " " + quote(image));
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  f << data;
  ASSERT_TRUE(f.good()) << path;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

// ---- reference vectors ----------------------------------------------------------------

class VectorTest : public ::testing::TestWithParam<cfs::test::VectorRow> {};

std::string strict_env(bool strict) {
  return strict ? "CFS_PARSE_STRICT=1 " : "env -u CFS_PARSE_STRICT ";
}

std::string version_args(const cfs::test::VectorRow& row) {
  return " --min-version=" + std::to_string(row.min_version) +
         " --max-version=" + std::to_string(row.max_version);
}

TEST_P(VectorTest, MkcomposefsFromFileMatchesCDigests) {
  const auto& row = GetParam();
  TempDir tmp;
  write_file(tmp / "in.dump", cfs::test::read_vector(row.asset));
  RunResult r =
      run(strict_env(row.strict) + tool("mkcomposefs") + version_args(row) +
          " --print-digest --from-file " + quote(tmp / "in.dump") + " " + quote(tmp / "out.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, row.fsverity + "\n");
  EXPECT_EQ(cfs::test::sha256_hex(cfs::read_file(tmp / "out.cfs")), row.sha256);

  // --print-digest-only writes nothing and prints the same digest; measure-file agrees.
  r = run(strict_env(row.strict) + tool("mkcomposefs") + version_args(row) +
              " --print-digest-only --from-file -",
          cfs::test::read_vector(row.asset));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, row.fsverity + "\n");
  r = run(tool("composefs-info") + " measure-file " + quote(tmp / "out.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, row.fsverity + "\n");
}

TEST_P(VectorTest, InfoDumpRoundTripIsByteIdentical) {
  const auto& row = GetParam();
  TempDir tmp;
  write_file(tmp / "in.dump", cfs::test::read_vector(row.asset));
  RunResult r = run(strict_env(row.strict) + tool("mkcomposefs") + version_args(row) +
                    " --from-file " + quote(tmp / "in.dump") + " " + quote(tmp / "a.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  // Through a pipe, as the C test suite does it; the dump is always strict-clean.
  r = run(tool("composefs-info") + " dump " + quote(tmp / "a.cfs") + " | " + "CFS_PARSE_STRICT=1 " +
          tool("mkcomposefs") + version_args(row) + " --from-file - " + quote(tmp / "b.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(cfs::read_file(tmp / "a.cfs"), cfs::read_file(tmp / "b.cfs"));
}

std::string vector_name(const ::testing::TestParamInfo<cfs::test::VectorRow>& info) {
  std::string name = info.param.asset;
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

INSTANTIATE_TEST_SUITE_P(Vectors, VectorTest, ::testing::ValuesIn(cfs::test::load_vectors()),
                         vector_name);

TEST(MkcomposefsCli, ShouldFailDumpsExitOneNamingTheLine) {
  int count = 0;
  for (const auto& entry : fs::directory_iterator(cfs::test::vectors_dir())) {
    std::string name = entry.path().filename();
    if (!name.starts_with("should-fail-")) continue;
    count++;
    RunResult r = run(tool("mkcomposefs") + " --from-file " + quote(entry.path()) + " -");
    EXPECT_EQ(r.status, 1) << name;
    // "FILE:LINE: reason", the oversized file included (the parser knows the EROFS limit).
    std::string expected = name + ":[0-9]+: [a-z]";
    EXPECT_TRUE(std::regex_search(r.err, std::regex(expected))) << name << ": " << r.err;
    EXPECT_EQ(r.out, "") << name;
  }
  EXPECT_EQ(count, 14);
}

TEST(MkcomposefsCli, StrictModeFollowsTheEnvironment) {
  // no-newline.dump lacks its final newline: only the lenient parser takes it.
  std::string path = cfs::test::vectors_dir() + "/no-newline.dump";
  RunResult lenient = run(strict_env(false) + tool("mkcomposefs") +
                          " --print-digest-only --from-file " + quote(path));
  EXPECT_EQ(lenient.status, 0) << lenient.err;
  RunResult strict = run(strict_env(true) + tool("mkcomposefs") +
                         " --print-digest-only --from-file " + quote(path));
  EXPECT_EQ(strict.status, 1);
  EXPECT_NE(strict.err.find("no-newline.dump"), std::string::npos) << strict.err;
}

TEST(ComposefsInfoCli, FilterKeepsNamedTopLevelEntries) {
  TempDir tmp;
  RunResult r = mkcomposefs_vector("special.dump", tmp / "out.cfs");
  ASSERT_EQ(r.status, 0) << r.err;
  r = run(tool("composefs-info") + " --filter=chardev --filter=inline --filter=whiteout dump " +
          quote(tmp / "out.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 4u) << r.out;
  EXPECT_TRUE(std::regex_search(lines[0], std::regex("^/ 4096 40555.*trusted.foo1")));
  EXPECT_TRUE(lines[1].starts_with("/chardev 0 20777"));
  EXPECT_TRUE(std::regex_search(lines[2], std::regex("^/inline 15 100777.*FOOBAR")));
  EXPECT_TRUE(lines[3].starts_with("/whiteout 0 20777"));
}

// Lines printed by C composefs-info 1.0.8 for the image of special.dump: xattrs in stored
// order (inline, then shared) and the v1 opaque markers of a directory holding whiteouts.
TEST(ComposefsInfoCli, DumpPrintsWhatTheCToolPrints) {
  TempDir tmp;
  RunResult r = mkcomposefs_vector("special.dump", tmp / "out.cfs");
  ASSERT_EQ(r.status, 0) << r.err;
  r = run(tool("composefs-info") + " dump " + quote(tmp / "out.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  auto lines = lines_of(r.out);
  ASSERT_GE(lines.size(), 4u);
  EXPECT_EQ(lines[0],
            "/ 4096 40555 2 0 0 0 1633950376.0 - - - trusted.foo1=bar-1 "
            "trusted.overlay.opaque=x user.foo2=bar-2 user.overlay.opaque=x");
  EXPECT_EQ(lines[3],
            "/escaped-xattr 0 100777 1 0 0 0 1633950376.0 - - - "
            "trusted.overlay.redirect=/foo\\n user.overlay.redirect=/foo\\n user.foo=bar-2");

  // '@' lines carry the target's content, digest and xattrs, as the C tool prints them.
  std::string dump =
      "/ 0 40755 2 0 0 0 0.0 - - -\n"
      "/a 100000 100644 2 0 0 0 0.0 01/23456789abcdef0123456789abcdef0123456789abcdef"
      "0123456789abcdef - 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"
      "/b 3 100644 2 0 0 0 0.0 - abc - user.x=1\n"
      "/c 100000 @100644 2 0 0 0 0.0 /a - -\n"
      "/d 3 @100644 2 0 0 0 0.0 /b - -\n";
  r = run(tool("mkcomposefs") + " --from-file - " + quote(tmp / "links.cfs"), dump);
  ASSERT_EQ(r.status, 0) << r.err;
  r = run(tool("composefs-info") + " dump " + quote(tmp / "links.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 5u) << r.out;
  EXPECT_EQ(lines[3],
            "/c 100000 @100644 2 0 0 0 0.0 /a - "
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  EXPECT_EQ(lines[4], "/d 3 @100644 2 0 0 0 0.0 /b abc - user.x=1");
}

TEST(ComposefsInfoCli, LsMarksTypes) {
  TempDir tmp;
  std::string dump =
      "/ 0 40755 2 0 0 0 0.0 - - -\n"
      "/dir 0 40755 2 0 0 0 0.0 - - -\n"
      "/dir/with\\x20space 5 100644 2 0 0 0 0.0 - hello -\n"
      "/ext 100000 100644 1 0 0 0 0.0 01/23456789abcdef0123456789abcdef0123456789abcdef"
      "0123456789abcdef - 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"
      "/link 3 120777 1 0 0 0 0.0 a\\x20b - -\n"
      "/zlink 5 @100644 0 0 0 0 0.0 /dir/with\\x20space - -\n";
  RunResult r = run(tool("mkcomposefs") + " --from-file - " + quote(tmp / "out.cfs"), dump);
  ASSERT_EQ(r.status, 0) << r.err;
  r = run(tool("composefs-info") + " ls " + quote(tmp / "out.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out,
            "/dir/\t\n"
            "/dir/with space\n"
            "/ext\t@ 01/23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"
            "/link\t-> a\\x20b\n"
            "/zlink\n");
}

TEST(ComposefsInfoCli, MeasureFileVectors) {
  TempDir tmp;
  write_file(tmp / "empty", "");
  write_file(tmp / "hello", "hello world\n");
  RunResult r = run(tool("composefs-info") + " measure-file " + quote(tmp / "empty") + " " +
                    quote(tmp / "hello"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out,
            "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95\n"
            "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92\n");
  r = run(tool("composefs-info") + " measure-file " + quote(tmp / "absent"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("absent"), std::string::npos) << r.err;
}

// ---- directory sources ------------------------------------------------------------------

// A source tree with every file type, hardlinks, xattrs, and files on both sides of the
// 64-byte inline limit.
class DirectoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = tmp_ / "src";
    fs::create_directories(src_ + "/sub/deeper");
    write_file(src_ + "/small", "small file\n");
    write_file(src_ + "/exactly64", std::string(64, 'a'));
    write_file(src_ + "/just65", std::string(65, 'b'));
    write_file(src_ + "/empty", "");
    std::string big;
    for (int i = 0; i < 300000; i++) big += static_cast<char>(i * 7 + i / 13);
    write_file(src_ + "/big", big);
    write_file(src_ + "/sub/same-as-big", big);  // same content: one object
    write_file(src_ + "/sub/deeper/name with space", std::string(5000, 'x'));
    ASSERT_EQ(::link((src_ + "/big").c_str(), (src_ + "/sub/big-link").c_str()), 0);
    ASSERT_EQ(::link((src_ + "/small").c_str(), (src_ + "/sub/deeper/small-link").c_str()), 0);
    ASSERT_EQ(::symlink("../small", (src_ + "/sub/symlink").c_str()), 0);
    ASSERT_EQ(::symlink("/nonexistent/target", (src_ + "/dangling").c_str()), 0);
    ASSERT_EQ(::mkfifo((src_ + "/fifo").c_str(), 0600), 0);
    ASSERT_EQ(::setxattr((src_ + "/small").c_str(), "user.color", "blue", 4, 0), 0);
    ASSERT_EQ(::setxattr((src_ + "/sub").c_str(), "user.empty", "", 0, 0), 0);
    if (::geteuid() == 0) {
      ASSERT_EQ(::mknod((src_ + "/chardev").c_str(), S_IFCHR | 0644, makedev(1, 3)), 0);
      ASSERT_EQ(::mknod((src_ + "/whiteout").c_str(), S_IFCHR | 0644, makedev(0, 0)), 0);
      ASSERT_EQ(::setxattr((src_ + "/just65").c_str(), "trusted.overlay.foo", "1", 1, 0), 0);
      ASSERT_EQ(::lsetxattr((src_ + "/sub/symlink").c_str(), "trusted.sym", "x", 1, 0), 0);
    }
  }

  // Every distinct content of a file over 64 bytes, by fs-verity object path.
  std::set<std::string> expected_objects() const {
    std::set<std::string> objects;
    for (const auto& e : fs::recursive_directory_iterator(src_)) {
      if (e.symlink_status().type() != fs::file_type::regular) continue;
      if (e.file_size() <= 64) continue;
      objects.insert(cfs::fsverity_digest_file(e.path()).object_path());
    }
    return objects;
  }

  TempDir tmp_;
  std::string src_;
};

TEST_F(DirectoryTest, DigestStoreHoldsObjectsNamedByTheirDigest) {
  std::string store = tmp_ / "objects";
  RunResult r = run(tool("mkcomposefs") + " --digest-store=" + quote(store) + " " + quote(src_) +
                    " " + quote(tmp_ / "img.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;

  std::set<std::string> stored;
  for (const auto& e : fs::recursive_directory_iterator(store)) {
    if (!e.is_regular_file()) continue;
    std::string rel = fs::relative(e.path(), store);
    EXPECT_EQ(cfs::fsverity_digest_file(e.path()).object_path(), rel);
    EXPECT_EQ(e.status().permissions() & fs::perms::all,
              fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                  fs::perms::others_read)
        << rel;
    stored.insert(rel);
  }
  EXPECT_EQ(stored, expected_objects());
  EXPECT_EQ(stored.size(), 3u);  // big (= same-as-big = big-link), just65, 5000 x's

  r = run(tool("composefs-info") + " objects " + quote(tmp_ / "img.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  std::vector<std::string> listed = lines_of(r.out);
  EXPECT_EQ(std::set<std::string>(listed.begin(), listed.end()), stored);
  EXPECT_TRUE(std::is_sorted(listed.begin(), listed.end()));

  r = run(tool("composefs-info") + " --basedir=" + quote(store) + " missing-objects " +
          quote(tmp_ / "img.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "");

  std::string victim = *stored.begin();
  fs::remove(store + "/" + victim);
  r = run(tool("composefs-info") + " --basedir=" + quote(store) + " missing-objects " +
          quote(tmp_ / "img.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, victim + "\n");

  // A second run refills the store and leaves existing objects and no temporary files.
  r = run(tool("mkcomposefs") + " --digest-store=" + quote(store) + " " + quote(src_) + " " +
          quote(tmp_ / "img2.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  size_t files = 0;
  for (const auto& e : fs::recursive_directory_iterator(store))
    if (e.is_regular_file()) files++;
  EXPECT_EQ(files, stored.size());
  EXPECT_EQ(cfs::read_file(tmp_ / "img.cfs"), cfs::read_file(tmp_ / "img2.cfs"));
}

TEST_F(DirectoryTest, ImageKeepsTreeAndHardlinks) {
  RunResult r = run(tool("mkcomposefs") + " --hardlinks --print-digest " + quote(src_) + " " +
                    quote(tmp_ / "img.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, cfs::fsverity_digest_file(tmp_ / "img.cfs").hex() + "\n");

  cfs::erofs::Image image = cfs::erofs::Image::open(tmp_ / "img.cfs");
  image.validate();
  auto nid_of = [&](const std::string& path) {
    cfs::erofs::InodeInfo cur = image.root();
    std::istringstream parts(path);
    std::string part;
    while (std::getline(parts, part, '/')) {
      if (part.empty()) continue;
      auto entry = image.lookup(cur, part);
      if (!entry) throw std::runtime_error("missing " + path);
      cur = image.inode(entry->nid);
    }
    return cur;
  };
  auto big = nid_of("/big");
  auto big_link = nid_of("/sub/big-link");
  EXPECT_EQ(big.nid, big_link.nid);
  EXPECT_EQ(big.nlink, 2u);
  EXPECT_EQ(nid_of("/small").nid, nid_of("/sub/deeper/small-link").nid);
  EXPECT_NE(nid_of("/big").nid, nid_of("/sub/same-as-big").nid);
  EXPECT_EQ(nid_of("/sub/same-as-big").nlink, 1u);
  EXPECT_EQ(image.symlink_target(nid_of("/sub/symlink")), "../small");
  EXPECT_EQ(image.find_xattr(nid_of("/small"), "user.color"), "blue");

  r = run(tool("composefs-info") + " dump " + quote(tmp_ / "img.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  auto lines = lines_of(r.out);
  auto line_of = [&](const std::string& path) -> std::string {
    for (const auto& l : lines)
      if (l.starts_with(path + " ")) return l;
    return "";
  };
  EXPECT_TRUE(
      std::regex_search(line_of("/sub/big-link"), std::regex("^\\S+ 300000 @100644 .* /big ")))
      << line_of("/sub/big-link");
  EXPECT_TRUE(std::regex_search(line_of("/small"),
                                std::regex(" small\\\\x20file\\\\n - .*user.color=blue")))
      << line_of("/small");
  EXPECT_TRUE(line_of("/exactly64").find(std::string(64, 'a')) != std::string::npos);
  EXPECT_TRUE(line_of("/fifo").starts_with("/fifo 0 10600 1 "));
  EXPECT_TRUE(line_of("/dangling").find(" /nonexistent/target ") != std::string::npos);
  if (::geteuid() == 0) {
    EXPECT_TRUE(line_of("/chardev").starts_with("/chardev 0 20644 1 0 0 259 "));
    EXPECT_TRUE(line_of("/whiteout").starts_with("/whiteout 0 20644 1 0 0 0 "));
    EXPECT_NE(line_of("/just65").find("trusted.overlay.foo=1"), std::string::npos);
  }

  // The dump rebuilds the same image.
  r = run(tool("composefs-info") + " dump " + quote(tmp_ / "img.cfs") + " | " +
          tool("mkcomposefs") + " --from-file - " + quote(tmp_ / "again.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(cfs::read_file(tmp_ / "img.cfs"), cfs::read_file(tmp_ / "again.cfs"));
}

// C mkcomposefs 1.0.8 does not detect hardlinks: each link is an inode of its own with nlink
// 1. By default the drop-in gives the same bytes, which are those of a copy of the tree with
// its hardlinks broken.
TEST_F(DirectoryTest, HardlinksAreSeparateInodesByDefaultAsInC) {
  std::string copy = tmp_ / "copy";
  ASSERT_EQ(run("cp -a --no-preserve=links " + quote(src_) + " " + quote(copy)).status, 0);
  ASSERT_EQ(fs::hard_link_count(copy + "/big"), 1u);
  RunResult r =
      run(tool("mkcomposefs") + " --use-epoch " + quote(src_) + " " + quote(tmp_ / "linked.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  r = run(tool("mkcomposefs") + " --use-epoch " + quote(copy) + " " + quote(tmp_ / "copy.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(cfs::read_file(tmp_ / "linked.cfs"), cfs::read_file(tmp_ / "copy.cfs"));

  r = run(tool("composefs-info") + " dump " + quote(tmp_ / "linked.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.find(" @"), std::string::npos) << "no hardlink lines expected:\n" << r.out;
  // --hardlinks keeps them: a different image, with the links as '@' lines.
  r = run(tool("mkcomposefs") + " --use-epoch --hardlinks " + quote(src_) + " " +
          quote(tmp_ / "kept.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(cfs::read_file(tmp_ / "linked.cfs"), cfs::read_file(tmp_ / "kept.cfs"));
  r = run(tool("composefs-info") + " dump " + quote(tmp_ / "kept.cfs"));
  EXPECT_NE(r.out.find("/sub/big-link 300000 @100644"), std::string::npos) << r.out;
}

TEST_F(DirectoryTest, FsckErofsAcceptsTheImage) {
  if (run("command -v fsck.erofs").status != 0) GTEST_SKIP() << "erofs-utils not installed";
  RunResult r = run(tool("mkcomposefs") + " " + quote(src_) + " " + quote(tmp_ / "img.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  r = run("fsck.erofs " + quote(tmp_ / "img.cfs"));
  EXPECT_EQ(r.status, 0) << r.out << r.err;
}

// Paths far beyond PATH_MAX: the scanner walks by directory fd, never by full path.
TEST(MkcomposefsCli, ScansTreesDeeperThanPathMax) {
  TempDir tmp;
  std::string src = tmp / "deep";
  ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
  cfs::UniqueFd dir = cfs::open_file(src, O_RDONLY | O_DIRECTORY);
  std::string name(40, 'd');
  for (int level = 0; level < 150; level++) {  // 150 * 41 bytes > 4096
    ASSERT_EQ(::mkdirat(dir.get(), name.c_str(), 0755), 0);
    dir = cfs::open_at(dir.get(), name, O_RDONLY | O_DIRECTORY);
  }
  {
    cfs::UniqueFd file = cfs::open_at(dir.get(), "bottom", O_WRONLY | O_CREAT, 0644);
    std::string data(1000, 'z');
    cfs::write_all(file.get(), std::as_bytes(std::span(data)), "bottom");
  }
  std::string store = tmp / "objects";
  RunResult r = run(tool("mkcomposefs") + " --digest-store=" + quote(store) + " " + quote(src) +
                    " " + quote(tmp / "deep.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  std::string object = cfs::fsverity_digest(std::string(1000, 'z')).object_path();
  EXPECT_TRUE(fs::exists(store + "/" + object));
  r = run(tool("composefs-info") + " objects " + quote(tmp / "deep.cfs"));
  EXPECT_EQ(r.out, object + "\n");
  r = run(tool("composefs-info") + " ls " + quote(tmp / "deep.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 151u);
  EXPECT_GT(lines.back().size(), 6000u);
  EXPECT_TRUE(lines.back().ends_with("/bottom\t@ " + object)) << lines.back().substr(6000);
}

bool kernel_has_erofs() {
  std::ifstream in("/proc/filesystems");
  std::string line;
  while (std::getline(in, line))
    if (line.ends_with("\terofs")) return true;
  return false;
}

TEST_F(DirectoryTest, MountedImageSharesHardlinkInodes) {
  if (::geteuid() != 0) GTEST_SKIP() << "mounting EROFS needs root";
  if (!kernel_has_erofs()) GTEST_SKIP() << "kernel has no EROFS";
  RunResult r =
      run(tool("mkcomposefs") + " --hardlinks " + quote(src_) + " " + quote(tmp_ / "img.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  std::string mnt = tmp_ / "mnt";
  fs::create_directory(mnt);
  r = run("mount -t erofs -o ro " + quote(tmp_ / "img.cfs") + " " + quote(mnt));
  ASSERT_EQ(r.status, 0) << r.err;
  struct stat a, b, c;
  int ra = ::lstat((mnt + "/big").c_str(), &a);
  int rb = ::lstat((mnt + "/sub/big-link").c_str(), &b);
  int rc = ::lstat((mnt + "/sub/same-as-big").c_str(), &c);
  std::string small = cfs::read_file(mnt + "/sub/deeper/small-link");
  ::umount2(mnt.c_str(), MNT_DETACH);
  ASSERT_EQ(ra, 0);
  ASSERT_EQ(rb, 0);
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(a.st_ino, b.st_ino);
  EXPECT_EQ(a.st_nlink, 2u);
  EXPECT_NE(a.st_ino, c.st_ino);
  EXPECT_EQ(a.st_size, 300000);
  EXPECT_EQ(small, "small file\n");
}

TEST_F(DirectoryTest, ComputeIdIsTheV1ImageDigest) {
  // The plain scan (no OCI transform) with SHA-256 is what mkcomposefs computes.
  RunResult id =
      run(tool("cfsctl") + " compute-id --no-propagate-usr-to-root --hash sha256 " + quote(src_));
  ASSERT_EQ(id.status, 0) << id.err;
  // cfsctl keeps hardlinks (as composefs-rs does); the drop-in does with --hardlinks.
  RunResult v1 = run(tool("mkcomposefs") + " --hardlinks --min-version=1 --max-version=1 " +
                     "--print-digest-only " + quote(src_));
  ASSERT_EQ(v1.status, 0) << v1.err;
  EXPECT_EQ(id.out, v1.out);
  EXPECT_TRUE(std::regex_match(id.out, std::regex("[0-9a-f]{64}\n")));
  // Nothing was written next to the source.
  EXPECT_FALSE(fs::exists(tmp_ / "objects"));
}

TEST_F(DirectoryTest, CfsctlDumpRebuildsTheImage) {
  RunResult r = run(tool("mkcomposefs") + " " + quote(src_) + " " + quote(tmp_ / "img.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  r = run(tool("cfsctl") + " dump " + quote(tmp_ / "img.cfs") + " | " + tool("mkcomposefs") +
          " --from-file - " + quote(tmp_ / "again.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(cfs::read_file(tmp_ / "img.cfs"), cfs::read_file(tmp_ / "again.cfs"));
}

TEST_F(DirectoryTest, ScanOptionsAreApplied) {
  RunResult plain = run(tool("mkcomposefs") + " " + quote(src_) + " -");
  ASSERT_EQ(plain.status, 0) << plain.err;
  RunResult r = run(tool("mkcomposefs") + " --use-epoch --skip-xattrs --skip-devices " +
                    quote(src_) + " " + quote(tmp_ / "img.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  r = run(tool("composefs-info") + " dump " + quote(tmp_ / "img.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  for (const auto& line : lines_of(r.out)) {
    EXPECT_TRUE(std::regex_search(line, std::regex("^\\S+ \\d+ @?\\d+ \\d+ \\d+ \\d+ \\d+ 0\\.0 ")))
        << line;
    EXPECT_EQ(line.find("user."), std::string::npos) << line;
    EXPECT_FALSE(line.starts_with("/chardev ")) << line;
    EXPECT_FALSE(line.starts_with("/whiteout ")) << line;
  }
  r = run(tool("mkcomposefs") + " --user-xattrs " + quote(src_) + " " + quote(tmp_ / "u.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  r = run(tool("composefs-info") + " dump " + quote(tmp_ / "u.cfs"));
  EXPECT_NE(r.out.find("user.color=blue"), std::string::npos);
  EXPECT_EQ(r.out.find("trusted.sym"), std::string::npos);
  EXPECT_EQ(r.out.find("trusted.overlay.foo"), std::string::npos);
}

// ---- errors ---------------------------------------------------------------------------

TEST(MkcomposefsCli, FailedRunLeavesTargetUntouched) {
  TempDir tmp;
  write_file(tmp / "img.cfs", "previous image");
  RunResult r = mkcomposefs_vector("should-fail-too-big.dump", tmp / "img.cfs");
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(cfs::read_file(tmp / "img.cfs"), "previous image");
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(tmp.path())) entries++;
  EXPECT_EQ(entries, 1u) << "temporary file left behind";

  r = run(tool("mkcomposefs") + " " + quote(tmp / "no-such-dir") + " " + quote(tmp / "img.cfs"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("no-such-dir"), std::string::npos) << r.err;
  EXPECT_EQ(cfs::read_file(tmp / "img.cfs"), "previous image");
}

TEST(CliErrors, BadArgumentsExitNonZeroWithAMessage) {
  TempDir tmp;
  write_file(tmp / "root.dump", "/ 0 40755 2 0 0 0 0.0 - - -\n");
  std::string dump = quote(tmp / "root.dump");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {tool("mkcomposefs"), "SOURCE"},
      {tool("mkcomposefs") + " --from-file " + dump, "IMAGE"},
      {tool("mkcomposefs") + " --no-such-option " + dump + " x", "no-such-option"},
      {tool("mkcomposefs") + " --from-file --min-version=3 " + dump + " x", "min-version"},
      {tool("mkcomposefs") + " --from-file --max-version=x " + dump + " x", "max-version"},
      {tool("mkcomposefs") + " --from-file --threads=0 " + dump + " x", "threads"},
      {tool("mkcomposefs") + " --from-file --print-digest-only " + dump + " x", "IMAGE"},
      {tool("mkcomposefs") + " --from-file " + dump + " a b", "not expected"},
      {tool("mkcomposefs") + " --skip-xattrs --user-xattrs " + quote(tmp.path()) + " x", "xattrs"},
      {tool("mkcomposefs") + " --from-file " + dump + " " + quote(tmp / "no/such/dir/img"),
       "no/such/dir"},
      {tool("composefs-info"), "COMMAND"},
      {tool("composefs-info") + " frobnicate x", "frobnicate"},
      {tool("composefs-info") + " dump", "FILE"},
      {tool("composefs-info") + " --filter=a/b dump x", "a/b"},
      {tool("composefs-info") + " missing-objects " + dump, "basedir"},
      {tool("composefs-info") + " dump " + dump, "root.dump"},
      {tool("cfsctl") + " dump", "IMAGE"},
      {tool("cfsctl") + " dump " + quote(tmp / "absent.cfs"), "absent.cfs"},
      {tool("cfsctl") + " --repo " + quote(tmp.path()) + " dump x", "repo"},
      {tool("cfsctl") + " compute-id " + quote(tmp / "absent"), "absent"},
      {tool("cfsctl") + " compute-id " + dump, "root.dump"},
  };
  for (const auto& [command, needle] : cases) {
    RunResult r = run(command);
    EXPECT_NE(r.status, 0) << command;
    EXPECT_NE(r.status, -1) << command << " crashed";
    EXPECT_NE(r.err.find(needle), std::string::npos) << command << "\n" << r.err;
  }
}

TEST(CliErrors, HelpExitsZeroAndExplains) {
  for (const char* t : {"mkcomposefs", "composefs-info"}) {
    RunResult r = run(tool(t) + " --help");
    EXPECT_EQ(r.status, 0) << t;
    EXPECT_NE(r.out.find("--"), std::string::npos) << t;
  }
  RunResult r = run(tool("mkcomposefs") + " --help");
  for (const char* opt : {"--digest-store", "--use-epoch", "--skip-devices", "--skip-xattrs",
                          "--user-xattrs", "--print-digest", "--print-digest-only", "--from-file",
                          "--min-version", "--max-version", "--threads"})
    EXPECT_NE(r.out.find(opt), std::string::npos) << opt;
  r = run(tool("cfsctl") + " compute-id --help");
  EXPECT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("V1"), std::string::npos) << r.out;
}

TEST(CfsctlDump, RejectsCorruptAndOverLongImages) {
  TempDir tmp;
  RunResult r = mkcomposefs_vector("longlink.dump", tmp / "long.cfs");
  ASSERT_EQ(r.status, 0) << r.err;
  // cfs limits symlinks to 1024 bytes; the C-compatible reader takes them.
  r = run(tool("cfsctl") + " dump " + quote(tmp / "long.cfs"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("long.cfs"), std::string::npos) << r.err;
  EXPECT_EQ(run(tool("composefs-info") + " dump " + quote(tmp / "long.cfs")).status, 0);

  std::string image = cfs::read_file(tmp / "long.cfs");
  write_file(tmp / "truncated.cfs", image.substr(0, 8192));
  r = run(tool("cfsctl") + " dump " + quote(tmp / "truncated.cfs"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("truncated.cfs"), std::string::npos) << r.err;
  EXPECT_EQ(r.out, "");

  std::string bad_magic = image;
  bad_magic[1024] ^= 0x55;  // EROFS superblock magic
  write_file(tmp / "badmagic.cfs", bad_magic);
  r = run(tool("cfsctl") + " dump " + quote(tmp / "badmagic.cfs"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("badmagic.cfs"), std::string::npos) << r.err;
  r = run(tool("composefs-info") + " ls " + quote(tmp / "badmagic.cfs"));
  EXPECT_EQ(r.status, 1);
}

// ---- fidelity with C mkcomposefs / composefs-info 1.0.8 --------------------------------------

TEST(MkcomposefsCli, PreEpochFileGivesTheCDigestAndDumpsRoundTrip) {
  TempDir tmp;
  std::string src = tmp / "t";
  ASSERT_EQ(::mkdir(src.c_str(), 0755), 0);
  write_file(src + "/old", "");
  ASSERT_EQ(::chmod((src + "/old").c_str(), 0644), 0);
  ASSERT_EQ(::chmod(src.c_str(), 0755), 0);
  struct timespec old_time[2] = {{-100, 0}, {-100, 0}};
  struct timespec root_time[2] = {{1000, 0}, {1000, 0}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (src + "/old").c_str(), old_time, 0), 0);
  ASSERT_EQ(::utimensat(AT_FDCWD, src.c_str(), root_time, 0), 0);
  // C mkcomposefs 1.0.8 --print-digest-only on the same tree (uid/gid 0, no xattrs).
  const std::string c_digest = "37a5d1a59719859da144ac7c3ee279e04449cc5a2096c047caf03a44c3a50c80";
  RunResult r =
      run(tool("mkcomposefs") + " --print-digest " + quote(src) + " " + quote(tmp / "t.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  if (::getuid() == 0 && ::listxattr(src.c_str(), nullptr, 0) == 0) {
    EXPECT_EQ(trim(r.out), c_digest);
  }
  r = run(tool("composefs-info") + " dump " + quote(tmp / "t.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 2u) << r.out;
  EXPECT_EQ(lines[1], "/old 0 100644 1 0 0 0 -100.0 - - -");
  // mkcomposefs takes the dump back and gives the same image.
  RunResult again = run(tool("composefs-info") + " dump " + quote(tmp / "t.cfs") + " | " +
                        tool("mkcomposefs") + " --from-file --print-digest-only -");
  ASSERT_EQ(again.status, 0) << again.err;
  EXPECT_EQ(trim(again.out), cfs::fsverity_digest_file(tmp / "t.cfs").hex());
}

TEST(MkcomposefsCli, FedoraFuzzDumpGivesTheCDigest) {
  // composefs tests/fuzzing/data/fedora: hardlinks in tar order ('@' before the target).
  TempDir tmp;
  write_file(tmp / "fedora.dump", cfs::test::read_vector("fuzz-fedora.dump.gz"));
  RunResult r = run(tool("mkcomposefs") + " --from-file --print-digest " +
                    quote(tmp / "fedora.dump") + " " + quote(tmp / "fedora.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(trim(r.out), "f49fba9f09997d1379fd2739b4cfdf0d2eeaf875adb868b00d04771e8dfc7a54");
  // composefs-info 1.0.8 dump of C's image of it (its sha256).
  r = run(tool("composefs-info") + " dump " + quote(tmp / "fedora.cfs") + " | sha256sum");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out.substr(0, 64),
            "02acf54eb7a5aa7fcbe462e351844334bdaf5c33abc11334f43d9f34c10a230a");
}

TEST(MkcomposefsCli, MalformedDigestIsAnError) {
  TempDir tmp;
  std::string dump = "/ 0 40755 2 0 0 0 0.0 - - -\n/f 100000 100644 1 0 0 0 0.0 aa/bb - " +
                     std::string(65, 'a') + "\n";
  RunResult r =
      run("env -u CFS_PARSE_STRICT " + tool("mkcomposefs") + " --from-file --print-digest-only -",
          dump);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.err.find("<stdin>:2: invalid digest"), std::string::npos) << r.err;
}

// An empty regular file whose dumpfile line names a backing path (with or without a
// digest): C mkcomposefs 1.0.8 stores it as an empty inline file, dropping the path, and so
// does mkcomposefs here (the image digest is C's). composefs-rs' dumpfile parser keeps such a
// file external (redirect and metacopy); the mkcomposefs drop-in stays with C.
TEST(MkcomposefsCli, EmptyFileWithBackingPathIsInlineAsInC) {
  const std::string hex(64, 'a');
  const std::string dump = "/ 0 40755 2 0 0 0 0.0 - - -\n/f 0 100644 1 0 0 0 0.0 aa/" +
                           hex.substr(2) + " - -\n/g 0 100644 1 0 0 0 0.0 aa/" + hex.substr(2) +
                           " - " + hex + "\n";
  RunResult r = run(tool("mkcomposefs") + " --from-file --print-digest-only -", dump);
  ASSERT_EQ(r.status, 0) << r.err;
  // c-mkcomposefs 1.0.8 --from-file --print-digest-only of the same dumpfile.
  EXPECT_EQ(r.out, "8d398102599150f3ca8dbd8411267fe78eb196ce3a802c3c095bccbedbe0838e\n");
  TempDir tmp;
  r = run(tool("mkcomposefs") + " --from-file - " + tmp.path() + "/e.img", dump);
  ASSERT_EQ(r.status, 0) << r.err;
  r = run(tool("composefs-info") + " dump " + tmp.path() + "/e.img", "");
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out,
            "/ 4096 40755 2 0 0 0 0.0 - - -\n/f 0 100644 1 0 0 0 0.0 - - -\n"
            "/g 0 100644 1 0 0 0 0.0 - - -\n");
}

TEST(ComposefsInfoCli, DumpOfManyXattrsAndHardlinksIsCorrect) {
  // One inode with 1200 xattrs and 40 names: each line carries all of them (this took
  // quadratic time per line, and the inode was decoded again for every name).
  TempDir tmp;
  std::string xattrs;
  for (int i = 0; i < 1200; i++) xattrs += " user.x" + std::to_string(i) + "=v" + std::to_string(i);
  std::string dump =
      "/ 0 40755 2 0 0 0 0.0 - - -\n/f 3 100644 40 0 0 0 0.0 - abc -" + xattrs + "\n";
  for (int i = 0; i < 39; i++)
    dump += "/g" + std::to_string(100 + i) + " 0 @100644 0 0 0 0 0.0 /f - -\n";
  RunResult r = run(tool("mkcomposefs") + " --from-file - " + quote(tmp / "x.cfs"), dump);
  ASSERT_EQ(r.status, 0) << r.err;
  r = run(tool("composefs-info") + " dump " + quote(tmp / "x.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  auto lines = lines_of(r.out);
  ASSERT_EQ(lines.size(), 41u);
  EXPECT_TRUE(lines[1].starts_with("/f 3 100644 40 0 0 0 0.0 - abc -"));
  EXPECT_TRUE(lines[2].starts_with("/g100 3 @100644 40 0 0 0 0.0 /f abc -"));
  for (size_t i = 1; i < lines.size(); i++) {
    EXPECT_EQ(std::count(lines[i].begin(), lines[i].end(), '='), 1200) << i;
    EXPECT_NE(lines[i].find(" user.x1199=v1199"), std::string::npos) << i;
  }
}

TEST(ComposefsInfoCli, DumpOutputIsBoundedLikeCfsctlDump) {
  // 2000 files share one 64 KiB xattr value: a 240 KiB image whose dump would be 131 MB.
  // Both dumps stop at 32 x image size + 64 MiB with an error naming the image.
  TempDir tmp;
  cfs::erofs::Tree tree;
  for (int i = 0; i < 2000; i++) {
    auto f = tree.root->set_child("f" + std::to_string(10000 + i),
                                  cfs::erofs::make_inode(S_IFREG | 0644));
    f->set_xattr("user.big", std::string(65535, 'a'));
  }
  write_file(tmp / "shared.cfs", cfs::erofs::image_to_string(tree));
  ASSERT_LT(fs::file_size(tmp / "shared.cfs"), 300000u);
  for (std::string command : {"composefs-info dump", "cfsctl dump"}) {
    std::string binary = command.substr(0, command.find(' '));
    RunResult r = run(tool(binary) + command.substr(binary.size()) + " " +
                      quote(tmp / "shared.cfs") + " | wc -c");
    EXPECT_NE(r.status, 0) << command;
    EXPECT_NE(r.err.find("shared.cfs"), std::string::npos) << command << ": " << r.err;
    EXPECT_LT(std::stoull(trim(r.out)), 80u << 20) << command;
  }
}

TEST(ComposefsInfoCli, SparseTailDoesNotCostMemory) {
  // A small image extended to 64 GiB with a hole: the reader's bookkeeping follows the
  // metadata it reaches, not the apparent size (it allocated 8.6 GB for this).
  TempDir tmp;
  std::string dump =
      "/ 0 40755 3 0 0 0 0.0 - - -\n/d 0 40755 2 0 0 0 0.0 - - -\n"
      "/d/f 3 100644 1 0 0 0 0.0 - abc - user.a=b\n";
  RunResult r = run(tool("mkcomposefs") + " --from-file - " + quote(tmp / "s.cfs"), dump);
  ASSERT_EQ(r.status, 0) << r.err;
  ASSERT_EQ(::truncate((tmp / "s.cfs").c_str(), off_t{64} << 30), 0);
  auto max_rss_kib = [] {
    struct rusage usage {};
    ::getrusage(RUSAGE_SELF, &usage);
    return usage.ru_maxrss;
  };
  long before = max_rss_kib();
  cfs::erofs::Image image = cfs::erofs::Image::open(tmp / "s.cfs");
  image.validate();
  cfs::erofs::Tree tree = image.to_tree();
  ASSERT_NE(tree.lookup("/d/f"), nullptr);
  EXPECT_LT(max_rss_kib() - before, 64 * 1024) << "KiB of extra peak memory";
  // The tools give the same dump as for the unextended image.
  r = run(tool("composefs-info") + " dump " + quote(tmp / "s.cfs"));
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.out.find("/d/f 3 100644 1 0 0 0 0.0 - abc - user.a=b"), std::string::npos) << r.out;
}

}  // namespace
