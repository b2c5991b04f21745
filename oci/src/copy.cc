// oci copy: an image stored in another repository (its manifest, config and layer streams,
// EROFS images and every object they name) copied into this one, as composefs-rs' `oci copy`.
#include <map>
#include <set>

#include "cfs/erofs/reader.h"
#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fd.h"
#include "cfs/oci/oci.h"
#include "cfs/store/images.h"
#include "cfs/store/splitstream.h"
#include "internal.h"

namespace cfs::oci {

namespace {

class Copier {
 public:
  Copier(store::Repository& dest, const store::Repository& src, CopyResult& result)
      : dest_(dest), src_(src), result_(result) {}

  // Copies the object (unless dest has it) after checking that its content is its name.
  void object(const Digest& id) {
    if (!seen_.insert(id).second) return;
    if (dest_.has_object(id)) {
      ++result_.objects_present;
      return;
    }
    UniqueFd fd = src_.open_object(id);
    check(id, dest_.ensure_object_from_fd(fd.get(), what(id)));
    ++result_.objects_copied;
  }

  // A splitstream object and everything it refers to; returns the verified stream.
  store::SplitStreamReader stream(const Digest& id, const std::string& content_id) {
    std::string bytes = verified_bytes(id);
    auto reader = store::SplitStreamReader::from_bytes(
        {reinterpret_cast<const std::byte*>(bytes.data()),
         reinterpret_cast<const std::byte*>(bytes.data()) + bytes.size()},
        dest_.algorithm(), src_.path() + ": stream " + content_id);
    for (const Digest& o : reader.object_refs()) object(o);
    for (const Digest& s : reader.stream_refs()) object(s);
    return reader;
  }

  // An EROFS image object and every object its files name.
  void image(const Digest& id) {
    erofs::Image image = erofs::Image::from_bytes(verified_bytes(id), what(id));
    for (const Digest& o : store::image_objects(image, dest_.algorithm())) object(o);
    images_.push_back(id);
  }

  std::vector<Digest> images_;

 private:
  store::Repository& dest_;
  const store::Repository& src_;
  CopyResult& result_;
  std::set<Digest> seen_;

  std::string what(const Digest& id) const {
    return src_.path() + "/" + store::object_repo_path(id);
  }

  void check(const Digest& id, const Digest& got) const {
    if (got != id)
      throw Error(what(id) + ": content does not match its name (its digest is " + got.hex() +
                  "): the source repository is corrupt; nothing was named or tagged");
  }

  // The object's bytes, read once, checked against its name and stored in dest.
  std::string verified_bytes(const Digest& id) {
    UniqueFd fd = src_.open_object(id);
    std::string bytes = read_fd(fd.get(), what(id));
    const bool present = dest_.has_object(id);
    check(id,
          dest_.ensure_object({reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()}));
    if (seen_.insert(id).second) ++(present ? result_.objects_present : result_.objects_copied);
    return bytes;
  }
};

}  // namespace

CopyResult copy_image(store::Repository& dest, const store::Repository& src, std::string_view name,
                      std::optional<std::string> tag) {
  dest.require_writable();
  if (tag) validate_new_tag(*tag);
  if (src.algorithm() != dest.algorithm())
    throw Error("oci copy: " + src.path() + " stores " +
                std::string(algorithm_name(src.algorithm())) + " objects, " + dest.path() +
                " stores " + std::string(algorithm_name(dest.algorithm())) +
                ": objects cannot be copied between repositories of different hash algorithms");
  if (src.path() == dest.path()) throw Error("oci copy: " + src.path() + ": copying onto itself");

  CopyResult result;
  ImageSummary summary = inspect(src, name);
  result.manifest_digest = summary.manifest_digest;
  result.config_digest = summary.config_digest;
  const std::string manifest_id = "oci-manifest-" + summary.manifest_digest;
  const std::string config_id = "oci-config-" + summary.config_digest;
  auto manifest_object = src.resolve_stream(manifest_id);
  auto config_object = src.resolve_stream(config_id);
  if (!manifest_object || !config_object)
    throw Error(src.path() + ": image '" + escape_for_log(name) + "' lost its streams");

  // 1. Objects: every one verified against its name while copied; nothing is named yet.
  Copier copier(dest, src, result);
  std::map<std::string, Digest> layers;  // content id -> stream object
  store::SplitStreamReader config = copier.stream(*config_object, config_id);
  for (const store::NamedRef& ref : config.named_refs()) {
    if (is_image_ref_name(ref.name)) {
      copier.image(ref.target);
    } else if (ref.name.starts_with("sha256:")) {
      copier.stream(ref.target, "oci-layer-" + ref.name);
      layers["oci-layer-" + ref.name] = ref.target;
    }
  }
  store::SplitStreamReader manifest = copier.stream(*manifest_object, manifest_id);
  for (const store::NamedRef& ref : manifest.named_refs()) {
    if (ref.name.starts_with("config:")) {
      if (ref.target != *config_object)
        throw Error(src.path() + ": " + manifest_id + " names another config stream than " +
                    config_id);
    } else if (!layers.contains("oci-layer-" + ref.name)) {
      throw Error(src.path() + ": " + manifest_id + " names layer " + ref.name +
                  " that its config does not");
    }
  }
  dest.sync();

  // 2. Names, in a pull's order: images and layer streams, then config and manifest streams,
  // then (once they are durable) the tag.
  for (const Digest& image : copier.images_) dest.link_image(image);
  for (const auto& [content_id, object] : layers) dest.link_stream(object, content_id);
  dest.link_stream(*config_object, config_id);
  dest.link_stream(*manifest_object, manifest_id);
  dest.sync();
  // As composefs-rs, the destination gets its own EROFS formats: where its default format's
  // image was not among those copied (the repositories' erofs_formats differ), it is built
  // from the copied layers in each of the destination's formats (config and manifest streams
  // are rewritten to name them, as a pull does).
  const std::string by_digest = "@" + summary.manifest_digest;
  const std::set<std::string> copied_refs = [&] {
    std::set<std::string> names;
    for (const store::NamedRef& ref : config.named_refs()) names.insert(ref.name);
    return names;
  }();
  for (bool bootable : {false, true}) {
    auto copied = [&](uint32_t version) {
      return copied_refs.contains(image_ref_name(bootable, XattrMode::allowlist_only, version));
    };
    if (copied(1) || copied(2)) ensure_image(dest, by_digest, bootable);
  }
  if (tag) {
    tag_image(dest, summary.manifest_digest, *tag);
    dest.sync();
  }
  result.layers = static_cast<unsigned>(layers.size());
  result.images = static_cast<unsigned>(copier.images_.size());
  return result;
}

}  // namespace cfs::oci
