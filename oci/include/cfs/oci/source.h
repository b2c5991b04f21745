// Where OCI images come from. A source hands out the image manifest and its blobs; the
// caller verifies every digest (sources never vouch for the bytes they return).
//
//   oci:DIR[:REF]          an OCI image layout (index.json, blobs/<alg>/<hex>)
//   oci-archive:FILE[:REF] a tar of an OCI image layout
//   docker-archive:FILE    what `docker save` / `podman save` write (manifest.json + layer tars)
//   docker://REF           a registry, through the native client (registry.h)
//   anything else          through `skopeo experimental-image-proxy` (containers-storage:…,
//                          dir:…); "skopeo:SPEC" sends SPEC through the proxy even if it is
//                          one of the transports above (skopeo:docker://… included)
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cfs::oci {

struct Descriptor {
  std::string media_type;
  std::string digest;  // "sha256:<hex>"
  uint64_t size = 0;
  std::map<std::string, std::string> annotations;  // string-valued ones of the manifest's
};

// Sequential reader of one blob.
class BlobReader {
 public:
  virtual ~BlobReader() = default;
  // Fills up to buf.size() bytes; 0 means end of blob.
  virtual size_t read(std::span<std::byte> buf) = 0;
};

class ImageSource {
 public:
  virtual ~ImageSource() = default;
  // The raw bytes of the image manifest (an image index is resolved to the manifest for
  // this machine's architecture).
  virtual std::string manifest() = 0;
  // Thread-safe: layers are read concurrently.
  virtual std::unique_ptr<BlobReader> open_blob(const Descriptor& blob) = 0;
  // The bytes [offset, offset + length) of a blob, for partial pulls; nullptr where the
  // source cannot read ranges (then the blob is read whole). Thread-safe like open_blob.
  virtual std::unique_ptr<BlobReader> open_blob_range(const Descriptor&, uint64_t, uint64_t) {
    return nullptr;
  }
  // Several ascending, disjoint (offset, length) ranges in one request, read as their
  // concatenation; nullptr where the source cannot (then open_blob_range serves each).
  virtual std::unique_ptr<BlobReader> open_blob_ranges(const Descriptor&,
                                                       std::vector<std::pair<uint64_t, uint64_t>>) {
    return nullptr;
  }
  // Called once all blobs are read (the skopeo proxy waits for the pipe's status here).
  virtual void finish_blob(BlobReader&) {}
  // The source string, used as the default tag.
  virtual std::string name() const = 0;
};

struct RegistryOptions;  // registry.h

std::unique_ptr<ImageSource> open_source(std::string_view spec);
// The same, with the settings of the registry client for docker:// sources.
std::unique_ptr<ImageSource> open_source(std::string_view spec, const RegistryOptions& registry);

// The architecture names OCI uses for this machine ("amd64", "arm64", ...).
std::string host_oci_architecture();

}  // namespace cfs::oci
