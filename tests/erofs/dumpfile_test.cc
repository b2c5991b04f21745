#include "cfs/erofs/dumpfile.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "cfs/error.h"

using namespace std::literals;
#include "testdata.h"

namespace cfs::erofs {
namespace {

using ::testing::HasSubstr;

DumpfileParseOptions compat(bool strict) {
  return {.strict = strict, .max_symlink = kSymlinkMaxCompat};
}

std::string error_of(std::string_view text, DumpfileParseOptions options = {}) {
  try {
    parse_dumpfile(text, "t.dump", options);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Every vector parses, and writing then re-parsing is a fixed point (dump -> tree -> dump).
TEST(Dumpfile, VectorsRoundTrip) {
  for (const auto& row : test::load_vectors()) {
    SCOPED_TRACE(row.asset);
    std::string text = test::read_vector(row.asset);
    Tree tree = parse_dumpfile(text, row.asset, compat(row.strict));
    std::string once = dumpfile_to_string(tree);
    Tree again = parse_dumpfile(once, "once", compat(true));
    EXPECT_EQ(dumpfile_to_string(again), once);
  }
}

TEST(Dumpfile, ShouldFailVectorsAreRejected) {
  for (const char* name :
       {"should-fail-big-inline.dump", "should-fail-dir-hardlink.dump", "should-fail-dot-name.dump",
        "should-fail-dotdot-name.dump", "should-fail-empty-link-name.dump",
        "should-fail-empty-name.dump", "should-fail-empty-xattr-key.dump",
        "should-fail-honggfuzz-long-xattr.dump", "should-fail-long-link.dump",
        "should-fail-long-xattr-key.dump", "should-fail-long-xattr-value.dump",
        "should-fail-no-ftype.dump", "should-fail-self-hardlink.dump",
        "should-fail-too-big.dump"}) {
    SCOPED_TRACE(name);
    std::string text = test::read_vector(name);
    std::string err = error_of(text, compat(false));
    EXPECT_THAT(err, HasSubstr("t.dump:")) << "accepted";
  }
}

TEST(Dumpfile, ParsesFieldsAndCanonicalises) {
  Tree t = parse_dumpfile(
      "/ 4096 40755 7 0 0 0 5.6 - - - user.b=2 user.a=1\n"
      "/dir 123 40700 9 1 2 0 1.2 - - -\n"
      "/dir/f 4 100644 2 3 4 0 10.999999999 - a\\x20b\\n - security.x=\\x3d\n"
      "/ext 100000 100644 1 0 0 0 0.0 "
      "01/23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef - "
      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n"
      "/link 999 120777 1 0 0 0 0.0 /dir/f - -\n"
      "/hl 0 @100644 0 0 0 0 0.0 /dir/f - -\n"
      "/wh 0 20644 1 0 0 0 0.0 - - -\n",
      "t.dump");
  EXPECT_EQ(t.root->xattrs.size(), 2u);
  EXPECT_EQ(t.root->xattrs[0].name, "user.a");  // sorted
  Inode* dir = t.lookup("/dir");
  ASSERT_TRUE(dir);
  EXPECT_EQ(dir->size, 0u);  // directory size is not kept
  EXPECT_EQ(dir->uid, 1u);
  Inode* f = t.lookup("/dir/f");
  ASSERT_TRUE(f && f->content);
  EXPECT_EQ(*f->content, "a b\n");
  EXPECT_EQ(f->mtime_nsec, 999999999u);
  EXPECT_EQ(f->find_xattr("security.x")->value, "=");
  EXPECT_EQ(t.lookup("/hl"), f);  // hardlink = shared inode
  Inode* ext = t.lookup("/ext");
  ASSERT_TRUE(ext && ext->digest);
  EXPECT_TRUE(ext->is_external());
  EXPECT_EQ(ext->payload.substr(0, 3), "01/");
  EXPECT_EQ(t.lookup("/link")->size, 6u);  // symlink size = target length (lenient)
  EXPECT_TRUE(t.lookup("/wh")->is_whiteout());
}

TEST(Dumpfile, WriterEscapesLikeC) {
  Tree t = parse_dumpfile(
      "/ 0 40755 2 0 0 0 0.0 - - -\n"
      "/a\\x20b 1 100644 1 0 0 0 0.0 - \\x2d - user.k\\x3d=v\\x3d\\x00 user.e=\n"
      "/s 1 120777 1 0 0 0 0.0 \\x2d - -\n",
      "t.dump");
  EXPECT_EQ(dumpfile_to_string(t),
            "/ 0 40755 2 0 0 0 0.0 - - -\n"
            "/a\\x20b 1 100644 1 0 0 0 0.0 - \\x2d - user.e= user.k\\x3d=v\\x3d\\x00\n"
            "/s 1 120777 1 0 0 0 0.0 \\x2d - -\n");
}

TEST(Dumpfile, HardlinksPrintTargetFieldsAfterFirstOccurrence) {
  std::string text =
      "/ 0 40755 3 0 0 0 0.0 - - -\n"
      "/a 0 40755 2 0 0 0 0.0 - - -\n"
      "/a/x 3 100600 2 7 8 0 3.4 - abc - user.q=1\n"
      "/b 3 @100600 2 7 8 0 3.4 /a/x - - user.q=1\n";
  EXPECT_EQ(dumpfile_to_string(parse_dumpfile(text, "t")), text);
  // Forward references resolve too.
  Tree fwd = parse_dumpfile(
      "/ 0 40755 2 0 0 0 0.0 - - -\n/a 0 @100644 0 0 0 0 0.0 /b - -\n/b 0 100644 2 0 0 0 0.0 - - "
      "-\n",
      "t");
  EXPECT_EQ(fwd.lookup("/a"), fwd.lookup("/b"));
}

TEST(Dumpfile, MalformedDigestsAreRefusedInEveryMode) {
  // C takes a malformed DIGEST partly or not at all and silently writes a file without the
  // digest the producer meant.
  const std::string root = "/ 0 40755 2 0 0 0 0.0 - - -\n";
  const std::string hex64(64, 'a');
  auto line = [](const std::string& digest) {
    return "/f 100000 100644 1 0 0 0 0.0 aa/aaaa - " + digest + "\n";
  };
  for (const std::string& bad :
       {hex64 + "a", hex64.substr(1) + "g", hex64 + "\\x00", "x"s, hex64.substr(2)}) {
    for (bool strict : {false, true})
      EXPECT_THAT(error_of(root + line(bad), compat(strict)), HasSubstr("t.dump:2: invalid digest"))
          << bad;
  }
  Tree t = parse_dumpfile(root + line(hex64), "t", compat(false));
  ASSERT_TRUE(t.lookup("/f")->digest);
  EXPECT_EQ(t.lookup("/f")->digest->hex(), hex64);
}

TEST(Dumpfile, NegativeAndLargeTimesRoundTrip) {
  const std::string text =
      "/ 0 40755 2 0 0 0 -1.5 - - -\n"
      "/a 0 100644 1 0 0 0 -100.0 - - -\n"
      "/b 0 100644 1 0 0 0 9223372036854775807.0 - - -\n"
      "/c 0 100644 1 0 0 0 -9223372036854775808.999999999 - - -\n";
  Tree t = parse_dumpfile(text, "t");
  EXPECT_EQ(t.root->mtime_sec, -1);
  EXPECT_EQ(t.lookup("/a")->mtime_sec, -100);
  EXPECT_EQ(dumpfile_to_string(t), text);
  // The unsigned spelling the C parser also reads (strtoull) means the same time.
  Tree u = parse_dumpfile("/ 0 40755 2 0 0 0 18446744073709551516.0 - - -\n", "t");
  EXPECT_EQ(u.root->mtime_sec, -100);
  EXPECT_THAT(error_of("/ 0 40755 2 0 0 0 -9223372036854775809.0 - - -\n"),
              HasSubstr("out of range"));
  EXPECT_THAT(error_of("/ 0 40755 2 0 0 0 --1.0 - - -\n"), HasSubstr("mtime"));
}

TEST(Dumpfile, AtLinesKeepTheirPlaceThroughTheWriter) {
  // The inode's home is its target line, wherever the '@' lines sort.
  const std::string text =
      "/ 0 40755 2 0 0 0 0.0 - - -\n"
      "/a 3 @100644 2 0 0 0 0.0 /b - -\n"
      "/b 3 100644 2 0 0 0 0.0 - abc -\n";
  Tree t = parse_dumpfile(text, "t");
  EXPECT_TRUE(t.root->children[0].link);
  EXPECT_FALSE(t.root->children[1].link);
  EXPECT_EQ(dumpfile_to_string(t), text);
}

TEST(Dumpfile, RejectionsNameTheLineAndReason) {
  const std::string root = "/ 0 40755 2 0 0 0 0.0 - - -\n";
  EXPECT_THAT(error_of("/x 0 40755 2 0 0 0 0.0 - - -\n"),
              HasSubstr("t.dump:1: the first entry must be the root"));
  EXPECT_THAT(error_of(root + "/a/b 0 100644 1 0 0 0 0.0 - - -\n"),
              HasSubstr("t.dump:2: parent directory '/a' does not exist"));
  EXPECT_THAT(error_of(root + "/a 0 100644 1 0 0 0 0.0 - - -\n/a 0 100644 1 0 0 0 0.0 - - -\n"),
              HasSubstr("t.dump:3: duplicate entry '/a'"));
  EXPECT_THAT(error_of(root + "/a 0 100644 1 0 0 0 0 - - -\n"),
              HasSubstr("t.dump:2: mtime '0' is not SEC.NSEC"));
  EXPECT_THAT(error_of(root + "/a 0 100644 1 0 0 0 0.0 - \\q -\n"), HasSubstr("invalid escape"));
  EXPECT_THAT(error_of(root + "/a 0 100644 1 0 0 0 0.0 - - - novalue\n"), HasSubstr("has no '='"));
  EXPECT_THAT(error_of(root + "/a 0 100644 1 0 0 0 0.0 -\n", {.strict = true}),
              HasSubstr("expected 11 fields, found 9"));
  EXPECT_THAT(error_of(root + "/a 0 100644 1 0 0 0\n"), HasSubstr("expected 11 fields, found 7"));
  EXPECT_EQ(error_of(root + "/a 0 100644 1 0 0 0 0.0 -\n"),
            "");  // C-lenient: CONTENT/DIGEST may be missing
  EXPECT_THAT(error_of(root + "/a 2 100644 1 0 0 0 0.0 - abc -\n"),
              HasSubstr("inline content length 3 differs from size 2"));
  EXPECT_THAT(error_of(root + "/a 0 @100644 1 0 0 0 0.0 /nope - -\n"),
              HasSubstr("t.dump:2: hardlink target '/nope'"));
  EXPECT_THAT(error_of(root + "/a 0 x 1 0 0 0 0.0 - - -\n"), HasSubstr("invalid mode"));
  EXPECT_THAT(error_of(root + "/a 0 100644 1 0 0 5 0.0 - - -\n", {.strict = true}),
              HasSubstr("rdev set on a non-device"));
  EXPECT_THAT(error_of(root + "/l 3 120777 1 0 0 0 0.0 abcd - -\n", {.strict = true}),
              HasSubstr("symlink size 3 differs"));
  EXPECT_THAT(error_of(root.substr(0, root.size() - 1), {.strict = true}),
              HasSubstr("missing newline"));
  std::string long_target(1025, 'a');
  EXPECT_THAT(error_of(root + "/l 1025 120777 1 0 0 0 0.0 " + long_target + " - -\n"),
              HasSubstr("symlink target longer than 1024 bytes"));
  EXPECT_EQ(error_of(root + "/l 1025 120777 1 0 0 0 0.0 " + long_target + " - -\n", compat(true)),
            "");
}

}  // namespace
}  // namespace cfs::erofs
