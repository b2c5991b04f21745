// fs-verity file digests computed in userspace (4 KiB blocks, no salt), identical to what
// the kernel's FS_IOC_MEASURE_VERITY reports. Streaming: feed bytes with update(), in any
// chunking, then finish(). Memory is O(tree depth * 4 KiB).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cfs/digest.h"

namespace cfs {

class FsVerityHasher {
 public:
  explicit FsVerityHasher(HashAlgorithm alg = HashAlgorithm::sha256);
  ~FsVerityHasher();
  FsVerityHasher(FsVerityHasher&&) noexcept;
  FsVerityHasher& operator=(FsVerityHasher&&) noexcept;

  void update(std::span<const std::byte> data);
  void update(std::string_view data) {
    update({reinterpret_cast<const std::byte*>(data.data()), data.size()});
  }
  // Feeds n zero bytes (a hole of a sparse file) without materialising them: whole zero
  // blocks reuse one precomputed hash, so a large hole costs a hash push per block, not a
  // SHA pass over its bytes.
  void update_zeros(uint64_t n);
  uint64_t size() const noexcept;
  // Returns the fs-verity file digest; the hasher must not be used afterwards.
  Digest finish();

 private:
  struct State;
  std::unique_ptr<State> state_;
};

Digest fsverity_digest(std::span<const std::byte> data, HashAlgorithm alg = HashAlgorithm::sha256);
Digest fsverity_digest(std::string_view data, HashAlgorithm alg = HashAlgorithm::sha256);
// Digest of a file's contents read from fd (from its current offset to EOF).
Digest fsverity_digest_fd(int fd, HashAlgorithm alg, const std::string& what);
Digest fsverity_digest_file(const std::string& path, HashAlgorithm alg = HashAlgorithm::sha256);

}  // namespace cfs
