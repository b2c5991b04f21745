// A composefs repository: content-addressed objects plus the symlink namespaces that name
// images and splitstreams, on-disk compatible with composefs-rs.
//
//   meta.json                    format version, algorithm, feature flags (meta.h)
//   objects/XX/<rest>            files named by their fs-verity digest (XX = first byte)
//   images/<hex>                 -> ../objects/XX/<rest>     an EROFS image
//   images/refs/<name…>          -> relative link to images/<hex>
//   streams/<content-id>         -> ../objects/XX/<rest>     a splitstream
//   streams/refs/<name…>         -> relative link to streams/<content-id>
//
// Secure repositories (meta.json has fs-verity) keep fs-verity on every object and trust
// only the kernel's measurement; insecure ones (init --insecure, or filesystems without
// fs-verity) compute digests in userspace.
//
// Durability (see store/README.md): an object's name appears only after its data is on
// stable storage, and an image, stream or ref symlink appears only after every object it
// needs (and that object's name) is on stable storage. Nothing is ever visible half-written.
//
// A Repository holds the repository lock (lock.h) for its lifetime. It is not thread-safe:
// use one per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/digest.h"
#include "cfs/fd.h"
#include "cfs/output.h"
#include "cfs/repo_layout.h"
#include "cfs/store/lock.h"
#include "cfs/store/meta.h"
#include "cfs/store/splitstream.h"

namespace cfs::store {

struct InitOptions {
  HashAlgorithm algorithm = HashAlgorithm::sha512;
  // Skip fs-verity: objects are named by userspace digests and nothing is kernel-checked.
  bool insecure = false;
  // The EROFS format of its images (meta.json's erofs_formats.default; composefs-rs' init
  // --erofs-version). 1 is composefs-rs' default for new repositories.
  uint32_t erofs_version = 1;
};

struct ImageInfo {
  Digest id;
  std::vector<std::string> refs;  // names below images/refs/ that resolve to this image
  uint64_t size = 0;              // bytes of the image object (0 if the object is missing)
};

// What Repository::open does with a directory that has objects/ but no meta.json (made by
// composefs-rs before it wrote meta.json).
enum class MissingMeta {
  // Open it read-only, the algorithm inferred from the object names.
  read_only,
  // Upgrade it as composefs-rs' open_upgrade does: the algorithm from the length of the
  // first object name found (62 or 126 hex digits after objects/XX/), secure if that object
  // has fs-verity, and meta.json written as composefs-rs writes it for that algorithm (EROFS
  // V1, "v1_erofs"). Where the repository cannot be written, it opens read-only instead.
  upgrade,
  // Refuse to open it.
  refuse,
};

class Repository;

// Streams bytes into a new object. Nothing is visible until commit(); an ObjectWriter
// destroyed without commit() leaves no trace. Must not outlive its Repository.
class ObjectWriter : public OutputSink {
 public:
  ObjectWriter(ObjectWriter&&) noexcept;
  ObjectWriter& operator=(ObjectWriter&&) = delete;
  ~ObjectWriter() override;

  using OutputSink::write;
  void write(std::span<const std::byte> data) override;
  // Appends n zero bytes as a hole where the filesystem allows (the file offset moves on and
  // commit() sets the final size), so sparse files stay sparse in the object store.
  void write_zeros(uint64_t n);
  // Finishes the object and returns its id. The object is readable through the repository
  // at once and reaches its final name, durably, at the next Repository::sync() (which every
  // image, stream and ref operation performs first).
  Digest commit();

