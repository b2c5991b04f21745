#include "cfs/oci/source.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/oci/registry.h"
#include "util.h"

namespace cfs::oci {

std::unique_ptr<ImageSource> open_skopeo_source(std::string_view spec);  // skopeo.cc

namespace {

using nlohmann::json;

constexpr uint64_t kMaxJsonBlob = 16u << 20;
constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
constexpr std::string_view kDockerList =
    "application/vnd.docker.distribution.manifest.list.v2+json";

// Reads [offset, offset + size) of a shared file.
class RangeReader : public BlobReader {
 public:
  RangeReader(std::shared_ptr<UniqueFd> fd, uint64_t offset, uint64_t size, std::string what)
      : fd_(std::move(fd)), pos_(offset), end_(offset + size), what_(std::move(what)) {}
  size_t read(std::span<std::byte> buf) override {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), end_ - pos_));
    if (want == 0) return 0;
    ssize_t n;
    do {
      n = ::pread(fd_->get(), buf.data(), want, static_cast<off_t>(pos_));
    } while (n < 0 && errno == EINTR);
    if (n < 0) throw_errno(what_);
    if (n == 0) throw Error(what_ + ": file is shorter than expected (truncated)");
    pos_ += static_cast<uint64_t>(n);
    return static_cast<size_t>(n);
  }

 private:
  std::shared_ptr<UniqueFd> fd_;
  uint64_t pos_;
  uint64_t end_;
  std::string what_;
};

std::string read_blob(BlobReader& reader, uint64_t limit, const std::string& what) {
  std::string out;
  std::byte buf[65536];
  while (size_t n = reader.read(buf)) {
    out.append(reinterpret_cast<const char*>(buf), n);
    if (out.size() > limit) throw Error(what + ": larger than " + std::to_string(limit) + " bytes");
  }
  return out;
}

json parse_json(std::string_view text, const std::string& what) {
  return store::parse_json_bounded(text, what);
}

Descriptor parse_descriptor(const json& j, const std::string& what) {
  if (!j.is_object() || !j.contains("digest") || !j["digest"].is_string() || !j.contains("size") ||
      !j["size"].is_number_unsigned())
    throw Error(what + ": descriptor without a digest and size");
  Descriptor d;
  d.digest = j["digest"].get<std::string>();
  d.size = j["size"].get<uint64_t>();
  if (j.contains("mediaType") && j["mediaType"].is_string())
    d.media_type = j["mediaType"].get<std::string>();
  validate_oci_digest(d.digest, what);
  return d;
}

// Files of a layout, either a directory or the members of an archive.
class FileProvider {
 public:
  virtual ~FileProvider() = default;
  // nullptr if absent; size receives the file's size.
  virtual std::unique_ptr<BlobReader> open(const std::string& name, uint64_t& size) = 0;
  virtual std::string describe(const std::string& name) const = 0;
};

class DirProvider : public FileProvider {
 public:
  explicit DirProvider(std::string dir) : dir_(std::move(dir)) {
    dirfd_ = open_file(dir_, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  }
  std::unique_ptr<BlobReader> open(const std::string& name, uint64_t& size) override {
    int fd = ::openat(dirfd_.get(), name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
      if (errno == ENOENT) return nullptr;
      throw_errno(describe(name));
    }
    auto owned = std::make_shared<UniqueFd>(fd);
    struct stat st;
    if (::fstat(fd, &st) < 0) throw_errno(describe(name));
    if (!S_ISREG(st.st_mode)) throw Error(describe(name) + ": not a regular file");
    size = static_cast<uint64_t>(st.st_size);
    return std::make_unique<RangeReader>(owned, 0, size, describe(name));
  }
  std::string describe(const std::string& name) const override { return dir_ + "/" + name; }

 private:
  std::string dir_;
  UniqueFd dirfd_;
};

struct ArchiveFree {
  void operator()(archive* a) const { archive_read_free(a); }
};

std::string normalize_member(std::string_view name) {
  while (name.starts_with("./")) name.remove_prefix(2);
  while (name.starts_with('/')) name.remove_prefix(1);
  return std::string(name);
}

}  // namespace

