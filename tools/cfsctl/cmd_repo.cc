// Repository commands (to be implemented with the store).
#include "commands.h"

namespace cfs::cli {
void register_repo_commands(CLI::App&, GlobalOptions&) {}
}  // namespace cfs::cli
