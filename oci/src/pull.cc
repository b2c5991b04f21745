// OCI pull: layers imported in parallel (decompressed by libarchive's filters, split into
// splitstreams while both the compressed digest and the diff_id are hashed), merged into a
// tree, written as an EROFS image, then the layer, config and manifest streams and the tag.
#include <archive.h>
#include <archive_entry.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <exception>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "cfs/erofs/writer.h"
#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fd.h"
#include "cfs/oci/oci.h"
#include "cfs/oci/source.h"
#include "cfs/oci/tar.h"
#include "cfs/store/images.h"
#include "cfs/store/refs.h"
#include "chunked.h"
#include "content_index.h"
#include "estargz_tails.h"
#include "internal.h"
#include "util.h"

namespace cfs::oci {

namespace {

using nlohmann::json;

constexpr size_t kReadBuffer = 1 << 20;

bool is_tar_layer(std::string_view media_type) {
  static const std::set<std::string_view> kTypes = {
      "application/vnd.oci.image.layer.v1.tar",
      "application/vnd.oci.image.layer.v1.tar+gzip",
      "application/vnd.oci.image.layer.v1.tar+zstd",
      "application/vnd.oci.image.layer.nondistributable.v1.tar",
      "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
      "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
      "application/vnd.docker.image.rootfs.diff.tar",
      "application/vnd.docker.image.rootfs.diff.tar.gzip",
      "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
  };
  return kTypes.contains(media_type);
}

struct ParsedImage {
  std::string manifest;
  std::string manifest_digest;
  Descriptor config;
  std::vector<Descriptor> layers;
};

ParsedImage parse_manifest(std::string bytes, const std::string& what) {
  ParsedImage img;
  img.manifest_digest = sha256_digest(bytes);
  json m = store::parse_json_bounded(bytes, what + ": manifest");
  std::string mt = json_string(m, "mediaType", "", what);
  if (!m.is_object() || (mt != "" && mt != "application/vnd.oci.image.manifest.v1+json" &&
                         mt != "application/vnd.docker.distribution.manifest.v2+json"))
    throw Error(what + ": not an image manifest (mediaType '" + escape_for_log(mt) + "')");
  if (!m.contains("config") || !m.contains("layers") || !m["layers"].is_array())
    throw Error(what + ": manifest without config and layers");
  auto descriptor = [&](const json& j) {
    if (!j.is_object() || !j.contains("digest") || !j["digest"].is_string() ||
        !j.contains("size") || !j["size"].is_number_unsigned())
      throw Error(what + ": manifest descriptor without digest and size");
    Descriptor d{json_string(j, "mediaType", "", what),
                 j["digest"].get<std::string>(),
                 j["size"].get<uint64_t>(),
                 {}};
    if (auto a = j.find("annotations"); a != j.end() && a->is_object())
      for (const auto& [k, v] : a->items())
        if (v.is_string()) d.annotations.emplace(k, v.get<std::string>());
    validate_oci_digest(d.digest, what);
    return d;
  };
  img.config = descriptor(m["config"]);
  for (const json& l : m["layers"]) {
    Descriptor d = descriptor(l);
    if (!is_tar_layer(d.media_type))
      throw Error(what + ": layer " + d.digest + " has media type '" +
                  escape_for_log(d.media_type) + "', not a tar layer");
    img.layers.push_back(std::move(d));
  }
  img.manifest = std::move(bytes);
  return img;
}

std::string read_config(ImageSource& source, const Descriptor& d) {
  constexpr uint64_t kMax = 16u << 20;
  if (d.size > kMax) throw Error(source.name() + ": config " + d.digest + " is too large");
  auto reader = source.open_blob(d);
  std::string data;
  std::byte buf[65536];
  while (size_t n = reader->read(buf)) {
    data.append(reinterpret_cast<const char*>(buf), n);
    if (data.size() > kMax) throw Error(source.name() + ": config " + d.digest + " is too large");
  }
  source.finish_blob(*reader);
  if (data.size() != d.size || sha256_digest(data) != d.digest)
    throw Error(source.name() + ": config blob " + d.digest + " does not match its digest/size (" +
                std::to_string(data.size()) + " bytes, " + sha256_digest(data) + ")");
  return data;
}

std::vector<std::string> config_diff_ids(std::string_view config, const std::string& what) {
  json c = store::parse_json_bounded(config, what + ": config");
  std::vector<std::string> out;
  if (!c.is_object() || !c.contains("rootfs") || !c["rootfs"].is_object() ||
      !c["rootfs"].contains("diff_ids") || !c["rootfs"]["diff_ids"].is_array())
    throw Error(what + ": config has no rootfs.diff_ids");
  // The platform fields are strings in every image spec; anything else is refused here rather
  // than stored and stumbled over by every later listing.
  for (const char* key : {"architecture", "os", "variant"})
    (void)json_string(c, key, "", what + ": config");
  for (const json& d : c["rootfs"]["diff_ids"]) {
    if (!d.is_string()) throw Error(what + ": rootfs.diff_ids holds a non-string");
    out.push_back(d.get<std::string>());
    validate_oci_digest(out.back(), what + ": diff_id");
  }
  return out;
}

// Splits one layer: tar headers and small contents inline, large regular files as objects.
class LayerSplitter : public TarHandler {
 public:
  // index_content: also hash every object's content with sha256 for the content index
  // (zstd:chunked layers, whose TOCs name files by that hash).
  LayerSplitter(store::Repository& repo, store::SplitStreamWriter& writer,
                bool index_content = false)
      : repo_(repo), writer_(writer), index_content_(index_content) {}
  void inline_bytes(std::span<const std::byte> data) override { writer_.write_inline(data); }
  void external_begin(const TarEntry&) override {
    object_.emplace(repo_.write_object());
    if (index_content_) content_hash_.emplace();
  }
  void external_bytes(std::span<const std::byte> data) override {
    object_->write(data);
    if (content_hash_) content_hash_->update(data);
  }
  void external_zeros(uint64_t n) override {
    object_->write_zeros(n);
    static constexpr std::byte kZeros[4096] = {};
    for (uint64_t left = n; content_hash_ && left > 0;) {
      size_t k = static_cast<size_t>(std::min<uint64_t>(left, sizeof kZeros));
      content_hash_->update(std::span(kZeros, k));
      left -= k;
    }
  }
  void external_end() override {
    last_object_ = object_->commit();
    object_.reset();
    if (content_hash_) {
      indexed.emplace_back(content_hash_->finish(), last_object_);
      content_hash_.reset();
    }
  }
  // Called after the content was streamed into its object and before the padding that
  // follows it, so the external chunk sits exactly where the content was in the tar.
  // A sparse member's tar bytes went inline; its expanded object is a named ref instead.
  void entry(TarEntry& e) override {
    if (e.external()) {
      if (e.sparse)
        writer_.add_named_ref(tar_sparse_ref(e), last_object_);
      else
        writer_.write_external(last_object_, e.size);
      object_bytes += e.size;
    }
  }
  uint64_t object_bytes = 0;
  // (content sha256, object) of every object written, with index_content.
  std::vector<std::pair<std::string, Digest>> indexed;

