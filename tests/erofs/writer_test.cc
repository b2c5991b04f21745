#include "cfs/erofs/writer.h"

#include <dirent.h>
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <set>

#include "cfs/erofs/dumpfile.h"
#include "cfs/erofs/reader.h"
#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/fsverity.h"
#include "testdata.h"

namespace cfs::erofs {
namespace {

using ::testing::HasSubstr;

// The C-compatible parse mode the drop-in mkcomposefs uses for --from-file.
DumpfileParseOptions compat() {
  return {.strict = false, .max_symlink = kSymlinkMaxCompat};
}

std::string verity_hex(std::string_view image) {
  return fsverity_digest(image).hex();
}

Tree root_only() {
  Tree t;
  t.root = make_inode(S_IFDIR | 0755);
  return t;
}

// The fs-verity digest of the image of a root holding one entry.
std::string digest_with_child(const std::string& name, const InodePtr& child) {
  Tree t = root_only();
  t.root->set_child(name, child);
  return verity_hex(image_to_string(t));
}

std::string write_error(const Tree& tree) {
  try {
    image_to_string(tree);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// ---- hand vectors from composefs-c.md §6 (digests produced by mkcomposefs 1.0.8) ----------

TEST(ErofsWriter, RootOnly) {
  Tree t = root_only();
  std::string image = image_to_string(t);
  EXPECT_EQ(image.size(), 16384u);
  EXPECT_EQ(verity_hex(image), "8f589e8f57ecb88823736b0d857ddca1e1068a23e264fad164b28f7038eb3682");
}

TEST(ErofsWriter, InlineFile) {
  auto f = make_inode(S_IFREG | 0644);
  f->size = 6;
  f->content = "hello\n";
  EXPECT_EQ(digest_with_child("hello", f),
            "9a49aef2f62e29c4e856df146915099142be57928bbca1f6945c5b8f95800556");
}

TEST(ErofsWriter, ExternalFileWithDigest) {
  auto f = make_inode(S_IFREG | 0644);
  f->size = 100000;
  f->payload = "01/23456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  f->digest = Digest::from_hex("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  EXPECT_EQ(digest_with_child("ext", f),
            "341efab043259c82d7eeb853a3b4c8932ecf0a8d22a912b58ba6782c78187b5a");
}

TEST(ErofsWriter, WithoutDigestWritesTheSameBytesAndNoDigest) {
  Tree t = root_only();
  t.root->set_child("wh", make_inode(S_IFCHR | 0644));
  t.root->set_child("f", make_inode(S_IFREG | 0644));
  for (uint32_t version : {0u, 2u}) {
    WriterOptions with = WriterOptions::for_erofs_version(version);
    WriterOptions without = with;
    without.compute_digest = false;
    StringSink a, b;
    WriteResult hashed = write_image(t, a, with);
    WriteResult plain = write_image(t, b, without);
    ASSERT_TRUE(hashed.digest) << "version " << version;
    EXPECT_FALSE(plain.digest) << "version " << version;
    EXPECT_EQ(a.str(), b.str()) << "version " << version;
    EXPECT_EQ(plain.size, b.str().size());
    EXPECT_EQ(plain.version, hashed.version);
    EXPECT_EQ(hashed.digest->hex(), verity_hex(a.str()));
  }
}

TEST(ErofsWriter, WhiteoutRaisesVersion) {
  Tree t = root_only();
  t.root->set_child("wh", make_inode(S_IFCHR | 0644));
  StringSink sink;
  WriteResult r = write_image(t, sink);
  EXPECT_EQ(r.version, 1u);
  EXPECT_EQ(r.size, sink.str().size());
  EXPECT_EQ(r.digest->hex(), "7470c92de2d37d9315817ca2988d4fafe04b235401018faf302c127eb2486685");
  EXPECT_EQ(verity_hex(sink.str()), r.digest->hex());

  // max_version 0 keeps format 0 (no opaque markers), so the bytes differ.
  WriteResult v0 = write_image(t, sink, {.min_version = 0, .max_version = 0});
  EXPECT_EQ(v0.version, 0u);
  EXPECT_NE(v0.digest, r.digest);
}

// ---- the composefs C reference vectors ---------------------------------------------------

struct BuiltVector {
  test::VectorRow row;
  Tree tree;
  std::string image;
  WriteResult result;
};

std::vector<BuiltVector> build_all_vectors() {
  std::vector<BuiltVector> out;
  for (const auto& row : test::load_vectors()) {
    BuiltVector v{row, parse_dumpfile(test::read_vector(row.asset), row.asset, compat()), {}, {}};
    StringSink sink;
    v.result =
        write_image(v.tree, sink, {.min_version = row.min_version, .max_version = row.max_version});
    v.image = std::move(sink.str());
    out.push_back(std::move(v));
  }
  return out;
}

const std::vector<BuiltVector>& all_vectors() {
  static const std::vector<BuiltVector> vectors = build_all_vectors();
  return vectors;
}

TEST(ErofsWriter, AllReferenceVectorsAreByteIdentical) {
  ASSERT_EQ(all_vectors().size(), 14u);
  for (const auto& v : all_vectors()) {
    SCOPED_TRACE(v.row.asset);
    EXPECT_EQ(v.result.digest->hex(), v.row.fsverity);
    EXPECT_EQ(verity_hex(v.image), v.row.fsverity);
    EXPECT_EQ(test::sha256_hex(v.image), v.row.sha256);
    EXPECT_EQ(v.result.size, v.image.size());
    EXPECT_EQ(v.image.size() % 4096, 0u);
  }
}

// Inline content left in the dumpfile (what mkcomposefs --from-file does) gives the same
// image and the same dumpfile as content held in memory, for every vector.
TEST(ErofsWriter, ContentReferencedInTheDumpfileGivesTheSameImage) {
  test::TempDir dir;
  size_t referenced = 0;
  for (const auto& v : all_vectors()) {
    SCOPED_TRACE(v.row.asset);
    const std::string path = dir.path() + "/input.dump";
    test::write_file(path, test::read_vector(v.row.asset));
    UniqueFd fd = open_file(path, O_RDONLY);
    DumpfileParseOptions options = compat();
    options.reference_content = true;
    Tree tree = parse_dumpfile_fd(fd.get(), path, options);
    fd.reset();  // the tree keeps its own descriptor
    walk(tree, [&](const WalkEntry& e) {
      if (e.inode.content.ref().length > 0) {
        referenced++;
        EXPECT_FALSE(e.inode.content) << e.path;
      }
    });
    const std::string image =
        image_to_string(tree, {.min_version = v.row.min_version, .max_version = v.row.max_version});
    EXPECT_TRUE(image == v.image) << "referenced content changed the image";
    EXPECT_EQ(dumpfile_to_string(tree), dumpfile_to_string(v.tree));
  }
  EXPECT_GT(referenced, 0u) << "no vector had its inline content referenced";
}

// Inode::content is one pointer wide but keeps optional<string>'s meaning: copies of an inode
// (OCI layer merges and libcomposefs copy trees) own their bytes.
TEST(ErofsWriter, InlineContentCopiesAreIndependent) {
  Inode a;
  EXPECT_FALSE(a.content);
  EXPECT_TRUE(a.content == std::nullopt);
  a.content = "abc";
  Inode b = a;
  b.content->append("d");
  EXPECT_EQ(*a.content, "abc");
  EXPECT_EQ(b.content, "abcd");
  EXPECT_FALSE(a.content == b.content);
  b = a;
  EXPECT_TRUE(a.content == b.content);
  a.content.reset();
  EXPECT_EQ(b.content, std::string("abc"));
  EXPECT_FALSE(a.content == b.content);
  a.content = std::optional<std::string>(std::string(3, '\0'));
  EXPECT_EQ(a.content->size(), 3u);
  a.content = std::nullopt;
  EXPECT_FALSE(a.content.has_value());
  EXPECT_LE(sizeof(Inode), 80u) << "Inode grew: the tree holds one per entry";
}

// Inode::content holds bytes or a reference into the tree's content source in one word;
// setting either replaces the other, and a copy of a reference is the same reference.
TEST(ErofsWriter, InlineContentHoldsBytesOrOneReference) {
  Inode a;
  EXPECT_FALSE(a.has_content());
  ContentRef far;
  far.offset = ContentRef::kMaxOffset;
  far.length = ContentRef::kMaxLength;
  a.content.set_ref(far);
  a.mode = S_IFREG | 0644;
  EXPECT_TRUE(a.has_content());
  EXPECT_FALSE(a.content) << "a reference is not bytes held in memory";
  EXPECT_EQ(a.content.ref().offset, ContentRef::kMaxOffset);
  EXPECT_EQ(a.content.ref().length, ContentRef::kMaxLength);
  Inode b = a;
  EXPECT_EQ(b.content.ref().offset, ContentRef::kMaxOffset);
  EXPECT_TRUE(a.content == b.content);
  b.content = "xyz";
  EXPECT_EQ(b.content.ref().length, 0u);
  EXPECT_EQ(*b.content, "xyz");
  EXPECT_FALSE(a.content == b.content);
  ContentRef near;
  near.offset = 7;
  near.length = 3;
  b.content.set_ref(near);
  EXPECT_FALSE(b.content);
  EXPECT_EQ(b.content.ref().offset, 7u);
  b.content.set_ref({});
  EXPECT_FALSE(b.has_content()) << "a reference of length 0 is no content";
  Inode c = std::move(a);
  EXPECT_EQ(c.content.ref().length, ContentRef::kMaxLength);
}

// InodePtr shares one inode among dirents (hardlinks) with an atomic count in the inode's
// own allocation; the last owner frees it.
TEST(ErofsWriter, InodePtrSharesAndCountsOneInode) {
  static_assert(sizeof(InodePtr) == sizeof(void*));
  InodePtr none;
  EXPECT_FALSE(none);
  EXPECT_EQ(none.use_count(), 0);
  EXPECT_TRUE(none == nullptr);
  InodePtr a = make_inode(S_IFREG | 0600);
  EXPECT_EQ(a.use_count(), 1);
  {
    InodePtr b = a;
    EXPECT_EQ(a.use_count(), 2);
    EXPECT_TRUE(a == b);
    EXPECT_EQ(b.get(), a.get());
    b->nlink = 2;
    InodePtr c = std::move(b);
    EXPECT_FALSE(b);
    EXPECT_EQ(a.use_count(), 2);
    c = make_inode(S_IFDIR | 0755);
    EXPECT_EQ(a.use_count(), 1);
    EXPECT_TRUE(c->is_dir());
  }
  EXPECT_EQ(a->nlink, 2u);
  InodePtr d = a;
  a = a;  // self-assignment keeps the count
  EXPECT_EQ(d.use_count(), 2);
  a.reset();
  EXPECT_EQ(d.use_count(), 1);
  EXPECT_TRUE(d->is_reg());
}

// Inode::payload and Inode::digest are one pointer wide each, with string's and
// optional<Digest>'s meaning: copies are deep, empty/absent costs no allocation, and the
// bytes (embedded NULs, both digest algorithms) come back exactly.
TEST(ErofsWriter, CompactPayloadAndDigestKeepTheirValues) {
  Inode a;
  EXPECT_TRUE(a.payload.empty());
  EXPECT_EQ(a.payload.view(), "");
  EXPECT_STREQ(a.payload.c_str(), "");
  EXPECT_FALSE(a.digest);
  EXPECT_TRUE(a.digest == std::nullopt);
  const std::string with_nul("ab\0cd", 5);
  a.payload = with_nul;
  EXPECT_EQ(a.payload.size(), 5u);
  EXPECT_EQ(a.payload.view(), with_nul);
  Inode b = a;
  b.payload = "01/" + std::string(62, 'f');
  EXPECT_EQ(a.payload, with_nul);
  EXPECT_EQ("/" + b.payload, "/01/" + std::string(62, 'f'));
  EXPECT_STREQ(b.payload.c_str(), ("01/" + std::string(62, 'f')).c_str());
  b.payload = "";
  EXPECT_TRUE(b.payload.empty());

  std::vector<uint8_t> bytes(64);
  for (size_t i = 0; i < bytes.size(); i++) bytes[i] = static_cast<uint8_t>(i * 7 + 1);
  const Digest sha256(HashAlgorithm::sha256, std::span(bytes).first(32));
  const Digest sha512(HashAlgorithm::sha512, bytes);
  a.digest = sha256;
  b = a;
  b.digest = sha512;
  EXPECT_EQ(*a.digest, sha256);
  EXPECT_EQ(a.digest->hex(), sha256.hex());
  EXPECT_EQ(*b.digest, sha512);
  EXPECT_EQ(b.digest->algorithm(), HashAlgorithm::sha512);
  EXPECT_FALSE(a.digest == b.digest);
  std::optional<Digest> as_optional = b.digest;
  EXPECT_EQ(as_optional, sha512);
  b.digest = std::optional<Digest>();
  EXPECT_FALSE(b.digest.has_value());
  EXPECT_LE(sizeof(Inode::payload) + sizeof(Inode::digest), 2 * sizeof(void*));
}

// Inode::xattrs and Inode::children are one pointer wide (CompactVector) and a Dirent is 24
// bytes (DirentName holds names up to 14 bytes inline): vector and string semantics hold,
// including copies, growth, insertion, erasure and names on either side of the inline limit.
TEST(ErofsWriter, CompactVectorsAndDirentNamesKeepTheirValues) {
  EXPECT_EQ(sizeof(Inode::xattrs) + sizeof(Inode::children), 2 * sizeof(void*));
  EXPECT_EQ(sizeof(Dirent), 24u);
  Inode dir;
  EXPECT_TRUE(dir.children.empty());
  EXPECT_EQ(dir.children.capacity(), 0u);
  std::vector<std::string> names;
  for (int i = 0; i < 300; i++) {
    // Lengths 1..40 on both sides of DirentName::kInlineMax, inserted out of order.
    std::string name = std::to_string((i * 37) % 300);
    name += std::string(static_cast<size_t>(i % 40), static_cast<char>('a' + i % 26));
    names.push_back(name);
    dir.set_child(name, make_inode(S_IFREG | 0644));
  }
  std::sort(names.begin(), names.end());
  ASSERT_EQ(dir.children.size(), names.size());
  for (size_t i = 0; i < names.size(); i++) {
    EXPECT_EQ(dir.children[i].name, names[i]);
    EXPECT_EQ(dir.children[i].name.size(), names[i].size());
    EXPECT_EQ(dir.find(names[i]), dir.children[i].inode.get());
  }
  Inode copy = dir;
  ASSERT_EQ(copy.children.size(), dir.children.size());
  for (size_t i = 0; i < names.size(); i++) {
    EXPECT_EQ(copy.children[i].name, dir.children[i].name);
    EXPECT_NE(copy.children[i].name.data(), dir.children[i].name.data()) << "copies are deep";
  }
  EXPECT_TRUE(copy.remove_child(names[10]));
  EXPECT_FALSE(copy.remove_child(names[10]));
  EXPECT_EQ(copy.children.size(), names.size() - 1);
  EXPECT_EQ(dir.children.size(), names.size());
  EXPECT_EQ(copy.children[10].name, names[11]);
  EXPECT_EQ(copy.children[10].inode, dir.children[11].inode) << "copies share inodes";
  DirentName long_name(std::string(200, 'x'));
  DirentName moved = std::move(long_name);
  EXPECT_EQ(moved, std::string(200, 'x'));
  EXPECT_TRUE(long_name.empty());
  moved = "short";
  EXPECT_EQ("/" + moved, "/short");

  Inode a;
  a.set_xattr("user.b", std::string("v\0b", 3));
  a.set_xattr("user.a", "1");
  a.xattrs.push_back({"user.c", "3"});
  ASSERT_EQ(a.xattrs.size(), 3u);
  EXPECT_EQ(a.xattrs[0].name, "user.a");
  EXPECT_EQ(a.xattrs[1].value, std::string("v\0b", 3));
  Inode b = a;
  EXPECT_TRUE(b.remove_xattr("user.a"));
  EXPECT_EQ(a.xattrs.size(), 3u);
  EXPECT_EQ(b.xattrs.front().name, "user.b");
  EXPECT_EQ(b.xattrs.back().name, "user.c");
  b.xattrs.clear();
  EXPECT_TRUE(b.xattrs.empty());
  b = a;
  EXPECT_TRUE(b.xattrs == a.xattrs);
}

TEST(ErofsWriter, ReferencedContentChangedAfterParsingIsAnError) {
  test::TempDir dir;
  const std::string path = dir.path() + "/input.dump";
  test::write_file(path, "/ 0 40755 2 0 0 0 0.0 - - -\n/f 5 100644 1 0 0 0 0.0 - hello -\n");
  UniqueFd fd = open_file(path, O_RDONLY);
  Tree tree = parse_dumpfile_fd(fd.get(), path, {.reference_content = true});
  ASSERT_GT(tree.lookup("/f")->content.ref().length, 0u);
  EXPECT_EQ(dumpfile_to_string(tree),
            "/ 0 40755 2 0 0 0 0.0 - - -\n/f 5 100644 1 0 0 0 0.0 - hello -\n");
  test::write_file(path, "/ 0 40755 2 0 0 0 0.0 - - -\n/f 5 100644 1 0 0 0 0.0 - he\\q -\n");
  try {
    image_to_string(tree);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr(path));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("changed after the file was parsed"));
  }
  // Text and pipes are copied: nothing to read back.
  Tree copied = parse_dumpfile("/ 0 40755 2 0 0 0 0.0 - - -\n/f 2 100644 1 0 0 0 0.0 - hi -\n", "t",
                               {.reference_content = true});
  EXPECT_EQ(copied.lookup("/f")->content, "hi");
  EXPECT_FALSE(copied.content_source);
}

// The C test suite's other round trip (composefs-dump): image -> tree (strict reader) ->
// image must give the same bytes.
TEST(ErofsWriter, ReaderRoundTripIsByteIdentical) {
  for (const auto& v : all_vectors()) {
    SCOPED_TRACE(v.row.asset);
    Tree back = Image::from_bytes(v.image, v.row.asset, ReaderOptions::compat()).to_tree();
    std::string again =
        image_to_string(back, {.min_version = v.result.version, .max_version = v.row.max_version});
    EXPECT_TRUE(again == v.image) << "round trip changed the image";
  }
}

TEST(ErofsWriter, DoesNotModifyTheTree) {
  for (const char* asset : {"special.dump", "config-with-hard-link.dump.gz"}) {
    SCOPED_TRACE(asset);
    Tree t = parse_dumpfile(test::read_vector(asset), asset, compat());
    std::string before = dumpfile_to_string(t);
    std::string first = image_to_string(t);
    EXPECT_EQ(dumpfile_to_string(t), before);
    EXPECT_EQ(image_to_string(t), first);
  }
}

TEST(ErofsWriter, StreamsToAFileIdentically) {
  const auto& v = all_vectors().front();
  test::TempDir dir;
  std::string path = dir / "image";
  {
    UniqueFd fd = open_file(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    FdSink sink(fd.get(), path);
    WriteResult r = write_image(
        v.tree, sink, {.min_version = v.row.min_version, .max_version = v.row.max_version});
    sink.flush();
    EXPECT_EQ(r.digest, v.result.digest);
  }
  EXPECT_EQ(read_file(path), v.image);
}

TEST(ErofsWriter, FsckErofsAcceptsEveryImage) {
  if (test::run("command -v fsck.erofs >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "fsck.erofs (erofs-utils) is not installed";
  test::TempDir dir;
  for (const auto& v : all_vectors()) {
    SCOPED_TRACE(v.row.asset);
    std::string path = dir / "image";
    test::write_file(path, v.image);
    std::string output;
    EXPECT_EQ(test::run("fsck.erofs " + path + " 2>&1", &output), 0) << output;
  }
}

// ---- kernel mount -------------------------------------------------------------------------

// Unmounts (lazily, so a failed assertion never leaves a busy mount behind) on scope exit.
class ErofsMount {
 public:
  ErofsMount(const std::string& image, const std::string& dir) : dir_(dir) {
    if (::mount(image.c_str(), dir.c_str(), "erofs", MS_RDONLY, nullptr) != 0) error_ = errno;
  }
  ~ErofsMount() {
    if (error_ == 0) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  ErofsMount(const ErofsMount&) = delete;
  ErofsMount& operator=(const ErofsMount&) = delete;
  int error() const { return error_; }

 private:
  std::string dir_;
  int error_ = 0;
};

// user.* xattrs of path. The VFS refuses to read user.* values on anything but regular
// files and directories (ENODATA), so with with_values=false only the names are listed.
std::map<std::string, std::string> user_xattrs_of(const std::string& path, bool with_values) {
  std::map<std::string, std::string> out;
  std::string names(65536, '\0');
  ssize_t n = llistxattr(path.c_str(), names.data(), names.size());
  if (n < 0) throw_errno("llistxattr " + path);
  for (size_t pos = 0; pos < static_cast<size_t>(n);) {
    std::string name(names.data() + pos);
    pos += name.size() + 1;
    if (!name.starts_with("user.")) continue;
    if (!with_values) {
      out[name] = "";
      continue;
    }
    std::string value(65536, '\0');
    ssize_t len = lgetxattr(path.c_str(), name.c_str(), value.data(), value.size());
    if (len < 0) throw_errno("lgetxattr " + path + " " + name);
    value.resize(static_cast<size_t>(len));
    out[name] = value;
  }
  return out;
}

// Compares what the kernel shows with the source tree; returns the number of entries seen.
size_t check_mounted_tree(const Tree& tree, const std::string& mnt) {
  size_t checked = 0;
  std::map<const Inode*, ino_t> inode_numbers;
  walk(tree, [&](const WalkEntry& e) {
    SCOPED_TRACE(e.path);
    const Inode& in = e.inode;
    const std::string path = mnt + e.path;
    struct stat st {};
    ASSERT_EQ(lstat(path.c_str(), &st), 0) << strerror(errno);
    checked++;
    auto [it, fresh] = inode_numbers.emplace(&in, st.st_ino);
    if (!fresh) {
      EXPECT_EQ(it->second, st.st_ino) << "hardlinks must share an inode";
    }

    const bool whiteout = in.is_whiteout();
    const uint32_t expected_type = whiteout ? S_IFREG : in.type();
    EXPECT_EQ(st.st_mode & S_IFMT, expected_type);
    EXPECT_EQ(st.st_mode & 07777, in.mode & 07777);
    EXPECT_EQ(st.st_uid, in.uid);
    EXPECT_EQ(st.st_gid, in.gid);
    EXPECT_EQ(static_cast<uint64_t>(st.st_mtim.tv_sec), in.mtime_sec);
    EXPECT_EQ(static_cast<uint32_t>(st.st_mtim.tv_nsec), in.mtime_nsec);
    EXPECT_EQ(st.st_nlink, in.is_dir() ? directory_nlink(in) : in.nlink);
    if (in.is_reg() && !whiteout) {
      EXPECT_EQ(static_cast<uint64_t>(st.st_size), in.size);
      if (in.content) {
        EXPECT_EQ(read_file(path), *in.content);
      }
    } else if (in.is_symlink()) {
      std::string target(8192, '\0');
      ssize_t n = readlink(path.c_str(), target.data(), target.size());
      ASSERT_GE(n, 0);
      target.resize(static_cast<size_t>(n));
      EXPECT_EQ(target, in.payload);
    } else if (in.is_device() && !whiteout) {
      // The image stores the low 32 bits of the dumpfile's st_rdev (old 16-bit encoding in
      // the vectors); the kernel decodes them with new_decode_dev.
      const uint32_t raw = static_cast<uint32_t>(in.rdev);
      EXPECT_EQ(major(st.st_rdev), (raw & 0xfff00) >> 8);
      EXPECT_EQ(minor(st.st_rdev), (raw & 0xff) | ((raw >> 12) & 0xfff00));
    }
    if (!in.is_dir() && !in.is_symlink() && (!in.is_reg() || whiteout)) {
      EXPECT_EQ(st.st_size, 0) << "devices, fifos, sockets and whiteouts have no size";
    }

    const bool with_values = S_ISREG(st.st_mode) || S_ISDIR(st.st_mode);
    std::map<std::string, std::string> expected;
    for (const Xattr& x : in.xattrs)
      if (x.name.starts_with("user.")) expected[x.name] = with_values ? x.value : "";
    if (whiteout) expected["user.overlay.whiteout"] = "";
    std::map<std::string, std::string> actual = user_xattrs_of(path, with_values);
    for (const char* marker : {"user.overlay.whiteouts", "user.overlay.opaque"})
      if (in.is_dir() && !expected.contains(marker)) actual.erase(marker);
    EXPECT_EQ(actual, expected);
  });
  return checked;
}

// Odd but accepted input: a device with a size (kept by the lenient parser), and ids, times
// and link counts that only fit the extended inode.
Tree odd_tree() {
  return parse_dumpfile(
      "/ 4096 40755 2 0 0 0 100.5 - - - user.root=r\n"
      "/big-dev 5000000000 20600 1 0 0 1025 100.5 - - -\n"
      "/ids 0 100600 70000 70000 80000 0 100.5 - - - user.a=1 user.b=2\n"
      "/late 3 100644 1 0 0 0 4000000000.999999999 - abc - user.a=1\n"
      "/link 4 120777 1 0 0 0 100.5 abcd - -\n"
      "/sock 0 140755 1 0 0 0 99.0 - - - security.selinux=x\n"
      "/user-esc 0 100644 1 0 0 0 100.5 - - - trusted.overlay.redirect=/x user.k=v\n"
      "/wh 0 20644 1 0 0 0 100.5 - - - user.overlay.whiteout=junk user.keep=1\n",
      "odd", compat());
}

TEST(ErofsWriter, KernelMountShowsTheSourceTree) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting EROFS needs root";
  test::TempDir dir;
  const std::string mnt = dir / "mnt";
  ASSERT_EQ(mkdir(mnt.c_str(), 0755), 0);
  for (const auto& v : all_vectors()) {
    SCOPED_TRACE(v.row.asset);
    const std::string image = dir / "image";
    test::write_file(image, v.image);
    ErofsMount m(image, mnt);
    if (m.error() == ENODEV || m.error() == ENOTBLK)
      GTEST_SKIP() << "kernel lacks file-backed EROFS: " << strerror(m.error());
    ASSERT_EQ(m.error(), 0) << "mount -t erofs: " << strerror(m.error());
    size_t seen = check_mounted_tree(v.tree, mnt);
    EXPECT_GT(seen, 0u);
    // The 256 whiteout stubs that hide the object store's 00..ff directories.
    struct stat st {};
    for (const char* stub : {"00", "7f", "ff"}) {
      const std::string p = mnt + "/" + stub;
      if (v.tree.root->find(stub)) continue;
      ASSERT_EQ(lstat(p.c_str(), &st), 0) << stub;
      EXPECT_TRUE(S_ISCHR(st.st_mode));
      EXPECT_EQ(st.st_rdev, 0u);
    }
  }
}

TEST(ErofsWriter, KernelMountShowsExtendedInodesAndDevices) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting EROFS needs root";
  Tree t = odd_tree();
  test::TempDir dir;
  const std::string mnt = dir / "mnt";
  const std::string image = dir / "image";
  ASSERT_EQ(mkdir(mnt.c_str(), 0755), 0);
  test::write_file(image, image_to_string(t));
  std::string output;
  EXPECT_EQ(test::run("fsck.erofs " + image + " 2>&1", &output), 0) << output;
  ErofsMount m(image, mnt);
  if (m.error() == ENODEV || m.error() == ENOTBLK)
    GTEST_SKIP() << "kernel lacks file-backed EROFS: " << strerror(m.error());
  ASSERT_EQ(m.error(), 0) << "mount -t erofs: " << strerror(m.error());
  EXPECT_EQ(check_mounted_tree(t, mnt), 8u);

  // User trusted.overlay.* xattrs are escaped, so overlayfs never acts on them.
  const std::string esc = mnt + "/user-esc";
  char buf[64];
  ssize_t n = lgetxattr(esc.c_str(), "trusted.overlay.overlay.redirect", buf, sizeof buf);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0))), "/x");
  EXPECT_LT(lgetxattr(esc.c_str(), "trusted.overlay.redirect", buf, sizeof buf), 0);
  // The whiteout became an escaped overlay whiteout; its parent is marked (v1: opaque=x).
  const std::string wh = mnt + "/wh";
  EXPECT_EQ(lgetxattr(wh.c_str(), "trusted.overlay.overlay.whiteout", buf, sizeof buf), 0);
  n = lgetxattr(mnt.c_str(), "trusted.overlay.overlay.opaque", buf, sizeof buf);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0))), "x");
  n = lgetxattr(mnt.c_str(), "trusted.overlay.opaque", buf, sizeof buf);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(std::max<ssize_t>(n, 0))), "y");
}

