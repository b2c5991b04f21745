// meta.json's erofs_formats at pull: one EROFS image per configured format, named in the
// config stream as composefs-rs names them (composefs.image = V2, composefs.image.v1 = V1,
// composefs.image.boot[.v1]); lookups give the default format's image, gc keeps every
// format's, fsck is clean; repositories whose images were pulled in V1 only keep working;
// a pulled V2 image mounts through the kernel.
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>

#include "cfs/erofs/reader.h"
#include "cfs/erofs/writer.h"
#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/oci/oci.h"
#include "cfs/output.h"
#include "cfs/store/fsck.h"
#include "cfs/store/gc.h"
#include "cfs/store/images.h"
#include "cfs/store/repository.h"
#include "oci_fixture.h"
#include "testdata.h"

namespace cfs::test::oci {
namespace {

namespace fs = std::filesystem;
namespace so = cfs::oci;
using store::Repository;

const std::string kCfsctl = std::string(CFS_BINDIR) + "/cfsctl";

// A repository configured as composefs-rs would: init --erofs-version N, or (extra formats,
// which only composefs-rs' library sets) meta.json written as composefs-rs writes it.
Repository make_repo(const std::string& path, uint32_t version, std::vector<uint32_t> extra = {}) {
  store::InitOptions o;
  o.insecure = true;
  o.algorithm = HashAlgorithm::sha256;
  o.erofs_version = version;
  { Repository init = Repository::init(path, o); }
  if (!extra.empty()) {
    store::RepoMeta meta = store::RepoMeta::for_erofs_version(o.algorithm, version);
    meta.erofs_extra = extra;
    std::ofstream(path + "/meta.json", std::ios::trunc) << meta.to_json();
  }
  return Repository::open(path);
}

// The config stream's composefs.image* refs of a tag.
std::map<std::string, Digest> image_refs(const Repository& repo, const std::string& tag) {
  std::string config = so::inspect(repo, tag).config_digest;
  std::map<std::string, Digest> out;
  store::SplitStreamReader stream = repo.open_stream("oci-config-" + config);
  for (const store::NamedRef& ref : stream.named_refs())
    if (ref.name.starts_with("composefs.image")) out.emplace(ref.name, ref.target);
  return out;
}

uint32_t format_of(const Repository& repo, const Digest& image) {
  return store::open_image_reader(repo, image.hex()).format_version();
}

// The id of the image of tag's (boot) tree written in format version.
Digest expected_id(const Repository& repo, const std::string& tag, bool bootable,
                   uint32_t version) {
  VeritySink sink(nullptr, repo.algorithm());
  erofs::write_image(so::image_tree(repo, tag, bootable), sink,
                     erofs::WriterOptions::for_erofs_version(version));
  return sink.finish();
}

class OciFormatsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LayoutBuilder b(layout);
    b.add_image(bootable_image_layers(1), "os");
  }
  TempDir tmp;
  std::string layout = tmp / "layout";
};

