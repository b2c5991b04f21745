// Build a Tree from a directory on disk (mkcomposefs DIR, cfsctl create-image/compute-id).
// Unlike C mkcomposefs, hardlinks are detected (st_dev/st_ino) and become shared inodes.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "cfs/digest.h"
#include "cfs/erofs/format.h"
#include "cfs/erofs/tree.h"

namespace cfs::erofs {

inline constexpr size_t kInlineThreshold = 64;  // files of at most this size are stored inline

struct ScanOptions {
  size_t inline_max = kInlineThreshold;
  bool skip_xattrs = false;       // --skip-xattrs
  bool user_xattrs_only = false;  // --user-xattrs: keep only user.*
  bool use_epoch = false;         // --use-epoch: every mtime is 0
  bool skip_devices = false;      // --skip-devices
  bool detect_hardlinks = true;
  // Longest symlink target: kSymlinkMaxCfs for cfs's own commands, kSymlinkMaxCompat for the
  // mkcomposefs drop-in (format.h). Longer ones are an error, not an image the reader refuses.
  size_t max_symlink = kSymlinkMaxCfs;
};

// Receives each regular file larger than inline_max: an fd open for reading at offset 0,
// its size and its path (for messages). Stores the data wherever the caller wants (digest
// store, repository, nowhere) and returns its fs-verity digest, which becomes the file's
// digest and (as digest.object_path()) its payload.
using ObjectSink = std::function<Digest(int fd, uint64_t size, const std::string& path)>;

Tree scan_directory(const std::string& dir, const ScanOptions& options, const ObjectSink& sink);

}  // namespace cfs::erofs
