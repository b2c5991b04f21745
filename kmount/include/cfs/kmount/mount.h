// Kernel mounts of composefs images: an EROFS metadata image stacked under overlayfs with the
// object directories as data-only lowers. Kernel features are probed at run time, so one binary
// serves every kernel from the legacy mount(2) era to the fd-based mount API of 6.15+.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/digest.h"
#include "cfs/kmount/verity.h"

namespace cfs::kmount {

// How strictly overlayfs must check the fs-verity digests recorded in the image.
//   off:     no verity= option.
//   attempt: verity=require where the kernel knows the option (6.6+), silently none elsewhere
//            (the C tool's "tryverity").
//   require: verity=require, and the mount fails where the kernel cannot enforce it.
enum class VerityMode { off, attempt, require };
std::string_view to_string(VerityMode mode);
// Accepts "off", "try", "require".
std::optional<VerityMode> parse_verity_mode(std::string_view text);

// The ways of handing layers to overlayfs, newest first:
//   fd               fsconfig(FSCONFIG_SET_FD) for lowerdir+/datadir+
//                    (6.13+; detached layers 6.15+)
//   string           fsconfig(FSCONFIG_SET_STRING) lowerdir+/datadir+ = /proc/self/fd/N
//                    (6.7+)
//   legacy_dataonly  mount(2) with lowerdir=IMAGE::OBJECTS (data-only lowers, 6.5+)
//   legacy_lower     mount(2) with lowerdir=IMAGE:OBJECTS; the image's 00-ff whiteouts hide
//                    the object directories (any overlayfs with metacopy/redirect_dir)
enum class OverlayTier { fd, string, legacy_dataonly, legacy_lower };
std::string_view to_string(OverlayTier tier);
// Accepts "fd", "string", "legacy-dataonly", "legacy-lower".
std::optional<OverlayTier> parse_overlay_tier(std::string_view text);

// Test hooks that force one code path on a kernel that would pick another. Read from the
// environment by from_environment():
//   CFS_MOUNT_FORCE_TIER=fd|string|legacy-dataonly|legacy-lower  only that overlay tier
//   CFS_MOUNT_FORCE_LOOP=1      EROFS through a loop device even where file-backed works
//   CFS_MOUNT_FORCE_ATTACHED=1  attach the EROFS on a private temporary directory while the
//                               overlay is created (what kernels before 6.15 need)
struct KernelOverrides {
  std::optional<OverlayTier> force_tier;
  bool force_loop = false;
  bool force_attached = false;

  // Throws cfs::Error on an unknown CFS_MOUNT_FORCE_TIER value.
  static KernelOverrides from_environment();
};

struct MountOptions {
  // Directories holding the objects the image's redirects point at (data-only lowers).
  std::vector<std::string> object_dirs;
  // When set, the image's fs-verity digest must equal this before anything is mounted.
  std::optional<Digest> expected_digest;
  VerityMode verity = VerityMode::off;
  // Writable overlay: both or neither; writes land in upperdir only.
  std::string upperdir;
  std::string workdir;
  // Without it the mount is read-only even when an upper directory is given.
  bool writable = false;
  // A user-namespace file (/proc/PID/ns/user): the EROFS layer is idmapped through it.
  std::string idmap_userns;
  // Every image is validated by the strict reader before the kernel sees it; this also
  // requires every object it names to be in one of object_dirs. Off: objects may arrive later
  // (reads of a missing one fail with EIO then).
  bool check_objects = true;
  KernelOverrides overrides;
};

// What the mount did, for -v output and the tests that assert a forced path was taken.
struct MountReport {
  OverlayTier tier = OverlayTier::fd;
  std::string erofs_source;     // "file" or the loop device path
  bool erofs_attached = false;  // attached on a temporary directory while creating the overlay
  DigestCheck digest_check = DigestCheck::none;
  bool verity_applied = false;         // verity=require was accepted by overlayfs
  std::vector<std::string> fallbacks;  // why earlier tiers/paths were abandoned
  uint64_t validated_inodes = 0;       // inodes the strict reader walked before mounting
  uint64_t objects = 0;                // object references: one per external file
  bool objects_checked = false;        // each was found in an object directory
  double validation_ms = 0;            // the strict reader's walk
  double object_check_ms = 0;          // looking the objects up

  std::string summary() const;
};

// Mounts IMAGE (a composefs/EROFS image file) on TARGET (an existing directory), after the
// strict reader has validated all of it (and, unless check_objects is off, found every object
// it names). Throws cfs::Error naming the image or directory and the problem; on failure nothing
// stays mounted, no loop device stays bound and no temporary directory is left behind.
MountReport mount_image(const std::string& image, const std::string& target,
                        const MountOptions& options);

}  // namespace cfs::kmount
