// PAX extended headers: the records kept for the next entry (path, linkpath, size, ids,
// mtime, devices, xattrs, GNU sparse keys) and how they override the header's fields.
#include <algorithm>

#include "cfs/erofs/format.h"
#include "cfs/oci/tar.h"
#include "tar_fields.h"
#include "tar_raw_entry.h"

namespace cfs::oci {

namespace {

// XATTR_SIZE_MAX: the largest xattr value any Linux filesystem stores.
constexpr size_t kLinuxXattrValueMax = 65536;

// Sorts by name; of repeated names the last record wins (it is last among equals after the
// stable sort).
void resolve_repeated_xattrs(std::vector<erofs::Xattr>& xattrs) {
  std::stable_sort(xattrs.begin(), xattrs.end(),
                   [](const erofs::Xattr& a, const erofs::Xattr& b) { return a.name < b.name; });
  size_t kept = 0;
  for (size_t i = 0; i < xattrs.size(); ++i) {
    if (i + 1 < xattrs.size() && xattrs[i].name == xattrs[i + 1].name) continue;
    if (kept != i) xattrs[kept] = std::move(xattrs[i]);
    ++kept;
  }
  xattrs.resize(kept);
}

}  // namespace

void TarParser::apply_pax(RawEntry& raw) {
  Pax pax = std::move(pax_);
  pax_ = Pax{};
  auto number = [&](const std::optional<std::string>& v, const char* key, uint64_t& out) {
    if (v && !tar::parse_decimal(*v, out))
      fail(std::string("PAX ") + key + " '" + *v + "' is not a number");
  };
  TarEntry& e = raw.entry;
  if (pax.path) e.path = std::move(*pax.path);
  if (pax.linkpath) e.link = std::move(*pax.linkpath);
  number(pax.size, "size", raw.size);
  number(pax.uid, "uid", raw.uid);
  number(pax.gid, "gid", raw.gid);
  number(pax.devmajor, "SCHILY.devmajor", raw.dev_major);
  number(pax.devminor, "SCHILY.devminor", raw.dev_minor);
  if (pax.mtime && !tar::parse_pax_time(*pax.mtime, e.mtime_sec, e.mtime_nsec))
    fail("PAX mtime '" + *pax.mtime + "' is not a time");
  e.xattrs = std::move(pax.xattrs);
  resolve_repeated_xattrs(e.xattrs);
  apply_pax_sparse(raw, pax);
}

void TarParser::add_xattr(std::string_view name, std::string_view value) {
  if (name.empty()) fail("PAX xattr record with an empty name");
  // No Linux filesystem holds a larger value (XATTR_SIZE_MAX): such a record is made up,
  // whatever its name.
  if (value.size() > kLinuxXattrValueMax && !xattr_kept(name, xattr_mode_))
    fail("xattr " + std::string(name.substr(0, 64)) + " has a value of " +
         std::to_string(value.size()) + " bytes (Linux holds " +
         std::to_string(kLinuxXattrValueMax) + ")");
  // Every xattr record counts, kept or not: a layer that is mostly xattrs is a bomb (each
  // value within the limit, millions of them), refused before it costs minutes.
  xattr_bytes_ += name.size() + value.size();
  if (xattr_bytes_ > kTarXattrBudget)
    fail("the layer carries more than " + std::to_string(kTarXattrBudget >> 20) + " MiB of xattrs");
  // Dropped here, not after the merge: a layer can carry megabytes per entry that the image
  // never holds.
  if (!xattr_kept(name, xattr_mode_)) return;
  if (name.size() > erofs::kXattrNameMax)
    fail("xattr name '" + std::string(name.substr(0, 64)) + "…' over " +
         std::to_string(erofs::kXattrNameMax) + " bytes");
  if (value.size() > erofs::kXattrValueMax)
    fail("xattr " + std::string(name) + " has a value of " + std::to_string(value.size()) +
         " bytes (EROFS holds " + std::to_string(erofs::kXattrValueMax) + ")");
  // Repeated names are resolved (last wins) when the entry is complete.
  pax_.xattrs.push_back({std::string(name), std::string(value)});
}

void TarParser::parse_pax(std::string_view records, bool global) {
  while (!records.empty()) {
    auto space = records.find(' ');
    uint64_t length = 0;
    if (space == std::string_view::npos || !tar::parse_decimal(records.substr(0, space), length) ||
        length <= space + 1 || length > records.size() || records[length - 1] != '\n')
      fail("malformed PAX extended header record");
    std::string_view record = records.substr(space + 1, length - space - 2);
    records.remove_prefix(length);
    auto eq = record.find('=');
    if (eq == std::string_view::npos || eq == 0) fail("PAX record without key=value");
    // Global headers only carry archive-wide defaults that layer tools do not rely on.
    if (global) continue;
    std::string_view key = record.substr(0, eq);
    std::string_view value = record.substr(eq + 1);
    pax_.any = true;
    pax_record(key, value);
  }
}

void TarParser::pax_record(std::string_view key, std::string_view value) {
  // Only the keys the image uses are kept: the rest (atime, uname, comments, …) would only
  // cost memory. These are kept as text until the entry's header arrives; a role means the
  // value is a path, checked at once.
  struct TextKey {
    std::string_view key;
    std::optional<std::string> Pax::*slot;
    const char* path_role;
  };
  static constexpr TextKey kTextKeys[] = {
      {"path", &Pax::path, "PAX path"},
      {"linkpath", &Pax::linkpath, "PAX linkpath"},
      {"size", &Pax::size, nullptr},
      {"uid", &Pax::uid, nullptr},
      {"gid", &Pax::gid, nullptr},
      {"mtime", &Pax::mtime, nullptr},
      {"SCHILY.devmajor", &Pax::devmajor, nullptr},
      {"SCHILY.devminor", &Pax::devminor, nullptr},
      {"GNU.sparse.name", &Pax::sparse_name, "GNU.sparse.name"},
      {"GNU.sparse.size", &Pax::sparse_realsize, nullptr},
      {"GNU.sparse.realsize", &Pax::sparse_realsize, nullptr},
      {"GNU.sparse.major", &Pax::sparse_major, nullptr},
      {"GNU.sparse.minor", &Pax::sparse_minor, nullptr},
      {"GNU.sparse.map", &Pax::sparse_map, nullptr},
  };
  for (const TextKey& k : kTextKeys) {
    if (key != k.key) continue;
    std::optional<std::string>& slot = pax_.*k.slot;
    // An empty value removes the override (POSIX: "the field is deleted").
    if (value.empty())
      slot.reset();
    else
      slot = std::string(value);
    if (slot && k.path_role) check_path(*slot, k.path_role);
    return;
  }
  if (key.starts_with("SCHILY.xattr.")) {
    add_xattr(key.substr(13), value);
  } else if (key.starts_with("LIBARCHIVE.xattr.")) {
    auto name = tar::url_decode(key.substr(17));
    auto decoded = tar::base64_decode(value);
    if (!name || !decoded) fail("malformed PAX record " + std::string(key.substr(0, 64)));
    add_xattr(*name, *decoded);
  } else if (key == "GNU.sparse.offset" || key == "GNU.sparse.numbytes") {
    // Format 0.0 repeats these two keys in order, one pair per segment.
    uint64_t n = 0;
    if (!tar::parse_decimal(value, n)) fail("PAX " + std::string(key) + " is not a number");
    bool offset = key == "GNU.sparse.offset";
    if ((pax_.sparse_00.size() % 2 == 0) != offset)
      fail("PAX GNU.sparse.offset/numbytes records out of order");
    if (pax_.sparse_00.size() >= 2 * kTarSparseEntriesMax) fail("sparse map too large");
    pax_.sparse_00.push_back(n);
  }
}

}  // namespace cfs::oci
