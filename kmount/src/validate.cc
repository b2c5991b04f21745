#include "validate.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <chrono>

#include "cfs/erofs/reader.h"
#include "cfs/error.h"

namespace cfs::kmount::detail {

namespace {

// A block device has no file size to map by; its bytes are read once (composefs images are
// metadata only, and the reader's walk touches nearly all of them anyway).
erofs::Image open_block_device(int fd, const std::string& image,
                               const erofs::ReaderOptions& options) {
  uint64_t size = 0;
  if (::ioctl(fd, BLKGETSIZE64, &size) < 0) throw_errno(image + ": BLKGETSIZE64");
  constexpr uint64_t max_size = uint64_t{4} << 30;
  if (size > max_size)
    throw Error(image + ": block device of " + std::to_string(size) +
                " bytes is larger than any composefs image this tool validates (4 GiB)");
  std::string bytes(size, '\0');
  pread_exact(fd, {reinterpret_cast<std::byte*>(bytes.data()), bytes.size()}, 0, image);
  return erofs::Image::from_bytes(std::move(bytes), image, options);
}

bool object_present(const std::vector<UniqueFd>& object_dirs, std::string_view object) {
  char path[erofs::kPathMax + 1];
  if (object.size() > erofs::kPathMax) return false;
  object.copy(path, object.size());
  path[object.size()] = '\0';
  for (const UniqueFd& dir : object_dirs) {
    struct stat st {};
    if (::fstatat(dir.get(), path, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode))
      return true;
  }
  return false;
}

}  // namespace

ValidationResult validate_image(int image_fd, bool block_device, const std::string& image,
                                const std::vector<UniqueFd>& object_dirs, bool check_objects) {
  // The C tools' rules (symlinks up to 4095 bytes, redirects that are any relative path
  // without "." or ".."): mount.composefs mounts C-made images, and both are within what the
  // kernel handles safely. Everything else is the strict rule set.
  const erofs::ReaderOptions options = erofs::ReaderOptions::compat();
  erofs::Image reader = block_device ? open_block_device(image_fd, image, options)
                                     : erofs::Image::open_fd(image_fd, image, options);
  ValidationResult result;
  auto start = std::chrono::steady_clock::now();
  // Validates it all first. Not deduplicated: sorting costs more than the few repeated
  // lookups of files that share content.
  std::vector<std::string_view> objects = reader.object_refs(false);
  auto validated = std::chrono::steady_clock::now();
  result.validation_ms = std::chrono::duration<double, std::milli>(validated - start).count();
  result.inodes = reader.inode_count();
  result.objects = objects.size();
  if (!check_objects) return result;
  result.objects_checked = true;
  std::vector<std::string_view> missing;
  uint64_t missing_count = 0;
  for (std::string_view object : objects) {
    if (object_present(object_dirs, object)) continue;
    if (missing.size() < 3) missing.push_back(object);
    missing_count++;
  }
  result.object_check_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - validated)
          .count();
  if (missing_count == 0) return result;
  std::string list;
  for (std::string_view m : missing) list += (list.empty() ? "" : ", ") + std::string(m);
  if (missing_count > missing.size())
    list += " and " + std::to_string(missing_count - missing.size()) + " more";
  throw Error(image + ": " + std::to_string(missing_count) + " of " +
              std::to_string(objects.size()) + " objects the image names " +
              (object_dirs.empty() ? "have no object directory to come from"
                                   : "are in no object directory") +
              ": " + list + " (mount anyway with --allow-missing-objects / allow_missing_objects)");
}

}  // namespace cfs::kmount::detail
