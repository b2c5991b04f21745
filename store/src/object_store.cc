// Objects: written to temporary files, given fs-verity where possible, linked under their
// digest in batches (one syncfs per batch), and opened again by digest.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <thread>

#include "cfs/atomic_file.h"
#include "cfs/error.h"
#include "cfs/file_copy.h"
#include "cfs/fsverity.h"
#include "cfs/kernel_verity.h"
#include "cfs/repo_layout.h"
#include "cfs/safe_open.h"
#include "cfs/store/refs.h"
#include "repository_state.h"
#include "tempfile.h"

namespace cfs::store {

using detail::create_named_temp;
using detail::link_tmpfile;
using detail::open_tmpfile;
using detail::rename_noreplace;
using detail::reopen_read_only;

// ---------------------------------------------------------------------------------------
// Repository::State: the batch of committed objects not linked yet

void Repository::State::link_pending(PendingObject& p) {
  const std::string final_name = p.id.object_path();
  const std::string w = what(object_repo_path(p.id));
  const uint8_t first = p.id.bytes()[0];
  const std::string sub_name = final_name.substr(0, 2);
  const std::string rest = final_name.substr(3);
  if (!object_dirs_present[first]) {
    detail::make_dir_at(objects.get(), sub_name, 0755, what("objects/" + sub_name));
    object_dirs_present[first] = true;
  }
  // Linked relative to objects/XX opened without following symlinks, so a fan-out
  // directory replaced by a symlink is refused instead of written through.
  UniqueFd sub = detail::open_dir_at(objects.get(), sub_name, what("objects/" + sub_name));
  if (p.temp_name.empty()) {
    if (!p.replace) {
      link_tmpfile(p.fd.get(), sub.get(), rest, w);  // exists: a concurrent writer
      return;
    }
    // Replacing needs a name to rename from.
    for (;;) {
      p.temp_name = ".tmp-object-" + random_suffix();
      if (link_tmpfile(p.fd.get(), objects.get(), p.temp_name, w)) break;
    }
  }
  if (p.replace) {
    if (::renameat(objects.get(), p.temp_name.c_str(), sub.get(), rest.c_str()) < 0)
      throw_errno(w + ": replacing a corrupt object");
  } else if (!rename_noreplace(objects.get(), p.temp_name, sub.get(), rest, w)) {
    ::unlinkat(objects.get(), p.temp_name.c_str(), 0);
  }
}

void Repository::State::flush_pending() {
  if (pending.empty()) return;
  detail::syncfs_or_throw(objects.get(), what("objects"));
  for (auto& p : pending) link_pending(p);
  pending.clear();
  pending_index.clear();
  pending_bytes = 0;
}

void Repository::State::discard_pending() noexcept {
  for (auto& p : pending)
    if (!p.temp_name.empty()) ::unlinkat(objects.get(), p.temp_name.c_str(), 0);
  pending.clear();
  pending_index.clear();
}

void Repository::State::add_pending(PendingObject p) {
  if (pending_index.count(p.id)) {
    if (!p.temp_name.empty()) ::unlinkat(objects.get(), p.temp_name.c_str(), 0);
    return;
  }
  if (auto size = stored_size(p.id)) {
    if (*size == p.size) {
      if (!p.temp_name.empty()) ::unlinkat(objects.get(), p.temp_name.c_str(), 0);
      return;
    }
    p.replace = true;
  }
  pending_bytes += p.size;
  pending_index.emplace(p.id, pending.size());
  pending.push_back(std::move(p));
  if (pending.size() >= kBatchMaxObjects || pending_bytes >= kBatchMaxBytes) flush_pending();
}

UniqueFd Repository::State::new_temp(std::string& temp_name) {
  const std::string w = what("objects");
  if (!tmpfile_unsupported) {
    UniqueFd fd = open_tmpfile(objects.get(), 0644, w);
    if (fd) return fd;
    tmpfile_unsupported = true;
  }
  return create_named_temp(objects.get(), ".tmp-object-", temp_name, 0644, w);
}

Digest Repository::State::finish_object(UniqueFd fd, std::string temp_name, uint64_t size,
                                        std::optional<Digest> id) {
  const std::string w = what("objects") + ": new object";
  if (secure || !verity_unsupported) {
    // fs-verity refuses files with writers, so continue with a read-only descriptor.
    UniqueFd ro = temp_name.empty() ? reopen_read_only(fd.get(), w)
                                    : open_regular_beneath(objects.get(), temp_name, O_RDONLY, w);
    fd.reset();
    VerityEnable result = VerityEnable::unsupported;
    for (int attempt = 0;; ++attempt) {
      try {
        result = enable_verity(ro.get(), meta.algorithm, w);
        break;
      } catch (const SystemError& e) {
        // A writer descriptor may linger briefly (e.g. a forked child); retry, as
        // composefs-rs does, before giving up.
        if (e.code() != ETXTBSY || attempt >= 3) throw;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
    }
    if (result == VerityEnable::unsupported) {
      if (secure) throw Error(path + ": secure repository, but the filesystem refused fs-verity");
      verity_unsupported = true;
    } else {
      auto measured = measure_verity(ro.get(), meta.algorithm, w);
      if (!measured) throw Error(w + ": fs-verity enabled but not measurable");
      if (id && *id != *measured)
        throw Error(w + ": kernel fs-verity digest " + measured->hex() +
                    " differs from the userspace digest " + id->hex());
      id = measured;
    }
    fd = std::move(ro);
  }
  if (!id) throw Error(w + ": no digest (fs-verity unavailable and none computed)");
  add_pending(PendingObject{std::move(fd), std::move(temp_name), *id, size, false});
  return *id;
}

UniqueFd Repository::State::open_final_object(const Digest& id) const {
  const std::string rel = object_repo_path(id);
  // Beneath objects/, no symlinks, and only a regular file: a FIFO must not hang a reader.
  UniqueFd out;
  try {
    out = open_regular_beneath(objects.get(), id.object_path(), O_RDONLY, what(rel));
  } catch (const SystemError& e) {
    if (e.code() == ENOENT) throw Error(what(rel) + ": object " + id.hex() + " does not exist");
    throw;
  }
  const int fd = out.get();
  if (secure) {
    auto measured = measure_verity(fd, meta.algorithm, what(rel));
    if (!measured) throw Error(what(rel) + ": object has no fs-verity in a secure repository");
    if (*measured != id)
      throw Error(what(rel) + ": fs-verity digest is " + measured->hex() +
                  ", not the object's name");
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// ObjectWriter

struct ObjectWriter::State {
  Repository::State* repo;
  UniqueFd fd;
  std::string temp_name;
  std::optional<FsVerityHasher> hasher;  // insecure repositories only
  std::vector<std::byte> buffer;
  size_t used = 0;
  uint64_t size = 0;
  bool sparse = false;  // write_zeros left holes
  bool done = false;

  void write_through(std::span<const std::byte> data) {
    if (hasher) hasher->update(data);
    write_all(fd.get(), data, repo->what("objects") + ": writing a new object");
  }
  void flush() {
    if (used == 0) return;
    write_through({buffer.data(), used});
    used = 0;
  }
};

ObjectWriter::ObjectWriter(std::unique_ptr<State> state) : state_(std::move(state)) {}
ObjectWriter::ObjectWriter(ObjectWriter&&) noexcept = default;

ObjectWriter::~ObjectWriter() {
  if (state_ && !state_->done && !state_->temp_name.empty())
    ::unlinkat(state_->repo->objects.get(), state_->temp_name.c_str(), 0);
}

void ObjectWriter::write(std::span<const std::byte> data) {
  State& s = *state_;
  if (s.done) throw Error("object writer used after commit()");
  s.size += data.size();
  if (data.size() >= s.buffer.size() / 2) {
    s.flush();
    s.write_through(data);
    return;
  }
  if (s.used + data.size() > s.buffer.size()) s.flush();
  std::copy(data.begin(), data.end(), s.buffer.begin() + static_cast<ptrdiff_t>(s.used));
  s.used += data.size();
}

void ObjectWriter::write_zeros(uint64_t n) {
  State& s = *state_;
  if (s.done) throw Error("object writer used after commit()");
  if (n == 0) return;
  s.flush();
  if (n > static_cast<uint64_t>(std::numeric_limits<off_t>::max()) - s.size)
    throw Error(s.repo->what("objects") + ": new object: hole beyond the largest file size");
  if (::lseek(s.fd.get(), static_cast<off_t>(n), SEEK_CUR) < 0)
    throw_errno(s.repo->what("objects") + ": new object: seeking over a hole");
  if (s.hasher) s.hasher->update_zeros(n);
  s.size += n;
  s.sparse = true;
}

Digest ObjectWriter::commit() {
  State& s = *state_;
  Repository::State& repo = *s.repo;
  if (s.done) throw Error("object writer committed twice");
  s.flush();
  // A trailing hole was only seeked over: the size comes from ftruncate.
  if (s.sparse && ::ftruncate(s.fd.get(), static_cast<off_t>(s.size)) < 0)
    throw_errno(repo.what("objects") + ": new object: setting the size after a hole");
  s.done = true;
  const std::string what = repo.what("objects") + ": new object";

  std::optional<Digest> id;
  if (s.hasher) id = s.hasher->finish();
  std::string temp_name = std::move(s.temp_name);
  s.temp_name.clear();
  return repo.finish_object(std::move(s.fd), std::move(temp_name), s.size, id);
}

ObjectWriter Repository::write_object() {
  State& s = *state_;
  s.require_writable();
  auto w = std::make_unique<ObjectWriter::State>();
  w->repo = &s;
  w->fd = s.new_temp(w->temp_name);
  if (!s.secure) w->hasher.emplace(s.meta.algorithm);
  w->buffer.resize(kWriteBuffer);
  return ObjectWriter(std::move(w));
}

Digest Repository::ensure_object(std::span<const std::byte> data) {
  State& s = *state_;
  if (!s.secure) {
    // Cheap dedup: hash first, write only if missing.
    Digest id = fsverity_digest(data, s.meta.algorithm);
    if (s.pending_index.count(id)) return id;
    if (auto size = s.stored_size(id); size && *size == data.size()) return id;
  }
  ObjectWriter w = write_object();
  w.write(data);
  return w.commit();
}

namespace {

bool same_file_state(const struct stat& a, const struct stat& b) {
  return a.st_size == b.st_size && a.st_mtim.tv_sec == b.st_mtim.tv_sec &&
         a.st_mtim.tv_nsec == b.st_mtim.tv_nsec && a.st_ctim.tv_sec == b.st_ctim.tv_sec &&
         a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

}  // namespace

Digest Repository::ensure_object_from_fd(int fd, const std::string& what, uint64_t* size_out) {
  State& s = *state_;
  s.require_writable();
  struct stat before;
  off_t start = ::lseek(fd, 0, SEEK_CUR);
  if (!s.secure && start >= 0 && ::fstat(fd, &before) == 0 && S_ISREG(before.st_mode)) {
    // Insecure repositories hash first and copy only objects they lack: re-importing a tree
    // costs one read of each file and no writes.
    Digest id = fsverity_digest_fd(fd, s.meta.algorithm, what);
    off_t end = ::lseek(fd, 0, SEEK_CUR);
    if (end < start) throw_errno(what);
    const auto size = static_cast<uint64_t>(end - start);
    if (size_out) *size_out = size;
    if (s.pending_index.count(id)) return id;
    if (auto stored = s.stored_size(id); stored && *stored == size) return id;
    std::string temp_name;
    UniqueFd tmp = s.new_temp(temp_name);
    try {
      copy_file_data(fd, static_cast<uint64_t>(start), tmp.get(), size, what);
      struct stat after;
      if (::fstat(fd, &after) < 0) throw_errno(what);
      if (!same_file_state(before, after)) throw Error(what + ": file changed while being stored");
    } catch (...) {
      if (!temp_name.empty()) ::unlinkat(s.objects.get(), temp_name.c_str(), 0);
      throw;
    }
    return s.finish_object(std::move(tmp), std::move(temp_name), size, id);
  }
  ObjectWriter w = write_object();
  std::vector<std::byte> buf(kWriteBuffer);
  uint64_t total = 0;
  while (size_t n = read_some(fd, buf, what)) {
    w.write(std::span<const std::byte>(buf.data(), n));
    total += n;
  }
  if (size_out) *size_out = total;
  return w.commit();
}

bool Repository::has_object(const Digest& id) const {
  return state_->pending_index.count(id) > 0 || state_->stored_size(id).has_value();
}

UniqueFd Repository::open_object(const Digest& id) const {
  const State& s = *state_;
  if (id.algorithm() != s.meta.algorithm)
    throw Error(s.path + ": object id " + id.hex() +
                " uses another hash algorithm than the "
                "repository (" +
                std::string(algorithm_name(s.meta.algorithm)) + ")");
  if (auto it = s.pending_index.find(id); it != s.pending_index.end()) {
    const PendingObject& p = s.pending[it->second];
    return p.temp_name.empty() ? reopen_read_only(p.fd.get(), s.what(object_repo_path(id)))
                               : open_regular_beneath(s.objects.get(), p.temp_name, O_RDONLY,
                                                      s.what(object_repo_path(id)));
  }
  return s.open_final_object(id);
}

void Repository::sync() {
  state_->publish_barrier();
}

}  // namespace cfs::store
