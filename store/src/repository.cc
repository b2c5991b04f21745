#include "cfs/store/repository.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <bitset>
#include <chrono>
#include <limits>
#include <map>
#include <thread>
#include <unordered_map>

#include "cfs/atomic_file.h"
#include "cfs/error.h"
#include "cfs/fsverity.h"
#include "cfs/store/refs.h"
#include "entries.h"
#include "fsutil.h"
#include "paths.h"
#include "verity.h"

namespace cfs::store {

using detail::join;

namespace {

// Committed objects are linked in batches: one syncfs makes a whole batch's data durable
// before any of its names appear. The limits bound open descriptors and dirty memory.
constexpr size_t kBatchMaxObjects = 256;
constexpr uint64_t kBatchMaxBytes = 256ull << 20;
constexpr size_t kWriteBuffer = 1 << 20;

std::string proc_fd_path(int fd) {
  return "/proc/self/fd/" + std::to_string(fd);
}

UniqueFd reopen_read_only(int fd, const std::string& what) {
  int ro = ::open(proc_fd_path(fd).c_str(), O_RDONLY | O_CLOEXEC);
  if (ro < 0) throw_errno(what + ": reopening read-only");
  return UniqueFd(ro);
}

// O_TMPFILE in dirfd, or nullopt-equivalent (empty fd) if the filesystem lacks it.
UniqueFd open_tmpfile(int dirfd, unsigned mode, const std::string& what) {
  int fd = ::openat(dirfd, ".", O_RDWR | O_TMPFILE | O_CLOEXEC, mode);
  if (fd >= 0) return UniqueFd(fd);
  if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL) return UniqueFd();
  throw_errno(what + ": creating a temporary file");
}

UniqueFd create_named_temp(int dirfd, const std::string& prefix, std::string& name, unsigned mode,
                           const std::string& what) {
  for (int attempt = 0;; ++attempt) {
    name = prefix + random_suffix();
    int fd = ::openat(dirfd, name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd >= 0) return UniqueFd(fd);
    if (errno != EEXIST || attempt > 8) throw_errno(what + ": creating " + name);
  }
}

// Links an anonymous (O_TMPFILE) file into dirfd/name. Returns false if name exists.
bool link_tmpfile(int fd, int dirfd, const std::string& name, const std::string& what) {
  if (::linkat(AT_FDCWD, proc_fd_path(fd).c_str(), dirfd, name.c_str(), AT_SYMLINK_FOLLOW) == 0)
    return true;
  if (errno == EEXIST) return false;
  if (errno == ENOENT) {  // no /proc: AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH but may work
    if (::linkat(fd, "", dirfd, name.c_str(), AT_EMPTY_PATH) == 0) return true;
    if (errno == EEXIST) return false;
  }
  throw_errno(what + ": linking " + name);
}

// Renames without replacing; returns false if to exists. Falls back to link+unlink where
// the filesystem lacks RENAME_NOREPLACE.
bool rename_noreplace(int dirfd, const std::string& from, const std::string& to,
                      const std::string& what) {
  if (::renameat2(dirfd, from.c_str(), dirfd, to.c_str(), RENAME_NOREPLACE) == 0) return true;
  if (errno == EEXIST) return false;
  if (errno != EINVAL && errno != ENOSYS) throw_errno(what + ": renaming to " + to);
  if (::linkat(dirfd, from.c_str(), dirfd, to.c_str(), 0) < 0) {
    if (errno == EEXIST) return false;
    throw_errno(what + ": linking " + to);
  }
  ::unlinkat(dirfd, from.c_str(), 0);
  return true;
}

std::optional<HashAlgorithm> infer_algorithm(int objects_fd, const std::string& what) {
  std::optional<HashAlgorithm> found;
  detail::for_each_entry(objects_fd, what, [&](const std::string& sub, unsigned char) {
    if (found || sub.size() != 2) return;
    UniqueFd dir = detail::open_dir_if_exists(objects_fd, sub, join(what, sub));
    if (!dir) return;
    detail::for_each_entry(dir.get(), join(what, sub), [&](const std::string& name, unsigned char) {
      if (found) return;
      if (name.size() == 62) found = HashAlgorithm::sha256;
      if (name.size() == 126) found = HashAlgorithm::sha512;
    });
  });
  return found;
}

}  // namespace

std::string object_repo_path(const Digest& id) {
  return "objects/" + id.object_path();
}

