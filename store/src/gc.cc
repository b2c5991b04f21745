#include "cfs/store/gc.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <set>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "cfs/error.h"
#include "cfs/repo_layout.h"
#include "cfs/store/images.h"
#include "entries.h"
#include "fsutil.h"

namespace cfs::store {

using detail::join;

namespace {

class Collector {
 public:
  Collector(Repository& repo) : repo_(repo), dirfd_(repo.dirfd()), alg_(repo.algorithm()) {}

  void index() {
    detail::for_each_namespace_entry(dirfd_, repo_.path(), "images", [&](const std::string& name) {
      if (auto id = Digest::from_hex(name, alg_)) image_entries_.insert(*id);
    });
    detail::for_each_namespace_entry(dirfd_, repo_.path(), "streams", [&](const std::string& name) {
      auto object = detail::entry_object(dirfd_, repo_layout::stream_entry(name), alg_);
      stream_entries_.emplace(name, object);
      if (object) streams_by_object_[*object].push_back(name);
    });
  }

  void mark_roots(const std::vector<std::string>& extra_roots) {
    for (const std::string& root : extra_roots) {
      root_ = "gc --root " + root;
      mark_extra_root(root);
    }
    for (const char* ns : {"images", "streams"}) {
      detail::walk_refs(dirfd_, repo_.path(), ns, [&](const std::string&, const std::string& link) {
        // A ref names an entry of its own namespace.
        auto entry = detail::resolve_ref_chain(dirfd_, link);
        root_ = link;
        if (entry && entry->starts_with(std::string(ns) + "/")) {
          mark_entry(*entry);
          drain();
        }
      });
    }
    root_.clear();
    drain();
    // An image entry whose object is live for another reason (e.g. a stream's named ref
    // points to it) stays, so its files must stay too.
    for (bool changed = true; changed;) {
      changed = false;
      for (const Digest& id : image_entries_) {
        if (live_.count(id) && !live_images_.count(id)) {
          mark_image(id);
          changed = true;
        }
      }
      drain();
    }
  }

  GcResult sweep(bool dry_run, const GcOptions& options) {
    GcResult result;
    // 0. Caches naming objects: before the objects, like every name.
    if (options.prune_caches)
      result.cache_entries_removed =
          options.prune_caches([this](const Digest& id) { return live_.count(id) > 0; }, dry_run);
    // 1. Names first: after this no surviving name points at anything about to go.
    for (const Digest& id : image_entries_) {
      if (live_images_.count(id)) continue;
      ++result.images_removed;
      if (!dry_run) unlink_rel(repo_layout::image_entry(id));
    }
    for (const auto& [name, object] : stream_entries_) {
      if (live_streams_.count(name)) continue;
      ++result.streams_removed;
      if (!dry_run) unlink_rel(repo_layout::stream_entry(name));
    }
    for (const char* ns : {"images", "streams"}) {
      detail::walk_refs(dirfd_, repo_.path(), ns, [&](const std::string&, const std::string& link) {
        auto entry = detail::resolve_ref_chain(dirfd_, link);
        bool ok = entry && detail::entry_target_exists(dirfd_, *entry, alg_);
        if (ok) return;
        ++result.refs_pruned;
        if (!dry_run) unlink_rel(link);
      });
    }
    // 2. Objects.
    const std::string objects_what = join(repo_.path(), "objects");
    UniqueFd objects = detail::open_dir_at(dirfd_, "objects", objects_what);
    detail::for_each_entry(objects.get(), objects_what, [&](const std::string& sub, unsigned char) {
      if (sub.starts_with(".tmp-")) {
        // Left by an interrupted writer (named-temp fallback); nobody else holds the lock.
        ++result.temp_files_removed;
        if (!dry_run) ::unlinkat(objects.get(), sub.c_str(), 0);
        return;
      }
      if (sub.size() != 2) return;
      const std::string sub_what = join(objects_what, sub);
      UniqueFd dir = detail::open_dir_if_exists(objects.get(), sub, sub_what);
      if (!dir) return;
      detail::for_each_entry(dir.get(), sub_what, [&](const std::string& name, unsigned char) {
        auto id = Digest::from_object_path(sub + "/" + name);
        if (!id || id->algorithm() != alg_) return;  // not ours to judge; fsck reports it
        if (live_.count(*id)) {
          ++result.objects_kept;
          return;
        }
        auto st = detail::lstat_at(dir.get(), name, join(sub_what, name));
        if (!st) return;
        ++result.objects_removed;
        result.bytes_freed += static_cast<uint64_t>(st->st_size);
        if (!dry_run && ::unlinkat(dir.get(), name.c_str(), 0) < 0 && errno != ENOENT)
          throw_errno(join(sub_what, name) + ": removing");
      });
    });
    // 3. Temporary symlinks from interrupted ref updates.
    for (const char* ns : {"images", "streams", "images/refs", "streams/refs"}) {
      UniqueFd dir = detail::open_dir_if_exists(dirfd_, ns, join(repo_.path(), ns));
      if (!dir) continue;
      detail::for_each_entry(dir.get(), join(repo_.path(), ns),
                             [&](const std::string& name, unsigned char) {
                               if (!name.starts_with(".symlink-")) return;
                               ++result.temp_files_removed;
                               if (!dry_run) ::unlinkat(dir.get(), name.c_str(), 0);
                             });
    }
    if (!dry_run) detail::syncfs_or_throw(dirfd_, repo_.path());
    return result;
  }