void support_in_process_filters(::archive* a, const std::string& what) {
  struct Filter {
    const char* name;
    int (*add)(::archive*);
  };
  for (const Filter& f : {Filter{"gzip", archive_read_support_filter_gzip},
                          Filter{"zstd", archive_read_support_filter_zstd},
                          Filter{"xz", archive_read_support_filter_xz},
                          Filter{"bzip2", archive_read_support_filter_bzip2}}) {
    // ARCHIVE_WARN means "registered, but through an external program".
    if (f.add(a) != ARCHIVE_OK)
      throw Error(what + ": libarchive cannot decompress " + f.name +
                  " in-process (it would run an external program)");
  }
}

namespace {

// Reads the archive file through pread at a private position, so several readers (the
// pull imports layers in parallel) can stream the same file at once.
struct ArchiveInput {
  std::shared_ptr<UniqueFd> fd;
  uint64_t pos = 0;
  std::vector<std::byte> buf = std::vector<std::byte>(1 << 16);
  std::string what;
  std::exception_ptr error;
};

la_ssize_t archive_input_read(archive*, void* opaque, const void** out) {
  auto* in = static_cast<ArchiveInput*>(opaque);
  try {
    ssize_t n;
    do {
      n = ::pread(in->fd->get(), in->buf.data(), in->buf.size(), static_cast<off_t>(in->pos));
    } while (n < 0 && errno == EINTR);
    if (n < 0) throw_errno(in->what);
    in->pos += static_cast<uint64_t>(n);
    *out = in->buf.data();
    return n;
  } catch (...) {
    in->error = std::current_exception();
    return -1;
  }
}

// A libarchive reader of a (possibly compressed) tar archive, with only in-process
// decompressors: support_filter_all would run external programs found in PATH (lrzip,
// lzop, grzip) on untrusted input.
class ArchiveStream {
 public:
  ArchiveStream(std::shared_ptr<UniqueFd> fd, std::string what)
      : input_(std::make_unique<ArchiveInput>()), a_(archive_read_new()) {
    input_->fd = std::move(fd);
    input_->what = what;
    what_ = std::move(what);
    if (!a_) throw Error(what_ + ": libarchive: out of memory");
    support_in_process_filters(a_.get(), what_);
    archive_read_support_format_tar(a_.get());
    check(archive_read_open(a_.get(), input_.get(), nullptr, archive_input_read, nullptr));
  }
  archive* get() const { return a_.get(); }
  bool compressed() const { return archive_filter_code(a_.get(), 0) != ARCHIVE_FILTER_NONE; }
  // The next regular member (its normalized name), or nullopt at the end.
  std::optional<std::string> next(uint64_t& size) {
    archive_entry* entry = nullptr;
    for (;;) {
      int r = archive_read_next_header(a_.get(), &entry);
      if (r == ARCHIVE_EOF) return std::nullopt;
      check(r);
      if (archive_entry_filetype(entry) != AE_IFREG) continue;
      size = static_cast<uint64_t>(archive_entry_size(entry));
      const char* path = archive_entry_pathname(entry);
      return normalize_member(path ? path : "");
    }
  }
  size_t read(std::span<std::byte> buf) {
    la_ssize_t n = archive_read_data(a_.get(), buf.data(), buf.size());
    if (n < 0) check(static_cast<int>(n));
    return static_cast<size_t>(n);
  }
  void check(int r) const {
    if (r >= ARCHIVE_WARN) return;
    if (input_->error) std::rethrow_exception(input_->error);
    const char* msg = archive_error_string(a_.get());
    throw Error(what_ + ": " + (msg ? msg : "cannot read the archive"));
  }

