// Stored OCI images: EROFS generation, config/manifest streams, tags, inspection, fsck.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "cfs/erofs/writer.h"
#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fd.h"
#include "cfs/oci/oci.h"
#include "cfs/output.h"
#include "cfs/store/refs.h"
#include "chunked.h"
#include "content_index.h"
#include "estargz_tails.h"
#include "fsutil.h"
#include "internal.h"
#include "json_util.h"
#include "util.h"

namespace cfs::oci {

namespace {

using nlohmann::json;

constexpr std::string_view kTagDir = "streams/refs/oci";

class EntryCollector : public TarHandler {
 public:
  explicit EntryCollector(const std::function<void(const TarEntry&)>& fn) : fn_(fn) {}
  void entry(TarEntry& e) override { fn_(e); }

 private:
  const std::function<void(const TarEntry&)>& fn_;
};

// Collects a stream that holds a JSON document, refusing to grow past the documents' limit:
// a stored manifest or config is as untrusted as the image it came with.
class BoundedSink : public OutputSink {
 public:
  explicit BoundedSink(std::string what) : what_(std::move(what)) {}
  using OutputSink::write;
  void write(std::span<const std::byte> data) override {
    if (data.size() > store::kMaxJsonDocument - out_.size())
      throw Error(what_ + ": larger than the JSON document limit of " +
                  std::to_string(store::kMaxJsonDocument) + " bytes");
    out_.append(reinterpret_cast<const char*>(data.data()), data.size());
  }
  std::string& str() noexcept { return out_; }

