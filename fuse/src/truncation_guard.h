// The server maps the image; if someone truncates the file underneath it, touching the lost
// pages raises SIGBUS. The guard turns that into zero pages plus a flag, so the faulting
// access completes, the server answers EIO from then on, and nothing crashes.
#pragma once

#include <cstddef>
#include <span>

namespace cfs::fuse {

// Installs the SIGBUS handler for this one mapping (the process serves one image).
void guard_image_mapping(std::span<const std::byte> mapping);
// True once any access hit a truncated part of the guarded mapping.
bool image_mapping_truncated() noexcept;

}  // namespace cfs::fuse