 private:
  friend class Repository;
  struct State;
  explicit ObjectWriter(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

class Repository {
 public:
  // Creates a repository at path (the directory is created if missing; it must not already
  // hold meta.json) and opens it. Without insecure, fs-verity is enabled on meta.json and the
  // call fails if the filesystem cannot do that.
  static Repository init(const std::string& path, const InitOptions& options);
  // Opens an existing repository, waiting for the lock. A directory with objects/ but no
  // meta.json (an old composefs-rs repository) is handled as `missing` says.
  static Repository open(const std::string& path, LockMode lock = LockMode::shared,
                         MissingMeta missing = MissingMeta::read_only);

  Repository(Repository&&) noexcept;
  Repository& operator=(Repository&&) noexcept;
  // Links objects written since the last sync (without the final durability barrier).
  ~Repository();

  const std::string& path() const noexcept;
  int dirfd() const noexcept;
  const RepoMeta& meta() const noexcept;
  // The EROFS formats images are written in: meta.json's (default first, then the extra ones),
  // or only the one set_erofs_version() chose.
  std::vector<uint32_t> erofs_versions() const;
  // The first of them: the format whose image a lookup returns.
  uint32_t erofs_version() const;
  // For this handle only (meta.json is not changed): images are written, and looked up, in
  // this format alone (composefs-rs' global --erofs-version). Throws above kMaxErofsVersion.
  void set_erofs_version(uint32_t version);
  bool erofs_version_chosen() const noexcept;  // set_erofs_version() was called
  HashAlgorithm algorithm() const noexcept;
  bool secure() const noexcept;
  // composefs-rs' hidden `cfsctl --insecure`: treats this open repository as insecure for
  // the rest of the process (objects read without comparing the kernel's fs-verity
  // measurement with their name, new objects named by userspace digests where fs-verity is
  // refused). meta.json is not changed.
  void set_insecure() noexcept;
  bool has_meta() const noexcept;  // false for inferred legacy repositories
  bool upgraded() const noexcept;  // true if open() wrote meta.json (MissingMeta::upgrade)
  // False when the filesystem is read-only, the directory is not writable or meta.json
  // lists read-only-compatible features this implementation does not know.
  bool writable() const noexcept;
  // Throws cfs::Error explaining why the repository is read-only, if it is.
  void require_writable() const;
  // Converts the held lock (garbage collection takes LockMode::exclusive).
  void relock(LockMode mode);
  // Non-blocking relock: false if another process holds a conflicting lock. A failed
  // conversion leaves no lock held (flock drops the old one first); relock() again.
  bool try_relock(LockMode mode);

  // ---- objects (objects/XX/<rest>)
  ObjectWriter write_object();
  Digest ensure_object(std::span<const std::byte> data);
  // Stores the content of fd from its current offset to EOF; *size (if given) receives its
  // length. Regular files in insecure repositories are hashed first and copied (in-kernel)
  // only if the object is missing; a file that changes meanwhile is an error.
  Digest ensure_object_from_fd(int fd, const std::string& what, uint64_t* size = nullptr);
  bool has_object(const Digest& id) const;
  // Opens an object read-only. In secure repositories the kernel's fs-verity measurement
  // must equal id, or this throws.
  UniqueFd open_object(const Digest& id) const;
  // Makes every committed object visible under its final name and durable (one syncfs for
  // the data before linking, one after).
  void sync();

  // ---- images (images/<hex>, images/refs/<name>)
  // Publishes an already stored EROFS object as images/<hex>.
  void link_image(const Digest& image);
  void set_image_ref(std::string_view name, const Digest& image);
  // name: the image id in hex or a ref name below images/refs/. nullopt if unknown.
  std::optional<Digest> resolve_image(std::string_view name) const;
  // Opens the image object (verified in secure mode); throws naming the image if unknown.
  UniqueFd open_image(std::string_view name) const;
  std::vector<ImageInfo> list_images() const;

  // ---- splitstreams (streams/<content-id>, streams/refs/<name>)
  // Stores the splitstream as an object and links streams/<content_id> to it (replacing an
  // older stream of that id), plus streams/refs/<ref> if given. Returns the object id.
  Digest write_stream(SplitStreamWriter& writer, std::string_view content_id,
                      std::optional<std::string_view> ref = std::nullopt);
  // The two halves of write_stream: store the stream as an (unnamed) object, and later name
  // it. Between them nothing refers to the object, so gc removes it if the caller gives up.
  Digest write_stream_object(SplitStreamWriter& writer);
  void link_stream(const Digest& id, std::string_view content_id,
                   std::optional<std::string_view> ref = std::nullopt);
  void set_stream_ref(std::string_view name, std::string_view content_id);
  // Object id of a stream by content id or ref name; nullopt if unknown.
  std::optional<Digest> resolve_stream(std::string_view name) const;
  SplitStreamReader open_stream(std::string_view name) const;
  // Writes the reassembled stream to out, checking each object and the total size.
  void cat_stream(std::string_view name, OutputSink& out) const;

 private:
  friend class ObjectWriter;
  struct State;
  explicit Repository(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

// Relative path of an object from the repository root: "objects/ab/cdef…".
using repo_layout::object_repo_path;

}  // namespace cfs::store
