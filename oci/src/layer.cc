// Single stored layers: composefs-rs' `oci layer --json` figures and the entries behind
// `oci layer --dumpfile`.
#include <set>

#include "cfs/error.h"
#include "cfs/oci/oci.h"
#include "internal.h"
#include "util.h"

namespace cfs::oci {

namespace {

std::string layer_stream_name(std::string_view diff_id) {
  validate_oci_digest(diff_id, "oci layer");
  return "oci-layer-" + std::string(diff_id);
}

}  // namespace

void for_each_stored_layer_entry(const store::Repository& repo, std::string_view diff_id,
                                 const std::function<void(const TarEntry&)>& fn) {
  std::string name = layer_stream_name(diff_id);
  if (!repo.resolve_stream(name))
    throw Error(repo.path() + ": layer " + std::string(diff_id) + " not found");
  store::SplitStreamReader reader = repo.open_stream(name);
  for_each_stream_entry(reader, repo.path() + ": stream " + name, fn, XattrMode::all);
}

LayerInfo layer_info(const store::Repository& repo, std::string_view diff_id) {
  std::string name = layer_stream_name(diff_id);
  std::optional<Digest> id = repo.resolve_stream(name);
  if (!id) throw Error(repo.path() + ": layer " + std::string(diff_id) + " not found");
  store::SplitStreamReader reader = repo.open_stream(name);
  LayerInfo info;
  info.diff_id = diff_id;
  info.stream = *id;
  info.size = reader.stream_size();
  info.objects = reader.object_refs().size();
  for_each_stream_entry(
      reader, repo.path() + ": stream " + name,
      [&](const TarEntry& e) {
        ++info.entries;
        // A sparse member's tar bytes are inline in the stream.
        if (e.external() && !e.sparse) info.external_size += e.size;
      },
      XattrMode::allowlist_only);
  return info;
}

}  // namespace cfs::oci