// A hardlinked inode lives at the BFS slot of its first occurrence in DFS order (/a/deep),
// not of its first occurrence in BFS order (/g): that is where the C tools' dump -> image
// round trip puts it. EROFS reports nids as inode numbers, so the order is observable.
TEST(ErofsWriter, KernelMountPlacesHardlinksAtTheirDfsFirstOccurrence) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting EROFS needs root";
  Tree t = root_only();
  auto f = make_inode(S_IFREG | 0600);
  f->nlink = 3;
  f->size = 5;
  f->content = "hello";
  auto a = t.root->set_child("a", make_inode(S_IFDIR | 0755));
  a->set_child("deep", f);
  t.root->set_child("g", f);
  t.root->set_child("h", make_inode(S_IFIFO | 0644));
  t.root->set_child("z", f);
  test::TempDir dir;
  const std::string mnt = dir / "mnt";
  const std::string image = dir / "image";
  ASSERT_EQ(mkdir(mnt.c_str(), 0755), 0);
  test::write_file(image, image_to_string(t));
  ErofsMount m(image, mnt);
  if (m.error() == ENODEV || m.error() == ENOTBLK)
    GTEST_SKIP() << "kernel lacks file-backed EROFS: " << strerror(m.error());
  ASSERT_EQ(m.error(), 0) << "mount -t erofs: " << strerror(m.error());
  EXPECT_EQ(check_mounted_tree(t, mnt), 6u);
  auto ino = [&](const std::string& p) {
    struct stat st {};
    EXPECT_EQ(lstat((mnt + p).c_str(), &st), 0) << p;
    return st.st_ino;
  };
  EXPECT_EQ(ino("/g"), ino("/a/deep"));
  EXPECT_EQ(ino("/z"), ino("/a/deep"));
  // BFS: /, the root's children (00..9f, a, a0..ff, g, h, z), then a's children. Had /g
  // been the primary, the file would sit between the stubs and /h.
  EXPECT_GT(ino("/a/deep"), ino("/h"));
  EXPECT_GT(ino("/h"), ino("/ff"));
}

