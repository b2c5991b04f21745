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

}  // namespace cfs::kmount
