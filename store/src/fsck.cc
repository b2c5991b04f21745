#include "cfs/store/fsck.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>

#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fsverity.h"
#include "cfs/kernel_verity.h"
#include "cfs/repo_layout.h"
#include "cfs/safe_open.h"
#include "cfs/store/images.h"
#include "entries.h"
#include "fsutil.h"

namespace cfs::store {

using detail::join;

namespace {

bool is_lower_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

class Checker {
 public:
  Checker(const Repository& repo, const FsckOptions& options, FsckReport& report)
      : repo_(repo),
        options_(options),
        report_(report),
        dirfd_(repo.dirfd()),
        alg_(repo.algorithm()) {}

  void check_objects() {
    const std::string what = join(repo_.path(), "objects");
    UniqueFd objects = detail::open_dir_at(dirfd_, "objects", what);
    std::vector<std::string> subdirs;
    detail::for_each_entry(objects.get(), what, [&](const std::string& name, unsigned char type) {
      if (name.starts_with(".tmp-")) return;  // interrupted writer; gc removes it
      auto t = detail::entry_type(objects.get(), name, type, join(what, name));
      if (name.size() != 2 || !is_lower_hex(name) || t != DT_DIR) {
        error("object-invalid-name", "objects/" + name, "not a two-hex-digit object directory");
        return;
      }
      subdirs.push_back(name);
    });
    std::sort(subdirs.begin(), subdirs.end());
    unsigned threads = options_.threads ? options_.threads : std::thread::hardware_concurrency();
    threads = std::clamp<unsigned>(threads, 1, 16);
    std::atomic<size_t> next{0};
    std::vector<std::exception_ptr> failures(threads);
    auto worker = [&](unsigned index) {
      try {
        for (size_t i; (i = next.fetch_add(1)) < subdirs.size();)
          check_object_dir(objects.get(), subdirs[i]);
      } catch (...) {
        failures[index] = std::current_exception();
      }
    };
    std::vector<std::thread> pool;
    for (unsigned t = 1; t < threads; ++t) pool.emplace_back(worker, t);
    worker(0);
    for (auto& t : pool) t.join();
    for (auto& f : failures)
      if (f) std::rethrow_exception(f);
  }

  void check_streams() {
    detail::for_each_namespace_entry(dirfd_, repo_.path(), "streams", [&](const std::string& name) {
      const std::string rel = repo_layout::stream_entry(name);
      ++report_.streams_checked;
      auto object = linked_object(rel);
      if (!object) {
        ++report_.streams_corrupted;
        return;
      }
      try {
        UniqueFd fd = repo_.open_object(*object);
        SplitStreamReader reader = SplitStreamReader::from_fd(fd.get(), alg_, rel);
        bool bad = false;
        for (const Digest& ref : reader.object_refs())
          bad |= !require_object(ref, "missing-object-ref", rel, "object ");
        for (const NamedRef& ref : reader.named_refs())
          bad |= !require_object(ref.target, "missing-named-ref", rel,
                                 "named ref '" + ref.name + "' -> ");
        if (!bad) {
          uint64_t total = 0;
          reader.for_each_chunk([&](std::span<const std::byte> data) { total += data.size(); },
                                [&](const Digest& ref) { total += object_size(ref); });
          if (total != reader.stream_size()) {
            error("stream-read-failed", rel,
                  "reassembles to " + std::to_string(total) + " bytes, header says " +
                      std::to_string(reader.stream_size()));
            bad = true;
          }
        }
        if (bad) ++report_.streams_corrupted;
      } catch (const Error& e) {
        error("stream-read-failed", rel, e.what());
        ++report_.streams_corrupted;
      }
    });
  }

  void check_images() {
    detail::for_each_namespace_entry(dirfd_, repo_.path(), "images", [&](const std::string& name) {
      const std::string rel = "images/" + name;
      ++report_.images_checked;
      auto id = Digest::from_hex(name, alg_);
      if (!id) {
        error("image-invalid", rel,
              "entry name is not a " + std::string(algorithm_name(alg_)) + " image id");
        ++report_.images_corrupted;
        return;
      }
      auto object = linked_object(rel);
      if (!object) {
        ++report_.images_corrupted;
        return;
      }
      if (*object != *id) {
        error("image-invalid", rel, "links to object " + object->hex() + ", not its own id");
        ++report_.images_corrupted;
        return;
      }
      try {
        UniqueFd fd = repo_.open_object(*object);
        erofs::Image image = erofs::Image::open_fd(fd.get(), rel);
        bool bad = false;
        for (const Digest& ref : image_objects(image, alg_))
          bad |= !require_object(ref, "image-missing-object", rel, "object ");
        if (bad) ++report_.images_corrupted;
      } catch (const Error& e) {
        error("image-invalid", rel, e.what());
        ++report_.images_corrupted;
      }
    });
  }

