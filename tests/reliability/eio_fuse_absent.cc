// EioFuse in a build without libfuse (CFS_WITH_FUSE=OFF): the view never mounts, so the tests
// that need a failing disk skip instead of failing.
#include "eio_fuse.h"

namespace cfs::test {

struct EioFuse::State {};

EioFuse::EioFuse(std::string, std::string, std::set<std::string>, size_t, bool)
    : state_(std::make_unique<State>()) {}

EioFuse::~EioFuse() = default;

bool EioFuse::mounted() const {
  return false;
}

}  // namespace cfs::test
