// Hostile input for the FUSE server: redirects that try to leave the object directory,
// missing, tampered, resized or planted objects, and corrupt metadata. Each must end in EIO
// or a refusal to mount, never in data from outside or a crash.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <random>
#include <set>

#include "cfs/erofs/dumpfile.h"
#include "cfs/erofs/reader.h"
#include "cfs/erofs/writer.h"
#include "cfs/fd.h"
#include "cfs/fsverity.h"
#include "cfs/fuse/image_fs.h"
#include "cfs/kernel_verity.h"
#include "fuse_helpers.h"
#include "testdata.h"

namespace cfs::test {
namespace {

void require_fuse() {
  if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/fuse is not usable here";
}

// Adds an external file: its data is content, its redirect names payload (default: the
// object path of content's digest) and its metacopy carries digest (default: the real one).
Digest add_external(erofs::Tree& tree, const std::string& name, const std::string& content,
                    std::optional<std::string> payload = std::nullopt,
                    std::optional<Digest> digest = std::nullopt) {
  Digest real = fsverity_digest(content);
  auto f = erofs::make_inode(S_IFREG | 0644);
  f->size = content.size();
  f->digest = digest ? *digest : real;
  f->payload = payload ? *payload : real.object_path();
  tree.root->set_child(name, f);
  return real;
}

void store_object(const std::string& objects, const Digest& d, const std::string& content) {
  ::mkdir((objects + "/" + d.object_path().substr(0, 2)).c_str(), 0755);
  write_file(objects + "/" + d.object_path(), content);
}

std::string read_or_errno(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "open:" + std::string(strerrorname_np(errno));
  UniqueFd owner(fd);
  try {
    return read_fd(fd, path);
  } catch (const SystemError& e) {
    return "read:" + std::string(strerrorname_np(e.code()));
  }
}

// Replaces the single occurrence of from (same length as to) in the file.
void patch_file(const std::string& path, const std::string& from, const std::string& to) {
  ASSERT_EQ(from.size(), to.size());
  std::string bytes = read_file(path);
  size_t pos = bytes.find(from);
  ASSERT_NE(pos, std::string::npos) << "pattern not in " << path;
  ASSERT_EQ(bytes.find(from, pos + 1), std::string::npos) << "pattern not unique";
  bytes.replace(pos, from.size(), to);
  write_file(path, bytes);
}

std::string content_of(int i) {
  return "object number " + std::to_string(i) + "\n" + std::string(200, char('a' + i));
}

TEST(FuseHostile, ObjectsAreServedOnlyWhenNamedVerifiedAndBeneathTheDirectory) {
  require_fuse();
  TempDir dir;
  std::string objects = dir / "objects", outside = dir / "outside";
  ASSERT_EQ(::mkdir(objects.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(outside.c_str(), 0755), 0);
  erofs::Tree tree;

  Digest good = add_external(tree, "good", content_of(0));
  store_object(objects, good, content_of(0));
  add_external(tree, "missing", content_of(1));
  Digest tampered = add_external(tree, "tampered", content_of(2));
  std::string evil = content_of(2);
  evil[5] ^= 1;  // same size, other bytes
  store_object(objects, tampered, evil);
  Digest resized = add_external(tree, "resized", content_of(3));
  store_object(objects, resized, content_of(3) + "tail");
  // The whole first-level directory is a symlink to a directory outside, holding the
  // correct object: still refused (RESOLVE_NO_SYMLINKS).
  Digest via_dir_link = add_external(tree, "via-dir-link", content_of(4));
  std::string prefix = via_dir_link.object_path().substr(0, 2);
  ASSERT_EQ(::mkdir((outside + "/" + prefix).c_str(), 0755), 0);
  write_file(outside + "/" + via_dir_link.object_path(), content_of(4));
  ASSERT_EQ(::symlink((outside + "/" + prefix).c_str(), (objects + "/" + prefix).c_str()), 0);
  Digest via_file_link = add_external(tree, "via-file-link", content_of(5));
  write_file(outside + "/target", content_of(5));
  ::mkdir((objects + "/" + via_file_link.object_path().substr(0, 2)).c_str(), 0755);
  ASSERT_EQ(::symlink((outside + "/target").c_str(),
                      (objects + "/" + via_file_link.object_path()).c_str()),
            0);
  // A FIFO where the object should be: must not hang a server thread.
  Digest fifo = add_external(tree, "fifo", content_of(6));
  ::mkdir((objects + "/" + fifo.object_path().substr(0, 2)).c_str(), 0755);
  ASSERT_EQ(::mkfifo((objects + "/" + fifo.object_path()).c_str(), 0644), 0);
  // A redirect that is a plain path, not an object name, to a file that exists.
  write_file(objects + "/plain-file", content_of(7));
  add_external(tree, "plain-path", content_of(7), std::string("plain-file"));
  // The metacopy digest and the redirect name disagree (both objects exist).
  Digest other = fsverity_digest(content_of(8));
  store_object(objects, other, content_of(8));
  add_external(tree, "digest-mismatch", content_of(8), std::nullopt, good);

  std::string image = dir / "image.cfs";
  write_image_file(tree, image);
  ASSERT_EQ(::mkdir((dir / "mnt").c_str(), 0755), 0);
  FuseProcess fuse({image, dir / "mnt", "-f", "--basedir", objects}, dir / "mnt", dir / "log");
  ASSERT_TRUE(fuse.wait_mounted()) << fuse.log();

  EXPECT_EQ(read_or_errno(dir / "mnt/good"), content_of(0));
  for (auto name : {"missing", "tampered", "resized", "via-dir-link", "via-file-link", "fifo",
                    "plain-path", "digest-mismatch"}) {
    EXPECT_EQ(read_or_errno(dir / ("mnt/" + std::string(name))), "open:EIO") << name;
    // Metadata stays available.
    struct stat st;
    EXPECT_EQ(::stat((dir / ("mnt/" + std::string(name))).c_str(), &st), 0) << name;
  }
  // Tampering after a successful read is noticed at the next open (the object's ctime moved).
  std::string tamper_later = objects + "/" + good.object_path();
  std::string bad = content_of(0);
  bad[0] ^= 1;
  write_file(tamper_later, bad);
  EXPECT_EQ(read_or_errno(dir / "mnt/good"), "open:EIO");

  std::string log = fuse.log();
  EXPECT_NE(log.find("fs-verity digest does not match"), std::string::npos) << log;
  EXPECT_NE(log.find("not a lowercase hex object path"), std::string::npos) << log;
  EXPECT_NE(log.find("not a regular file"), std::string::npos) << log;
  EXPECT_NE(log.find("cannot open"), std::string::npos) << log;
  // The server is still healthy and exits cleanly.
  ASSERT_EQ(run_argv({"fusermount3", "-u", dir / "mnt"}), 0);
  EXPECT_EQ(fuse.wait_exit(), 0) << fuse.log();
}

// The guarantee is "verified at open" (README, fuse/README.md, cfs-fuse(1)): an object file
// changed in place after a verified open is served, changed, to that open handle, because
// the server (or, with passthrough, the kernel) reads the object it opened; only the next
// open notices. Objects with kernel fs-verity (every object of a secure repository) cannot
// change. This test pins the documented behaviour of the server path.
TEST(FuseHostile, ObjectsAreVerifiedAtOpenNotOnEveryRead) {
  require_fuse();
  TempDir dir;
  std::string objects = dir / "objects";
  ASSERT_EQ(::mkdir(objects.c_str(), 0755), 0);
  erofs::Tree tree;
  // Large enough that reading the first page does not read ahead to the last one.
  const std::string content(8 << 20, 'v');
  Digest d = add_external(tree, "big", content);
  store_object(objects, d, content);
  std::string image = dir / "image.cfs";
  write_image_file(tree, image);
  ASSERT_EQ(::mkdir((dir / "mnt").c_str(), 0755), 0);
  FuseProcess fuse({image, dir / "mnt", "-f", "--no-passthrough", "--basedir", objects},
                   dir / "mnt", dir / "log");
  ASSERT_TRUE(fuse.wait_mounted()) << fuse.log();

  UniqueFd handle(::open((dir / "mnt/big").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_GE(handle.get(), 0);
  char buf[4096];
  ASSERT_EQ(::pread(handle.get(), buf, sizeof buf, 0), ssize_t(sizeof buf));
  EXPECT_EQ(std::string(buf, sizeof buf), std::string(sizeof buf, 'v'));

  // Changed in place after the verified open.
  {
    UniqueFd object(::open((objects + "/" + d.object_path()).c_str(), O_WRONLY | O_CLOEXEC));
    ASSERT_GE(object.get(), 0);
    const std::string changed(sizeof buf, 'X');
    ASSERT_EQ(
        ::pwrite(object.get(), changed.data(), changed.size(), off_t(content.size() - sizeof buf)),
        ssize_t(changed.size()));
  }
  ASSERT_EQ(::pread(handle.get(), buf, sizeof buf, off_t(content.size() - sizeof buf)),
            ssize_t(sizeof buf));
  EXPECT_EQ(std::string(buf, sizeof buf), std::string(sizeof buf, 'X'))
      << "the open handle is served the object's current bytes";
  // A new open verifies again and refuses the changed object.
  EXPECT_EQ(read_or_errno(dir / "mnt/big"), "open:EIO");
  handle.reset();
  ASSERT_EQ(run_argv({"fusermount3", "-u", dir / "mnt"}), 0);
  EXPECT_EQ(fuse.wait_exit(), 0) << fuse.log();
}

TEST(FuseHostile, RefusesImagesThatFailValidation) {
  TempDir dir;
  ASSERT_EQ(::mkdir((dir / "mnt").c_str(), 0755), 0);
  erofs::Tree tree;
  // A redirect climbing out of the object directory, planted by patching a harmless one.
  std::string fake = "zz/" + std::string(20, 'q');
  add_external(tree, "escape", content_of(1), fake);
  std::string image = dir / "escape.cfs";
  write_image_file(tree, image);
  patch_file(image, "/" + fake, "/../../../etc/" + std::string(10, 'q'));
  std::string out;
  EXPECT_EQ(run_argv({cfs_fuse_binary(), image, dir / "mnt", "-f"}, &out), 1);
  EXPECT_NE(out.find(image), std::string::npos) << out;
  EXPECT_FALSE(is_mounted(dir / "mnt"));

  // Not an EROFS image at all.
  std::string bad_magic = dir / "magic.cfs";
  write_image_file(tree, bad_magic);
  std::string bytes = read_file(bad_magic);
  bytes[1024] ^= 0xff;  // EROFS superblock magic
  write_file(bad_magic, bytes);
  EXPECT_EQ(run_argv({cfs_fuse_binary(), bad_magic, dir / "mnt", "-f"}, &out), 1);
  EXPECT_NE(out.find("magic"), std::string::npos) << out;
  EXPECT_FALSE(is_mounted(dir / "mnt"));
}

// The image file truncated under a running server: reads of the lost pages would raise
// SIGBUS; the server must answer EIO instead, stay up, and unmount cleanly.
TEST(FuseHostile, TruncatedImageGivesEioNotACrash) {
  require_fuse();
  TempDir dir;
  ASSERT_EQ(::mkdir((dir / "mnt").c_str(), 0755), 0);
  erofs::Tree tree;
  for (int i = 0; i < 40; i++) {
    auto f = erofs::make_inode(S_IFREG | 0644);
    f->content = "inline data " + std::to_string(i);
    f->size = f->content->size();
    tree.root->set_child("f" + std::to_string(i), f);
  }
  std::string image = dir / "image.cfs";
  write_image_file(tree, image);
  FuseProcess server({image, dir / "mnt", "-f"}, dir / "mnt", dir / "log");
  ASSERT_TRUE(server.wait_mounted()) << server.log();
  EXPECT_EQ(read_or_errno(dir / "mnt/f1"), "inline data 1");

  ASSERT_EQ(::truncate(image.c_str(), 0), 0);
  // Nothing of the image is cached for f7 yet: its lookup has to touch the lost pages.
  EXPECT_EQ(read_or_errno(dir / "mnt/f7"), "open:EIO");
  EXPECT_TRUE(is_mounted(dir / "mnt")) << "the server died: " << server.log();
  EXPECT_NE(server.log().find("truncated"), std::string::npos) << "log: " << server.log();
  ASSERT_EQ(run_argv({"fusermount3", "-u", dir / "mnt"}), 0);
  EXPECT_EQ(server.wait_exit(), 0) << server.log();
}

// The library over randomly corrupted images, without validate(): every call returns 0 or
// an errno, nothing crashes or hangs.
TEST(FuseHostile, CorruptMetadataGivesErrorsNotCrashes) {
  erofs::Tree base = erofs::parse_dumpfile(read_vector("special.dump"), "special.dump",
                                           {.strict = true, .max_symlink = 4095});
  std::string image = erofs::image_to_string(base);
  std::mt19937_64 rng(7);
  size_t opened = 0, eio = 0;
  for (int round = 0; round < 400; round++) {
    std::string bytes = image;
    int flips = 1 + int(rng() % 8);
    for (int i = 0; i < flips; i++) {
      // Mostly metadata (superblock, inodes, xattrs, directory blocks).
      size_t pos = 1024 + rng() % (bytes.size() - 1024);
      bytes[pos] = static_cast<char>(rng());
    }
    std::optional<erofs::Image> img;
    try {
      img.emplace(erofs::Image::from_bytes(bytes, "fuzz", erofs::ReaderOptions::compat()));
    } catch (const Error&) {
      continue;  // refused at open: fine
    }
    opened++;
    fuse::ImageFs fs(std::move(*img), nullptr, [&](const std::string&) { eio++; });
    std::set<uint64_t> seen;
    std::vector<uint64_t> todo = {fuse::kRootIno};
    while (!todo.empty() && seen.size() < 2000) {
      uint64_t ino = todo.back();
      todo.pop_back();
      if (!seen.insert(ino).second) continue;
      struct stat st;
      if (fs.getattr(ino, st) != 0) continue;
      std::string names, value;
      if (fs.listxattr(ino, names) == 0)
        for (size_t p = 0; p < names.size(); p += strlen(names.c_str() + p) + 1)
          (void)fs.getxattr(ino, names.c_str() + p, value);
      std::string_view target;
      (void)fs.readlink(ino, target);
      std::unique_ptr<fuse::FileHandle> file;
      if (S_ISREG(st.st_mode) && fs.open(ino, O_RDONLY, file) == 0) {
        std::vector<std::span<const std::byte>> pieces;
        (void)fs.read_inline(*file, 0, 1 << 20, pieces);
      }
      std::unique_ptr<fuse::DirStream> d;
      if (S_ISDIR(st.st_mode) && fs.opendir(ino, d) == 0) {
        for (bool plus : {false, true}) {
          (void)fs.readdir(*d, 0, plus, [&](const fuse::DirItem& item) {
            struct stat cst;
            (void)fs.lookup(ino, item.name, cst);
            todo.push_back(item.ino);
            return true;
          });
        }
      }
    }
  }
  EXPECT_GT(opened, 100u);  // most corruptions get past the superblock
  EXPECT_GT(eio, 0u);       // and some are met lazily, as EIO
}

TEST(FuseHostile, VerdictsAreCachedPerObjectVersion) {
  TempDir dir;
  ASSERT_EQ(::mkdir((dir / "objects").c_str(), 0755), 0);
  std::string content(100000, 'v');
  Digest d = fsverity_digest(content);
  store_object(dir / "objects", d, content);
  fuse::ObjectStore store(open_file(dir / "objects", O_PATH | O_DIRECTORY), dir / "objects",
                          fuse::VerityPolicy::userspace);
  for (int i = 0; i < 3; i++) EXPECT_TRUE(store.open("/" + d.object_path(), d, content.size()));
  EXPECT_EQ(store.digests_computed(), 1u);
  // A rewrite with the same bytes is a new version: checked again, and still good.
  write_file(dir / "objects/" + d.object_path(), content);
  EXPECT_TRUE(store.open("/" + d.object_path(), std::nullopt, content.size()));
  EXPECT_EQ(store.digests_computed(), 2u);
  EXPECT_THROW(store.open("/" + d.object_path(), std::nullopt, content.size() + 1),
               fuse::ObjectError);
  EXPECT_THROW(store.open(d.object_path(), std::nullopt, content.size()), fuse::ObjectError);
  // A secure repository accepts only kernel fs-verity, which this file does not have.
  fuse::ObjectStore secure(open_file(dir / "objects", O_PATH | O_DIRECTORY), dir / "objects",
                           fuse::VerityPolicy::kernel);
  if (!measure_verity(open_file(dir / "objects/" + d.object_path(), O_RDONLY).get(), "object")) {
    EXPECT_THROW(secure.open("/" + d.object_path(), d, content.size()), fuse::ObjectError);
  }
}

// Lazy pulls' pending redirects (cfs/oci/lazy.h): refused as any non-object path by a store
// without a resolver; with one, opened through the object it names, verified as usual.
TEST(FuseHostile, PendingRedirectsNeedAResolverAndAreVerifiedLikeObjects) {
  TempDir dir;
  ASSERT_EQ(::mkdir((dir / "objects").c_str(), 0755), 0);
  std::string content(5000, 'p');
  Digest d = fsverity_digest(content);
  store_object(dir / "objects", d, content);
  const std::string hex(64, 'a');
  const std::string pending = std::string(fuse::kPendingRedirectPrefix) + hex;
  fuse::ObjectStore plain(open_file(dir / "objects", O_PATH | O_DIRECTORY), dir / "objects",
                          fuse::VerityPolicy::userspace);
  EXPECT_THROW(plain.open(pending, std::nullopt, content.size()), fuse::ObjectError);

  fuse::ObjectStore store(open_file(dir / "objects", O_PATH | O_DIRECTORY), dir / "objects",
                          fuse::VerityPolicy::userspace);
  std::vector<std::string> asked;
  Digest answer = d;
  store.set_pending_resolver([&](std::string_view h) {
    asked.emplace_back(h);
    if (h != hex) throw Error("usr/lib/x: content hashes to something else (corrupt or tampered)");
    return PendingAnswer{answer, nullptr};
  });
  EXPECT_TRUE(store.open(pending, std::nullopt, content.size()));
  EXPECT_EQ(asked, std::vector<std::string>{hex});
  // The resolver's failure is an ObjectError carrying its message (logged, EIO to the reader).
  try {
    store.open(std::string(fuse::kPendingRedirectPrefix) + std::string(64, 'b'), std::nullopt,
               content.size());
    ADD_FAILURE() << "a failing resolver was not reported";
  } catch (const fuse::ObjectError& e) {
    EXPECT_NE(std::string(e.what()).find("usr/lib/x"), std::string::npos) << e.what();
  }
  // The object it names is still checked: size, and fs-verity digest against the name.
  EXPECT_THROW(store.open(pending, std::nullopt, content.size() + 1), fuse::ObjectError);
  write_file(dir / "objects/" + d.object_path(), std::string(5000, 'q'));
  EXPECT_THROW(store.open(pending, std::nullopt, content.size()), fuse::ObjectError);
  // A metacopy digest never comes with a pending redirect.
  EXPECT_THROW(store.open(pending, d, content.size()), fuse::ObjectError);
}

// A pending content served before it is local (a lazy pull's large file, fetched chunk by
// chunk): the open gets the resolver's file instead of an object, its size checked; every read
// asks it for the range first, and a failure is EIO with one log line naming the file.
TEST(FuseHostile, PendingFilesAreReadOnlyThroughEnsure) {
  struct Chunks : PendingFile {
    UniqueFd file;
    std::vector<std::pair<uint64_t, uint64_t>> asked;
    int fd() const noexcept override { return file.get(); }
    void ensure(uint64_t offset, uint64_t length) override {
      asked.emplace_back(offset, length);
      if (offset >= 8192) throw Error("usr/lib/big: chunk 2 hashes to x (corrupt or tampered)");
      std::string data(length, 'c');
      ASSERT_EQ(::pwrite(file.get(), data.data(), data.size(), static_cast<off_t>(offset)),
                static_cast<ssize_t>(length));
    }
  };
  const std::string hex(64, 'c');
  std::string dump = "/ 0 40755 2 0 0 0 0.0 - - -\n/big 12288 100644 1 0 0 0 0.0 " +
                     std::string(fuse::kPendingRedirectPrefix.substr(1)) + hex + " - -\n";
  erofs::ReaderOptions options;
  options.object_redirects_only = false;
  erofs::Image image = erofs::Image::from_bytes(
      erofs::image_to_string(erofs::parse_dumpfile(dump, "t.dump")), "t.cfs", options);
  TempDir dir;
  ASSERT_EQ(::mkdir((dir / "objects").c_str(), 0755), 0);
  auto chunks = std::make_shared<Chunks>();
  chunks->file = UniqueFd(::memfd_create("chunks", MFD_CLOEXEC));
  ASSERT_EQ(::ftruncate(chunks->file.get(), 12288), 0);
  auto store = std::make_unique<fuse::ObjectStore>(open_file(dir / "objects", O_PATH | O_DIRECTORY),
                                                   dir / "objects", fuse::VerityPolicy::userspace);
  store->set_pending_resolver([&](std::string_view h) {
    if (h != hex) throw Error("not pending");
    return PendingAnswer{std::nullopt, chunks};
  });
  // Without a place for the file, such an answer is refused; with a wrong size, too.
  EXPECT_THROW(store->open(std::string(fuse::kPendingRedirectPrefix) + hex, std::nullopt, 12288),
               fuse::ObjectError);
  std::shared_ptr<PendingFile> got;
  EXPECT_THROW(
      store->open(std::string(fuse::kPendingRedirectPrefix) + hex, std::nullopt, 4096, &got),
      fuse::ObjectError);
  EXPECT_FALSE(got);

  std::vector<std::string> logged;
  fuse::ImageFs fs(std::move(image), std::move(store),
                   [&](const std::string& line) { logged.push_back(line); });
  struct stat st;
  ASSERT_EQ(fs.lookup(fuse::kRootIno, "big", st), 0);
  std::unique_ptr<fuse::FileHandle> file;
  ASSERT_EQ(fs.open(st.st_ino, O_RDONLY, file), 0);
  EXPECT_FALSE(file->object);
  ASSERT_EQ(file->pending, chunks);
  EXPECT_EQ(fs.ensure(*file, 4096, 4096), 0);
  EXPECT_EQ(chunks->asked, (std::vector<std::pair<uint64_t, uint64_t>>{{4096, 4096}}));
  EXPECT_TRUE(logged.empty());
  EXPECT_EQ(fs.ensure(*file, 8192, 4096), EIO);
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_NE(logged[0].find("usr/lib/big"), std::string::npos) << logged[0];
}

// A directory's overlay marker xattrs are the user's unless the directory holds a whiteout;
// that answer is computed once per directory (getxattr scanned all 500k entries of a huge
// directory on every call; bench/fuse-xattr.sh times it).
TEST(FuseXattrs, MarkerXattrsOfLargeDirectoriesAreAnsweredConsistently) {
  std::string dump =
      "/ 0 40755 4 0 0 0 0.0 - - -\n"
      "/big 0 40755 2 0 0 0 0.0 - - - trusted.overlay.whiteouts= user.x=1\n";
  for (int i = 0; i < 20000; i++)
    dump += "/big/f" + std::to_string(100000 + i) + " 0 100644 1 0 0 0 0.0 - - -\n";
  dump +=
      "/wh 0 40755 2 0 0 0 0.0 - - - trusted.overlay.whiteouts= user.x=2\n"
      "/wh/gone 0 20644 1 0 0 0 0.0 - - -\n";
  erofs::Image image = erofs::Image::from_bytes(
      erofs::image_to_string(erofs::parse_dumpfile(dump, "t.dump")), "t.cfs");
  fuse::ImageFs fs(std::move(image), nullptr, nullptr);
  struct stat big {
  }, wh{};
  ASSERT_EQ(fs.lookup(fuse::kRootIno, "big", big), 0);
  ASSERT_EQ(fs.lookup(fuse::kRootIno, "wh", wh), 0);
  for (int round = 0; round < 200; round++) {
    std::string value = "unset";
    ASSERT_EQ(fs.getxattr(big.st_ino, "trusted.overlay.whiteouts", value), 0) << round;
    EXPECT_EQ(value, "");
    ASSERT_EQ(fs.getxattr(big.st_ino, "user.x", value), 0);
    EXPECT_EQ(value, "1");
    // /wh holds a whiteout: the marker is composefs's own, the user's value was replaced.
    EXPECT_EQ(fs.getxattr(wh.st_ino, "trusted.overlay.whiteouts", value), ENODATA) << round;
    ASSERT_EQ(fs.getxattr(wh.st_ino, "user.x", value), 0);
    EXPECT_EQ(value, "2");
  }
  std::string names;
  ASSERT_EQ(fs.listxattr(big.st_ino, names), 0);
  // In stored order (inline xattrs first).
  EXPECT_EQ(names, std::string("user.x\0trusted.overlay.whiteouts\0", 33));
}

}  // namespace
}  // namespace cfs::test
