#include "cfs/fuse/overlay.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/fs_context.h"
#include "cfs/kernel_verity.h"

namespace cfs::fuse {

namespace {

struct ObjectRef {
  std::string path;  // "ab/cdef…"
  std::string_view redirect;
  std::optional<Digest> metacopy;
  uint64_t size = 0;
};

// Every external file's object, once per object path, by a walk over the directories.
std::vector<ObjectRef> object_refs(const erofs::Image& image, bool& all_have_digest) {
  std::vector<ObjectRef> refs;
  std::unordered_set<std::string_view> seen;
  std::vector<uint64_t> dirs{image.root_nid()};
  while (!dirs.empty()) {
    erofs::InodeInfo dir = image.inode(dirs.back());
    dirs.pop_back();
    erofs::DirCursor cursor = image.dirents(dir);
    erofs::DirEntry e;
    while (cursor.next(e)) {
      if (e.name == "." || e.name == "..") continue;
      if (e.file_type == erofs::kFtDir) {
        dirs.push_back(e.nid);
        continue;
      }
      if (e.file_type != erofs::kFtRegFile) continue;
      erofs::InodeInfo inode = image.inode(e.nid);
      if (!inode.is_external()) continue;
      auto redirect = image.redirect(inode);
      if (!redirect) image.fail(inode.nid, "external file without a redirect");
      std::string_view path = redirect->starts_with('/') ? redirect->substr(1) : *redirect;
      if (!seen.insert(path).second) continue;
      if (!image.metacopy_digest(inode)) all_have_digest = false;
      refs.push_back({std::string(path), *redirect, image.metacopy_digest(inode), inode.size});
    }
  }
  return refs;
}

}  // namespace

ObjectCheck verify_image_objects(const erofs::Image& image, const ObjectStore& objects,
                                 unsigned threads) {
  auto t0 = std::chrono::steady_clock::now();
  ObjectCheck check;
  std::vector<ObjectRef> refs = object_refs(image, check.all_have_digest);
  std::mutex mutex;
  std::exception_ptr failure;
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (;;) {
      size_t i = next.fetch_add(1);
      if (i >= refs.size()) return;
      const ObjectRef& ref = refs[i];
      try {
        if (!objects.exists(ref.path)) {
          std::lock_guard lock(mutex);
          check.missing.push_back(ref.path);
          continue;
        }
        UniqueFd fd = objects.open(ref.redirect, ref.metacopy, ref.size);
        bool kernel = measure_verity(fd.get(), objects.name() + "/" + ref.path).has_value();
        std::lock_guard lock(mutex);
        check.usable.insert(ref.path);
        check.bytes += ref.size;
        (kernel ? check.kernel_verity : check.digested)++;
      } catch (...) {
        std::lock_guard lock(mutex);
        if (!failure) failure = std::current_exception();
        next.store(refs.size());  // stop the others early
        return;
      }
    }
  };
  {
    std::vector<std::jthread> pool;
    for (unsigned i = 1; i < std::max(1u, threads); i++) pool.emplace_back(work);
    work();
  }
  if (failure) std::rethrow_exception(failure);
  check.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return check;
}

namespace {

void write_file(const std::string& path, const std::string& text) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) throw_errno(path);
  if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()))
    throw_errno(path + ": writing '" + text + "'");
}

// This user becomes root of a new user namespace (real root keeps every uid as itself, so
// the image's owners stay visible), with a mount namespace of its own whose mounts never
// propagate back.
void enter_namespaces() {
  uid_t uid = ::geteuid();
  gid_t gid = ::getegid();
  if (uid != 0) {
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0)
      throw_errno(
          "unshare(user and mount namespace) (are user namespaces restricted here? see "
          "user.max_user_namespaces)");
    write_file("/proc/self/setgroups", "deny");
    write_file("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1\n");
    write_file("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1\n");
  } else {
    // A map beyond one's own id must be written from the parent namespace: a helper that
    // stays outside writes it once we are in.
    int go[2];
    if (::pipe2(go, O_CLOEXEC) != 0) throw_errno("pipe");
    UniqueFd go_read(go[0]), go_write(go[1]);
    pid_t self = ::getpid();
    pid_t helper = ::fork();
    if (helper < 0) throw_errno("fork");
    if (helper == 0) {
      go_write.reset();
      char c;
      if (::read(go_read.get(), &c, 1) != 1) ::_exit(2);
      try {
        for (const char* map : {"uid_map", "gid_map"})
          write_file("/proc/" + std::to_string(self) + "/" + map, "0 0 4294967295\n");
      } catch (const std::exception& e) {
        std::fprintf(stderr, "cfs-fuse: %s\n", e.what());
        ::_exit(1);
      }
      ::_exit(0);
    }
    go_read.reset();
    int unshare_err = ::unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0 ? 0 : errno;
    if (unshare_err == 0 && ::write(go_write.get(), "x", 1) != 1) unshare_err = errno;
    go_write.reset();
    int status = 0;
    while (::waitpid(helper, &status, 0) < 0 && errno == EINTR) {
    }
    if (unshare_err != 0) throw_errno(unshare_err, "unshare(user and mount namespace)");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      throw Error("cannot map the user ids of the new user namespace");
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    throw_errno("making the new mount namespace private");
}

[[noreturn]] void overlay_failed(int fsfd, const std::string& step) {
  int code = errno;
  std::string detail = drain_fs_context_log(fsfd);
  throw SystemError(code,
                    "overlayfs " + step + (detail.empty() ? "" : " (kernel: " + detail + ")"));
}

