#include "cfs/store/repository.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <functional>

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

// The first object found below objects/XX/ whose name has the length of a sha256 (62 hex
// digits after the XX) or sha512 (126) digest, in directory order, as composefs-rs looks.
struct FoundObject {
  HashAlgorithm algorithm;
  std::string path;  // "XX/<rest>", relative to objects/
};

std::optional<FoundObject> find_first_object(int objects_fd, const std::string& what) {
  std::optional<FoundObject> found;
  detail::for_each_entry(objects_fd, what, [&](const std::string& sub, unsigned char) {
    if (found || sub.size() != 2) return;
    UniqueFd dir = detail::open_dir_if_exists(objects_fd, sub, join(what, sub));
    if (!dir) return;
    detail::for_each_entry(dir.get(), join(what, sub), [&](const std::string& name, unsigned char) {
      if (found) return;
      if (name.size() == 62) found = FoundObject{HashAlgorithm::sha256, sub + "/" + name};
      if (name.size() == 126) found = FoundObject{HashAlgorithm::sha512, sub + "/" + name};
    });
  });
  return found;
}

// Writes meta.json into dir: complete (and with fs-verity when with_verity) before its name
// appears, and never over an existing one. before_link runs just before the name is linked.
// False if meta.json appeared meanwhile (nothing is left behind then).
bool publish_meta(int dir, const std::string& path, const RepoMeta& meta, bool with_verity,
                  const std::function<void()>& before_link) {
  const std::string text = meta.to_json();
  const std::string what = join(path, "meta.json");
  std::string temp_name;
  UniqueFd fd = open_tmpfile(dir, 0644, what);
  if (!fd) fd = create_named_temp(dir, ".tmp-meta-", temp_name, 0644, what);
  auto drop_temp = [&] {
    if (!temp_name.empty()) ::unlinkat(dir, temp_name.c_str(), 0);
  };
  try {
    write_all(fd.get(), {reinterpret_cast<const std::byte*>(text.data()), text.size()}, what);
    detail::fsync_or_throw(fd.get(), what);
    if (with_verity) {
      UniqueFd ro = temp_name.empty() ? reopen_read_only(fd.get(), what)
                                      : open_regular_beneath(dir, temp_name, O_RDONLY, what);
      fd.reset();
      if (enable_verity(ro.get(), meta.algorithm, what) == VerityEnable::unsupported)
        throw Error(path +
                    ": the filesystem does not support fs-verity; use --insecure to create a "
                    "repository whose objects are not verified by the kernel");
      fd = std::move(ro);
    }
    before_link();
  } catch (...) {
    drop_temp();
    throw;
  }
  bool linked = temp_name.empty() ? link_tmpfile(fd.get(), dir, "meta.json", what)
                                  : rename_noreplace(dir, temp_name, dir, "meta.json", what);
  if (!linked) {
    drop_temp();
    return false;
  }
  detail::fsync_or_throw(dir, path);
  return true;
}

// Why the repository at dir cannot be written, or an empty string if it can.
std::string unwritable_reason(int dir) {
  struct statvfs vfs;
  if (::fstatvfs(dir, &vfs) == 0 && (vfs.f_flag & ST_RDONLY)) return "read-only filesystem";
  if (::faccessat(dir, ".", W_OK, AT_EACCESS) < 0) return "no write permission";
  return {};
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
  RepoMeta meta = RepoMeta::for_erofs_version(options.algorithm, options.erofs_version);
  // meta.json appears last: a directory that has it is a complete repository.
  bool linked = publish_meta(dir.get(), path, meta, !options.insecure, [&] {
    for (std::string_view sub : repo_layout::kFixedDirs)
      detail::make_dir_at(dir.get(), std::string(sub), 0755, join(path, sub));
    detail::syncfs_or_throw(dir.get(), path);
  });
  if (!linked) throw Error(path + ": already a repository (meta.json appeared concurrently)");
  dir.reset();  // releases the exclusive lock; open() takes the shared one
  return open(path);
}

