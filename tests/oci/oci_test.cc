// OCI pull into a repository: every source kind and compression, layer merge rules,
// verification failures that must leave nothing named, hostile layers, shared layers and
// garbage collection, the boot image, and a kernel mount of a pulled image.
#include <gtest/gtest.h>

#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>

#include "cfs/erofs/dumpfile.h"
#include "cfs/erofs/writer.h"
#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/oci/oci.h"
#include "cfs/output.h"
#include "cfs/store/fsck.h"
#include "cfs/store/gc.h"
#include "cfs/store/repository.h"
#include "oci_fixture.h"
#include "testdata.h"

namespace cfs::test::oci {
namespace {

namespace fs = std::filesystem;
namespace so = cfs::oci;
using store::Repository;

store::Repository make_repo(const std::string& path) {
  store::InitOptions o;
  o.insecure = true;
  return Repository::init(path, o);
}

size_t count_files(const std::string& dir) {
  if (!fs::exists(dir)) return 0;
  size_t n = 0;
  for (auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file() || e.is_symlink()) ++n;
  return n;
}

std::set<std::string> stream_names(const Repository& repo) {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(repo.path() + "/streams")) {
    std::string name = e.path().filename();
    if (name != "refs" && !name.starts_with('.')) out.insert(name);
  }
  return out;
}

std::string xattr_value(const erofs::Inode* inode, std::string_view name) {
  if (!inode) return "<no inode>";
  const erofs::Xattr* x = inode->find_xattr(name);
  return x ? x->value : "<none>";
}

// Every path the tree describes is in the mount with its type, mode, size, link count and
// exactly the bytes of its inline content or its repository object.
void expect_mount_matches(const Repository& repo, const erofs::Tree& tree, const std::string& mnt) {
  size_t checked = 0;
  erofs::walk(tree, [&](const erofs::WalkEntry& e) {
    std::string p = mnt + e.path;
    struct stat st;
    ASSERT_EQ(::lstat(p.c_str(), &st), 0) << p;
    EXPECT_EQ(st.st_mode, e.inode.mode) << p;
    if (e.inode.is_reg()) {
      EXPECT_EQ(static_cast<uint64_t>(st.st_size), e.inode.size) << p;
      std::string data = read_file(p);
      std::string want;
      if (e.inode.content) {
        want = *e.inode.content;
      } else if (e.inode.digest) {
        UniqueFd fd = repo.open_object(*e.inode.digest);
        want = read_fd(fd.get(), e.path);
      }
      EXPECT_TRUE(data == want) << p;
      EXPECT_EQ(st.st_nlink, e.inode.nlink) << p;
      ++checked;
    } else if (e.inode.is_dir()) {
      size_t entries = 0;
      for ([[maybe_unused]] auto& c : fs::directory_iterator(p)) ++entries;
      EXPECT_EQ(entries, e.inode.children.size()) << p;
    } else if (e.inode.is_symlink()) {
      EXPECT_EQ(fs::read_symlink(p).string(), e.inode.payload) << p;
    }
  });
  EXPECT_GT(checked, 5u);
}

class OciTest : public ::testing::Test {
 protected:
  TempDir tmp;
  std::string layout = tmp / "layout";
  std::string repo_path = tmp / "repo";
};

TEST_F(OciTest, PullBaseImageMergesLayersAsComposefsRs) {
  LayoutBuilder b(layout);
  auto layers = base_image_layers();
  BuiltImage img = b.add_image(layers, "base");
  Repository repo = make_repo(repo_path);
  so::PullResult r = so::pull(repo, "oci:" + layout + ":base", "base");
  EXPECT_EQ(r.manifest_digest, img.manifest_digest);
  EXPECT_EQ(r.layers, 5u);
  EXPECT_EQ(r.layers_imported, 5u);

  // Each layer stream reproduces the uncompressed tar byte for byte.
  for (size_t i = 0; i < layers.size(); ++i) {
    StringSink s;
    repo.cat_stream("oci-layer-" + img.diff_ids[i], s);
    EXPECT_TRUE(s.str() == layers[i].tar) << "layer " << i;
  }

  erofs::Tree t = so::image_tree(repo, "base", false);
  EXPECT_EQ(t.lookup("/etc/hostname"), nullptr) << "whiteout";
  ASSERT_NE(t.lookup("/etc/motd"), nullptr);
  const erofs::Inode* doc = t.lookup("/usr/share/doc");
  ASSERT_NE(doc, nullptr);
  EXPECT_EQ(doc->children.size(), 1u) << "opaque dir keeps only the upper layer's entries";
  EXPECT_NE(t.lookup("/usr/share/doc/NEW"), nullptr);
  EXPECT_EQ(doc->mode, S_IFDIR | 0755u) << "most-derived directory metadata";
  EXPECT_EQ(t.lookup("/usr/lib")->mtime_sec, 1700000001u);
  const erofs::Inode* libc = t.lookup("/usr/lib/libc.so.6");
  EXPECT_EQ(libc, t.lookup("/usr/lib/libm.so.6")) << "hardlinks share the inode";
  EXPECT_EQ(libc->nlink, 2u);
  EXPECT_EQ(libc->mtime_nsec, 250000000u) << "PAX nanosecond mtime";
  EXPECT_EQ(t.lookup("/usr/lib/libc-link.so.6")->nlink, 1u);
  const erofs::Inode* ping = t.lookup("/usr/bin/ping");
  EXPECT_EQ(xattr_value(ping, "security.capability").size(), 20u);
  EXPECT_EQ(xattr_value(ping, "user.note"), "<none>") << "xattr allowlist";
  EXPECT_TRUE(t.lookup("/run")->children.empty()) << "/run emptied";
  EXPECT_EQ(t.lookup("/run")->mtime_sec, t.lookup("/usr")->mtime_sec);
  EXPECT_EQ(t.root->mode, t.lookup("/usr")->mode);
  EXPECT_EQ(t.root->mtime_sec, t.lookup("/usr")->mtime_sec);
  EXPECT_EQ(t.lookup("/usr/share/null")->rdev, makedev(1, 3));
  EXPECT_EQ(t.lookup("/usr/share/fifo")->type(), static_cast<uint32_t>(S_IFIFO));
  EXPECT_EQ(t.lookup("/usr/share/doc/tiny"), nullptr) << "removed by the opaque dir";
  ASSERT_NE(t.lookup("/usr/share/zero"), nullptr);
  EXPECT_EQ(t.lookup("/usr/share/zero")->size, 0u);
  EXPECT_TRUE(t.lookup("/var/lib/app.db")->is_external());
  EXPECT_EQ(t.lookup("/var/lib/app.db")->uid, 1000u);
  EXPECT_EQ(t.lookup("/bin")->payload, "usr/bin");

  // The stored image is the V1 EROFS of exactly this tree, and the named refs lead to it.
  StringSink img_bytes;
  erofs::write_image(t, img_bytes, erofs::WriterOptions{1, 1});
  EXPECT_EQ(fsverity_digest(img_bytes.str(), repo.algorithm()), r.image_id);
  EXPECT_EQ(so::image_id(repo, "base"), r.image_id);
  EXPECT_EQ(so::image_id(repo, "@" + img.manifest_digest), r.image_id);
  EXPECT_TRUE(repo.resolve_image(r.image_id.hex()));
  EXPECT_THROW(so::image_id(repo, "base", true), Error) << "no boot image without --bootable";

  EXPECT_TRUE(store::fsck(repo).ok());
  auto report = so::fsck_images(repo, std::nullopt);
  EXPECT_TRUE(report.ok()) << (report.errors.empty() ? "" : report.errors[0]);
  EXPECT_EQ(report.images_checked, 1u);

  // Same config bytes stored; manifest stream names the config stream.
  EXPECT_EQ(so::config_json(repo, "base"), read_file(b.blob_path(img.config_digest)));
  auto summary = so::inspect(repo, "base");
  EXPECT_EQ(summary.layers, 5u);
  EXPECT_EQ(summary.config_digest, img.config_digest);
  ASSERT_EQ(so::list_images(repo).size(), 1u);

  // A second pull imports nothing.
  so::PullResult again = so::pull(repo, "oci:" + layout + ":base", "base2");
  EXPECT_EQ(again.layers_imported, 0u);
  EXPECT_EQ(again.image_id, r.image_id);
}

TEST_F(OciTest, EveryCompressionGivesTheSameImage) {
  LayoutBuilder b(layout);
  auto layers = base_image_layers();
  std::optional<Digest> first;
  int n = 0;
  for (Compression c : {Compression::none, Compression::gzip, Compression::gzip_multimember,
                        Compression::zstd, Compression::zstd_chunked}) {
    auto ls = layers;
    for (auto& l : ls) l.compression = c;
    b.add_image(ls, "c" + std::to_string(n));
    TempDir r;
    Repository repo = make_repo(r / "repo");
    so::PullResult res = so::pull(repo, "oci:" + layout + ":c" + std::to_string(n), std::nullopt);
    if (!first) first = res.image_id;
    EXPECT_EQ(res.image_id, *first) << "compression " << n;
    EXPECT_EQ(res.tag, "oci:" + layout + ":c" + std::to_string(n)) << "default tag = source";
    ++n;
  }
}

TEST_F(OciTest, EverySourceKindGivesTheSameImage) {
  LayoutBuilder b(layout);
  auto layers = base_image_layers();
  b.add_image(layers, "base");
  Repository repo = make_repo(repo_path);
  Digest id = so::pull(repo, "oci:" + layout + ":base", "dir").image_id;

  write_dir_archive(layout, tmp / "oci.tar");
  EXPECT_EQ(so::pull(repo, "oci-archive:" + tmp / "oci.tar" + ":base", "archive").image_id, id);
  write_docker_archive(tmp / "docker.tar", layers, "example/base:1");
  so::PullResult d = so::pull(repo, "docker-archive:" + tmp / "docker.tar", "docker");
  EXPECT_EQ(d.image_id, id);
  // A compressed archive is decompressed as it is read.
  ASSERT_EQ(run("gzip -k '" + tmp / "docker.tar" + "'"), 0);
  EXPECT_EQ(so::pull(repo, "docker-archive:" + tmp / "docker.tar.gz", "dockergz").image_id, id);
  // The skopeo proxy (same protocol as composefs-rs/bootc), pointed at the local layout.
  so::PullResult s = so::pull(repo, "skopeo:oci:" + layout + ":base", "proxy");
  EXPECT_EQ(s.image_id, id);
  EXPECT_EQ(so::list_images(repo).size(), 5u);
  EXPECT_TRUE(so::fsck_images(repo, std::nullopt).ok());
}

class OciFailureTest : public OciTest {
 protected:
  // The pull fails with a message containing want, and nothing is named afterwards.
  void expect_refused(const std::string& source, const std::string& want) {
    Repository repo = Repository::open(repo_path);
    try {
      so::pull(repo, source, "t");
      ADD_FAILURE() << source << ": pull succeeded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
    EXPECT_TRUE(stream_names(repo).empty()) << source;
    EXPECT_TRUE(so::list_images(repo).empty());
    EXPECT_EQ(count_files(repo_path + "/streams/refs"), 0u);
  }
  void SetUp() override { make_repo(repo_path); }
};

TEST_F(OciFailureTest, TamperedCompressedBlob) {
  LayoutBuilder b(layout);
  BuiltImage img = b.add_image(base_image_layers(), "x");
  std::string blob = read_file(b.blob_path(img.layer_digests[2]));
  blob[blob.size() / 2] ^= 1;
  write_file(b.blob_path(img.layer_digests[2]), blob);
  expect_refused("oci:" + layout + ":x", "");
}

// A corrupt compressed archive is refused and leaves no temporary files: it is decompressed
// as it is read, never unpacked (an earlier version left /var/tmp/cfs-archive-* behind).
TEST_F(OciFailureTest, CorruptCompressedArchiveLeavesNoTemporaryDirectory) {
  auto cfs_entries = [](const std::string& dir) {
    std::set<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(dir))
      if (e.path().filename().string().starts_with("cfs-")) out.insert(e.path());
    return out;
  };
  LayoutBuilder b(layout);
  b.add_image(base_image_layers(), "x");
  write_dir_archive(layout, tmp / "oci.tar");
  ASSERT_EQ(run("gzip '" + tmp / "oci.tar" + "'"), 0);
  std::string gz = read_file(tmp / "oci.tar.gz");
  for (size_t i = gz.size() / 3; i < gz.size() / 3 + 64; ++i) gz[i] = static_cast<char>(~gz[i]);
  write_file(tmp / "oci.tar.gz", gz);

