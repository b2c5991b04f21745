#include "cfs/kmount/repo.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/kmount/verity.h"

namespace cfs::kmount {

namespace {

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

void require_repository(const std::string& repo) {
  if (!is_directory(repo)) throw Error(repo + ": not a composefs repository (not a directory)");
  if (!is_directory(repo + "/objects"))
    throw Error(repo + ": not a composefs repository (no objects/ directory)");
}

}  // namespace

bool repository_is_secure(const std::string& repo) {
  require_repository(repo);
  UniqueFd meta(::open((repo + "/meta.json").c_str(), O_RDONLY | O_CLOEXEC));
  if (!meta) {
    if (errno == ENOENT) return false;  // a pre-meta.json repository: insecure by definition
    throw_errno(repo + "/meta.json");
  }
  return measure_kernel_verity(meta.get(), repo + "/meta.json").has_value();
}

RepoImage resolve_repo_image(const std::string& repo, std::string_view name) {
  if (name.starts_with("oci:") || name.find(':') != std::string_view::npos)
    throw Error(std::string(name) +
                ": OCI references are not handled by cfs-mount yet; mount by image id (the "
                "hex name below images/) or by a ref below images/refs/");
  if (name.empty() || name.starts_with('/') || name.find("..") != std::string_view::npos)
    throw Error(std::string(name) + ": not an image id or ref name");
  require_repository(repo);

  RepoImage image;
  image.objects_dir = repo + "/objects";
  image.secure = repository_is_secure(repo);
  if (std::optional<Digest> id = Digest::from_hex(name)) {
    image.id = *id;
    image.image_path = repo + "/images/" + image.id.hex();
  } else {
    // A ref: images/refs/NAME -> ../../<hex> (relative symlink, possibly nested).
    std::string ref = repo + "/images/refs/" + std::string(name);
    std::error_code ec;
    std::filesystem::path target = std::filesystem::read_symlink(ref, ec);
    if (ec) throw Error(ref + ": no such image ref (" + ec.message() + ")");
    std::optional<Digest> target_id = Digest::from_hex(target.filename().string());
    if (!target_id)
      throw Error(ref + ": points to " + target.string() + ", which is not an image id");
    image.id = *target_id;
    image.image_path = repo + "/images/" + image.id.hex();
  }
  if (::access(image.image_path.c_str(), F_OK) < 0)
    throw Error(repo + ": no image " + image.id.hex() + " in images/");
  return image;
}

}  // namespace cfs::kmount
