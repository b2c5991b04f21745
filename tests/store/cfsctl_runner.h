// Running the built cfsctl in the repository command-line tests.
#pragma once

#include <string>

namespace cfs::store {

// The cfsctl binary of this build.
std::string cfsctl_binary();

struct CliResult {
  int status;
  std::string out;  // stdout and stderr
  double seconds = 0;
};

// Runs cfsctl with args (shell words, already quoted). With timeout_seconds > 0 it runs under
// timeout(1), so that a regression to a hang fails the test (status 124) instead of the run.
CliResult run_cfsctl(const std::string& args, int timeout_seconds = 0);

}  // namespace cfs::store