// ---- rejected trees ------------------------------------------------------------------------

TEST(ErofsWriter, RejectsHardlinkedDirectories) {
  Tree t = root_only();
  auto d = make_inode(S_IFDIR | 0755);
  t.root->set_child("a", d);
  t.root->set_child("b", d);
  EXPECT_THAT(write_error(t), HasSubstr("/b: directories cannot be hardlinked"));

  Tree loop = root_only();
  auto sub = make_inode(S_IFDIR | 0755);
  loop.root->set_child("sub", sub);
  sub->set_child("up", loop.root);
  EXPECT_THAT(write_error(loop), HasSubstr("/sub/up: directories cannot be hardlinked"));
  sub->children.clear();  // the shared_ptr cycle would leak (LeakSanitizer in the ASan stage)
}

TEST(ErofsWriter, RejectsInvalidModes) {
  Tree t = root_only();
  t.root->set_child("bad", make_inode(0644));
  EXPECT_THAT(write_error(t), HasSubstr("/bad: invalid file type"));

  Tree file_root;
  file_root.root = make_inode(S_IFREG | 0644);
  EXPECT_THAT(write_error(file_root), HasSubstr("/: the root must be a directory"));

  Tree children = root_only();
  auto f = children.root->set_child("f", make_inode(S_IFREG | 0644));
  f->children.push_back({"x", make_inode(S_IFREG | 0644)});
  EXPECT_THAT(write_error(children), HasSubstr("/f: only directories can have children"));
}