// ---------------------------------------------------------------------------------------

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
  bool has_meta = true;
  bool secure = false;
  bool writable = true;
  std::string read_only_reason;
  bool tmpfile_unsupported = false;
  bool verity_unsupported = false;  // insecure repositories stop asking after one refusal
  std::vector<PendingObject> pending;
  std::unordered_map<Digest, size_t> pending_index;
  uint64_t pending_bytes = 0;
  std::bitset<256> object_dirs_present;  // objects/XX known to exist (saves a mkdirat each)

  std::string what(std::string_view rel) const { return join(path, rel); }

  void require_writable() const {
    if (!writable) throw Error(path + ": repository is read-only (" + read_only_reason + ")");
  }

  // Existing object under its final name: its size, or nullopt.
  std::optional<uint64_t> stored_size(const Digest& id) const {
    auto st = detail::lstat_at(objects.get(), id.object_path(), what(object_repo_path(id)));
    if (!st || !S_ISREG(st->st_mode)) return std::nullopt;
    return static_cast<uint64_t>(st->st_size);
  }

  void link_pending(PendingObject& p) {
    const std::string final_name = p.id.object_path();
    const std::string w = what(object_repo_path(p.id));
    const uint8_t first = p.id.bytes()[0];
    if (!object_dirs_present[first]) {
      detail::make_dir_at(objects.get(), final_name.substr(0, 2), 0755, what("objects"));
      object_dirs_present[first] = true;
    }
    if (p.temp_name.empty()) {
      if (!p.replace) {
        link_tmpfile(p.fd.get(), objects.get(), final_name, w);  // exists: a concurrent writer
        return;
      }
      // Replacing needs a name to rename from.
      for (;;) {
        p.temp_name = ".tmp-object-" + random_suffix();
        if (link_tmpfile(p.fd.get(), objects.get(), p.temp_name, w)) break;
      }
    }
    if (p.replace) {
      if (::renameat(objects.get(), p.temp_name.c_str(), objects.get(), final_name.c_str()) < 0)
        throw_errno(w + ": replacing a corrupt object");
    } else if (!rename_noreplace(objects.get(), p.temp_name, final_name, w)) {
      ::unlinkat(objects.get(), p.temp_name.c_str(), 0);
    }
  }

  void flush_pending() {
    if (pending.empty()) return;
    detail::syncfs_or_throw(objects.get(), what("objects"));
    for (auto& p : pending) link_pending(p);
    pending.clear();
    pending_index.clear();
    pending_bytes = 0;
  }

  // Everything committed so far is linked and durable: the point before which no image,
  // stream or ref may name it.
  void publish_barrier() {
    flush_pending();
    detail::syncfs_or_throw(dir.get(), path);
  }

  void discard_pending() noexcept {
    for (auto& p : pending)
      if (!p.temp_name.empty()) ::unlinkat(objects.get(), p.temp_name.c_str(), 0);
    pending.clear();
    pending_index.clear();
  }

  void add_pending(PendingObject p) {
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

  // A new temporary file in objects/: O_TMPFILE (temp_name stays empty) or, where the
  // filesystem lacks it, a ".tmp-object-*" entry named in temp_name.
  UniqueFd new_temp(std::string& temp_name) {
    const std::string w = what("objects");
    if (!tmpfile_unsupported) {
      UniqueFd fd = open_tmpfile(objects.get(), 0644, w);
      if (fd) return fd;
      tmpfile_unsupported = true;
    }
    return create_named_temp(objects.get(), ".tmp-object-", temp_name, 0644, w);
  }

  // Takes a fully written temporary file: enables fs-verity where possible (secure
  // repositories require it and take the kernel's digest as the id), then queues it for
  // linking. userspace_id is the digest computed while writing (insecure repositories).
  Digest finish_object(UniqueFd fd, std::string temp_name, uint64_t size,
                       std::optional<Digest> id) {
    const std::string w = what("objects") + ": new object";
    if (secure || !verity_unsupported) {
      // fs-verity refuses files with writers, so continue with a read-only descriptor.
      UniqueFd ro = temp_name.empty() ? reopen_read_only(fd.get(), w)
                                      : open_at(objects.get(), temp_name, O_RDONLY);
      fd.reset();
      detail::VerityEnable result = detail::VerityEnable::unsupported;
      for (int attempt = 0;; ++attempt) {
        try {
          result = detail::enable_verity(ro.get(), meta.algorithm, w);
          break;
        } catch (const SystemError& e) {
          // A writer descriptor may linger briefly (e.g. a forked child); retry, as
          // composefs-rs does, before giving up.
          if (e.code() != ETXTBSY || attempt >= 3) throw;
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
      }
      if (result == detail::VerityEnable::unsupported) {
        if (secure) throw Error(path + ": secure repository, but the filesystem refused fs-verity");
        verity_unsupported = true;
      } else {
        auto measured = detail::measure_verity(ro.get(), meta.algorithm, w);
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

  UniqueFd open_final_object(const Digest& id) const {
    const std::string rel = object_repo_path(id);
    int fd = ::openat(objects.get(), id.object_path().c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      if (errno == ENOENT) throw Error(what(rel) + ": object " + id.hex() + " does not exist");
      throw_errno(what(rel));
    }
    UniqueFd out(fd);
    if (secure) {
      auto measured = detail::measure_verity(fd, meta.algorithm, what(rel));
      if (!measured) throw Error(what(rel) + ": object has no fs-verity in a secure repository");
      if (*measured != id)
        throw Error(what(rel) + ": fs-verity digest is " + measured->hex() +
                    ", not the object's name");
    }
    return out;
  }

  std::optional<std::string> resolve_ref(const std::string& link) const {
    return detail::resolve_ref_chain(dir.get(), link);
  }
  std::optional<Digest> entry_object(const std::string& entry) const {
    return detail::entry_object(dir.get(), entry, meta.algorithm);
  }

  void set_ref(const std::string& namespace_dir, std::string_view name,
               const std::string& entry_rel) {
    require_writable();
    const std::string link = namespace_dir + "/refs/" + std::string(name);
    auto slash = link.rfind('/');
    UniqueFd parent = detail::make_dirs_at(dir.get(), link.substr(0, slash), what(link));
    replace_symlink_at(parent.get(), link.substr(slash + 1),
                       relative_symlink_target(link, entry_rel), what(link));
    // Covers the new ref and any directories created for it.
    detail::syncfs_or_throw(dir.get(), path);
  }

  void walk_refs(const std::string& ns,
                 const std::function<void(const std::string&, const std::string&)>& fn) const {
    detail::walk_refs(dir.get(), path, ns, fn);
  }
};

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

// ---------------------------------------------------------------------------------------
// Repository

Repository::Repository(std::unique_ptr<State> state) : state_(std::move(state)) {}
Repository::Repository(Repository&&) noexcept = default;
Repository& Repository::operator=(Repository&&) noexcept = default;

Repository::~Repository() {
  if (!state_) return;
  try {
    state_->flush_pending();
  } catch (const std::exception&) {
    // Unlinked temporaries vanish with their descriptors: nothing half-written stays.
    state_->discard_pending();
  }
}

Repository Repository::init(const std::string& path, const InitOptions& options) {
  if (path.empty()) throw Error("repository path is empty");
  if (::mkdir(path.c_str(), 0755) < 0 && errno != EEXIST) throw_errno(path + ": creating");
  UniqueFd dir = detail::open_dir_at(AT_FDCWD, path, path);
  lock_directory(dir.get(), LockMode::exclusive, path);
  if (detail::lstat_at(dir.get(), "meta.json", join(path, "meta.json")))
    throw Error(path + ": already a repository (meta.json exists)");
  RepoMeta meta;
  meta.algorithm = options.algorithm;
  const std::string text = meta.to_json();
  const std::string what = join(path, "meta.json");
  std::string temp_name;
  UniqueFd fd = open_tmpfile(dir.get(), 0644, what);
  if (!fd) fd = create_named_temp(dir.get(), ".tmp-meta-", temp_name, 0644, what);
  write_all(fd.get(), {reinterpret_cast<const std::byte*>(text.data()), text.size()}, what);
  detail::fsync_or_throw(fd.get(), what);
  if (!options.insecure) {
    UniqueFd ro = temp_name.empty() ? reopen_read_only(fd.get(), what)
                                    : open_at(dir.get(), temp_name, O_RDONLY);
    fd.reset();
    if (detail::enable_verity(ro.get(), options.algorithm, what) ==
        detail::VerityEnable::unsupported) {
      if (!temp_name.empty()) ::unlinkat(dir.get(), temp_name.c_str(), 0);
      throw Error(path +
                  ": the filesystem does not support fs-verity; use --insecure to create a "
                  "repository whose objects are not verified by the kernel");
    }
    fd = std::move(ro);
  }
  // meta.json appears last: a directory that has it is a complete repository.
  for (const char* sub : {"objects", "images", "images/refs", "streams", "streams/refs"})
    detail::make_dir_at(dir.get(), sub, 0755, join(path, sub));
  detail::syncfs_or_throw(dir.get(), path);
  bool linked = temp_name.empty() ? link_tmpfile(fd.get(), dir.get(), "meta.json", what)
                                  : rename_noreplace(dir.get(), temp_name, "meta.json", what);
  if (!linked) {
    if (!temp_name.empty()) ::unlinkat(dir.get(), temp_name.c_str(), 0);
    throw Error(path + ": already a repository (meta.json appeared concurrently)");
  }
  detail::fsync_or_throw(dir.get(), path);
  dir.reset();  // releases the exclusive lock; open() takes the shared one
  return open(path);
}

Repository Repository::open(const std::string& path, LockMode lock) {
  auto s = std::make_unique<State>();
  s->path = path;
  {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) throw Error(path + ": no such repository (create one with 'init')");
      if (errno == ENOTDIR) throw Error(path + ": not a directory, so not a repository");
      throw_errno(path);
    }
    s->dir.reset(fd);
  }
  lock_directory(s->dir.get(), lock, path);
  s->objects = detail::open_dir_if_exists(s->dir.get(), "objects", s->what("objects"));

  int meta_fd = ::openat(s->dir.get(), "meta.json", O_RDONLY | O_CLOEXEC);
  if (meta_fd >= 0) {
    UniqueFd meta(meta_fd);
    s->meta = parse_meta(read_fd(meta.get(), s->what("meta.json")), s->what("meta.json"));
    s->secure =
        detail::measure_verity(meta.get(), s->meta.algorithm, s->what("meta.json")).has_value();
    if (!s->objects) throw Error(s->what("objects") + ": missing (repository is incomplete)");
  } else {
    if (errno != ENOENT) throw_errno(s->what("meta.json"));
    if (!s->objects)
      throw Error(path + ": not a composefs repository (no meta.json; create one with 'init')");
    auto alg = infer_algorithm(s->objects.get(), s->what("objects"));
    if (!alg) throw Error(path + ": no meta.json and no objects to infer the hash algorithm from");
    s->has_meta = false;
    s->meta.algorithm = *alg;
    s->meta.read_only_compatible.clear();
    s->meta.erofs_default = 2;
    s->writable = false;
    s->read_only_reason = "no meta.json; upgrade it with composefs-rs or re-create it";
  }

  if (s->writable && !meta_allows_writing(s->meta)) {
    s->writable = false;
    s->read_only_reason = "meta.json lists read-only-compatible features this cfs does not know";
  }
  struct statvfs vfs;
  if (s->writable && ::fstatvfs(s->dir.get(), &vfs) == 0 && (vfs.f_flag & ST_RDONLY)) {
    s->writable = false;
    s->read_only_reason = "read-only filesystem";
  }
  if (s->writable && ::faccessat(s->dir.get(), ".", W_OK, AT_EACCESS) < 0) {
    s->writable = false;
    s->read_only_reason = "no write permission";
  }
  return Repository(std::move(s));
}

const std::string& Repository::path() const noexcept {
  return state_->path;
}
int Repository::dirfd() const noexcept {
  return state_->dir.get();
}
const RepoMeta& Repository::meta() const noexcept {
  return state_->meta;
}
HashAlgorithm Repository::algorithm() const noexcept {
  return state_->meta.algorithm;
}
bool Repository::secure() const noexcept {
  return state_->secure;
}
bool Repository::has_meta() const noexcept {
  return state_->has_meta;
}
bool Repository::writable() const noexcept {
  return state_->writable;
}
void Repository::require_writable() const {
  state_->require_writable();
}

void Repository::relock(LockMode mode) {
  lock_directory(state_->dir.get(), mode, state_->path);
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

// Copies [offset, offset + size) of in to out: copy_file_range (in-kernel, reflinks where
// the filesystem can), falling back to read/write across filesystems that refuse it.
void copy_range(int in, uint64_t offset, int out, uint64_t size, const std::string& what) {
  auto in_off = static_cast<off_t>(offset);
  uint64_t remaining = size;
  bool use_copy_file_range = true;
  std::vector<std::byte> buf;
  while (remaining > 0) {
    if (use_copy_file_range) {
      ssize_t n = ::copy_file_range(in, &in_off, out, nullptr, remaining, 0);
      if (n > 0) {
        remaining -= static_cast<uint64_t>(n);
        continue;
      }
      if (n == 0) break;
      if (errno == EINTR) continue;
      if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
        throw_errno(what + ": copying into the repository");
      use_copy_file_range = false;
      buf.resize(kWriteBuffer);
    }
    ssize_t n = ::pread(in, buf.data(), std::min<uint64_t>(buf.size(), remaining), in_off);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(what);
    }
    if (n == 0) break;
    write_all(out, {buf.data(), static_cast<size_t>(n)}, what + ": copying into the repository");
    in_off += n;
    remaining -= static_cast<uint64_t>(n);
  }
  if (remaining > 0) throw Error(what + ": file shrank while being stored");
}

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
      copy_range(fd, static_cast<uint64_t>(start), tmp.get(), size, what);
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
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(what);
    }
    if (n == 0) break;
    w.write(std::span<const std::byte>(buf.data(), static_cast<size_t>(n)));
    total += static_cast<uint64_t>(n);
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
                               : open_at(s.objects.get(), p.temp_name, O_RDONLY);
  }
  return s.open_final_object(id);
}

