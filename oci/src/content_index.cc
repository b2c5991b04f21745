#include "content_index.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "cfs/error.h"
#include "cfs/repo_layout.h"
#include "cfs/safe_open.h"
#include "cfs/store/refs.h"
#include "util.h"

namespace cfs::oci::content_index {

namespace {

bool valid_hex64(std::string_view hex) {
  if (hex.size() != 64) return false;
  for (char c : hex)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::string entry_path(std::string_view hex) {
  return std::string(kDir) + "/" + std::string(hex);
}

// The object an entry's symlink target names ("../../objects/XX/<rest>"), else nullopt.
std::optional<Digest> target_object(const store::Repository& repo, std::string_view target) {
  constexpr std::string_view kUp = "../../";
  if (!target.starts_with(kUp)) return std::nullopt;
  return repo_layout::digest_from_object_path(target.substr(kUp.size()), repo.algorithm());
}

}  // namespace

std::optional<Digest> lookup(const store::Repository& repo, std::string_view sha256) {
  if (!sha256.starts_with("sha256:") || !valid_hex64(sha256.substr(7))) return std::nullopt;
  std::string what = repo.path() + ": " + std::string(kDir);
  auto target = readlink_beneath(repo.dirfd(), entry_path(sha256.substr(7)), what);
  if (!target) return std::nullopt;
  auto id = target_object(repo, *target);
  if (!id || !repo.has_object(*id)) return std::nullopt;
  return id;
}

void record(const store::Repository& repo,
            const std::vector<std::pair<std::string, Digest>>& entries) {
  if (entries.empty()) return;
  std::string what = repo.path() + ": " + std::string(kDir);
  UniqueFd dir = mkdirs_beneath(repo.dirfd(), kDir, 0755, what);
  for (const auto& [sha256, id] : entries) {
    validate_oci_digest(sha256, what);
    store::replace_symlink_at(dir.get(), sha256.substr(7),
                              "../" + repo_layout::object_link_target(id), what);
  }
}

CheckResult check(const store::Repository& repo) {
  CheckResult result;
  std::string what = repo.path() + ": " + std::string(kDir);
  UniqueFd dir = open_beneath_if_exists(repo.dirfd(), kDir, O_RDONLY | O_DIRECTORY, what);
  if (!dir) return result;
  std::vector<std::string> names = directory_names(dir.get(), what);
  std::vector<std::byte> buf(1 << 20);
  for (const std::string& name : names) {
    ++result.entries;
    std::string entry = std::string(kDir) + "/" + name;
    if (!valid_hex64(name)) {
      result.errors.push_back("content-index-invalid: " + entry + ": not a sha256 hex name");
      continue;
    }
    auto target = readlink_beneath(repo.dirfd(), entry, what);
    std::optional<Digest> id = target ? target_object(repo, *target) : std::nullopt;
    if (!id) {
      result.errors.push_back("content-index-invalid: " + entry + ": not a link to an object");
      continue;
    }
    if (!repo.has_object(*id)) {
      ++result.stale;
      continue;
    }
    UniqueFd fd = repo.open_object(*id);
    Sha256 h;
    for (;;) {
      ssize_t n = ::read(fd.get(), buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw SystemError(errno, repo.path() + ": object " + id->hex());
      if (n == 0) break;
      h.update(std::span(buf).first(static_cast<size_t>(n)));
    }
    std::string actual = h.finish();
    if (actual != "sha256:" + name)
      result.errors.push_back("content-index-mismatch: " + entry + " names object " + id->hex() +
                              ", whose content hashes to " + actual);
  }
  return result;
}

std::vector<std::string> directory_names(int dirfd, const std::string& what) {
  std::vector<std::string> names;
  int fd = dup(dirfd);
  if (fd < 0) throw SystemError(errno, what + ": dup");
  DIR* d = fdopendir(fd);
  if (!d) {
    int e = errno;
    close(fd);
    throw SystemError(e, what + ": opendir");
  }
  std::unique_ptr<DIR, int (*)(DIR*)> guard(d, closedir);
  rewinddir(d);
  while (dirent* ent = readdir(d)) {
    std::string_view n = ent->d_name;
    if (n == "." || n == ".." || n.starts_with(".")) continue;  // temporaries
    names.emplace_back(n);
  }
  return names;
}

uint64_t prune(const store::Repository& repo, const std::function<bool(const Digest&)>& kept,
               bool dry_run, std::vector<std::string>& survivors) {
  std::string what = repo.path() + ": " + std::string(kDir);
  UniqueFd dir = open_beneath_if_exists(repo.dirfd(), kDir, O_RDONLY | O_DIRECTORY, what);
  if (!dir) return 0;
  uint64_t removed = 0;
  for (const std::string& name : directory_names(dir.get(), what)) {
    if (!valid_hex64(name)) continue;  // fsck's to report
    std::string entry = entry_path(name);
    auto target = readlink_beneath(repo.dirfd(), entry, what);
    if (!target) continue;  // not a symlink: fsck's to report
    std::optional<Digest> id = target_object(repo, *target);
    if (!id) continue;
    if (kept(*id) && repo.has_object(*id)) {
      survivors.push_back(name);
      continue;
    }
    ++removed;
    if (!dry_run) unlink_beneath(repo.dirfd(), entry, 0, what);
  }
  return removed;
}

}  // namespace cfs::oci::content_index
