#include "cfs/store/refs.h"

#include <fcntl.h>
#include <unistd.h>

#include <vector>

#include "cfs/atomic_file.h"
#include "cfs/error.h"
#include "cfs/escape.h"
#include "fsutil.h"

namespace cfs::store {

namespace {

std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    auto slash = path.find('/');
    std::string_view part = path.substr(0, slash);
    if (!part.empty()) parts.push_back(part);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return parts;
}

}  // namespace

std::string relative_symlink_target(std::string_view link_path, std::string_view target_path) {
  auto link = split_path(link_path);
  auto target = split_path(target_path);
  if (!link.empty()) link.pop_back();  // the link's own name is not a directory
  size_t common = 0;
  while (common < link.size() && common < target.size() && link[common] == target[common]) ++common;
  std::string out;
  for (size_t i = common; i < link.size(); ++i) out += "../";
  for (size_t i = common; i < target.size(); ++i) {
    out += target[i];
    if (i + 1 < target.size()) out += '/';
  }
  return out;
}

void validate_ref_name(std::string_view name, std::string_view kind) {
  auto fail = [&](const char* why) {
    throw Error(std::string(kind) + " '" + escape_for_log(name) + "': " + why);
  };
  if (name.empty()) fail("is empty");
  if (name.find('\0') != std::string_view::npos) fail("contains a NUL byte");
  if (name.front() == '/') fail("must be relative (no leading '/')");
  if (name.size() > 4000) fail("is too long");
  std::string_view rest = name;
  for (;;) {
    auto slash = rest.find('/');
    std::string_view part = rest.substr(0, slash);
    if (part.empty()) fail("has an empty path component");
    if (part == "." || part == "..") fail("has a '.' or '..' component");
    if (part.front() == '.') fail("has a component starting with '.' (reserved)");
    if (part.size() > 255) fail("has a component longer than 255 bytes");
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
}

void validate_entry_name(std::string_view name, std::string_view kind) {
  if (name.find('/') != std::string_view::npos)
    throw Error(std::string(kind) + " '" + escape_for_log(name) + "': must not contain '/'");
  validate_ref_name(name, kind);
}

void replace_symlink_at(int dirfd, const std::string& name, const std::string& target,
                        const std::string& what) {
  if (::symlinkat(target.c_str(), dirfd, name.c_str()) == 0) return;
  if (errno != EEXIST) throw_errno(what + ": creating symlink");
  if (detail::read_link_at(dirfd, name) == target) return;
  std::string temp = ".symlink-" + random_suffix();
  if (::symlinkat(target.c_str(), dirfd, temp.c_str()) < 0)
    throw_errno(what + ": creating temporary symlink");
  if (::renameat(dirfd, temp.c_str(), dirfd, name.c_str()) < 0) {
    int saved = errno;
    ::unlinkat(dirfd, temp.c_str(), 0);
    throw_errno(saved, what + ": replacing symlink");
  }
}

}  // namespace cfs::store