TEST(ErofsWriter, RejectsBadNamesAndOrder) {
  Tree t = root_only();
  t.root->children.push_back({"b", make_inode(S_IFREG | 0644)});
  t.root->children.push_back({"a", make_inode(S_IFREG | 0644)});
  EXPECT_THAT(write_error(t), HasSubstr("/a: directory entries are not sorted"));

  for (const char* name : {".", "..", "a/b", ""}) {
    Tree u = root_only();
    u.root->children.push_back({name, make_inode(S_IFREG | 0644)});
    EXPECT_THAT(write_error(u), HasSubstr("composefs image: /")) << name;
  }
}

TEST(ErofsWriter, RejectsXattrsBeyondLimits) {
  auto with_xattr = [](std::string name, std::string value) {
    Tree t = root_only();
    auto f = t.root->set_child("f", make_inode(S_IFREG | 0644));
    f->xattrs.push_back({std::move(name), std::move(value)});
    return t;
  };
  EXPECT_THAT(write_error(with_xattr("", "v")), HasSubstr("/f: xattr name"));
  EXPECT_THAT(write_error(with_xattr("user." + std::string(251, 'k'), "v")),
              HasSubstr("/f: xattr name"));
  EXPECT_EQ(write_error(with_xattr("user." + std::string(250, 'k'), "v")), "");
  EXPECT_THAT(write_error(with_xattr("user.big", std::string(65536, 'v'))),
              HasSubstr("/f: value of xattr 'user.big' is longer than 65535 bytes"));
  // An inode holds at most 12 + 4 * 65534 bytes of xattrs (i_xattr_icount is 16 bits):
  // three 64 KiB values fit, four do not.
  auto with_big_xattrs = [](int n) {
    Tree t = root_only();
    auto f = t.root->set_child("f", make_inode(S_IFREG | 0644));
    for (int i = 0; i < n; i++)
      f->xattrs.push_back({"user.big" + std::to_string(i), std::string(65535, 'a' + i)});
    return t;
  };
  EXPECT_THAT(write_error(with_big_xattrs(4)),
              HasSubstr("/f: xattrs need 262188 bytes, more than the 262148 an inode can hold"));
  std::string image = image_to_string(with_big_xattrs(3));
  test::TempDir dir;
  test::write_file(dir / "image", image);
  std::string output;
  EXPECT_EQ(test::run("fsck.erofs " + (dir / "image") + " 2>&1", &output), 0) << output;
}

