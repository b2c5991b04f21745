// The object directory a composefs image's external files are read from, as the FUSE server
// uses it: redirects are accepted only in the content-addressed form ("/ab/cdef…"), objects
// are opened strictly beneath the directory, and an object's bytes are served only after
// its fs-verity digest matched what the image promises.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "cfs/digest.h"
#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/pending_file.h"

namespace cfs::fuse {

// How an object's digest is established before its data is served.
enum class VerityPolicy {
  // Secure repository: only the kernel's fs-verity measurement counts; an object without
  // fs-verity is refused.
  kernel,
  // Insecure repository or --basedir: the kernel's measurement when the object has one,
  // otherwise a userspace fs-verity digest of the whole file (cached per object version).
  userspace,
};

// An object could not be served; what() is the one log line saying why.
class ObjectError : public cfs::Error {
 public:
  using cfs::Error::Error;
};

// A lazy pull's provisional image (cfs/oci/lazy.h) redirects a file whose content is not
// local yet to this directory + "<sha256 hex of the content>": two hex digits never spell it,
// so no object path can be mistaken for it. Accepted only by a store given a resolver.
inline constexpr std::string_view kPendingRedirectPrefix = "/pending-sha256/";

// Answers for the content whose sha256 is the hex given; throws cfs::Error naming the file
// and the problem.
using PendingResolver = std::function<PendingAnswer(std::string_view sha256_hex)>;

class ObjectStore {
 public:
  // dir: an open directory (O_PATH is enough); name is used in messages.
  ObjectStore(UniqueFd dir, std::string name, VerityPolicy policy);
  ObjectStore(const ObjectStore&) = delete;
  ObjectStore& operator=(const ObjectStore&) = delete;

  // Opens the object a trusted.overlay.redirect value names, checked against expected (the
  // metacopy digest, or else the digest the object's name spells) and against the size the
  // image records. Throws ObjectError naming the object and the problem. A pending redirect
  // the resolver answers with a PendingFile gives an empty fd and that file in *pending (its
  // size checked too; refused when pending is null).
  UniqueFd open(std::string_view redirect, const std::optional<Digest>& metacopy, uint64_t size,
                std::shared_ptr<PendingFile>* pending = nullptr) const;

  // Whether DIR/object_path ("ab/cdef…") exists at all (a missing object, as opposed to one
  // that fails its checks). Throws ObjectError on errors other than ENOENT.
  bool exists(std::string_view object_path) const;

  // Serve pending redirects through resolver (set before serving).
  void set_pending_resolver(PendingResolver resolver);

  const std::string& name() const noexcept { return name_; }
  VerityPolicy policy() const noexcept { return policy_; }
  // Userspace digests computed so far (each object version is hashed once).
  uint64_t digests_computed() const;

 private:
  // One version of one object file: a rewrite in place changes ctime, a replacement the inode.
  struct VersionKey {
    uint64_t dev = 0, ino = 0, size = 0;
    int64_t ctime_sec = 0, ctime_nsec = 0, mtime_sec = 0, mtime_nsec = 0;
    Digest expected;
    friend bool operator==(const VersionKey&, const VersionKey&) = default;
  };
  struct VersionKeyHash {
    size_t operator()(const VersionKey& k) const noexcept;
  };

  bool verified(int fd, const VersionKey& key, const std::string& object) const;

  UniqueFd dir_;
  std::string name_;
  VerityPolicy policy_;
  PendingResolver pending_resolver_;
  mutable std::mutex mutex_;
  // Concurrent opens of one object wait for a single digest computation.
  mutable std::unordered_map<VersionKey, std::shared_future<bool>, VersionKeyHash> verdicts_;
  mutable uint64_t digests_computed_ = 0;
};

}  // namespace cfs::fuse
