#include "object_lookup.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <unordered_map>
#include <utility>

#include "cfs/erofs/format.h"

namespace cfs::kmount::detail {

namespace {

// Below this many names, one fstatat each beats listing a directory of (possibly) many more.
constexpr size_t kListThreshold = 8;
// A listing stops once it has read this many entries per name sought (plus a constant), so a
// repository whose fan-out directories hold far more than the image names costs no more than
// the lookups would; what the listing did not reach is then looked up one by one.
constexpr size_t kListEntriesPerName = 4;
constexpr size_t kListSlack = 256;

bool is_regular_at(int dir_fd, std::string_view name) {
  char path[erofs::kPathMax + 1];
  if (name.size() > erofs::kPathMax) return false;
  name.copy(path, name.size());
  path[name.size()] = '\0';
  struct stat st {};
  return ::fstatat(dir_fd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

// A reference split into its directory ("" for none) and the name in it.
std::pair<std::string_view, std::string_view> split_ref(std::string_view ref) {
  size_t slash = ref.rfind('/');
  if (slash == ref.npos) return {{}, ref};
  return {ref.substr(0, slash), ref.substr(slash + 1)};
}

// The distinct names sought in one directory, sorted, each with whether it was found. Flat
// vectors rather than node-based sets: an image names tens of thousands of objects, and the
// memory a node per name takes costs more than the searches.
struct DirNames {
  std::string_view dir;
  std::vector<std::string_view> names;
  std::vector<uint8_t> found;
  size_t left = 0;  // names not found yet

  void seal() {
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    found.assign(names.size(), 0);
    left = names.size();
  }
  // The index of name, or npos.
  size_t index_of(std::string_view name) const {
    auto it = std::lower_bound(names.begin(), names.end(), name);
    return it != names.end() && *it == name ? static_cast<size_t>(it - names.begin())
                                            : std::string_view::npos;
  }
  void mark(size_t i) {
    if (!found[i]) {
      found[i] = 1;
      left--;
    }
  }
};

// Marks every sought name that is a regular file in dir_fd, by reading the directory (one
// getdents64 call per few hundred entries instead of a path walk per name). Returns true
// when it read the directory to its end, so that the names left are not there.
bool list_and_mark(int dir_fd, DirNames& group) {
  size_t budget = kListEntriesPerName * group.left + kListSlack;
  alignas(8) char buf[32768];
  while (group.left > 0 && budget > 0) {
    long n = ::syscall(SYS_getdents64, dir_fd, buf, sizeof buf);
    if (n == 0) return true;
    if (n < 0) return false;  // the per-name lookups meet the error again
    for (long off = 0; off < n;) {
      // linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name.
      unsigned short reclen;
      std::memcpy(&reclen, buf + off + 16, sizeof reclen);
      unsigned char type = static_cast<unsigned char>(buf[off + 18]);
      std::string_view name(buf + off + 19);
      off += reclen;
      if (budget > 0) budget--;
      size_t i = group.index_of(name);
      if (i == std::string_view::npos) continue;
      if (type == DT_REG || (type == DT_UNKNOWN && is_regular_at(dir_fd, name))) group.mark(i);
    }
  }
  return group.left == 0;
}

// Looks the names of one directory up in one object directory; marks those found.
void find_in(int object_dir, DirNames& group) {
  if (group.left >= kListThreshold) {
    std::string path = group.dir.empty() ? "." : std::string(group.dir);
    UniqueFd fd(::openat(object_dir, path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return;  // no such directory: nothing in it is present
    if (list_and_mark(fd.get(), group)) return;
    // The listing stopped early: look the rest up one by one.
    for (size_t i = 0; i < group.names.size(); i++)
      if (!group.found[i] && is_regular_at(fd.get(), group.names[i])) group.mark(i);
    return;
  }
  for (size_t i = 0; i < group.names.size(); i++) {
    if (group.found[i]) continue;
    std::string_view name = group.names[i];
    std::string full =
        group.dir.empty() ? std::string(name) : std::string(group.dir) + "/" + std::string(name);
    if (is_regular_at(object_dir, full)) group.mark(i);
  }
}

}  // namespace

std::vector<std::string_view> missing_objects(const std::vector<UniqueFd>& object_dirs,
                                              const std::vector<std::string_view>& refs) {
  // Grouped by directory (the 256 fan-out directories of a repository).
  std::unordered_map<std::string_view, size_t> group_of;
  std::vector<DirNames> groups;
  for (std::string_view ref : refs) {
    auto [dir, name] = split_ref(ref);
    auto [it, added] = group_of.try_emplace(dir, groups.size());
    if (added) groups.push_back({dir, {}, {}, 0});
    groups[it->second].names.push_back(name);
  }
  for (DirNames& group : groups) group.seal();
  for (const UniqueFd& object_dir : object_dirs)
    for (DirNames& group : groups)
      if (group.left > 0) find_in(object_dir.get(), group);

  std::vector<std::string_view> missing;
  for (std::string_view ref : refs) {
    auto [dir, name] = split_ref(ref);
    const DirNames& group = groups[group_of.at(dir)];
    if (group.left > 0 && !group.found[group.index_of(name)]) missing.push_back(ref);
  }
  return missing;
}

}  // namespace cfs::kmount::detail
