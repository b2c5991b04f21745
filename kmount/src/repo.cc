#include "cfs/kmount/repo.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/kmount/verity.h"
#include "cfs/safe_open.h"

namespace cfs::kmount {

namespace {

// The repository root (the caller's path, which may itself be a symlink) and the check that
// objects/ below it is a real directory.
UniqueFd open_repository(const std::string& repo) {
  UniqueFd root(::open(repo.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) throw Error(repo + ": not a composefs repository (not a directory)");
  auto st = lstat_beneath(root.get(), "objects", repo + "/objects");
  if (!st || !(S_ISDIR(st->st_mode) || S_ISLNK(st->st_mode)))
    throw Error(repo + ": not a composefs repository (no objects/ directory)");
  if (S_ISLNK(st->st_mode))
    throw Error(repo +
                "/objects: is a symlink; a repository's own directories must not be "
                "symlinks (refusing to use the repository)");
  return root;
}

bool secure_at(int root, const std::string& repo) {
  UniqueFd meta;
  try {
    // A FIFO in place of meta.json must give an error, not hang the boot.
    meta = open_regular_beneath(root, "meta.json", O_RDONLY, repo + "/meta.json");
  } catch (const SystemError& e) {
    if (e.code() == ENOENT) return false;  // a pre-meta.json repository: insecure by definition
    throw;
  }
  return measure_kernel_verity(meta.get(), repo + "/meta.json").has_value();
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
  return open_dir_beneath(root.get(), "objects", repo + "/objects", true);
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
  if (name.empty() || name.starts_with('/') || name.find("..") != std::string_view::npos)
    throw Error(std::string(name) + ": not an image id or ref name");
  UniqueFd root = open_repository(repo);

  RepoImage image;
  image.objects_dir = repo + "/objects";
  image.secure = secure_at(root.get(), repo);
  if (std::optional<Digest> id = Digest::from_hex(name)) {
    image.id = *id;
  } else {
    // A ref: images/refs/NAME -> ../../<hex> (relative symlink, possibly nested). Only its
    // last component is used: the ref is read, never followed.
    const std::string ref = "images/refs/" + std::string(name);
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
  const std::string entry = "images/" + image.id.hex();
  image.image_path = repo + "/" + entry;
  auto st = lstat_beneath(root.get(), entry, image.image_path);
  if (!st) throw Error(repo + ": no image " + image.id.hex() + " in images/");
  std::string file = entry;
  if (S_ISLNK(st->st_mode)) {
    // composefs-rs layout: images/<hex> -> ../objects/XX/<rest>, the object of the same id.
    std::optional<std::string> target = readlink_beneath(root.get(), entry, image.image_path);
    const std::string expected = "../objects/" + image.id.object_path();
    if (!target || *target != expected)
      throw Error(image.image_path + ": links to " + target.value_or("?") + ", not " + expected);
    file = "objects/" + image.id.object_path();
  }
  image.image_fd = open_regular_beneath(root.get(), file, O_RDONLY, repo + "/" + file);
  image.objects_fd = open_dir_beneath(root.get(), "objects", image.objects_dir, true);
  return image;
}

}  // namespace cfs::kmount
