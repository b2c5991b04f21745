// Parses a dumpfile given on stdin with the installed cfs library and prints it back.
#include <unistd.h>

#include <cstdio>

#include "cfs/erofs/dumpfile.h"
#include "cfs/error.h"

int main() {
  try {
    cfs::erofs::Tree tree = cfs::erofs::parse_dumpfile_fd(STDIN_FILENO, "<stdin>");
    std::fputs(cfs::erofs::dumpfile_to_string(tree).c_str(), stdout);
  } catch (const cfs::Error& e) {
    std::fprintf(stderr, "consumer: %s\n", e.what());
    return 1;
  }
  return 0;
}
