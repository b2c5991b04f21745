#include "cfs/erofs/reader.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "cfs/erofs/compat_dump.h"
#include "cfs/erofs/composefs.h"
#include "cfs/erofs/dumpfile.h"
#include "cfs/erofs/writer.h"
#include "cfs/error.h"
#include "testdata.h"

namespace cfs::erofs {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

DumpfileParseOptions parse_compat(bool strict) {
  return {.strict = strict, .max_symlink = kSymlinkMaxCompat};
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

std::string validate_error(std::string bytes, ReaderOptions options = {}) {
  return error_of([&] { Image::from_bytes(std::move(bytes), "t.cfs", options).validate(); });
}

// Sizes of directories and special files are not part of a dumpfile's meaning (the parser
// keeps what the line says, the writer drops it, the reader fills in the EROFS directory
// size); zero them to compare trees through their dumps.
void zero_dir_sizes(Inode& inode) {
  if (!inode.is_reg() && !inode.is_symlink()) inode.size = 0;
  for (auto& d : inode.children) zero_dir_sizes(*d.inode);
}

// ---- the C reference vectors --------------------------------------------------------------

// For every vector: the writer's image (checked against the C digest) is accepted, and
// image -> to_tree -> writer gives the identical bytes (C's composefs-dump round trip);
// the tree also means the same as the parsed dumpfile.
TEST(Reader, VectorsRoundTrip) {
  auto rows = test::load_vectors();
  ASSERT_EQ(rows.size(), 14u);
  for (const auto& row : rows) {
    SCOPED_TRACE(row.asset);
    Tree parsed = parse_dumpfile(test::read_vector(row.asset), row.asset, parse_compat(row.strict));
    WriterOptions wopt{.min_version = row.min_version, .max_version = row.max_version};
    std::string bytes = image_to_string(parsed, wopt);
    ASSERT_EQ(test::sha256_hex(bytes), row.sha256) << "writer output differs from C";

    Image image = Image::from_bytes(bytes, row.asset, ReaderOptions::compat());
    ASSERT_NO_THROW(image.validate());
    Tree tree = image.to_tree();
    EXPECT_EQ(image_to_string(tree, wopt), bytes) << "image -> tree -> image differs";

    zero_dir_sizes(*tree.root);
    zero_dir_sizes(*parsed.root);
    EXPECT_EQ(dumpfile_to_string(tree), dumpfile_to_string(parsed));
  }
}

// `cfsctl dump` prints from the image without a tree: the same bytes as the tree's dumpfile,
// for every vector written as C does (V0/V1: root stubs, escaped whiteouts, opaque markers,
// hardlinks whose home is a later name) and as V2.
TEST(Reader, StreamingDumpIsTheTreesDumpfile) {
  size_t v2 = 0;
  for (const auto& row : test::load_vectors()) {
    SCOPED_TRACE(row.asset);
    Tree parsed = parse_dumpfile(test::read_vector(row.asset), row.asset, parse_compat(row.strict));
    std::vector<WriterOptions> layouts = {
        {.min_version = row.min_version, .max_version = row.max_version}};
    if (row.max_version >= 1) layouts.push_back({.min_version = 2, .max_version = 2});
    for (const WriterOptions& wopt : layouts) {
      SCOPED_TRACE("min_version " + std::to_string(wopt.min_version));
      std::string bytes;
      try {
        bytes = image_to_string(parsed, wopt);
      } catch (const Error&) {
        ASSERT_EQ(wopt.min_version, 2u) << "only V2 may refuse a vector";
        continue;
      }
      v2 += wopt.min_version == 2;
      Image image = Image::from_bytes(bytes, row.asset, ReaderOptions::compat());
      StringSink streamed;
      write_image_dumpfile(image, streamed);
      ASSERT_FALSE(streamed.str().empty());
      EXPECT_EQ(streamed.str(), dumpfile_to_string(image.to_tree()));
    }
  }
  EXPECT_GT(v2, 0u) << "no vector was written as V2";
}

// The same with hardlinks whose dumpfile target is not their first name, and whiteouts.
TEST(Reader, StreamingDumpKeepsHardlinkHomesAndWhiteouts) {
  const std::string dump =
      "/ 0 40755 4 0 0 0 0.0 - - -\n"
      "/a 0 40755 2 0 0 0 0.0 - - - trusted.overlay.opaque=y\n"
      "/a/early 0 @100644 3 0 0 0 0.0 /z/home - -\n"
      "/a/wh 0 20000 1 0 0 0 0.0 - - -\n"
      "/b 0 @100644 3 0 0 0 0.0 /z/home - -\n"
      "/z 0 40755 2 0 0 0 0.0 - - - user.x=1\n"
      "/z/home 5 100644 3 0 0 0 0.0 - hello - user.y=2\n";
  Tree parsed = parse_dumpfile(dump, "links.dump", parse_compat(true));
  for (uint32_t version : {0u, 2u}) {
    SCOPED_TRACE("version " + std::to_string(version));
    std::string bytes =
        image_to_string(parsed, {.min_version = version, .max_version = version == 2 ? 2u : 1u});
    Image image = Image::from_bytes(bytes, "links.cfs", ReaderOptions::compat());
    StringSink streamed;
    write_image_dumpfile(image, streamed);
    std::string tree_dump = dumpfile_to_string(image.to_tree());
    EXPECT_EQ(streamed.str(), tree_dump);
    EXPECT_THAT(tree_dump, HasSubstr("/a/wh 0 20000"));
    if (version == 0) {
      EXPECT_THAT(tree_dump, HasSubstr("/z/home 5 100644 3"));
    }
  }
}

// The strict cfs options accept vectors that stay within cfs's own limits and reject the
// ones that do not, naming the rule.
TEST(Reader, CfsModeLimits) {
  for (const auto& row : test::load_vectors()) {
    SCOPED_TRACE(row.asset);
    Tree parsed = parse_dumpfile(test::read_vector(row.asset), row.asset, parse_compat(row.strict));
    std::string bytes =
        image_to_string(parsed, {.min_version = row.min_version, .max_version = row.max_version});
    std::string err = validate_error(bytes);
    if (row.asset.find("long") != std::string::npos) {
      EXPECT_THAT(err, HasSubstr("symlink target length"));
    } else if (row.asset.starts_with("cs9")) {
      EXPECT_THAT(err, HasSubstr("is not an object path"));  // "….file" payloads
    } else {
      EXPECT_EQ(err, "(no error)");
    }
  }
}

TEST(Reader, ObjectsListsRedirectsOnce) {
  Tree parsed =
      parse_dumpfile(test::read_vector("config-with-hard-link.dump.gz"), "c", parse_compat(true));
  std::vector<std::string> want;
  std::function<void(const Inode&)> collect = [&](const Inode& dir) {
    for (const auto& d : dir.children) {
      if (d.inode->is_external() && !d.inode->payload.empty())
        want.push_back(d.inode->payload.str());
      if (d.inode->is_dir()) collect(*d.inode);
    }
  };
  collect(*parsed.root);
  std::sort(want.begin(), want.end());
  want.erase(std::unique(want.begin(), want.end()), want.end());
  ASSERT_FALSE(want.empty());
  Image image = Image::from_bytes(image_to_string(parsed), "c", ReaderOptions::compat());
  EXPECT_EQ(image.objects(), want);
}

// ---- lazy access --------------------------------------------------------------------------

const char kDigestHex[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

Tree sample_tree() {
  std::string dump =
      "/ 0 40755 2 0 0 0 100.0 - - - user.root=r\n"
      "/dir 0 40750 2 7 8 0 200.5 - - - security.selinux=ctx trusted.overlay.opaque=y\n"
      "/dir/a 3 100644 1 0 0 0 100.0 - abc - user.same=v\n"
      "/dir/b 3 100644 1 0 0 0 100.0 - def - user.same=v\n"
      "/dir/big 6000 100644 1 0 0 0 100.0 - - -\n"
      "/dir/link 11 120777 1 0 0 0 100.0 target/path - -\n"
      "/ext 100000 100600 2 0 0 0 100.0 "
      "01/23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef - " +
      std::string(kDigestHex) +
      "\n"
      "/ext2 0 @100600 0 0 0 0 0.0 /ext - -\n"
      "/dev 0 20644 1 0 0 1234 100.0 - - -\n"
      "/wh 0 20644 1 0 0 0 100.0 - - -\n";
  // /dir/big's CONTENT is too long for a literal; fill it in.
  Tree tree = parse_dumpfile(dump, "sample.dump");
  Inode* big = tree.lookup("/dir/big");
  std::string content(6000, '\0');
  for (size_t i = 0; i < content.size(); i++) content[i] = static_cast<char>(i * 7 + 3);
  big->content = content.substr(0, 4500);
  big->size = 4500;
  return tree;
}

InodeInfo lookup_path(const Image& image, std::string_view path) {
  InodeInfo cur = image.root();
  size_t pos = 1;
  while (pos < path.size()) {
    size_t end = path.find('/', pos);
    if (end == path.npos) end = path.size();
    auto e = image.lookup(cur, path.substr(pos, end - pos));
    if (!e) throw Error(std::string(path) + ": not found");
    cur = image.inode(e->nid);
    pos = end + 1;
  }
  return cur;
}

TEST(Reader, LazyAccess) {
  std::string bytes = image_to_string(sample_tree());
  Image image = Image::from_bytes(bytes, "s.cfs");
  ASSERT_NO_THROW(image.validate());
  EXPECT_EQ(image.format_version(), 1u);  // the whiteout raises the version

  InodeInfo root = image.root();
  EXPECT_TRUE(root.is_dir());
  EXPECT_EQ(image.find_xattr(root, "user.root"), "r");
  EXPECT_EQ(image.find_xattr(root, "trusted.overlay.opaque"), "y");  // the writer's own

  // Every root stub and every real entry can be looked up; names come back sorted.
  DirCursor cursor = image.dirents(root);
  DirEntry e;
  std::vector<std::string> names;
  while (cursor.next(e)) names.emplace_back(e.name);
  EXPECT_EQ(names.size(), 2u + 256u + 5u);  // . .. 00-ff dir dev ext ext2 wh
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  for (const auto& n : names) EXPECT_TRUE(image.lookup(root, n)) << n;
  // Resuming at any ordinal (a FUSE readdir offset) continues with the same names.
  for (uint64_t start : {0ul, 1ul, 100ul, 262ul, 263ul, 1000ul}) {
    DirCursor resumed = image.dirents(root, start);
    EXPECT_EQ(resumed.position(), std::min<uint64_t>(start, names.size()));
    for (uint64_t i = start; i < names.size(); i++) {
      ASSERT_TRUE(resumed.next(e));
      EXPECT_EQ(e.name, names[i]);
    }
    EXPECT_FALSE(resumed.next(e));
  }
  EXPECT_FALSE(image.lookup(root, "zz"));
  EXPECT_FALSE(image.lookup(root, "0"));
  EXPECT_FALSE(image.lookup(root, ""));

  InodeInfo dir = lookup_path(image, "/dir");
  EXPECT_EQ(dir.uid, 7u);
  EXPECT_EQ(dir.gid, 8u);
  EXPECT_EQ(dir.mtime_sec, 200u);
  EXPECT_EQ(dir.mtime_nsec, 5u);
  EXPECT_EQ(image.find_xattr(dir, "security.selinux"), "ctx");
  EXPECT_EQ(image.find_xattr(dir, "trusted.overlay.overlay.opaque"), "y");  // escaped

  InodeInfo a = lookup_path(image, "/dir/a");
  EXPECT_EQ(a.mtime_sec, 100u);  // compact inode: build time
  char buf[8] = {};
  EXPECT_EQ(image.read(a, 0, std::as_writable_bytes(std::span(buf))), 3u);
  EXPECT_EQ(std::string(buf, 3), "abc");
  EXPECT_EQ(image.read(a, 1, std::as_writable_bytes(std::span(buf, 1))), 1u);
  EXPECT_EQ(buf[0], 'b');
  EXPECT_EQ(image.read(a, 3, std::as_writable_bytes(std::span(buf))), 0u);
  auto same = [&](const char* path) {
    XattrCursor xc = image.xattrs(lookup_path(image, path));
    XattrView x;
    EXPECT_TRUE(xc.next(x));
    return x;
  };
  EXPECT_TRUE(same("/dir/a").shared);  // user.same=v is on two inodes
  EXPECT_EQ(same("/dir/b").value, "v");

  InodeInfo big = lookup_path(image, "/dir/big");
  std::string content(big.size, '\0');
  EXPECT_EQ(image.read(big, 0, std::as_writable_bytes(std::span(content))), 4500u);
  EXPECT_EQ(content, *sample_tree().lookup("/dir/big")->content);
  std::string middle(200, '\0');
  EXPECT_EQ(image.read(big, 4000, std::as_writable_bytes(std::span(middle))), 200u);
  EXPECT_EQ(middle, content.substr(4000, 200));

  EXPECT_EQ(image.symlink_target(lookup_path(image, "/dir/link")), "target/path");

  InodeInfo ext = lookup_path(image, "/ext");
  EXPECT_TRUE(ext.is_external());
  EXPECT_EQ(ext.size, 100000u);
  EXPECT_EQ(ext.nlink, 2u);
  EXPECT_EQ(lookup_path(image, "/ext2").nid, ext.nid);
  EXPECT_EQ(image.redirect(ext),
            "/01/23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  auto digest = image.metacopy_digest(ext);
  ASSERT_TRUE(digest);
  EXPECT_EQ(digest->hex(), kDigestHex);
  EXPECT_THROW(image.read(ext, 0, std::as_writable_bytes(std::span(buf))), Error);

  EXPECT_EQ(lookup_path(image, "/dev").rdev, 1234u);
  InodeInfo wh = lookup_path(image, "/wh");
  EXPECT_TRUE(wh.is_reg());  // escaped user whiteout
  EXPECT_EQ(image.find_xattr(wh, "trusted.overlay.overlay.whiteout"), "");

  EXPECT_THAT(error_of([&] { image.inode(1u << 30); }), HasSubstr("s.cfs: inode 1073741824"));
  EXPECT_THAT(error_of([&] { image.dirents(a); }), HasSubstr("not a directory"));
}

// A directory spanning many blocks: lookup (binary search over blocks, then within the
// block) finds every name and no other; resuming works across block boundaries.
TEST(Reader, MultiBlockDirectory) {
  Tree t;
  Inode* big = t.root->set_child("big", make_inode(S_IFDIR | 0755)).get();
  for (int i = 0; i < 1500; i++) {
    char name[32];
    snprintf(name, sizeof name, "entry-%05d-padding-name", i * 2);
    big->set_child(name, make_inode(S_IFREG | 0644));
  }
  Image image = Image::from_bytes(image_to_string(t), "m.cfs");
  ASSERT_NO_THROW(image.validate());
  InodeInfo dir = lookup_path(image, "/big");
  ASSERT_GT(dir.size, 8 * kBlockSize);
  std::vector<std::string> names;
  DirCursor cursor = image.dirents(dir);
  DirEntry e;
  while (cursor.next(e)) names.emplace_back(e.name);
  ASSERT_EQ(names.size(), 1502u);
  for (const auto& n : names) {
    auto found = image.lookup(dir, n);
    ASSERT_TRUE(found) << n;
    EXPECT_EQ(found->name, n);
  }
  for (int i = 0; i < 1500; i++) {
    char name[32];
    snprintf(name, sizeof name, "entry-%05d-padding-name", i * 2 + 1);
    EXPECT_FALSE(image.lookup(dir, name)) << name;
  }
  EXPECT_FALSE(image.lookup(dir, "zzz"));
  EXPECT_FALSE(image.lookup(dir, "+"));
  for (uint64_t start = 0; start <= names.size(); start += 37) {
    DirCursor resumed = image.dirents(dir, start);
    for (uint64_t i = start; i < names.size(); i++) {
      ASSERT_TRUE(resumed.next(e));
      ASSERT_EQ(e.name, names[i]) << start;
    }
    EXPECT_FALSE(resumed.next(e));
  }
}

TEST(Reader, ToTreeRestoresTheSourceTree) {
  Tree source = sample_tree();
  Image image = Image::from_bytes(image_to_string(source), "s.cfs");
  Tree tree = image.to_tree();
  EXPECT_EQ(tree.root->children.size(), 5u);  // stubs dropped
  Inode* wh = tree.lookup("/wh");
  ASSERT_TRUE(wh);
  EXPECT_TRUE(wh->is_whiteout());
  EXPECT_TRUE(wh->xattrs.empty());
  EXPECT_TRUE(tree.root->find_xattr("user.root"));
  EXPECT_EQ(tree.root->xattrs.size(), 1u);  // whiteout markers and opaque=y dropped
  EXPECT_EQ(tree.lookup("/dir")->find_xattr("trusted.overlay.opaque")->value, "y");  // unescaped
  EXPECT_EQ(tree.lookup("/ext"), tree.lookup("/ext2"));
  EXPECT_EQ(tree.lookup("/ext")->payload,
            "01/23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  EXPECT_EQ(tree.lookup("/ext")->digest->hex(), kDigestHex);
  EXPECT_GT(tree.lookup("/dir")->size, 0u);  // EROFS directory size
  zero_dir_sizes(*tree.root);
  EXPECT_EQ(dumpfile_to_string(tree), dumpfile_to_string(source));
  EXPECT_EQ(image_to_string(tree), image_to_string(source));
  EXPECT_EQ(image.objects(),
            std::vector<std::string>{
                "01/23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"});
}

TEST(Reader, OpenFileAndRejectNonImages) {
  test::TempDir dir;
  std::string bytes = image_to_string(sample_tree());
  test::write_file(dir / "img.cfs", bytes);
  Image image = Image::open(dir / "img.cfs");
  EXPECT_NO_THROW(image.validate());
  test::write_file(dir / "zero", std::string(8192, '\0'));
  EXPECT_THAT(error_of([&] { Image::open(dir / "zero"); }),
              AllOf(HasSubstr(dir / "zero"), HasSubstr("bad magic")));
  EXPECT_THAT(error_of([&] { Image::open(dir / "missing"); }), HasSubstr("missing"));
}

// ---- corrupted images: one test per rule --------------------------------------------------

// Builds an image, and locates structures in it with the lazy API so tests can break them.
struct Fixture {
  std::string bytes;
  explicit Fixture(const Tree& tree, WriterOptions options = {})
      : bytes(image_to_string(tree, options)) {}
  Image image() const { return Image::from_bytes(bytes, "t.cfs", ReaderOptions::compat()); }
  InodeInfo at(std::string_view path) const { return lookup_path(image(), path); }
  template <typename T>
  void put(uint64_t offset, T value) {
    for (size_t i = 0; i < sizeof(T); i++)
      bytes[offset + i] = static_cast<char>(static_cast<uint64_t>(value) >> (8 * i));
  }
  // Byte offset of the dirent called name in a directory kept inline (small directories) or
  // in one block (the root with its 256 stubs).
  uint64_t dirent_offset(std::string_view dir_path, std::string_view name) const {
    InodeInfo dir = at(dir_path);
    const bool one_block = dir.layout == DataLayout::flat_plain && dir.size <= kBlockSize;
    EXPECT_TRUE(dir.layout == DataLayout::flat_inline || one_block);
    const uint64_t start = one_block ? uint64_t{dir.raw_u} * kBlockSize : dir.tail_offset;
    Image img = image();
    DirCursor c = img.dirents(dir);
    DirEntry e;
    for (uint64_t i = 0; c.next(e); i++)
      if (e.name == name) return start + i * sizeof(DiskDirent);
    ADD_FAILURE() << name << " not found";
    return 0;
  }
  uint64_t find(std::string_view needle) const {
    size_t pos = bytes.find(needle);
    EXPECT_NE(pos, std::string::npos) << needle;
    EXPECT_EQ(bytes.find(needle, pos + 1), std::string::npos) << needle << " not unique";
    return pos;
  }
  std::string error(ReaderOptions options = ReaderOptions::compat()) const {
    return validate_error(bytes, options);
  }
};

Tree small_tree() {
  return parse_dumpfile(
      "/ 0 40755 2 0 0 0 0.0 - - -\n"
      "/d 0 40755 2 0 0 0 0.0 - - -\n"
      "/d/file 3 100644 1 0 0 0 0.0 - abc - user.x=1\n"
      "/d/other 3 100644 1 0 0 0 0.0 - xyz - user.x=1\n"
      "/d/sub 0 40755 2 0 0 0 0.0 - - -\n"
      "/e 0 40755 2 0 0 0 0.0 - - -\n"
      "/ext 5000 100644 1 0 0 0 0.0 xx/etc/passwd - -\n"
      "/ext2 5000 100644 1 0 0 0 0.0 ab/cd/xx/yy - -\n"
      "/link 6 120777 1 0 0 0 0.0 target - -\n",
      "small.dump");
}

TEST(ReaderCorrupt, Baseline) {
  Fixture f(small_tree());
  EXPECT_EQ(f.error(), "(no error)");
  // cfs mode: the payloads are not object paths.
  EXPECT_THAT(f.error(ReaderOptions{}), HasSubstr("is not an object path"));
}

TEST(ReaderCorrupt, NlinkMismatch) {
  Fixture f(small_tree());
  f.put<uint16_t>(f.at("/d/file").nid * 32 + offsetof(InodeCompact, i_nlink), 2);
  EXPECT_THAT(f.error(),
              AllOf(HasSubstr("t.cfs: /d/file: "), HasSubstr("nlink 2 but 1 directory entries")));
}

TEST(ReaderCorrupt, DirectoryNlinkMismatch) {
  Fixture f(small_tree());
  f.put<uint16_t>(f.at("/d").nid * 32 + offsetof(InodeCompact, i_nlink), 5);
  EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /d: "),
                               HasSubstr("directory nlink 5, expected 3 (2 + subdirectories)")));
}

TEST(ReaderCorrupt, DotDotPointsElsewhere) {
  Fixture f(small_tree());
  f.put<uint64_t>(f.dirent_offset("/d/sub", ".."), f.at("/e").nid);
  EXPECT_THAT(f.error(),
              AllOf(HasSubstr("t.cfs: /d/sub/..: "), HasSubstr("dirent '..' points to nid"),
                    HasSubstr("expected its parent")));
}

TEST(ReaderCorrupt, DotPointsElsewhere) {
  Fixture f(small_tree());
  f.put<uint64_t>(f.dirent_offset("/e", "."), f.at("/d").nid);
  EXPECT_THAT(f.error(),
              AllOf(HasSubstr("t.cfs: /e/.: "), HasSubstr("expected the directory itself")));
}

TEST(ReaderCorrupt, DirentTypeLies) {
  Fixture f(small_tree());
  f.put<uint8_t>(f.dirent_offset("/d", "file") + offsetof(DiskDirent, file_type), kFtSymlink);
  EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /d/file: "),
                               HasSubstr("dirent type 7 does not match the inode's type 1")));
}

TEST(ReaderCorrupt, Cycle) {
  Fixture f(small_tree());
  f.put<uint64_t>(f.dirent_offset("/d", "sub"), f.image().root_nid());
  EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /d/sub: "), HasSubstr("reachable twice")));
}

TEST(ReaderCorrupt, HardlinkedDirectory) {
  Fixture f(small_tree());
  f.put<uint64_t>(f.dirent_offset("/d", "sub"), f.at("/e").nid);
  EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /d/sub: "), HasSubstr("reachable twice")));
}

Tree two_names_tree() {
  return parse_dumpfile(
      "/ 0 40755 2 0 0 0 0.0 - - -\n"
      "/d 0 40755 2 0 0 0 0.0 - - -\n"
      "/d/ka 0 100644 1 0 0 0 0.0 - - -\n"
      "/d/kb 0 100644 1 0 0 0 0.0 - - -\n",
      "u.dump");
}

TEST(ReaderCorrupt, DuplicateName) {
  Fixture f(two_names_tree());
  f.put<uint8_t>(f.find("kakb") + 3, 'a');  // "ka" "ka"
  EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /d/ka: "), HasSubstr("duplicate name")));
}

TEST(ReaderCorrupt, UnsortedNames) {
  Fixture f(two_names_tree());
  f.put<uint8_t>(f.find("kakb") + 1, 'c');  // "kc" then "kb"
  EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /d/kb: "), HasSubstr("not sorted")));
}

TEST(ReaderCorrupt, NameWithSlash) {
  Fixture f(small_tree());
  f.put<uint8_t>(f.find("fileother"), '/');
  EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /d//ile: "), HasSubstr("'/' or NUL")));
}

TEST(ReaderCorrupt, MissingDot) {
  Fixture f(small_tree());
  uint64_t off = f.dirent_offset("/e", ".");
  uint16_t nameoff = static_cast<uint8_t>(f.bytes[off + 8]) | static_cast<uint8_t>(f.bytes[off + 9])
                                                                  << 8;
  f.put<uint8_t>(f.at("/e").tail_offset + nameoff, '-');  // "." -> "-" keeps the order
  // ...and make "-" an ordinary second name of /d/file so only the missing '.' is wrong.
  f.put<uint64_t>(off, f.at("/d/file").nid);
  f.put<uint8_t>(off + offsetof(DiskDirent, file_type), kFtRegFile);
  EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /e: "), HasSubstr("no '.' entry")));
}

TEST(ReaderCorrupt, TruncatedImage) {
  Fixture f(small_tree());
  EXPECT_THAT(validate_error(f.bytes.substr(0, f.bytes.size() - 4096)),
              AllOf(HasSubstr("t.cfs: superblock: "), HasSubstr("block count")));
  EXPECT_THAT(validate_error(f.bytes.substr(0, 100)),
              HasSubstr("smaller than one 4096-byte block"));
}

TEST(ReaderCorrupt, NameoffOutOfBounds) {
  Fixture f(small_tree());
  f.put<uint16_t>(f.dirent_offset("/d", ".") + offsetof(DiskDirent, nameoff), 4000);
  EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /d: "), HasSubstr("first nameoff 4000")));
}

TEST(ReaderCorrupt, NameoffOverlap) {
  Fixture f(small_tree());
  uint64_t off = f.dirent_offset("/d", "file") + offsetof(DiskDirent, nameoff);
  f.put<uint16_t>(off, 20);  // inside the dirent table
  EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /d"), HasSubstr("outside the name area")));
}

TEST(ReaderCorrupt, BlockAddressOutOfBounds) {
  Fixture f(small_tree());
  InodeInfo root = f.at("/");
  ASSERT_EQ(root.layout, DataLayout::flat_plain);
  f.put<uint32_t>(root.nid * 32 + offsetof(InodeCompact, i_u), 0xffffff);
  EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /: "), HasSubstr("beyond the end of the image")));
}

TEST(ReaderCorrupt, BlockAddressIntoMetadata) {
  Fixture f(small_tree());
  f.put<uint32_t>(f.at("/").nid * 32 + offsetof(InodeCompact, i_u), 0);
  EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /: "), HasSubstr("overlaps inode metadata")));
}

TEST(ReaderCorrupt, SharedXattrIdOutOfBounds) {
  Fixture f(small_tree());
  InodeInfo file = f.at("/d/file");
  XattrCursor c = f.image().xattrs(file);
  ASSERT_EQ(c.shared_count(), 1u);
  f.put<uint32_t>(file.xattr_offset + sizeof(XattrIbodyHeader), 0x3fffffff);
  EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /d/file: "), HasSubstr("shared xattr id")));
}

TEST(ReaderCorrupt, XattrEntryOverrun) {
  Fixture f(small_tree());
  InodeInfo ext = f.at("/ext");
  // The first inline entry's value size is made larger than the body.
  uint64_t first_inline =
      ext.xattr_offset + sizeof(XattrIbodyHeader) + 4 * f.image().xattrs(ext).shared_count();
  f.put<uint16_t>(first_inline + 2, 60000);
  EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /ext: "), HasSubstr("overruns the xattr body")));
}

TEST(ReaderCorrupt, XattrFilterHidesName) {
  Fixture f(small_tree());
  f.put<uint32_t>(f.at("/d/file").xattr_offset, 0xffffffff);
  EXPECT_THAT(f.error(),
              AllOf(HasSubstr("t.cfs: /d/file: "), HasSubstr("xattr name filter hides user.x")));
}

TEST(ReaderCorrupt, OversizeSymlink) {
  Tree t = small_tree();
  std::string target(1500, 'a');
  t.lookup("/link")->payload = target;
  t.lookup("/link")->size = target.size();
  Fixture f(t);
  EXPECT_EQ(f.error(), "(no error)");  // C-compatible: up to 4095
  ReaderOptions cfs_mode{.max_symlink = kSymlinkMaxCfs, .object_redirects_only = false};
  EXPECT_THAT(f.error(cfs_mode), AllOf(HasSubstr("t.cfs: /link: "),
                                       HasSubstr("symlink target length 1500 outside 1..1024")));
}

TEST(ReaderCorrupt, SymlinkWithNul) {
  Fixture f(small_tree());
  f.put<uint8_t>(f.find("target"), 0);
  EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /link: "), HasSubstr("NUL")));
}

TEST(ReaderCorrupt, RedirectEscapesObjectDir) {
  {
    Fixture f(small_tree());
    uint64_t at = f.find("/xx/etc/passwd");
    f.put<uint8_t>(at + 1, '.');
    f.put<uint8_t>(at + 2, '.');
    for (auto opt : {ReaderOptions::compat(), ReaderOptions{}})
      EXPECT_THAT(f.error(opt),
                  AllOf(HasSubstr("t.cfs: /ext: "), HasSubstr("redirect '/../etc/passwd'")));
  }
  {
    Fixture f(small_tree());
    uint64_t at = f.find("/ab/cd/xx/yy");
    for (int i : {7, 8, 10, 11}) f.put<uint8_t>(at + i, '.');
    EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /ext2: "), HasSubstr("redirect '/ab/cd/../..'"),
                                 HasSubstr("not a relative path")));
  }
}

