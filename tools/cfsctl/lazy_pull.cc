#include "lazy_pull.h"

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>

#include "cfs/erofs/reader.h"
#include "cfs/error.h"
#include "cfs/fuse/image_fs.h"
#include "cfs/fuse/objects.h"
#include "cfs/fuse/server.h"
#include "cfs/oci/lazy.h"
#include "cfs/safe_open.h"

namespace cfs::cli {

static_assert(fuse::kPendingRedirectPrefix.substr(1, oci::kPendingRedirectDir.size()) ==
              oci::kPendingRedirectDir);

int run_lazy_pull(store::Repository& given, const LazyPullRequest& request) {
  fuse::check_mountpoint(request.mountpoint);
  fuse::check_fuse_device();
  // libfuse moves the process to / when it starts serving, and the fetching threads open the
  // repository by its path: an absolute one.
  store::Repository repo =
      store::Repository::open(std::filesystem::absolute(given.path()), store::LockMode::shared);
  if (!given.secure()) repo.set_insecure();
  std::unique_ptr<oci::LazyPull> lazy = oci::LazyPull::open(repo, request.source, request.options);
  const std::string name = lazy->source_name();

  // The provisional image goes through the strict reader like any image cfs-fuse serves; only
  // its redirects may name pending contents as well as objects (the object store checks
  // their form when a file is opened).
  erofs::ReaderOptions reader_options;
  reader_options.object_redirects_only = false;
  erofs::Image image =
      erofs::Image::open_fd(lazy->image_fd(), name + " (provisional image)", reader_options);
  image.validate();

  auto objects = std::make_unique<fuse::ObjectStore>(
      open_dir_beneath(repo.dirfd(), "objects", repo.path() + "/objects", true),
      repo.path() + "/objects",
      repo.secure() ? fuse::VerityPolicy::kernel : fuse::VerityPolicy::userspace);
  // A large content still being fetched is served chunk by chunk (each verified as it comes).
  objects->set_pending_resolver([&lazy](std::string_view hex) { return lazy->open_pending(hex); });

  std::mutex log_mutex;
  auto log = [&log_mutex](const std::string& line) {
    std::lock_guard lock(log_mutex);
    std::fprintf(stderr, "cfsctl: oci pull --lazy: %s\n", line.c_str());
  };
  fuse::ImageFs fs(std::move(image), std::move(objects), log);

  std::atomic<bool> stop{false};
  fuse::ServerOptions server;
  server.mountpoint = request.mountpoint;
  server.fsname = "cfs-lazy:" + name;
  server.foreground = true;
  server.log = log;
  server.on_serving = [&] {
    std::printf("serving %s at %s, %llu contents to fetch\n", name.c_str(),
                request.mountpoint.c_str(), static_cast<unsigned long long>(lazy->stats().pending));
    std::fflush(stdout);
  };
  server.in_mount = [&]() -> int {
    try {
      oci::PullResult r = lazy->finish(request.tag, request.rate_limit, &stop);
      oci::LazyStats s = lazy->stats();
      std::string out = request.summary(r);
      out += "lazy " + std::to_string(s.pending) + " contents: " + std::to_string(s.on_demand) +
             " fetched on demand, " + std::to_string(s.background) + " in the background; " +
             std::to_string(s.chunks_on_demand) + " chunks fetched for reads\n";
      out += "image " + r.image_id.hex() + " is wholly local; serving " + request.mountpoint +
             " until it is unmounted\n";
      std::fputs(out.c_str(), stdout);
      std::fflush(stdout);
      return 0;
    } catch (const std::exception& e) {
      log(std::string(stop ? "stopped before the end, nothing tagged: " : "") + e.what());
      return 1;
    }
  };
  server.on_stopped = [&] { stop = true; };
  return fuse::serve(fs, server);
}

}  // namespace cfs::cli
