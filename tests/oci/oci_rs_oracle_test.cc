// cfs against composefs-rs 0.9.0 (the rs-oracle, built by shared/tools/rs-oracle/build.sh),
// for every test layout: cfsctl compute-id of its root, extracted by libarchive, against
// rsoracle compute-id (with and without the OCI transform, plain and bootable), and the
// image id of a pull against rsoci (plain, bootable, keep-user-xattrs); sha256 and sha512;
// and the images of every EROFS format a repository is configured for (V2, V1 + extra V2; a
// V1 repository is the one above) against rsoci --erofs-version N.
// Skipped, saying why, where the oracle is not built.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "cfs/fd.h"
#include "layout_extract.h"
#include "testdata.h"

namespace cfs::test::oci {
namespace {

namespace fs = std::filesystem;

const std::string kCfsctl = std::string(CFS_BINDIR) + "/cfsctl";

std::string oracle_path() {
  const char* env = std::getenv("CFS_RS_ORACLE");
  return env && *env ? env : "/var/tmp/rs-oracle/bin/rsoracle";
}

// Why the OCI tests cannot compare with rsoci here, or empty if they can.
std::string why_rsoci_cannot_run(const std::string& rsoci) {
  if (::access(rsoci.c_str(), X_OK) != 0)
    return "the composefs-rs oracle is not built (" + rsoci +
           " missing; shared/tools/rs-oracle/build.sh builds it, CFS_RS_ORACLE overrides the "
           "directory)";
  if (::geteuid() != 0) return "extracting layers keeps owners and devices: needs root";
  return {};
}

std::string output_of(const std::string& command, bool may_fail = false) {
  std::string out;
  int status = run(command + " 2>&1", &out);
  if (status != 0 && !may_fail) ADD_FAILURE() << command << " exited " << status << ": " << out;
  return status == 0 ? trim(out) : std::string();
}

TEST(RsOracle, ComputeIdOfExtractedRoots) {
  const std::string oracle = oracle_path();
  if (::access(oracle.c_str(), X_OK) != 0)
    GTEST_SKIP() << "the composefs-rs oracle is not built (" << oracle
                 << " missing; shared/tools/rs-oracle/build.sh builds it, CFS_RS_ORACLE "
                    "overrides the path)";
  if (::geteuid() != 0) GTEST_SKIP() << "extracting layers keeps owners and devices: needs root";
  TempDir tmp;
  unsigned compared = 0;
  for (const TestLayout& l : build_test_layouts(tmp.path())) {
    std::string root = tmp.path() + "/root-" + l.name;
    fs::create_directory(root);
    extract_image(l.dir, l.ref, root);
    for (const char* hash : {"sha256", "sha512"}) {
      for (const char* flags :
           {"", "--bootable", "--no-propagate-usr-to-root", "--xattrs keep-user-xattrs"}) {
        SCOPED_TRACE(l.name + " --hash " + hash + " " + flags);
        std::string ours =
            output_of(kCfsctl + " compute-id --hash " + hash + " " + flags + " " + quote(root));
        // composefs-rs' boot transform requires /boot and /sysroot (cfs empties those that
        // exist): a root without them is compared only where composefs-rs takes it.
        bool rs_refuses =
            std::string(flags) == "--bootable" &&
            (!fs::is_directory(root + "/boot") || !fs::is_directory(root + "/sysroot"));
        std::string theirs = output_of(oracle + " --hash " + hash + " --erofs-version 1 " +
                                           "compute-id " + flags + " " + quote(root),
                                       rs_refuses);
        if (rs_refuses) {
          EXPECT_EQ(theirs, "") << "composefs-rs took a bootable root without /boot or /sysroot";
          continue;
        }
        EXPECT_EQ(ours, theirs);
        EXPECT_EQ(ours.size(), std::string(hash) == "sha256" ? 64u : 128u);
        ++compared;
      }
    }
  }
  std::printf("compared %u compute-id results with %s\n", compared, oracle.c_str());
}

TEST(RsOracle, OciImageIdsOfPulledLayouts) {
  const std::string rsoci = fs::path(oracle_path()).parent_path() / "rsoci";
  if (std::string why = why_rsoci_cannot_run(rsoci); !why.empty()) GTEST_SKIP() << why;
  TempDir tmp;
  fs::create_directory(tmp.path() + "/cfs");
  fs::create_directory(tmp.path() + "/rs");
  // cfs pulls the layouts as built; composefs-rs reads a copy whose multi-member gzip layer
  // is one gzip member (its decoder stops after the first member and then finds the tar
  // cut short: "unexpected EOF reading tar padding"). The tars, and so the diff_ids and
  // image ids, are the same in both.
  const std::vector<TestLayout> layouts = build_test_layouts(tmp.path() + "/cfs");
  const std::vector<TestLayout> rs_layouts =
      build_test_layouts(tmp.path() + "/rs", GzipMembers::single);
  ASSERT_EQ(layouts.size(), rs_layouts.size());
  unsigned compared = 0, equal = 0;
  for (size_t i = 0; i < layouts.size(); ++i) {
    const TestLayout& l = layouts[i];
    const std::string source = quote("oci:" + l.dir + ":" + l.ref);
    const std::string rs_source = quote(rs_layouts[i].dir + ":" + rs_layouts[i].ref);
    std::string root = tmp.path() + "/root-" + l.name;
    fs::create_directory(root);
    extract_image(l.dir, l.ref, root);
    const bool has_boot_dirs =
        fs::is_directory(root + "/boot") && fs::is_directory(root + "/sysroot");
    for (const char* hash : {"sha256", "sha512"}) {
      const std::string repo = tmp.path() + "/repo-" + l.name + "-" + hash;
      output_of(kCfsctl + " --repo " + quote(repo) + " init --insecure --hash " + hash);
      for (const char* flags : {"", "--bootable", "--xattrs keep-user-xattrs"}) {
        SCOPED_TRACE(l.name + " --hash " + hash + " " + flags);
        // composefs-rs' boot transform requires /boot and /sysroot.
        if (std::string(flags) == "--bootable" && !has_boot_dirs) continue;
        output_of(kCfsctl + " --repo " + quote(repo) + " oci pull -q " + flags + " " + source +
                  " t");
        std::string ours =
            output_of(kCfsctl + " --repo " + quote(repo) + " oci image-id " + flags + " t");
        std::string theirs = output_of(rsoci + " --hash " + hash + " " + flags + " " + rs_source);
        EXPECT_EQ(ours, theirs);
        EXPECT_EQ(ours.size(), std::string(hash) == "sha256" ? 64u : 128u);
        ++compared;
        if (!ours.empty() && ours == theirs) ++equal;
      }
    }
  }
  std::printf("compared %u OCI image ids of %zu layouts with %s: %u equal\n", compared,
              layouts.size(), rsoci.c_str(), equal);
  EXPECT_EQ(compared, 26u) << "every layout and variant is compared";
}

TEST(RsOracle, OciImagesOfEveryConfiguredFormat) {
  const std::string rsoci = fs::path(oracle_path()).parent_path() / "rsoci";
  if (std::string why = why_rsoci_cannot_run(rsoci); !why.empty()) GTEST_SKIP() << why;
  struct Config {
    const char* name;
    const char* init;   // init options
    const char* extra;  // erofs_formats.extra written into meta.json (composefs-rs' library)
    std::vector<uint32_t> versions;  // default first
  };
  const std::vector<Config> configs = {
      {"v2", "--erofs-version 2", nullptr, {2}},
      {"v1+v2", "--erofs-version 1", "[2]", {1, 2}},
  };
  TempDir tmp;
  unsigned compared = 0, refused = 0;
  for (const TestLayout& l : build_test_layouts(tmp.path())) {
    const std::string source = quote("oci:" + l.dir + ":" + l.ref);
    std::string root = tmp.path() + "/root-" + l.name;
    fs::create_directory(root);
    extract_image(l.dir, l.ref, root);
    const bool has_boot_dirs =
        fs::is_directory(root + "/boot") && fs::is_directory(root + "/sysroot");
    // Layouts composefs-rs cannot read (see above) are left out at once.
    if (output_of(rsoci + " --hash sha256 " + source, true).empty()) {
      ++refused;
      continue;
    }
    for (const char* hash : {"sha256", "sha512"}) {
      for (const Config& c : configs) {
        const std::string repo = tmp.path() + "/repo-" + l.name + "-" + hash + "-" + c.name;
        const std::string cfsctl = kCfsctl + " --repo " + quote(repo) + " ";
        output_of(cfsctl + "init --insecure --hash " + hash + " " + c.init);
        if (c.extra) {
          std::string meta = read_file(repo + "/meta.json");
          size_t at = meta.find("\"default\": 1");
          ASSERT_NE(at, std::string::npos) << meta;
          meta.insert(at + 12, ",\n    \"extra\": " + std::string(c.extra));
          write_file(repo + "/meta.json", meta);
        }
        for (const char* flags : {"", "--bootable"}) {
          SCOPED_TRACE(l.name + " --hash " + hash + " " + c.name + " " + flags);
          if (std::string(flags) == "--bootable" && !has_boot_dirs) continue;
          output_of(cfsctl + "oci pull -q " + flags + " " + source + " t");
          // The default format's image is the one image-id gives.
          std::string default_id = output_of(cfsctl + "oci image-id " + flags + " t");
          for (uint32_t v : c.versions) {
            const std::string n = std::to_string(v);
            std::string ours =
                output_of(cfsctl + "--erofs-version " + n + " oci image-id " + flags + " t");
            std::string theirs = output_of(rsoci + " --hash " + hash + " --erofs-version " + n +
                                           " " + flags + " " + source);
            EXPECT_EQ(ours, theirs) << "format " << v;
            EXPECT_EQ(ours.size(), std::string(hash) == "sha256" ? 64u : 128u);
            if (v == c.versions.front()) {
              EXPECT_EQ(default_id, ours);
            }
            ++compared;
          }
        }
        output_of(cfsctl + "gc");
        std::string fsck = output_of(cfsctl + "oci fsck");
        EXPECT_NE(fsck.find("status: ok"), std::string::npos) << fsck;
        for (uint32_t v : c.versions) {
          for (const char* flags : {"", "--bootable"}) {
            if (std::string(flags) == "--bootable" && !has_boot_dirs) continue;
            std::string id = output_of(cfsctl + "--erofs-version " + std::to_string(v) +
                                       " oci image-id " + flags + " t");
            EXPECT_TRUE(fs::exists(repo + "/images/" + id)) << "gc kept format " << v;
          }
        }
      }
    }
  }
  std::printf(
      "compared %u images of configured formats with %s (%u layouts refused by "
      "composefs-rs)\n",
      compared, rsoci.c_str(), refused);
  EXPECT_GE(compared, 16u) << "too few layouts composefs-rs reads to compare";
}

}  // namespace
}  // namespace cfs::test::oci
