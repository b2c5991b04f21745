// cfsctl: one binary for the cfs command line and the C-compatible drop-ins. Invoked as
// "mkcomposefs" or "composefs-info" (argv[0], e.g. through a symlink) it behaves like the
// C tool; "cfsctl mkcomposefs ..." and "cfsctl composefs-info ..." do the same.
#include <cstdio>
#include <cstring>
#include <string_view>

#include "cfs/error.h"
#include "commands.h"

namespace {

std::string_view basename_of(const char* path) {
  std::string_view p(path);
  auto slash = p.rfind('/');
  return slash == std::string_view::npos ? p : p.substr(slash + 1);
}

int run_cfsctl(int argc, char** argv) {
  CLI::App app{
      "cfsctl: build, inspect, store and mount composefs images.\n"
      "Drop-in modes: 'cfsctl mkcomposefs ...' and 'cfsctl composefs-info ...' (or run the\n"
      "binary under those names) accept the options of the composefs C tools."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "cfsctl " CFS_VERSION);
  cfs::cli::GlobalOptions global;
  app.add_option("--repo", global.repo, "Repository directory")->type_name("DIR");
  cfs::cli::register_image_commands(app, global);
  cfs::cli::register_repo_commands(app, global);
#if CFS_WITH_OCI
  cfs::cli::register_oci_commands(app, global);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& e) {
    // Thrown by a command that already reported its failure: keep its exit code.
    return e.get_exit_code();
  } catch (const CLI::ParseError& e) {
    // --help/--version exit 0; every usage error exits 2, as getopt-based tools do.
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string_view self = argc > 0 ? basename_of(argv[0]) : "cfsctl";
  try {
    if (self == "mkcomposefs") return cfs::cli::mkcomposefs_main(argc - 1, argv + 1);
    if (self == "composefs-info") return cfs::cli::composefs_info_main(argc - 1, argv + 1);
    if (argc > 1 && std::strcmp(argv[1], "mkcomposefs") == 0)
      return cfs::cli::mkcomposefs_main(argc - 2, argv + 2);
    if (argc > 1 && std::strcmp(argv[1], "composefs-info") == 0)
      return cfs::cli::composefs_info_main(argc - 2, argv + 2);
    return run_cfsctl(argc, argv);
  } catch (const CLI::RuntimeError& e) {
    return e.get_exit_code();
  } catch (const cfs::Error& e) {
    std::fprintf(stderr, "%s: %s\n", std::string(self).c_str(), e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "%s: out of memory\n", std::string(self).c_str());
    return 1;
  } catch (const std::exception& e) {
    // Library exceptions (nlohmann, std::filesystem, ...) that escaped a command: still a
    // message and exit 1, never std::terminate's abort.
    std::fprintf(stderr, "%s: %s\n", std::string(self).c_str(), e.what());
    return 1;
  }
}
