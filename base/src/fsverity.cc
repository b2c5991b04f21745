#include "cfs/fsverity.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <optional>

#include "cfs/error.h"
#include "cfs/fd.h"

namespace cfs {

namespace {

constexpr size_t kBlockSize = 4096;
constexpr uint8_t kLogBlockSize = 12;

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const noexcept { EVP_MD_CTX_free(ctx); }
};
struct MdDeleter {
  void operator()(EVP_MD* md) const noexcept { EVP_MD_free(md); }
};

}  // namespace

struct FsVerityHasher::State {
  HashAlgorithm alg;
  // Fetched once: EVP_sha256() would make OpenSSL 3 look the provider up again on every
  // 4 KiB block, which costs more than the hashing itself.
  std::unique_ptr<EVP_MD, MdDeleter> md;
  std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx{EVP_MD_CTX_new()};
  size_t hash_size;
  uint64_t total = 0;
  uint64_t blocks_hashed = 0;  // data blocks pushed into level 0
  std::vector<uint8_t> block;  // current (partial) data block
  // levels[i]: the partially filled hash block at tree level i.
  std::vector<std::vector<uint8_t>> levels;
  std::optional<std::array<uint8_t, 64>> zero_hash;  // hash of an all-zero data block

  void hash(const uint8_t* data, size_t len, uint8_t* out) {
    if (!EVP_DigestInit_ex2(ctx.get(), md.get(), nullptr) ||
        !EVP_DigestUpdate(ctx.get(), data, len) || !EVP_DigestFinal_ex(ctx.get(), out, nullptr))
      throw Error("fs-verity: OpenSSL digest failed");
  }

  // Hash a block padded with zeros to kBlockSize.
  void hash_padded(std::vector<uint8_t>& buf, uint8_t* out) {
    buf.resize(kBlockSize, 0);
    hash(buf.data(), kBlockSize, out);
  }

  void push_hash(size_t level, const uint8_t* h) {
    if (levels.size() <= level) levels.emplace_back().reserve(kBlockSize);
    auto& buf = levels[level];
    if (buf.size() + hash_size > kBlockSize) {
      uint8_t up[64];
      hash_padded(buf, up);
      buf.clear();
      push_hash(level + 1, up);
    }
    // levels may have been reallocated by the recursive call.
    levels[level].insert(levels[level].end(), h, h + hash_size);
  }

  void flush_data_block() {
    uint8_t h[64];
    hash_padded(block, h);
    block.clear();
    blocks_hashed++;
    push_hash(0, h);
  }
};

FsVerityHasher::FsVerityHasher(HashAlgorithm alg) : state_(std::make_unique<State>()) {
  state_->alg = alg;
  state_->md.reset(
      EVP_MD_fetch(nullptr, alg == HashAlgorithm::sha256 ? "SHA256" : "SHA512", nullptr));
  state_->hash_size = digest_size(alg);
  if (!state_->ctx || !state_->md)
    throw Error("fs-verity: OpenSSL has no " + std::string(algorithm_name(alg)));
  state_->block.reserve(kBlockSize);
}

FsVerityHasher::~FsVerityHasher() = default;
FsVerityHasher::FsVerityHasher(FsVerityHasher&&) noexcept = default;
FsVerityHasher& FsVerityHasher::operator=(FsVerityHasher&&) noexcept = default;

uint64_t FsVerityHasher::size() const noexcept {
  return state_->total;
}

void FsVerityHasher::update(std::span<const std::byte> data) {
  State& s = *state_;
  const auto* p = reinterpret_cast<const uint8_t*>(data.data());
  size_t n = data.size();
  s.total += n;
  while (n > 0) {
    // A full block is only hashed once more data follows: the last block may be the root.
    if (s.block.size() == kBlockSize) s.flush_data_block();
    if (s.block.empty() && n > kBlockSize) {
      // Fast path: hash whole blocks straight from the caller's buffer.
      uint8_t h[64];
      s.hash(p, kBlockSize, h);
      s.blocks_hashed++;
      s.push_hash(0, h);
      p += kBlockSize;
      n -= kBlockSize;
      continue;
    }
    size_t take = std::min(n, kBlockSize - s.block.size());
    s.block.insert(s.block.end(), p, p + take);
    p += take;
    n -= take;
  }
}

void FsVerityHasher::update_zeros(uint64_t n) {
  State& s = *state_;
  static constexpr std::array<std::byte, kBlockSize> kZeros{};
  // Complete a partially filled block through the ordinary path.
  if (!s.block.empty() && s.block.size() < kBlockSize) {
    auto take = static_cast<size_t>(std::min<uint64_t>(n, kBlockSize - s.block.size()));
    update(std::span(kZeros).first(take));
    n -= take;
  }
  // Whole zero blocks while more data follows (the last block stays buffered: it may be
  // the root).
  if (n > kBlockSize) {
    if (s.block.size() == kBlockSize) s.flush_data_block();
    if (!s.zero_hash) {
      s.zero_hash.emplace();
      s.hash(reinterpret_cast<const uint8_t*>(kZeros.data()), kBlockSize, s.zero_hash->data());
    }
    while (n > kBlockSize) {
      s.total += kBlockSize;
      s.blocks_hashed++;
      s.push_hash(0, s.zero_hash->data());
      n -= kBlockSize;
    }
  }
  while (n > 0) {
    auto take = static_cast<size_t>(std::min<uint64_t>(n, kBlockSize));
    update(std::span(kZeros).first(take));
    n -= take;
  }
}

Digest FsVerityHasher::finish() {
  State& s = *state_;
  uint8_t root[64] = {};
  if (s.total > 0) {
    if (s.blocks_hashed == 0) {
      // A single data block: its hash is the root.
      s.hash_padded(s.block, root);
    } else {
      if (!s.block.empty()) s.flush_data_block();
      for (size_t level = 0;; level++) {
        if (level + 1 == s.levels.size()) {
          s.hash_padded(s.levels[level], root);
          break;
        }
        uint8_t h[64];
        s.hash_padded(s.levels[level], h);
        s.levels[level].clear();
        s.push_hash(level + 1, h);
      }
    }
  }

  uint8_t descriptor[256] = {};
  descriptor[0] = 1;  // version
  descriptor[1] = static_cast<uint8_t>(s.alg);
  descriptor[2] = kLogBlockSize;
  descriptor[3] = 0;  // salt size
  uint64_t size = s.total;
  for (int i = 0; i < 8; i++) descriptor[8 + i] = static_cast<uint8_t>(size >> (8 * i));
  std::memcpy(descriptor + 16, root, s.hash_size);
  uint8_t out[64];
  s.hash(descriptor, sizeof descriptor, out);
  return Digest(s.alg, {out, s.hash_size});
}

Digest fsverity_digest(std::span<const std::byte> data, HashAlgorithm alg) {
  FsVerityHasher h(alg);
  h.update(data);
  return h.finish();
}

Digest fsverity_digest(std::string_view data, HashAlgorithm alg) {
  return fsverity_digest({reinterpret_cast<const std::byte*>(data.data()), data.size()}, alg);
}

Digest fsverity_digest_fd(int fd, HashAlgorithm alg, const std::string& what) {
  FsVerityHasher h(alg);
  std::vector<std::byte> buf(1 << 20);
  while (size_t n = read_some(fd, buf, what)) h.update({buf.data(), n});
  return h.finish();
}

Digest fsverity_digest_file(const std::string& path, HashAlgorithm alg) {
  UniqueFd fd = open_file(path, O_RDONLY);
  return fsverity_digest_fd(fd.get(), alg, path);
}

}  // namespace cfs
