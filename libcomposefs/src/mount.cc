// lcfs_mount_image / lcfs_mount_fd through cfs's kmount library. The fs-verity check runs
// here first so its failures carry C's errno values (ENOVERITY, EWRONGVERITY), which callers
// such as mount.composefs turn into their messages.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "cfs/digest.h"
#include "cfs/fd.h"
#include "cfs/kmount/mount.h"
#include "guard.h"
#include "libcomposefs/lcfs-mount.h"
#include "libcomposefs/lcfs-writer.h"

namespace {

int fail(int code) {
  errno = code;
  return -1;
}

int mount_fd(int fd, const char* mountpoint, const lcfs_mount_options_s* options) {
  if ((options->flags & ~LCFS_MOUNT_FLAGS_MASK) != 0 || options->n_objdirs == 0 ||
      (options->upperdir == nullptr) != (options->workdir == nullptr) ||
      ((options->flags & LCFS_MOUNT_FLAGS_IDMAP) != 0 && options->idmap_fd < 0))
    return fail(EINVAL);
  std::optional<cfs::Digest> expected;
  if (options->expected_fsverity_digest != nullptr) {
    expected = cfs::Digest::from_hex(options->expected_fsverity_digest, cfs::HashAlgorithm::sha256);
    if (!expected) return fail(EINVAL);
    uint8_t found[LCFS_DIGEST_SIZE];
    int res = lcfs_fd_measure_fsverity(found, fd);
    if (res < 0) return fail(-res);
    if (std::memcmp(found, expected->bytes().data(), LCFS_DIGEST_SIZE) != 0)
      return fail(EWRONGVERITY);
  }
  return cfs::lcfs::with_errno(
      [&] {
        cfs::kmount::MountOptions mo;
        for (size_t i = 0; i < options->n_objdirs; ++i)
          mo.object_dirs.emplace_back(options->objdirs[i]);
        if (options->upperdir != nullptr) {
          mo.upperdir = options->upperdir;
          mo.workdir = options->workdir;
          // Without an upper layer the overlay is read-only whatever the flags say, as in C.
          mo.writable = (options->flags & LCFS_MOUNT_FLAGS_READONLY) == 0;
        }
        if ((options->flags & LCFS_MOUNT_FLAGS_REQUIRE_VERITY) != 0)
          mo.verity = cfs::kmount::VerityMode::require;
        else if ((options->flags & LCFS_MOUNT_FLAGS_TRY_VERITY) != 0)
          mo.verity = cfs::kmount::VerityMode::attempt;
        if ((options->flags & LCFS_MOUNT_FLAGS_IDMAP) != 0)
          mo.idmap_userns = "/proc/self/fd/" + std::to_string(options->idmap_fd);
        // C mounts without looking the objects up; a missing one fails on read.
        mo.check_objects = false;
        mo.overrides = cfs::kmount::KernelOverrides::from_environment();
        cfs::kmount::mount_image("/proc/self/fd/" + std::to_string(fd), mountpoint, mo);
        return 0;
      },
      -1);
}

}  // namespace

extern "C" {

int lcfs_mount_fd(int fd, const char* mountpoint, lcfs_mount_options_s* options) {
  return mount_fd(fd, mountpoint, options);
}

int lcfs_mount_image(const char* path, const char* mountpoint, lcfs_mount_options_s* options) {
  cfs::UniqueFd fd(open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return -1;
  return mount_fd(fd.get(), mountpoint, options);
}

}  // extern "C"