void Repository::sync() {
  state_->publish_barrier();
}

// ---- images

void Repository::link_image(const Digest& image) {
  State& s = *state_;
  s.require_writable();
  if (!has_object(image)) throw Error(s.path + ": image object " + image.hex() + " is not stored");
  s.publish_barrier();
  UniqueFd images = detail::open_dir_at(s.dir.get(), "images", s.what("images"));
  replace_symlink_at(images.get(), image.hex(), "../" + object_repo_path(image),
                     s.what("images/" + image.hex()));
  detail::fsync_or_throw(images.get(), s.what("images"));
}

void Repository::set_image_ref(std::string_view name, const Digest& image) {
  State& s = *state_;
  validate_ref_name(name, "image ref");
  const std::string entry = "images/" + image.hex();
  if (!detail::lstat_at(s.dir.get(), entry, s.what(entry)))
    throw Error(s.what(entry) + ": no such image to name '" + std::string(name) + "'");
  s.set_ref("images", name, entry);
}

std::optional<Digest> Repository::resolve_image(std::string_view name) const {
  const State& s = *state_;
  if (auto id = Digest::from_hex(name, s.meta.algorithm)) {
    if (detail::lstat_at(s.dir.get(), "images/" + id->hex(), s.what("images"))) return id;
  }
  try {
    validate_ref_name(name, "image ref");
  } catch (const Error&) {
    return std::nullopt;
  }
  auto entry = s.resolve_ref("images/refs/" + std::string(name));
  if (!entry || !entry->starts_with("images/")) return std::nullopt;
  auto id = Digest::from_hex(entry->substr(7), s.meta.algorithm);
  if (!id || !detail::lstat_at(s.dir.get(), *entry, s.what(*entry))) return std::nullopt;
  return id;
}

