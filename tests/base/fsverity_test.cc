#include "cfs/fsverity.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace cfs {
namespace {

// Vectors from composefs' lcfs-fsverity tests and `fsverity digest`.
TEST(FsVerity, KnownSha256Vectors) {
  EXPECT_EQ(fsverity_digest("").hex(),
            "3d248ca542a24fc62d1c43b916eae5016878e2533c88238480b26128a1f1af95");
  EXPECT_EQ(fsverity_digest("hello world\n").hex(),
            "37061ef2ac4c21bec68489b56138c5780306a4ad7fe6676236ecdf2c9027cd92");
  EXPECT_EQ(fsverity_digest("foo bar baz\n").hex(),
            "91e7d88cb7bc9cf6d8db3b0ecf89af4abf204bef5b3ade5113d5b62ef374e70b");
}

std::string pseudo_random(size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

// Chunking must not change the digest, across block and tree-level boundaries.
TEST(FsVerity, StreamingIsChunkingIndependent) {
  for (size_t size : {1ul, 4095ul, 4096ul, 4097ul, 8192ul, 4096ul * 128, 4096ul * 129 + 7,
                      4096ul * 128 * 128 + 1}) {
    for (auto alg : {HashAlgorithm::sha256, HashAlgorithm::sha512}) {
      std::string data = pseudo_random(size, static_cast<unsigned>(size));
      Digest whole = fsverity_digest(data, alg);
      FsVerityHasher h(alg);
      size_t pos = 0, step = 1;
      while (pos < data.size()) {
        size_t take = std::min(step, data.size() - pos);
        h.update(std::string_view(data).substr(pos, take));
        pos += take;
        step = step * 3 + 1;
      }
      EXPECT_EQ(h.finish(), whole) << "size " << size;
      EXPECT_EQ(whole.size(), alg == HashAlgorithm::sha256 ? 32u : 64u);
    }
  }
}

}  // namespace
}  // namespace cfs