TEST(ReaderCorrupt, RedirectMustMatchDigest) {
  Tree t = small_tree();
  Inode* ext = t.lookup("/ext");
  ext->payload = "01/23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  ext->digest = Digest::from_hex(kDigestHex);
  t.root->remove_child("ext2");
  Fixture f(t);
  EXPECT_EQ(f.error(ReaderOptions{}), "(no error)");
  f.put<uint8_t>(f.find("/01/2345") + 1, 'f');
  EXPECT_THAT(f.error(ReaderOptions{}),
              AllOf(HasSubstr("t.cfs: /ext: "), HasSubstr("does not name the metacopy digest")));
  EXPECT_EQ(f.error(), "(no error)");  // C-compatible mode does not tie them
}

TEST(ReaderCorrupt, MalformedMetacopy) {
  Tree t = small_tree();
  t.lookup("/ext")->digest = Digest::from_hex(kDigestHex);
  Fixture f(t);
  std::string header("\x00\x24\x00\x01\x01\x23\x45\x67", 8);
  uint64_t at = f.find(header);
  f.put<uint8_t>(at + 3, 9);
  EXPECT_THAT(f.error(), AllOf(HasSubstr("t.cfs: /ext: "), HasSubstr("digest algorithm 9")));
}

TEST(ReaderCorrupt, WhiteoutOutsideRoot) {
  Fixture f(small_tree());
  InodeInfo file = f.at("/d/file");
  f.put<uint16_t>(file.nid * 32 + offsetof(InodeCompact, i_mode), S_IFCHR | 0644);
  f.put<uint16_t>(file.nid * 32 + offsetof(InodeCompact, i_format), 0);
  f.put<uint32_t>(file.nid * 32 + offsetof(InodeCompact, i_size), 0);
  f.put<uint8_t>(f.dirent_offset("/d", "file") + offsetof(DiskDirent, file_type), kFtChrdev);
  EXPECT_THAT(f.error(),
              AllOf(HasSubstr("t.cfs: /d/file: "), HasSubstr("outside the root's 00-ff stubs")));
}