UniqueFd Repository::open_image(std::string_view name) const {
  auto id = resolve_image(name);
  if (!id) throw Error(state_->path + ": no image named '" + std::string(name) + "'");
  return open_object(*id);
}

std::vector<ImageInfo> Repository::list_images() const {
  const State& s = *state_;
  std::map<Digest, ImageInfo> images;
  UniqueFd dir = detail::open_dir_if_exists(s.dir.get(), "images", s.what("images"));
  if (!dir) return {};
  detail::for_each_entry(dir.get(), s.what("images"), [&](const std::string& name, unsigned char) {
    auto id = Digest::from_hex(name, s.meta.algorithm);
    if (!id) return;
    ImageInfo info;
    info.id = *id;
    if (auto size = s.stored_size(*id)) info.size = *size;
    images.emplace(*id, std::move(info));
  });
  s.walk_refs("images", [&](const std::string& ref, const std::string& link) {
    auto entry = s.resolve_ref(link);
    if (!entry || !entry->starts_with("images/")) return;
    auto id = Digest::from_hex(entry->substr(7), s.meta.algorithm);
    if (!id) return;
    if (auto it = images.find(*id); it != images.end()) it->second.refs.push_back(ref);
  });
  std::vector<ImageInfo> out;
  for (auto& [id, info] : images) {
    std::sort(info.refs.begin(), info.refs.end());
    out.push_back(std::move(info));
  }
  return out;
}

