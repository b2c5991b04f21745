// cfs-fuse: mount a composefs image read-only through FUSE, as a normal user.
#include <fcntl.h>
#include <syslog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "cfs/error.h"
#include "cfs/fuse/image_fs.h"
#include "cfs/fuse/overlay.h"
#include "cfs/fuse/server.h"
#include "cfs/main_frame.h"
#include "cfs/safe_open.h"
#include "cfs/store/repository.h"
#include "truncation_guard.h"
#if CFS_WITH_OCI
#include "cfs/oci/oci.h"
#endif

namespace {

constexpr const char* kDescription =
    "Mounts the composefs image IMAGE read-only at MOUNTPOINT through FUSE (as any user;\n"
    "needs a readable /dev/fuse and fusermount3). Unmount with `fusermount3 -u MOUNTPOINT`\n"
    "or by sending SIGINT/SIGTERM to the server.";

constexpr const char* kFooter =
    "Objects not protected by kernel fs-verity are digested in userspace before their\n"
    "first read; a mismatch, a missing object or a redirect that is not an object name\n"
    "reads as EIO and is logged once per open (stderr with -f, syslog otherwise).\n"
    "Objects are verified at open: bytes changed in an object file after that reach the\n"
    "handles already open (with or without passthrough); only fs-verity in the kernel\n"
    "(a secure repository) rules that out.";

// Log lines go to stderr until the server daemonises (stderr is then /dev/null), to syslog
// after that.
class Logger {
 public:
  void log(const std::string& line) {
    std::lock_guard lock(mutex_);
    if (syslog_)
      ::syslog(LOG_WARNING, "%s", line.c_str());
    else
      std::fprintf(stderr, "cfs-fuse: %s\n", line.c_str());
  }
  void use_syslog() {
    std::lock_guard lock(mutex_);
    ::openlog("cfs-fuse", LOG_PID, LOG_DAEMON);
    syslog_ = true;
  }