 private:
  // A first-level entry ("images/<hex>" or "streams/<name>"): marks it if it exists.
  bool mark_entry(const std::string& entry) {
    if (entry.starts_with("images/")) {
      auto id = Digest::from_hex(entry.substr(7), alg_);
      if (!id || !image_entries_.count(*id)) return false;
      mark_image(*id);
      return true;
    }
    if (entry.starts_with("streams/") && stream_entries_.count(entry.substr(8))) {
      mark_stream_entry(entry.substr(8));
      return true;
    }
    return false;
  }

  void mark_extra_root(const std::string& root) {
    bool found = mark_entry("images/" + root);
    found |= mark_entry(repo_layout::stream_entry(root));
    // Ref names: resolve_ref_chain refuses links that leave the repository.
    bool plain = !root.empty() && root.front() != '/' && root.find("..") == std::string::npos;
    for (const char* ns : {"images", "streams"}) {
      if (!plain) break;
      if (auto entry = detail::resolve_ref_chain(dirfd_, std::string(ns) + "/refs/" + root))
        found |= mark_entry(*entry);
    }
    if (!found)
      throw Error(repo_.path() + ": gc root \"" + root +
                  "\" names no image (id or images/refs name) or stream (streams/ or "
                  "streams/refs name); nothing was removed");
  }

  void mark_image(const Digest& id) {
    if (!live_images_.insert(id).second) return;
    live_.insert(id);
    if (!repo_.has_object(id)) return;  // fsck reports it; nothing to follow
    try {
      erofs::Image image = open_image_reader(repo_, id.hex());
      for (const Digest& object : image_objects(image, alg_)) live_.insert(object);
    } catch (const Error& e) {
      // The image's references are unknown, so nothing may be removed; say which name keeps
      // it alive and how to drop that name, so the collection can proceed afterwards.
      throw Error(join(repo_.path(), repo_layout::image_entry(id)) +
                  ": the strict image reader refuses it (" + e.what() + "); it is kept alive by " +
                  root_description() + ", so gc removed nothing. " + removal_hint());
    }
  }

  std::string root_description() const {
    if (root_.empty()) return "a reference from another stream or image";
    if (root_.starts_with("gc --root")) return "'" + root_ + "'";
    return join(repo_.path(), root_);
  }

  // The command that removes the name keeping a bad image alive.
  std::string removal_hint() const {
    const std::string repo = "cfsctl --repo " + repo_.path();
    if (root_.starts_with("gc --root")) return "Run gc without that --root.";
    if (root_.starts_with("streams/refs/oci/"))
      return "Remove its OCI tag with `" + repo + " oci untag TAG` (the tag stored as " + root_ +
             "), then run gc again.";
    if (root_.starts_with("images/refs/") || root_.starts_with("streams/refs/"))
      return "Remove the ref with `rm " + join(repo_.path(), root_) +
             "` (cfsctl has no command that deletes image refs), then run gc again.";
    return "Remove the stream or tag that references it (e.g. `" + repo +
           " oci untag TAG`), then run gc again.";
  }

  void mark_stream_entry(const std::string& name) {
    if (!live_streams_.insert(name).second) return;
    auto it = stream_entries_.find(name);
    if (it != stream_entries_.end() && it->second) queue_.push_back(*it->second);
  }

