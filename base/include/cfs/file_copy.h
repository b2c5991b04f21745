// Copying file data between descriptors.
#pragma once

#include <cstdint>
#include <string>

namespace cfs {

// Copies size bytes of in, starting at in_offset, to out at out's current file offset:
// copy_file_range(2) (in-kernel, sharing extents where the filesystem can), falling back to
// pread/write where the kernel refuses it for these two files (different filesystems, old
// kernels, special files). Throws when in ends before size bytes were copied.
void copy_file_data(int in, uint64_t in_offset, int out, uint64_t size, const std::string& what);

}  // namespace cfs