TEST(ReaderCorrupt, UnexpectedOverlayXattr) {
  Tree t = small_tree();
  t.lookup("/d/file")->set_xattr("trusted.overlaz.whiteout", "");
  Fixture f(t);
  InodeInfo file = f.at("/d/file");
  f.put<uint32_t>(file.xattr_offset, 0);                // filter: nothing hidden
  f.put<uint8_t>(f.find("overlaz.whiteout") + 6, 'y');  // an unescaped overlay whiteout
  std::string err = f.error();
  EXPECT_THAT(err, AllOf(HasSubstr("t.cfs: /d/file: "), HasSubstr("unexpected overlay xattr")))
      << err;
}

TEST(ReaderCorrupt, DuplicateXattr) {
  Tree t = small_tree();
  t.lookup("/d/file")->set_xattr("user.dupe_a", "1");
  t.lookup("/d/file")->set_xattr("user.dupe_b", "2");
  Fixture f(t);
  f.put<uint8_t>(f.find("dupe_b2") + 5, 'a');
  EXPECT_THAT(f.error(),
              AllOf(HasSubstr("t.cfs: /d/file: "), HasSubstr("duplicate xattr user.dupe_a")));
}

TEST(ReaderCorrupt, TooDeep) {
  // The writer refuses such trees, so move an empty directory to the bottom of a chain 2048
  // levels deep by swapping it with a file there (and fixing the root's nlink).
  Tree t;
  Inode* cur = t.root.get();
  for (uint32_t i = 0; i < kMaxDirDepth; i++)
    cur = cur->set_child("d", make_inode(S_IFDIR | 0755)).get();
  cur->set_child("f", make_inode(S_IFREG | 0644));
  t.root->set_child("z", make_inode(S_IFDIR | 0755));
  Fixture f(t);
  std::string bottom;
  for (uint32_t i = 0; i < kMaxDirDepth; i++) bottom += "/d";
  const uint64_t file_nid = f.at(bottom + "/f").nid, dir_nid = f.at("/z").nid;
  const uint64_t file_dirent = f.dirent_offset(bottom, "f"), dir_dirent = f.dirent_offset("/", "z");
  f.put<uint64_t>(file_dirent, dir_nid);
  f.put<uint8_t>(file_dirent + offsetof(DiskDirent, file_type), kFtDir);
  f.put<uint64_t>(dir_dirent, file_nid);
  f.put<uint8_t>(dir_dirent + offsetof(DiskDirent, file_type), kFtRegFile);
  ASSERT_FALSE(f.at("/").extended);
  f.put<uint16_t>(f.image().root_nid() * 32 + offsetof(InodeCompact, i_nlink), 3);
  EXPECT_THAT(f.error(),
              AllOf(HasSubstr("t.cfs: /d/d/d/"), HasSubstr("directory nesting deeper than 2048")));
}