  // Follows every edge from stream objects until no new stream is reached.
  void drain() {
    while (!queue_.empty()) {
      Digest object = queue_.back();
      queue_.pop_back();
      if (!walked_streams_.insert(object).second) continue;
      live_.insert(object);
      if (!repo_.has_object(object)) continue;
      UniqueFd fd = repo_.open_object(object);
      SplitStreamReader reader =
          SplitStreamReader::from_fd(fd.get(), alg_, join(repo_.path(), object_repo_path(object)));
      for (const Digest& ref : reader.object_refs()) live_.insert(ref);
      for (const Digest& ref : reader.stream_refs()) mark_edge(ref);
      for (const NamedRef& ref : reader.named_refs()) mark_edge(ref.target);
    }
  }

  // A stream ref / named ref target: an object, maybe a stream or an image.
  void mark_edge(const Digest& target) {
    live_.insert(target);
    if (auto it = streams_by_object_.find(target); it != streams_by_object_.end())
      for (const std::string& name : it->second) mark_stream_entry(name);
    if (image_entries_.count(target)) mark_image(target);
  }

  // Removes a name beneath the repository root; no symlink on the way is followed.
  void unlink_rel(const std::string& rel) {
    detail::unlink_at(dirfd_, rel, join(repo_.path(), rel));
  }

  Repository& repo_;
  int dirfd_;
  HashAlgorithm alg_;
  std::set<Digest> image_entries_;
  std::map<std::string, std::optional<Digest>> stream_entries_;
  std::unordered_map<Digest, std::vector<std::string>> streams_by_object_;
  std::unordered_set<Digest> live_;
  std::unordered_set<Digest> live_images_;
  std::set<std::string> live_streams_;
  std::unordered_set<Digest> walked_streams_;
  std::vector<Digest> queue_;
  std::string root_;  // the root being marked: a ref path or "gc --root NAME"
};

}  // namespace

namespace {

// Converts the shared lock to the exclusive one, telling options.on_wait who holds the
// repository meanwhile and giving up after options.lock_timeout.
void acquire_exclusive(Repository& repo, const GcOptions& options) {
  if (repo.try_relock(LockMode::exclusive)) return;
  std::string holders = describe_lock_holders(repo.dirfd());
  auto give_up = [&](const std::string& why) {
    // Back to the shared lock this Repository is expected to hold; if even that is refused
    // (another gc runs) the command is ending anyway.
    repo.try_relock(LockMode::shared);
    throw Error(repo.path() + ": the repository is in use by " + holders + "; gc " + why +
                " and removed nothing (readers such as a cfs-fuse mount hold the lock until "
                "they exit)");
  };
  if (options.lock_timeout && options.lock_timeout->count() <= 0)
    give_up("did not wait (--no-wait)");
  if (options.on_wait) options.on_wait("gc: waiting for the repository lock held by " + holders);
  if (!options.lock_timeout) {
    repo.relock(LockMode::exclusive);
    return;
  }
  const auto deadline = std::chrono::steady_clock::now() + *options.lock_timeout;
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (repo.try_relock(LockMode::exclusive)) return;
    std::string now = describe_lock_holders(repo.dirfd());
    if (now != holders) {
      holders = now;
      if (options.on_wait)
        options.on_wait("gc: waiting for the repository lock held by " + holders);
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      auto ms = options.lock_timeout->count();
      give_up("gave up after waiting " +
              (ms % 1000 == 0 ? std::to_string(ms / 1000) + " s" : std::to_string(ms) + " ms") +
              " for the lock");
    }
  }
}

}  // namespace

GcResult collect_garbage(Repository& repo, const GcOptions& options) {
  if (!options.dry_run) {
    repo.require_writable();
    repo.sync();  // our own pending objects must not look unreferenced
    acquire_exclusive(repo, options);
  }
  struct Relock {
    Repository& repo;
    bool active;
    ~Relock() {
      if (active) {
        try {
          repo.relock(LockMode::shared);
        } catch (const std::exception&) {
          // Still holding the exclusive lock is safe, just less concurrent.
        }
      }
    }
  } relock{repo, !options.dry_run};
  Collector collector(repo);
  collector.index();
  collector.mark_roots(options.extra_roots);
  return collector.sweep(options.dry_run, options);
}

}  // namespace cfs::store
