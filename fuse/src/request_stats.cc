#include "request_stats.h"

#include <cstdio>

namespace cfs::fuse {

namespace {

constexpr std::array<const char*, static_cast<unsigned>(Request::count_)> kNames = {
    "init",
    "lookup",
    "  of which negative",
    "getattr",
    "readlink",
    "opendir",
    "readdir",
    "readdirplus",
    "releasedir",
    "open",
    "read",
    "release",
    "getxattr",
    "  of which size queries",
    "  of which ENODATA",
    "listxattr",
    "statfs",
    "access",
    "modifying (refused)"};

}  // namespace

void RequestStats::add_xattr_name(std::string_view name) {
  if (!by_name_) return;
  std::lock_guard lock(mutex_);
  auto it = xattr_names_.find(name);
  if (it == xattr_names_.end())
    xattr_names_.emplace(std::string(name), 1);
  else
    it->second++;
}

std::string RequestStats::report() const {
  std::string out;
  char line[128];
  uint64_t total = 0;
  for (unsigned i = 0; i < kNames.size(); i++) {
    uint64_t n = counts_[i].load(std::memory_order_relaxed);
    if (kNames[i][0] != ' ') total += n;
    if (n == 0) continue;
    std::snprintf(line, sizeof line, "  %-26s %12llu\n", kNames[i],
                  static_cast<unsigned long long>(n));
    out += line;
  }
  std::snprintf(line, sizeof line, "  %-26s %12llu\n", "total requests",
                static_cast<unsigned long long>(total));
  out += line;
  std::lock_guard lock(mutex_);
  for (const auto& [name, n] : xattr_names_)
    out += "  getxattr " + name + ": " + std::to_string(n) + "\n";
  return out;
}

}  // namespace cfs::fuse
