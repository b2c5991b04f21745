#include "cfs/fuse/objects.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstring>

#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fsverity.h"
#include "cfs/kernel_verity.h"
#include "cfs/safe_open.h"

namespace cfs::fuse {

namespace {

// Verdicts are tiny, but a hostile stream of object rewrites must not grow the map forever.
constexpr size_t kMaxVerdicts = 1 << 20;

std::string errno_text(int err) {
  return std::strerror(err);
}

}  // namespace

ObjectStore::ObjectStore(UniqueFd dir, std::string name, VerityPolicy policy)
    : dir_(std::move(dir)), name_(std::move(name)), policy_(policy) {}

size_t ObjectStore::VersionKeyHash::operator()(const VersionKey& k) const noexcept {
  size_t h = std::hash<Digest>()(k.expected);
  for (uint64_t v : {k.dev, k.ino, k.size, static_cast<uint64_t>(k.ctime_nsec),
                     static_cast<uint64_t>(k.mtime_nsec)})
    h = (h ^ v) * 0x100000001b3ull;
  return h;
}

void ObjectStore::set_pending_resolver(PendingResolver resolver) {
  pending_resolver_ = std::move(resolver);
}

uint64_t ObjectStore::digests_computed() const {
  std::lock_guard lock(mutex_);
  return digests_computed_;
}

bool ObjectStore::exists(std::string_view object_path) const {
  struct stat st;
  if (::fstatat(dir_.get(), std::string(object_path).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)
    return true;
  if (errno == ENOENT) return false;
  throw ObjectError(name_ + "/" + std::string(object_path) + ": " + errno_text(errno));
}

UniqueFd ObjectStore::open(std::string_view redirect, const std::optional<Digest>& metacopy,
                           uint64_t size, std::shared_ptr<PendingFile>* pending) const {
  // Only "/" + the object path of a digest is accepted: anything else could name a file the
  // image author does not vouch for by content. A lazy pull's provisional image also has
  // pending contents, which its resolver turns into objects first.
  std::optional<Digest> named;
  std::string resolved_path;
  std::string_view path = redirect;
  if (pending_resolver_ && redirect.starts_with(kPendingRedirectPrefix)) {
    if (metacopy)
      throw ObjectError(name_ + ": pending redirect '" + escape_for_log(redirect) +
                        "' with a metacopy digest");
    PendingAnswer answer;
    try {
      answer = pending_resolver_(redirect.substr(kPendingRedirectPrefix.size()));
    } catch (const std::exception& e) {
      throw ObjectError(e.what());
    }
    if (answer.file) {
      const std::string what = name_ + ": pending content " + escape_for_log(redirect);
      if (!pending) throw ObjectError(what + ": not local yet");
      struct stat st;
      if (::fstat(answer.file->fd(), &st) != 0)
        throw ObjectError(what + ": fstat: " + errno_text(errno));
      if (static_cast<uint64_t>(st.st_size) != size)
        throw ObjectError(what + ": " + std::to_string(st.st_size) + " bytes, the image says " +
                          std::to_string(size));
      *pending = std::move(answer.file);
      return {};
    }
    if (!answer.object)
      throw ObjectError(name_ + ": pending redirect '" + escape_for_log(redirect) +
                        "': the resolver gave nothing");
    named = answer.object;
    resolved_path = named->object_path();
    path = resolved_path;
  } else {
    if (!path.starts_with('/'))
      throw ObjectError(name_ + ": redirect '" + escape_for_log(redirect) +
                        "' is not an object path");
    path.remove_prefix(1);
    named = Digest::from_object_path(path);
    if (!named || named->object_path() != path)
      throw ObjectError(name_ + ": redirect '" + escape_for_log(redirect) +
                        "' is not a lowercase hex object path");
    if (metacopy && *metacopy != *named)
      throw ObjectError(name_ + "/" + std::string(path) +
                        ": the image's metacopy digest differs from the object name");
  }
  const std::string object = name_ + "/" + std::string(path);

  // The one confined open (cfs/safe_open.h): beneath the object directory, no symlinks, a
  // regular file only, O_NONBLOCK while checking so a planted FIFO cannot hang a thread.
  UniqueFd file;
  try {
    file = open_regular_beneath(dir_.get(), path, O_RDONLY, object);
  } catch (const SystemError& e) {
    throw ObjectError(object + ": cannot open: " + errno_text(e.code()));
  } catch (const Error& e) {
    throw ObjectError(e.what());
  }

  struct stat st;
  if (::fstat(file.get(), &st) != 0) throw ObjectError(object + ": fstat: " + errno_text(errno));
  if (static_cast<uint64_t>(st.st_size) != size)
    throw ObjectError(object + ": " + std::to_string(st.st_size) + " bytes, the image says " +
                      std::to_string(size));

  VersionKey key;
  key.dev = st.st_dev;
  key.ino = st.st_ino;
  key.size = static_cast<uint64_t>(st.st_size);
  key.ctime_sec = st.st_ctim.tv_sec;
  key.ctime_nsec = st.st_ctim.tv_nsec;
  key.mtime_sec = st.st_mtim.tv_sec;
  key.mtime_nsec = st.st_mtim.tv_nsec;
  key.expected = *named;
  if (!verified(file.get(), key, object))
    throw ObjectError(object + ": fs-verity digest does not match the object name");
  return file;
}

bool ObjectStore::verified(int fd, const VersionKey& key, const std::string& object) const {
  // A kernel measurement is authoritative and cheap; the kernel keeps such files immutable.
  std::optional<Digest> measured;
  try {
    measured = measure_verity(fd, object);
  } catch (const Error& e) {
    throw ObjectError(e.what());
  }
  if (measured) return *measured == key.expected;
  if (policy_ == VerityPolicy::kernel)
    throw ObjectError(object + ": no fs-verity (required in a secure repository)");

  std::promise<bool> promise;
  std::shared_future<bool> verdict;
  {
    std::lock_guard lock(mutex_);
    auto it = verdicts_.find(key);
    if (it != verdicts_.end()) {
      verdict = it->second;
    } else {
      if (verdicts_.size() >= kMaxVerdicts) verdicts_.clear();
      verdict = promise.get_future().share();
      verdicts_.emplace(key, verdict);
      digests_computed_++;
      verdict = {};  // computed below by this thread
    }
  }
  if (verdict.valid()) return verdict.get();

  bool ok = false;
  try {
    Digest actual = fsverity_digest_fd(fd, key.expected.algorithm(), object);
    ok = actual == key.expected;
  } catch (const std::exception& e) {
    // An I/O failure is not a verdict on the content: forget it so a later open retries.
    {
      std::lock_guard lock(mutex_);
      verdicts_.erase(key);
    }
    promise.set_value(false);
    throw ObjectError(object + ": cannot compute its fs-verity digest: " + e.what());
  }
  promise.set_value(ok);
  if (::lseek(fd, 0, SEEK_SET) != 0) throw ObjectError(object + ": lseek: " + errno_text(errno));
  return ok;
}

}  // namespace cfs::fuse