 private:
  store::Repository& repo_;
  store::SplitStreamWriter& writer_;
  bool index_content_;
  std::optional<store::ObjectWriter> object_;
  std::optional<Sha256> content_hash_;
  Digest last_object_;
};

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_read_free(a); }
};

struct ReadContext {
  BlobReader* reader;
  Sha256 compressed;
  uint64_t bytes = 0;
  std::vector<std::byte> buf = std::vector<std::byte>(kReadBuffer);
  std::function<void(uint64_t)> on_bytes;
  std::atomic<bool>* cancel;
  std::exception_ptr error;
};

la_ssize_t archive_read_cb(archive*, void* opaque, const void** out) {
  auto* ctx = static_cast<ReadContext*>(opaque);
  try {
    if (ctx->cancel && ctx->cancel->load()) throw Error("cancelled");
    size_t n = ctx->reader->read(ctx->buf);
    ctx->compressed.update(std::span(ctx->buf).first(n));
    ctx->bytes += n;
    if (ctx->on_bytes && n) ctx->on_bytes(n);
    *out = ctx->buf.data();
    return static_cast<la_ssize_t>(n);
  } catch (...) {
    ctx->error = std::current_exception();
    return -1;
  }
}

// The entries are not kept: the merge reads them back from the stream object, so a layer
// of a million small files costs its compressed stream, not a million parsed entries.
struct ImportedLayer {
  Digest stream;  // the layer splitstream, stored as an object but not named yet
  uint64_t bytes_read = 0;
  uint64_t object_bytes = 0;
  bool partial = false;  // a zstd:chunked layer read through its TOC
  uint64_t bytes_reused = 0;
  uint64_t files_reused = 0;
  uint64_t tails_rebuilt = 0;
  uint64_t tails_refused = 0;
};

