// Walking the repository's symlink namespaces (internal; used by Repository, gc and fsck).
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "cfs/digest.h"

namespace cfs::store::detail {

// Calls fn(ref_name, link_path) for every symlink below <ns>/refs (ns = "images" or
// "streams"); link_path is relative to the repository root. Entries starting with '.'
// (temporaries) are skipped.
void walk_refs(int repo_dirfd, const std::string& repo_path, const std::string& ns,
               const std::function<void(const std::string& ref_name, const std::string& link)>& fn);

// Follows a ref symlink (and refs to refs, up to 8) to the first-level entry it names,
// e.g. "images/<hex>"; nullopt if a link is missing, absolute or climbs out.
std::optional<std::string> resolve_ref_chain(int repo_dirfd, const std::string& link);

// images/<hex> or streams/<id> -> the object id its symlink names; nullopt if the entry is
// not a symlink into objects/.
std::optional<Digest> entry_object(int repo_dirfd, const std::string& entry, HashAlgorithm alg);

// True if entry ("images/<hex>", "streams/<id>") exists and, when it is a symlink, links to
// an object that exists. Resolved by parsing the link, never by following it.
bool entry_target_exists(int repo_dirfd, const std::string& entry, HashAlgorithm alg);

// Calls fn(name) for each first-level entry of ns (not "refs", not '.'-prefixed).
void for_each_namespace_entry(int repo_dirfd, const std::string& repo_path, const std::string& ns,
                              const std::function<void(const std::string& name)>& fn);

}  // namespace cfs::store::detail
