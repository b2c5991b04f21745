#include "cfs/store/repository.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "cfs/atomic_file.h"
#include "cfs/error.h"
#include "cfs/kernel_verity.h"
#include "cfs/repo_layout.h"
#include "cfs/safe_open.h"
#include "repository_state.h"
#include "tempfile.h"

namespace cfs::store {

using detail::create_named_temp;
using detail::join;
using detail::link_tmpfile;
using detail::open_tmpfile;
using detail::rename_noreplace;
using detail::reopen_read_only;

namespace {

// The fixed directories of the layout must each be a real directory: one replaced by a
// symlink would let gc remove, and writers create, files in whatever tree it names.
void refuse_symlinked_fixed_dirs(int dirfd, const std::string& path) {
  for (std::string_view sub : repo_layout::kFixedDirs) {
    const std::string what = join(path, sub);
    auto st = detail::lstat_at(dirfd, std::string(sub), what);
    if (!st) continue;
    if (S_ISLNK(st->st_mode))
      throw Error(what +
                  ": is a symlink; a repository's own directories must not be symlinks "
                  "(refusing to use the repository)");
    if (!S_ISDIR(st->st_mode))
      throw Error(what + ": is not a directory (refusing to use the repository)");
  }
}

// The same for the fan-out directories objects/XX: one readdir of objects/.
void refuse_symlinked_fanout_dirs(int objects_fd, const std::string& path) {
  const std::string objects_what = join(path, "objects");
  detail::for_each_entry(objects_fd, objects_what, [&](const std::string& sub, unsigned char type) {
    if (sub.size() != 2) return;
    const std::string what = join(objects_what, sub);
    if (detail::entry_type(objects_fd, sub, type, what) == DT_LNK)
      throw Error(what +
                  ": is a symlink; object directories must not be symlinks (refusing to "
                  "use the repository)");
  });
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
  UniqueFd dir = open_file(path, O_RDONLY | O_DIRECTORY);
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
                                    : open_regular_beneath(dir.get(), temp_name, O_RDONLY, what);
    fd.reset();
    if (enable_verity(ro.get(), options.algorithm, what) == VerityEnable::unsupported) {
      if (!temp_name.empty()) ::unlinkat(dir.get(), temp_name.c_str(), 0);
      throw Error(path +
                  ": the filesystem does not support fs-verity; use --insecure to create a "
                  "repository whose objects are not verified by the kernel");
    }
    fd = std::move(ro);
  }
  // meta.json appears last: a directory that has it is a complete repository.
  for (std::string_view sub : repo_layout::kFixedDirs)
    detail::make_dir_at(dir.get(), std::string(sub), 0755, join(path, sub));
  detail::syncfs_or_throw(dir.get(), path);
  bool linked = temp_name.empty()
                    ? link_tmpfile(fd.get(), dir.get(), "meta.json", what)
                    : rename_noreplace(dir.get(), temp_name, dir.get(), "meta.json", what);
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
  refuse_symlinked_fixed_dirs(s->dir.get(), path);
  s->objects = detail::open_dir_if_exists(s->dir.get(), "objects", s->what("objects"));
  if (s->objects) refuse_symlinked_fanout_dirs(s->objects.get(), path);

  // A regular file only: a FIFO in its place must give an error, not hang every command.
  UniqueFd meta;
  try {
    meta = open_regular_beneath(s->dir.get(), "meta.json", O_RDONLY, s->what("meta.json"));
  } catch (const SystemError& e) {
    if (e.code() != ENOENT) throw;
  }
  if (meta) {
    s->meta =
        parse_meta(read_fd(meta.get(), s->what("meta.json"), kMaxMetaJson), s->what("meta.json"));
    s->secure = measure_verity(meta.get(), s->meta.algorithm, s->what("meta.json")).has_value();
    if (!s->objects) throw Error(s->what("objects") + ": missing (repository is incomplete)");
  } else {
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

bool Repository::try_relock(LockMode mode) {
  return try_lock_directory(state_->dir.get(), mode, state_->path);
}

}  // namespace cfs::store