 private:
  std::unique_ptr<ArchiveInput> input_;
  std::unique_ptr<archive, ArchiveFree> a_;
  std::string what_;
};

// A member of a compressed archive, decompressed as it is read: nothing is unpacked to disk.
class ArchiveMemberReader : public BlobReader {
 public:
  ArchiveMemberReader(std::unique_ptr<ArchiveStream> stream, uint64_t size, std::string what)
      : stream_(std::move(stream)), left_(size), what_(std::move(what)) {}
  size_t read(std::span<std::byte> buf) override {
    if (left_ == 0) return 0;
    size_t n = stream_->read(buf.first(static_cast<size_t>(std::min<uint64_t>(buf.size(), left_))));
    if (n == 0) throw Error(what_ + ": archive member is shorter than its header says (truncated)");
    left_ -= n;
    return n;
  }

 private:
  std::unique_ptr<ArchiveStream> stream_;
  uint64_t left_;
  std::string what_;
};

// An in-memory member (a small one cached by the index pass).
class StringReader : public BlobReader {
 public:
  explicit StringReader(std::shared_ptr<const std::string> data) : data_(std::move(data)) {}
  size_t read(std::span<std::byte> buf) override {
    size_t n = std::min(buf.size(), data_->size() - pos_);
    std::memcpy(buf.data(), data_->data() + pos_, n);
    pos_ += n;
    return n;
  }

 private:
  std::shared_ptr<const std::string> data_;
  size_t pos_ = 0;
};

// The members of a tar archive. Uncompressed archives (what docker/podman save write) are
// read in place. Compressed ones are never unpacked to disk (a small archive can expand to
// gigabytes, and a killed pull would leave them behind): one pass indexes the members and
// keeps the small ones (index.json, manifests, configs) in memory within a budget; every
// other blob is decompressed again from the start of the archive when it is opened.
class ArchiveProvider : public FileProvider {
 public:
  // Members of at most this size are kept from the index pass, up to kCacheBudget in all.
  static constexpr uint64_t kCacheMember = kMaxJsonBlob;
  static constexpr uint64_t kCacheBudget = 64u << 20;

  explicit ArchiveProvider(std::string path) : path_(std::move(path)) {
    fd_ = std::make_shared<UniqueFd>(open_file(path_, O_RDONLY | O_CLOEXEC));
    ArchiveStream stream(fd_, path_);
    uint64_t size = 0;
    uint64_t cached = 0;
    while (auto name = stream.next(size)) {
      Member m{0, size, nullptr};
      if (!stream.compressed()) {
        // The tar reader has consumed exactly the member's headers at this point.
        m.offset = static_cast<uint64_t>(archive_filter_bytes(stream.get(), 0));
      } else if (size <= kCacheMember && cached + size <= kCacheBudget) {
        auto data = std::make_shared<std::string>();
        data->resize(static_cast<size_t>(size));
        size_t got = 0;
        while (got < size) {
          size_t n = stream.read({reinterpret_cast<std::byte*>(data->data()) + got, size - got});
          if (n == 0) throw Error(describe(*name) + ": archive member is truncated");
          got += n;
        }
        cached += size;
        m.data = std::move(data);
      }
      compressed_ = stream.compressed();
      // Which copy a reader would take is ambiguous: refuse rather than guess.
      if (!members_.emplace(*name, std::move(m)).second)
        throw Error(describe(*name) + ": the archive holds this member twice");
    }
  }
  std::unique_ptr<BlobReader> open(const std::string& name, uint64_t& size) override {
    std::string key = normalize_member(name);
    auto it = members_.find(key);
    if (it == members_.end()) return nullptr;
    size = it->second.size;
    if (it->second.data) return std::make_unique<StringReader>(it->second.data);
    if (!compressed_)
      return std::make_unique<RangeReader>(fd_, it->second.offset, size, describe(name));
    auto stream = std::make_unique<ArchiveStream>(fd_, path_);
    uint64_t member_size = 0;
    while (auto n = stream->next(member_size)) {
      if (*n == key && member_size == size)
        return std::make_unique<ArchiveMemberReader>(std::move(stream), size, describe(name));
    }
    throw Error(describe(name) + ": member vanished from the archive");
  }
  std::string describe(const std::string& name) const override { return path_ + ":" + name; }