TEST(ReaderCorrupt, InodeCountMismatch) {
  Fixture f(small_tree());
  f.put<uint64_t>(kSuperblockOffset + offsetof(Superblock, inos), 3);
  EXPECT_THAT(f.error(), HasSubstr("superblock counts 3 inodes"));
}

TEST(ReaderCorrupt, SuperblockRules) {
  Fixture base(small_tree());
  auto with = [&](size_t offset, auto value) {
    Fixture f = base;
    f.put(offset, value);
    return f.error();
  };
  EXPECT_THAT(with(0, uint32_t{1}), HasSubstr("composefs header: bad magic"));
  EXPECT_THAT(with(4, uint32_t{2}), HasSubstr("unsupported header version 2"));
  EXPECT_THAT(with(12, uint32_t{3}), HasSubstr("unsupported composefs format version 3"));
  EXPECT_THAT(with(kSuperblockOffset, uint32_t{0}), HasSubstr("superblock: bad EROFS magic"));
  EXPECT_THAT(with(kSuperblockOffset + offsetof(Superblock, blkszbits), uint8_t{9}),
              HasSubstr("block size bits 9"));
  EXPECT_THAT(with(kSuperblockOffset + offsetof(Superblock, feature_incompat), uint32_t{1}),
              HasSubstr("unsupported incompat features 0x1"));
  EXPECT_THAT(with(kSuperblockOffset + offsetof(Superblock, feature_compat), uint32_t{0x10}),
              HasSubstr("unsupported compat features 0x10"));
  EXPECT_THAT(with(kSuperblockOffset + offsetof(Superblock, meta_blkaddr), uint32_t{1}),
              HasSubstr("meta_blkaddr 1"));
  EXPECT_THAT(with(kSuperblockOffset + offsetof(Superblock, extra_devices), uint16_t{1}),
              HasSubstr("extra devices"));
  EXPECT_THAT(with(kSuperblockOffset + offsetof(Superblock, sb_extslots), uint8_t{1}),
              HasSubstr("extension slots"));
  EXPECT_THAT(with(kSuperblockOffset + offsetof(Superblock, packed_nid), uint64_t{5}),
              HasSubstr("packed inode"));
  EXPECT_THAT(with(kSuperblockOffset + offsetof(Superblock, xattr_prefix_count), uint8_t{1}),
              HasSubstr("long xattr name prefixes"));
  uint16_t file_nid = static_cast<uint16_t>(base.at("/d/file").nid);
  EXPECT_THAT(
      with(kSuperblockOffset + offsetof(Superblock, root_nid), file_nid),
      HasSubstr("superblock: root inode " + std::to_string(file_nid) + " is not a directory"));
}