TEST(ErofsWriter, RejectsFilesNeedingTooManyChunks) {
  // should-fail-too-big.dump's file (the parser rejects it too); 1024 chunks of 8 TiB is
  // the most a chunk map can hold (bigfile.dump: 9001899274941000 bytes is still fine).
  Tree t = root_only();
  auto f = t.root->set_child("bigfile", make_inode(S_IFREG | 0644));
  f->size = 9500000000000000;
  try {
    image_to_string(t);
    FAIL() << "accepted";
  } catch (const SystemError& e) {
    EXPECT_EQ(e.code(), EFBIG);
    EXPECT_THAT(e.what(), HasSubstr("/bigfile: file size 9500000000000000"));
  }
}

TEST(ErofsWriter, RejectsInconsistentInlineContent) {
  Tree t = root_only();
  auto f = t.root->set_child("f", make_inode(S_IFREG | 0644));
  f->size = 3;
  f->content = "ab";
  EXPECT_THAT(write_error(t), HasSubstr("/f: inline content is 2 bytes"));
  f->size = 6000;
  f->content = std::string(6000, 'x');
  EXPECT_THAT(write_error(t), HasSubstr("exceeds the maximum of 5000"));
}

TEST(ErofsWriter, RejectsUnsupportedVersions) {
  Tree t = root_only();
  EXPECT_THROW(image_to_string(t, {.min_version = 3, .max_version = 3}), Error);
  // V2 is chosen, never reached by raising V0/V1.
  EXPECT_THROW(image_to_string(t, {.min_version = 0, .max_version = 2}), Error);
  EXPECT_THROW(WriterOptions::for_erofs_version(3), Error);
  EXPECT_EQ(WriterOptions::for_erofs_version(2).min_version, 2u);
}

