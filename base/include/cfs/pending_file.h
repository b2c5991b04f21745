// A content that is served while it is still being fetched: what a lazy pull (cfs/oci/lazy.h)
// hands the FUSE object store (cfs/fuse/objects.h) for a file it cannot give as an object yet.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "cfs/digest.h"

namespace cfs {

// A file of the content's size whose bytes are valid (fetched and verified) in the ranges
// ensure() returned for.
class PendingFile {
 public:
  virtual ~PendingFile() = default;
  // The file (read-only use).
  virtual int fd() const noexcept = 0;
  // Makes [offset, offset + length) present and verified. Thread-safe; throws cfs::Error
  // naming the file and the problem (a failure is not cached).
  virtual void ensure(uint64_t offset, uint64_t length) = 0;
};

// The answer for a pending content: the object holding it (fetched and verified first if need
// be), or a PendingFile.
struct PendingAnswer {
  std::optional<Digest> object;
  std::shared_ptr<PendingFile> file;
};

}  // namespace cfs