  std::filesystem::create_directories(tmp / "tmpdir");
  const char* old_tmpdir = std::getenv("TMPDIR");
  const std::string saved = old_tmpdir ? old_tmpdir : "";
  ::setenv("TMPDIR", (tmp / "tmpdir").c_str(), 1);
  const std::set<std::string> var_tmp_before = cfs_entries("/var/tmp");
  expect_refused("oci-archive:" + tmp / "oci.tar.gz" + ":x", "");
  const std::set<std::string> var_tmp_after = cfs_entries("/var/tmp");
  old_tmpdir ? ::setenv("TMPDIR", saved.c_str(), 1) : ::unsetenv("TMPDIR");
  EXPECT_EQ(count_files(tmp / "tmpdir"), 0u);
  EXPECT_TRUE(std::filesystem::is_empty(tmp / "tmpdir"));
  for (const std::string& entry : var_tmp_after)
    EXPECT_TRUE(var_tmp_before.count(entry)) << entry << " appeared during the pull";
}

TEST_F(OciFailureTest, TamperedUncompressedLayerWithValidBlobDigest) {
  // A blob whose compressed digest is right but whose content is not what the config's
  // diff_id promises: only the diff_id check catches it.
  LayoutBuilder b(layout);
  auto layers = base_image_layers();
  std::vector<std::string> diff_ids;
  for (auto& l : layers) diff_ids.push_back(sha256(l.tar));
  diff_ids[1] = sha256("something else");
  b.add_image(layers, "x", diff_ids);
  expect_refused("oci:" + layout + ":x", "diff_id");
}

TEST_F(OciFailureTest, CompressedDigestMismatch) {
  LayoutBuilder b(layout);
  auto layers = base_image_layers();
  BuiltImage img = b.add_image(layers, "x");
  // Replace the blob with another valid gzip of the same tar (different bytes, same
  // diff_id): only the compressed digest check catches it.
  std::string other = compress(layers[0].tar + std::string(1024, '\0'), Compression::gzip);
  write_file(b.blob_path(img.layer_digests[0]), other);
  expect_refused("oci:" + layout + ":x", "blob");
}

TEST_F(OciFailureTest, TruncatedBlob) {
  LayoutBuilder b(layout);
  BuiltImage img = b.add_image(base_image_layers(), "x");
  std::string blob = read_file(b.blob_path(img.layer_digests[1]));
  write_file(b.blob_path(img.layer_digests[1]), blob.substr(0, blob.size() / 2));
  expect_refused("oci:" + layout + ":x", "layer " + img.layer_digests[1]);
}

TEST_F(OciFailureTest, ManifestNamesMissingBlob) {
  LayoutBuilder b(layout);
  BuiltImage img = b.add_image(base_image_layers(), "x");
  fs::remove(b.blob_path(img.layer_digests[3]));
  expect_refused("oci:" + layout + ":x", "missing");
}

TEST_F(OciFailureTest, MissingConfigAndUnknownRef) {
  LayoutBuilder b(layout);
  BuiltImage img = b.add_image(base_image_layers(), "x");
  expect_refused("oci:" + layout + ":nope", "no image named 'nope'");
  fs::remove(b.blob_path(img.config_digest));
  expect_refused("oci:" + layout + ":x", "missing");
}

struct HostileCase {
  const char* name;
  std::vector<RawEntry> entries;
  const char* error;
};

TEST_F(OciFailureTest, HostileLayers) {
  const std::vector<HostileCase> cases = {
      {"dotdot", {{"./etc", '5'}, {"./etc/../../escape", '0', "", "x"}}, "'..'"},
      {"absolute", {{"/etc", '5'}, {"/etc/passwd", '0', "", "x"}}, "absolute"},
      {"through-symlink",
       {{"./usr", '5'}, {"./evil", '2', "/etc"}, {"./evil/passwd", '0', "", "x"}},
       "goes through the symlink /evil"},
      {"hardlink-outside", {{"./a", '0', "", "x"}, {"./b", '1', "../../etc/shadow"}}, "'..'"},
      {"hardlink-missing", {{"./a", '0', "", "x"}, {"./b", '1', "./nothere"}}, "does not exist"},
      {"hardlink-dir", {{"./d", '5'}, {"./b", '1', "./d"}}, "is a directory"},
      {"missing-parent", {{"./no/such/dir/file", '0', "", "x"}}, "does not exist"},
  };
  int n = 0;
  for (const HostileCase& c : cases) {
    SCOPED_TRACE(c.name);
    std::string dir = tmp / ("hostile" + std::to_string(n++));
    LayoutBuilder b(dir);
    b.add_image({Layer{tar_from_entries(c.entries), Compression::gzip}}, "h");
    expect_refused("oci:" + dir + ":h", c.error);
  }
}

TEST_F(OciFailureTest, NotATarLayer) {
  LayoutBuilder b(layout);
  b.add_image({Layer{std::string(2048, 'z'), Compression::gzip}}, "x");
  expect_refused("oci:" + layout + ":x", "checksum");
}

// Two bootable versions and the base image in one repository: shared layers stored once,
// untag + gc keeps the rest whole, untag everything + gc empties the repository.
TEST_F(OciTest, SharedLayersAndGarbageCollection) {
  LayoutBuilder b(layout);
  BuiltImage base = b.add_image(base_image_layers(), "base");
  BuiltImage v1 = b.add_image(bootable_image_layers(1), "os:1");
  BuiltImage v2 = b.add_image(bootable_image_layers(2), "os:2");
  std::set<std::string> distinct(v1.diff_ids.begin(), v1.diff_ids.end());
  distinct.insert(v2.diff_ids.begin(), v2.diff_ids.end());
  ASSERT_EQ(v1.diff_ids.size(), 20u);
  ASSERT_EQ(distinct.size(), 23u) << "v1 and v2 differ in 3 layers";

  Repository repo = make_repo(repo_path);
  so::PullOptions boot;
  boot.bootable = true;
  so::pull(repo, "oci:" + layout + ":base", "base");
  so::PullResult r1 = so::pull(repo, "oci:" + layout + ":os:1", "os:1", boot);
  so::PullResult r2 = so::pull(repo, "oci:" + layout + ":os:2", "os:2", boot);
  EXPECT_EQ(r1.layers_imported, 15u) << "the 5 base layers are already there";
  EXPECT_EQ(r2.layers_imported, 3u);
  size_t layer_streams = 0;
  for (const auto& s : stream_names(repo)) layer_streams += s.starts_with("oci-layer-");
  EXPECT_EQ(layer_streams, 23u);
  ASSERT_TRUE(r2.boot_image_id);
  EXPECT_NE(r1.image_id, r2.image_id);

  // The boot image: /boot and /sysroot emptied, labels from the image's own policy.
  erofs::Tree boot_tree = so::image_tree(repo, "os:2", true);
  EXPECT_TRUE(boot_tree.lookup("/boot")->children.empty());
  EXPECT_TRUE(boot_tree.lookup("/sysroot")->children.empty());
  EXPECT_EQ(boot_tree.lookup("/boot")->mtime_sec, boot_tree.lookup("/usr")->mtime_sec);
  EXPECT_EQ(xattr_value(boot_tree.lookup("/usr/bin/sh"), "security.selinux"),
            "system_u:object_r:bin_t:s0");
  EXPECT_EQ(xattr_value(boot_tree.lookup("/etc/motd"), "security.selinux"),
            "system_u:object_r:etc_t:s0");
  EXPECT_EQ(xattr_value(boot_tree.lookup("/usr/lib/modules/6.1.0-2/vmlinuz"), "security.selinux"),
            "system_u:object_r:modules_object_t:s0");
  EXPECT_EQ(xattr_value(boot_tree.lookup("/tmp"), "security.selinux"), "<none>");
  EXPECT_EQ(xattr_value(boot_tree.lookup("/var/lib/app.db"), "security.selinux"),
            "system_u:object_r:default_t:s0");
  StringSink boot_bytes;
  erofs::write_image(boot_tree, boot_bytes, erofs::WriterOptions{1, 1});
  EXPECT_EQ(fsverity_digest(boot_bytes.str(), repo.algorithm()), *r2.boot_image_id);
  EXPECT_EQ(so::image_id(repo, "os:2", true), *r2.boot_image_id);
  // The non-boot image still has its /boot content.
  EXPECT_NE(so::image_tree(repo, "os:2", false).lookup("/boot/EFI/Linux/cfs-6.1.0-2.efi"), nullptr);

  std::string dump_v2 = erofs::dumpfile_to_string(so::image_tree(repo, "os:2", true));
  size_t objects_all = count_files(repo_path + "/objects");

  so::untag_image(repo, "os:1");
  store::GcResult g1 = store::collect_garbage(repo);
  EXPECT_GT(g1.objects_removed, 0u) << "v1's kernel, initramfs, UKI and images go";
  EXPECT_LT(count_files(repo_path + "/objects"), objects_all);
  EXPECT_TRUE(store::fsck(repo).ok());
  EXPECT_TRUE(so::fsck_images(repo, std::nullopt).ok());
  EXPECT_EQ(erofs::dumpfile_to_string(so::image_tree(repo, "os:2", true)), dump_v2);
  EXPECT_EQ(so::image_id(repo, "os:2"), r2.image_id);
  EXPECT_TRUE(repo.resolve_image(r2.image_id.hex()));
  EXPECT_TRUE(repo.resolve_image(r2.boot_image_id->hex()));
  EXPECT_FALSE(repo.resolve_image(r1.image_id.hex()));
  layer_streams = 0;
  for (const auto& s : stream_names(repo)) layer_streams += s.starts_with("oci-layer-");
  EXPECT_EQ(layer_streams, 20u);
  // Every object the surviving images need is still there.
  for (const auto& tag : {"os:2", "base"}) {
    erofs::walk(so::image_tree(repo, tag, false), [&](const erofs::WalkEntry& e) {
      if (e.inode.digest) {
        EXPECT_TRUE(repo.has_object(*e.inode.digest)) << e.path;
      }
    });
  }

  so::untag_image(repo, "os:2");
  so::untag_image(repo, "base");
  EXPECT_THROW(so::untag_image(repo, "base"), Error);
  store::collect_garbage(repo);
  EXPECT_EQ(count_files(repo_path + "/objects"), 0u);
  EXPECT_TRUE(stream_names(repo).empty());
  EXPECT_TRUE(repo.list_images().empty());
  (void)base;
}

TEST_F(OciTest, TagAndUntag) {
  LayoutBuilder b(layout);
  BuiltImage img = b.add_image(base_image_layers(), "base");
  Repository repo = make_repo(repo_path);
  so::pull(repo, "oci:" + layout + ":base", "registry.example/a/b:1");
  so::tag_image(repo, img.manifest_digest, "other/name%x");
  so::tag_image(repo, "registry.example/a/b:1", "third");
  auto list = so::list_images(repo);
  ASSERT_EQ(list.size(), 3u);
  std::set<std::string> tags;
  for (auto& s : list) tags.insert(s.tag);
  EXPECT_TRUE(tags.contains("other/name%x"));
  EXPECT_TRUE(fs::is_symlink(repo_path + "/streams/refs/oci/registry.example%2Fa%2Fb:1"));
  EXPECT_TRUE(fs::is_symlink(repo_path + "/streams/refs/oci/other%2Fname%25x"));
  EXPECT_THROW(so::tag_image(repo, img.manifest_digest, "@bad"), Error);
  EXPECT_THROW(so::tag_image(repo, "sha256:" + std::string(64, '0'), "x"), Error);
  so::untag_image(repo, "third");
  EXPECT_EQ(so::list_images(repo).size(), 2u);
}

TEST_F(OciTest, KernelMountShowsExactlyTheLayers) {
  if (::geteuid() != 0) GTEST_SKIP() << "kernel mounts need root";
  std::string cfsctl = std::string(CFS_BINDIR) + "/cfsctl";
  std::string mounter = std::string(CFS_BINDIR) + "/cfs-mount";
  if (::access(mounter.c_str(), X_OK) != 0) GTEST_SKIP() << "cfs-mount not built";
  LayoutBuilder b(layout);
  b.add_image(bootable_image_layers(1), "os");
  {
    Repository repo = make_repo(repo_path);
    so::PullOptions o;
    o.bootable = true;
    so::pull(repo, "oci:" + layout + ":os", "os", o);
  }
  for (bool bootable : {false, true}) {
    std::string mnt = tmp / (bootable ? "mnt-boot" : "mnt");
    fs::create_directory(mnt);
    std::string out;
    ASSERT_EQ(run(cfsctl + " --repo " + repo_path + " oci mount os " + mnt +
                      (bootable ? " --bootable" : "") + " 2>&1",
                  &out),
              0)
        << out;
    {
      Repository repo = Repository::open(repo_path);
      expect_mount_matches(repo, so::image_tree(repo, "os", bootable), mnt);
    }
    // Files the fixture generated have the generator's bytes in the mount.
    EXPECT_TRUE(read_file(mnt + "/usr/lib/modules/6.1.0-1/kernel/fs.ko") ==
                file_content("/usr/lib/modules/6.1.0-1/kernel/fs.ko", 40000));
    if (bootable) {
      char label[256] = {};
      ssize_t n =
          ::lgetxattr((mnt + "/usr/bin/sh").c_str(), "security.selinux", label, sizeof label);
      // Without SELinux in the kernel the label is still stored and readable.
      if (n > 0) {
        EXPECT_EQ(std::string(label, static_cast<size_t>(n)).substr(0, 26),
                  "system_u:object_r:bin_t:s0");
      }
    }
    ASSERT_EQ(::umount2(mnt.c_str(), MNT_DETACH), 0);
  }
}

// cfsctl oci mount --overlay hands the mount to cfs-fuse --overlay: the command after -- runs
// in the namespace where the overlay is, reading what the image holds.
TEST_F(OciTest, OverlayMountRunsTheCommandWhereTheMountIs) {
  std::string cfsctl = std::string(CFS_BINDIR) + "/cfsctl";
  if (::access((std::string(CFS_BINDIR) + "/cfs-fuse").c_str(), X_OK) != 0)
    GTEST_SKIP() << "cfs-fuse not built";
  if (::access("/dev/fuse", R_OK | W_OK) != 0) GTEST_SKIP() << "/dev/fuse is not usable here";
  if (run("unshare -Urm sh -c 'cd \"$(mktemp -d)\" && mount -t tmpfs t . && mkdir l d m && "
          "mount -t overlay o -o ro,userxattr,lowerdir+=l,datadir+=d m' 2>&1") != 0)
    GTEST_SKIP() << "no rootless overlayfs with data-only layers here";
  LayoutBuilder b(layout);
  b.add_image(bootable_image_layers(1), "os");
  {
    Repository repo = make_repo(repo_path);
    so::pull(repo, "oci:" + layout + ":os", "os", {});
  }
  std::string mnt = tmp / "mnt";
  fs::create_directory(mnt);
  std::string out;
  ASSERT_EQ(run(cfsctl + " --repo " + repo_path + " oci mount os " + mnt + " --overlay -- " +
                    "sha256sum " + mnt + "/usr/lib/modules/6.1.0-1/kernel/fs.ko 2>&1",
                &out),
            0)
      << out;
  EXPECT_NE(out.find(sha256_hex(file_content("/usr/lib/modules/6.1.0-1/kernel/fs.ko", 40000))),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("verified"), std::string::npos) << out;
  // Nothing is left mounted here: the mount lived in the command's namespace.
  EXPECT_NE(run("mountpoint -q " + mnt), 0);
  // The overlay options need --overlay.
  EXPECT_NE(
      run(cfsctl + " --repo " + repo_path + " oci mount os " + mnt + " --upper " + mnt + " 2>&1",
          &out),
      0);
  EXPECT_NE(out.find("need --overlay"), std::string::npos) << out;
}

TEST_F(OciTest, CliPullImagesGc) {
  std::string cfsctl = std::string(CFS_BINDIR) + "/cfsctl";
  LayoutBuilder b(layout);
  BuiltImage img = b.add_image(base_image_layers(), "base");
  std::string out;
  ASSERT_EQ(run(cfsctl + " --repo " + repo_path + " init --insecure >/dev/null"), 0);
  ASSERT_EQ(
      run(cfsctl + " --repo " + repo_path + " oci pull oci:" + layout + ":base mytag 2>&1", &out),
      0)
      << out;
  EXPECT_NE(out.find("manifest " + img.manifest_digest), std::string::npos) << out;
  EXPECT_NE(out.find("[5/5]"), std::string::npos) << "plain progress lines off a terminal";
  ASSERT_EQ(run(cfsctl + " --repo " + repo_path + " oci images --json", &out), 0);
  EXPECT_NE(out.find("\"mytag\""), std::string::npos) << out;
  std::string id;
  ASSERT_EQ(run(cfsctl + " --repo " + repo_path + " oci image-id mytag", &id), 0);
  EXPECT_EQ(id.size(), 129u) << id;
  ASSERT_EQ(run(cfsctl + " --repo " + repo_path + " oci fsck mytag", &out), 0) << out;
  EXPECT_NE(out.find("status: ok"), std::string::npos);
  ASSERT_EQ(run(cfsctl + " --repo " + repo_path + " oci inspect mytag --config", &out), 0);
  EXPECT_EQ(out, read_file(b.blob_path(img.config_digest)) + "\n");
  // The summary embeds the stored documents byte for byte (no re-serialisation), and is JSON.
  ASSERT_EQ(run(cfsctl + " --repo " + repo_path + " oci inspect mytag", &out), 0);
  EXPECT_NE(out.find("\"config_json\": " + read_file(b.blob_path(img.config_digest)) + "\n}"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("\"manifest_json\": " + read_file(b.blob_path(img.manifest_digest)) + ","),
            std::string::npos)
      << out;
  nlohmann::json summary = nlohmann::json::parse(out);
  EXPECT_EQ(summary["tag"], "mytag");
  EXPECT_EQ(summary["config_json"],
            nlohmann::json::parse(read_file(b.blob_path(img.config_digest))));
  EXPECT_NE(run(cfsctl + " --repo " + repo_path + " oci pull oci:" + layout + ":nosuch 2>&1", &out),
            0);
  EXPECT_NE(out.find("no image named 'nosuch'"), std::string::npos) << out;
  ASSERT_EQ(run(cfsctl + " --repo " + repo_path + " oci untag mytag"), 0);
  ASSERT_EQ(run(cfsctl + " --repo " + repo_path + " gc >/dev/null"), 0);
  EXPECT_EQ(count_files(repo_path + "/objects"), 0u);
}

// composefs-rs' spellings: oci compute-id (also of a boot image never stored), oci dump,
// oci layer, prepare-boot of an image pulled without --bootable (the boot image is built and
// the boot directory created, as composefs-rs does), pull --expected-digest, and cfs-fuse
// given an OCI tag.
TEST_F(OciTest, CliComposefsRsOciCommands) {
  std::string cfsctl = std::string(CFS_BINDIR) + "/cfsctl --repo " + repo_path + " ";
  LayoutBuilder b(layout);
  auto layers = bootable_image_layers(1);
  layers.pop_back();  // the UKI: cfs writes BLS entries only
  BuiltImage img = b.add_image(layers, "os");
  std::string out;
  ASSERT_EQ(run(cfsctl + "init --insecure --algorithm=fsverity-sha256-12 >/dev/null"), 0);
  ASSERT_EQ(run(cfsctl + "oci pull -q oci:" + layout + ":os t 2>&1", &out), 0) << out;
  std::string stored, computed, boot, dump, stored_dump;
  ASSERT_EQ(run(cfsctl + "oci image-id t", &stored), 0);
  ASSERT_EQ(run(cfsctl + "oci compute-id t", &computed), 0);
  EXPECT_EQ(computed, stored);
  ASSERT_EQ(run(cfsctl + "oci compute-id --bootable @" + img.manifest_digest, &boot), 0);
  EXPECT_EQ(trim(boot).size(), 64u) << boot;
  EXPECT_NE(run(cfsctl + "oci image-id --bootable t 2>&1", &out), 0) << "not stored yet";

  ASSERT_EQ(run(cfsctl + "oci dump t", &dump), 0);
  ASSERT_EQ(run(cfsctl + "dump " + trim(stored), &stored_dump), 0);
  // The same entries as the stored image's dump; directories show size 0, as composefs-rs'
  // dumps of a tree do (an image's dump shows the EROFS directory size).
  std::istringstream lines(stored_dump);
  std::string normalized;
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::string path, size, mode;
    fields >> path >> size >> mode;
    bool dir =
        !mode.empty() && mode[0] != '@' && (std::stoul(mode, nullptr, 8) & S_IFMT) == S_IFDIR;
    if (dir) line = path + " 0 " + line.substr(path.size() + size.size() + 2);
    normalized += line + "\n";
  }
  if (dump != normalized) {
    test::write_file(tmp / "a", dump);
    test::write_file(tmp / "b", normalized);
    std::string diff;
    run("diff " + tmp / "a" + " " + tmp / "b" + " | head -20", &diff);
    ADD_FAILURE() << "oci dump differs from the dump of the stored image:\n" << diff;
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    ASSERT_EQ(run(cfsctl + "oci layer " + img.diff_ids[i] + " > " + tmp / "layer.tar"), 0);
    EXPECT_TRUE(read_file(tmp / "layer.tar") == layers[i].tar) << "layer " << i;
  }
  EXPECT_NE(run(cfsctl + "oci layer sha256:" + std::string(64, '0') + " >/dev/null 2>&1"), 0);

  // oci layer --json / --dumpfile, and oci import-layer of the same tars into another
  // repository: the same layer streams (same object ids), the same tars back.
  const std::string other = std::string(CFS_BINDIR) + "/cfsctl --repo " + (tmp / "imported") + " ";
  ASSERT_EQ(run(other + "init --insecure --algorithm=fsverity-sha256-12 >/dev/null"), 0);
  for (size_t i = 0; i < layers.size(); ++i) {
    SCOPED_TRACE("layer " + std::to_string(i));
    ASSERT_EQ(run(cfsctl + "oci layer --json " + img.diff_ids[i], &out), 0) << out;
    nlohmann::json info = nlohmann::json::parse(out);
    EXPECT_EQ(info["diffId"], img.diff_ids[i]);
    EXPECT_EQ(info["size"], layers[i].tar.size());
    EXPECT_EQ(info["splitstream"]["inlineSize"].get<uint64_t>() +
                  info["splitstream"]["externalSize"].get<uint64_t>(),
              layers[i].tar.size());
    std::string dump;
    ASSERT_EQ(run(cfsctl + "oci layer --dumpfile " + img.diff_ids[i], &dump), 0);
    EXPECT_EQ(std::count(dump.begin(), dump.end(), '\n'), info["entryCount"].get<long>());
    std::string listing;
    test::write_file(tmp / "layer.tar", layers[i].tar);
    ASSERT_EQ(run("tar -tvf " + tmp / "layer.tar" + " 2>/dev/null", &listing), 0);
    EXPECT_EQ(std::count(listing.begin(), listing.end(), '\n'), info["entryCount"].get<long>());
    size_t links = 0, external = 0;
    std::istringstream lines(dump);
    for (std::string line; std::getline(lines, line);) {
      EXPECT_TRUE(line.starts_with("/.")) << line;  // the tar's "./" names, made absolute
      links += line.find(" 0 @120000 - - - - 0.0 /") != std::string::npos;
      std::istringstream fields(line);
      std::string path, size, mode, nlink, uid, gid, rdev, mtime, payload, content, digest;
      fields >> path >> size >> mode >> nlink >> uid >> gid >> rdev >> mtime >> payload >>
          content >> digest;
      if (digest != "-") {
        ++external;
        EXPECT_EQ(payload, digest.substr(0, 2) + "/" + digest.substr(2));
        EXPECT_TRUE(fs::exists(repo_path + "/objects/" + payload)) << line;
      }
    }
    size_t tar_links = 0;
    std::istringstream tar_lines(listing);
    for (std::string line; std::getline(tar_lines, line);) tar_links += line.starts_with('h');
    EXPECT_EQ(links, tar_links);
    EXPECT_EQ(external > 0, info["splitstream"]["externalSize"].get<uint64_t>() > 0);

    ASSERT_EQ(run(other + "oci import-layer " + img.diff_ids[i] + " layer" + std::to_string(i) +
                      " < " + tmp / "layer.tar",
                  &out),
              0)
        << out;
    EXPECT_EQ(trim(out), "sha256:" + info["verity"].get<std::string>());
    EXPECT_TRUE(fs::is_symlink(tmp / "imported/streams/refs/layer" + std::to_string(i)));
    ASSERT_EQ(run(other + "oci layer " + img.diff_ids[i] + " > " + tmp / "back.tar"), 0);
    EXPECT_TRUE(read_file(tmp / "back.tar") == layers[i].tar);
  }
  // A tar whose sha256 is not the diff_id it is given is refused, and nothing is named.
  const std::string wrong = "sha256:" + std::string(64, 'a');
  EXPECT_EQ(run(other + "oci import-layer " + wrong + " < " + tmp / "layer.tar" + " 2>&1", &out), 1)
      << out;
  EXPECT_NE(out.find("not the diff_id " + wrong), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(tmp / "imported/streams/oci-layer-" + wrong));

  const std::string efi = tmp / "efi";
  ASSERT_EQ(run(cfsctl + "oci prepare-boot t --bootdir " + efi + " --entry-id=example --cmdline rw",
                &out),
            0)
      << out;
  ASSERT_EQ(run(cfsctl + "oci image-id --bootable t", &out), 0) << out;
  EXPECT_EQ(out, boot) << "prepare-boot stored the boot image compute-id computed";
  std::string entry = read_file(efi + "/loader/entries/example.conf");
  EXPECT_NE(entry.find("composefs.digest=?v1-sha256-12:" + trim(boot) + " rw"), std::string::npos)
      << entry;

  ASSERT_EQ(run(cfsctl + "oci pull -q --bootable --expected-digest " + trim(boot) +
                    " oci:" + layout + ":os t 2>&1",
                &out),
            0)
      << out;
  EXPECT_NE(
      out.find("Boot image: " + trim(boot) + " (xattr-mode=allowlist-only, format-version=V1)"),
      std::string::npos)
      << out;
  EXPECT_NE(run(cfsctl + "oci pull -q --bootable --expected-digest " + std::string(64, 'a') +
                    " oci:" + layout + ":os t 2>&1",
                &out),
            0);
  EXPECT_NE(out.find("no boot image configuration matched expected digest"), std::string::npos)
      << out;
  EXPECT_NE(
      run(cfsctl + "oci pull -q --expected-digest " + trim(boot) + " oci:" + layout + ":os t 2>&1",
          &out),
      0)
      << "--expected-digest needs --bootable";
  ASSERT_EQ(run(cfsctl + "oci fsck t", &out), 0) << out;

  // mount NAME MNT with a writable upper layer (kernel, as root), as composefs-rs' mount.
  if (::geteuid() == 0 && ::access((std::string(CFS_BINDIR) + "/cfs-mount").c_str(), X_OK) == 0) {
    for (const char* d : {"m-rw", "up", "wk"}) fs::create_directory(tmp / d);
    ASSERT_EQ(run(cfsctl + "mount " + trim(stored) + " " + tmp / "m-rw" + " --upperdir " +
                      tmp / "up" + " --workdir " + tmp / "wk" + " --read-write 2>&1",
                  &out),
              0)
        << out;
    test::write_file(tmp / "m-rw/written", "x");
    EXPECT_TRUE(fs::exists(tmp / "up/written")) << "the write went to the upper directory";
    EXPECT_TRUE(fs::exists(tmp / "m-rw/usr/lib/modules/6.1.0-1/vmlinuz"));
    ASSERT_EQ(::umount2((tmp / "m-rw").c_str(), MNT_DETACH), 0);
    EXPECT_NE(run(cfsctl + "mount " + trim(stored) + " " + tmp / "m-rw" + " --fuse yes" +
                      " --upperdir " + tmp / "up" + " --workdir " + tmp / "wk" + " 2>&1",
                  &out),
              0);
    EXPECT_NE(out.find("cfs-fuse serves images read-only"), std::string::npos) << out;
    EXPECT_NE(run(cfsctl + "mount nosuch " + tmp / "m-rw" + " 2>&1", &out), 0);
    EXPECT_NE(out.find("no image named 'nosuch'"), std::string::npos) << out;
  }

  // cfs-fuse --repo R TAG mounts the image 'cfsctl oci mount' would.
  std::string fuse = std::string(CFS_BINDIR) + "/cfs-fuse";
  if (::access(fuse.c_str(), X_OK) != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0) return;
  std::string mnt = tmp / "mnt";
  fs::create_directory(mnt);
  ASSERT_EQ(run(fuse + " --repo " + repo_path + " t " + mnt + " 2>&1", &out), 0) << out;
  {
    Repository repo = Repository::open(repo_path);
    expect_mount_matches(repo, so::image_tree(repo, "t", false), mnt);
  }
  ASSERT_EQ(::umount2(mnt.c_str(), MNT_DETACH), 0);
  EXPECT_NE(run(fuse + " --repo " + repo_path + " nosuch " + mnt + " 2>&1", &out), 0);
  EXPECT_NE(out.find("no image tagged 'nosuch'"), std::string::npos) << out;
}

// composefs-rs' oci copy --from: the image copied from repository A into B has the same image
// id, B passes fsck and oci fsck, and its image dumps and mounts. A corrupt object of the
// source is refused with nothing tagged; repositories of different algorithms are refused.
TEST_F(OciTest, CliCopyFromAnotherRepository) {
  const std::string bin = std::string(CFS_BINDIR) + "/cfsctl --repo ";
  const std::string a = bin + repo_path + " ", b = bin + (tmp / "b") + " ";
  LayoutBuilder builder(layout);
  BuiltImage img = builder.add_image(base_image_layers(), "base");
  std::string out, id_a, id_b;
  ASSERT_EQ(run(a + "init --insecure >/dev/null"), 0);
  ASSERT_EQ(run(b + "init --insecure >/dev/null"), 0);
  ASSERT_EQ(run(a + "oci pull -q oci:" + layout + ":base t 2>&1", &out), 0) << out;
  ASSERT_EQ(run(b + "oci copy --from " + repo_path + " t --name copied 2>&1", &out), 0) << out;
  EXPECT_NE(out.find("tagged as copied"), std::string::npos) << out;
  ASSERT_EQ(run(a + "oci image-id t", &id_a), 0);
  ASSERT_EQ(run(b + "oci image-id copied", &id_b), 0);
  EXPECT_EQ(id_a, id_b);
  ASSERT_EQ(run(b + "fsck 2>&1", &out), 0) << out;
  ASSERT_EQ(run(b + "oci fsck copied 2>&1", &out), 0) << out;
  EXPECT_NE(out.find("status: ok"), std::string::npos) << out;
  std::string dump_a, dump_b;
  ASSERT_EQ(run(a + "oci dump t", &dump_a), 0);
  ASSERT_EQ(run(b + "oci dump copied", &dump_b), 0);
  EXPECT_EQ(dump_a, dump_b);
  // gc keeps everything the tag reaches: nothing of the copy was left unnamed.
  ASSERT_EQ(run(b + "gc 2>&1", &out), 0) << out;
  ASSERT_EQ(run(b + "oci fsck copied 2>&1", &out), 0) << out;
  // A second copy (by manifest digest, untagged as in composefs-rs) finds every object there.
  ASSERT_EQ(run(b + "oci copy --from " + repo_path + " @" + img.manifest_digest + " 2>&1", &out), 0)
      << out;
  EXPECT_NE(out.find("Objects copied:  0 ("), std::string::npos) << out;

  if (::geteuid() == 0 && ::access((std::string(CFS_BINDIR) + "/cfs-mount").c_str(), X_OK) == 0) {
    fs::create_directory(tmp / "mnt");
    ASSERT_EQ(run(b + "oci mount --fuse=no copied " + tmp / "mnt" + " 2>&1", &out), 0) << out;
    {
      Repository repo = Repository::open(tmp / "b");
      expect_mount_matches(repo, so::image_tree(repo, "copied", false), tmp / "mnt");
    }
    ASSERT_EQ(::umount2((tmp / "mnt").c_str(), MNT_DETACH), 0);
  }

  // A repository of another EROFS format gets the image in its own format, built from the
  // copied layers (composefs-rs), and it is the image a pull there gives.
  const std::string v2 = bin + (tmp / "v2") + " ", v2pull = bin + (tmp / "v2pull") + " ";
  ASSERT_EQ(run(v2 + "init --insecure --erofs-version 2 >/dev/null"), 0);
  ASSERT_EQ(run(v2pull + "init --insecure --erofs-version 2 >/dev/null"), 0);
  ASSERT_EQ(run(v2 + "oci copy --from " + repo_path + " t --name copied 2>&1", &out), 0) << out;
  ASSERT_EQ(run(v2pull + "oci pull -q oci:" + layout + ":base t 2>&1", &out), 0) << out;
  std::string id_v2, id_v2pull;
  ASSERT_EQ(run(v2 + "oci image-id copied", &id_v2), 0);
  ASSERT_EQ(run(v2pull + "oci image-id t", &id_v2pull), 0);
  EXPECT_EQ(id_v2, id_v2pull);
  EXPECT_NE(id_v2, id_a);
  ASSERT_EQ(run(v2 + "oci fsck copied 2>&1", &out), 0) << out;

  // A damaged object of A: refused, naming it; B gets no tag (and no streams).
  const std::string c = bin + (tmp / "c") + " ";
  ASSERT_EQ(run(c + "init --insecure >/dev/null"), 0);
  std::string objects;
  ASSERT_EQ(run(a + "image-objects " + trim(id_a), &objects), 0);
  std::string victim = objects.substr(0, objects.find('\n'));
  std::string path = repo_path + "/objects/" + victim.substr(0, 2) + "/" + victim.substr(2);
  ASSERT_TRUE(fs::exists(path)) << path;
  fs::permissions(path, fs::perms::owner_write, fs::perm_options::add);
  test::write_file(path, read_file(path) + "x");
  EXPECT_EQ(run(c + "oci copy --from " + repo_path + " t --name copied 2>&1", &out), 1) << out;
  EXPECT_NE(out.find("content does not match its name"), std::string::npos) << out;
  EXPECT_NE(out.find(victim.substr(2)), std::string::npos) << out;
  ASSERT_EQ(run(c + "oci images", &out), 0);
  EXPECT_EQ(out.find("copied"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(tmp / "c/streams/refs/oci/copied"));
  for (const auto& e : fs::directory_iterator(tmp / "c/streams"))
    EXPECT_EQ(e.path().filename(), "refs") << "a stream was named: " << e.path();

  // Repositories of different hash algorithms are refused before anything is read.
  const std::string d = bin + (tmp / "d") + " ";
  ASSERT_EQ(run(d + "init --insecure --algorithm=fsverity-sha256-12 >/dev/null"), 0);
  EXPECT_EQ(run(d + "oci copy --from " + repo_path + " t --name x 2>&1", &out), 1) << out;
  EXPECT_NE(out.find("different hash algorithms"), std::string::npos) << out;
}

// oci mount --fuse takes composefs-rs' auto|yes|no (a bare --fuse is yes, cfs' older
// spelling), and --foreground keeps the FUSE server (and so cfsctl) running until unmounted.
TEST_F(OciTest, CliMountFuseModesAndForeground) {
  std::string fuse = std::string(CFS_BINDIR) + "/cfs-fuse";
  if (::access(fuse.c_str(), X_OK) != 0 || ::access("/dev/fuse", R_OK | W_OK) != 0)
    GTEST_SKIP() << "no cfs-fuse or /dev/fuse";
  const std::string cfsctl = std::string(CFS_BINDIR) + "/cfsctl --repo " + repo_path + " ";
  LayoutBuilder builder(layout);
  builder.add_image(base_image_layers(), "base");
  std::string out;
  ASSERT_EQ(run(cfsctl + "init --insecure >/dev/null"), 0);
  ASSERT_EQ(run(cfsctl + "oci pull -q oci:" + layout + ":base t 2>&1", &out), 0) << out;
  const std::string mnt = tmp / "mnt";
  fs::create_directory(mnt);
  auto fuse_mounted = [&] {
    std::string type;
    run("findmnt -n -o FSTYPE " + mnt, &type);
    return trim(type).starts_with("fuse");
  };
  for (std::string spelling : {"--fuse", "--fuse yes", "--fuse=yes"}) {
    SCOPED_TRACE(spelling);
    ASSERT_EQ(run(cfsctl + "oci mount " + spelling + " t " + mnt + " 2>&1", &out), 0) << out;
    EXPECT_TRUE(fuse_mounted());
    {
      Repository repo = Repository::open(repo_path);
      expect_mount_matches(repo, so::image_tree(repo, "t", false), mnt);
    }
    ASSERT_EQ(::umount2(mnt.c_str(), MNT_DETACH), 0);
  }
  // A bare --fuse before the positional arguments does not take the image name as its value.
  ASSERT_EQ(run(cfsctl + "oci mount t --fuse " + mnt + " 2>&1", &out), 0) << out;
  EXPECT_TRUE(fuse_mounted());
  ASSERT_EQ(::umount2(mnt.c_str(), MNT_DETACH), 0);
  EXPECT_EQ(run(cfsctl + "oci mount --fuse maybe t " + mnt + " 2>&1", &out), 2) << out;

  // --foreground: cfsctl does not return while the image is mounted, and ends when unmounted.
  std::string pid;
  ASSERT_EQ(
      run(cfsctl + "oci mount --fuse yes --foreground t " + mnt + " >/dev/null 2>&1 & echo $!",
          &pid),
      0);
  pid = trim(pid);
  bool mounted = false;
  for (int i = 0; i < 100 && !(mounted = fuse_mounted()); ++i) ::usleep(100000);
  ASSERT_TRUE(mounted);
  EXPECT_EQ(run("kill -0 " + pid), 0) << "cfsctl --foreground returned while mounted";
  ASSERT_EQ(::umount2(mnt.c_str(), MNT_DETACH), 0);
  bool ended = false;
  for (int i = 0; i < 100 && !(ended = run("kill -0 " + pid + " 2>/dev/null") != 0); ++i)
    ::usleep(100000);
  EXPECT_TRUE(ended) << "cfsctl --foreground still running after the unmount";
  // The top-level mount takes the same spellings.
  std::string id;
  ASSERT_EQ(run(cfsctl + "oci image-id t", &id), 0);
  ASSERT_EQ(run(cfsctl + "mount --fuse yes --foreground " + trim(id) + " " + mnt +
                    " >/dev/null 2>&1 & echo $!",
                &pid),
            0);
  pid = trim(pid);
  mounted = false;
  for (int i = 0; i < 100 && !(mounted = fuse_mounted()); ++i) ::usleep(100000);
  ASSERT_TRUE(mounted);
  EXPECT_EQ(run("kill -0 " + pid), 0);
  ASSERT_EQ(::umount2(mnt.c_str(), MNT_DETACH), 0);
}

// --xattrs keep-user-xattrs: a second image variant (composefs-rs' ref name) that keeps user.*,
// stored next to the default one in the same config stream; both survive gc through the tag.
TEST_F(OciTest, CliXattrModes) {
  std::string cfsctl = std::string(CFS_BINDIR) + "/cfsctl --repo " + repo_path + " ";
  LayoutBuilder b(layout);
  b.add_image(base_image_layers(), "base");
  std::string out;
  ASSERT_EQ(run(cfsctl + "init --insecure >/dev/null"), 0);
  ASSERT_EQ(
      run(cfsctl + "oci pull -q --xattrs keep-user-xattrs oci:" + layout + ":base t 2>&1", &out), 0)
      << out;
  EXPECT_NE(run(cfsctl + "oci image-id t 2>&1", &out), 0);
  EXPECT_NE(out.find("has no composefs.image.v1 (pull it again)"), std::string::npos) << out;
  std::string keep;
  ASSERT_EQ(run(cfsctl + "oci image-id t --xattrs keep-user-xattrs", &keep), 0);
  ASSERT_EQ(run(cfsctl + "oci pull -q oci:" + layout + ":base t 2>&1", &out), 0) << out;
  std::string plain;
  ASSERT_EQ(run(cfsctl + "oci image-id t", &plain), 0);
  EXPECT_NE(plain, keep);
  EXPECT_EQ(run(cfsctl + "oci image-id t --xattrs keep-user-xattrs", &out), 0);
  EXPECT_EQ(out, keep) << "the other variant stays referenced after the second pull";
  ASSERT_EQ(run(cfsctl + "gc >/dev/null"), 0);
  ASSERT_EQ(run(cfsctl + "dump " + trim(keep) + " | grep '^/usr/bin/ping '", &out), 0);
  EXPECT_NE(out.find("user.note=dropped"), std::string::npos) << out;
  ASSERT_EQ(run(cfsctl + "dump " + trim(plain) + " | grep '^/usr/bin/ping '", &out), 0);
  EXPECT_EQ(out.find("user.note"), std::string::npos) << out;
  EXPECT_NE(run(cfsctl + "oci image-id t --xattrs all 2>&1", &out), 0);
  EXPECT_NE(out.find("--xattrs"), std::string::npos) << out;
  ASSERT_EQ(run(cfsctl + "oci fsck t", &out), 0) << out;
}

// A pull into a secure repository: fs-verity enabled (and measured by the kernel) on every
// object, the same image ids as an insecure pull. Needs fs-verity on the filesystem holding
// TMPDIR: skipped on this host, run inside the VMs (vm/run-smoke, scenario secure-store).
TEST_F(OciTest, PullIntoSecureRepository) {
  std::optional<Repository> secure;
  try {
    secure.emplace(Repository::init(tmp / "secure", {HashAlgorithm::sha512, false}));
  } catch (const Error& e) {
    if (std::string(e.what()).find("does not support fs-verity") != std::string::npos)
      GTEST_SKIP() << "no fs-verity on " << tmp.path() << ": " << e.what();
    throw;
  }
  ASSERT_TRUE(secure->secure());
  LayoutBuilder b(layout);
  b.add_image(bootable_image_layers(1), "os");
  so::PullOptions boot;
  boot.bootable = true;
  so::PullResult r = so::pull(*secure, "oci:" + layout + ":os", "os", boot);
  store::InitOptions insecure_options;
  insecure_options.insecure = true;
  Repository insecure = Repository::init(repo_path, insecure_options);
  so::PullResult expected = so::pull(insecure, "oci:" + layout + ":os", "os", boot);
  EXPECT_EQ(r.image_id, expected.image_id);
  EXPECT_EQ(r.boot_image_id, expected.boot_image_id);
  // fsck of a secure repository requires the kernel's measurement of every object to equal its
  // name ("object-verity-missing" otherwise).
  store::FsckReport report = store::fsck(*secure);
  std::string errors;
  for (const auto& e : report.errors) errors += e + "\n";
  EXPECT_TRUE(report.ok()) << errors;
  EXPECT_GT(report.objects_checked, 20u);
  EXPECT_TRUE(so::fsck_images(*secure, std::nullopt, false).ok());
  // Reopened, the image opens through kernel-verified objects.
  secure.reset();
  Repository again = Repository::open(tmp / "secure");
  EXPECT_TRUE(again.secure());
  EXPECT_EQ(so::image_tree(again, "os", true).lookup("/boot")->children.size(), 0u);
  EXPECT_NO_THROW(again.open_image(so::image_id(again, "os", true).hex()));
}

TEST_F(OciTest, SampleLayoutScriptPulls) {
  std::string script = std::string(CFS_TESTDATA) + "/../oci/make-sample-layout.sh";
  std::string out;
  ASSERT_EQ(run(script + " " + layout + " --layers 3 --size-mib 2 --compress zstd", &out), 0)
      << out;
  Repository repo = make_repo(repo_path);
  so::PullResult r = so::pull(repo, "oci:" + layout + ":latest", "sample");
  EXPECT_EQ(r.manifest_digest + "\n", out);
  erofs::Tree t = so::image_tree(repo, "sample", false);
  EXPECT_EQ(t.lookup("/etc/obsolete.conf"), nullptr);
  EXPECT_EQ(t.lookup("/usr/lib/libsample.so.1"), t.lookup("/usr/lib/libsample-hardlink.so.1"));
  EXPECT_TRUE(t.lookup("/run")->children.empty());
  EXPECT_TRUE(so::fsck_images(repo, std::nullopt).ok());
}

}  // namespace
}  // namespace cfs::test::oci
