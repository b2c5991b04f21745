// OCI commands: cfsctl --repo DIR oci
// pull|images|inspect|tag|untag|image-id|mount|prepare-boot|fsck.
// Thin wrappers over cfs_oci; every rule lives in the library.
#include <limits.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cfs/error.h"
#include "cfs/oci/boot.h"
#include "cfs/oci/oci.h"
#include "cfs/output.h"
#include "cfs/store/fsck.h"
#include "cfs/store/repository.h"
#include "commands.h"
#include "json_out.h"

namespace cfs::cli {

namespace {

const std::string& require_repo(const GlobalOptions& global, const char* command) {
  if (global.repo.empty())
    throw Error(std::string("oci ") + command + ": no repository given (use --repo DIR)");
  return global.repo;
}

void print(const std::string& text) {
  FdSink out(STDOUT_FILENO, "stdout");
  out.write(text);
  out.flush();
}

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

struct PullArgs {
  std::string source;
  std::string tag;
  std::string xattrs = "allowlist-only";
  bool bootable = false;
  bool quiet = false;
  unsigned threads = 0;
};

void run_pull(const PullArgs& args, const GlobalOptions& global) {
  store::Repository repo = store::Repository::open(require_repo(global, "pull"));
  oci::PullOptions options;
  options.bootable = args.bootable;
  options.threads = args.threads;
  options.xattrs = oci::parse_xattr_mode(args.xattrs);
  bool tty = ::isatty(STDERR_FILENO) == 1;
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
  oci::PullResult r;
  try {
    r = oci::pull(repo, args.source, tag, options);
  } catch (...) {
    if (tty && !args.quiet) std::fputs("\n", stderr);
    throw;
  }
  if (tty && !args.quiet) std::fputs("\n", stderr);
  std::string out = "manifest " + r.manifest_digest + "\nconfig " + r.config_digest + "\nimage " +
                    r.image_id.hex() + "\n";
  if (r.boot_image_id) out += "boot-image " + r.boot_image_id->hex() + "\n";
  out += "tagged " + r.tag + "\n";
  if (!args.quiet)
    out += "layers " + std::to_string(r.layers) + " (" + std::to_string(r.layers_imported) +
           " imported, " + std::to_string(r.layers - r.layers_imported) + " already present), " +
           human_bytes(r.bytes_read) + " read, " + human_bytes(r.objects_bytes) +
           " in file objects\n";
  print(out);
}

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

void run_images(bool json, const GlobalOptions& global) {
  store::Repository repo = store::Repository::open(require_repo(global, "images"));
  auto images = oci::list_images(repo);
  if (json) {
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

struct InspectArgs {
  std::string name;
  bool manifest = false;
  bool config = false;
};

void run_inspect(const InspectArgs& args, const GlobalOptions& global) {
  store::Repository repo = store::Repository::open(require_repo(global, "inspect"));
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

// The directory holding this binary, where cfs-mount and cfs-fuse are built/installed.
std::string self_dir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n < 0) throw_errno("/proc/self/exe");
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

struct MountArgs {
  std::string name;
  std::string mountpoint;
  std::string xattrs = "allowlist-only";
  bool bootable = false;
  bool fuse = false;
};

void run_mount(const MountArgs& args, const GlobalOptions& global) {
  std::string id;
  {
    store::Repository repo = store::Repository::open(require_repo(global, "mount"));
    id = oci::image_id(repo, args.name, args.bootable, oci::parse_xattr_mode(args.xattrs)).hex();
  }
  std::string dir = self_dir();
  std::string kernel = dir + "/cfs-mount";
  std::string fuse = dir + "/cfs-fuse";
  bool use_kernel = !args.fuse && ::geteuid() == 0 && ::access(kernel.c_str(), X_OK) == 0;
  std::string program = use_kernel ? kernel : fuse;
  if (::access(program.c_str(), X_OK) != 0)
    throw Error("oci mount: " + program + " is not available");
  std::vector<std::string> argv_s = {program, "--repo", global.repo, id, args.mountpoint};
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  ::execv(program.c_str(), argv.data());
  throw_errno("oci mount: exec " + program);
}

struct FsckArgs {
  std::string name;
  bool json = false;
  bool metadata_only = false;
};

void run_fsck(const FsckArgs& args, const GlobalOptions& global) {
  store::Repository repo = store::Repository::open(require_repo(global, "fsck"));
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
                        {"errors", errors}};
    print(json_text(j));
    return;
  }
  std::string out = "objects: " + std::to_string(base.objects_checked) + " checked\n" +
                    "streams: " + std::to_string(base.streams_checked) + " checked\n" +
                    "oci images: " + std::to_string(report.images_checked) + " checked\n";
  if (errors.empty()) {
    print(out + "status: ok\n");
    return;
  }
  out += "status: " + std::to_string(errors.size()) + " error(s)\n";
  for (const auto& e : errors) out += "  - " + e + "\n";
  print(out);
  throw CLI::RuntimeError(1);
}

}  // namespace

void register_oci_commands(CLI::App& app, GlobalOptions& global) {
  CLI::App* oci_cmd = app.add_subcommand("oci", "OCI container images in a repository");
  oci_cmd->require_subcommand(1);

  auto pull = std::make_shared<PullArgs>();
  CLI::App* pull_cmd = oci_cmd->add_subcommand(
      "pull",
      "Import an image: oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:TAG], or "
      "anything skopeo understands (docker://…, containers-storage:…). Every blob digest and "
      "layer diff_id is verified; the EROFS image is built and stored at once.");
  pull_cmd->add_option("SOURCE", pull->source, "Image reference")->required();
  pull_cmd->add_option("TAG", pull->tag, "Tag to store it under (default: SOURCE)");
  pull_cmd->add_flag("--bootable", pull->bootable,
                     "Also build the boot image (/boot, /sysroot emptied; SELinux relabel)");
  pull_cmd->add_flag("-q,--quiet", pull->quiet, "No progress output");
  add_xattrs_option(pull_cmd, pull->xattrs, "Xattrs the images keep");
  pull_cmd->add_option("--threads", pull->threads, "Parallel layer imports (default: CPUs)");
  pull_cmd->callback([pull, &global] { run_pull(*pull, global); });

  auto images_json = std::make_shared<bool>(false);
  CLI::App* images_cmd = oci_cmd->add_subcommand("images", "List tagged images");
  images_cmd->add_flag("--json", *images_json, "JSON output");
  images_cmd->callback([images_json, &global] { run_images(*images_json, global); });

  auto inspect = std::make_shared<InspectArgs>();
  CLI::App* inspect_cmd =
      oci_cmd->add_subcommand("inspect", "Show an image (TAG or @sha256:MANIFEST) as JSON");
  inspect_cmd->add_option("IMAGE", inspect->name, "Tag or @sha256:…")->required();
  inspect_cmd->add_flag("--manifest", inspect->manifest, "Print only the manifest JSON bytes");
  inspect_cmd->add_flag("--config", inspect->config, "Print only the config JSON bytes");
  inspect_cmd->callback([inspect, &global] { run_inspect(*inspect, global); });

  auto tag = std::make_shared<std::pair<std::string, std::string>>();
  CLI::App* tag_cmd = oci_cmd->add_subcommand("tag", "Tag an image (by manifest digest or tag)");
  tag_cmd->add_option("DIGEST", tag->first, "sha256:… manifest digest, @sha256:… or a tag")
      ->required();
  tag_cmd->add_option("NAME", tag->second, "New tag")->required();
  tag_cmd->callback([tag, &global] {
    store::Repository repo = store::Repository::open(require_repo(global, "tag"));
    oci::tag_image(repo, tag->first, tag->second);
  });

  auto untag = std::make_shared<std::string>();
  CLI::App* untag_cmd =
      oci_cmd->add_subcommand("untag", "Remove a tag (the data goes at the next gc)");
  untag_cmd->add_option("NAME", *untag, "Tag")->required();
  untag_cmd->callback([untag, &global] {
    store::Repository repo = store::Repository::open(require_repo(global, "untag"));
    oci::untag_image(repo, *untag);
  });

  struct ImageIdArgs {
    std::string name;
    bool bootable = false;
    std::string xattrs = "allowlist-only";
  };
  auto id = std::make_shared<ImageIdArgs>();
  CLI::App* id_cmd =
      oci_cmd->add_subcommand("image-id", "Print the composefs image id stored at pull");
  id_cmd->add_option("IMAGE", id->name, "Tag or @sha256:…")->required();
  id_cmd->add_flag("--bootable", id->bootable, "The boot image's id");
  add_xattrs_option(id_cmd, id->xattrs, "The image variant pulled with");
  id_cmd->callback([id, &global] {
    store::Repository repo = store::Repository::open(require_repo(global, "image-id"));
    print(oci::image_id(repo, id->name, id->bootable, oci::parse_xattr_mode(id->xattrs)).hex() +
          "\n");
  });

  auto mount = std::make_shared<MountArgs>();
  CLI::App* mount_cmd = oci_cmd->add_subcommand(
      "mount", "Mount an image: the kernel (cfs-mount) as root, cfs-fuse otherwise");
  mount_cmd->add_option("IMAGE", mount->name, "Tag or @sha256:…")->required();
  mount_cmd->add_option("MOUNTPOINT", mount->mountpoint, "Existing directory")->required();
  mount_cmd->add_flag("--bootable", mount->bootable, "Mount the boot image");
  mount_cmd->add_flag("--fuse", mount->fuse, "Use cfs-fuse even as root");
  add_xattrs_option(mount_cmd, mount->xattrs, "The image variant pulled with");
  mount_cmd->callback([mount, &global] { run_mount(*mount, global); });

  struct PrepareBootArgs {
    std::string name;
    oci::BootEntryOptions options;
    std::string entry_id, kernel_version;
    std::string xattrs = "allowlist-only";
  };
  auto boot = std::make_shared<PrepareBootArgs>();
  CLI::App* boot_cmd = oci_cmd->add_subcommand(
      "prepare-boot",
      "Copy the kernel and initramfs of a bootable image (pulled with --bootable) from "
      "/usr/lib/modules/<kver>/ to BOOTDIR/<entry-id>/ and write the Boot Loader Specification "
      "entry BOOTDIR/loader/entries/<entry-id>.conf that boots its composefs image");
  boot_cmd->add_option("IMAGE", boot->name, "Tag or @sha256:…")->required();
  boot_cmd->add_option("--bootdir", boot->options.bootdir, "Boot partition root")
      ->capture_default_str();
  boot_cmd->add_option("--entry-id", boot->entry_id, "Entry name (default: the kernel version)");
  boot_cmd->add_option("--kernel-version", boot->kernel_version,
                       "Kernel to use when the image has several (default: the first by name)");
  boot_cmd->add_option("--cmdline", boot->options.kernel_arguments,
                       "Kernel argument after the composefs one; repeatable");
  add_xattrs_option(boot_cmd, boot->xattrs, "The image variant pulled with");
  boot_cmd->callback([boot, &global] {
    store::Repository repo = store::Repository::open(require_repo(global, "prepare-boot"));
    oci::BootEntryOptions options = boot->options;
    if (!boot->entry_id.empty()) options.entry_id = boot->entry_id;
    if (!boot->kernel_version.empty()) options.kernel_version = boot->kernel_version;
    options.xattrs = oci::parse_xattr_mode(boot->xattrs);
    oci::BootEntry entry = oci::prepare_boot(repo, boot->name, options);
    print("entry " + entry.entry_path + "\nkernel " + entry.kernel_version + " " +
          entry.kernel_path + "\ninitramfs " + entry.initramfs_path + "\noptions " + entry.options +
          "\n");
  });

  auto fsck = std::make_shared<FsckArgs>();
  CLI::App* fsck_cmd = oci_cmd->add_subcommand(
      "fsck", "Check the repository and the OCI images (all tagged ones, or IMAGE)");
  fsck_cmd->add_option("IMAGE", fsck->name, "Tag or @sha256:…");
  fsck_cmd->add_flag("--json", fsck->json, "JSON output (exit 0)");
  fsck_cmd->add_flag("--metadata-only", fsck->metadata_only,
                     "Skip hashing object data and layer contents");
  fsck_cmd->callback([fsck, &global] { run_fsck(*fsck, global); });
}

}  // namespace cfs::cli