// ---- streams

Digest Repository::write_stream(SplitStreamWriter& writer, std::string_view content_id,
                                std::optional<std::string_view> ref) {
  validate_entry_name(content_id, "stream content id");
  if (ref) validate_ref_name(*ref, "stream ref");
  Digest id = write_stream_object(writer);
  link_stream(id, content_id, ref);
  return id;
}

Digest Repository::write_stream_object(SplitStreamWriter& writer) {
  State& s = *state_;
  s.require_writable();
  if (writer.algorithm() != s.meta.algorithm)
    throw Error(s.path + ": splitstream uses another hash algorithm than the repository");
  ObjectWriter w = write_object();
  writer.finish(w);
  return w.commit();
}

void Repository::link_stream(const Digest& id, std::string_view content_id,
                             std::optional<std::string_view> ref) {
  State& s = *state_;
  s.require_writable();
  validate_entry_name(content_id, "stream content id");
  if (ref) validate_ref_name(*ref, "stream ref");
  s.publish_barrier();
  UniqueFd streams = detail::open_dir_at(s.dir.get(), "streams", s.what("streams"));
  replace_symlink_at(streams.get(), std::string(content_id), "../" + object_repo_path(id),
                     s.what("streams/" + std::string(content_id)));
  detail::fsync_or_throw(streams.get(), s.what("streams"));
  if (ref) set_stream_ref(*ref, content_id);
}

