// Repository::State, shared by the repository's modules (internal: not installed):
// repository.cc opens and creates repositories, object_store.cc writes and reads objects,
// repository_names.cc names them (images/, streams/ and their refs).
#pragma once

#include <sys/stat.h>

#include <bitset>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "cfs/error.h"
#include "cfs/store/repository.h"
#include "entries.h"
#include "fsutil.h"

namespace cfs::store {

// Committed objects are linked in batches: one syncfs makes a whole batch's data durable
// before any of its names appear. The limits bound open descriptors and dirty memory.
constexpr size_t kBatchMaxObjects = 256;
constexpr uint64_t kBatchMaxBytes = 256ull << 20;
constexpr size_t kWriteBuffer = 1 << 20;

struct PendingObject {
  UniqueFd fd;            // the data, not yet under its final name
  std::string temp_name;  // entry in objects/ for the named-temp fallback; empty for O_TMPFILE
  Digest id;
  uint64_t size = 0;
  bool replace = false;  // an existing object of a different size is corrupt: overwrite it
};

struct Repository::State {
  std::string path;
  UniqueFd dir;
  UniqueFd objects;
  RepoMeta meta;
  std::optional<uint32_t> erofs_override;  // set_erofs_version()
  bool has_meta = true;
  bool upgraded = false;  // open() wrote meta.json for an old composefs-rs repository
  bool secure = false;
  bool writable = true;
  std::string read_only_reason;
  bool tmpfile_unsupported = false;
  bool verity_unsupported = false;  // insecure repositories stop asking after one refusal
  std::vector<PendingObject> pending;
  std::unordered_map<Digest, size_t> pending_index;
  uint64_t pending_bytes = 0;
  std::bitset<256> object_dirs_present;  // objects/XX known to exist (saves a mkdirat each)

  std::string what(std::string_view rel) const { return detail::join(path, rel); }

  void require_writable() const {
    if (!writable) throw Error(path + ": repository is read-only (" + read_only_reason + ")");
  }

  // Existing object under its final name: its size, or nullopt.
  std::optional<uint64_t> stored_size(const Digest& id) const {
    auto st = detail::lstat_at(objects.get(), id.object_path(), what(object_repo_path(id)));
    if (!st || !S_ISREG(st->st_mode)) return std::nullopt;
    return static_cast<uint64_t>(st->st_size);
  }

  void link_pending(PendingObject& p);

  void flush_pending();

  // Everything committed so far is linked and durable: the point before which no image,
  // stream or ref may name it.
  void publish_barrier() {
    flush_pending();
    detail::syncfs_or_throw(dir.get(), path);
  }

  void discard_pending() noexcept;

  void add_pending(PendingObject p);

  // A new temporary file in objects/: O_TMPFILE (temp_name stays empty) or, where the
  // filesystem lacks it, a ".tmp-object-*" entry named in temp_name.
  UniqueFd new_temp(std::string& temp_name);

  // Takes a fully written temporary file: enables fs-verity where possible (secure
  // repositories require it and take the kernel's digest as the id), then queues it for
  // linking. userspace_id is the digest computed while writing (insecure repositories).
  Digest finish_object(UniqueFd fd, std::string temp_name, uint64_t size, std::optional<Digest> id);

  UniqueFd open_final_object(const Digest& id) const;

  std::optional<std::string> resolve_ref(const std::string& link) const {
    return detail::resolve_ref_chain(dir.get(), link);
  }
  std::optional<Digest> entry_object(const std::string& entry) const {
    return detail::entry_object(dir.get(), entry, meta.algorithm);
  }

  void set_ref(const std::string& namespace_dir, std::string_view name,
               const std::string& entry_rel);

  void walk_refs(const std::string& ns,
                 const std::function<void(const std::string&, const std::string&)>& fn) const {
    detail::walk_refs(dir.get(), path, ns, fn);
  }
};

}  // namespace cfs::store