 private:
  std::string what_;
  std::string out_;
};

std::string stream_bytes(const store::Repository& repo, const std::string& name) {
  BoundedSink sink(repo.path() + ": " + name);
  repo.cat_stream(name, sink);
  return std::move(sink.str());
}

std::string content_id_from_link(const std::string& target) {
  auto slash = target.rfind('/');
  return slash == std::string::npos ? target : target.substr(slash + 1);
}

// The manifest stream's content id ("oci-manifest-sha256:…") for a tag or "@sha256:…".
std::string manifest_content_id(const store::Repository& repo, std::string_view name) {
  if (name.starts_with('@')) {
    std::string digest(name.substr(1));
    validate_oci_digest(digest, "image name '" + std::string(name) + "'");
    std::string id = "oci-manifest-" + digest;
    if (!repo.resolve_stream(id)) throw Error(repo.path() + ": no image with manifest " + digest);
    return id;
  }
  validate_tag(name);
  std::string link = std::string(kTagDir) + "/" + encode_tag(name);
  // Read beneath the repository root: a symlinked streams/refs must not be followed.
  auto target = store::detail::read_link_at(repo.dirfd(), link);
  if (!target) throw Error(repo.path() + ": no image tagged '" + escape_for_log(name) + "'");
  std::string id = content_id_from_link(*target);
  if (!id.starts_with("oci-manifest-sha256:"))
    throw Error(repo.path() + "/" + escape_for_log(link) +
                ": does not point at an OCI manifest stream");
  return id;
}

std::string digest_of_content_id(const std::string& id, std::string_view prefix) {
  return id.substr(prefix.size());
}

json parse(std::string_view text, const std::string& what) {
  return store::parse_json_bounded(text, what);
}

std::string config_digest_of(const json& manifest, const std::string& what) {
  if (!manifest.is_object() || !manifest.contains("config") || !manifest["config"].is_object() ||
      !manifest["config"].contains("digest") || !manifest["config"]["digest"].is_string())
    throw Error(what + ": manifest has no config digest");
  std::string d = manifest["config"]["digest"].get<std::string>();
  validate_oci_digest(d, what);
  return d;
}

std::vector<std::string> diff_ids_of(const json& config, const std::string& what) {
  std::vector<std::string> out;
  if (!config.is_object() || !config.contains("rootfs") || !config["rootfs"].is_object() ||
      !config["rootfs"].contains("diff_ids") || !config["rootfs"]["diff_ids"].is_array())
    throw Error(what + ": config has no rootfs.diff_ids");
  for (const json& d : config["rootfs"]["diff_ids"]) {
    if (!d.is_string()) throw Error(what + ": non-string diff_id");
    out.push_back(d.get<std::string>());
    validate_oci_digest(out.back(), what);
  }
  return out;
}

std::string read_tree_file(const store::Repository& repo, const erofs::Inode& inode) {
  if (inode.content) return *inode.content;
  if (!inode.digest) return {};
  UniqueFd fd = repo.open_object(*inode.digest);
  return read_fd(fd.get(), repo.path() + ": object " + inode.digest->hex());
}

struct ImageRefs {
  std::string manifest_id;
  std::string config_digest;
  json manifest;
  json config;
};

ImageRefs load(const store::Repository& repo, std::string_view name) {
  ImageRefs r;
  r.manifest_id = manifest_content_id(repo, name);
  std::string what = repo.path() + ": " + r.manifest_id;
  r.manifest = parse(stream_bytes(repo, r.manifest_id), what);
  r.config_digest = config_digest_of(r.manifest, what);
  r.config = parse(stream_bytes(repo, "oci-config-" + r.config_digest),
                   repo.path() + ": oci-config-" + r.config_digest);
  return r;
}

// The config stream's image of a variant: the repository's default format's, else (unless a
// format was chosen for this handle) the other format's. nullptr if neither is there.
const Digest* find_image_ref(const store::Repository& repo, const store::SplitStreamReader& cs,
                             bool bootable, XattrMode mode) {
  const uint32_t version = repo.erofs_version();
  if (const Digest* d = cs.find_named_ref(image_ref_name(bootable, mode, version))) return d;
  if (repo.erofs_version_chosen()) return nullptr;
  return cs.find_named_ref(image_ref_name(bootable, mode, version == 2 ? 1 : 2));
}

}  // namespace

bool is_image_ref_name(std::string_view name) {
  return name == kImageRef ||
         (name.starts_with(kImageRef) && name.substr(kImageRef.size()).starts_with('.'));
}

bool is_boot_image_ref_name(std::string_view name) {
  return name == kBootImageRef ||
         (name.starts_with(kBootImageRef) && name.substr(kBootImageRef.size()).starts_with('.'));
}

std::string encode_tag(std::string_view tag) {
  std::string out;
  for (char c : tag) {
    if (c == '%')
      out += "%25";
    else if (c == '/')
      out += "%2F";
    else
      out += c;
  }
  return out;
}

std::string decode_tag(std::string_view encoded) {
  std::string out;
  for (size_t i = 0; i < encoded.size(); ++i) {
    if (encoded[i] == '%' && i + 2 < encoded.size() + 0 && encoded.size() - i >= 3) {
      std::string_view code = encoded.substr(i + 1, 2);
      if (code == "25") {
        out += '%';
        i += 2;
        continue;
      }
      if (code == "2F" || code == "2f") {
        out += '/';
        i += 2;
        continue;
      }
    }
    out += encoded[i];
  }
  return out;
}

void validate_tag(std::string_view tag) {
  if (tag.empty()) throw Error("empty image tag");
  if (tag.starts_with('@'))
    throw Error("image tag '" + escape_for_log(tag) + "' starts with '@' (reserved for @sha256:…)");
  if (tag.find('\0') != std::string_view::npos) throw Error("image tag contains a NUL byte");
  store::validate_ref_name("oci/" + encode_tag(tag), "image tag");
}

void validate_new_tag(std::string_view tag) {
  validate_tag(tag);
  if (!is_valid_utf8(tag) || has_control_chars(tag))
    throw Error("image tag '" + escape_for_log(tag) +
                "' is not valid UTF-8 or holds control characters");
}

void for_each_stream_entry(const store::SplitStreamReader& reader, const std::string& what,
                           const std::function<void(const TarEntry&)>& fn, XattrMode mode) {
  if (reader.content_type() != store::kContentOciLayer)
    throw Error(what + " has content type " + store::content_type_name(reader.content_type()) +
                ", not ocilayer");
  // Sparse members larger than kTarInlineMax are inline tar bytes in the stream; their
  // expanded objects are named refs.
  std::function<void(const TarEntry&)> with_objects = [&](const TarEntry& e) {
    if (!e.sparse || !e.external()) return fn(e);
    const Digest* object = reader.find_named_ref(tar_sparse_ref(e));
    if (!object)
      throw Error(what + ": sparse member " + e.path + " has no object (named ref " +
                  tar_sparse_ref(e) + " missing)");
    TarEntry copy = e;
    copy.object = *object;
    fn(copy);
  };
  EntryCollector collector(with_objects);
  TarParser parser(collector, TarMode::read_back, what, mode);
  reader.for_each_chunk([&](std::span<const std::byte> d) { parser.feed(d); },
                        [&](const Digest& d) { parser.feed_external(d); });
  parser.finish();
}

void for_each_layer_entry(const store::Repository& repo, const std::string& diff_id,
                          const std::function<void(const TarEntry&)>& fn, XattrMode mode) {
  std::string name = "oci-layer-" + diff_id;
  store::SplitStreamReader reader = repo.open_stream(name);
  for_each_stream_entry(reader, repo.path() + ": stream " + name, fn, mode);
}

ImageIds write_images(store::Repository& repo, erofs::Tree& tree, bool bootable, XattrMode mode,
                      const std::vector<uint32_t>& versions) {
  ImageIds ids;
  TreeFileReader reader = [&](const erofs::Inode& i, const std::string&) {
    return read_tree_file(repo, i);
  };
  transform_tree(tree, TreeTransform{.oci = true, .xattrs = mode, .bootable = false}, reader);
  auto write = [&](FormatImages& out) {
    for (uint32_t version : versions) {
      store::ObjectWriter writer = repo.write_object();
      erofs::write_image(tree, writer, erofs::WriterOptions::for_erofs_version(version));
      Digest id = writer.commit();
      repo.link_image(id);
      out.emplace_back(version, id);
    }
  };
  write(ids.images);
  if (bootable) {
    transform_for_boot(tree, reader);
    write(ids.boot);
  }
  return ids;
}

StoredImage store_image(store::Repository& repo, const std::string& manifest,
                        const std::string& manifest_digest, const std::string& config,
                        const std::string& config_digest, const std::vector<std::string>& diff_ids,
                        const std::map<std::string, Digest>& layer_streams, const ImageIds& ids,
                        XattrMode mode) {
  StoredImage out;
  std::string config_id = "oci-config-" + config_digest;

  // The config's image refs: those an earlier pull stored (other formats, another xattr mode,
  // the boot images when this pull is not --bootable) stay, the ones written now replace
  // theirs. The default format goes in last, so it wins where V0 and V1 share a name.
  std::map<std::string, Digest> images;
  if (repo.resolve_stream(config_id)) {
    store::SplitStreamReader old = repo.open_stream(config_id);
    for (const store::NamedRef& ref : old.named_refs())
      if (is_image_ref_name(ref.name) && repo.has_object(ref.target)) images[ref.name] = ref.target;
  }
  for (bool bootable : {false, true}) {
    const FormatImages& written = bootable ? ids.boot : ids.images;
    for (auto it = written.rbegin(); it != written.rend(); ++it)
      images[image_ref_name(bootable, mode, it->first)] = it->second;
  }
  if (auto it = images.find(image_ref_name(false, mode, repo.erofs_version())); it != images.end())
    out.image_id = it->second;
  if (auto it = images.find(image_ref_name(true, mode, repo.erofs_version())); it != images.end())
    out.boot_image_id = it->second;

  store::SplitStreamWriter cw(repo.algorithm(), store::kContentOciConfig);
  Digest config_object =
      repo.ensure_object({reinterpret_cast<const std::byte*>(config.data()), config.size()});
  cw.write_external(config_object, config.size());
  for (const std::string& d : diff_ids) cw.add_named_ref(d, layer_streams.at(d));
  for (const auto& [name, id] : images) cw.add_named_ref(name, id);
  out.config_stream = repo.write_stream(cw, config_id);

  store::SplitStreamWriter mw(repo.algorithm(), store::kContentOciManifest);
  Digest manifest_object =
      repo.ensure_object({reinterpret_cast<const std::byte*>(manifest.data()), manifest.size()});
  mw.write_external(manifest_object, manifest.size());
  mw.add_named_ref("config:" + config_digest, out.config_stream);
  for (const std::string& d : diff_ids) mw.add_named_ref(d, layer_streams.at(d));
  out.manifest_stream = repo.write_stream(mw, "oci-manifest-" + manifest_digest);
  return out;
}

ImageSummary inspect(const store::Repository& repo, std::string_view name) {
  ImageRefs r = load(repo, name);
  ImageSummary s;
  s.tag = name.starts_with('@') ? std::string() : std::string(name);
  s.manifest_digest = digest_of_content_id(r.manifest_id, "oci-manifest-");
  s.config_digest = r.config_digest;
  // A listing shows what it can: a stored config with odd fields (written by another tool)
  // must not make every image unlistable; oci fsck reports it.
  auto shown = [&](const char* key) {
    auto it = r.config.is_object() ? r.config.find(key) : r.config.end();
    return it != r.config.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  s.architecture = shown("architecture");
  s.os = shown("os");
  if (r.manifest.contains("layers") && r.manifest["layers"].is_array())
    s.layers = static_cast<unsigned>(r.manifest["layers"].size());
  store::SplitStreamReader config_stream = repo.open_stream("oci-config-" + r.config_digest);
  if (const Digest* d = find_image_ref(repo, config_stream, false, XattrMode::allowlist_only))
    s.image_id = *d;
  if (const Digest* d = find_image_ref(repo, config_stream, true, XattrMode::allowlist_only))
    s.boot_image_id = *d;
  return s;
}

namespace {

std::vector<std::string> tag_names(const store::Repository& repo) {
  std::vector<std::string> tags;
  const std::string what = repo.path() + "/" + std::string(kTagDir);
  UniqueFd dir = store::detail::open_dir_if_exists(repo.dirfd(), std::string(kTagDir), what);
  if (!dir) return tags;
  store::detail::for_each_entry(dir.get(), what, [&](const std::string& name, unsigned char) {
    if (!name.starts_with('.')) tags.push_back(decode_tag(name));
  });
  std::sort(tags.begin(), tags.end());
  return tags;
}

}  // namespace

std::vector<ImageSummary> list_images(const store::Repository& repo) {
  std::vector<ImageSummary> out;
  for (const std::string& t : tag_names(repo)) out.push_back(inspect(repo, t));
  return out;
}

// Both return the stored bytes only after parsing them (bounded): callers such as
// 'oci inspect' embed them in their own JSON output as they are.
std::string manifest_json(const store::Repository& repo, std::string_view name) {
  std::string id = manifest_content_id(repo, name);
  std::string bytes = stream_bytes(repo, id);
  (void)parse(bytes, repo.path() + ": " + id);
  return bytes;
}

std::string config_json(const store::Repository& repo, std::string_view name) {
  std::string id = "oci-config-" + load(repo, name).config_digest;
  std::string bytes = stream_bytes(repo, id);
  (void)parse(bytes, repo.path() + ": " + id);
  return bytes;
}

void tag_image(store::Repository& repo, std::string_view target, std::string_view tag) {
  repo.require_writable();
  validate_new_tag(tag);
  std::string id;
  if (target.starts_with("sha256:"))
    id = manifest_content_id(repo, "@" + std::string(target));
  else
    id = manifest_content_id(repo, target);
  repo.set_stream_ref("oci/" + encode_tag(tag), id);
}

void untag_image(store::Repository& repo, std::string_view tag) {
  repo.require_writable();
  validate_tag(tag);
  std::string link = std::string(kTagDir) + "/" + encode_tag(tag);
  // Only a symlink is a tag: anything else at that name is not ours to remove.
  auto st = store::detail::lstat_at(repo.dirfd(), link, repo.path() + "/" + link);
  if (!st || !S_ISLNK(st->st_mode))
    throw Error(repo.path() + ": no image tagged '" + escape_for_log(tag) + "'");
  store::detail::unlink_at(repo.dirfd(), link, repo.path() + "/" + link);
}

Digest image_id(const store::Repository& repo, std::string_view name, bool bootable,
                XattrMode mode) {
  ImageRefs r = load(repo, name);
  store::SplitStreamReader config_stream = repo.open_stream("oci-config-" + r.config_digest);
  const Digest* d = find_image_ref(repo, config_stream, bootable, mode);
  if (!d) {
    std::string ref = image_ref_name(bootable, mode, repo.erofs_version());
    std::string flags = std::string(bootable ? " --bootable" : "") +
                        (mode == XattrMode::keep_user_xattrs ? " --xattrs keep-user-xattrs" : "");
    throw Error(repo.path() + ": image '" + escape_for_log(name) + "' has no " + ref +
                " (pull it again" + (flags.empty() ? "" : " with" + flags) + ")");
  }
  return *d;
}

Digest ensure_image(store::Repository& repo, std::string_view name, bool bootable, XattrMode mode,
                    std::optional<uint32_t> erofs_version) {
  ImageRefs r = load(repo, name);
  const uint32_t version = erofs_version.value_or(repo.erofs_version());
  {
    store::SplitStreamReader config_stream = repo.open_stream("oci-config-" + r.config_digest);
    const Digest* d = config_stream.find_named_ref(image_ref_name(bootable, mode, version));
    if (d && repo.has_object(*d)) return *d;
  }
  repo.require_writable();
  std::vector<std::string> diff_ids = diff_ids_of(r.config, r.config_digest);
  std::map<std::string, Digest> layer_streams;
  for (const std::string& d : diff_ids) {
    auto id = repo.resolve_stream("oci-layer-" + d);
    if (!id) throw Error(repo.path() + ": layer stream oci-layer-" + d + " is missing");
    layer_streams.emplace(d, *id);
  }
  erofs::Tree tree = merge_layers(repo, diff_ids, nullptr, mode);
  std::vector<uint32_t> versions =
      erofs_version ? std::vector<uint32_t>{*erofs_version} : repo.erofs_versions();
  ImageIds ids = write_images(repo, tree, bootable, mode, versions);
  (void)store_image(repo, stream_bytes(repo, r.manifest_id),
                    digest_of_content_id(r.manifest_id, "oci-manifest-"),
                    stream_bytes(repo, "oci-config-" + r.config_digest), r.config_digest, diff_ids,
                    layer_streams, ids, mode);
  return (bootable ? ids.boot : ids.images).front().second;
}

XattrMode parse_xattr_mode(std::string_view name) {
  if (name == "allowlist-only") return XattrMode::allowlist_only;
  if (name == "keep-user-xattrs") return XattrMode::keep_user_xattrs;
  throw Error("unknown xattr mode '" + escape_for_log(name) +
              "' (expected allowlist-only or keep-user-xattrs)");
}

erofs::Tree image_tree(const store::Repository& repo, std::string_view name, bool bootable,
                       XattrMode mode) {
  ImageRefs r = load(repo, name);
  erofs::Tree tree = merge_layers(repo, diff_ids_of(r.config, r.config_digest), nullptr, mode);
  transform_tree(
      tree, TreeTransform{.oci = true, .xattrs = mode, .bootable = bootable},
      [&](const erofs::Inode& i, const std::string&) { return read_tree_file(repo, i); });
  return tree;
}

namespace {

// The OCI-level checks of one image. Each failure is one error of its kind in the report; a
// failure that leaves nothing further to check ends the image's check.
class ImageCheck {
 public:
  ImageCheck(const store::Repository& repo, const std::string& name, OciFsckReport& report)
      : repo_(repo), name_(name), report_(report) {}

  void run(bool metadata_only) {
    if (!check_manifest() || !check_config()) return;
    store::SplitStreamReader cs = repo_.open_stream("oci-config-" + config_digest_);
    for (const std::string& d : diff_ids_) check_layer(cs, d, metadata_only);
    check_chunked_annotations();
    check_image_refs(cs);
  }

 private:
  void error(const std::string& kind, const std::string& detail) {
    report_.errors.push_back(kind + ": " + escape_for_log(name_) + ": " + detail);
  }
  // Runs fn; a cfs::Error it throws is reported as kind. False if it threw.
  template <typename Fn>
  bool attempt(const std::string& kind, Fn&& fn) {
    try {
      fn();
      return true;
    } catch (const Error& e) {
      error(kind, e.what());
      return false;
    }
  }

  // The manifest stream: present, hashing to its digest, naming a config digest.
  bool check_manifest() {
    if (!attempt("manifest-missing", [&] { manifest_id_ = manifest_content_id(repo_, name_); }))
      return false;
    std::string manifest_digest = digest_of_content_id(manifest_id_, "oci-manifest-");
    std::string manifest;
    if (!attempt("manifest-unreadable", [&] { manifest = stream_bytes(repo_, manifest_id_); }))
      return false;
    if (sha256_digest(manifest) != manifest_digest)
      error("manifest-digest-mismatch", "stored manifest hashes to " + sha256_digest(manifest));
    return attempt("manifest-invalid", [&] {
      manifest_ = parse(manifest, manifest_id_);
      config_digest_ = config_digest_of(manifest_, manifest_id_);
    });
  }

  // The config stream: named by the manifest stream, hashing to its digest, with one diff_id
  // per manifest layer.
  bool check_config() {
    store::SplitStreamReader ms = repo_.open_stream(manifest_id_);
    const Digest* config_ref = ms.find_named_ref("config:" + config_digest_);
    auto config_stream = repo_.resolve_stream("oci-config-" + config_digest_);
    if (!config_ref)
      error("config-ref-missing", manifest_id_ + " has no named ref config:" + config_digest_);
    if (!config_stream) {
      error("config-stream-missing", "oci-config-" + config_digest_);
      return false;
    }
    if (config_ref && *config_ref != *config_stream)
      error("config-ref-mismatch",
            "manifest names another config stream than oci-config-" + config_digest_);
    std::string config;
    if (!attempt("config-unreadable",
                 [&] { config = stream_bytes(repo_, "oci-config-" + config_digest_); }))
      return false;
    if (sha256_digest(config) != config_digest_)
      error("config-digest-mismatch", "stored config hashes to " + sha256_digest(config));
    if (!attempt("config-invalid",
                 [&] { diff_ids_ = diff_ids_of(parse(config, config_digest_), config_digest_); }))
      return false;
    size_t layers = manifest_.contains("layers") && manifest_["layers"].is_array()
                        ? manifest_["layers"].size()
                        : 0;
    if (layers != diff_ids_.size())
      error("layer-count-mismatch",
            std::to_string(layers) + " layers, " + std::to_string(diff_ids_.size()) + " diff_ids");
    return true;
  }

  // A layer stream: present, named by the config stream and (unless metadata_only)
  // re-exporting the tar its diff_id names.
  void check_layer(const store::SplitStreamReader& cs, const std::string& d, bool metadata_only) {
    auto layer = repo_.resolve_stream("oci-layer-" + d);
    if (!layer) {
      error("layer-stream-missing", "oci-layer-" + d);
      return;
    }
    const Digest* ref = cs.find_named_ref(d);
    if (!ref || *ref != *layer)
      error("layer-ref-mismatch", "config stream does not name oci-layer-" + d);
    if (metadata_only) return;
    attempt("layer-object-missing", [&] {
      Sha256 h;
      struct HashSink : OutputSink {
        Sha256* h;
        using OutputSink::write;
        void write(std::span<const std::byte> data) override { h->update(data); }
      } sink;
      sink.h = &h;
      repo_.cat_stream("oci-layer-" + d, sink);
      std::string actual = h.finish();
      if (actual != d) error("layer-diff-id-mismatch", "oci-layer-" + d + " hashes to " + actual);
    });
  }

  // zstd:chunked layers: the annotations a partial pull trusted parse (the TOC digest and
  // position; the content they vouched for is re-checked through the diff_id above).
  void check_chunked_annotations() {
    if (!manifest_.contains("layers") || !manifest_["layers"].is_array()) return;
    for (const json& l : manifest_["layers"]) {
      if (!l.is_object()) continue;
      Descriptor d{
          json_string(l, "mediaType", "", manifest_id_),
          json_string(l, "digest", "", manifest_id_),
          l.contains("size") && l["size"].is_number_unsigned() ? l["size"].get<uint64_t>() : 0,
          {}};
      if (auto a = l.find("annotations"); a != l.end() && a->is_object())
        for (const auto& [k, v] : a->items())
          if (v.is_string()) d.annotations.emplace(k, v.get<std::string>());
      attempt("chunked-annotation-invalid",
              [&] { (void)chunked_toc_of(d, manifest_id_ + ": layer " + d.digest); });
    }
  }

  // The config stream names a (plain) EROFS image, of any format, and every EROFS image it
  // names is present.
  void check_image_refs(const store::SplitStreamReader& cs) {
    bool plain = false;
    for (const store::NamedRef& ref : cs.named_refs()) {
      if (!is_image_ref_name(ref.name)) continue;
      const bool boot = is_boot_image_ref_name(ref.name);
      plain = plain || !boot;
      if (!repo_.has_object(ref.target))
        error("image-object-missing", std::string(boot ? "boot " : "") + "EROFS image " +
                                          ref.target.hex() + " (" + ref.name + ")");
    }
    if (!plain)
      error("image-ref-missing",
            "config stream has no " + std::string(kImageRef) + " or " + std::string(kImageRefV1));
  }

  const store::Repository& repo_;
  const std::string& name_;
  OciFsckReport& report_;
  std::string manifest_id_;
  json manifest_;
  std::string config_digest_;
  std::vector<std::string> diff_ids_;
};

}  // namespace

OciFsckReport fsck_images(const store::Repository& repo, std::optional<std::string_view> name,
                          bool metadata_only) {
  OciFsckReport report;
  std::vector<std::string> names;
  if (name) {
    names.emplace_back(*name);
  } else {
    // Names only: a damaged image is one error in the report, not the end of the check.
    names = tag_names(repo);
  }
  for (const std::string& n : names) {
    ++report.images_checked;
    ImageCheck(repo, n, report).run(metadata_only);
  }
  if (!name && !metadata_only) {
    content_index::CheckResult index = content_index::check(repo);
    report.content_index_entries = index.entries;
    report.content_index_stale = index.stale;
    report.errors.insert(report.errors.end(), index.errors.begin(), index.errors.end());
    estargz_tails::CheckResult tails = estargz_tails::check(repo);
    report.estargz_tails = tails.entries;
    report.errors.insert(report.errors.end(), tails.errors.begin(), tails.errors.end());
  }
  return report;
}

CachePruneResult prune_caches(const store::Repository& repo,
                              const std::function<bool(const Digest&)>& kept, bool dry_run) {
  CachePruneResult result;
  std::vector<std::string> survivors;
  result.content_index_entries = content_index::prune(repo, kept, dry_run, survivors);
  // A tail is used only for a file whose content the index maps to an object (estargz.cc),
  // and only for its last chunk. With one chunk (every file under the writer's chunk size,
  // 4 MiB by default) the chunk's sha256 is the content's, so such a tail lives exactly as
  // long as its file's index entry. The last chunk of a longer file names no object: its
  // tail goes at every gc and the next pull fetches that one member again.
  std::unordered_set<std::string> live(survivors.begin(), survivors.end());
  result.estargz_tails = estargz_tails::prune(
      repo, [&live](std::string_view hex) { return live.contains(std::string(hex)); }, dry_run);
  return result;
}

}  // namespace cfs::oci