 private:
  std::mutex mutex_;
  bool syslog_ = false;
};

struct Args {
  std::optional<std::string> repo, basedir;
  std::string image, mountpoint;
  std::vector<std::string> mount_options;
  bool foreground = false, debug = false, splice = false, passthrough = true, stats = false;
  unsigned threads = 8;
  bool overlay = false, allow_missing_objects = false;
  std::optional<std::string> upper;
  std::vector<std::string> command;  // after "--" (overlay mode)
};

[[noreturn]] void usage_error(const std::string& message) {
  throw cfs::UsageError(message + "\nRun 'cfs-fuse --help' for usage.");
}

// -o takes what libfuse takes, except what would make the mount writable or let an image's
// setuid binaries and device nodes work.
void check_mount_options(const std::vector<std::string>& mount_options) {
  for (const auto& opts : mount_options) {
    std::string_view rest = opts;
    while (!rest.empty()) {
      std::string_view opt = rest.substr(0, rest.find(','));
      rest.remove_prefix(std::min(rest.size(), opt.size() + 1));
      if (opt == "rw") usage_error("-o rw: composefs images are read-only");
      // A root server with allow_other would otherwise hand every user the image's setuid
      // binaries and device nodes: images are data, not trusted system files.
      if (opt == "suid" || opt == "dev")
        usage_error("-o " + std::string(opt) +
                    ": refused; cfs-fuse mounts are always nosuid,nodev");
    }
  }
}

Args parse_args(int argc, char** argv) {
  Args a;
  // Everything after the first "--" is the command to run in the overlay's namespace.
  for (int i = 1; i < argc; i++) {
    if (std::string_view(argv[i]) != "--") continue;
    a.command.assign(argv + i + 1, argv + argc);
    argc = i;
    break;
  }
  CLI::App app{kDescription, "cfs-fuse"};
  app.set_version_flag("--version", "cfs-fuse " CFS_VERSION);
  app.footer(kFooter);
  app.add_option("IMAGE", a.image,
                 "an image file, or with --repo an image id (hex), ref name, or OCI tag or "
                 "@sha256:<manifest digest> of a pulled image")
      ->required();
  app.add_option("MOUNTPOINT", a.mountpoint, "existing directory to mount on")->required();
  auto* repo = app.add_option("--repo", a.repo,
                              "a cfs repository: IMAGE is looked up in DIR/images, objects come "
                              "from DIR/objects (kernel fs-verity required if the repository is "
                              "secure)")
                   ->type_name("DIR");
  app.add_option("--basedir", a.basedir,
                 "object directory for external files (DIR/ab/cdef...); without it and --repo, "
                 "external files read as EIO")
      ->type_name("DIR")
      ->excludes(repo);
  app.add_flag("-f", a.foreground, "stay in the foreground");
  bool debug = false;
  app.add_flag("-d", debug, "foreground with libfuse request tracing");
  // One option string per -o, so it never swallows IMAGE and MOUNTPOINT.
  app.add_option("-o", a.mount_options,
                 "extra mount options (e.g. allow_other); ro, nosuid, nodev and "
                 "default_permissions are always set (rw, suid and dev are refused)")
      ->type_name("OPTIONS")
      ->allow_extra_args(false);
  app.add_option(
         "--threads", a.threads,
         "idle worker threads kept (--overlay answers its metadata requests with one thread)")
      ->type_name("N")
      ->check(CLI::Range(1u, 1024u))
      ->capture_default_str();
  app.add_flag("--splice", a.splice,
               "splice object data into /dev/fuse (slower here than copying)");
  app.add_flag("--stats", a.stats,
               "when the mount ends, log how many requests of each kind were served (and "
               "getxattr per attribute name)");
  bool no_passthrough = false;
  app.add_flag("--no-passthrough", no_passthrough,
               "serve object data from this process even where FUSE passthrough is available "
               "(as root on Linux 6.9+, the kernel otherwise reads opened objects directly, "
               "after the same verification)");
  app.add_flag("--overlay", a.overlay,
               "rootless overlay mode: serve only the metadata, under a kernel overlayfs "
               "(userxattr) in a new user and mount namespace that reads object data directly; "
               "objects are verified before the mount (see below). The mount is visible only "
               "in that namespace: give a command after `--` to run there, or enter it with "
               "nsenter -t PID -U -m (the PID is printed)");
  app.add_option("--upper", a.upper,
                 "with --overlay: make the overlay writable, changes kept in DIR/upper (DIR/work "
                 "is its work directory; both created if absent)")
      ->type_name("DIR");
  app.add_flag("--allow-missing-objects", a.allow_missing_objects,
               "with --overlay: mount although objects are missing (their files read as EIO)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) throw cfs::ExitStatus(app.exit(e));  // --help, --version
    usage_error(e.what());
  }
  if (debug) a.foreground = a.debug = true;
  if (!a.overlay && (a.upper || a.allow_missing_objects || !a.command.empty()))
    usage_error("--upper, --allow-missing-objects and a command after -- need --overlay");
  if (a.overlay) a.foreground = true;
  a.passthrough = !no_passthrough;
  check_mount_options(a.mount_options);
  return a;
}

std::string absolute(const std::string& path) {
  char* real = ::realpath(path.c_str(), nullptr);
  if (!real) cfs::throw_errno(path);
  std::string out(real);
  std::free(real);
  return out;
}

// The check that makes the overlay safe to mount: every object the image names is verified
// here, or by the kernel on every read (verity=require) when all of them have fs-verity.
cfs::fuse::OverlayOptions check_objects_for_overlay(cfs::fuse::ImageFs& fs, const Args& args,
                                                    const std::string& objects_dir,
                                                    Logger& logger) {
  cfs::fuse::OverlayOptions o;
  o.mountpoint = absolute(args.mountpoint);
  o.objects_dir = absolute(objects_dir);
  if (args.upper) o.upper = absolute(*args.upper);
  o.command = args.command;
  o.notice = [&logger](const std::string& line) { logger.log(line); };
  cfs::fuse::ObjectCheck check;
  try {
    check = cfs::fuse::verify_image_objects(fs.image(), *fs.objects(),
                                            std::max(2u, std::thread::hardware_concurrency()));
  } catch (const cfs::fuse::ObjectError& e) {
    throw cfs::Error(std::string(e.what()) + " (refusing to mount)");
  }
  if (!check.missing.empty()) {
    std::string line = fs.objects()->name() + ": " + std::to_string(check.missing.size()) +
                       " object(s) the image names are missing, e.g. " + check.missing.front();
    if (!args.allow_missing_objects)
      throw cfs::Error(line +
                       " (mount anyway with --allow-missing-objects; their files then "
                       "read as EIO)");
    logger.log(line + "; their files read as EIO");
  }
  o.verity_require = check.digested == 0 && check.kernel_verity > 0 && check.all_have_digest;
  char mib[32];
  std::snprintf(mib, sizeof mib, "%.1f", static_cast<double>(check.bytes) / (1 << 20));
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.2f", check.seconds);
  logger.log("verified " + std::to_string(check.usable.size()) + " object(s), " + mib +
             " MiB, in " + secs + " s: " + std::to_string(check.kernel_verity) +
             " by kernel fs-verity, " + std::to_string(check.digested) + " digested here" +
             (o.verity_require ? "; overlay verity=require"
                               : "; objects changed after this check are not re-checked "
                                 "(no fs-verity)"));
  fs.serve_as_overlay_lower(std::move(check.usable));
  return o;
}

// IMAGE with --repo: an image id or images/refs name, else (with OCI support) an OCI tag or
// @sha256:<manifest digest>, whose composefs image 'cfsctl oci mount' would mount.
std::string resolve_repo_image(const cfs::store::Repository& repo, const std::string& name) {
  if (repo.resolve_image(name)) return name;
#if CFS_WITH_OCI
  return cfs::oci::image_id(repo, name).hex();
#else
  return name;  // open_image names the missing image
#endif
}

int run(const Args& args) {
  Logger logger;
  const std::string& image_arg = args.image;
  // libfuse moves the server to "/" (even with -f) and unmounts by this name when the session
  // ends: a relative name would then miss, leaving a dead mount behind.
  const std::string mountpoint =
      args.mountpoint.empty()
          ? args.mountpoint
          : std::filesystem::absolute(args.mountpoint).lexically_normal().string();
  // C-made images use the C tools' limits; external data is still accepted only through
  // object-named redirects (ObjectStore), so compat validation opens no extra door.
  const auto reader_options = cfs::erofs::ReaderOptions::compat();

  std::unique_ptr<cfs::store::Repository> repo;  // held open: its shared lock keeps GC away
  std::optional<cfs::erofs::Image> image;
  std::unique_ptr<cfs::fuse::ObjectStore> objects;
  if (args.repo) {
    repo = std::make_unique<cfs::store::Repository>(
        cfs::store::Repository::open(*args.repo, cfs::store::LockMode::shared));
    std::string image_name = resolve_repo_image(*repo, image_arg);
    cfs::UniqueFd fd = repo->open_image(image_name);
    image.emplace(
        cfs::erofs::Image::open_fd(fd.get(), *args.repo + "/images/" + image_name, reader_options));
    objects = std::make_unique<cfs::fuse::ObjectStore>(
        cfs::open_dir_beneath(repo->dirfd(), "objects", *args.repo + "/objects", true),
        *args.repo + "/objects",
        repo->secure() ? cfs::fuse::VerityPolicy::kernel : cfs::fuse::VerityPolicy::userspace);
  } else {
    image.emplace(cfs::erofs::Image::open(image_arg, reader_options));
    if (args.basedir)
      objects = std::make_unique<cfs::fuse::ObjectStore>(
          cfs::open_file(*args.basedir, O_PATH | O_DIRECTORY), *args.basedir,
          cfs::fuse::VerityPolicy::userspace);
  }
  // The whole rule set once, up front: a broken image is refused before anything is mounted.
  image->validate();
  cfs::fuse::guard_image_mapping(image->bytes());

  std::string objects_dir;
  if (args.overlay) {
    if (!objects) usage_error("--overlay needs the object directory (--basedir or --repo)");
    objects_dir = args.repo ? *args.repo + "/objects" : *args.basedir;
  }
  cfs::fuse::ImageFs fs(std::move(*image), std::move(objects),
                        [&logger](const std::string& line) { logger.log(line); });
  cfs::fuse::OverlayOptions overlay;
  if (args.overlay) overlay = check_objects_for_overlay(fs, args, objects_dir, logger);
  cfs::fuse::ServerOptions options;
  options.mountpoint = mountpoint;
  options.mount_options = args.mount_options;
  options.fsname = args.repo ? *args.repo + ":" + image_arg : image_arg;
  options.foreground = args.foreground;
  options.debug = args.debug;
  options.splice = args.splice;
  options.passthrough = args.passthrough;
  options.idle_threads = args.threads;
  options.stats = args.stats;
  options.log = [&logger](const std::string& line) { logger.log(line); };
  options.on_serving = [&] {
    if (!args.foreground) logger.use_syslog();
  };
  if (args.overlay) return cfs::fuse::serve_overlay(fs, options, overlay);
  return cfs::fuse::serve(fs, options);
}

}  // namespace

int main(int argc, char** argv) {
  return cfs::run_main("cfs-fuse", [&] { return run(parse_args(argc, argv)); });
}
