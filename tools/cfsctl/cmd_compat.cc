// mkcomposefs / composefs-info drop-in modes (to be implemented).
#include <cstdio>

#include "commands.h"

namespace cfs::cli {
int mkcomposefs_main(int, char**) {
  std::fprintf(stderr, "mkcomposefs: not implemented yet\n");
  return 1;
}
int composefs_info_main(int, char**) {
  std::fprintf(stderr, "composefs-info: not implemented yet\n");
  return 1;
}
}  // namespace cfs::cli
