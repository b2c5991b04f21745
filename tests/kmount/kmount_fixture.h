// Shared helpers for the privileged kmount tests: a private mount namespace, composefs images
// built with the cfs writer, and checks that nothing stays mounted or bound afterwards.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "cfs/digest.h"
#include "testdata.h"

namespace cfs::test {

// Moves this test process into its own mount namespace with private propagation, so the
// host never sees the test mounts and a crashed test leaves nothing behind.
void enter_private_mount_namespace();

// The base of the privileged kmount tests: each suite runs in a private mount namespace, a
// test is skipped without root, and what it left mounted below dir is detached afterwards.
class PrivilegedMountTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite();
  void SetUp() override;
  void TearDown() override;

  TempDir dir;
};

struct BuiltImage {
  std::string path;
  std::string objects;
  Digest digest;
};

// Writes a small but varied tree below src (inline and external files, a nested directory,
// a symlink, an empty file, etc/ var/ sysroot/) and returns how many external objects it has.
void populate_source_tree(const std::string& src);

// Scans src with the cfs scanner, stores external files in objects/ (ab/cdef… names) and
// writes the composefs image (with its 00-ff stubs) to image.
BuiltImage build_image(const std::string& src, const std::string& objects,
                       const std::string& image);

// A description of a tree (type, mode, ids, content/target per relative path) to compare a
// mounted image with its source.
std::map<std::string, std::string> describe_tree(const std::string& root);

// Lines of /proc/self/mountinfo whose mount point is below prefix.
std::vector<std::string> mounts_below(const std::string& prefix);
// Loop devices whose backing file is path.
std::vector<std::string> loop_devices_for(const std::string& path);
// Temporary mount points cfs-mount may have left in /run or /tmp.
std::vector<std::string> leftover_temp_dirs();
// Unmounts (lazily) everything below prefix, deepest first.
void detach_all_below(const std::string& prefix);

struct RunResult {
  int status = -1;
  std::string output;  // stdout and stderr
};
// Runs cfs-mount (or another program from the build's bin dir) with environment assignments.
RunResult run_tool(const std::string& args, const std::string& env = "",
                   const std::string& program = "cfs-mount");

std::string binary_path(const std::string& name);

}  // namespace cfs::test
