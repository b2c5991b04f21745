// mkcomposefs and composefs-info as their own small binary (installed as mkcomposefs, with
// composefs-info a symlink to it; the tool is chosen by argv[0]). It links the image library
// only: cfsctl also carries the repository, OCI and registry code and their libraries, whose
// loading alone costs several MiB of resident memory and milliseconds of start-up on every
// run. `cfsctl mkcomposefs` and `cfsctl composefs-info` run the same code.
#include <string_view>

#include "cfs/main_frame.h"
#include "commands.h"

int main(int argc, char** argv) {
  std::string_view self = cfs::program_name(argc, argv, "mkcomposefs");
  return cfs::run_main(self, [&] {
    if (self == "composefs-info") return cfs::cli::composefs_info_main(argc - 1, argv + 1);
    return cfs::cli::mkcomposefs_main(argc - 1, argv + 1);
  });
}
