// Test utilities for the directory transforms (cfsctl compute-id of a root directory equal to
// the id of the same root pulled as an OCI image): the OCI layouts the tests build, and the
// root filesystem of an image extracted from its layout by libarchive (no cfs code), layer by
// layer, with the OCI whiteout rules.
#pragma once

#include <string>
#include <vector>

namespace cfs::test::oci {

struct TestLayout {
  std::string dir;  // the OCI layout
  std::string ref;  // the image's ref name in it
  std::string name;
};

// Builds every OCI layout the OCI tests use below parent: the 5-layer base image, both
// versions of the 20-layer bootable image (SELinux policy, /boot, kernels), the GNU tar
// layout of make-sample-layout.sh, and an image whose root differs from /usr and whose /run,
// /boot and xattrs exercise each transform (nanosecond mtimes, a hardlink out of /run,
// security.selinux and user.* xattrs).
// gzip: the base image has a layer of several gzip members back to back (as pigz -i and
// other parallel compressors write); GzipMembers::single writes that layer as one member
// instead (the same tar, so the same diff_id and image ids), for readers that stop after the
// first member (composefs-rs 0.9.0).
enum class GzipMembers { as_built, single };
std::vector<TestLayout> build_test_layouts(const std::string& parent,
                                           GzipMembers gzip = GzipMembers::as_built);
// Only the last of them (in parent/transforms, ref "transforms").
TestLayout build_transform_layout(const std::string& parent);

// Extracts image ref of the layout at layout into dest (an existing empty directory):
// each layer blob in manifest order (gzip, zstd or plain tar), written to disk by libarchive
// with owners, modes, nanosecond mtimes, xattrs, devices and hardlinks; ".wh.NAME" removes
// NAME, ".wh..wh..opq" empties its directory, and an entry replacing a different kind of
// entry removes it first. Throws std::runtime_error on failure.
void extract_image(const std::string& layout, const std::string& ref, const std::string& dest);

}  // namespace cfs::test::oci
