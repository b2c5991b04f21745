// Garbage collection. Roots are the named refs: images/refs/** and streams/refs/**. From
// them the collector marks images (and every object their files point to), streams (their
// object refs, and their stream refs / named refs, following any that are streams or images
// themselves), then removes every image entry, stream entry and object that was not marked,
// plus broken refs and temporary files left by interrupted commands.
//
// Removal order keeps the repository consistent if the collector is interrupted: unreached
// names go first, objects after, so no surviving name ever points at a removed object.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "cfs/store/repository.h"

namespace cfs::store {

struct GcOptions {
  bool dry_run = false;  // report what would be removed; change nothing
  // Kept alive for this collection as if a ref named them: each is an image (id, or ref below
  // images/refs) or a stream (name below streams/, or ref below streams/refs). A root that
  // names nothing is an error before anything is removed.
  std::vector<std::string> extra_roots;
  // How long to wait for the exclusive lock while other processes (readers, a cfs-fuse mount)
  // hold the repository: nullopt waits for as long as it takes, zero not at all. Giving up is
  // an Error naming the holders; nothing has been removed then.
  std::optional<std::chrono::milliseconds> lock_timeout;
  // Told, while gc waits for the lock, which processes hold it (called again if they change).
  std::function<void(const std::string& message)> on_wait;
  // Caches kept beside the store whose entries name objects (the OCI content index and eStargz
  // tails: oci::prune_caches). Called with the exclusive lock held, after the marking and
  // before anything is removed, with whether an object survives the collection; returns how
  // many entries it removed (would remove, on a dry run).
  std::function<uint64_t(const std::function<bool(const Digest&)>& kept, bool dry_run)>
      prune_caches;
};

struct GcResult {
  uint64_t objects_removed = 0;
  uint64_t bytes_freed = 0;  // sum of the removed objects' sizes
  uint64_t objects_kept = 0;
  uint64_t images_removed = 0;
  uint64_t streams_removed = 0;
  uint64_t refs_pruned = 0;  // broken refs below images/refs and streams/refs
  uint64_t temp_files_removed = 0;
  uint64_t cache_entries_removed = 0;  // by GcOptions::prune_caches
};

// Takes the exclusive repository lock for the collection (not for a dry run; see
// GcOptions::lock_timeout for how long it waits) and returns
// to the shared lock afterwards. Other Repository objects of the same process must not be
// open on this repository, or this waits forever. Refuses to delete anything (throws) if a
// reachable image or stream cannot be read, since its references would be unknown.
GcResult collect_garbage(Repository& repo, const GcOptions& options = {});

}  // namespace cfs::store