TEST_F(OciFormatsTest, PullWritesEveryConfiguredFormat) {
  struct Case {
    const char* name;
    uint32_t version;
    std::vector<uint32_t> extra;
    std::map<std::string, uint32_t> refs;  // ref name -> format of the image it names
  };
  const std::vector<Case> cases = {
      {"v1", 1, {}, {{"composefs.image.v1", 1}, {"composefs.image.boot.v1", 1}}},
      {"v2", 2, {}, {{"composefs.image", 2}, {"composefs.image.boot", 2}}},
      {"v1+v2",
       1,
       {2},
       {{"composefs.image", 2},
        {"composefs.image.v1", 1},
        {"composefs.image.boot", 2},
        {"composefs.image.boot.v1", 1}}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = tmp / ("repo-" + std::string(c.name));
    {
      Repository repo = make_repo(path, c.version, c.extra);
      so::PullOptions o;
      o.bootable = true;
      so::PullResult r = so::pull(repo, "oci:" + layout + ":os", "os", o);
      EXPECT_EQ(r.images.size(), 1 + c.extra.size());
      EXPECT_EQ(r.images.front().first, c.version);
      EXPECT_EQ(format_of(repo, r.image_id), c.version);
      EXPECT_EQ(format_of(repo, *r.boot_image_id), c.version);
    }
    Repository repo = Repository::open(path);
    auto refs = image_refs(repo, "os");
    ASSERT_EQ(refs.size(), c.refs.size());
    for (const auto& [name, version] : c.refs) {
      SCOPED_TRACE(name);
      ASSERT_TRUE(refs.contains(name));
      EXPECT_EQ(format_of(repo, refs.at(name)), version);
      EXPECT_EQ(refs.at(name),
                expected_id(repo, "os", name.find(".boot") != std::string::npos, version));
    }
    // Lookups give the default format's image.
    const std::string suffix = c.version == 2 ? "" : ".v1";
    EXPECT_EQ(so::image_id(repo, "os"), refs.at("composefs.image" + suffix));
    EXPECT_EQ(so::image_id(repo, "os", true), refs.at("composefs.image.boot" + suffix));
    EXPECT_EQ(so::inspect(repo, "os").image_id, refs.at("composefs.image" + suffix));
    std::string out;
    ASSERT_EQ(run(kCfsctl + " --repo " + path + " oci image-id os", &out), 0);
    EXPECT_EQ(trim(out), refs.at("composefs.image" + suffix).hex());
    // --erofs-version picks one format, and only that one.
    ASSERT_EQ(
        run(kCfsctl + " --repo " + path + " --erofs-version 2 oci image-id --bootable os 2>&1",
            &out),
        c.refs.contains("composefs.image.boot") ? 0 : 1)
        << out;
    if (c.refs.contains("composefs.image.boot"))
      EXPECT_EQ(trim(out), refs.at("composefs.image.boot").hex());
    else
      EXPECT_NE(out.find("has no composefs.image.boot"), std::string::npos) << out;
  }
  // gc (run in a separate step: the handles above are closed) keeps every format's images,
  // and fsck finds nothing wrong.
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = tmp / ("repo-" + std::string(c.name));
    std::string out;
    ASSERT_EQ(run(kCfsctl + " --repo " + path + " gc 2>&1", &out), 0) << out;
    Repository repo = Repository::open(path);
    for (const auto& [name, id] : image_refs(repo, "os")) {
      EXPECT_TRUE(repo.has_object(id)) << name;
      EXPECT_TRUE(repo.resolve_image(id.hex())) << name;
    }
    ASSERT_EQ(run(kCfsctl + " --repo " + path + " oci fsck 2>&1", &out), 0) << out;
    EXPECT_NE(out.find("status: ok"), std::string::npos) << out;
  }
}

// A repository whose default is V2 but whose image was pulled in V1 only (by a cfs before
// erofs_formats was honoured, or with --erofs-version 1): lookups fall back to the V1 image,
// fsck is clean, prepare-boot style ensure_image builds the V2 boot image and keeps the V1 one.
TEST_F(OciFormatsTest, ImagesPulledInAnotherFormatKeepWorking) {
  const std::string path = tmp / "repo";
  Digest v1;
  {
    Repository repo = make_repo(path, 2);
    repo.set_erofs_version(1);
    v1 = so::pull(repo, "oci:" + layout + ":os", "os").image_id;
  }
  Repository repo = Repository::open(path);
  EXPECT_EQ(repo.erofs_version(), 2u);
  auto refs = image_refs(repo, "os");
  ASSERT_EQ(refs.size(), 1u);
  EXPECT_EQ(refs.begin()->first, "composefs.image.v1");
  EXPECT_EQ(so::image_id(repo, "os"), v1);
  EXPECT_EQ(so::inspect(repo, "os").image_id, v1);
  EXPECT_TRUE(so::fsck_images(repo, std::nullopt).ok());
  std::string out;
  EXPECT_NE(run(kCfsctl + " --repo " + path + " --erofs-version 2 oci image-id os 2>&1", &out), 0);
  EXPECT_NE(out.find("has no composefs.image "), std::string::npos) << out;

  Digest boot = so::ensure_image(repo, "os", true);
  EXPECT_EQ(format_of(repo, boot), 2u);
  refs = image_refs(repo, "os");
  EXPECT_EQ(refs.size(), 3u) << "the V1 image stays, V2 plain and boot images join it";
  EXPECT_EQ(refs.at("composefs.image.v1"), v1);
  EXPECT_EQ(so::image_id(repo, "os"), refs.at("composefs.image"));
  store::collect_garbage(repo);
  EXPECT_TRUE(repo.has_object(v1));
  EXPECT_TRUE(store::fsck(repo).ok());
  EXPECT_TRUE(so::fsck_images(repo, std::nullopt).ok());
}

