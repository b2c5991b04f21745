// OCI commands: cfsctl --repo DIR oci
// pull|images|inspect|tag|untag|image-id|mount|prepare-boot|fsck.
// Thin wrappers over cfs_oci; every rule lives in the library.
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cfs/erofs/dumpfile.h"
#include "cfs/erofs/writer.h"
#include "cfs/error.h"
#include "cfs/oci/boot.h"
#include "cfs/oci/oci.h"
#include "cfs/output.h"
#include "cfs/store/fsck.h"
#include "cfs/store/repository.h"
#include "cfsctl/build_config.h"
#include "commands.h"
#include "json_out.h"
#include "mount_programs.h"
#if CFS_WITH_FUSE
#include "lazy_pull.h"
#endif
#include "rs_dump.h"

namespace cfs::cli {

namespace {

std::string human_bytes(uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

// --xattrs: which xattrs the composefs images keep (composefs-rs' modes).
void add_xattrs_option(CLI::App* cmd, std::string& mode, const std::string& what) {
  cmd->add_option("--xattrs", mode,
                  what + ": allowlist-only (security.capability) or keep-user-xattrs (also user.*)")
      ->check(CLI::IsMember({"allowlist-only", "keep-user-xattrs"}))
      ->capture_default_str();
}

// The OCI subcommand `name`: run gets its arguments and the repository --repo names, opened.
template <class Args>
std::pair<CLI::App*, Args*> add_oci_command(CLI::App& oci_cmd, const GlobalOptions& global,
                                            const std::string& name, std::string description,
                                            void (*run)(store::Repository&, const Args&)) {
  return add_command<Args>(oci_cmd, global, name, std::move(description),
                           [run, name](const Args& args, const GlobalOptions& g) {
                             store::Repository repo = open_repo(g, "oci " + name);
                             run(repo, args);
                           });
}

// ---- pull ------------------------------------------------------------------------------

struct PullArgs {
  std::string source;
  std::string tag;
  std::string xattrs = "allowlist-only";
  bool bootable = false;
  bool quiet = false;
  unsigned threads = 0;
  // docker:// (the registry client)
  unsigned retry_times = 3;
  unsigned retry_delay_ms = 1000;
  std::string limit_rate;
  bool tls_verify = true;
  std::string authfile;
  std::string registries_conf;
  std::string expected_digest;
  bool no_partial = false;
  bool lazy = false;
  std::string mount;
  std::string lazy_rate_limit;
};

// "2M", "512k", "1000": bytes per second (K/M/G are powers of 1024).
uint64_t parse_rate(const std::string& text) {
  size_t end = 0;
  uint64_t value = 0;
  try {
    value = std::stoull(text, &end);
  } catch (const std::exception&) {
    throw UsageError("--limit-rate: '" + text + "' is not a number of bytes per second");
  }
  std::string suffix = text.substr(end);
  uint64_t unit = 1;
  if (suffix == "k" || suffix == "K")
    unit = 1024;
  else if (suffix == "m" || suffix == "M")
    unit = 1024 * 1024;
  else if (suffix == "g" || suffix == "G")
    unit = 1024ull * 1024 * 1024;
  else if (!suffix.empty())
    throw UsageError("--limit-rate: '" + text + "': the suffix must be K, M or G");
  return value * unit;
}

// The id a variant of a pulled image has in EROFS format version (default: the repository's),
// computed from its stored layers (nothing written).
Digest compute_image_id(const store::Repository& repo, std::string_view name, bool bootable,
                        oci::XattrMode mode, std::optional<uint32_t> version = std::nullopt) {
  erofs::Tree tree = oci::image_tree(repo, name, bootable, mode);
  VeritySink sink(nullptr, repo.algorithm());
  erofs::write_image(
      tree, sink, erofs::WriterOptions::for_erofs_version(version.value_or(repo.erofs_version())));
  return sink.finish();
}

// pull --expected-digest: composefs-rs' recovery of a boot image built with other defaults;
// every xattr mode and EROFS format (the repository's first) is tried, and the match is
// stored.
std::string find_boot_image(store::Repository& repo, const std::string& tag,
                            const std::string& expected_hex) {
  auto expected = Digest::from_hex(expected_hex, repo.algorithm());
  if (!expected)
    throw Error("oci pull: --expected-digest '" + expected_hex + "' is not a " +
                std::string(algorithm_name(repo.algorithm())) + " digest in hex");
  std::vector<uint32_t> versions = repo.erofs_versions();
  for (uint32_t v : {1u, 2u})
    if (std::find(versions.begin(), versions.end(), v) == versions.end()) versions.push_back(v);
  unsigned tried = 0;
  for (uint32_t version : versions) {
    for (const char* mode_name : {"allowlist-only", "keep-user-xattrs"}) {
      oci::XattrMode mode = oci::parse_xattr_mode(mode_name);
      ++tried;
      if (compute_image_id(repo, tag, true, mode, version) != *expected) continue;
      Digest stored = oci::ensure_image(repo, tag, true, mode, version);
      return "Boot image: " + stored.hex() + " (xattr-mode=" + mode_name + ", format-version=V" +
             std::to_string(version) + ")\n";
    }
  }
  throw Error("oci pull: no boot image configuration matched expected digest " + expected_hex +
              " (tried " + std::to_string(tried) + " mode/version combinations)");
}

// What a pull prints once it is done.
std::string pull_summary(const oci::PullResult& r, bool quiet) {
  std::string out = "manifest " + r.manifest_digest + "\nconfig " + r.config_digest + "\nimage " +
                    r.image_id.hex() + "\n";
  if (r.boot_image_id) out += "boot-image " + r.boot_image_id->hex() + "\n";
  // The images of the repository's extra formats (erofs_formats.extra).
  for (bool boot : {false, true})
    for (const auto& [version, id] : boot ? r.boot_images : r.images)
      if (id != (boot ? *r.boot_image_id : r.image_id))
        out += std::string(boot ? "boot-image" : "image") + "-v" + std::to_string(version) + " " +
               id.hex() + "\n";
  out += "tagged " + r.tag + "\n";
  if (!quiet)
    out += "layers " + std::to_string(r.layers) + " (" + std::to_string(r.layers_imported) +
           " imported, " + std::to_string(r.layers - r.layers_imported) + " already present), " +
           human_bytes(r.bytes_read) + " read, " + human_bytes(r.objects_bytes) +
           " in file objects\n";
  if (!quiet && r.layers_partial)
    out += "partial " + std::to_string(r.layers_partial) + " zstd:chunked or eStargz layers, " +
           std::to_string(r.bytes_read) + " bytes fetched, " + std::to_string(r.files_reused) +
           " files (" + human_bytes(r.bytes_reused) + ") reused from the repository" +
           (r.tails_rebuilt || r.tails_refused
                ? ", " + std::to_string(r.tails_rebuilt) + " eStargz tails rebuilt, " +
                      std::to_string(r.tails_refused) + " refused"
                : std::string()) +
           "\n";
  return out;
}

void run_pull(store::Repository& repo, const PullArgs& args) {
  oci::PullOptions options;
  options.bootable = args.bootable;
  options.threads = args.threads;
  options.partial = !args.no_partial;
  options.xattrs = oci::parse_xattr_mode(args.xattrs);
  options.registry.retries = args.retry_times;
  options.registry.retry_delay_ms = args.retry_delay_ms;
  if (!args.limit_rate.empty()) options.registry.max_rate = parse_rate(args.limit_rate);
  options.registry.tls_verify = args.tls_verify;
  if (!args.authfile.empty()) options.registry.auth_files = std::vector{args.authfile};
  if (!args.registries_conf.empty()) options.registry.registries_conf = args.registries_conf;
  bool tty = ::isatty(STDERR_FILENO) == 1;
  // Retries and resumed transfers are reported even with --quiet: they explain a slow pull.
  std::mutex notice_mutex;
  options.registry.notice = [&](const std::string& message) {
    std::lock_guard lock(notice_mutex);
    std::fprintf(stderr, "%s%s\n", tty && !args.quiet ? "\r\033[K" : "", message.c_str());
  };
  auto last = std::chrono::steady_clock::time_point{};
  if (!args.quiet) {
    options.progress = [&](const oci::PullProgress& p) {
      if (tty) {
        auto now = std::chrono::steady_clock::now();
        if (p.message.empty() && now - last < std::chrono::milliseconds(100)) return;
        last = now;
        std::fprintf(stderr, "\r\033[Klayers %u/%u  %s / %s", p.layers_done, p.layers_total,
                     human_bytes(p.bytes_done).c_str(), human_bytes(p.bytes_total).c_str());
      } else if (!p.message.empty()) {
        std::fprintf(stderr, "[%u/%u] %s\n", p.layers_done, p.layers_total, p.message.c_str());
      }
    };
  }
  std::optional<std::string> tag;
  if (!args.tag.empty()) tag = args.tag;
  if (args.lazy) {
    if (args.mount.empty()) throw UsageError("oci pull: --lazy needs --mount DIR");
    if (!args.expected_digest.empty() || args.bootable)
      throw UsageError("oci pull: --lazy does not take --bootable or --expected-digest");
#if CFS_WITH_FUSE
    LazyPullRequest request;
    request.source = args.source;
    request.tag = tag;
    request.options = options;
    request.options.progress = nullptr;
    request.mountpoint = args.mount;
    if (!args.lazy_rate_limit.empty()) request.rate_limit = parse_rate(args.lazy_rate_limit);
    request.summary = [&](const oci::PullResult& r) { return pull_summary(r, args.quiet); };
    int rc = run_lazy_pull(repo, request);
    if (rc != 0) throw Error("oci pull --lazy: the pull did not complete (see above)");
    return;
#else
    throw Error("oci pull: --lazy: this cfsctl is built without FUSE (CFS_WITH_FUSE=OFF)");
#endif
  }
  if (!args.mount.empty() || !args.lazy_rate_limit.empty())
    throw UsageError("oci pull: --mount and --lazy-rate-limit need --lazy");
  oci::PullResult r;
  try {
    r = oci::pull(repo, args.source, tag, options);
  } catch (...) {
    if (tty && !args.quiet) std::fputs("\n", stderr);
    throw;
  }
  if (tty && !args.quiet) std::fputs("\n", stderr);
  if (!args.expected_digest.empty()) {
    print(find_boot_image(repo, r.tag, args.expected_digest));
  }
  print(pull_summary(r, args.quiet));
}

void add_pull_command(CLI::App& oci_cmd, const GlobalOptions& global) {
  auto [cmd, args] = add_oci_command<PullArgs>(
      oci_cmd, global, "pull",
      "Import an image: oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:TAG], "
      "docker://REGISTRY/REPO[:TAG][@DIGEST] (the built-in registry client), or anything skopeo "
      "understands (containers-storage:…, skopeo:docker://…). Every blob digest and layer "
      "diff_id is verified; the EROFS image is built and stored at once, one per format of "
      "the repository's erofs_formats (or --erofs-version), named in the config as "
      "composefs-rs names them (composefs.image for V2, composefs.image.v1 for V1).",
      run_pull);
  cmd->add_option("SOURCE", args->source, "Image reference")->required();
  cmd->add_option("TAG", args->tag, "Tag to store it under (default: SOURCE)");
  auto* bootable =
      cmd->add_flag("--bootable", args->bootable,
                    "Also build the boot image (/boot, /sysroot emptied; SELinux relabel)");
  cmd->add_option("--expected-digest", args->expected_digest,
                  "With --bootable: find (and store) the boot image variant whose id is HEX "
                  "among the xattr modes, for boot images made with other defaults")
      ->needs(bootable);
  cmd->add_flag("-q,--quiet", args->quiet, "No progress output");
  add_xattrs_option(cmd, args->xattrs, "Xattrs the images keep");
  cmd->add_option("--threads", args->threads, "Parallel layer imports (default: CPUs)");
  cmd->add_flag(
      "--no-partial", args->no_partial,
      "docker://: download zstd:chunked and eStargz layers whole instead of fetching only the "
      "files the repository does not hold");
  cmd->add_flag("--lazy", args->lazy,
                "docker://, zstd:chunked layers only: mount the image at --mount DIR (through "
                "FUSE, in this process) as soon as the layers' tables of contents are read; files "
                "are fetched when first opened and all others in the background, then the pull "
                "completes and tags as usual; serves until DIR is unmounted");
  cmd->add_option("--mount", args->mount, "With --lazy: where to mount the image");
  cmd->add_option("--lazy-rate-limit", args->lazy_rate_limit,
                  "With --lazy: compressed bytes per second for the background fetch (K, M, G "
                  "suffixes); files opened through the mount are fetched at once regardless");
  cmd->add_option("--retry-times", args->retry_times,
                  "docker://: further attempts after a network failure or a 429/5xx answer; a "
                  "broken blob transfer resumes where it stopped (default 3)");
  cmd->add_option("--retry-delay-ms", args->retry_delay_ms,
                  "docker://: wait before the first retry, doubled for each next (default 1000)");
  cmd->add_option("--limit-rate", args->limit_rate,
                  "docker://: bytes per second per blob transfer (K, M, G suffixes)");
  cmd->add_option("--tls-verify", args->tls_verify,
                  "docker://: verify TLS certificates and require https (default true; "
                  "127.0.0.0/8, localhost and insecure registries of registries.conf are never "
                  "verified)");
  cmd->add_option("--authfile", args->authfile,
                  "docker://: the auth.json to use (default: $REGISTRY_AUTH_FILE, "
                  "$XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, "
                  "~/.docker/config.json)");
  cmd->add_option("--registries-conf", args->registries_conf,
                  "docker://: a registries.conf to use instead of the system's");
}

// ---- images, inspect -------------------------------------------------------------------

nlohmann::json summary_json(const oci::ImageSummary& s) {
  nlohmann::json j = {{"tag", s.tag},
                      {"manifest", s.manifest_digest},
                      {"config", s.config_digest},
                      {"architecture", s.architecture},
                      {"os", s.os},
                      {"layers", s.layers}};
  j["image"] = s.image_id ? nlohmann::json(s.image_id->hex()) : nlohmann::json();
  j["boot_image"] = s.boot_image_id ? nlohmann::json(s.boot_image_id->hex()) : nlohmann::json();
  return j;
}

struct ImagesArgs {
  bool json = false;
};

void run_images(store::Repository& repo, const ImagesArgs& args) {
  auto images = oci::list_images(repo);
  if (args.json) {
    nlohmann::json arr = nlohmann::json::array();
    for (const auto& s : images) arr.push_back(summary_json(s));
    print(json_text(arr));
    return;
  }
  std::string out = "TAG\tMANIFEST\tARCH\tLAYERS\tIMAGE\n";
  for (const auto& s : images)
    out += s.tag + "\t" + s.manifest_digest.substr(0, 19) + "\t" + s.architecture + "\t" +
           std::to_string(s.layers) + "\t" + (s.image_id ? s.image_id->hex().substr(0, 16) : "-") +
           (s.boot_image_id ? " (+boot)" : "") + "\n";
  print(out);
}

void add_images_command(CLI::App& oci_cmd, const GlobalOptions& global) {
  auto [cmd, args] =
      add_oci_command<ImagesArgs>(oci_cmd, global, "images", "List tagged images", run_images);
  cmd->add_flag("--json", args->json, "JSON output");
}

struct InspectArgs {
  std::string name;
  bool manifest = false;
  bool config = false;
};

void run_inspect(store::Repository& repo, const InspectArgs& args) {
  if (args.manifest) return print(oci::manifest_json(repo, args.name) + "\n");
  if (args.config) return print(oci::config_json(repo, args.name) + "\n");
  // The stored documents are spliced in as they are: manifest_json() and config_json()
  // return them only once they parse within the size and depth limits (so they are valid
  // JSON, and nlohmann accepts only UTF-8 strings), and re-serialising them would cost time
  // and memory in proportion to their nesting and reformat what the image says.
  std::string summary = json_text(summary_json(oci::inspect(repo, args.name)));
  auto trimmed = [](std::string s) {
    size_t begin = s.find_first_not_of(" \t\r\n");
    size_t end = s.find_last_not_of(" \t\r\n");
    return begin == std::string::npos ? std::string("null") : s.substr(begin, end - begin + 1);
  };
  // summary ends in "\n}\n": the two members go before the closing brace.
  summary.resize(summary.rfind('}'));
  while (!summary.empty() && summary.back() == '\n') summary.pop_back();
  summary += ",\n  \"manifest_json\": " + trimmed(oci::manifest_json(repo, args.name)) +
             ",\n  \"config_json\": " + trimmed(oci::config_json(repo, args.name)) + "\n}\n";
  print(summary);
}

void add_inspect_command(CLI::App& oci_cmd, const GlobalOptions& global) {
  auto [cmd, args] = add_oci_command<InspectArgs>(
      oci_cmd, global, "inspect", "Show an image (TAG or @sha256:MANIFEST) as JSON", run_inspect);
  cmd->add_option("IMAGE", args->name, "Tag or @sha256:…")->required();
  cmd->add_flag("--manifest", args->manifest, "Print only the manifest JSON bytes");
  cmd->add_flag("--config", args->config, "Print only the config JSON bytes");
}

// ---- tag, untag, image-id --------------------------------------------------------------

struct TagArgs {
  std::string image;
  std::string tag;
};

void run_tag(store::Repository& repo, const TagArgs& args) {
  oci::tag_image(repo, args.image, args.tag);
}

struct UntagArgs {
  std::string tag;
};

void run_untag(store::Repository& repo, const UntagArgs& args) {
  oci::untag_image(repo, args.tag);
}

void add_tag_commands(CLI::App& oci_cmd, const GlobalOptions& global) {
  auto [tag_cmd, tag] = add_oci_command<TagArgs>(
      oci_cmd, global, "tag", "Tag an image (by manifest digest or tag)", run_tag);
  tag_cmd->add_option("DIGEST", tag->image, "sha256:… manifest digest, @sha256:… or a tag")
      ->required();
  tag_cmd->add_option("NAME", tag->tag, "New tag")->required();

  auto [untag_cmd, untag] = add_oci_command<UntagArgs>(
      oci_cmd, global, "untag", "Remove a tag (the data goes at the next gc)", run_untag);
  untag_cmd->add_option("NAME", untag->tag, "Tag")->required();
}

// ---- copy ------------------------------------------------------------------------------

struct CopyArgs {
  std::string image;
  std::string from;
  std::string name;
};

void run_copy(store::Repository& repo, const CopyArgs& args) {
  // The source is only read (a repository without meta.json is not upgraded for it).
  store::Repository src = store::Repository::open(args.from, store::LockMode::shared);
  oci::CopyResult r = oci::copy_image(repo, src, args.image,
                                      args.name.empty() ? std::nullopt : std::optional(args.name));
  std::string out = "Copied image " + args.image + " from " + args.from + " to " + repo.path() +
                    (args.name.empty() ? "" : ", tagged as " + args.name) + "\n";
  out += "Manifest digest: " + r.manifest_digest + "\n";
  out += "Config digest:   " + r.config_digest + "\n";
  out += "Objects copied:  " + std::to_string(r.objects_copied) + " (" +
         std::to_string(r.objects_present) + " already present)\n";
  print(out);
}

void add_copy_command(CLI::App& oci_cmd, const GlobalOptions& global) {
  auto [cmd, args] = add_oci_command<CopyArgs>(
      oci_cmd, global, "copy",
      "Copy an image (its manifest, config and layer streams, EROFS images and objects) from "
      "the repository --from into this one, each object checked against its name; nothing "
      "is named before every object is stored, and --name is written last. Both "
      "repositories must use the same hash algorithm.",
      run_copy);
  cmd->add_option("IMAGE", args->image, "Tag or @sha256:… manifest digest in --from")->required();
  cmd->add_option("--from", args->from, "Source repository")->required()->type_name("DIR");
  cmd->add_option("--name", args->name, "Tag the copy under this name (else it is untagged)");
}

// Which composefs image of a pulled OCI image: IMAGE [--bootable] [--xattrs MODE].
struct ImageVariant {
  std::string name;
  bool bootable = false;
  std::string xattrs = "allowlist-only";

  Digest id(const store::Repository& repo) const {
    return oci::image_id(repo, name, bootable, oci::parse_xattr_mode(xattrs));
  }
};

void add_variant_options(CLI::App* cmd, ImageVariant& variant, const std::string& bootable) {
  cmd->add_option("IMAGE", variant.name, "Tag or @sha256:…")->required();
  cmd->add_flag("--bootable", variant.bootable, bootable);
  add_xattrs_option(cmd, variant.xattrs, "The image variant pulled with");
}

void run_image_id(store::Repository& repo, const ImageVariant& args) {
  print(args.id(repo).hex() + "\n");
}

void add_image_id_command(CLI::App& oci_cmd, const GlobalOptions& global) {
  auto [cmd, args] = add_oci_command<ImageVariant>(
      oci_cmd, global, "image-id", "Print the composefs image id stored at pull", run_image_id);
  add_variant_options(cmd, *args, "The boot image's id");
}

// ---- compute-id, dump, layer (composefs-rs' spellings) ----------------------------------

void run_compute_id(store::Repository& repo, const ImageVariant& args) {
  print(compute_image_id(repo, args.name, args.bootable, oci::parse_xattr_mode(args.xattrs)).hex() +
        "\n");
}

void run_oci_dump(store::Repository& repo, const ImageVariant& args) {
  erofs::Tree tree =
      oci::image_tree(repo, args.name, args.bootable, oci::parse_xattr_mode(args.xattrs));
  FdSink out(STDOUT_FILENO, "stdout");
  erofs::write_dumpfile(tree, out);
  out.flush();
}

struct LayerArgs {
  std::string diff_id;
  bool dumpfile = false;
  bool json = false;
};

// composefs-rs' path of a tar entry: one leading '/' dropped, '/' prepended, trailing '/'s
// dropped, and the root ("/") left empty (written as "-").
std::string rs_tar_path(std::string_view tar_path) {
  if (tar_path.starts_with('/')) tar_path.remove_prefix(1);
  std::string path = "/" + std::string(tar_path);
  while (path.size() > 1 && path.ends_with('/')) path.pop_back();
  return path == "/" ? std::string() : path;
}

// One line of composefs-rs' `oci layer --dumpfile`: the entry as the tar has it (every
// entry NLINK 1, hardlinks as @120000 lines, all xattrs sorted by name).
void append_layer_entry(std::string& out, const oci::TarEntry& t) {
  std::string path = rs_tar_path(t.path);
  if (t.type == oci::TarEntryType::hardlink)
    return append_rs_hardlink(out, path, rs_tar_path(t.link));
  RsDumpEntry e;
  e.uid = t.uid;
  e.gid = t.gid;
  e.mtime_sec = t.mtime_sec;
  e.mtime_nsec = t.mtime_nsec;
  uint32_t type = S_IFREG;
  switch (t.type) {
    case oci::TarEntryType::directory:
      type = S_IFDIR;
      break;
    case oci::TarEntryType::symlink:
      type = S_IFLNK;
      e.size = t.link.size();
      e.payload = t.link;
      break;
    case oci::TarEntryType::chardev:
    case oci::TarEntryType::blockdev:
      type = t.type == oci::TarEntryType::chardev ? S_IFCHR : S_IFBLK;
      e.rdev = ::makedev(t.dev_major, t.dev_minor);
      break;
    case oci::TarEntryType::fifo:
      type = S_IFIFO;
      break;
    default:
      e.size = t.size;
      if (t.object) {
        std::string hex = t.object->hex();
        e.payload = hex.substr(0, 2) + "/" + hex.substr(2);
        e.digest = hex;
      } else if (t.content) {
        e.content = *t.content;
      }
  }
  e.mode = type | t.mode;
  // Sorted by name, the last record of a name winning (composefs-rs collects a BTreeMap).
  for (const erofs::Xattr& x : t.xattrs) {
    auto it = std::find_if(e.xattrs.begin(), e.xattrs.end(),
                           [&](const erofs::Xattr& y) { return y.name == x.name; });
    if (it != e.xattrs.end())
      it->value = x.value;
    else
      e.xattrs.push_back(x);
  }
  std::sort(e.xattrs.begin(), e.xattrs.end(),
            [](const erofs::Xattr& a, const erofs::Xattr& b) { return a.name < b.name; });
  append_rs_entry(out, path, e);
}

void run_layer(store::Repository& repo, const LayerArgs& args) {
  if (args.json) {
    oci::LayerInfo info = oci::layer_info(repo, args.diff_id);
    nlohmann::ordered_json j;
    j["diffId"] = info.diff_id;
    j["verity"] = info.stream.hex();
    j["size"] = info.size;
    j["entryCount"] = info.entries;
    j["splitstream"] = {{"externalObjects", info.objects},
                        {"externalSize", info.external_size},
                        {"inlineSize", info.size - std::min(info.size, info.external_size)}};
    return print(json_text(j));
  }
  if (args.dumpfile) {
    FdSink out(STDOUT_FILENO, "stdout");
    std::string buf;
    oci::for_each_stored_layer_entry(repo, args.diff_id, [&](const oci::TarEntry& e) {
      append_layer_entry(buf, e);
      if (buf.size() >= (1 << 20)) {
        out.write(buf);
        buf.clear();
      }
    });
    out.write(buf);
    out.flush();
    return;
  }
  if (::isatty(STDOUT_FILENO) == 1)
    throw Error("oci layer: refusing to write tar data to a terminal (redirect it)");
  if (!args.diff_id.starts_with("sha256:"))
    throw Error("oci layer: '" + args.diff_id + "' is not a diff_id (sha256:<hex>)");
  FdSink out(STDOUT_FILENO, "stdout");
  repo.cat_stream("oci-layer-" + args.diff_id, out);
  out.flush();
}

void add_image_commands(CLI::App& oci_cmd, const GlobalOptions& global) {
  auto [compute_cmd, compute] = add_oci_command<ImageVariant>(
      oci_cmd, global, "compute-id",
      "Compute the composefs image id of a pulled image from its stored layers (no image "
      "needs to be stored: --bootable works for images pulled without it)",
      run_compute_id);
  add_variant_options(compute_cmd, *compute, "The boot image's id");

  auto [dump_cmd, dump] = add_oci_command<ImageVariant>(
      oci_cmd, global, "dump",
      "Print the root filesystem of a pulled image (after the OCI transform, and the boot "
      "transform with --bootable) as a composefs-dump(5) file",
      run_oci_dump);
  add_variant_options(dump_cmd, *dump, "Dump the boot variant");

  auto [layer_cmd, layer] = add_oci_command<LayerArgs>(
      oci_cmd, global, "layer", "Write a stored layer (by diff_id) as the uncompressed tar",
      run_layer);
  layer_cmd->add_option("DIFF_ID", layer->diff_id, "sha256:…")->required();
  auto* layer_dumpfile = layer_cmd->add_flag(
      "--dumpfile", layer->dumpfile,
      "Print the layer's tar entries as dumpfile lines (composefs-rs' form: paths as the tar "
      "names them with a leading '/', NLINK 1, hardlinks as @120000 lines, every xattr)");
  layer_cmd
      ->add_flag("--json", layer->json,
                 "Print the layer's figures as JSON: diffId, verity (the stream's object id), "
                 "size (tar bytes), entryCount, splitstream.{externalObjects,externalSize,"
                 "inlineSize}")
      ->excludes(layer_dumpfile);
}

struct ImportLayerArgs {
  std::string diff_id;
  std::string name;
};

void run_import_layer(store::Repository& repo, const ImportLayerArgs& args) {
  std::optional<std::string_view> ref;
  if (!args.name.empty()) ref = args.name;
  // composefs-rs prints the id with its algorithm ("sha512:<hex>").
  Digest id = oci::import_layer(repo, STDIN_FILENO, args.diff_id, ref, "oci import-layer: stdin");
  print(std::string(algorithm_name(repo.algorithm())) + ":" + id.hex() + "\n");
}

void add_import_layer_command(CLI::App& oci_cmd, const GlobalOptions& global) {
  auto [cmd, args] = add_oci_command<ImportLayerArgs>(
      oci_cmd, global, "import-layer",
      "Store an uncompressed layer tar read from stdin as the layer DIFF_ID (its sha256 must "
      "be DIFF_ID) and print the layer stream's object id (ALG:HEX); NAME also names it "
      "streams/refs/NAME. A layer already stored is only named.",
      run_import_layer);
  cmd->add_option("DIFF_ID", args->diff_id, "sha256:… of the uncompressed tar")->required();
  cmd->add_option("NAME", args->name, "Ref name below streams/refs");
}

// ---- mount -----------------------------------------------------------------------------

struct MountArgs {
  ImageVariant image;
  std::string mountpoint;
  std::string fuse = "auto";
  bool foreground = false;
  std::string upperdir, workdir;
  bool read_write = false;
  bool overlay = false;
  std::string upper;
  bool allow_missing_objects = false;
  std::vector<std::string> command;
};

void run_mount(const MountArgs& args, const GlobalOptions& global) {
  MountRequest request;
  request.command = "oci mount";
  request.insecure = global.insecure;
  request.mountpoint = args.mountpoint;
  request.fuse = args.fuse;
  request.foreground = args.foreground;
  request.upperdir = args.upperdir;
  request.workdir = args.workdir;
  request.read_write = args.read_write;
  request.overlay = args.overlay;
  request.overlay_upper = args.upper;
  request.allow_missing_objects = args.allow_missing_objects;
  request.run_command = args.command;
  // A mount that cannot happen (bad options, no mount program) is reported before the
  // repository is touched.
  choose_mount_program(request);
  {
    // Closed before the exec: the mount program takes the repository lock itself.
    store::Repository repo = open_repo(global, "oci mount");
    request.image = args.image.id(repo).hex();
  }
  request.repo = require_repo(global, "oci mount");
  exec_mount(request);
}

void add_mount_command(CLI::App& oci_cmd, const GlobalOptions& global) {
  auto [cmd, args] = add_command<MountArgs>(
      oci_cmd, global, "mount",
      "Mount an image: the kernel (cfs-mount) as root, cfs-fuse otherwise", run_mount);
  add_variant_options(cmd, args->image, "Mount the boot image");
  cmd->add_option("MOUNTPOINT", args->mountpoint, "Existing directory")->required();
  // A bare --fuse (cfs' older spelling) is rewritten to --fuse=yes before parsing (main.cc).
  cmd->add_option("--fuse", args->fuse,
                  std::string("auto (the kernel as root, FUSE otherwise), yes or no; a bare "
                              "--fuse means yes") +
                      (built_with_fuse() ? "" : " (FUSE not in this build: CFS_WITH_FUSE=OFF)"))
      ->check(CLI::IsMember({"auto", "yes", "no"}))
      ->capture_default_str();
  cmd->add_flag("--foreground", args->foreground,
                "Keep cfs-fuse in the foreground until the image is unmounted (no effect on "
                "kernel mounts)");
  cmd->add_option("--upperdir", args->upperdir, "Writable overlay upper directory (kernel mounts)");
  cmd->add_option("--workdir", args->workdir, "Overlay work directory (with --upperdir)");
  cmd->add_flag("--read-write", args->read_write, "Mount writable (needs --upperdir)");
  cmd->add_flag("--overlay", args->overlay,
                "Rootless overlay mode (cfs-fuse --overlay): a metadata-only FUSE under a kernel "
                "overlayfs in a new user and mount namespace, object data read by the kernel; "
                "objects are verified before the mount. The mount exists only in that "
                "namespace: give a command after `--` to run there");
  cmd->add_option("--upper", args->upper,
                  "With --overlay: writable, changes kept in DIR/upper (DIR/work beside it)")
      ->type_name("DIR");
  cmd->add_flag("--allow-missing-objects", args->allow_missing_objects,
                "With --overlay: mount although objects are missing (their files read as EIO)");
  // Everything after IMAGE and MOUNTPOINT (and a "--") is the command: CLI11 hands what
  // follows "--" to the parent command, so the words are taken from what remains unparsed.
  cmd->prefix_command();
  cmd->parse_complete_callback([cmd = cmd, args = args] {
    args->command = cmd->remaining();
    if (!args->command.empty() && args->command.front() == "--")
      args->command.erase(args->command.begin());
  });
}

// ---- prepare-boot ----------------------------------------------------------------------

struct PrepareBootArgs {
  std::string name;
  oci::BootEntryOptions options;
  std::string entry_id, kernel_version, expected_digest;
  std::string xattrs = "allowlist-only";
};

void run_prepare_boot(store::Repository& repo, const PrepareBootArgs& args) {
  oci::BootEntryOptions options = args.options;
  if (!args.entry_id.empty()) options.entry_id = args.entry_id;
  if (!args.kernel_version.empty()) options.kernel_version = args.kernel_version;
  options.xattrs = oci::parse_xattr_mode(args.xattrs);
  // composefs-rs builds the boot image here when the pull did not (no --bootable), and
  // creates the boot directory when it is missing (its example scripts rely on both).
  oci::ensure_image(repo, args.name, true, options.xattrs);
  std::error_code ec;
  std::filesystem::create_directories(options.bootdir, ec);
  if (ec) throw Error(options.bootdir + ": creating the boot directory: " + ec.message());
  if (!args.expected_digest.empty()) {
    options.expected_digest = Digest::from_hex(args.expected_digest, repo.algorithm());
    if (!options.expected_digest)
      throw Error("--expected-digest '" + args.expected_digest + "' is not a " +
                  std::string(algorithm_name(repo.algorithm())) + " digest in hex");
  }
  oci::BootEntry entry = oci::prepare_boot(repo, args.name, options);
  if (!entry.entries.empty()) {
    std::string out;
    for (const std::string& path : entry.entries) out += "entry " + path + "\n";
    for (const std::string& path : entry.files) out += "file " + path + "\n";
    return print(out + "image " + entry.image.hex() + "\n");
  }
  if (!entry.ukis.empty()) {
    std::string out;
    for (const std::string& uki : entry.ukis) out += "uki " + uki + "\n";
    for (const std::string& addon : entry.addons) out += "addon " + addon + "\n";
    return print(out + "image " + entry.image.hex() + "\n");
  }
  print("entry " + entry.entry_path + "\nkernel " + entry.kernel_version + " " + entry.kernel_path +
        "\ninitramfs " + entry.initramfs_path + "\noptions " + entry.options + "\n");
}

struct RemoveBootEntryArgs {
  std::string id;
  std::string bootdir = "/boot";
};

void run_remove_boot_entry(const RemoveBootEntryArgs& args, const GlobalOptions&) {
  std::string out;
  for (const std::string& path : oci::remove_boot_entry(args.bootdir, args.id))
    out += "removed " + path + "\n";
  print(out);
}

struct BootGcArgs {
  std::string bootdir = "/boot";
  bool dry_run = false;
};

void run_boot_gc(const BootGcArgs& args, const GlobalOptions&) {
  std::string out;
  for (const std::string& path : oci::gc_boot_dir(args.bootdir, args.dry_run))
    out += (args.dry_run ? "would remove " : "removed ") + path + "\n";
  print(out);
}

void add_boot_entry_commands(CLI::App& oci_cmd, const GlobalOptions& global) {
  auto [rm_cmd, rm] = add_command<RemoveBootEntryArgs>(
      oci_cmd, global, "remove-boot-entry",
      "Remove boot entry ID from the boot partition: loader/entries/ID.conf and/or the UKI "
      "EFI/Linux/ID.efi with its ID.efi.extra.d addons (boot-gc removes the kernels a "
      "removed entry named)",
      run_remove_boot_entry);
  rm_cmd->add_option("ID", rm->id, "Entry id")->required();
  rm_cmd->add_option("--bootdir", rm->bootdir, "Boot partition root")->capture_default_str();

  auto [gc_cmd, gc] = add_command<BootGcArgs>(
      oci_cmd, global, "boot-gc",
      "Remove the kernels, initramfs images and UKIs in the boot partition's entry directories "
      "that no loader/entries/*.conf names, and addon directories whose UKI is gone",
      run_boot_gc);
  gc_cmd->add_option("--bootdir", gc->bootdir, "Boot partition root")->capture_default_str();
  gc_cmd->add_flag("--dry-run", gc->dry_run, "Only print what would be removed");
}

void add_prepare_boot_command(CLI::App& oci_cmd, const GlobalOptions& global) {
  auto [cmd, args] = add_oci_command<PrepareBootArgs>(
      oci_cmd, global, "prepare-boot",
      "Copy the kernel and initramfs of a bootable image (its boot image is built and stored "
      "first if the pull did not) from "
      "/usr/lib/modules/<kver>/ to BOOTDIR/<entry-id>/ and write the Boot Loader Specification "
      "entry BOOTDIR/loader/entries/<entry-id>.conf that boots its composefs image. An image "
      "that ships unified kernel images (/boot/EFI/Linux/*.efi, /usr/lib/modules/<kver>/*.efi, "
      "with their .efi.extra.d addons) gets those copied to BOOTDIR/EFI/Linux instead, each "
      "refused unless its .cmdline composefs.digest= names the image's boot image. An image "
      "with its own Boot Loader Specification entries (/boot/loader/entries/*.conf) gets those "
      "relocated instead: the files they name go to BOOTDIR/<entry-id>/, the entries get "
      "composefs.digest= in their options",
      run_prepare_boot);
  cmd->add_option("IMAGE", args->name, "Tag or @sha256:…")->required();
  cmd->add_option("--bootdir", args->options.bootdir, "Boot partition root")->capture_default_str();
  cmd->add_option("--expected-digest", args->expected_digest,
                  "Refuse unless the boot image's id is this (hex)");
  cmd->add_option("--entry-id", args->entry_id,
                  "Entry name (default: the kernel version, or the image's entry or UKI name)");
  cmd->add_option("--kernel-version", args->kernel_version,
                  "Kernel to use when the image has several (default: the first by name)");
  cmd->add_option("--cmdline", args->options.kernel_arguments,
                  "Kernel argument after the composefs one; repeatable");
  add_xattrs_option(cmd, args->xattrs, "The image variant pulled with");
}

// ---- fsck ------------------------------------------------------------------------------

struct FsckArgs {
  std::string name;
  bool json = false;
  bool metadata_only = false;
};

void run_fsck(store::Repository& repo, const FsckArgs& args) {
  store::FsckOptions options;
  options.metadata_only = args.metadata_only;
  store::FsckReport base = store::fsck(repo, options);
  std::optional<std::string_view> name;
  if (!args.name.empty()) name = args.name;
  oci::OciFsckReport report = oci::fsck_images(repo, name, args.metadata_only);
  std::vector<std::string> errors = base.errors;
  errors.insert(errors.end(), report.errors.begin(), report.errors.end());
  if (args.json) {
    nlohmann::json j = {{"ok", errors.empty()},
                        {"images_checked", report.images_checked},
                        {"objects_checked", base.objects_checked},
                        {"streams_checked", base.streams_checked},
                        {"content_index_entries", report.content_index_entries},
                        {"content_index_stale", report.content_index_stale},
                        {"estargz_tails", report.estargz_tails},
                        {"errors", errors}};
    print(json_text(j));
    return;
  }
  std::string out = "objects: " + std::to_string(base.objects_checked) + " checked\n" +
                    "streams: " + std::to_string(base.streams_checked) + " checked\n" +
                    "oci images: " + std::to_string(report.images_checked) + " checked\n";
  if (report.content_index_entries)
    out += "content index: " + std::to_string(report.content_index_entries) + " entries (" +
           std::to_string(report.content_index_stale) + " stale)\n";
  if (report.estargz_tails) out += "estargz tails: " + std::to_string(report.estargz_tails) + "\n";
  if (errors.empty()) {
    print(out + "status: ok\n");
    return;
  }
  out += "status: " + std::to_string(errors.size()) + " error(s)\n";
  for (const auto& e : errors) out += "  - " + e + "\n";
  print(out);
  throw ExitStatus(1);
}

void add_fsck_command(CLI::App& oci_cmd, const GlobalOptions& global) {
  auto [cmd, args] = add_oci_command<FsckArgs>(
      oci_cmd, global, "fsck",
      "Check the repository and the OCI images (all tagged ones, or IMAGE)", run_fsck);
  cmd->add_option("IMAGE", args->name, "Tag or @sha256:…");
  cmd->add_flag("--json", args->json, "JSON output (exit 0)");
  cmd->add_flag("--metadata-only", args->metadata_only,
                "Skip hashing object data and layer contents");
}

}  // namespace

void register_oci_commands(CLI::App& app, GlobalOptions& global) {
  CLI::App* oci_cmd = app.add_subcommand("oci", "OCI container images in a repository");
  oci_cmd->require_subcommand(1);
  add_pull_command(*oci_cmd, global);
  add_images_command(*oci_cmd, global);
  add_inspect_command(*oci_cmd, global);
  add_tag_commands(*oci_cmd, global);
  add_copy_command(*oci_cmd, global);
  add_image_id_command(*oci_cmd, global);
  add_image_commands(*oci_cmd, global);
  add_import_layer_command(*oci_cmd, global);
  add_mount_command(*oci_cmd, global);
  add_prepare_boot_command(*oci_cmd, global);
  add_boot_entry_commands(*oci_cmd, global);
  add_fsck_command(*oci_cmd, global);
}

}  // namespace cfs::cli
