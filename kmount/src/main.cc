// cfs-mount: privileged kernel mounts of composefs images; also the mount.composefs helper
// (selected by argv[0]) and `cfs-mount setup-root`, the initramfs step.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/error.h"
#include "cfs/kmount/mount.h"
#include "cfs/kmount/options.h"
#include "cfs/kmount/repo.h"
#include "cfs/kmount/setup_root.h"
#include "cfs/main_frame.h"

namespace {

using namespace cfs::kmount;

int run_mount(int argc, char** argv) {
  CLI::App app{"Mount a composefs image with the kernel (EROFS + overlayfs)", "cfs-mount"};
  std::string image, target, repo, digest_hex, verity_text, upperdir, workdir, idmap;
  std::vector<std::string> basedirs;
  bool writable = false, verbose = false, insecure = false;
  app.add_option("IMAGE", image,
                 "image file; with --repo an image id (hex) or a ref below images/refs/ (a "
                 "file then needs a path starting with /, ./ or ../)")
      ->required();
  app.add_option("MOUNTPOINT", target, "existing directory to mount on")->required();
  app.add_option("--repo", repo, "composefs repository: images/ and objects/");
  // One directory per --basedir, so the option never swallows IMAGE and MOUNTPOINT.
  app.add_option("--basedir", basedirs, "object directory (repeatable)")->allow_extra_args(false);
  app.add_option("--digest", digest_hex, "expected fs-verity digest of the image (hex)");
  app.add_option("--verity", verity_text, "overlayfs fs-verity checking: require, try or off");
  app.add_option("--upperdir", upperdir, "overlay upper directory (with --workdir)");
  app.add_option("--workdir", workdir, "overlay work directory (with --upperdir)");
  app.add_flag("--rw", writable, "mount writable (needs --upperdir and --workdir)");
  app.add_flag("--insecure", insecure,
               "with --repo: do not force --verity require on a secure repository (what "
               "composefs-rs' cfsctl --insecure does; cfsctl passes it on)");
  app.add_option("--idmap", idmap, "idmap the image through this user namespace file");
  app.add_flag("-v,--verbose", verbose, "print how the mount was made");
  bool allow_missing = false;
  app.add_flag("--allow-missing-objects", allow_missing,
               "mount even when objects the image names are missing (their reads fail)");
  app.footer(
      "Subcommand: cfs-mount setup-root [--cmdline FILE] [--sysroot DIR] [--config FILE]\n"
      "Test overrides (environment): CFS_MOUNT_FORCE_TIER=fd|string|legacy-dataonly|"
      "legacy-lower, CFS_MOUNT_FORCE_LOOP=1, CFS_MOUNT_FORCE_ATTACHED=1");
  CLI11_PARSE(app, argc, argv);

  MountOptions options;
  options.overrides = KernelOverrides::from_environment();
  options.object_dirs = basedirs;
  options.upperdir = upperdir;
  options.workdir = workdir;
  options.writable = writable;
  options.idmap_userns = idmap;
  options.check_objects = !allow_missing;
  if (!digest_hex.empty()) {
    options.expected_digest = cfs::Digest::from_hex(digest_hex);
    if (!options.expected_digest)
      throw cfs::Error("--digest " + digest_hex + ": not a sha256 or sha512 digest in hex");
  }
  std::optional<VerityMode> verity;
  if (!verity_text.empty()) {
    verity = parse_verity_mode(verity_text);
    if (!verity) throw cfs::Error("--verity " + verity_text + ": expected require, try or off");
  }

  std::string image_path = image;
  std::string mount_path = image;
  std::optional<RepoImage> resolved;  // its fds stay open until the mount is done
  cfs::UniqueFd objects;              // REPO/objects when the image is given as a path
  if (!repo.empty()) {
    // Paths are spelled as paths; anything else is a name inside the repository.
    bool is_path = image.starts_with('/') || image.starts_with("./") || image.starts_with("../");
    if (!is_path) {
      resolved = resolve_repo_image(repo, image);
      image_path = resolved->image_path;
      // The fds resolved beneath the repository, so the mount cannot be redirected by a
      // symlink swapped in after the checks.
      mount_path = resolved->mount_path();
      if (options.expected_digest && *options.expected_digest != resolved->id)
        throw cfs::Error("--digest " + digest_hex + " contradicts the image id " +
                         resolved->id.hex());
      options.expected_digest = resolved->id;
    }
    if (!resolved) objects = open_repo_objects(repo);
    options.object_dirs.insert(options.object_dirs.begin(),
                               resolved ? resolved->objects_path() : repo_fd_path(objects.get()));
    if (!insecure && repository_is_secure(repo)) {
      if (verity && *verity != VerityMode::require)
        throw cfs::Error(repo +
                         ": a secure repository (fs-verity on meta.json) is mounted with "
                         "--verity require only");
      verity = VerityMode::require;
    }
  }
  options.verity = verity.value_or(VerityMode::off);

  auto start = std::chrono::steady_clock::now();
  MountReport report = mount_image(mount_path, target, options);
  std::chrono::duration<double, std::milli> took = std::chrono::steady_clock::now() - start;
  if (verbose)
    std::cout << image_path << " on " << target << " in " << took.count()
              << " ms: " << report.summary() << "\n";
  return 0;
}

// mount(8) calls: mount.composefs SOURCE TARGET [-sfnv] [-N namespace] [-o OPTIONS] [-t TYPE]
constexpr std::string_view kHelperUsage =
    "usage: mount.composefs [-t composefs] [-fnsv] -o OPTIONS IMAGE MOUNTPOINT\n"
    "OPTIONS (comma-separated, \\ escapes a comma in a value):\n"
    "  basedir=DIR[:DIR...]   object directories (required)\n"
    "  digest=HEX             fs-verity digest the image must have (implies verity)\n"
    "  verity | tryverity     require / use fs-verity on the objects\n"
    "  upperdir=D,workdir=W   writable overlay (both or neither)\n"
    "  idmap=/proc/PID/ns/user  idmapped mount\n"
    "  ro | rw\n"
    "  allow_missing_objects  mount although objects the image names are missing\n"
    "  -f fake (parse only)  -v verbose  -s -n accepted and ignored\n"
    "See mount.composefs(8).\n";

int run_helper(int argc, char** argv) {
  for (int i = 1; i < argc; i++) {
    std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::cout << kHelperUsage;
      return 0;
    }
    if (arg == "-o" || arg == "-t" || arg == "-N") i++;
  }
  std::vector<std::string> positional;
  std::string opts;
  bool verbose = false, fake = false;
  for (int i = 1; i < argc; i++) {
    std::string_view arg = argv[i];
    if ((arg == "-o" || arg == "-t" || arg == "-N") && i + 1 < argc) {
      if (arg == "-o") opts += (opts.empty() ? "" : ",") + std::string(argv[i + 1]);
      if (arg == "-t" && std::string_view(argv[i + 1]) != "composefs")
        throw cfs::Error(std::string("unexpected filesystem type ") + argv[i + 1]);
      if (arg == "-N") throw cfs::Error("-N (namespace) is not supported");
      i++;
    } else if (arg.size() > 1 && arg[0] == '-') {
      for (char c : arg.substr(1)) {
        if (c == 'v')
          verbose = true;
        else if (c == 'f')
          fake = true;
        else if (c != 's' && c != 'n')
          throw cfs::Error(std::string("unknown flag -") + c + " (-h for usage)");
      }
    } else {
      positional.emplace_back(arg);
    }
  }
  if (positional.size() != 2) throw cfs::Error("expected IMAGE and MOUNTPOINT (-h for usage)");
  MountOptions options;
  options.overrides = KernelOverrides::from_environment();
  apply_composefs_options(opts, &options);
  if (fake) return 0;
  MountReport report = mount_image(helper_image_source(positional[0]), positional[1], options);
  if (verbose)
    std::cout << positional[0] << " on " << positional[1] << ": " << report.summary() << "\n";
  return 0;
}