void Repository::set_stream_ref(std::string_view name, std::string_view content_id) {
  State& s = *state_;
  validate_ref_name(name, "stream ref");
  validate_entry_name(content_id, "stream content id");
  const std::string entry = "streams/" + std::string(content_id);
  if (!detail::lstat_at(s.dir.get(), entry, s.what(entry)))
    throw Error(s.what(entry) + ": no such stream to name '" + std::string(name) + "'");
  s.set_ref("streams", name, entry);
}

std::optional<Digest> Repository::resolve_stream(std::string_view name) const {
  const State& s = *state_;
  try {
    validate_ref_name(name, "stream name");
  } catch (const Error&) {
    return std::nullopt;
  }
  if (name.find('/') == std::string_view::npos) {
    if (auto id = s.entry_object("streams/" + std::string(name))) return id;
  }
  auto entry = s.resolve_ref("streams/refs/" + std::string(name));
  if (!entry || !entry->starts_with("streams/")) return std::nullopt;
  return s.entry_object(*entry);
}

SplitStreamReader Repository::open_stream(std::string_view name) const {
  auto id = resolve_stream(name);
  if (!id) throw Error(state_->path + ": no stream named '" + std::string(name) + "'");
  UniqueFd fd = open_object(*id);
  return SplitStreamReader::from_fd(
      fd.get(), algorithm(),
      "stream '" + std::string(name) + "' (" + state_->what(object_repo_path(*id)) + ")");
}

void Repository::cat_stream(std::string_view name, OutputSink& out) const {
  SplitStreamReader reader = open_stream(name);
  uint64_t total = 0;
  std::vector<std::byte> buf(kWriteBuffer);
  reader.for_each_chunk(
      [&](std::span<const std::byte> data) {
        out.write(data);
        total += data.size();
      },
      [&](const Digest& object) {
        UniqueFd fd = open_object(object);
        const std::string what = state_->what(object_repo_path(object));
        for (;;) {
          ssize_t n = ::read(fd.get(), buf.data(), buf.size());
          if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno(what);
          }
          if (n == 0) break;
          out.write(std::span<const std::byte>(buf.data(), static_cast<size_t>(n)));
          total += static_cast<uint64_t>(n);
        }
      });
  if (total != reader.stream_size()) {
    throw Error(state_->path + ": stream '" + std::string(name) + "' reassembles to " +
                std::to_string(total) + " bytes, its header says " +
                std::to_string(reader.stream_size()));
  }
  out.flush();
}

std::vector<StreamInfo> Repository::list_streams() const {
  const State& s = *state_;
  std::map<std::string, StreamInfo> streams;
  UniqueFd dir = detail::open_dir_if_exists(s.dir.get(), "streams", s.what("streams"));
  if (!dir) return {};
  detail::for_each_entry(dir.get(), s.what("streams"), [&](const std::string& name, unsigned char) {
    if (name == "refs" || name.starts_with(".")) return;
    auto id = s.entry_object("streams/" + name);
    if (!id) return;
    streams.emplace(name, StreamInfo{name, *id, {}});
  });
  s.walk_refs("streams", [&](const std::string& ref, const std::string& link) {
    auto entry = s.resolve_ref(link);
    if (!entry || !entry->starts_with("streams/")) return;
    if (auto it = streams.find(entry->substr(8)); it != streams.end())
      it->second.refs.push_back(ref);
  });
  std::vector<StreamInfo> out;
  for (auto& [name, info] : streams) out.push_back(std::move(info));
  return out;
}

}  // namespace cfs::store
