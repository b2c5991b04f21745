// OCI images in a repository, stored the way composefs-rs stores them:
//
//   streams/oci-layer-<diff_id>      splitstream "ocilayer": the uncompressed layer tar
//                                    (headers inline, regular files > 64 bytes as objects)
//   streams/oci-config-<digest>      splitstream "ociconfg": the config JSON as one object;
//                                    named refs <diff_id> -> layer streams,
//                                    composefs.image.v1 -> the EROFS image (V1),
//                                    composefs.image.boot.v1 -> the bootable variant
//   streams/oci-manifest-<digest>    splitstream "ocimanif": the manifest JSON as one object;
//                                    named refs config:<digest> -> config stream,
//                                    <diff_id> -> layer streams
//   streams/refs/oci/<encoded tag>   -> the manifest stream ('%' -> %25, '/' -> %2F)
//
// A tag keeps its manifest, config, layers and EROFS images alive through garbage
// collection (gc.h follows named refs). Pulls verify the compressed digest and size of every
// blob and the uncompressed diff_id of every layer while streaming; nothing is named
// (no stream, tag or image) before the whole image has been verified and merged.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/digest.h"
#include "cfs/erofs/tree.h"
#include "cfs/oci/registry.h"
#include "cfs/oci/tree.h"
#include "cfs/store/repository.h"

namespace cfs::oci {

inline constexpr std::string_view kImageRefV1 = "composefs.image.v1";
inline constexpr std::string_view kBootImageRefV1 = "composefs.image.boot.v1";

// "composefs.image.v1", with ".xattrs=keep-user-xattrs" for that mode (composefs-rs' names).
std::string image_ref_name(bool bootable, XattrMode mode = XattrMode::allowlist_only);

std::string encode_tag(std::string_view tag);
std::string decode_tag(std::string_view encoded);
// Throws unless tag is usable: non-empty, no NUL, not starting with '@'.
void validate_tag(std::string_view tag);
// validate_tag, and for a tag about to be written (oci tag, oci pull): valid UTF-8 with no
// control characters, since tags are printed in listings, JSON and log lines. Existing tags
// are still looked up and removed with validate_tag alone.
void validate_new_tag(std::string_view tag);

struct PullProgress {
  unsigned layers_total = 0;
  unsigned layers_done = 0;    // imported or already present
  unsigned layers_reused = 0;  // already present
  uint64_t bytes_total = 0;    // compressed bytes of the layers to import
  uint64_t bytes_done = 0;     // compressed bytes read so far
  std::string message;         // what just happened ("layer sha256:… imported")
};

struct PullOptions {
  bool bootable = false;
  XattrMode xattrs = XattrMode::allowlist_only;
  unsigned threads = 0;  // 0: hardware_concurrency
  // Called from any thread, never concurrently.
  std::function<void(const PullProgress&)> progress;
  // The registry client's settings (docker:// sources).
  RegistryOptions registry;
  // zstd:chunked layers from sources that serve byte ranges: fetch only the files the
  // repository lacks (false: download and decompress every layer whole).
  bool partial = true;
};

struct PullResult {
  std::string tag;
  std::string manifest_digest;  // "sha256:…"
  std::string config_digest;
  Digest manifest_stream;  // object ids of the splitstreams
  Digest config_stream;
  Digest image_id;  // the V1 EROFS image
  std::optional<Digest> boot_image_id;
  unsigned layers = 0;
  unsigned layers_imported = 0;
  uint64_t bytes_read = 0;      // compressed bytes read from the source
  uint64_t objects_bytes = 0;   // bytes of regular files stored as objects
  unsigned layers_partial = 0;  // zstd:chunked layers read through their TOC
  uint64_t files_reused = 0;    // ... file contents taken from existing objects, not fetched
  uint64_t bytes_reused = 0;    // ... and their bytes
};

// Pulls source (see source.h) into repo and tags it (default tag: the source string).
PullResult pull(store::Repository& repo, std::string_view source, std::optional<std::string> tag,
                const PullOptions& options = {});

struct ImageSummary {
  std::string tag;
  std::string manifest_digest;
  std::string config_digest;
  std::string architecture;
  std::string os;
  unsigned layers = 0;
  std::optional<Digest> image_id;
  std::optional<Digest> boot_image_id;
};

// name: a tag, or "@sha256:<hex>" for a manifest digest.
ImageSummary inspect(const store::Repository& repo, std::string_view name);
std::vector<ImageSummary> list_images(const store::Repository& repo);
// Raw JSON bytes of the manifest and config, as stored; returned only when they parse as
// JSON within the size and nesting limits every document is held to.
std::string manifest_json(const store::Repository& repo, std::string_view name);
std::string config_json(const store::Repository& repo, std::string_view name);

// tag DIGEST NAME: points NAME at the manifest "sha256:…" (or "@sha256:…", or another tag).
void tag_image(store::Repository& repo, std::string_view target, std::string_view tag);
// Removes the tag; throws if it does not exist.
void untag_image(store::Repository& repo, std::string_view tag);

// The EROFS image id stored at pull (throws if the image was pulled without --bootable and
// the boot image is asked for).
Digest image_id(const store::Repository& repo, std::string_view name, bool bootable = false,
                XattrMode mode = XattrMode::allowlist_only);
// The same, but a variant that was not stored at pull (e.g. the boot image of an image pulled
// without --bootable) is built from the stored layers, stored, and referenced from the config
// (config and manifest streams are rewritten; tags keep naming the image), as composefs-rs'
// prepare-boot and pull --bootable of an already pulled image do. Needs a writable repository
// only when the variant is missing.
Digest ensure_image(store::Repository& repo, std::string_view name, bool bootable,
                    XattrMode mode = XattrMode::allowlist_only);
// "allowlist-only" / "keep-user-xattrs" (composefs-rs' names); throws for anything else.
XattrMode parse_xattr_mode(std::string_view name);

// The merged, transformed tree of a stored image (the EROFS image's content), for tests
// and dumps.
erofs::Tree image_tree(const store::Repository& repo, std::string_view name, bool bootable,
                       XattrMode mode = XattrMode::allowlist_only);

// OCI-level consistency of one image or all tagged images: manifest bytes re-hashed against
// their digest, config present and re-hashed, diff_ids match the manifest's layers, every
// layer stream present and of content type ocilayer (and decoding to its diff_id unless
// metadata_only), EROFS image refs present. Error kinds as composefs-rs names them.
// Also: zstd:chunked annotations of the stored manifests well-formed, and every entry of the
// content index (sha256 -> object, used by partial pulls) naming an object whose content
// hashes to it (entries whose object gc removed are counted as stale, not errors).
struct OciFsckReport {
  unsigned images_checked = 0;
  unsigned content_index_entries = 0;
  unsigned content_index_stale = 0;
  std::vector<std::string> errors;
  bool ok() const noexcept { return errors.empty(); }
};
OciFsckReport fsck_images(const store::Repository& repo, std::optional<std::string_view> name,
                          bool metadata_only = false);

}  // namespace cfs::oci
