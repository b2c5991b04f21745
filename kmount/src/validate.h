// The strict reader in front of the kernel: an image is validated in full, and the objects it
// names are looked up, before the kernel is asked to mount it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cfs/fd.h"

namespace cfs::kmount::detail {

struct ValidationResult {
  uint64_t inodes = 0;   // inodes the walk reached
  uint64_t objects = 0;  // object references: one per external file
  bool objects_checked = false;
  double validation_ms = 0;
  double object_check_ms = 0;
};

// Throws cfs::Error with the reader's "IMAGE: PATH: RULE" message for an invalid image, and
// names the missing objects (the first few, and how many) when check_objects is set and an
// object is in none of object_dirs (as a regular file, symlinks not followed).
ValidationResult validate_image(int image_fd, bool block_device, const std::string& image,
                                const std::vector<UniqueFd>& object_dirs, bool check_objects);

}  // namespace cfs::kmount::detail
