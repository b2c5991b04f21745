// OCI images in a repository, stored the way composefs-rs stores them:
//
//   streams/oci-layer-<diff_id>      splitstream "ocilayer": the uncompressed layer tar
//                                    (headers inline, regular files > 64 bytes as objects)
//   streams/oci-config-<digest>      splitstream "ociconfg": the config JSON as one object;
//                                    named refs <diff_id> -> layer streams,
//                                    composefs.image -> the EROFS image (format V2),
//                                    composefs.image.v1 -> the EROFS image (V0/V1),
//                                    composefs.image.boot[.v1] -> the bootable variants
//                                    (one image per format meta.json's erofs_formats
//                                    lists; ".xattrs=keep-user-xattrs" appended for that mode)
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
#include <utility>
#include <vector>

#include "cfs/digest.h"
#include "cfs/erofs/tree.h"
#include "cfs/oci/registry.h"
#include "cfs/oci/tree.h"
#include "cfs/store/repository.h"

namespace cfs::oci {

inline constexpr std::string_view kImageRef = "composefs.image";  // format V2
inline constexpr std::string_view kImageRefV1 = "composefs.image.v1";
inline constexpr std::string_view kBootImageRef = "composefs.image.boot";
inline constexpr std::string_view kBootImageRefV1 = "composefs.image.boot.v1";

// The config stream's named ref of an image variant, as composefs-rs names it: V0 and V1
// images share the ".v1" names, V2 has the plain ones; ".xattrs=keep-user-xattrs" is appended
// for that mode. Throws for formats above 2.
std::string image_ref_name(bool bootable, XattrMode mode, uint32_t erofs_version);

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
  // Refuse (before importing anything) unless the source's manifest has this digest.
  std::optional<std::string> expect_manifest_digest;
};

