// The content index: sha256 of a regular file's content -> the repository object holding it.
// zstd:chunked tables of contents name files by the sha256 of their content, objects are named
// by their fs-verity digest; a partial pull needs the first to find the second without reading
// every object. Entries live in <repo>/oci/content-sha256/<hex> as relative symlinks to
// ../../objects/XX/<rest>. The index is a cache that only ever holds what was measured: an
// entry is written by a pull after it hashed the object's content itself, a lookup ignores an
// entry whose object is gone (gc), and the pull re-verifies the content of every object it
// reuses against the table of contents. `oci fsck` re-hashes every entry's object.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cfs/digest.h"
#include "cfs/store/repository.h"

namespace cfs::oci::content_index {

inline constexpr std::string_view kDir = "oci/content-sha256";

// The object whose content hashes to sha256 ("sha256:<hex>"), if indexed and present.
std::optional<Digest> lookup(const store::Repository& repo, std::string_view sha256);

// Adds entries (content sha256 "sha256:<hex>", object); call after the objects are durable.
void record(const store::Repository& repo,
            const std::vector<std::pair<std::string, Digest>>& entries);

struct CheckResult {
  unsigned entries = 0;
  unsigned stale = 0;               // the object is gone (gc): harmless, ignored by lookups
  std::vector<std::string> errors;  // "<kind>: <detail>"
};
// Every entry: a well-formed name and target; an existing object must hash to the name.
CheckResult check(const store::Repository& repo);

// Removes the entries whose object kept() rejects or that name no object (gc: an entry for an
// object gc removes is dead weight); malformed entries are left for fsck. Returns how many
// it removed (would remove, on a dry run); survivors gets the names (hex) of the others.
uint64_t prune(const store::Repository& repo, const std::function<bool(const Digest&)>& kept,
               bool dry_run, std::vector<std::string>& survivors);

// The names in the directory dirfd (without ".", ".." and dot-named temporaries).
std::vector<std::string> directory_names(int dirfd, const std::string& what);

}  // namespace cfs::oci::content_index
