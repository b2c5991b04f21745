// cfsctl: one binary for the cfs command line and the C-compatible drop-ins. Invoked as
// "mkcomposefs" or "composefs-info" (argv[0], e.g. through a symlink) it behaves like the
// C tool; "cfsctl mkcomposefs ..." and "cfsctl composefs-info ..." do the same.
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/main_frame.h"
#include "commands.h"

namespace {

int run_cfsctl(int argc, char** argv) {
  CLI::App app{
      "cfsctl: build, inspect, store and mount composefs images.\n"
      "Drop-in modes: 'cfsctl mkcomposefs ...' and 'cfsctl composefs-info ...' (or run the\n"
      "binary under those names) accept the options of the composefs C tools."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "cfsctl " CFS_VERSION);
  cfs::cli::GlobalOptions global;
  auto* repo = app.add_option("--repo", global.repo, "Repository directory")->type_name("DIR");
  auto* user = app.add_flag("--user", global.user,
                            "Use the user's repository $HOME/.var/lib/composefs (the default "
                            "for users other than root)");
  auto* system =
      app.add_flag("--system", global.system,
                   "Use the system repository /sysroot/composefs (the default for root)");
  repo->excludes(user)->excludes(system);
  user->excludes(system);
  app.add_option("--hash", global.hash,
                 "Expected hash algorithm of the repository: sha256 or sha512 (taken from "
                 "meta.json; a different one is an error)")
      ->check(CLI::IsMember({"sha256", "sha512"}));
  app.add_flag("--no-upgrade", global.no_upgrade,
               "Refuse a repository without meta.json instead of writing one (composefs-rs' "
               "upgrade of repositories from before meta.json)");
  app.add_flag("--require-verity", global.require_verity,
               "Refuse a repository that does not have fs-verity enabled");
  // composefs-rs keeps --insecure (hidden) for old scripts: security comes from meta.json,
  // and --insecure overrides it for this run (see cfsctl(1)).
  app.add_flag("--insecure", global.insecure, "")->group("");
  app.add_flag("--no-repo", global.no_repo,
               "Open no repository: compute-id, compute-karg and create-dumpfile then use "
               "--hash (default sha512) instead of the repository's algorithm; other commands "
               "refuse it");
  app.add_option("--erofs-version", global.erofs_version,
                 "EROFS format 0, 1 or 2 (composefs-rs' V2) of the images this command writes or "
                 "looks up, instead of the repository's erofs_formats (meta.json is not changed); "
                 "compute-id's format (default 1)")
      ->check(CLI::Range(0, 2));
  cfs::cli::register_image_commands(app, global);
  cfs::cli::register_repo_commands(app, global);
#if CFS_WITH_OCI
  cfs::cli::register_oci_commands(app, global);
#endif
  // `oci mount ... -- COMMAND...`: CLI11 would hand the words after "--" to the top-level
  // command, which takes none; without the marker they stay with `oci mount`, which reads
  // everything after its IMAGE and MOUNTPOINT as the command.
  std::vector<char*> args(argv, argv + argc);
  std::string fuse_yes = "--fuse=yes";
  for (int i = 2; i < argc; i++) {
    if (std::string_view(argv[i - 1]) == "oci" && std::string_view(argv[i]) == "mount") {
      auto marker = std::find_if(args.begin() + i, args.end(),
                                 [](const char* a) { return std::string_view(a) == "--"; });
      // cfs' older bare `--fuse` flag means `--fuse yes` (composefs-rs' --fuse takes a value).
      for (auto it = args.begin() + i; it != marker; ++it) {
        if (std::string_view(*it) != "--fuse") continue;
        auto next = it + 1;
        std::string_view value = next != marker ? std::string_view(*next) : "";
        if (value != "auto" && value != "yes" && value != "no") *it = fuse_yes.data();
      }
      if (marker != args.end()) args.erase(marker);
      break;
    }
  }
  try {
    app.parse(static_cast<int>(args.size()), args.data());
  } catch (const CLI::ParseError& e) {
    // --help/--version exit 0; every usage error exits 2, as getopt-based tools do.
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  return 0;
}

int dispatch(std::string_view self, int argc, char** argv) {
  if (self == "mkcomposefs") return cfs::cli::mkcomposefs_main(argc - 1, argv + 1);
  if (self == "composefs-info") return cfs::cli::composefs_info_main(argc - 1, argv + 1);
  std::string_view command = argc > 1 ? argv[1] : "";
  if (command == "mkcomposefs") return cfs::cli::mkcomposefs_main(argc - 2, argv + 2);
  if (command == "composefs-info") return cfs::cli::composefs_info_main(argc - 2, argv + 2);
  return run_cfsctl(argc, argv);
}

}  // namespace

int main(int argc, char** argv) {
  std::string_view self = cfs::program_name(argc, argv, "cfsctl");
  return cfs::run_main(self, [&] { return dispatch(self, argc, argv); });
}
