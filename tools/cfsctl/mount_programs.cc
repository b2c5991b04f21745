#include "mount_programs.h"

#include <vector>

#include <limits.h>
#include <unistd.h>

#include <initializer_list>
#include <optional>
#include <string_view>

#include "cfs/error.h"
#include "cfs/main_frame.h"
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

std::string choose_mount_program(const MountRequest& r) {
  if (r.upperdir.empty() != r.workdir.empty())
    throw Error(r.command + ": --upperdir and --workdir go together");
  if (r.read_write && r.upperdir.empty())
    throw Error(r.command + ": --read-write needs --upperdir and --workdir");
  if (!r.overlay && (!r.overlay_upper.empty() || r.allow_missing_objects || !r.run_command.empty()))
    throw UsageError(r.command + ": --upper, --allow-missing-objects and a command need --overlay");
  if (r.overlay && !r.upperdir.empty())
    throw UsageError(r.command + ": --overlay takes --upper, not --upperdir/--workdir");
  bool fuse = r.overlay || r.fuse == "yes" || (r.fuse == "auto" && ::geteuid() != 0);
  if (r.fuse == "no" && ::geteuid() != 0)
    throw Error(r.command + ": --fuse no: kernel mounts need root");
  if (fuse && !r.upperdir.empty())
    throw Error(r.command +
                ": --upperdir: cfs-fuse serves images read-only; a writable overlay "
                "needs a kernel mount (as root, --fuse no or auto)");
  return mount_program(fuse);
}

void exec_mount(const MountRequest& r) {
  std::string program = choose_mount_program(r);
  std::vector<std::string> args = {program, "--repo", r.repo, r.image, r.mountpoint};
  const bool kernel = program.ends_with("/cfs-mount") || program == "cfs-mount";
  if (r.insecure && kernel) args.push_back("--insecure");
  if (r.foreground && !kernel && !r.overlay) args.push_back("-f");
  if (!r.upperdir.empty()) {
    args.insert(args.end(), {"--upperdir", r.upperdir, "--workdir", r.workdir});
    if (r.read_write) args.push_back("--rw");
  }
  if (r.overlay) {
    args.push_back("--overlay");
    if (!r.overlay_upper.empty()) args.insert(args.end(), {"--upper", r.overlay_upper});
    if (r.allow_missing_objects) args.push_back("--allow-missing-objects");
    if (!r.run_command.empty()) {
      args.push_back("--");
      args.insert(args.end(), r.run_command.begin(), r.run_command.end());
    }
  }
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  ::execv(program.c_str(), argv.data());
  throw_errno(r.command + ": exec " + program);
}

}  // namespace cfs::cli
