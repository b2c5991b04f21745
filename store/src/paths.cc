#include "paths.h"

#include <vector>

namespace cfs::store::detail {

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

std::optional<Digest> digest_from_object_path(std::string_view repo_path, HashAlgorithm alg) {
  constexpr std::string_view prefix = "objects/";
  if (!repo_path.starts_with(prefix)) return std::nullopt;
  auto digest = Digest::from_object_path(repo_path.substr(prefix.size()));
  if (!digest || digest->algorithm() != alg) return std::nullopt;
  return digest;
}

}  // namespace cfs::store::detail
