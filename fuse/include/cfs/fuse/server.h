// Serving an ImageFs through the libfuse 3 low-level API: read-only, multi-threaded, with
// long kernel cache timeouts (the image never changes) and zero-copy reads.
//
// Run as root on a kernel with FUSE passthrough (Linux 6.9+), opened object files are read by
// the kernel directly, at the speed of the kernel mount; unprivileged servers (the kernel grants
// backing files only to CAP_SYS_ADMIN) and older kernels serve object data themselves.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "cfs/fuse/image_fs.h"

namespace cfs::fuse {

struct ServerOptions {
  std::string mountpoint;
  // Extra -o options for libfuse / fusermount3 (e.g. allow_other). "ro" and
  // "default_permissions" are always added.
  std::vector<std::string> mount_options;
  std::string fsname = "cfs";  // shown as the mount source
  bool foreground = false;
  bool debug = false;  // libfuse request tracing (-d)
  // Splice object pages into /dev/fuse instead of pread + writev. Off by default: measured
  // here (kernel 6.18, 128 KiB requests) splicing halves cold sequential throughput, the
  // per-request pipe set-up costing more than the copy it saves.
  bool splice = false;
  // FUSE passthrough for object files when the server has CAP_SYS_ADMIN and the kernel offers
  // it; false keeps every read in the server (for comparisons and debugging).
  bool passthrough = true;
  unsigned idle_threads = 8;
  // One thread reads and answers every request. Cheaper per request where requests come one
  // at a time (metadata walks: about half the server CPU per request measured on 6.18, where
  // the multi-threaded loop hands consecutive requests to different threads), but serialises
  // reads that the kernel would send in parallel: for servers that serve no file data.
  bool single_threaded = false;
  // Log the requests served, per opcode (and getxattr per name), when the session ends.
  bool stats = false;
  double cache_seconds = 365.0 * 24 * 3600;  // entry/attr/negative-lookup timeouts
  // Called once the mount is up and the process is final (after daemonising), before
  // requests are served: e.g. to switch logging to syslog.
  std::function<void()> on_serving;
  // If set: run on a thread of its own once the mount is up, while requests are served (the
  // overlay mode builds its overlay on the mount there). It must leave nothing mounted that
  // keeps the connection alive when it returns: serve() then waits for the connection to end
  // and returns its value.
  std::function<int()> in_mount;
  // Called once the connection has ended (unmounted, or a signal), before waiting for
  // in_mount: e.g. to tell it to stop.
  std::function<void()> on_stopped;
  // Notices about the connection (FUSE passthrough on or off, and why).
  std::function<void(const std::string&)> log;
};

// Checks the mountpoint and /dev/fuse, then mounts. Throws cfs::Error with a clear message if
// anything fails before the filesystem is up (the caller exits non-zero, still in the
// foreground). Then daemonises unless options.foreground, serves until unmounted
// (fusermount3 -u / umount) or SIGINT/SIGTERM/SIGHUP, unmounts and returns the exit status.
int serve(const ImageFs& fs, const ServerOptions& options);

// The pre-mount checks alone (also used by serve()).
void check_mountpoint(const std::string& mountpoint);
void check_fuse_device();

}  // namespace cfs::fuse