 private:
  struct Member {
    uint64_t offset;
    uint64_t size;
    std::shared_ptr<const std::string> data;  // cached small member of a compressed archive
  };
  std::string path_;
  std::shared_ptr<UniqueFd> fd_;
  bool compressed_ = false;
  std::map<std::string, Member> members_;  // read-only after construction (shared by threads)
};

std::string blob_path(const std::string& digest) {
  return "blobs/sha256/" + digest.substr(7);
}

std::string read_verified(FileProvider& files, const Descriptor& d, const std::string& what) {
  uint64_t size = 0;
  auto reader = files.open(blob_path(d.digest), size);
  if (!reader)
    throw Error(what + ": blob " + d.digest + " is missing (" +
                files.describe(blob_path(d.digest)) + ")");
  if (d.size > kMaxJsonBlob) throw Error(what + ": " + d.digest + " is too large for JSON");
  std::string data = read_blob(*reader, kMaxJsonBlob, files.describe(blob_path(d.digest)));
  if (data.size() != d.size)
    throw Error(what + ": blob " + d.digest + " has " + std::to_string(data.size()) +
                " bytes, the descriptor says " + std::to_string(d.size));
  std::string actual = sha256_digest(data);
  if (actual != d.digest)
    throw Error(what + ": blob " + d.digest + " has digest " + actual + " (corrupt or tampered)");
  return data;
}

class LayoutSource : public ImageSource {
 public:
  LayoutSource(std::unique_ptr<FileProvider> files, std::optional<std::string> ref,
               std::string name)
      : files_(std::move(files)), ref_(std::move(ref)), name_(std::move(name)) {}

  std::string manifest() override {
    uint64_t size = 0;
    auto index_reader = files_->open("index.json", size);
    if (!index_reader)
      throw Error(files_->describe("index.json") + ": missing (not an OCI image layout)");
    std::string index_text = read_blob(*index_reader, kMaxJsonBlob, files_->describe("index.json"));
    Descriptor d = choose(parse_json(index_text, files_->describe("index.json")),
                          files_->describe("index.json"), true);
    for (int depth = 0;; ++depth) {
      std::string data = read_verified(*files_, d, name_);
      if (d.media_type != kOciIndex && d.media_type != kDockerList) {
        json m = parse_json(data, name_ + ": manifest " + d.digest);
        std::string mt = json_string(m, "mediaType", "", name_ + ": manifest " + d.digest);
        if (mt != kOciIndex && mt != kDockerList) return data;
      }
      if (depth > 2) throw Error(name_ + ": image indexes nested too deeply");
      d = choose(parse_json(data, name_ + ": index " + d.digest), name_ + ": index " + d.digest,
                 false);
    }
  }

  std::unique_ptr<BlobReader> open_blob(const Descriptor& blob) override {
    validate_oci_digest(blob.digest, name_);
    uint64_t size = 0;
    auto reader = files_->open(blob_path(blob.digest), size);
    if (!reader)
      throw Error(name_ + ": blob " + blob.digest + " is missing (" +
                  files_->describe(blob_path(blob.digest)) + ")");
    return reader;
  }

  std::string name() const override { return name_; }

 private:
  // Picks the manifest from an index: by ref name at the top level, else by platform.
  Descriptor choose(const json& index, const std::string& what, bool top) {
    if (!index.is_object() || !index.contains("manifests") || !index["manifests"].is_array())
      throw Error(what + ": no 'manifests' array");
    const json& list = index["manifests"];
    if (top && ref_) {
      for (const json& m : list) {
        if (m.contains("annotations") && m["annotations"].is_object() &&
            json_string(m["annotations"], "org.opencontainers.image.ref.name", "", what) == *ref_)
          return parse_descriptor(m, what);
      }
      throw Error(what + ": no image named '" + *ref_ + "'");
    }
    if (list.empty()) throw Error(what + ": the index lists no images");
    if (list.size() == 1) return parse_descriptor(list[0], what);
    if (top) {
      bool has_platforms = true;
      for (const json& m : list) has_platforms &= m.contains("platform");
      if (!has_platforms)
        throw Error(what + ": the layout holds " + std::to_string(list.size()) +
                    " images; name one as oci:DIR:REF");
    }
    std::string arch = host_oci_architecture();
    for (const json& m : list) {
      if (!m.contains("platform") || !m["platform"].is_object()) continue;
      const json& p = m["platform"];
      if (json_string(p, "architecture", "", what) == arch &&
          json_string(p, "os", "linux", what) == "linux")
        return parse_descriptor(m, what);
    }
    throw Error(what + ": no image for linux/" + arch);
  }