// The optional superblock checksum is verified the way the kernel and fsck.erofs do.
TEST(ReaderCorrupt, SuperblockChecksum) {
  Fixture f(small_tree());
  size_t compat_at = kSuperblockOffset + offsetof(Superblock, feature_compat);
  size_t sum_at = kSuperblockOffset + offsetof(Superblock, checksum);
  f.put<uint32_t>(compat_at,
                  kFeatureCompatMtime | kFeatureCompatXattrFilter | kFeatureCompatSbChksum);
  // CRC32C, written out independently of the reader's loop: table-driven.
  uint32_t table[256];
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
    table[i] = c;
  }
  uint32_t crc = ~0u;
  for (size_t i = kSuperblockOffset; i < kBlockSize; i++) {
    uint8_t b = (i >= sum_at && i < sum_at + 4) ? 0 : static_cast<uint8_t>(f.bytes[i]);
    crc = table[(crc ^ b) & 0xff] ^ (crc >> 8);
  }
  f.put<uint32_t>(sum_at, crc);
  EXPECT_EQ(f.error(), "(no error)");
  test::TempDir dir;
  test::write_file(dir / "sum.cfs", f.bytes);
  std::string out;
  if (test::run("command -v fsck.erofs >/dev/null", &out) == 0) {
    EXPECT_EQ(test::run("fsck.erofs " + (dir / "sum.cfs") + " 2>&1", &out), 0) << out;
    EXPECT_THAT(out, Not(HasSubstr("chksum")));
  }
  f.put<uint32_t>(sum_at, crc ^ 1);
  EXPECT_THAT(f.error(),
              AllOf(HasSubstr("t.cfs: superblock: checksum"), HasSubstr("does not match")));
  if (test::run("command -v fsck.erofs >/dev/null", &out) == 0) {
    test::write_file(dir / "bad.cfs", f.bytes);
    // This fsck.erofs reports the mismatch but still exits 0; check what it says.
    test::run("fsck.erofs " + (dir / "bad.cfs") + " 2>&1", &out);
    EXPECT_THAT(out, HasSubstr("chksum doesn't match"));
  }
}

