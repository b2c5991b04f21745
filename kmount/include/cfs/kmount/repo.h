// The part of a composefs repository that mounting needs: images/<id>, images/refs/<name>,
// objects/ and whether the repository is "secure" (its meta.json carries fs-verity).
#pragma once

#include <string>
#include <string_view>

#include "cfs/digest.h"

namespace cfs::kmount {

struct RepoImage {
  std::string image_path;   // REPO/images/<hex>
  std::string objects_dir;  // REPO/objects
  Digest id;                // the image's fs-verity digest (its name)
  bool secure = false;
};

// True when REPO/meta.json has fs-verity enabled (the composefs-rs definition of a secure
// repository). Throws when REPO is not a directory.
bool repository_is_secure(const std::string& repo);

// Resolves NAME inside REPO: a full hex image id (64 or 128 digits) or a ref name below
// images/refs/. OCI references ("oci:..." or "name:tag") are refused with a clear error.
RepoImage resolve_repo_image(const std::string& repo, std::string_view name);

}  // namespace cfs::kmount