// Prints the write time of the 64k-entry reference tree (speed is judged by bench/erofs.sh).
TEST(ErofsWriter, TimesTheDeveloperImage) {
  const std::string text = test::read_vector("cs9-x86_64-developer.dump.gz");
  Tree t = parse_dumpfile(text, "cs9-developer", compat());
  auto start = std::chrono::steady_clock::now();
  StringSink sink;
  WriteResult r = write_image(t, sink);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  start)
                .count();
  EXPECT_EQ(r.digest->hex(), "c2891b9a6ce8f676ce63aeaeb7df329695db705d5d1a6a8160f8ed3ec188c5ba");
  RecordProperty("write_ms", static_cast<int>(ms));
  std::printf("cs9-x86_64-developer: %zu bytes written in %lld ms\n", sink.str().size(),
              static_cast<long long>(ms));
}

// ---- fidelity with C mkcomposefs 1.0.8 (digests from the C tools built from v1.0.8) --------

std::string c_digest_of(const std::string& dump) {
  return verity_hex(image_to_string(parse_dumpfile(dump, "t.dump", compat())));
}

TEST(ErofsWriterFidelity, TimesBefore1970AndAfter2106AreSignedAsInC) {
  // C reads SEC with strtoull into a signed time_t: -100 and 2^64 - 616 are before 1970, and
  // the smallest (signed) time becomes the build time of the compact inodes.
  const std::string dump =
      "/ 0 40755 2 0 0 0 1000.0 - - -\n"
      "/future 0 100644 1 0 0 0 8589934592.5 - - -\n"
      "/old 0 100644 1 0 0 0 -100.0 - - -\n"
      "/older 0 100644 1 0 0 0 18446744073709551000.7 - - -\n";
  Tree tree = parse_dumpfile(dump, "t.dump", compat());
  EXPECT_EQ(tree.lookup("/old")->mtime_sec, -100);
  EXPECT_EQ(tree.lookup("/older")->mtime_sec, -616);
  EXPECT_EQ(tree.lookup("/future")->mtime_sec, int64_t{1} << 33);
  std::string image = image_to_string(tree);
  EXPECT_EQ(verity_hex(image), "e414d49fece9c8e19fba2cc6509717b2de925c5c858c110d3c13b96897945e1d");

  Image reader = Image::from_bytes(image, "t.cfs");
  Tree back = reader.to_tree();
  EXPECT_EQ(back.lookup("/old")->mtime_sec, -100);
  EXPECT_EQ(back.lookup("/older")->mtime_sec, -616);
  EXPECT_EQ(back.lookup("/older")->mtime_nsec, 7u);
  EXPECT_EQ(back.lookup("/future")->mtime_sec, int64_t{1} << 33);
  std::string text = dumpfile_to_string(back);
  EXPECT_THAT(text, HasSubstr("/old 0 100644 1 0 0 0 -100.0 "));
  EXPECT_THAT(text, HasSubstr("/future 0 100644 1 0 0 0 8589934592.5 "));
  EXPECT_EQ(verity_hex(image_to_string(parse_dumpfile(text, "back.dump", compat()))),
            verity_hex(image));
}