TEST(ReaderCorrupt, CompressedLayoutRejected) {
  Fixture f(small_tree());
  f.put<uint16_t>(f.at("/d/file").nid * 32, make_i_format(false, DataLayout::compressed_full));
  EXPECT_THAT(f.error(),
              AllOf(HasSubstr("t.cfs: /d/file: "), HasSubstr("unsupported data layout 1")));
}

// Random single-byte and multi-byte damage anywhere in real images: every outcome is either
// acceptance or a cfs::Error, never a crash, hang or runaway allocation (run under ASan in
// the fuzz build too).
TEST(ReaderCorrupt, RandomDamageNeverCrashes) {
  std::vector<std::string> images = {image_to_string(sample_tree()), image_to_string(small_tree())};
  Tree special = parse_dumpfile(test::read_vector("special.dump"), "special", parse_compat(true));
  images.push_back(image_to_string(special, {.min_version = 1, .max_version = 1}));
  std::mt19937_64 rng(12345);
  int rejected = 0, accepted = 0;
  for (const auto& original : images) {
    for (int round = 0; round < 1500; round++) {
      std::string bytes = original;
      int flips = 1 + static_cast<int>(rng() % 4);
      for (int i = 0; i < flips; i++) {
        // Bias towards the metadata at the front, where damage is interesting.
        size_t limit = rng() % 4 == 0 ? bytes.size() : std::min<size_t>(bytes.size(), 12288);
        bytes[rng() % limit] = static_cast<char>(rng());
      }
      try {
        Image image = Image::from_bytes(std::move(bytes), "r.cfs", ReaderOptions::compat());
        image.validate();
        Tree tree = image.to_tree();
        image.objects();
        accepted++;
      } catch (const Error&) {
        rejected++;
      }
    }
  }
  EXPECT_GT(rejected, 1000);
  EXPECT_GT(accepted, 0);
}