int run_setup_root(int argc, char** argv) {
  CLI::App app{
      "Initramfs step: mount the composefs image named on the kernel command line as "
      "the new root on the sysroot, with /etc and /var from its state directory",
      "cfs-mount setup-root"};
  SetupRootOptions options;
  app.add_option("--cmdline", options.cmdline_file, "kernel command line file")
      ->capture_default_str();
  app.add_option("--sysroot", options.sysroot, "physical root filesystem")->capture_default_str();
  app.add_option("--config", options.config_file, "configuration (TOML subset)")
      ->capture_default_str();
  app.add_option("--gpt-auto-root", options.gpt_auto_root,
                 "block device whose number goes into --volatile-root (systemd#35017); empty: "
                 "skip")
      ->capture_default_str();
  app.add_option("--volatile-root", options.volatile_root,
                 "symlink for systemd to find the physical root")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  options.overrides = KernelOverrides::from_environment();
  try {
    setup_root(options, [](std::string_view line) {
      std::cout << "composefs-setup-root: " << line << std::endl;
    });
  } catch (const cfs::Error& e) {
    std::cerr << "composefs-setup-root: FAILED: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}

int dispatch(std::string_view self, int argc, char** argv) {
  if (self == "mount.composefs") return run_helper(argc, argv);
  if (argc > 1 && std::string_view(argv[1]) == "setup-root")
    return run_setup_root(argc - 1, argv + 1);
  return run_mount(argc, argv);
}

}  // namespace

int main(int argc, char** argv) {
  std::string_view self = cfs::program_name(argc, argv, "cfs-mount");
  return cfs::run_main(self, [&] { return dispatch(self, argc, argv); });
}