TEST(ErofsWriterFidelity, DeviceWithZeroLow32BitsIsAWhiteoutAsInC) {
  // C keeps st_rdev in 32 bits: rdev 2^32 is 0/0, a whiteout, escaped (and the format moves
  // to version 1); 2^32 + 1 is device 0/1.
  const std::string dump =
      "/ 0 40755 2 0 0 0 0.0 - - -\n"
      "/big 0 20644 1 0 0 4294967296 0.0 - - -\n"
      "/dev 0 20644 1 0 0 4294967297 0.0 - - -\n";
  Tree tree = parse_dumpfile(dump, "t.dump", compat());
  EXPECT_TRUE(tree.lookup("/big")->is_whiteout());
  EXPECT_EQ(tree.lookup("/dev")->rdev, 1u);
  WriteResult result;
  StringSink sink;
  result = write_image(tree, sink);
  EXPECT_EQ(result.version, 1u);
  EXPECT_EQ(result.digest->hex(),
            "afb37eb29a63f142be0c66c3f979fb7b5ca451dbc1710ba221d3331407b731c1");
  // cfs's own strict reader takes what cfs wrote.
  Tree back = Image::from_bytes(sink.str(), "t.cfs").to_tree();
  ASSERT_NE(back.lookup("/big"), nullptr);
  EXPECT_TRUE(back.lookup("/big")->is_whiteout());
  EXPECT_EQ(back.lookup("/dev")->rdev, 1u);
}

