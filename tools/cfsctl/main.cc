// cfsctl: one binary for the cfs command line and the C-compatible drop-ins. Invoked as
// "mkcomposefs" or "composefs-info" (argv[0], e.g. through a symlink) it behaves like the
// C tool; "cfsctl mkcomposefs ..." and "cfsctl composefs-info ..." do the same.
#include <string_view>

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
  app.add_option("--repo", global.repo, "Repository directory")->type_name("DIR");
  app.add_option(
         "--erofs-version", global.erofs_version,
         "EROFS format of compute-id without --repo: 0, 1 (default) or 2 (composefs-rs' V2)")
      ->check(CLI::Range(0, 2));
  cfs::cli::register_image_commands(app, global);
  cfs::cli::register_repo_commands(app, global);
#if CFS_WITH_OCI
  cfs::cli::register_oci_commands(app, global);
#endif
  try {
    app.parse(argc, argv);
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