void check_diff_id(Sha256& uncompressed, const std::string& diff_id, const std::string& what) {
  std::string actual_diff = uncompressed.finish();
  if (actual_diff != diff_id)
    throw Error(what + ": uncompressed digest is " + actual_diff + ", the config's diff_id says " +
                diff_id + " (corrupt or tampered)");
}

// A zstd:chunked layer through its TOC (chunked.h): only what the repository lacks is
// fetched, the tar is rebuilt byte for byte and split exactly as a full import splits it, and
// its diff_id is checked as a full import checks it. nullopt when the source cannot serve
// byte ranges.
std::optional<ImportedLayer> import_chunked_layer(store::Repository& repo, ImageSource& source,
                                                  const Descriptor& blob, const ChunkedToc& toc,
                                                  const std::string& diff_id, XattrMode xattrs,
                                                  std::atomic<bool>& cancel,
                                                  const std::function<void(uint64_t)>& on_bytes) {
  std::string what = source.name() + ": layer " + blob.digest;
  auto reader = ChunkedLayerReader::open(repo, source, blob, toc, what, on_bytes, &cancel);
  if (!reader) return std::nullopt;
  store::SplitStreamWriter stream(repo.algorithm(), store::kContentOciLayer);
  LayerSplitter splitter(repo, stream, true);
  TarParser parser(splitter, TarMode::split, what, xattrs);
  Sha256 uncompressed;
  try {
    reader->run([&](std::span<const std::byte> data) {
      uncompressed.update(data);
      parser.feed(data);
    });
  } catch (...) {
    // The objects completed so far each passed their TOC digest check and were hashed by the
    // splitter: indexing them lets the next attempt (say, once the registry is back) fetch
    // only what this one did not get. Nothing is named, so gc may take them meanwhile. The
    // eStargz tails fetched so far are recorded too: each is checked against its member's
    // gzip trailer before any use, and the diff_id stays the gate.
    try {
      repo.sync();
      content_index::record(repo, splitter.indexed);
      estargz_tails::record(repo, reader->tails());
    } catch (...) {
    }
    throw;
  }
  parser.finish();
  check_diff_id(uncompressed, diff_id, what);
  ImportedLayer out;
  out.stream = repo.write_stream_object(stream);
  repo.sync();
  content_index::record(repo, splitter.indexed);
  estargz_tails::record(repo, reader->tails());
  out.bytes_read = reader->stats().fetched;
  out.object_bytes = splitter.object_bytes;
  out.partial = true;
  out.bytes_reused = reader->stats().bytes_reused;
  out.files_reused = reader->stats().files_reused;
  out.tails_rebuilt = reader->stats().tails_rebuilt;
  out.tails_refused = reader->stats().tails_refused;
  return out;
}

ImportedLayer import_layer(store::Repository& repo, ImageSource& source, const Descriptor& blob,
                           const std::string& diff_id, XattrMode xattrs, bool partial,
                           std::atomic<bool>& cancel,
                           const std::function<void(uint64_t)>& on_bytes) {
  std::string what = source.name() + ": layer " + blob.digest;
  std::optional<ChunkedToc> toc = chunked_toc_of(blob, what);
  if (toc && partial)
    if (auto layer =
            import_chunked_layer(repo, source, blob, *toc, diff_id, xattrs, cancel, on_bytes))
      return *layer;
  ImportedLayer out;
  store::SplitStreamWriter stream(repo.algorithm(), store::kContentOciLayer);
  auto reader = source.open_blob(blob);
  ReadContext ctx{reader.get(), {}, 0, std::vector<std::byte>(kReadBuffer), on_bytes, &cancel, {}};

  std::unique_ptr<archive, ArchiveDeleter> a(archive_read_new());
  support_in_process_filters(a.get(), what);
  archive_read_support_format_raw(a.get());
  auto check = [&](int r, const char* step) {
    if (r >= ARCHIVE_WARN) return;
    if (ctx.error) std::rethrow_exception(ctx.error);
    const char* msg = archive_error_string(a.get());
    throw Error(what + ": " + step + ": " + (msg ? msg : "decompression failed"));
  };

  Sha256 uncompressed;
  LayerSplitter splitter(repo, stream, toc.has_value());
  TarParser parser(splitter, TarMode::split, what, xattrs);
  check(archive_read_open(a.get(), &ctx, nullptr, archive_read_cb, nullptr), "open");
  archive_entry* entry = nullptr;
  int r = archive_read_next_header(a.get(), &entry);
  if (r != ARCHIVE_EOF) {
    check(r, "read");
    std::vector<std::byte> buf(kReadBuffer);
    for (;;) {
      la_ssize_t n = archive_read_data(a.get(), buf.data(), buf.size());
      if (n == 0) break;
      if (n < 0) check(static_cast<int>(n), "decompress");
      auto piece = std::span(buf).first(static_cast<size_t>(n));
      uncompressed.update(piece);
      parser.feed(piece);
    }
  }
  parser.finish();
  // Bytes after the end of the compressed stream still belong to the blob's digest.
  for (;;) {
    size_t n = reader->read(ctx.buf);
    if (n == 0) break;
    ctx.compressed.update(std::span(ctx.buf).first(n));
    ctx.bytes += n;
    if (on_bytes) on_bytes(n);
  }
  source.finish_blob(*reader);
  std::string actual = ctx.compressed.finish();
  if (ctx.bytes != blob.size)
    throw Error(what + ": blob has " + std::to_string(ctx.bytes) + " bytes, the manifest says " +
                std::to_string(blob.size) + " (truncated or corrupt)");
  if (actual != blob.digest)
    throw Error(what + ": blob digest is " + actual + ", the manifest says " + blob.digest +
                " (corrupt or tampered)");
  check_diff_id(uncompressed, diff_id, what);
  out.stream = repo.write_stream_object(stream);
  repo.sync();
  content_index::record(repo, splitter.indexed);
  out.bytes_read = ctx.bytes;
  out.object_bytes = splitter.object_bytes;
  return out;
}

}  // namespace