// ---- format V2 (composefs-rs' layout) ------------------------------------------------------

constexpr WriterOptions kV2{.min_version = 2, .max_version = 2};

Tree v2_tree() {
  return parse_dumpfile(
      "/ 0 40755 2 0 0 0 1000.0 - - - security.selinux=root_t user.a=1\n"
      "/a 0 40755 2 0 0 0 1000.0 - - - security.selinux=root_t\n"
      "/a/x 5 100644 2 0 0 0 1000.0 - hello - user.a=1 lustre.k=v\n"
      "/a/gone 0 20000 1 0 0 0 1.0 - - - user.overlay.whiteout=\n"
      "/ab 0 20000 1 0 0 0 1.0 - - -\n"
      "/b 5 @100644 - - - - 0.0 /a/x - -\n"
      "/big 512 100644 1 0 0 0 7.0 - " +
          std::string(512, 'b') +
          " -\n"
          "/ext 9000 100644 1 0 0 0 1.0 aa/" +
          std::string(62, 'a') + " - " + std::string(64, 'a') +
          "\n"
          "/link 1024 120777 1 0 0 0 1.0 " +
          std::string(1024, 'l') +
          " - -\n"
          "/ovl 0 100644 1 0 0 0 1.0 - - - trusted.overlay.opaque=y\n",
      "v2.dump");
}

