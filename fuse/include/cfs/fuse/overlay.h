// Rootless overlay mode (cfs-fuse --overlay): the FUSE server serves only the image's
// metadata, as the lower layer of a kernel overlayfs mounted with userxattr in a user and
// mount namespace of its own, and the overlay reads object data straight from the object
// files (a data-only layer), as the root-only EROFS + overlayfs mount does.
//
// The kernel reads the objects itself here, so they are verified before the mount: with
// fs-verity on every object the overlay is mounted with verity=require (the kernel checks
// each file's digest at open and its pages on every read); otherwise each object the image
// names is digested in userspace first (verify_image_objects), and only objects that passed
// are ever named to the overlay (ImageFs::serve_as_overlay_lower).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "cfs/erofs/reader.h"
#include "cfs/fuse/image_fs.h"
#include "cfs/fuse/objects.h"
#include "cfs/fuse/server.h"

namespace cfs::fuse {

// What the pass over an image's objects found.
struct ObjectCheck {
  std::unordered_set<std::string> usable;  // object paths ("ab/cdef…") that passed
  std::vector<std::string> missing;        // object paths absent from the directory
  uint64_t bytes = 0;                      // total size of the usable objects
  uint64_t kernel_verity = 0;              // usable objects the kernel measured (fs-verity)
  uint64_t digested = 0;                   // usable objects digested in userspace
  bool all_have_digest = true;             // every external file's metacopy holds a digest
  double seconds = 0;
};

// Opens and verifies every object the image's external files name (ObjectStore::open: the
// redirect form, confinement, size, digest), on `threads` threads. A missing object is
// recorded in missing; any other failure throws ObjectError naming the object. Must run
// before serve_overlay (which needs a single-threaded process): the threads are joined here.
ObjectCheck verify_image_objects(const erofs::Image& image, const ObjectStore& objects,
                                 unsigned threads);

struct OverlayOptions {
  std::string mountpoint;
  std::string objects_dir;  // the data-only layer (absolute path)
  // A writable overlay: DIR/upper and DIR/work (created if absent) on a filesystem with user
  // xattrs. Without it the overlay is read-only.
  std::optional<std::string> upper;
  // Every usable object has kernel fs-verity: mount with verity=require.
  bool verity_require = false;
  // Run in the namespace once the overlay is mounted; its exit status becomes ours. Empty:
  // report the namespace's pid and serve until SIGINT/SIGTERM/SIGHUP.
  std::vector<std::string> command;
  // Where the "mounted" notice goes when there is no command.
  std::function<void(const std::string&)> notice;
};

// Enters a new user namespace (this user as root in it; as real root, every uid mapped to
// itself) and mount namespace, mounts fs (which must serve as overlay lower) through FUSE and
// the overlay over it at mountpoint, then runs the command or waits for a signal. Returns the
// command's exit status (128 + signal if it was killed), 0 after a signal, 1 if the overlay
// could not be mounted. Throws cfs::Error if the namespaces cannot be set up. The calling
// process must be single-threaded (a kernel rule for entering a user namespace).
int serve_overlay(const ImageFs& fs, ServerOptions server, const OverlayOptions& options);

}  // namespace cfs::fuse
