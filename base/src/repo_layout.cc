#include "cfs/repo_layout.h"

#include <vector>

#include "cfs/error.h"
#include "cfs/escape.h"

namespace cfs::repo_layout {

namespace {

std::string join(std::string_view dir, std::string_view name) {
  std::string out(dir);
  out += '/';
  out += name;
  return out;
}

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

std::string object_repo_path(const Digest& id) {
  return join(kObjects, id.object_path());
}

std::optional<Digest> digest_from_object_path(std::string_view repo_path, HashAlgorithm alg) {
  if (!repo_path.starts_with(kObjects) || repo_path.substr(kObjects.size(), 1) != "/")
    return std::nullopt;
  auto digest = Digest::from_object_path(repo_path.substr(kObjects.size() + 1));
  if (!digest || digest->algorithm() != alg) return std::nullopt;
  return digest;
}

std::string object_link_target(const Digest& id) {
  return "../" + object_repo_path(id);
}

std::string image_entry(const Digest& id) {
  return join(kImages, id.hex());
}
std::string image_ref(std::string_view name) {
  return join(kImageRefs, name);
}
std::string stream_entry(std::string_view content) {
  return join(kStreams, content);
}
std::string stream_ref(std::string_view name) {
  return join(kStreamRefs, name);
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

std::optional<std::string> resolve_link_target(std::string_view link_path,
                                               std::string_view target) {
  if (target.empty() || target.front() == '/') return std::nullopt;
  std::vector<std::string_view> parts;
  auto push_all = [&](std::string_view path) {
    while (!path.empty()) {
      auto slash = path.find('/');
      std::string_view part = path.substr(0, slash);
      if (part == "..") {
        if (parts.empty()) return false;
        parts.pop_back();
      } else if (!part.empty() && part != ".") {
        parts.push_back(part);
      }
      if (slash == std::string_view::npos) break;
      path.remove_prefix(slash + 1);
    }
    return true;
  };
  auto slash = link_path.rfind('/');
  std::string_view link_dir =
      slash == std::string_view::npos ? std::string_view() : link_path.substr(0, slash);
  if (!push_all(link_dir) || !push_all(target)) return std::nullopt;
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i) out += '/';
    out += parts[i];
  }
  return out;
}

}  // namespace cfs::repo_layout
