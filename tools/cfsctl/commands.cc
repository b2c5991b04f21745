#include "commands.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

#include "cfs/error.h"
#include "cfs/output.h"

namespace cfs::cli {

std::string require_repo(const GlobalOptions& global, const std::string& command) {
  if (!global.repo.empty()) return global.repo;
  bool system = global.system || (!global.user && ::getuid() == 0);
  if (system) return "/sysroot/composefs";
  const char* home = std::getenv("HOME");
  if (!home || !*home)
    throw Error(command + ": $HOME is not set, so there is no user repository (use --repo DIR)");
  return std::string(home) + "/.var/lib/composefs";
}

store::Repository open_repo(const GlobalOptions& global, const std::string& command,
                            store::LockMode lock) {
  if (global.no_repo)
    throw UsageError(command +
                     ": --no-repo is only supported for compute-id, compute-karg and "
                     "create-dumpfile");
  std::string path = require_repo(global, command);
  store::Repository repo = store::Repository::open(
      path, lock, global.no_upgrade ? store::MissingMeta::refuse : store::MissingMeta::upgrade);
  if (repo.upgraded())
    std::fprintf(stderr, "cfsctl: %s: upgraded a repository without meta.json (wrote %s %s)\n",
                 path.c_str(), repo.secure() ? "secure" : "insecure",
                 repo.meta().algorithm_string().c_str());
  if (!global.hash.empty() && global.hash != algorithm_name(repo.algorithm()))
    throw Error(path + ": repository is configured for " + repo.meta().algorithm_string() +
                " (from meta.json) but --hash " + global.hash + " was given");
  if (global.insecure) repo.set_insecure();
  if (global.require_verity && !repo.secure())
    throw Error(path + ": repository does not have fs-verity enabled (--require-verity)");
  // composefs-rs: --erofs-version overrides meta.json's formats for this command only.
  if (global.erofs_version) repo.set_erofs_version(*global.erofs_version);
  return repo;
}

void print(const std::string& text) {
  FdSink out(STDOUT_FILENO, "stdout");
  out.write(text);
  out.flush();
}

}  // namespace cfs::cli