struct PullResult {
  std::string tag;
  std::string manifest_digest;  // "sha256:…"
  std::string config_digest;
  Digest manifest_stream;  // object ids of the splitstreams
  Digest config_stream;
  Digest image_id;  // the EROFS image in the repository's default format
  std::optional<Digest> boot_image_id;
  // Every image written, (format, id), default format first; boot images likewise.
  std::vector<std::pair<uint32_t, Digest>> images;
  std::vector<std::pair<uint32_t, Digest>> boot_images;
  unsigned layers = 0;
  unsigned layers_imported = 0;
  uint64_t bytes_read = 0;      // compressed bytes read from the source
  uint64_t objects_bytes = 0;   // bytes of regular files stored as objects
  unsigned layers_partial = 0;  // zstd:chunked layers read through their TOC
  uint64_t files_reused = 0;    // ... file contents taken from existing objects, not fetched
  uint64_t bytes_reused = 0;    // ... and their bytes
  // eStargz: last-chunk members rebuilt from an object and a recorded tail (not fetched), and
  // those whose recorded tail failed the gzip trailer check (fetched instead)
  uint64_t tails_rebuilt = 0;
  uint64_t tails_refused = 0;
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

// composefs-rs' oci copy: the image name (a tag or "@sha256:…") of src, with its manifest,
// config and layer streams, its EROFS images and every object they name, copied into dest,
// then tagged tag (if given). Each object is checked against its name while copied (objects
// dest already has are kept); objects are made durable before any stream or image is named,
// and the tag comes last, so a failed copy names nothing. Both repositories must use the
// same hash algorithm.
struct CopyResult {
  std::string manifest_digest;
  std::string config_digest;
  unsigned layers = 0;
  unsigned images = 0;
  uint64_t objects_copied = 0;
  uint64_t objects_present = 0;  // already in dest
};
CopyResult copy_image(store::Repository& dest, const store::Repository& src, std::string_view name,
                      std::optional<std::string> tag);

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

// The EROFS image id stored at pull, in the repository's default format (repo.erofs_version()).
// When the config has no image of that format (pulled by a cfs that wrote V1 only, or before
// the format configuration changed) the image of the other format is returned, unless the
// format was chosen for this handle (Repository::set_erofs_version). Throws if neither
// exists (e.g. the boot image of an image pulled without --bootable).
Digest image_id(const store::Repository& repo, std::string_view name, bool bootable = false,
                XattrMode mode = XattrMode::allowlist_only);
// The same, but a variant that was not stored at pull in the default format (e.g. the boot
// image of an image pulled without --bootable) is built from the stored layers in every
// format of repo.erofs_versions() (or only in erofs_version, if given), stored, and
// referenced from the config
// (config and manifest streams are rewritten; tags keep naming the image), as composefs-rs'
// prepare-boot and pull --bootable of an already pulled image do. Needs a writable repository
// only when the variant is missing.
Digest ensure_image(store::Repository& repo, std::string_view name, bool bootable,
                    XattrMode mode = XattrMode::allowlist_only,
                    std::optional<uint32_t> erofs_version = std::nullopt);
// "allowlist-only" / "keep-user-xattrs" (composefs-rs' names); throws for anything else.
XattrMode parse_xattr_mode(std::string_view name);

// The merged, transformed tree of a stored image (the EROFS image's content), for tests
// and dumps.
erofs::Tree image_tree(const store::Repository& repo, std::string_view name, bool bootable,
                       XattrMode mode = XattrMode::allowlist_only);

// ---- single layers (composefs-rs' oci import-layer and oci layer)

// Stores an uncompressed layer tar read from fd (what names it in errors) as the stream
// oci-layer-<diff_id>, checking that its sha256 is diff_id ("sha256:<hex>"); with ref, also
// names it streams/refs/<ref>. A layer already stored is only named, fd is not read.
// Returns the stream's object id.
Digest import_layer(store::Repository& repo, int fd, std::string_view diff_id,
                    std::optional<std::string_view> ref, const std::string& what);

// composefs-rs' `oci layer --json` figures of a stored layer.
struct LayerInfo {
  std::string diff_id;
  Digest stream;               // object id of the layer splitstream
  uint64_t size = 0;           // bytes of the uncompressed tar
  uint64_t entries = 0;        // tar entries (extension headers not counted)
  uint64_t objects = 0;        // distinct objects the stream references
  uint64_t external_size = 0;  // bytes of the regular files stored as objects
};
LayerInfo layer_info(const store::Repository& repo, std::string_view diff_id);

// Calls fn for every entry of the stored layer, with every xattr it records.
void for_each_stored_layer_entry(const store::Repository& repo, std::string_view diff_id,
                                 const std::function<void(const TarEntry&)>& fn);

// OCI-level consistency of one image or all tagged images: manifest bytes re-hashed against
// their digest, config present and re-hashed, diff_ids match the manifest's layers, every
// layer stream present and of content type ocilayer (and decoding to its diff_id unless
// metadata_only), EROFS image refs present. Error kinds as composefs-rs names them.
// Also: zstd:chunked annotations of the stored manifests well-formed, and every entry of the
// content index (sha256 -> object, used by partial pulls) naming an object whose content
// hashes to it (entries whose object gc removed are counted as stale, not errors), and every
// eStargz tail (oci/estargz-tails) well-formed: named by a chunk sha256 and its member's gzip
// trailer, a regular file no longer than a tail may be (estargz-tail-invalid).
struct OciFsckReport {
  unsigned images_checked = 0;
  unsigned content_index_entries = 0;
  unsigned content_index_stale = 0;
  unsigned estargz_tails = 0;
  std::vector<std::string> errors;
  bool ok() const noexcept { return errors.empty(); }
};
OciFsckReport fsck_images(const store::Repository& repo, std::optional<std::string_view> name,
                          bool metadata_only = false);

// gc of the caches partial pulls keep beside the store (docs/CHUNKED.md): content index
// entries whose object kept() rejects (or that is gone), then the eStargz tails of every chunk
// that no surviving content index entry names. Meant for store::GcOptions::prune_caches (the
// exclusive lock held); malformed entries are left for fsck_images to report.
struct CachePruneResult {
  uint64_t content_index_entries = 0;  // removed (would be, on a dry run)
  uint64_t estargz_tails = 0;          // tail files removed (would be)
};
CachePruneResult prune_caches(const store::Repository& repo,
                              const std::function<bool(const Digest&)>& kept, bool dry_run);

}  // namespace cfs::oci
