// A FUSE view of a directory in which reads of chosen files fail with EIO: a failing disk for
// tests on kernels without device-mapper. Writable on request, it is also a filesystem without
// O_TMPFILE (libfuse 3.14 has no tmpfile operation), for the store's named-temp fallback.
#pragma once

#include <memory>
#include <set>
#include <string>

namespace cfs::test {

class EioFuse {
 public:
  // Mounts a view of backing at mountpoint; reads of the files named in failing (paths
  // relative to backing) fail with EIO after the first failing_after bytes.
  EioFuse(std::string backing, std::string mountpoint, std::set<std::string> failing,
          size_t failing_after = 4096, bool writable = false);
  ~EioFuse();
  EioFuse(const EioFuse&) = delete;
  EioFuse& operator=(const EioFuse&) = delete;
  bool mounted() const;

  struct State;

 private:
  std::unique_ptr<State> state_;
};

}  // namespace cfs::test