TEST(ErofsWriterFidelity, HardlinkedInodeLivesAtItsTargetLineAsInC) {
  // The '@' lines come first in sorted order (as producers writing tar order emit them);
  // C places each inode at its target's line, and the whiteout's markers go to /b.
  const std::string dump =
      "/ 0 40755 3 0 0 0 0.0 - - -\n"
      "/a 0 40755 2 0 0 0 0.0 - - -\n"
      "/a/link 0 @20644 2 0 0 0 0.0 /b/wh - -\n"
      "/a/zz 0 @100644 2 0 0 0 0.0 /b/file - -\n"
      "/b 0 40755 2 0 0 0 0.0 - - -\n"
      "/b/file 5 100644 2 0 0 0 5.0 - hello -\n"
      "/b/wh 0 20644 2 0 0 0 0.0 - - -\n";
  const std::string want = "7c1e41dbd87a69d5ccad24ebf736012271ae4482560e0f491e55c3ef3cd123fd";
  EXPECT_EQ(c_digest_of(dump), want);
  // Writing the parsed tree as a dumpfile keeps the placement: '@' lines stay where they were.
  std::string text = dumpfile_to_string(parse_dumpfile(dump, "t.dump", compat()));
  EXPECT_THAT(text, HasSubstr("/a/link 0 @20644 2 0 0 0 0.0 /b/wh - -\n"));
  EXPECT_THAT(text, HasSubstr("/b/file 5 100644 2 0 0 0 5.0 - hello -\n"));
  EXPECT_EQ(c_digest_of(text), want);
  std::string image = image_to_string(parse_dumpfile(dump, "t.dump", compat()));
  EXPECT_EQ(verity_hex(image_to_string(Image::from_bytes(image, "t.cfs").to_tree())), want);
}

TEST(ErofsWriterFidelity, UpstreamFedoraFuzzDumpMatchesC) {
  // composefs tests/fuzzing/data/fedora: 1360 '@' lines in tar order, some before their
  // targets. C mkcomposefs 1.0.8 --from-file gives this digest (cfs gave e9b55ff4... when it
  // placed each inode at its first name).
  std::string dump = test::read_vector("fuzz-fedora.dump.gz");
  const std::string want = "f49fba9f09997d1379fd2739b4cfdf0d2eeaf875adb868b00d04771e8dfc7a54";
  std::string image = image_to_string(parse_dumpfile(dump, "fedora", compat()));
  EXPECT_EQ(verity_hex(image), want);
  // The reader finds each inode's home from the layout, so image -> tree -> image (and
  // through cfsctl dump's text) gives the same image, which C's own dump round trip does not.
  Tree back = Image::from_bytes(image, "fedora.cfs", ReaderOptions::compat()).to_tree();
  EXPECT_EQ(verity_hex(image_to_string(back)), want);
  EXPECT_EQ(c_digest_of(dumpfile_to_string(back)), want);
}

TEST(ErofsWriterLimits, WhatTheWriterStoresTheReaderTakes) {
  // Directories nested deeper than the reader's limit.
  auto deep = [](uint32_t depth) {
    Tree t = root_only();
    Inode* dir = t.root.get();
    for (uint32_t i = 0; i < depth; i++)
      dir = dir->set_child("d", make_inode(S_IFDIR | 0755)).get();
    return t;
  };
  std::string image = image_to_string(deep(kMaxDirDepth));
  EXPECT_NO_THROW(Image::from_bytes(image, "t.cfs").validate());
  EXPECT_THAT(write_error(deep(kMaxDirDepth + 1)), HasSubstr("nested deeper than 2048 levels"));

  // trusted.overlay.* names are stored 8 bytes longer (escaped): 247 bytes is the most.
  auto overlay_xattr = [](size_t length) {
    Tree t = root_only();
    auto f = t.root->set_child("f", make_inode(S_IFREG | 0644));
    std::string name = "trusted.overlay.";
    name += std::string(length - name.size(), 'k');
    f->xattrs.push_back({name, "v"});
    return t;
  };
  image = image_to_string(overlay_xattr(kOverlayXattrNameMax));
  EXPECT_NO_THROW(Image::from_bytes(image, "t.cfs").validate());
  for (size_t length : {size_t{248}, size_t{255}})
    EXPECT_THAT(write_error(overlay_xattr(length)), HasSubstr("must be 1 to 247 bytes")) << length;
  std::string line =
      "/f 0 100644 1 0 0 0 0.0 - - - trusted.overlay." + std::string(234, 'k') + "=v\n";
  EXPECT_THROW(parse_dumpfile("/ 0 40755 2 0 0 0 0.0 - - -\n" + line, "t.dump"), Error);
}

}  // namespace
}  // namespace cfs::erofs
