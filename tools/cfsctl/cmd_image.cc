// Image commands: dump, compute-id (to be implemented).
#include "commands.h"

namespace cfs::cli {
void register_image_commands(CLI::App&, GlobalOptions&) {}
}  // namespace cfs::cli
