#include "cfsctl_runner.h"

#include <chrono>

#include "testdata.h"

namespace cfs::store {

std::string cfsctl_binary() {
  return std::string(CFS_BINDIR) + "/cfsctl";
}

CliResult run_cfsctl(const std::string& args, int timeout_seconds) {
  std::string command = test::quote(cfsctl_binary()) + " " + args + " 2>&1";
  if (timeout_seconds > 0) command = "timeout " + std::to_string(timeout_seconds) + " " + command;
  CliResult r;
  auto start = std::chrono::steady_clock::now();
  r.status = test::run(command, &r.out);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace cfs::store
