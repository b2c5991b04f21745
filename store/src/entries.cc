#include "entries.h"

#include "cfs/fd.h"
#include "cfs/repo_layout.h"
#include "fsutil.h"

namespace cfs::store::detail {

void walk_refs(
    int repo_dirfd, const std::string& repo_path, const std::string& ns,
    const std::function<void(const std::string& ref_name, const std::string& link)>& fn) {
  std::function<void(const std::string&, const std::string&)> walk =
      [&](const std::string& rel, const std::string& prefix) {
        const std::string what = join(repo_path, rel);
        UniqueFd d = open_dir_if_exists(repo_dirfd, rel, what);
        if (!d) return;
        for_each_entry(d.get(), what, [&](const std::string& name, unsigned char reported) {
          if (name.starts_with(".")) return;
          auto type = entry_type(d.get(), name, reported, join(what, name));
          if (type == DT_DIR) walk(join(rel, name), prefix + name + "/");
          if (type == DT_LNK) fn(prefix + name, join(rel, name));
        });
      };
  walk(ns + "/refs", "");
}

std::optional<std::string> resolve_ref_chain(int repo_dirfd, const std::string& link) {
  std::string current = link;
  for (int depth = 0; depth < 8; ++depth) {
    auto target = read_link_at(repo_dirfd, current);
    if (!target) return std::nullopt;
    auto next = repo_layout::resolve_link_target(current, *target);
    if (!next) return std::nullopt;
    if (next->find("/refs/") == std::string::npos) return next;
    current = *next;
  }
  return std::nullopt;
}

std::optional<Digest> entry_object(int repo_dirfd, const std::string& entry, HashAlgorithm alg) {
  auto target = read_link_at(repo_dirfd, entry);
  if (!target) return std::nullopt;
  auto resolved = repo_layout::resolve_link_target(entry, *target);
  if (!resolved) return std::nullopt;
  return repo_layout::digest_from_object_path(*resolved, alg);
}

bool entry_target_exists(int repo_dirfd, const std::string& entry, HashAlgorithm alg) {
  auto st = lstat_at(repo_dirfd, entry, entry);
  if (!st) return false;
  if (!S_ISLNK(st->st_mode)) return true;
  auto object = entry_object(repo_dirfd, entry, alg);
  if (!object) return false;
  auto object_st = lstat_at(repo_dirfd, repo_layout::object_repo_path(*object), entry);
  return object_st && S_ISREG(object_st->st_mode);
}

void for_each_namespace_entry(int repo_dirfd, const std::string& repo_path, const std::string& ns,
                              const std::function<void(const std::string& name)>& fn) {
  const std::string what = join(repo_path, ns);
  UniqueFd d = open_dir_if_exists(repo_dirfd, ns, what);
  if (!d) return;
  for_each_entry(d.get(), what, [&](const std::string& name, unsigned char) {
    if (name == "refs" || name.starts_with(".")) return;
    fn(name);
  });
}

}  // namespace cfs::store::detail
