// cfs-fuse: mount a composefs image read-only through FUSE, as a normal user.
#include <fcntl.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cfs/error.h"
#include "cfs/fuse/image_fs.h"
#include "cfs/fuse/server.h"
#include "cfs/safe_open.h"
#include "cfs/store/repository.h"
#include "truncation_guard.h"

namespace {

constexpr const char* kUsage =
    "usage: cfs-fuse [--repo DIR | --basedir DIR] IMAGE MOUNTPOINT [-f] [-d] [-o OPTIONS]\n"
    "                [--threads N] [--splice] [--no-passthrough]\n"
    "\n"
    "Mounts the composefs image IMAGE read-only at MOUNTPOINT through FUSE (as any user;\n"
    "needs a readable /dev/fuse and fusermount3). Unmount with `fusermount3 -u MOUNTPOINT`\n"
    "or by sending SIGINT/SIGTERM to the server.\n"
    "\n"
    "  IMAGE          an image file, or with --repo an image id (hex) or ref name\n"
    "  --basedir DIR  object directory for external files (DIR/ab/cdef...); without it and\n"
    "                 --repo, external files read as EIO\n"
    "  --repo DIR     a cfs repository: IMAGE is looked up in DIR/images, objects come from\n"
    "                 DIR/objects (kernel fs-verity required if the repository is secure)\n"
    "  -f             stay in the foreground\n"
    "  -d             foreground with libfuse request tracing\n"
    "  -o OPTIONS     extra mount options (e.g. allow_other); ro, nosuid, nodev and\n"
    "                 default_permissions are always set (rw, suid and dev are refused)\n"
    "  --threads N    idle worker threads kept (default 8)\n"
    "  --splice       splice object data into /dev/fuse (slower here than copying)\n"
    "  --no-passthrough\n"
    "                 serve object data from this process even where FUSE passthrough is\n"
    "                 available (as root on Linux 6.9+, the kernel otherwise reads opened\n"
    "                 objects directly, after the same verification)\n"
    "\n"
    "Objects not protected by kernel fs-verity are digested in userspace before their\n"
    "first read; a mismatch, a missing object or a redirect that is not an object name\n"
    "reads as EIO and is logged once per open (stderr with -f, syslog otherwise).\n"
    "Objects are verified at open: bytes changed in an object file after that reach the\n"
    "handles already open (with or without passthrough); only fs-verity in the kernel\n"
    "(a secure repository) rules that out.\n";

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
  std::vector<std::string> positional;
  std::vector<std::string> mount_options;
  bool foreground = false, debug = false, splice = false, passthrough = true;
  unsigned threads = 8;
};

[[noreturn]] void usage_error(const std::string& message) {
  std::fprintf(stderr, "cfs-fuse: %s\n%s", message.c_str(), kUsage);
  std::exit(2);
}

Args parse_args(int argc, char** argv) {
  Args a;
  auto value = [&](int& i, std::string_view opt) -> std::string {
    if (i + 1 >= argc) usage_error(std::string(opt) + " needs a value");
    return argv[++i];
  };
  for (int i = 1; i < argc; i++) {
    std::string_view arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (arg == "--version") {
      std::puts("cfs-fuse " CFS_VERSION);
      std::exit(0);
    } else if (arg == "--repo") {
      a.repo = value(i, arg);
    } else if (arg.starts_with("--repo=")) {
      a.repo = std::string(arg.substr(7));
    } else if (arg == "--basedir") {
      a.basedir = value(i, arg);
    } else if (arg.starts_with("--basedir=")) {
      a.basedir = std::string(arg.substr(10));
    } else if (arg == "-f") {
      a.foreground = true;
    } else if (arg == "-d") {
      a.foreground = a.debug = true;
    } else if (arg == "-o") {
      a.mount_options.push_back(value(i, arg));
    } else if (arg.starts_with("-o")) {
      a.mount_options.emplace_back(arg.substr(2));
    } else if (arg == "--threads") {
      std::string v = value(i, arg);
      char* end = nullptr;
      unsigned long n = std::strtoul(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n == 0 || n > 1024)
        usage_error("--threads wants a number from 1 to 1024");
      a.threads = static_cast<unsigned>(n);
    } else if (arg == "--splice") {
      a.splice = true;
    } else if (arg == "--no-passthrough") {
      a.passthrough = false;
    } else if (arg == "--") {
      for (i++; i < argc; i++) a.positional.emplace_back(argv[i]);
    } else if (arg.size() > 1 && arg[0] == '-') {
      usage_error("unknown option " + std::string(arg));
    } else {
      a.positional.emplace_back(arg);
    }
  }
  for (const auto& opts : a.mount_options) {
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
  if (a.repo && a.basedir) usage_error("--repo and --basedir exclude each other");
  if (a.positional.size() != 2) usage_error("expected IMAGE and MOUNTPOINT");
  return a;
}

int run(const Args& args) {
  Logger logger;
  const std::string& image_arg = args.positional[0];
  const std::string& mountpoint = args.positional[1];
  // C-made images use the C tools' limits; external data is still accepted only through
  // object-named redirects (ObjectStore), so compat validation opens no extra door.
  const auto reader_options = cfs::erofs::ReaderOptions::compat();

  std::unique_ptr<cfs::store::Repository> repo;  // held open: its shared lock keeps GC away
  std::optional<cfs::erofs::Image> image;
  std::unique_ptr<cfs::fuse::ObjectStore> objects;
  if (args.repo) {
    repo = std::make_unique<cfs::store::Repository>(
        cfs::store::Repository::open(*args.repo, cfs::store::LockMode::shared));
    cfs::UniqueFd fd = repo->open_image(image_arg);
    image.emplace(
        cfs::erofs::Image::open_fd(fd.get(), *args.repo + "/images/" + image_arg, reader_options));
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

  cfs::fuse::ImageFs fs(std::move(*image), std::move(objects),
                        [&logger](const std::string& line) { logger.log(line); });
  cfs::fuse::ServerOptions options;
  options.mountpoint = mountpoint;
  options.mount_options = args.mount_options;
  options.fsname = args.repo ? *args.repo + ":" + image_arg : image_arg;
  options.foreground = args.foreground;
  options.debug = args.debug;
  options.splice = args.splice;
  options.passthrough = args.passthrough;
  options.idle_threads = args.threads;
  options.log = [&logger](const std::string& line) { logger.log(line); };
  options.on_serving = [&] {
    if (!args.foreground) logger.use_syslog();
  };
  return cfs::fuse::serve(fs, options);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_args(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cfs-fuse: %s\n", e.what());
    return 1;
  }
}
