// cfsctl oci pull --lazy: the provisional image served through the cfs-fuse library in this
// process while the image's contents are fetched (cfs/oci/lazy.h).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "cfs/oci/oci.h"
#include "cfs/store/repository.h"

namespace cfs::cli {

struct LazyPullRequest {
  std::string source;
  std::optional<std::string> tag;
  oci::PullOptions options;
  std::string mountpoint;
  uint64_t rate_limit = 0;  // background fetch, compressed bytes per second (0: unlimited)
  // What a normal pull prints once it is done.
  std::function<std::string(const oci::PullResult&)> summary;
};

// Mounts the provisional image at request.mountpoint, fetches and pulls in the background,
// prints the result, and serves until the mount is unmounted (or SIGINT/SIGTERM/SIGHUP).
// Returns the exit status: 0 when the pull completed and was tagged.
int run_lazy_pull(store::Repository& repo, const LazyPullRequest& request);

}  // namespace cfs::cli