  std::unique_ptr<FileProvider> files_;
  std::optional<std::string> ref_;
  std::string name_;
};

// docker save / podman save: manifest.json = [{"Config": …, "RepoTags": […], "Layers": […]}].
// There is no OCI manifest inside, so one is synthesised from the config and the layer
// files; its bytes are deterministic (sorted keys, no whitespace), so pulling the same
// archive twice gives the same manifest digest.
class DockerArchiveSource : public ImageSource {
 public:
  DockerArchiveSource(std::string path, std::optional<std::string> ref, std::string name)
      : files_(path), ref_(std::move(ref)), name_(std::move(name)) {}

  std::string manifest() override {
    uint64_t size = 0;
    auto reader = files_.open("manifest.json", size);
    if (!reader) throw Error(files_.describe("manifest.json") + ": missing (not a docker archive)");
    json list = parse_json(read_blob(*reader, kMaxJsonBlob, files_.describe("manifest.json")),
                           files_.describe("manifest.json"));
    if (!list.is_array() || list.empty())
      throw Error(files_.describe("manifest.json") + ": expected a non-empty array");
    const json* chosen = nullptr;
    for (const json& item : list) {
      if (!ref_) {
        if (list.size() > 1)
          throw Error(name_ +
                      ": the archive holds several images; name one as "
                      "docker-archive:FILE:TAG");
        chosen = &item;
        break;
      }
      if (item.contains("RepoTags") && item["RepoTags"].is_array())
        for (const json& t : item["RepoTags"])
          if (t.is_string() && t.get<std::string>() == *ref_) chosen = &item;
    }
    if (!chosen) throw Error(name_ + ": no image tagged '" + ref_.value_or("") + "'");
    if (!chosen->contains("Config") || !(*chosen)["Config"].is_string() ||
        !chosen->contains("Layers") || !(*chosen)["Layers"].is_array())
      throw Error(files_.describe("manifest.json") + ": entry without Config and Layers");

    std::string config_name = (*chosen)["Config"].get<std::string>();
    auto config_reader = files_.open(config_name, size);
    if (!config_reader) throw Error(files_.describe(config_name) + ": missing");
    std::string config = read_blob(*config_reader, kMaxJsonBlob, files_.describe(config_name));
    std::string config_digest = sha256_digest(config);
    members_[config_digest] = config_name;
    json cfg = parse_json(config, files_.describe(config_name));
    const json* diff_ids = nullptr;
    if (cfg.contains("rootfs") && cfg["rootfs"].is_object() && cfg["rootfs"].contains("diff_ids"))
      diff_ids = &cfg["rootfs"]["diff_ids"];
    const json& layers = (*chosen)["Layers"];
    if (!diff_ids || !diff_ids->is_array() || diff_ids->size() != layers.size())
      throw Error(files_.describe(config_name) + ": rootfs.diff_ids does not match the " +
                  std::to_string(layers.size()) + " layers of manifest.json");

    json manifest = {{"schemaVersion", 2},
                     {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                     {"config",
                      {{"mediaType", "application/vnd.oci.image.config.v1+json"},
                       {"digest", config_digest},
                       {"size", config.size()}}},
                     {"layers", json::array()}};
    for (size_t i = 0; i < layers.size(); ++i) {
      if (!layers[i].is_string() || !(*diff_ids)[i].is_string())
        throw Error(files_.describe("manifest.json") + ": malformed layer list");
      std::string layer_name = layers[i].get<std::string>();
      uint64_t layer_size = 0;
      if (!files_.open(layer_name, layer_size))
        throw Error(name_ + ": layer " + layer_name + " is missing from the archive");
      // Newer docker writes blobs/sha256/<hex> (named by their digest); the legacy
      // <id>/layer.tar members are uncompressed, so their digest is the diff_id.
      std::string digest = (*diff_ids)[i].get<std::string>();
      std::string normalized = normalize_member(layer_name);
      if (normalized.starts_with("blobs/sha256/") && normalized.size() == 13 + 64)
        digest = "sha256:" + normalized.substr(13);
      validate_oci_digest(digest, files_.describe(layer_name));
      members_[digest] = layer_name;
      manifest["layers"].push_back({{"mediaType", "application/vnd.oci.image.layer.v1.tar"},
                                    {"digest", digest},
                                    {"size", layer_size}});
    }
    return manifest.dump();
  }

  std::unique_ptr<BlobReader> open_blob(const Descriptor& blob) override {
    auto it = members_.find(blob.digest);
    if (it == members_.end())
      throw Error(name_ + ": blob " + blob.digest + " is not in the archive");
    uint64_t size = 0;
    auto reader = files_.open(it->second, size);
    if (!reader) throw Error(name_ + ": " + it->second + " is missing");
    return reader;
  }

  std::string name() const override { return name_; }

 private:
  ArchiveProvider files_;
  std::optional<std::string> ref_;
  std::string name_;
  std::map<std::string, std::string> members_;  // digest -> member name
};

// "PATH[:REF]": the path ends at the first ':' (as in containers/image).
std::pair<std::string, std::optional<std::string>> split_path_ref(std::string_view rest) {
  auto colon = rest.find(':');
  if (colon == std::string_view::npos) return {std::string(rest), std::nullopt};
  std::string ref(rest.substr(colon + 1));
  return {std::string(rest.substr(0, colon)), ref.empty() ? std::nullopt : std::optional(ref)};
}

}  // namespace

std::string host_oci_architecture() {
  utsname u{};
  ::uname(&u);
  std::string_view m = u.machine;
  if (m == "x86_64") return "amd64";
  if (m == "aarch64") return "arm64";
  if (m == "i686" || m == "i386") return "386";
  if (m == "ppc64le") return "ppc64le";
  if (m == "s390x") return "s390x";
  if (m.starts_with("armv7")) return "arm";
  if (m == "riscv64") return "riscv64";
  return std::string(m);
}

std::unique_ptr<ImageSource> open_source(std::string_view spec) {
  return open_source(spec, RegistryOptions{});
}

std::unique_ptr<ImageSource> open_source(std::string_view spec, const RegistryOptions& registry) {
  std::string name(spec);
  if (spec.starts_with("docker://")) return open_registry_source(spec.substr(9), registry);
  // "skopeo:" forces the proxy even for transports cfs reads natively.
  if (spec.starts_with("skopeo:")) return open_skopeo_source(spec.substr(7));
  if (spec.starts_with("oci:")) {
    auto [path, ref] = split_path_ref(spec.substr(4));
    if (path.empty()) throw Error(name + ": no layout directory given");
    return std::make_unique<LayoutSource>(std::make_unique<DirProvider>(path), ref, name);
  }
  if (spec.starts_with("oci-archive:")) {
    auto [path, ref] = split_path_ref(spec.substr(12));
    if (path.empty()) throw Error(name + ": no archive given");
    return std::make_unique<LayoutSource>(std::make_unique<ArchiveProvider>(path), ref, name);
  }
  if (spec.starts_with("docker-archive:")) {
    auto [path, ref] = split_path_ref(spec.substr(15));
    if (path.empty()) throw Error(name + ": no archive given");
    return std::make_unique<DockerArchiveSource>(path, ref, name);
  }
  auto colon = spec.find(':');
  if (colon == std::string_view::npos || colon == 0)
    throw Error("'" + name +
                "' is not an image reference (TRANSPORT:NAME, e.g. oci:DIR, "
                "docker://registry/image:tag)");
  return open_skopeo_source(spec);
}

}  // namespace cfs::oci
