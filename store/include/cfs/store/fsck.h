// Repository consistency check. Every problem is one error string
// "<kind>: <repository-relative path>: <detail>", with kinds as composefs-rs names them
// (object-digest-mismatch, broken-symlink, missing-object-ref, image-missing-object, ...).
//
// Objects: the name must be a digest of the repository's algorithm and the data must hash
// to it; secure repositories compare the kernel's fs-verity measurement, insecure ones
// re-read and hash the data. Streams: symlinks into objects/, parseable, every object ref
// and named ref present, the stream decodes to its recorded size. Images: symlinks into
// objects/, accepted by the strict EROFS reader, every referenced object present. Refs: no
// broken symlinks. Temporary files left by interrupted commands are not errors (gc removes
// them).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cfs/store/repository.h"

namespace cfs::store {

struct FsckOptions {
  bool metadata_only = false;  // skip hashing object data
  unsigned threads = 0;        // 0: one per CPU
};

struct FsckReport {
  bool has_metadata = false;
  uint64_t objects_checked = 0;
  uint64_t objects_corrupted = 0;
  uint64_t streams_checked = 0;
  uint64_t streams_corrupted = 0;
  uint64_t images_checked = 0;
  uint64_t images_corrupted = 0;
  uint64_t broken_links = 0;
  uint64_t missing_objects = 0;
  std::vector<std::string> errors;

  bool ok() const noexcept { return errors.empty(); }
};

FsckReport fsck(const Repository& repo, const FsckOptions& options = {});

}  // namespace cfs::store
