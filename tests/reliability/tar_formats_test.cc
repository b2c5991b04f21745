// The tar reader against every header format real writers produce (issue 12: GNU devices,
// sparse members, v7, star, base-256, PAX records) and its parse-time resource bounds
// (issue 11: xattr values, PAX header size, path length and nesting).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>

#include "cfs/erofs/dumpfile.h"
#include "cfs/error.h"
#include "cfs/fsverity.h"
#include "cfs/oci/oci.h"
#include "cfs/oci/tar.h"
#include "cfs/oci/tree.h"
#include "cfs/output.h"
#include "cfs/store/fsck.h"
#include "cfs/store/gc.h"
#include "cfs/store/repository.h"
#include "layout_builder.h"
#include "testdata.h"

namespace cfs::oci {
namespace {

using store::Repository;
using test::pax_member;
using test::tar_archive;
using test::tar_member;
using test::TempDir;

// Samples written by GNU tar (tests/data/tar/make-tars.sh).
std::string data_tar(const std::string& name) {
  std::ifstream in(std::string(CFS_TESTDATA) + "/tar/" + name, std::ios::binary);
  EXPECT_TRUE(in) << name;
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Splits a tar like the pull does and records what the handler saw.
struct Split : TarHandler {
  std::vector<TarEntry> entries;
  std::map<std::string, Digest> expanded;  // fs-verity digest of each external entry
  std::string rebuilt;                     // every byte handed on, in order
  std::optional<FsVerityHasher> hasher;
  bool current_sparse = false;

  void inline_bytes(std::span<const std::byte> d) override {
    rebuilt.append(reinterpret_cast<const char*>(d.data()), d.size());
  }
  void external_begin(const TarEntry& e) override {
    hasher.emplace();
    current_sparse = e.sparse;
  }
  void external_bytes(std::span<const std::byte> d) override {
    hasher->update(d);
    // A sparse member's data already arrived inline (the tar bytes); this is the expansion.
    if (!current_sparse) rebuilt.append(reinterpret_cast<const char*>(d.data()), d.size());
  }
  void external_zeros(uint64_t n) override {
    ASSERT_TRUE(current_sparse);
    hasher->update_zeros(n);
  }
  void entry(TarEntry& e) override {
    if (e.external()) expanded[e.path] = hasher->finish();
    entries.push_back(e);
  }
  const TarEntry* find(const std::string& path) const {
    for (const TarEntry& e : entries)
      if (e.path == path) return &e;
    return nullptr;
  }
};

Split split(const std::string& tar, XattrMode mode = XattrMode::keep_user_xattrs) {
  Split s;
  TarParser parser(s, TarMode::split, "test", mode);
  parser.feed({reinterpret_cast<const std::byte*>(tar.data()), tar.size()});
  parser.finish();
  return s;
}

std::string parse_error(const std::string& tar, XattrMode mode = XattrMode::allowlist_only) {
  try {
    split(tar, mode);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string sparse_content() {
  std::string s(4096, 'a');
  s.resize(131072, '\0');
  s.append(4096, 'b');
  s.resize(307200, '\0');
  return s;
}

TEST(TarFormats, GnuDeviceNodesKeepTheirNumbers) {
  // Found with an mmdebstrap rootfs: GNU headers ("ustar  \0") were taken for v7, device
  // numbers were never read and every node became a 0:0 character device (a whiteout).
  Split s = split(data_tar("devices-gnu.tar"));
  const TarEntry* null = s.find("dev/null");
  ASSERT_NE(null, nullptr);
  EXPECT_EQ(null->type, TarEntryType::chardev);
  EXPECT_EQ(null->dev_major, 1u);
  EXPECT_EQ(null->dev_minor, 3u);
  const TarEntry* sda = s.find("dev/sda");
  ASSERT_NE(sda, nullptr);
  EXPECT_EQ(sda->type, TarEntryType::blockdev);
  EXPECT_EQ(sda->dev_major, 8u);
  EXPECT_EQ(sda->dev_minor, 0u);
  ASSERT_NE(s.find("dev/fifo"), nullptr);
  EXPECT_EQ(s.find("dev/fifo")->type, TarEntryType::fifo);
  // Hand-made GNU header too, with big numbers.
  Split h = split(tar_archive({tar_member({.name = "./tty",
                                           .type = '3',
                                           .dev_major = 136,
                                           .dev_minor = 0777777,
                                           .magic = test::kGnuMagic})}));
  ASSERT_EQ(h.entries.size(), 1u);
  EXPECT_EQ(h.entries[0].dev_major, 136u);
  EXPECT_EQ(h.entries[0].dev_minor, 0777777u);
}

TEST(TarFormats, SparseMembersOfEveryGnuFormatExpand) {
  const std::string expected = sparse_content();
  for (const char* name : {"sparse-gnu.tar", "sparse-oldgnu.tar", "sparse-pax00.tar",
                           "sparse-pax01.tar", "sparse-pax10.tar"}) {
    SCOPED_TRACE(name);
    std::string tar = data_tar(name);
    Split s = split(tar);
    // Every tar byte is handed on exactly once, so the splitstream re-exports the layer.
    EXPECT_TRUE(s.rebuilt == tar);
    const TarEntry* sparse = s.find("data/sparse");
    ASSERT_NE(sparse, nullptr);
    EXPECT_TRUE(sparse->sparse);
    EXPECT_EQ(sparse->size, expected.size());
    EXPECT_EQ(s.expanded.at("data/sparse"), fsverity_digest(expected));
    const TarEntry* tiny = s.find("data/tiny");
    ASSERT_NE(tiny, nullptr);
    EXPECT_EQ(tiny->size, 60u);
    EXPECT_EQ(tiny->content, std::string(60, '\0'));
    const TarEntry* huge = s.find("data/empty1g");
    ASSERT_NE(huge, nullptr);
    EXPECT_EQ(huge->size, uint64_t{1} << 30);
    FsVerityHasher zeros;
    zeros.update_zeros(uint64_t{1} << 30);
    EXPECT_EQ(s.expanded.at("data/empty1g"), zeros.finish());
    const TarEntry* plain = s.find("data/plain");
    ASSERT_NE(plain, nullptr);
    EXPECT_FALSE(plain->sparse);
    EXPECT_EQ(plain->size, 100u);
    EXPECT_EQ(s.expanded.at("data/plain"), fsverity_digest(std::string(100, 'p')));
    for (const TarEntry& e : s.entries) EXPECT_EQ(e.path.find("GNUSparseFile"), std::string::npos);
  }
}

TEST(TarFormats, SparseLayerPullsKeepsHolesAndReexports) {
  TempDir tmp;
  std::string layer = data_tar("sparse-pax10.tar");
  test::write_layout(tmp / "layout", layer);
  Repository repo =
      Repository::init(tmp / "repo", {.algorithm = HashAlgorithm::sha256, .insecure = true});
  oci::pull(repo, "oci:" + tmp / "layout", "sparse", {.threads = 1});
  erofs::Tree tree = oci::image_tree(repo, "sparse", false);
  const erofs::Inode* f = tree.lookup("/data/sparse");
  ASSERT_NE(f, nullptr);
  ASSERT_TRUE(f->digest);
  EXPECT_EQ(*f->digest, fsverity_digest(sparse_content()));
  EXPECT_EQ(f->size, 307200u);
  struct stat st {};
  ASSERT_EQ(::stat((tmp / "repo/objects/" + f->digest->object_path()).c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 307200u);
  EXPECT_LT(static_cast<uint64_t>(st.st_blocks) * 512, 307200u / 2) << "holes were written out";
  const erofs::Inode* huge = tree.lookup("/data/empty1g");
  ASSERT_NE(huge, nullptr);
  ASSERT_TRUE(huge->digest);
  ASSERT_EQ(::stat((tmp / "repo/objects/" + huge->digest->object_path()).c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), uint64_t{1} << 30);
  EXPECT_LT(st.st_blocks, 1024);
  EXPECT_EQ(tree.lookup("/data/tiny")->content, std::string(60, '\0'));
  // The layer stream still reproduces the tar byte for byte.
  StringSink sink;
  repo.cat_stream("oci-layer-" + test::sha256_digest(layer), sink);
  EXPECT_TRUE(sink.str() == layer);
  // The expanded objects are reachable: gc keeps them, fsck is clean.
  store::collect_garbage(repo);
  EXPECT_TRUE(repo.has_object(*f->digest));
  EXPECT_TRUE(repo.has_object(*huge->digest));
  EXPECT_TRUE(store::fsck(repo).ok());
  EXPECT_TRUE(oci::fsck_images(repo, std::nullopt).ok());
}

TEST(TarFormats, V7StarUstarAndGnuNameFields) {
  // v7: no magic; typeflag '\0' with a trailing slash is a directory.
  Split v7 = split(data_tar("v7.tar"));
  ASSERT_NE(v7.find("data/"), nullptr);
  EXPECT_EQ(v7.find("data/")->type, TarEntryType::directory);
  EXPECT_EQ(v7.expanded.at("data/plain"), fsverity_digest(std::string(100, 'p')));
  Split old =
      split(tar_archive({tar_member({.name = "olddir/", .type = '\0', .magic = test::kV7Magic}),
                         tar_member({.name = "olddir/f", .type = '\0', .magic = test::kV7Magic})}));
  EXPECT_EQ(old.find("olddir/")->type, TarEntryType::directory);
  EXPECT_EQ(old.find("olddir/f")->type, TarEntryType::regular);

  // ustar: the 155-byte prefix is part of the name.
  Split ustar = split(tar_archive({tar_member({.name = "name", .tail = "some/prefix"})}));
  EXPECT_EQ(ustar.entries.at(0).path, "some/prefix/name");
  // star: a 131-byte prefix, then atime/ctime, and "tar\0" at 508.
  std::string star_tail = "star/prefix";
  star_tail.resize(131, '\0');
  star_tail += "14567101600" + std::string(1, '\0') + "14567101600" + std::string(1, '\0');
  star_tail.resize(163, '\0');
  star_tail += std::string("tar\0", 4);
  Split star = split(tar_archive({tar_member({.name = "name", .tail = star_tail})}));
  EXPECT_EQ(star.entries.at(0).path, "star/prefix/name");
  // GNU: that area holds atime/ctime, never a prefix.
  Split gnu = split(tar_archive(
      {tar_member({.name = "gnuname", .magic = test::kGnuMagic, .tail = "14567101600"})}));
  EXPECT_EQ(gnu.entries.at(0).path, "gnuname");
}

TEST(TarFormats, Base256Numbers) {
  // uid 3000000 (> 2097151, octal's limit), a negative mtime (before the epoch, kept).
  std::string uid("\x80\0\0\0\0\x2d\xc6\xc0", 8);
  std::string mtime(12, '\xff');  // -1
  Split s = split(tar_archive({tar_member(
      {.name = "f", .uid_field = uid, .mtime_field = mtime, .magic = test::kGnuMagic})}));
  ASSERT_EQ(s.entries.size(), 1u);
  EXPECT_EQ(s.entries[0].uid, 3000000u);
  EXPECT_EQ(s.entries[0].mtime_sec, -1);
  // A base-256 time beyond 64 bits is refused, not wrapped.
  std::string huge("\xff\x7f\0\0\0\0\0\0\0\0\0\0", 12);
  EXPECT_THROW(split(tar_archive(
                   {tar_member({.name = "h", .mtime_field = huge, .magic = test::kGnuMagic})})),
               cfs::Error);
  // A base-256 size.
  std::string size("\x80\0\0\0\0\0\0\0\0\0\0\x05", 12);
  Split b = split(tar_archive({tar_member({.name = "g", .content = "hello", .size_field = size})}));
  EXPECT_EQ(b.entries.at(0).content, "hello");
}

TEST(TarFormats, PaxRecords) {
  std::string cap("\x01\0\0\x02\x20\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 20);
  Split s = split(tar_archive(
      {pax_member({{"path", "a/long/pax/name"},
                   {"uid", "4000000000"},
                   {"gid", "7"},
                   {"mtime", "1700000000.123456789"},
                   {"uname", "somebody"},
                   {"atime", "1.5"},
                   {"SCHILY.xattr.security.capability", cap},
                   {"SCHILY.xattr.trusted.overlay.opaque", "y"},
                   {"SCHILY.xattr.security.selinux", "system_u:object_r:bin_t:s0"},
                   // bsdtar: URL-encoded name, base64 value.
                   {"LIBARCHIVE.xattr.user.a%3Db", "aGVsbG8="}}),
       tar_member({.name = "short"}),
       pax_member({{"mtime", "-5.25"}, {"SCHILY.devmajor", "300"}, {"SCHILY.devminor", "70000"}}),
       tar_member({.name = "dev", .type = '4'}), pax_member({{"linkpath", std::string(300, 'l')}}),
       tar_member({.name = "sym", .type = '2', .link = "x"})}));
  ASSERT_EQ(s.entries.size(), 3u);
  const TarEntry& f = s.entries[0];
  EXPECT_EQ(f.path, "a/long/pax/name");
  EXPECT_EQ(f.uid, 4000000000u);
  EXPECT_EQ(f.gid, 7u);
  EXPECT_EQ(f.mtime_sec, 1700000000u);
  EXPECT_EQ(f.mtime_nsec, 123456789u);
  // Only the xattrs an image can keep survive the parse (here: keep-user-xattrs mode).
  ASSERT_EQ(f.xattrs.size(), 2u);
  EXPECT_EQ(f.xattrs[0].name, "security.capability");
  EXPECT_EQ(f.xattrs[0].value, cap);
  EXPECT_EQ(f.xattrs[1].name, "user.a=b");
  EXPECT_EQ(f.xattrs[1].value, "hello");
  EXPECT_EQ(s.entries[1].mtime_sec, -6);  // -5.25 s: 0.75 s into second -6
  EXPECT_EQ(s.entries[1].mtime_nsec, 750000000u);
  EXPECT_EQ(s.entries[1].dev_major, 300u);
  EXPECT_EQ(s.entries[1].dev_minor, 70000u);
  EXPECT_EQ(s.entries[2].link, std::string(300, 'l'));
  // The default mode drops user.* too.
  Split d =
      split(tar_archive({pax_member({{"SCHILY.xattr.user.x", "1"}}), tar_member({.name = "f"})}),
            XattrMode::allowlist_only);
  EXPECT_TRUE(d.entries.at(0).xattrs.empty());
}

TEST(TarFormats, UpdateZerosMatchesUpdate) {
  for (size_t lead : {0u, 1u, 4095u, 4096u, 5000u}) {
    for (uint64_t zeros : {0u, 1u, 4096u, 4097u, 12288u, 1000000u}) {
      SCOPED_TRACE(std::to_string(lead) + "+" + std::to_string(zeros));
      std::string data = test::pattern(lead, 7);
      FsVerityHasher a, b;
      a.update(data);
      a.update_zeros(zeros);
      a.update("tail");
      b.update(data + std::string(zeros, '\0') + "tail");
      EXPECT_EQ(a.finish(), b.finish());
    }
  }
}

// A directory whose entries arrive in reverse name order (GNU tar without --sort writes
// readdir order): the merge keeps them in a side buffer and merges, instead of inserting
// each into the middle of the children (quadratic: 100,000 files took minutes). The result
// must be the same as in order, including replacements, whiteouts and hardlinks that hit
// entries still in the side buffer.
TEST(LayerMerge, OutOfOrderDirectoriesMergeSorted) {
  auto entry = [](std::string path, TarEntryType type = TarEntryType::regular) {
    TarEntry e;
    e.path = std::move(path);
    e.type = type;
    e.mode = 0644;
    e.content = "";
    return e;
  };
  erofs::Tree tree;
  LayerMerger merger(tree);
  merger.apply(entry("d", TarEntryType::directory), "t");
  const int n = 100000;
  for (int i = n - 1; i >= 0; --i) merger.apply(entry("d/f" + std::to_string(1000000 + i)), "t");
  // A subdirectory that lands in the side buffer, with children of its own.
  merger.apply(entry("d/a-sub", TarEntryType::directory), "t");
  merger.apply(entry("d/a-sub/x"), "t");
  TarEntry replaced = entry("d/f1000005");
  replaced.content = "new";
  replaced.size = 3;
  merger.apply(replaced, "t");
  merger.apply(entry("d/.wh.f1000007"), "t");
  TarEntry link = entry("d/link", TarEntryType::hardlink);
  link.link = "d/f1000003";
  merger.apply(link, "t");
  merger.finish();
  const erofs::Inode* d = tree.lookup("/d");
  ASSERT_NE(d, nullptr);
  ASSERT_EQ(d->children.size(), static_cast<size_t>(n) - 1 + 2);
  EXPECT_TRUE(std::is_sorted(
      d->children.begin(), d->children.end(),
      [](const erofs::Dirent& a, const erofs::Dirent& b) { return a.name < b.name; }));
  EXPECT_NE(tree.lookup("/d/a-sub/x"), nullptr);
  EXPECT_EQ(tree.lookup("/d/f1000005")->content, "new");
  EXPECT_EQ(tree.lookup("/d/f1000007"), nullptr);
  EXPECT_EQ(tree.lookup("/d/link"), tree.lookup("/d/f1000003"));
  EXPECT_EQ(tree.lookup("/d/link")->nlink, 2u);
  // An opaque whiteout clears what is still in the side buffer too.
  LayerMerger again(tree);
  for (int i = 10; i > 0; --i) again.apply(entry("d/g" + std::to_string(i)), "t");
  again.apply(entry("d/.wh..wh..opq"), "t");
  again.apply(entry("d/only"), "t");
  again.finish();
  ASSERT_EQ(tree.lookup("/d")->children.size(), 1u);
}

// ---- hostile tars: refused or bounded while parsing ----------------------------------

TEST(HostileTar, XattrValueOverTheErofsLimitIsRefused) {
  std::string e = parse_error(
      tar_archive({pax_member({{"SCHILY.xattr.security.capability", std::string(70000, 'c')}}),
                   tar_member({.name = "f"})}));
  EXPECT_NE(e.find("70000 bytes (EROFS holds 65535)"), std::string::npos) << e;
}

TEST(HostileTar, XattrBombIsDroppedOrRefusedWhileParsing) {
  // Large xattrs the image drops are not kept at all: 500 entries of 60 KiB each.
  std::vector<std::string> members;
  const std::string big(60000, 'x');
  for (int i = 0; i < 500; ++i) {
    members.push_back(pax_member({{"SCHILY.xattr.user.bomb", big}}));
    members.push_back(tar_member({.name = "f" + std::to_string(i)}));
  }
  Split s = split(tar_archive(members), XattrMode::allowlist_only);
  ASSERT_EQ(s.entries.size(), 500u);
  for (const TarEntry& e : s.entries) ASSERT_TRUE(e.xattrs.empty());
  // A layer that is mostly xattrs, kept or dropped, is refused at the layer budget.
  for (const char* name : {"SCHILY.xattr.security.capability", "SCHILY.xattr.user.bomb"}) {
    members.clear();
    for (int i = 0; i < 1200; ++i) {
      members.push_back(pax_member({{name, big}}));
      members.push_back(tar_member({.name = "f" + std::to_string(i)}));
    }
    std::string e = parse_error(tar_archive(members));
    EXPECT_NE(e.find("MiB of xattrs"), std::string::npos) << e;
  }
  // One value larger than any Linux filesystem holds is refused even if it would be dropped.
  std::string e =
      parse_error(tar_archive({pax_member({{"SCHILY.xattr.trusted.big", std::string(100000, 'v')}}),
                               tar_member({.name = "f"})}));
  EXPECT_NE(e.find("(Linux holds 65536)"), std::string::npos) << e;
}

TEST(HostileTar, PaxHeaderOverTheLimitIsRefused) {
  std::string e = parse_error(tar_archive(
      {pax_member({{"comment", std::string(kTarPaxHeaderMax, 'c')}}), tar_member({.name = "f"})}));
  EXPECT_NE(e.find("extension header of"), std::string::npos) << e;
}

TEST(HostileTar, LongAndDeepPathsAreRefusedWhileParsing) {
  std::string e = parse_error(tar_archive(
      {tar_member({.name = "././@LongLink", .type = 'L', .content = std::string(5000, 'n')}),
       tar_member({.name = "f"})}));
  EXPECT_NE(e.find("GNU long name over 4096 bytes"), std::string::npos) << e;
  std::string deep;
  for (int i = 0; i < 2100; ++i) deep += "d/";
  e = parse_error(
      tar_archive({pax_member({{"path", deep}}), tar_member({.name = "f", .type = '5'})}));
  EXPECT_NE(e.find("bytes (at most 4096)"), std::string::npos) << e;
  // A 50,000-deep layer written with GNU long names stops at the limit.
  std::vector<std::string> members;
  std::string path;
  for (int i = 0; i < 50000; ++i) {
    path += "d/";
    members.push_back(tar_member({.name = "././@LongLink", .type = 'L', .content = path}));
    members.push_back(tar_member({.name = "x", .type = '5'}));
    if (path.size() > 4200) break;  // the rest cannot get further
  }
  e = parse_error(tar_archive(members));
  EXPECT_NE(e.find("over 4096 bytes"), std::string::npos) << e;
}

TEST(HostileTar, MalformedSparseMapsAreRefused) {
  auto gnu_sparse = [](uint64_t realsize, std::vector<std::pair<uint64_t, uint64_t>> map,
                       const std::string& data) {
    auto octal = [](uint64_t v, size_t digits) {
      std::string s(digits, '0');
      for (size_t i = digits; i-- > 0; v >>= 3) s[i] = static_cast<char>('0' + (v & 7));
      return s + std::string(1, '\0');
    };
    std::string tail(41, '\0');  // atime, ctime, offset, longnames, unused
    for (auto [o, n] : map) tail += octal(o, 11) + octal(n, 11);
    tail.resize(138, '\0');  // isextended (482) = 0
    tail += octal(realsize, 11);
    return tar_member(
        {.name = "s", .type = 'S', .content = data, .magic = test::kGnuMagic, .tail = tail});
  };
  // Well formed first, so the failures below are about the map.
  Split ok = split(tar_archive({gnu_sparse(60, {{10, 3}, {60, 0}}, "abc")}));
  EXPECT_EQ(ok.entries.at(0).content, std::string(10, '\0') + "abc" + std::string(47, '\0'));
  std::string e = parse_error(tar_archive({gnu_sparse(10, {{8, 3}}, "abc")}));
  EXPECT_NE(e.find("beyond the file size"), std::string::npos) << e;
  e = parse_error(tar_archive({gnu_sparse(100, {{10, 3}, {11, 3}}, "abcdef")}));
  EXPECT_NE(e.find("overlaps"), std::string::npos) << e;
  e = parse_error(tar_archive({gnu_sparse(100, {{10, 5}}, "abc")}));
  EXPECT_NE(e.find("sparse map holds 5 bytes, the member stores 3"), std::string::npos) << e;
  // A few bytes claiming a petabyte of holes.
  e = parse_error(tar_archive({pax_member({{"GNU.sparse.size", std::to_string(uint64_t{1} << 50)},
                                           {"GNU.sparse.numblocks", "1"},
                                           {"GNU.sparse.map", "0,3"}}),
                               tar_member({.name = "s", .content = "abc"})}));
  EXPECT_NE(e.find("GiB of holes"), std::string::npos) << e;
  // PAX 1.0 with a map that never ends.
  std::string endless(1024, '1');
  e = parse_error(tar_archive({pax_member({{"GNU.sparse.major", "1"},
                                           {"GNU.sparse.minor", "0"},
                                           {"GNU.sparse.name", "s"},
                                           {"GNU.sparse.realsize", "100"}}),
                               tar_member({.name = "GNUSparseFile.0/s", .content = endless})}));
  EXPECT_NE(e.find("sparse 1.0 map"), std::string::npos) << e;
}

// ---- oci-archive: -----------------------------------------------------------------

// Restores an environment variable when the test ends.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(HostileArchive, CompressedArchiveIsReadInPlace) {
  // The old reader unpacked every member of a compressed archive into $TMPDIR (a 2 MB
  // archive wrote 2 GB, left behind when the pull was killed). Now nothing is written there:
  // with TMPDIR pointing nowhere the pull still works.
  TempDir tmp;
  std::string layer =
      tar_archive({tar_member({.name = "./", .type = '5', .mode = 0755}),
                   tar_member({.name = "./big", .content = test::pattern(300000, 3)}),
                   tar_member({.name = "./small", .content = "hi"})});
  test::write_layout(tmp / "layout", layer);
  ASSERT_EQ(
      std::system(("tar -C " + tmp / "layout" + " -czf " + tmp / "image.tar.gz" + " .").c_str()),
      0);
  Repository repo =
      Repository::init(tmp / "repo", {.algorithm = HashAlgorithm::sha256, .insecure = true});
  {
    ScopedEnv env("TMPDIR", tmp / "no-such-dir");
    oci::pull(repo, "oci-archive:" + tmp / "image.tar.gz", "archived", {.threads = 2});
  }
  erofs::Tree tree = oci::image_tree(repo, "archived", false);
  ASSERT_NE(tree.lookup("/big"), nullptr);
  EXPECT_EQ(*tree.lookup("/big")->digest, fsverity_digest(test::pattern(300000, 3)));
  EXPECT_EQ(tree.lookup("/small")->content, "hi");
  // A format only an external program would decompress (lzop's magic) is refused.
  test::write_file(tmp / "image.tar.lzo",
                   std::string("\x89LZO\0\r\n\x1a\n", 9) + std::string(600, 'x'));
  EXPECT_THROW(oci::pull(repo, "oci-archive:" + tmp / "image.tar.lzo", "lzo", {}), Error);
}

}  // namespace
}  // namespace cfs::oci