Repository Repository::open(const std::string& path, LockMode lock, MissingMeta missing) {
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
  auto open_meta = [&] {
    try {
      return open_regular_beneath(s->dir.get(), "meta.json", O_RDONLY, s->what("meta.json"));
    } catch (const SystemError& e) {
      if (e.code() != ENOENT) throw;
    }
    return UniqueFd();
  };
  UniqueFd meta = open_meta();
  if (!meta && s->objects) {
    // An old composefs-rs repository: objects/ but no meta.json yet.
    auto found = find_first_object(s->objects.get(), s->what("objects"));
    if (missing == MissingMeta::refuse)
      throw Error(path +
                  ": no meta.json (a repository from before meta.json); refusing to upgrade it "
                  "(--no-upgrade): run without --no-upgrade, or 'init --ensure', to write one");
    if (!found)
      throw Error(path + ": no meta.json and no objects to infer the hash algorithm from");
    std::string reason = unwritable_reason(s->dir.get());
    if (missing == MissingMeta::upgrade && reason.empty()) {
      // composefs-rs' open_upgrade: the algorithm from the object's name length, secure if
      // that object has fs-verity, and the metadata composefs-rs writes for a new repository
      // of that algorithm (EROFS V1 with the v1_erofs flag).
      const std::string object_what = s->what("objects/" + found->path);
      UniqueFd object = open_regular_beneath(s->objects.get(), found->path, O_RDONLY, object_what);
      bool verity = measure_verity(object.get(), found->algorithm, object_what).has_value();
      RepoMeta upgraded;
      upgraded.algorithm = found->algorithm;
      // False when another process wrote it first: its meta.json is read below instead.
      s->upgraded = publish_meta(s->dir.get(), path, upgraded, verity, [] {});
      meta = open_meta();
      if (!meta) throw Error(s->what("meta.json") + ": vanished right after it was written");
    } else {
      s->has_meta = false;
      s->meta.algorithm = found->algorithm;
      s->meta.read_only_compatible.clear();
      s->meta.erofs_default = 2;
      s->writable = false;
      s->read_only_reason =
          missing == MissingMeta::upgrade
              ? "no meta.json, and it cannot be written to upgrade the repository: " + reason
              : "no meta.json; open it with upgrading (cfsctl does) to write one";
    }
  }
  if (meta) {
    s->meta =
        parse_meta(read_fd(meta.get(), s->what("meta.json"), kMaxMetaJson), s->what("meta.json"));
    s->secure = measure_verity(meta.get(), s->meta.algorithm, s->what("meta.json")).has_value();
    if (!s->objects) throw Error(s->what("objects") + ": missing (repository is incomplete)");
  } else if (!s->objects) {
    throw Error(path + ": not a composefs repository (no meta.json; create one with 'init')");
  }

  if (s->writable && !meta_allows_writing(s->meta)) {
    s->writable = false;
    s->read_only_reason = "meta.json lists read-only-compatible features this cfs does not know";
  }
  if (s->writable) {
    std::string reason = unwritable_reason(s->dir.get());
    if (!reason.empty()) {
      s->writable = false;
      s->read_only_reason = reason;
    }
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
std::vector<uint32_t> Repository::erofs_versions() const {
  if (state_->erofs_override) return {*state_->erofs_override};
  return state_->meta.erofs_versions();
}
uint32_t Repository::erofs_version() const {
  return erofs_versions().front();
}
void Repository::set_erofs_version(uint32_t version) {
  if (version > kMaxErofsVersion)
    throw Error("EROFS format " + std::to_string(version) + " is not supported (0, 1 or 2)");
  state_->erofs_override = version;
}
bool Repository::erofs_version_chosen() const noexcept {
  return state_->erofs_override.has_value();
}
HashAlgorithm Repository::algorithm() const noexcept {
  return state_->meta.algorithm;
}
bool Repository::secure() const noexcept {
  return state_->secure;
}

void Repository::set_insecure() noexcept {
  state_->secure = false;
}
bool Repository::has_meta() const noexcept {
  return state_->has_meta;
}
bool Repository::upgraded() const noexcept {
  return state_->upgraded;
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