// The overlay over the FUSE mount at lower, as a detached mount.
UniqueFd make_overlay(const std::string& lower, const OverlayOptions& o) {
  UniqueFd fs(::fsopen("overlay", FSOPEN_CLOEXEC));
  if (!fs) throw_errno("fsopen(overlay)");
  auto set = [&](const char* key, const std::string& value) {
    if (::fsconfig(fs.get(), FSCONFIG_SET_STRING, key, value.c_str(), 0) != 0)
      overlay_failed(fs.get(), std::string(key) + "=" + value);
  };
  if (::fsconfig(fs.get(), FSCONFIG_SET_FLAG, "userxattr", nullptr, 0) != 0)
    overlay_failed(fs.get(), "userxattr");
  set("lowerdir+", lower);
  // Data-only layers (Linux 6.5+) are only reached through redirects.
  set("datadir+", o.objects_dir);
  if (o.upper) {
    set("upperdir", *o.upper + "/upper");
    set("workdir", *o.upper + "/work");
  }
  if (o.verity_require) set("verity", "require");
  if (::fsconfig(fs.get(), FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) != 0)
    overlay_failed(fs.get(), "create");
  unsigned attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (o.upper ? 0 : MOUNT_ATTR_RDONLY);
  UniqueFd m(::fsmount(fs.get(), FSMOUNT_CLOEXEC, attrs));
  if (!m) overlay_failed(fs.get(), "fsmount");
  return m;
}

int run_command(const std::vector<std::string>& command, const sigset_t& blocked, int cwd) {
  std::vector<char*> argv;
  for (const auto& a : command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    ::pthread_sigmask(SIG_UNBLOCK, &blocked, nullptr);
    ::signal(SIGPIPE, SIG_DFL);  // libfuse ignores it; the command gets the default
    if (::fchdir(cwd) != 0) {
      std::fprintf(stderr, "cfs-fuse: cannot return to the working directory: %s\n",
                   std::strerror(errno));
      ::_exit(127);
    }
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "cfs-fuse: %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) throw_errno("waitpid");
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

int serve_overlay(const ImageFs& fs, ServerOptions server, const OverlayOptions& o) {
  if (!fs.overlay_lower()) throw Error("serve_overlay: the image is not served as overlay lower");
  check_mountpoint(o.mountpoint);
  check_fuse_device();

  if (o.upper) {
    for (const char* sub : {"/upper", "/work"}) {
      std::string dir = *o.upper + sub;
      if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) throw_errno(dir);
    }
  }
  // Signals end the session through sigwait() below, never on a libfuse thread.
  sigset_t blocked;
  sigemptyset(&blocked);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&blocked, sig);
  if (::pthread_sigmask(SIG_BLOCK, &blocked, nullptr) != 0) throw Error("cannot block signals");

  enter_namespaces();
  // The command starts where we were called (libfuse moves the server to "/"), as seen in
  // the new mount namespace.
  UniqueFd cwd(::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!cwd) throw_errno("the working directory");
  // The FUSE mount lives on a private tmpfs over the mountpoint until the overlay replaces
  // both; the overlay keeps its own reference to the FUSE layer.
  const std::string& mnt = o.mountpoint;
  if (::mount("cfs-stage", mnt.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700,size=64k") != 0)
    throw_errno(mnt + ": staging mount");
  const std::string lower = mnt + "/lower";
  if (::mkdir(lower.c_str(), 0700) != 0) throw_errno(lower);

  server.mountpoint = lower;
  server.foreground = true;
  server.passthrough = false;  // the overlay reads the objects itself
  // Only metadata requests reach this server, one at a time from each walk: one thread
  // answers them with about half the CPU the multi-threaded loop spends (bench/fuse.sh).
  server.single_threaded = true;
  server.in_mount = [&]() -> int {
    UniqueFd overlay;
    try {
      overlay = make_overlay(lower, o);
    } catch (const std::exception& e) {
      if (server.log) server.log(std::string(o.mountpoint) + ": " + e.what());
      ::umount2(mnt.c_str(), MNT_DETACH);  // the FUSE mount with it: the session ends
      return 1;
    }
    ::umount2(mnt.c_str(), MNT_DETACH);
    if (::move_mount(overlay.get(), "", AT_FDCWD, mnt.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0) {
      if (server.log) server.log(mnt + ": cannot attach the overlay: " + std::strerror(errno));
      return 1;
    }
    overlay.reset();
    int rc = 0;
    if (!o.command.empty()) {
      try {
        rc = run_command(o.command, blocked, cwd.get());
      } catch (const std::exception& e) {
        if (server.log) server.log(e.what());
        rc = 1;
      }
    } else {
      if (o.notice)
        o.notice("mounted at " + mnt + " in the user and mount namespaces of pid " +
                 std::to_string(::getpid()) + " (enter with: nsenter -t " +
                 std::to_string(::getpid()) + " -U -m); SIGTERM unmounts");
      int sig = 0;
      while (::sigwait(&blocked, &sig) != 0) {
      }
    }
    // The last reference to the FUSE layer goes with the overlay: the connection ends and
    // with it the server's loop (unless something in the namespace still uses the mount).
    ::umount2(mnt.c_str(), MNT_DETACH);
    return rc;
  };
  return serve(fs, server);
}

}  // namespace cfs::fuse
