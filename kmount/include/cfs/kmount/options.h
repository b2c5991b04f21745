// The mount.composefs helper interface (the C tool's -o options), for `mount -t composefs`.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "cfs/kmount/mount.h"

namespace cfs::kmount {

// Splits a mount option string at unescaped commas; "\," is a literal comma, "\\" a backslash.
std::vector<std::string> split_mount_options(std::string_view text);

// Applies the composefs options to *options: basedir=P1[:P2...], digest=HEX (implies verity,
// like the C tool), verity, tryverity, upperdir=, workdir=, idmap=, ro, rw. Throws cfs::Error
// naming an unknown or malformed option. fstab-only options (defaults, nofail, auto, noauto,
// x-*) are accepted and ignored.
void apply_composefs_options(std::string_view text, MountOptions* options);

// The image file for the helper's SOURCE argument. busybox mount binds a regular-file source to
// a loop device before it runs the helper; for a loop device this returns its backing file (read
// from sysfs_block, /sys/dev/block in production), so the image is opened, measured and
// mounted as the file it is and the loop device is released. Anything else is returned as is.
// Throws cfs::Error when the backing file was deleted.
std::string helper_image_source(const std::string& source,
                                const std::string& sysfs_block = "/sys/dev/block");

}  // namespace cfs::kmount