Digest import_layer(store::Repository& repo, int fd, std::string_view diff_id,
                    std::optional<std::string_view> ref, const std::string& what) {
  validate_oci_digest(diff_id, what + ": diff_id");
  if (ref) store::validate_ref_name(*ref, "layer ref");
  const std::string content_id = "oci-layer-" + std::string(diff_id);
  if (std::optional<Digest> existing = repo.resolve_stream(content_id)) {
    if (ref) repo.set_stream_ref(*ref, content_id);
    return *existing;
  }
  repo.require_writable();
  store::SplitStreamWriter stream(repo.algorithm(), store::kContentOciLayer);
  LayerSplitter splitter(repo, stream);
  // The tar bytes go into the stream unchanged whatever the mode; as in a pull, the parse
  // keeps only the xattrs an image can use.
  TarParser parser(splitter, TarMode::split, what, XattrMode::keep_user_xattrs);
  Sha256 uncompressed;
  std::vector<std::byte> buf(kReadBuffer);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(what + ": reading");
    }
    if (n == 0) break;
    auto piece = std::span(buf).first(static_cast<size_t>(n));
    uncompressed.update(piece);
    parser.feed(piece);
  }
  parser.finish();
  std::string actual = uncompressed.finish();
  if (actual != diff_id)
    throw Error(what + ": the tar's sha256 is " + actual + ", not the diff_id " +
                std::string(diff_id) + " it is to be stored as");
  Digest id = repo.write_stream_object(stream);
  repo.sync();
  repo.link_stream(id, content_id, ref);
  return id;
}

std::string image_ref_name(bool bootable, XattrMode mode, uint32_t erofs_version) {
  if (erofs_version > store::kMaxErofsVersion)
    throw Error("EROFS format " + std::to_string(erofs_version) + " is not supported (0, 1 or 2)");
  const bool v2 = erofs_version == 2;
  std::string name(bootable ? (v2 ? kBootImageRef : kBootImageRefV1)
                            : (v2 ? kImageRef : kImageRefV1));
  if (mode == XattrMode::keep_user_xattrs) name += ".xattrs=keep-user-xattrs";
  return name;
}

erofs::Tree merge_layers(const store::Repository& repo, const std::vector<std::string>& diff_ids,
                         const std::map<std::string, Digest>* imported, XattrMode mode) {
  erofs::Tree tree;
  LayerMerger merger(tree);
  for (const std::string& diff_id : diff_ids) {
    std::string what = "layer " + diff_id;
    auto apply = [&](const TarEntry& e) { merger.apply(e, what); };
    if (imported) {
      auto it = imported->find(diff_id);
      if (it != imported->end()) {
        UniqueFd fd = repo.open_object(it->second);
        store::SplitStreamReader reader = store::SplitStreamReader::from_fd(
            fd.get(), repo.algorithm(), repo.path() + ": new stream of " + what);
        for_each_stream_entry(reader, repo.path() + ": new stream of " + what, apply, mode);
        continue;
      }
    }
    for_each_layer_entry(repo, diff_id, apply, mode);
  }
  merger.finish();
  return tree;
}

