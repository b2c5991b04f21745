// Pieces shared by the OCI pull and the image commands (not part of the public API).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/digest.h"
#include "cfs/erofs/tree.h"
#include "cfs/oci/source.h"
#include "cfs/oci/tar.h"
#include "cfs/oci/tree.h"
#include "cfs/store/repository.h"

namespace cfs::oci {

// Calls fn for every entry of a layer splitstream (what names it in errors).
void for_each_stream_entry(const store::SplitStreamReader& reader, const std::string& what,
                           const std::function<void(const TarEntry&)>& fn,
                           XattrMode mode = XattrMode::keep_user_xattrs);

// Calls fn for every entry of the stored layer stream oci-layer-<diff_id>; xattrs the mode
// drops from images are dropped while reading.
void for_each_layer_entry(const store::Repository& repo, const std::string& diff_id,
                          const std::function<void(const TarEntry&)>& fn,
                          XattrMode mode = XattrMode::keep_user_xattrs);

// Merges the layers in order, reading each back from its splitstream.
// imported maps diff_ids to layer stream objects not named yet (just pulled).
erofs::Tree merge_layers(const store::Repository& repo, const std::vector<std::string>& diff_ids,
                         const std::map<std::string, Digest>* imported,
                         XattrMode mode = XattrMode::keep_user_xattrs);

// "composefs.image" and the names below it (".v1", ".boot", ".xattrs=…"): the EROFS images
// a config stream names. Layer refs are diff_ids ("sha256:…").
bool is_image_ref_name(std::string_view name);
bool is_boot_image_ref_name(std::string_view name);

// (format, image id) pairs, the default format first.
using FormatImages = std::vector<std::pair<uint32_t, Digest>>;

struct ImageIds {
  FormatImages images;
  FormatImages boot;  // empty unless bootable
};

// Applies transform_tree (the OCI transform and the xattr filter), writes one EROFS image per
// format of versions as an object (published as images/<id>); with bootable,
// transform_for_boot and the boot images too. The tree is modified.
ImageIds write_images(store::Repository& repo, erofs::Tree& tree, bool bootable, XattrMode mode,
                      const std::vector<uint32_t>& versions);

struct StoredImage {
  Digest manifest_stream;
  Digest config_stream;
  std::optional<Digest> image_id;       // of the repository's default format, if stored
  std::optional<Digest> boot_image_id;  // likewise
};

// Writes the config stream (config JSON bytes + layer and image named refs, keeping image
// refs of other variants that an earlier pull stored) and the manifest stream.
StoredImage store_image(store::Repository& repo, const std::string& manifest,
                        const std::string& manifest_digest, const std::string& config,
                        const std::string& config_digest, const std::vector<std::string>& diff_ids,
                        const std::map<std::string, Digest>& layer_streams, const ImageIds& ids,
                        XattrMode mode);

// An image's manifest digest, layers and diff_ids as pull() reads and checks them.
struct SourceLayers {
  std::string manifest_digest;
  std::vector<Descriptor> layers;
  std::vector<std::string> diff_ids;
};
SourceLayers read_source_layers(ImageSource& source);

}  // namespace cfs::oci
