#include "mount_programs.h"

#include <limits.h>
#include <unistd.h>

#include <initializer_list>
#include <optional>
#include <string_view>

#include "cfs/error.h"
#include "cfsctl/build_config.h"

namespace cfs::cli {

namespace {

// The directory holding the running cfsctl.
std::string self_dir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n < 0) throw_errno("/proc/self/exe");
  std::string path(buf, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/'));
}

// The first executable DIR/name; every path tried is added to `tried`.
std::optional<std::string> find_program(std::string_view name,
                                        std::initializer_list<std::string> dirs,
                                        std::string& tried) {
  for (const auto& dir : dirs) {
    std::string path = dir + "/" + std::string(name);
    if (::access(path.c_str(), X_OK) == 0) return path;
    tried += (tried.empty() ? "" : ", ") + path;
  }
  return std::nullopt;
}

}  // namespace

bool built_with_fuse() {
  return CFS_WITH_FUSE;
}

std::string mount_program(bool fuse) {
  // Next to cfsctl first: the build tree, where the tests run.
  const std::string self = self_dir();
  std::string tried;
  if (!fuse && ::geteuid() == 0) {
    // Installed: sbin/ beside cfsctl's bin/ (also when the prefix was chosen or moved at
    // install time), else the configured sbin directory.
    if (auto path = find_program(
            "cfs-mount", {self, self + "/" CFS_BINDIR_TO_SBINDIR, CFS_INSTALL_SBINDIR}, tried))
      return *path;
    throw Error("oci mount: cfs-mount not found (looked for " + tried +
                "); as root images are mounted by the kernel through cfs-mount" +
                (CFS_WITH_FUSE ? ", or through FUSE with --fuse" : ""));
  }
  if (!CFS_WITH_FUSE)
    throw Error(std::string("oci mount: ") + (fuse ? "--fuse: " : "") +
                "this cfsctl is built without FUSE (CFS_WITH_FUSE=OFF); images are mounted by "
                "root only, through cfs-mount");
  if (auto path = find_program("cfs-fuse", {self, CFS_INSTALL_BINDIR}, tried)) return *path;
  throw Error("oci mount: cfs-fuse not found (looked for " + tried + ")");
}

}  // namespace cfs::cli