// composefs-rs stores no sub-second mtimes in V2: the tree it reads back has none.
void zero_nsec(Inode& inode) {
  inode.mtime_nsec = 0;
  for (auto& d : inode.children) zero_nsec(*d.inode);
}

TEST(ReaderV2, AcceptsAndRestoresTheTree) {
  Tree source = v2_tree();
  Fixture f(source, kV2);
  Image image = f.image();
  EXPECT_EQ(image.format_version(), 2u);
  EXPECT_TRUE(image.has_acl());  // V2 has no ACL flag: keep ACL support
  image.validate();
  // Whiteouts stay chr 0/0 wherever they are (no stubs to hide in V2), user.overlay.* and
  // escaped trusted.overlay.* xattrs are the user's, hardlinks stay one inode.
  Tree tree = image.to_tree();
  zero_dir_sizes(*tree.root);
  zero_dir_sizes(*source.root);
  zero_nsec(*source.root);
  EXPECT_EQ(dumpfile_to_string(tree), dumpfile_to_string(source));
  EXPECT_EQ(tree.lookup("/a/x"), tree.lookup("/b"));
  // Every inode is extended and its ino is its nid; shared xattr ids are absolute.
  for (const char* path : {"/", "/a", "/a/x", "/ab", "/big", "/ext", "/link"}) {
    InodeInfo in = f.at(path);
    EXPECT_TRUE(in.extended) << path;
    EXPECT_EQ(in.ino, in.nid) << path;
  }
  // Writing the tree again gives the same bytes.
  EXPECT_EQ(image_to_string(image.to_tree(), kV2), f.bytes);
  EXPECT_EQ(image.objects(), std::vector<std::string>{"aa/" + std::string(62, 'a')});
}

TEST(ReaderV2, RefusesV1EncodingsAndOversizedData) {
  // A V1 image relabelled V2: its shared xattr base, its root's unescaped opaque=y and its
  // stub table all belong to format V1.
  Fixture v1(v2_tree(), {.min_version = 1, .max_version = 1});
  v1.put(12, uint32_t{2});
  EXPECT_THAT(v1.error(), AllOf(Not(HasSubstr("(no error)")), HasSubstr("V2")));

  // A user's trusted.overlay.whiteout is stored escaped, which is V1's whiteout encoding:
  // composefs-rs refuses such V2 images, and so does cfs.
  Tree escaped = parse_dumpfile(
      "/ 0 40755 2 0 0 0 0.0 - - -\n/f 0 100644 1 0 0 0 0.0 - - - trusted.overlay.whiteout=\n",
      "e.dump");
  EXPECT_THAT(Fixture(escaped, kV2).error(), HasSubstr("escaped overlay whiteout"));

  // The 256 root stubs of V0/V1.
  Tree stubs = parse_dumpfile("/ 0 40755 2 0 0 0 0.0 - - -\n", "s.dump");
  for (uint32_t i = 0; i < 256; i++)
    stubs.root->set_child(std::string(composefs::whiteout_stub_name(i)),
                          make_inode(S_IFCHR | 0644));
  EXPECT_THAT(Fixture(stubs, kV2).error(), HasSubstr("00-ff whiteout stub table"));
  stubs.root->remove_child("7f");  // 255 of them are just whiteouts
  EXPECT_EQ(Fixture(stubs, kV2).error(), "(no error)");

  Fixture f(v2_tree(), kV2);
  auto with = [&](std::string_view path, size_t field, auto value) {
    Fixture g = f;
    g.put(g.at(path).nid * kInodeSlotSize + field, value);
    return g.error();
  };
  EXPECT_THAT(with("/big", offsetof(InodeExtended, i_size), uint64_t{513}),
              HasSubstr("inline file data of 513 bytes exceeds 512 (format V2)"));
  EXPECT_THAT(with("/link", offsetof(InodeExtended, i_size), uint64_t{1025}),
              HasSubstr("symlink target length 1025 outside 1..1024 (format V2)"));
  EXPECT_THAT(with("/ab", offsetof(InodeExtended, i_nlink), uint32_t{2}),
              HasSubstr("whiteout with nlink 2"));
  // V2 shared xattr ids are absolute: a table base would misplace them.
  Fixture g = f;
  g.put(kSuperblockOffset + offsetof(Superblock, xattr_blkaddr), uint32_t{1});
  EXPECT_THAT(g.error(), HasSubstr("xattr_blkaddr 1 in a format V2 image"));
  // The same tree in format V1 (whiteouts escaped, stubs added) is a valid V1 image.
  EXPECT_EQ(Fixture(v2_tree(), {.min_version = 1, .max_version = 1}).error(), "(no error)");
}

}  // namespace
}  // namespace cfs::erofs