  void check_refs() {
    for (const char* ns : {"images", "streams"}) {
      detail::walk_refs(dirfd_, repo_.path(), ns, [&](const std::string&, const std::string& link) {
        auto entry = detail::resolve_ref_chain(dirfd_, link);
        if (!entry) {
          error("broken-symlink", link, "does not resolve inside the repository");
          ++report_.broken_links;
          return;
        }
        if (!entry->starts_with(std::string(ns) + "/")) {
          error("broken-symlink", link,
                "points outside " + std::string(ns) + "/: " + escape_for_log(*entry));
          ++report_.broken_links;
          return;
        }
        if (!detail::entry_target_exists(dirfd_, *entry, alg_)) {
          error("broken-symlink", link, "target " + escape_for_log(*entry) + " does not exist");
          ++report_.broken_links;
        }
      });
    }
  }

 private:
  void error(const std::string& kind, const std::string& rel, const std::string& detail) {
    std::lock_guard lock(mutex_);
    // rel holds names read from the repository's directories: escaped for the terminal.
    report_.errors.push_back(kind + ": " + escape_for_log(rel) + ": " + detail);
  }

  // True if object id exists; otherwise reports "<kind>: <rel>: <named><hex> does not
  // exist" and counts it missing.
  bool require_object(const Digest& id, const std::string& kind, const std::string& rel,
                      std::string_view named) {
    if (object_exists(id)) return true;
    error(kind, rel, std::string(named) + id.hex() + " does not exist");
    ++report_.missing_objects;
    return false;
  }

  bool object_exists(const Digest& id) const {
    auto st = detail::lstat_at(dirfd_, object_repo_path(id), object_repo_path(id));
    return st && S_ISREG(st->st_mode);
  }
  uint64_t object_size(const Digest& id) const {
    auto st = detail::lstat_at(dirfd_, object_repo_path(id), object_repo_path(id));
    return st ? static_cast<uint64_t>(st->st_size) : 0;
  }

  // The object an images/ or streams/ entry links to, reporting why if it cannot.
  std::optional<Digest> linked_object(const std::string& rel) {
    auto st = detail::lstat_at(dirfd_, rel, join(repo_.path(), rel));
    if (!st) return std::nullopt;
    if (!S_ISLNK(st->st_mode)) {
      error("entry-not-symlink", rel, "expected a symlink into objects/");
      return std::nullopt;
    }
    auto object = detail::entry_object(dirfd_, rel, alg_);
    if (!object) {
      error("broken-symlink", rel, "does not link to an object path");
      ++report_.broken_links;
      return std::nullopt;
    }
    if (!object_exists(*object)) {
      error("broken-symlink", rel, "object " + object->hex() + " does not exist");
      ++report_.broken_links;
      ++report_.missing_objects;
      return std::nullopt;
    }
    return object;
  }

  void check_object_dir(int objects_fd, const std::string& sub) {
    const std::string what = join(join(repo_.path(), "objects"), sub);
    UniqueFd dir = detail::open_dir_at(objects_fd, sub, what);
    const size_t rest_len = digest_size(alg_) * 2 - 2;
    detail::for_each_entry(dir.get(), what, [&](const std::string& name, unsigned char type) {
      const std::string rel = "objects/" + sub + "/" + name;
      {
        std::lock_guard lock(mutex_);
        ++report_.objects_checked;
      }
      auto corrupt = [&](const char* kind, const std::string& detail) {
        error(kind, rel, detail);
        std::lock_guard lock(mutex_);
        ++report_.objects_corrupted;
      };
      if (name.size() != rest_len || !is_lower_hex(name)) {
        corrupt("object-invalid-name", "not a " + std::string(algorithm_name(alg_)) + " digest");
        return;
      }
      auto expected = Digest::from_object_path(sub + "/" + name);
      if (detail::entry_type(dir.get(), name, type, rel) != DT_REG) {
        corrupt("unexpected-file-type", "not a regular file");
        return;
      }
      UniqueFd owned;
      try {
        owned = open_regular_beneath(dir.get(), name, O_RDONLY, rel);
      } catch (const Error& e) {
        corrupt("object-open-failed", e.what());
        return;
      }
      const int fd = owned.get();
      try {
        if (repo_.secure()) {
          auto measured = measure_verity(fd, alg_, rel);
          if (!measured) {
            corrupt("object-verity-missing", "fs-verity is not enabled");
            return;
          }
          if (*measured != *expected) {
            corrupt("object-digest-mismatch", "fs-verity digest is " + measured->hex());
            return;
          }
        }
        if (options_.metadata_only) return;
        Digest actual = fsverity_digest_fd(fd, alg_, rel);
        if (actual != *expected)
          corrupt("object-digest-mismatch", "content digest is " + actual.hex());
      } catch (const Error& e) {
        corrupt("object-check-failed", e.what());
      }
    });
  }

  const Repository& repo_;
  const FsckOptions& options_;
  FsckReport& report_;
  int dirfd_;
  HashAlgorithm alg_;
  std::mutex mutex_;
};

}  // namespace

FsckReport fsck(const Repository& repo, const FsckOptions& options) {
  FsckReport report;
  report.has_metadata = repo.has_meta();
  Checker checker(repo, options, report);
  checker.check_objects();
  checker.check_streams();
  checker.check_images();
  checker.check_refs();
  return report;
}

}  // namespace cfs::store
