// The composefs view of an image (composefs.h) and the C-compatible dumper (compat_dump.h).
#include "cfs/erofs/composefs.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "cfs/erofs/compat_dump.h"
#include "cfs/erofs/dumpfile.h"
#include "cfs/erofs/reader.h"
#include "cfs/erofs/writer.h"
#include "testdata.h"

namespace cfs::erofs {
namespace {

using composefs::StoredXattr;

TEST(Composefs, EscapeAndUnescapeXattrNames) {
  EXPECT_EQ(composefs::escape_xattr_name("trusted.overlay.custom"),
            "trusted.overlay.overlay.custom");
  EXPECT_EQ(composefs::escape_xattr_name("user.overlay.opaque"), "user.overlay.opaque");
  EXPECT_EQ(composefs::escape_xattr_name("security.selinux"), "security.selinux");

  EXPECT_EQ(composefs::unescape_xattr_name("trusted.overlay.overlay.custom"),
            "trusted.overlay.custom");
  EXPECT_EQ(composefs::unescape_xattr_name("trusted.overlay.overlay.overlay.x"),
            "trusted.overlay.overlay.x");  // escaped once per level
  EXPECT_EQ(composefs::unescape_xattr_name("trusted.overlay.opaque"), std::nullopt);
  EXPECT_EQ(composefs::unescape_xattr_name("trusted.overlay.redirect"), std::nullopt);
  EXPECT_EQ(composefs::unescape_xattr_name("user.overlay.whiteout"), "user.overlay.whiteout");
  EXPECT_EQ(composefs::unescape_xattr_name("trusted.other"), "trusted.other");

  for (std::string name : {"trusted.overlay.a", "trusted.overlay.overlay.b", "user.c", "d"})
    EXPECT_EQ(composefs::unescape_xattr_name(composefs::escape_xattr_name(name)), name);
}

TEST(Composefs, ClassifiesOnlyExactMarkers) {
  auto trusted = [](std::string_view suffix, std::string_view value) {
    return XattrView{kXattrIndexTrusted, suffix, value};
  };
  auto user = [](std::string_view suffix, std::string_view value) {
    return XattrView{kXattrIndexUser, suffix, value};
  };
  EXPECT_EQ(composefs::classify(trusted("overlay.redirect", "/x"), false, 0),
            StoredXattr::redirect);
  EXPECT_EQ(composefs::classify(trusted("overlay.metacopy", ""), false, 0), StoredXattr::metacopy);
  EXPECT_EQ(composefs::classify(trusted("overlay.overlay.whiteout", ""), true, 0),
            StoredXattr::whiteout);
  // Only an empty regular file can be a whiteout, and only with an empty value.
  EXPECT_EQ(composefs::classify(trusted("overlay.overlay.whiteout", ""), false, 0),
            StoredXattr::user);
  EXPECT_EQ(composefs::classify(trusted("overlay.overlay.whiteout", "v"), true, 0),
            StoredXattr::user);
  EXPECT_EQ(composefs::classify(user("overlay.whiteout", ""), true, 0), StoredXattr::user_whiteout);
  EXPECT_EQ(composefs::classify(user("overlay.whiteouts", ""), false, 0), StoredXattr::dir_marker);
  EXPECT_EQ(composefs::classify(trusted("overlay.overlay.whiteouts", ""), false, 0),
            StoredXattr::dir_marker);
  EXPECT_EQ(composefs::classify(user("overlay.whiteouts", "v"), false, 0), StoredXattr::user);
  // The opaque "x" markers exist from format version 1 on.
  EXPECT_EQ(composefs::classify(user("overlay.opaque", "x"), false, 1), StoredXattr::dir_marker);
  EXPECT_EQ(composefs::classify(trusted("overlay.overlay.opaque", "x"), false, 1),
            StoredXattr::dir_marker);
  EXPECT_EQ(composefs::classify(user("overlay.opaque", "x"), false, 0), StoredXattr::user);
  EXPECT_EQ(composefs::classify(user("overlay.opaque", "y"), false, 1), StoredXattr::user);
}

// The unified stub rule: a chr 0/0 named by two lowercase hex digits (in the root). The
// strict reader accepts stored chr 0/0 nowhere else, which makes this rule, the FUSE
// server's and C composefs-info's "skip every stored chr 0/0" agree on every valid image.
TEST(Composefs, WhiteoutStubRule) {
  for (uint32_t i = 0; i < composefs::kWhiteoutStubCount; i++) {
    std::string_view name = composefs::whiteout_stub_name(i);
    EXPECT_TRUE(composefs::is_whiteout_stub(name, S_IFCHR | 0644, 0)) << name;
  }
  EXPECT_EQ(composefs::whiteout_stub_name(0), "00");
  EXPECT_EQ(composefs::whiteout_stub_name(0xa7), "a7");
  EXPECT_EQ(composefs::whiteout_stub_name(255), "ff");
  EXPECT_FALSE(composefs::is_whiteout_stub("AB", S_IFCHR | 0644, 0));  // uppercase
  EXPECT_FALSE(composefs::is_whiteout_stub("0g", S_IFCHR | 0644, 0));
  EXPECT_FALSE(composefs::is_whiteout_stub("000", S_IFCHR | 0644, 0));
  EXPECT_FALSE(composefs::is_whiteout_stub("0", S_IFCHR | 0644, 0));
  EXPECT_FALSE(composefs::is_whiteout_stub("ab", S_IFCHR | 0644, 1));  // a real device
  EXPECT_FALSE(composefs::is_whiteout_stub("ab", S_IFBLK | 0644, 0));
  EXPECT_FALSE(composefs::is_whiteout_stub("ab", S_IFREG | 0644, 0));
}

TEST(Composefs, Metacopy) {
  std::string sha256(32, '\x11');
  std::string value = std::string(composefs::metacopy_header_bytes(HashAlgorithm::sha256)) + sha256;
  EXPECT_EQ(value.substr(0, 4), std::string("\0\x24\0\x01", 4));
  composefs::Metacopy m = composefs::parse_metacopy(value);
  ASSERT_TRUE(m.digest) << m.error;
  EXPECT_EQ(m.digest->hex(), std::string(64, '1'));
  EXPECT_EQ(composefs::compat_metacopy_digest(value), m.digest);

  std::string sha512 =
      std::string(composefs::metacopy_header_bytes(HashAlgorithm::sha512)) + std::string(64, 'x');
  EXPECT_EQ(sha512.substr(0, 4), std::string("\0\x44\0\x02", 4));
  m = composefs::parse_metacopy(sha512);
  ASSERT_TRUE(m.digest) << m.error;
  EXPECT_EQ(m.digest->algorithm(), HashAlgorithm::sha512);
  // composefs-info 1.0.8 reads only sha256 digests.
  EXPECT_EQ(composefs::compat_metacopy_digest(sha512), std::nullopt);

  EXPECT_EQ(composefs::parse_metacopy("").digest, std::nullopt);
  EXPECT_TRUE(composefs::parse_metacopy("").error.empty());
  EXPECT_NE(composefs::parse_metacopy("ab").error.find("shorter than its header"),
            std::string::npos);
  std::string bad = value;
  bad[0] = 1;
  EXPECT_NE(composefs::parse_metacopy(bad).error.find("version 1"), std::string::npos);
  bad = value;
  bad[3] = 3;
  EXPECT_NE(composefs::parse_metacopy(bad).error.find("algorithm 3"), std::string::npos);
  bad = value.substr(0, 20);
  EXPECT_NE(composefs::parse_metacopy(bad).error.find("value size 20"), std::string::npos);
  EXPECT_EQ(composefs::compat_metacopy_digest(bad), std::nullopt);
}

// End to end: user whiteouts that look like stubs are the user's (written as escaped
// whiteouts, never as stubs), a user's "00" keeps its name, and every reader skips exactly
// the stubs the writer added.
TEST(Composefs, StubsAreHiddenEverywhereAndUserWhiteoutsKept) {
  const std::string dump =
      "/ 0 40755 3 0 0 0 0.0 - - -\n"
      "/00 0 40755 2 0 0 0 0.0 - - -\n"
      "/ab 0 20644 1 0 0 0 0.0 - - -\n"
      "/sub 0 40755 2 0 0 0 0.0 - - -\n"
      "/sub/cd 0 20644 1 0 0 0 0.0 - - -\n";
  Tree tree = parse_dumpfile(dump, "t.dump");
  Image image = Image::from_bytes(image_to_string(tree), "t.cfs", ReaderOptions::compat());
  image.validate();

  // The image's root: the user's "00" and "ab", "sub", and the 254 other stubs.
  std::vector<std::string> stubs, others;
  DirCursor cursor = image.dirents(image.root());
  DirEntry e;
  while (cursor.next(e)) {
    if (e.name == "." || e.name == "..") continue;
    InodeInfo child = image.inode(e.nid);
    (composefs::is_whiteout_stub(e.name, child.mode, child.rdev) ? stubs : others)
        .emplace_back(e.name);
  }
  EXPECT_EQ(stubs.size(), composefs::kWhiteoutStubCount - 2);
  EXPECT_EQ(others, (std::vector<std::string>{"00", "ab", "sub"}));

  Tree back = image.to_tree();
  std::string got_tree = dumpfile_to_string(back);
  for (const char* path : {"/00 ", "/ab 0 20644", "/sub/cd 0 20644"})
    EXPECT_NE(got_tree.find(path), std::string::npos) << path << "\n" << got_tree;
  EXPECT_EQ(got_tree.find("/01 "), std::string::npos) << got_tree;

  StringSink out;
  write_compat_dump(image, out);
  const std::string& c_dump = out.str();
  for (const char* path : {"\n/00 ", "\n/ab 0 20644", "\n/sub/cd 0 20644"})
    EXPECT_NE(c_dump.find(path), std::string::npos) << path << "\n" << c_dump;
  EXPECT_EQ(c_dump.find("\n/01 "), std::string::npos) << c_dump;
  EXPECT_EQ(c_dump.find("\n/ff "), std::string::npos) << c_dump;

  StringSink listing;
  write_compat_listing(back, listing);
  EXPECT_EQ(listing.str(), "/00/\t\n/ab\n/sub/\t\n/sub/cd\n");
}

TEST(Composefs, CompatDumpTopFilter) {
  Tree tree = parse_dumpfile(
      "/ 0 40755 2 0 0 0 0.0 - - -\n"
      "/a 0 100644 1 0 0 0 0.0 - - -\n"
      "/b 0 100644 1 0 0 0 0.0 - - -\n",
      "t.dump");
  Image image = Image::from_bytes(image_to_string(tree), "t.cfs", ReaderOptions::compat());
  image.validate();
  StringSink out;
  std::vector<std::string> keep{"b"};
  write_compat_dump(image, out, keep);
  EXPECT_EQ(out.str().find("\n/a "), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("\n/b "), std::string::npos) << out.str();
}

// Resident kilobytes of the mapping that starts at addr, from /proc/self/smaps.
long resident_kb(const void* addr) {
  char start[32];
  std::snprintf(start, sizeof start, "%lx-", reinterpret_cast<unsigned long>(addr));
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool in = false;  // inside the mapping's block
  while (std::getline(smaps, line)) {
    if (line.rfind(start, 0) == 0) in = true;
    if (in && line.rfind("Rss:", 0) == 0) return std::stol(line.substr(4));
  }
  return -1;
}

// Image::release_pages drops the resident pages of a mapped image and its data stays valid:
// a dump of the mapped image (whose walks release pages as they go) and one after a release
// give the text of the same bytes held in memory.
TEST(Composefs, MappedImageReleasesItsPages) {
  test::TempDir dir;
  const std::string bytes =
      image_to_string(parse_dumpfile(test::read_vector("cs9-x86_64-developer.dump.gz"), "cs9",
                                     {.max_symlink = kSymlinkMaxCompat}));
  test::write_file(dir.path() + "/cs9.cfs", bytes);
  ReaderOptions low_memory = ReaderOptions::compat();
  low_memory.low_memory = true;
  Image mapped = Image::open(dir.path() + "/cs9.cfs", low_memory);
  Image held = Image::from_bytes(bytes, "cs9.cfs", ReaderOptions::compat());
  StringSink from_bytes, from_map, after_release;
  write_compat_dump(held, from_bytes);
  write_compat_dump(mapped, from_map);
  EXPECT_GT(from_bytes.str().size(), 1000000u);
  EXPECT_TRUE(from_map.str() == from_bytes.str());

  ASSERT_GT(resident_kb(mapped.bytes().data()), 0) << "mapping not found in /proc/self/smaps";
  mapped.release_pages();
  const long kb = resident_kb(mapped.bytes().data());
  EXPECT_LT(kb * 1024, static_cast<long>(bytes.size() / 20))
      << "resident " << kb << " KiB of a " << bytes.size() / 1024 << " KiB image";
  write_compat_dump(mapped, after_release);
  EXPECT_TRUE(after_release.str() == from_bytes.str());
  held.release_pages();  // from bytes: nothing to do
}

TEST(Composefs, ListingEscapesLikeComposefsInfo) {
  std::string out;
  append_listing_escaped(out, "a b\\c\n\x01\x7f=");
  EXPECT_EQ(out, "a b\\\\c\\n\\x01\\x7f=");
  out.clear();
  append_escaped(out, "a b=", true);
  EXPECT_EQ(out, "a\\x20b\\x3d");
}

}  // namespace
}  // namespace cfs::erofs
