// OCI commands: cfsctl --repo DIR oci
// pull|images|inspect|tag|untag|image-id|mount|prepare-boot|fsck.
// Thin wrappers over cfs_oci; every rule lives in the library.
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
#include "mount_programs.h"

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
                             store::Repository repo =
                                 store::Repository::open(require_repo(g, "oci " + name));
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
};

void run_pull(store::Repository& repo, const PullArgs& args) {
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

void add_pull_command(CLI::App& oci_cmd, const GlobalOptions& global) {
  auto [cmd, args] = add_oci_command<PullArgs>(
      oci_cmd, global, "pull",
      "Import an image: oci:DIR[:REF], oci-archive:FILE[:REF], docker-archive:FILE[:TAG], or "
      "anything skopeo understands (docker://…, containers-storage:…). Every blob digest and "
      "layer diff_id is verified; the EROFS image is built and stored at once.",
      run_pull);
  cmd->add_option("SOURCE", args->source, "Image reference")->required();
  cmd->add_option("TAG", args->tag, "Tag to store it under (default: SOURCE)");
  cmd->add_flag("--bootable", args->bootable,
                "Also build the boot image (/boot, /sysroot emptied; SELinux relabel)");
  cmd->add_flag("-q,--quiet", args->quiet, "No progress output");
  add_xattrs_option(cmd, args->xattrs, "Xattrs the images keep");
  cmd->add_option("--threads", args->threads, "Parallel layer imports (default: CPUs)");
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

// ---- mount -----------------------------------------------------------------------------

struct MountArgs {
  ImageVariant image;
  std::string mountpoint;
  bool fuse = false;
};

void run_mount(const MountArgs& args, const GlobalOptions& global) {
  std::string program = mount_program(args.fuse);
  std::string id;
  {
    // Closed before the exec: the mount program takes the repository lock itself.
    store::Repository repo = store::Repository::open(require_repo(global, "oci mount"));
    id = args.image.id(repo).hex();
  }
  std::vector<std::string> argv_s = {program, "--repo", global.repo, id, args.mountpoint};
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  ::execv(program.c_str(), argv.data());
  throw_errno("oci mount: exec " + program);
}

void add_mount_command(CLI::App& oci_cmd, const GlobalOptions& global) {
  auto [cmd, args] = add_command<MountArgs>(
      oci_cmd, global, "mount",
      "Mount an image: the kernel (cfs-mount) as root, cfs-fuse otherwise", run_mount);
  add_variant_options(cmd, args->image, "Mount the boot image");
  cmd->add_option("MOUNTPOINT", args->mountpoint, "Existing directory")->required();
  cmd->add_flag("--fuse", args->fuse,
                built_with_fuse() ? "Use cfs-fuse even as root"
                                  : "Use cfs-fuse (not in this build: CFS_WITH_FUSE=OFF)");
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
  if (!args.expected_digest.empty()) {
    options.expected_digest = Digest::from_hex(args.expected_digest, repo.algorithm());
    if (!options.expected_digest)
      throw Error("--expected-digest '" + args.expected_digest + "' is not a " +
                  std::string(algorithm_name(repo.algorithm())) + " digest in hex");
  }
  oci::BootEntry entry = oci::prepare_boot(repo, args.name, options);
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
      "Copy the kernel and initramfs of a bootable image (pulled with --bootable) from "
      "/usr/lib/modules/<kver>/ to BOOTDIR/<entry-id>/ and write the Boot Loader Specification "
      "entry BOOTDIR/loader/entries/<entry-id>.conf that boots its composefs image. An image "
      "that ships unified kernel images (/boot/EFI/Linux/*.efi, /usr/lib/modules/<kver>/*.efi, "
      "with their .efi.extra.d addons) gets those copied to BOOTDIR/EFI/Linux instead, each "
      "refused unless its .cmdline composefs.digest= names the image's boot image",
      run_prepare_boot);
  cmd->add_option("IMAGE", args->name, "Tag or @sha256:…")->required();
  cmd->add_option("--bootdir", args->options.bootdir, "Boot partition root")->capture_default_str();
  cmd->add_option("--expected-digest", args->expected_digest,
                  "Refuse unless the boot image's id is this (hex)");
  cmd->add_option("--entry-id", args->entry_id, "Entry name (default: the kernel version)");
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
  add_image_id_command(*oci_cmd, global);
  add_mount_command(*oci_cmd, global);
  add_prepare_boot_command(*oci_cmd, global);
  add_boot_entry_commands(*oci_cmd, global);
  add_fsck_command(*oci_cmd, global);
}

}  // namespace cfs::cli