namespace {

// The manifest, config and diff_ids of the image a source offers, checked against each other.
struct SourceImage {
  ParsedImage parsed;
  std::string config;
  std::vector<std::string> diff_ids;
};

SourceImage read_source_image(ImageSource& source) {
  SourceImage image{parse_manifest(source.manifest(), source.name()), {}, {}};
  image.config = read_config(source, image.parsed.config);
  image.diff_ids = config_diff_ids(image.config, source.name());
  if (image.diff_ids.size() != image.parsed.layers.size())
    throw Error(source.name() + ": the config lists " + std::to_string(image.diff_ids.size()) +
                " diff_ids for " + std::to_string(image.parsed.layers.size()) + " layers");
  return image;
}

// PullProgress shared by the import threads; the callback never runs concurrently.
class ProgressReporter {
 public:
  ProgressReporter(const PullOptions& options, unsigned layers) : callback_(options.progress) {
    progress_.layers_total = layers;
  }
  template <typename Update>
  void report(Update&& update) {
    std::lock_guard lock(mutex_);
    update(progress_);
    if (callback_) callback_(progress_);
  }

 private:
  const std::function<void(const PullProgress&)>& callback_;
  std::mutex mutex_;
  PullProgress progress_;
};

// The layers to import (each distinct diff_id not yet in the repository, once), largest
// first so that the longest import starts at once.
std::vector<size_t> plan_imports(const store::Repository& repo, const SourceImage& image,
                                 ProgressReporter& reporter) {
  const auto& layers = image.parsed.layers;
  const auto& diff_ids = image.diff_ids;
  std::vector<size_t> jobs;
  std::set<std::string> scheduled;
  for (size_t i = 0; i < layers.size(); ++i) {
    if (repo.resolve_stream("oci-layer-" + diff_ids[i])) {
      reporter.report([&](PullProgress& p) {
        ++p.layers_done;
        ++p.layers_reused;
        p.message = "layer " + diff_ids[i] + " already present";
      });
      continue;
    }
    if (!scheduled.insert(diff_ids[i]).second) {
      reporter.report([&](PullProgress& p) { ++p.layers_done; });
      continue;
    }
    jobs.push_back(i);
    reporter.report([&](PullProgress& p) { p.bytes_total += layers[i].size; });
  }
  std::sort(jobs.begin(), jobs.end(),
            [&](size_t a, size_t b) { return layers[a].size > layers[b].size; });
  return jobs;
}

// Rethrows the error of the first failing layer in manifest order; "cancelled" errors of
// other layers are consequences, not causes.
void rethrow_first_error(const std::vector<std::exception_ptr>& errors) {
  for (const auto& e : errors) {
    if (!e) continue;
    try {
      std::rethrow_exception(e);
    } catch (const Error& err) {
      if (std::string_view(err.what()) != "cancelled") throw;
    }
  }
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

// Imports the planned layers on a pool of threads, each with its own repository handle; the
// first failure cancels the others. Indexed like the manifest's layers.
std::vector<std::optional<ImportedLayer>> import_layers(
    const store::Repository& repo, ImageSource& source, const SourceImage& image,
    const std::vector<size_t>& jobs, const PullOptions& options, ProgressReporter& reporter) {
  const auto& layers = image.parsed.layers;
  const auto& diff_ids = image.diff_ids;
  std::vector<std::optional<ImportedLayer>> imported(layers.size());
  std::vector<std::exception_ptr> errors(layers.size());
  std::atomic<size_t> next{0};
  std::atomic<bool> cancel{false};
  unsigned threads = options.threads ? options.threads : std::thread::hardware_concurrency();
  threads = std::max(1u, std::min<unsigned>(threads, static_cast<unsigned>(jobs.size())));
  auto worker = [&] {
    std::optional<store::Repository> own;
    try {
      own.emplace(store::Repository::open(repo.path()));
    } catch (...) {
      errors[jobs.empty() ? 0 : jobs[0]] = std::current_exception();
      cancel = true;
      return;
    }
    for (;;) {
      size_t k = next.fetch_add(1);
      if (k >= jobs.size() || cancel) return;
      size_t i = jobs[k];
      try {
        imported[i] = import_layer(*own, source, layers[i], diff_ids[i], options.xattrs,
                                   options.partial, cancel, [&](uint64_t n) {
                                     reporter.report([&](PullProgress& p) {
                                       p.bytes_done += n;
                                       p.message.clear();
                                     });
                                   });
        reporter.report([&](PullProgress& p) {
          ++p.layers_done;
          p.message = "layer " + diff_ids[i] + " imported";
        });
      } catch (...) {
        errors[i] = std::current_exception();
        cancel = true;
        return;
      }
    }
  };
  if (!jobs.empty()) {
    std::vector<std::jthread> pool;
    for (unsigned t = 1; t < threads; ++t) pool.emplace_back(worker);
    worker();
  }
  rethrow_first_error(errors);
  return imported;
}

// Names the imported layer streams oci-layer-<diff_id>; returns every layer's stream, the
// ones already present included.
std::map<std::string, Digest> name_layer_streams(
    store::Repository& repo, const std::vector<std::string>& diff_ids,
    const std::vector<std::optional<ImportedLayer>>& imported) {
  std::map<std::string, Digest> layer_streams;
  for (size_t i = 0; i < imported.size(); ++i) {
    if (!imported[i]) continue;
    repo.link_stream(imported[i]->stream, "oci-layer-" + diff_ids[i]);
    layer_streams[diff_ids[i]] = imported[i]->stream;
  }
  for (const std::string& d : diff_ids) {
    if (layer_streams.contains(d)) continue;
    auto id = repo.resolve_stream("oci-layer-" + d);
    if (!id) throw Error("layer stream oci-layer-" + d + " vanished during the pull");
    layer_streams[d] = *id;
  }
  return layer_streams;
}

}  // namespace

SourceLayers read_source_layers(ImageSource& source) {
  SourceImage image = read_source_image(source);
  return {image.parsed.manifest_digest, image.parsed.layers, image.diff_ids};
}

PullResult pull(store::Repository& repo, std::string_view source_spec,
                std::optional<std::string> tag, const PullOptions& options) {
  repo.require_writable();
  std::unique_ptr<ImageSource> source = open_source(source_spec, options.registry);
  PullResult result;
  result.tag = tag.value_or(source->name());
  validate_new_tag(result.tag);

  SourceImage image = read_source_image(*source);
  const ParsedImage& img = image.parsed;
  const std::vector<std::string>& diff_ids = image.diff_ids;
  result.manifest_digest = img.manifest_digest;
  if (options.expect_manifest_digest && *options.expect_manifest_digest != img.manifest_digest)
    throw Error(source->name() + ": the manifest is now " + img.manifest_digest + ", not " +
                *options.expect_manifest_digest + " (the image changed during the pull)");
  result.config_digest = img.config.digest;
  result.layers = static_cast<unsigned>(img.layers.size());

  ProgressReporter reporter(options, result.layers);
  std::vector<size_t> jobs = plan_imports(repo, image, reporter);
  std::vector<std::optional<ImportedLayer>> imported =
      import_layers(repo, *source, image, jobs, options, reporter);

  std::map<std::string, Digest> new_streams;
  for (size_t i = 0; i < imported.size(); ++i) {
    if (!imported[i]) continue;
    result.bytes_read += imported[i]->bytes_read;
    result.objects_bytes += imported[i]->object_bytes;
    if (imported[i]->partial) {
      ++result.layers_partial;
      result.bytes_reused += imported[i]->bytes_reused;
      result.files_reused += imported[i]->files_reused;
      result.tails_rebuilt += imported[i]->tails_rebuilt;
      result.tails_refused += imported[i]->tails_refused;
    }
    ++result.layers_imported;
    new_streams[diff_ids[i]] = imported[i]->stream;
  }

  // Everything is verified; merging can still refuse a hostile layer before anything is
  // named.
  erofs::Tree tree = merge_layers(repo, diff_ids, &new_streams, options.xattrs);
  ImageIds ids = write_images(repo, tree, options.bootable, options.xattrs, repo.erofs_versions());

  std::map<std::string, Digest> layer_streams = name_layer_streams(repo, diff_ids, imported);
  StoredImage stored = store_image(repo, img.manifest, img.manifest_digest, image.config,
                                   img.config.digest, diff_ids, layer_streams, ids, options.xattrs);
  repo.set_stream_ref("oci/" + encode_tag(result.tag), "oci-manifest-" + img.manifest_digest);
  result.manifest_stream = stored.manifest_stream;
  result.config_stream = stored.config_stream;
  result.image_id = *stored.image_id;
  result.boot_image_id = stored.boot_image_id;
  result.images = ids.images;
  result.boot_images = ids.boot;
  return result;
}

}  // namespace cfs::oci
