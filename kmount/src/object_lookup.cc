#include "object_lookup.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <unordered_map>
#include <unordered_set>
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

using NameSet = std::unordered_set<std::string_view>;

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

// Removes from wanted every name that is a regular file in dir_fd, by reading the directory
// (one getdents64 call per few hundred entries instead of a path walk per name). Returns true
// when it read the directory to its end, so that what is left in wanted is not there.
bool list_and_remove(int dir_fd, NameSet& wanted) {
  size_t budget = kListEntriesPerName * wanted.size() + kListSlack;
  alignas(8) char buf[32768];
  while (!wanted.empty() && budget > 0) {
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
      auto it = wanted.find(name);
      if (it == wanted.end()) continue;
      if (type == DT_REG || (type == DT_UNKNOWN && is_regular_at(dir_fd, name))) wanted.erase(it);
    }
  }
  return wanted.empty();
}

// Looks the names of one directory up in one object directory; removes those found.
void find_in(int object_dir, std::string_view dir, NameSet& wanted) {
  if (wanted.size() >= kListThreshold) {
    std::string path = dir.empty() ? "." : std::string(dir);
    UniqueFd fd(::openat(object_dir, path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return;  // no such directory: nothing in it is present
    if (list_and_remove(fd.get(), wanted)) return;
    // The listing stopped early: look the rest up one by one.
    for (auto it = wanted.begin(); it != wanted.end();)
      it = is_regular_at(fd.get(), *it) ? wanted.erase(it) : std::next(it);
    return;
  }
  for (auto it = wanted.begin(); it != wanted.end();) {
    std::string full = dir.empty() ? std::string(*it) : std::string(dir) + "/" + std::string(*it);
    it = is_regular_at(object_dir, full) ? wanted.erase(it) : std::next(it);
  }
}

}  // namespace

std::vector<std::string_view> missing_objects(const std::vector<UniqueFd>& object_dirs,
                                              const std::vector<std::string_view>& refs) {
  // Grouped by directory (the 256 fan-out directories of a repository).
  std::unordered_map<std::string_view, NameSet> by_dir;
  for (std::string_view ref : refs) {
    auto [dir, name] = split_ref(ref);
    by_dir[dir].insert(name);
  }
  for (const UniqueFd& object_dir : object_dirs)
    for (auto& [dir, wanted] : by_dir)
      if (!wanted.empty()) find_in(object_dir.get(), dir, wanted);

  std::vector<std::string_view> missing;
  for (std::string_view ref : refs) {
    auto [dir, name] = split_ref(ref);
    if (by_dir[dir].count(name)) missing.push_back(ref);
  }
  return missing;
}

}  // namespace cfs::kmount::detail