// oci fsck: a config stream without any plain image ref, and a missing image of any format.
TEST_F(OciFormatsTest, FsckChecksEveryFormatsImage) {
  const std::string path = tmp / "repo";
  Digest v2;
  {
    Repository repo = make_repo(path, 1, {2});
    so::pull(repo, "oci:" + layout + ":os", "os");
    v2 = image_refs(repo, "os").at("composefs.image");
  }
  Repository repo = Repository::open(path);
  fs::remove(path + "/objects/" + v2.object_path());
  so::OciFsckReport report = so::fsck_images(repo, std::nullopt);
  ASSERT_EQ(report.errors.size(), 1u);
  EXPECT_NE(report.errors[0].find("image-object-missing"), std::string::npos) << report.errors[0];
  EXPECT_NE(report.errors[0].find("(composefs.image)"), std::string::npos) << report.errors[0];
}

// create-image writes one image per format; its ref names the default format's. The ids are
// those compute-id gives for each format (compute-id --erofs-version 2 is compared with
// composefs-rs in erofs_rs_oracle_images).
TEST_F(OciFormatsTest, CreateImageWritesEveryConfiguredFormat) {
  const std::string path = tmp / "repo";
  { make_repo(path, 1, {2}); }
  const std::string src = tmp / "src";
  fs::create_directories(src + "/usr/bin");
  write_file(src + "/usr/bin/tool", std::string(5000, 'x'));
  const std::string cfsctl = kCfsctl + " --repo " + path + " ";
  std::string id, v1, v2, images;
  ASSERT_EQ(run(cfsctl + "create-image " + src + " img", &id), 0);
  ASSERT_EQ(run(cfsctl + "compute-id " + src, &v1), 0);
  ASSERT_EQ(run(cfsctl + "--erofs-version 2 compute-id " + src, &v2), 0);
  EXPECT_EQ(trim(id), trim(v1));
  ASSERT_EQ(run(cfsctl + "images", &images), 0);
  EXPECT_NE(images.find(trim(v1) + " img\n"), std::string::npos) << images;
  EXPECT_NE(images.find(trim(v2) + "\n"), std::string::npos) << images;
  Repository repo = Repository::open(path);
  EXPECT_EQ(format_of(repo, *Digest::from_hex(trim(v2), repo.algorithm())), 2u);
}

// A pulled V2 image through the kernel: cfsctl oci mount hands it to cfs-mount.
TEST_F(OciFormatsTest, KernelMountOfPulledV2Image) {
  if (::geteuid() != 0) GTEST_SKIP() << "kernel mounts need root";
  const std::string mounter = std::string(CFS_BINDIR) + "/cfs-mount";
  if (::access(mounter.c_str(), X_OK) != 0) GTEST_SKIP() << "cfs-mount not built";
  const std::string path = tmp / "repo";
  {
    Repository repo = make_repo(path, 2);
    so::pull(repo, "oci:" + layout + ":os", "os");
  }
  const std::string mnt = tmp / "mnt";
  fs::create_directory(mnt);
  std::string out;
  ASSERT_EQ(run(kCfsctl + " --repo " + path + " oci mount os " + mnt + " 2>&1", &out), 0) << out;
  {
    Repository repo = Repository::open(path);
    EXPECT_EQ(format_of(repo, so::image_id(repo, "os")), 2u);
    // Every file of the image's tree, with its content, as the kernel shows it.
    erofs::Tree tree = so::image_tree(repo, "os", false);
    size_t checked = 0;
    erofs::walk(tree, [&](const erofs::WalkEntry& e) {
      struct stat st;
      const std::string p = mnt + e.path;
      ASSERT_EQ(::lstat(p.c_str(), &st), 0) << p;
      EXPECT_EQ(st.st_mode, e.inode.mode) << p;
      if (e.inode.is_reg() && e.inode.digest) {
        UniqueFd fd = repo.open_object(*e.inode.digest);
        EXPECT_TRUE(read_file(p) == read_fd(fd.get(), e.path)) << p;
        ++checked;
      }
    });
    EXPECT_GT(checked, 5u);
  }
  EXPECT_TRUE(read_file(mnt + "/usr/lib/modules/6.1.0-1/kernel/fs.ko") ==
              file_content("/usr/lib/modules/6.1.0-1/kernel/fs.ko", 40000));
  ASSERT_EQ(run("findmnt -n -o FSTYPE " + mnt, &out), 0);
  EXPECT_EQ(trim(out), "overlay");
  ASSERT_EQ(::umount2(mnt.c_str(), MNT_DETACH), 0);
}

}  // namespace
}  // namespace cfs::test::oci
