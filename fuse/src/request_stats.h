// Per-opcode request counters of one FUSE session: always counted (one relaxed atomic add per
// request), reported by `cfs-fuse --stats` when the session ends. They show how many round
// trips a workload costs (e.g. a cold `find -ls`, or what overlayfs asks of its lower layer)
// and that warm reads never reach the server.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>

namespace cfs::fuse {

enum class Request : unsigned {
  init,
  lookup,
  lookup_negative,  // of the lookups, those answered "no such entry"
  getattr,
  readlink,
  opendir,
  readdir,
  readdirplus,
  releasedir,
  open,
  read,
  release,
  getxattr,
  getxattr_size_query,  // of the getxattrs, those with size 0 (asking for the length only)
  getxattr_missing,     // of the getxattrs, those answered ENODATA
  listxattr,
  statfs,
  access,
  denied,  // any modifying request (EROFS)
  count_
};

class RequestStats {
 public:
  // by_name: also count getxattr per attribute name (a lock per getxattr; for --stats only).
  explicit RequestStats(bool by_name) : by_name_(by_name) {}

  void add(Request r) { counts_[static_cast<unsigned>(r)].fetch_add(1, std::memory_order_relaxed); }
  void add_xattr_name(std::string_view name);
  uint64_t get(Request r) const {
    return counts_[static_cast<unsigned>(r)].load(std::memory_order_relaxed);
  }
  // One line per non-zero counter ("  lookup  1234"), then the getxattr names if counted.
  std::string report() const;

 private:
  bool by_name_;
  std::array<std::atomic<uint64_t>, static_cast<unsigned>(Request::count_)> counts_{};
  mutable std::mutex mutex_;
  std::map<std::string, uint64_t, std::less<>> xattr_names_;
};

}  // namespace cfs::fuse
