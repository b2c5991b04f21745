// Test utilities: OCI image layouts built from dumpfile strings. Each layer is a real tar
// written by libarchive (PAX, SCHILY.xattr.*, nanosecond mtimes, hardlinks as link entries)
// from the tree a composefs-dump(5) text describes, compressed with zlib/libzstd, and
// referenced by manifest/config/index JSON carrying the right digests.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cfs::test::oci {

enum class Compression { none, gzip, gzip_multimember, zstd, zstd_chunked };

// Content of regular files that the dumpfile does not give inline: deterministic bytes
// derived from the path, so tests can check what a mount shows.
std::string file_content(std::string_view path, uint64_t size);

// A layer tar from a dumpfile (paths written as "./…", the root as "./"). Hardlinks ('@'
// lines or shared inodes) become link entries to their first path.
std::string tar_from_dumpfile(std::string_view dumpfile);

// Raw tar entries for hostile layers: libarchive writes what it is told.
struct RawEntry {
  std::string path;
  char type = '0';  // '0' file, '1' hardlink, '2' symlink, '5' dir
  std::string link;
  std::string content;
};
std::string tar_from_entries(const std::vector<RawEntry>& entries);

std::string compress(std::string_view data, Compression c);
std::string sha256(std::string_view data);  // "sha256:<hex>"

struct Layer {
  std::string tar;  // uncompressed
  Compression compression = Compression::gzip;
};
Layer dump_layer(std::string_view dumpfile, Compression c = Compression::gzip);

struct BuiltImage {
  std::string manifest_digest;
  std::string config_digest;
  std::vector<std::string> layer_digests;  // compressed blobs
  std::vector<std::string> diff_ids;
};

class LayoutBuilder {
 public:
  explicit LayoutBuilder(std::string dir);
  // Stores blob bytes under blobs/sha256/; returns the digest.
  std::string add_blob(std::string_view data);
  // Adds an image (layers in order) named ref in index.json (rewritten each time).
  // diff_ids, if given, replace the real ones in the config (for tampering tests).
  BuiltImage add_image(const std::vector<Layer>& layers, const std::string& ref,
                       const std::vector<std::string>& diff_ids = {});
  const std::string& dir() const { return dir_; }
  std::string blob_path(const std::string& digest) const;

 private:
  void write_index();
  std::string dir_;
  std::vector<std::pair<std::string, std::string>> index_;  // ref, manifest json descriptor
};

// docker save format: manifest.json + <n>/layer.tar (uncompressed) + <hex>.json, as a tar.
void write_docker_archive(const std::string& file, const std::vector<Layer>& layers,
                          const std::string& repo_tag);
// A tar of a directory (an oci-archive: from a layout).
void write_dir_archive(const std::string& dir, const std::string& file);

// The sample OS images: a 5-layer base image and a 20-layer bootable image in two
// versions sharing their userspace layers (kernel, initramfs, modules and UKI differ).
std::vector<Layer> base_image_layers();
std::vector<Layer> bootable_image_layers(int version);

}  // namespace cfs::test::oci
