#include "commands.h"

#include <unistd.h>

#include "cfs/error.h"
#include "cfs/output.h"

namespace cfs::cli {

const std::string& require_repo(const GlobalOptions& global, const std::string& command) {
  if (global.repo.empty()) throw Error(command + ": no repository given (use --repo DIR)");
  return global.repo;
}

void print(const std::string& text) {
  FdSink out(STDOUT_FILENO, "stdout");
  out.write(text);
  out.flush();
}

}  // namespace cfs::cli
