#include "validate.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <chrono>

#include "cfs/erofs/reader.h"
#include "cfs/error.h"
#include "object_lookup.h"

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
  std::vector<std::string_view> missing = missing_objects(object_dirs, objects);
  result.object_check_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - validated)
          .count();
  if (missing.empty()) return result;
  std::string list;
  for (size_t i = 0; i < missing.size() && i < 3; i++)
    list += (i ? ", " : "") + std::string(missing[i]);
  if (missing.size() > 3) list += " and " + std::to_string(missing.size() - 3) + " more";
  throw Error(image + ": " + std::to_string(missing.size()) + " of " +
              std::to_string(objects.size()) + " objects the image names " +
              (object_dirs.empty() ? "have no object directory to come from"
                                   : "are in no object directory") +
              ": " + list + " (mount anyway with --allow-missing-objects / allow_missing_objects)");
}

}  // namespace cfs::kmount::detail
