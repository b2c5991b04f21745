// Composefs images in a repository: building one from a directory (create-image), computing
// an image id without storing anything (compute-id), and reading a stored image back.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cfs/digest.h"
#include "cfs/erofs/reader.h"
#include "cfs/erofs/scan.h"
#include "cfs/store/repository.h"

namespace cfs::store {

// The EROFS format of new repositories (composefs-rs' default), and of compute-id without
// --erofs-version.
inline constexpr uint32_t kRepositoryErofsVersion = 1;

struct CreateImageResult {
  Digest id;  // the image in the repository's default format (the one ref names)
  // Every image written: one per format the repository is configured for, default first.
  std::vector<std::pair<uint32_t, Digest>> images;
  uint64_t files_stored = 0;  // regular files written (or found) as objects
  uint64_t bytes_stored = 0;  // their total size
  uint64_t image_size = 0;
};

// Changes a scanned tree before its image is written (cfs_oci's transform_tree: the OCI and
// boot transforms); empty: the tree as scanned.
using TreeTransformFn = std::function<void(erofs::Tree&)>;

// Scans src, stores every external file as an object, applies transform, writes one EROFS
// image per format of repo.erofs_versions() as an object and links images/<id> for each,
// and, with ref, images/refs/<ref> to the default format's (composefs-rs' commit_images). Throws
// (naming the path) on unreadable sources or files that change while being read; the repository
// stays consistent (objects stored before a failure are unnamed and go at the next gc).
CreateImageResult create_image(Repository& repo, const std::string& src,
                               std::optional<std::string_view> ref = std::nullopt,
                               const erofs::ScanOptions& options = {},
                               const TreeTransformFn& transform = {});

// The tree create_image would write for src in a repository using alg (files hashed, nothing
// stored), transform applied.
erofs::Tree scan_image_tree(const std::string& src, HashAlgorithm alg,
                            const erofs::ScanOptions& options = {},
                            const TreeTransformFn& transform = {});

// The id create_image would print for src in a repository using alg; stores nothing.
Digest compute_image_id(const std::string& src, HashAlgorithm alg,
                        const erofs::ScanOptions& options = {},
                        const TreeTransformFn& transform = {});

// Opens a stored image (by id or ref) with the strict reader.
erofs::Image open_image_reader(const Repository& repo, std::string_view name);

// The objects an image's files point to (its trusted.overlay.redirect targets), validated
// by the strict reader. Throws if the image is malformed or names objects of another
// algorithm than alg.
std::vector<Digest> image_objects(const erofs::Image& image, HashAlgorithm alg);

}  // namespace cfs::store
