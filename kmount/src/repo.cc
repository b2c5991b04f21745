#include "cfs/kmount/repo.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/kernel_verity.h"
#include "cfs/repo_layout.h"
#include "cfs/safe_open.h"

namespace cfs::kmount {

namespace {

// The repository root (the caller's path, which may itself be a symlink) and the check that
// objects/ below it is a real directory.
UniqueFd open_repository(const std::string& repo) {
  UniqueFd root(::open(repo.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) throw Error(repo + ": not a composefs repository (not a directory)");
  const std::string objects(repo_layout::kObjects);
  auto st = lstat_beneath(root.get(), objects, repo + "/" + objects);
  if (!st || !(S_ISDIR(st->st_mode) || S_ISLNK(st->st_mode)))
    throw Error(repo + ": not a composefs repository (no objects/ directory)");
  if (S_ISLNK(st->st_mode))
    throw Error(repo +
                "/objects: is a symlink; a repository's own directories must not be "
                "symlinks (refusing to use the repository)");
  return root;
}

bool secure_at(int root, const std::string& repo) {
  const std::string meta_json(repo_layout::kMetaJson);
  UniqueFd meta;
  try {
    // A FIFO in place of meta.json must give an error, not hang the boot.
    meta = open_regular_beneath(root, meta_json, O_RDONLY, repo + "/" + meta_json);
  } catch (const SystemError& e) {
    if (e.code() == ENOENT) return false;  // a pre-meta.json repository: insecure by definition
    throw;
  }
  return measure_verity(meta.get(), repo + "/" + meta_json).has_value();
}

}  // namespace

std::string repo_fd_path(int fd) {
  return "/proc/self/fd/" + std::to_string(fd);
}

std::string RepoImage::mount_path() const {
  return repo_fd_path(image_fd.get());
}
std::string RepoImage::objects_path() const {
  return repo_fd_path(objects_fd.get());
}

UniqueFd open_repo_objects(const std::string& repo) {
  UniqueFd root = open_repository(repo);
  const std::string objects(repo_layout::kObjects);
  return open_dir_beneath(root.get(), objects, repo + "/" + objects, true);
}

bool repository_is_secure(const std::string& repo) {
  UniqueFd root = open_repository(repo);
  return secure_at(root.get(), repo);
}

RepoImage resolve_repo_image(const std::string& repo, std::string_view name) {
  if (name.starts_with("oci:") || name.find(':') != std::string_view::npos)
    throw Error(std::string(name) +
                ": OCI references are not handled by cfs-mount yet; mount by image id (the "
                "hex name below images/) or by a ref below images/refs/");
  // The store's ref rules (no absolute names, no "." or ".." components): a name it could
  // never have created is refused before anything is looked up.
  try {
    repo_layout::validate_ref_name(name, "image ref");
  } catch (const Error& e) {
    throw Error(std::string(name) + ": not an image id or ref name (" + e.what() + ")");
  }
  UniqueFd root = open_repository(repo);

  RepoImage image;
  const std::string objects(repo_layout::kObjects);
  image.objects_dir = repo + "/" + objects;
  image.secure = secure_at(root.get(), repo);
  if (std::optional<Digest> id = Digest::from_hex(name)) {
    image.id = *id;
  } else {
    // A ref: images/refs/NAME -> ../../<hex> (relative symlink, possibly nested). Only its
    // last component is used: the ref is read, never followed.
    const std::string ref = repo_layout::image_ref(name);
    std::optional<std::string> target = readlink_beneath(root.get(), ref, repo + "/" + ref);
    if (!target) throw Error(repo + "/" + ref + ": no such image ref");
    std::string_view leaf = *target;
    if (auto slash = leaf.rfind('/'); slash != std::string_view::npos)
      leaf.remove_prefix(slash + 1);
    std::optional<Digest> target_id = Digest::from_hex(leaf);
    if (!target_id)
      throw Error(repo + "/" + ref + ": points to " + *target + ", which is not an image id");
    image.id = *target_id;
  }
  const std::string entry = repo_layout::image_entry(image.id);
  image.image_path = repo + "/" + entry;
  auto st = lstat_beneath(root.get(), entry, image.image_path);
  if (!st) throw Error(repo + ": no image " + image.id.hex() + " in images/");
  std::string file = entry;
  if (S_ISLNK(st->st_mode)) {
    // composefs-rs layout: images/<hex> -> ../objects/XX/<rest>, the object of the same id.
    std::optional<std::string> target = readlink_beneath(root.get(), entry, image.image_path);
    const std::string expected = repo_layout::object_link_target(image.id);
    if (!target || *target != expected)
      throw Error(image.image_path + ": links to " + target.value_or("?") + ", not " + expected);
    file = repo_layout::object_repo_path(image.id);
  }
  image.image_fd = open_regular_beneath(root.get(), file, O_RDONLY, repo + "/" + file);
  image.objects_fd = open_dir_beneath(root.get(), objects, image.objects_dir, true);
  return image;
}

}  // namespace cfs::kmount
