#include "cfs/fuse/server.h"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "cfs/error.h"
#include "passthrough.h"
#include "request_stats.h"

namespace cfs::fuse {

namespace {

// Owns the handles given to the kernel as fi->fh. The kernel does not send RELEASE for files
// still open when the session ends (unmount, signal), and a RELEASE for a file just closed may
// still be queued then: whatever the table holds at the end is freed with it.
template <typename Handle>
class HandleTable {
 public:
  uint64_t add(std::unique_ptr<Handle> handle) {
    auto key = reinterpret_cast<uint64_t>(handle.get());
    std::lock_guard lock(mutex_);
    handles_.emplace(key, std::move(handle));
    return key;
  }
  // Undoes add() when the kernel never learnt the handle (the reply failed).
  void remove(uint64_t key) {
    std::unique_ptr<Handle> gone;  // destroyed outside the lock
    std::lock_guard lock(mutex_);
    auto it = handles_.find(key);
    if (it == handles_.end()) return;
    gone = std::move(it->second);
    handles_.erase(it);
  }
  // Lookups need no lock: a handle lives until its RELEASE, after its last use.
  static Handle& get(uint64_t key) { return *reinterpret_cast<Handle*>(key); }

 private:
  std::mutex mutex_;
  std::unordered_map<uint64_t, std::unique_ptr<Handle>> handles_;
};

// What every callback reaches through fuse_req_userdata().
struct Session {
  const ImageFs& fs;
  const ServerOptions& options;
  HandleTable<DirStream> dirs{};
  HandleTable<FileHandle> files{};
  Passthrough* passthrough = nullptr;  // set when the transport hooks are installed
  int fuse_fd = -1;
  // The kernel takes ENOSYS from OPENDIR as "no opendir/releasedir ever again" and then
  // caches directory contents as if FOPEN_CACHE_DIR|FOPEN_KEEP_CACHE had been given.
  std::atomic<bool> no_opendir{false};
  RequestStats stats{options.stats};
};

Session& session_of(fuse_req_t req) {
  return *static_cast<Session*>(fuse_req_userdata(req));
}

void count(fuse_req_t req, Request r) {
  session_of(req).stats.add(r);
}

double timeout(fuse_req_t req) {
  return session_of(req).options.cache_seconds;
}

void op_init(void* userdata, fuse_conn_info* conn) {
  auto& s = *static_cast<Session*>(userdata);
  s.stats.add(Request::init);
  // Two requests fewer per directory (a third of a cold `find` over a tree's requests):
  // readdir is stateless, resuming from the offset alone.
  if (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) s.no_opendir = true;
  auto offer = [&](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  offer(FUSE_CAP_ASYNC_READ);
  offer(FUSE_CAP_PARALLEL_DIROPS);
  offer(FUSE_CAP_CACHE_SYMLINKS);
  offer(FUSE_CAP_READDIRPLUS);
  // Always readdirplus: `ls -l`/`find -ls` then need no LOOKUP per entry.
  conn->want &= ~FUSE_CAP_READDIRPLUS_AUTO;
  // Nothing changes behind the kernel's back, so cached pages never need revalidation.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  if (s.options.splice) {
    offer(FUSE_CAP_SPLICE_WRITE);
    offer(FUSE_CAP_SPLICE_MOVE);
  } else {
    conn->want &= ~(FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  }
  // Images with ACLs: let the kernel enforce them, as it does for the EROFS mount.
  if (s.fs.image().has_acl()) offer(FUSE_CAP_POSIX_ACL);
  conn->time_gran = 1;
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  count(req, Request::lookup);
  fuse_entry_param e{};
  int err = session_of(req).fs.lookup(parent, name, e.attr);
  if (err == ENOENT) {
    count(req, Request::lookup_negative);
    // A negative entry: the kernel remembers the miss as long as a hit.
    e.ino = 0;
    e.entry_timeout = timeout(req);
    fuse_reply_entry(req, &e);
    return;
  }
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  e.ino = e.attr.st_ino;
  e.attr_timeout = timeout(req);
  e.entry_timeout = timeout(req);
  fuse_reply_entry(req, &e);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  count(req, Request::getattr);
  struct stat st;
  int err = session_of(req).fs.getattr(ino, st);
  if (err != 0)
    fuse_reply_err(req, err);
  else
    fuse_reply_attr(req, &st, timeout(req));
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  count(req, Request::readlink);
  std::string_view target;
  int err = session_of(req).fs.readlink(ino, target);
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  std::string z(target);  // the image's bytes are not NUL-terminated
  fuse_reply_readlink(req, z.c_str());
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  count(req, Request::opendir);
  if (session_of(req).no_opendir) {
    fuse_reply_err(req, ENOSYS);
    return;
  }
  std::unique_ptr<DirStream> dir;
  int err = session_of(req).fs.opendir(ino, dir);
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  auto& dirs = session_of(req).dirs;
  fi->fh = dirs.add(std::move(dir));
  fi->cache_readdir = 1;
  fi->keep_cache = 1;
  if (fuse_reply_open(req, fi) != 0) dirs.remove(fi->fh);
}

void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset, fuse_file_info* fi,
                bool plus) {
  count(req, plus ? Request::readdirplus : Request::readdir);
  // Without OPENDIR (fh 0) each call reads from a cursor of its own, placed at the offset.
  std::unique_ptr<DirStream> own;
  if (fi->fh == 0) {
    int err = session_of(req).fs.opendir(ino, own);
    if (err != 0) {
      fuse_reply_err(req, err);
      return;
    }
  }
  auto& dir = own ? *own : HandleTable<DirStream>::get(fi->fh);
  std::vector<char> buf(size);
  size_t used = 0;
  std::string name;
  double t = timeout(req);
  int err = session_of(req).fs.readdir(
      dir, static_cast<uint64_t>(offset), plus, [&](const DirItem& item) {
        name.assign(item.name);
        size_t need;
        if (plus) {
          fuse_entry_param e{};
          e.ino = item.ino;
          e.attr = *item.attr;
          e.attr_timeout = t;
          e.entry_timeout = t;
          need = fuse_add_direntry_plus(req, buf.data() + used, size - used, name.c_str(), &e,
                                        static_cast<off_t>(item.next_offset));
        } else {
          struct stat st {};
          st.st_ino = item.ino;
          st.st_mode = item.type;
          need = fuse_add_direntry(req, buf.data() + used, size - used, name.c_str(), &st,
                                   static_cast<off_t>(item.next_offset));
        }
        if (need > size - used) return false;
        used += need;
        return true;
      });
  // Entries already packed are delivered even if a later one hit a bad block.
  if (err != 0 && used == 0)
    fuse_reply_err(req, err);
  else
    fuse_reply_buf(req, buf.data(), used);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  do_readdir(req, ino, size, off, fi, false);
}

void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  do_readdir(req, ino, size, off, fi, true);
}

void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  count(req, Request::releasedir);
  session_of(req).dirs.remove(fi->fh);
  fuse_reply_err(req, 0);
}

void release_file(Session& s, uint64_t fh) {
  if (s.passthrough) s.passthrough->detach(s.fuse_fd, fh);
  s.files.remove(fh);
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  count(req, Request::open);
  std::unique_ptr<FileHandle> file;
  int err = session_of(req).fs.open(ino, fi->flags, file);
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  auto& s = session_of(req);
  int object_fd = file->object ? file->object.get() : -1;
  fi->fh = s.files.add(std::move(file));
  // Object data straight from the kernel when the connection allows it; on failure this
  // open keeps the server's read path.
  bool passthrough = object_fd >= 0 && s.passthrough && s.passthrough->active() &&
                     s.passthrough->attach(s.fuse_fd, fi->fh, object_fd) == 0;
  // The image is immutable: cached pages stay valid across opens. Passthrough files have no
  // FUSE page cache (the kernel refuses the combination).
  fi->keep_cache = passthrough ? 0 : 1;
  fi->noflush = 1;
  if (fuse_reply_open(req, fi) != 0) release_file(s, fi->fh);
}

void op_read(fuse_req_t req, fuse_ino_t, size_t size, off_t offset, fuse_file_info* fi) {
  count(req, Request::read);
  const auto& file = HandleTable<FileHandle>::get(fi->fh);
  uint64_t file_size = file.inode.size;
  auto off = static_cast<uint64_t>(offset);
  if (off >= file_size) {
    fuse_reply_buf(req, nullptr, 0);
    return;
  }
  size = static_cast<size_t>(std::min<uint64_t>(size, file_size - off));
  if (file.pending) {
    // A lazy pull's content not local yet: its chunks are fetched and verified first.
    if (int err = session_of(req).fs.ensure(file, off, size); err != 0) {
      fuse_reply_err(req, err);
      return;
    }
  }
  if (file.object || file.pending) {
    // libfuse preads the object into its buffer, or splices it when --splice asked for that.
    fuse_bufvec data = FUSE_BUFVEC_INIT(size);
    data.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    data.buf[0].fd = file.object ? file.object.get() : file.pending->fd();
    data.buf[0].pos = offset;
    fuse_reply_data(req, &data, FUSE_BUF_SPLICE_MOVE);
    return;
  }
  std::vector<std::span<const std::byte>> pieces;
  int err = session_of(req).fs.read_inline(file, off, size, pieces);
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  std::vector<iovec> iov;
  iov.reserve(pieces.size());
  for (auto p : pieces)
    iov.push_back({const_cast<std::byte*>(p.data()), p.size()});  // writev does not write it
  fuse_reply_iov(req, iov.data(), static_cast<int>(iov.size()));
}

void op_release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  count(req, Request::release);
  release_file(session_of(req), fi->fh);
  fuse_reply_err(req, 0);
}

void reply_sized(fuse_req_t req, const std::string& value, size_t size) {
  if (size == 0)
    fuse_reply_xattr(req, value.size());
  else if (value.size() > size)
    fuse_reply_err(req, ERANGE);
  else
    fuse_reply_buf(req, value.data(), value.size());
}

void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  auto& stats = session_of(req).stats;
  stats.add(Request::getxattr);
  if (size == 0) stats.add(Request::getxattr_size_query);
  stats.add_xattr_name(name);
  std::string value;
  int err = session_of(req).fs.getxattr(ino, name, value);
  if (err == ENODATA) stats.add(Request::getxattr_missing);
  if (err != 0)
    fuse_reply_err(req, err);
  else
    reply_sized(req, value, size);
}

void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  count(req, Request::listxattr);
  std::string names;
  int err = session_of(req).fs.listxattr(ino, names);
  if (err != 0)
    fuse_reply_err(req, err);
  else
    reply_sized(req, names, size);
}

void op_statfs(fuse_req_t req, fuse_ino_t) {
  count(req, Request::statfs);
  struct statvfs st;
  session_of(req).fs.statfs(st);
  fuse_reply_statfs(req, &st);
}

void op_access(fuse_req_t req, fuse_ino_t, int mask) {
  count(req, Request::access);
  fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

// Every modifying request: the filesystem is read-only by nature, not by mount option.
void deny_setattr(fuse_req_t req, fuse_ino_t, struct stat*, int, fuse_file_info*) {
  count(req, Request::denied);
  fuse_reply_err(req, EROFS);
}
void deny_mknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) {
  count(req, Request::denied);
  fuse_reply_err(req, EROFS);
}
void deny_mkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) {
  count(req, Request::denied);
  fuse_reply_err(req, EROFS);
}
void deny_unlink(fuse_req_t req, fuse_ino_t, const char*) {
  count(req, Request::denied);
  fuse_reply_err(req, EROFS);
}
void deny_symlink(fuse_req_t req, const char*, fuse_ino_t, const char*) {
  count(req, Request::denied);
  fuse_reply_err(req, EROFS);
}
void deny_rename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) {
  count(req, Request::denied);
  fuse_reply_err(req, EROFS);
}
void deny_link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) {
  count(req, Request::denied);
  fuse_reply_err(req, EROFS);
}
void deny_write(fuse_req_t req, fuse_ino_t, const char*, size_t, off_t, fuse_file_info*) {
  count(req, Request::denied);
  fuse_reply_err(req, EROFS);
}
void deny_write_buf(fuse_req_t req, fuse_ino_t, fuse_bufvec*, off_t, fuse_file_info*) {
  count(req, Request::denied);
  fuse_reply_err(req, EROFS);
}
void deny_setxattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) {
  count(req, Request::denied);
  fuse_reply_err(req, EROFS);
}
void deny_removexattr(fuse_req_t req, fuse_ino_t, const char*) {
  count(req, Request::denied);
  fuse_reply_err(req, EROFS);
}
void deny_create(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) {
  count(req, Request::denied);
  fuse_reply_err(req, EROFS);
}
void deny_fallocate(fuse_req_t req, fuse_ino_t, int, off_t, off_t, fuse_file_info*) {
  count(req, Request::denied);
  fuse_reply_err(req, EROFS);
}
void deny_copy_file_range(fuse_req_t req, fuse_ino_t, off_t, fuse_file_info*, fuse_ino_t, off_t,
                          fuse_file_info*, size_t, int) {
  count(req, Request::denied);
  fuse_reply_err(req, EROFS);
}

fuse_lowlevel_ops make_ops() {
  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.getattr = op_getattr;
  ops.readlink = op_readlink;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.readdirplus = op_readdirplus;
  ops.releasedir = op_releasedir;
  ops.open = op_open;
  ops.read = op_read;
  ops.release = op_release;
  ops.getxattr = op_getxattr;
  ops.listxattr = op_listxattr;
  ops.statfs = op_statfs;
  ops.access = op_access;
  ops.setattr = deny_setattr;
  ops.mknod = deny_mknod;
  ops.mkdir = deny_mkdir;
  ops.unlink = deny_unlink;
  ops.rmdir = deny_unlink;
  ops.symlink = deny_symlink;
  ops.rename = deny_rename;
  ops.link = deny_link;
  ops.write = deny_write;
  ops.write_buf = deny_write_buf;
  ops.setxattr = deny_setxattr;
  ops.removexattr = deny_removexattr;
  ops.create = deny_create;
  ops.fallocate = deny_fallocate;
  ops.copy_file_range = deny_copy_file_range;
  return ops;
}

// fusermount3 splits options on ',' and the mount table on whitespace: keep such bytes out of
// the source name.
std::string safe_fsname(const std::string& name) {
  std::string out;
  for (char c : name) {
    auto u = static_cast<unsigned char>(c);
    out += (c == ',' || c == '\\' || u <= 0x20 || u >= 0x7f) ? '_' : c;
  }
  return out.empty() ? "cfs" : out;
}

// The transport under libfuse when passthrough may be negotiated (see passthrough.h).
ssize_t transport_read(int fd, void* buf, size_t size, void* userdata) {
  return static_cast<Session*>(userdata)->passthrough->read_request(fd, buf, size);
}
ssize_t transport_writev(int fd, iovec* iov, int count, void* userdata) {
  return static_cast<Session*>(userdata)->passthrough->write_reply(fd, iov, count);
}
ssize_t transport_splice_send(int fd_in, off_t* off_in, int fd_out, off_t* off_out, size_t len,
                              unsigned flags, void*) {
  return ::splice(fd_in, off_in, fd_out, off_out, len, flags);
}

struct SessionCloser {
  void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};

}  // namespace

void check_mountpoint(const std::string& mountpoint) {
  struct statx stx;
  if (::statx(AT_FDCWD, mountpoint.c_str(), 0, STATX_TYPE, &stx) != 0)
    throw_errno("mountpoint " + mountpoint);
  if (!S_ISDIR(stx.stx_mode)) throw Error("mountpoint " + mountpoint + ": not a directory");
  if ((stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
      (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT))
    throw Error("mountpoint " + mountpoint +
                ": busy (something is already mounted there; unmount it first)");
}

void check_fuse_device() {
  int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd >= 0) {
    ::close(fd);
    return;
  }
  int err = errno;
  if (err == ENOENT || err == ENODEV || err == ENXIO)
    throw Error("/dev/fuse: " + std::string(std::strerror(err)) +
                " (FUSE is not available here: load the fuse module or provide /dev/fuse)");
  if (err == EACCES || err == EPERM)
    throw Error("/dev/fuse: " + std::string(std::strerror(err)) +
                " (the device must be readable and writable by this user, usually mode 0666; "
                "libfuse does not fall back to fusermount3 when it cannot open it)");
  throw_errno(err, "/dev/fuse");
}

int serve(const ImageFs& fs, const ServerOptions& options) {
  check_mountpoint(options.mountpoint);
  check_fuse_device();

  std::string mount_opts =
      "ro,default_permissions,fsname=" + safe_fsname(options.fsname) + ",subtype=cfs";
  for (const auto& o : options.mount_options) mount_opts += "," + o;
  // Last, so no earlier option (libfuse applies them in order) can turn them off.
  mount_opts += ",nosuid,nodev";
  std::vector<std::string> arg_strings = {"cfs-fuse", "-o", mount_opts};
  if (options.debug) arg_strings.push_back("-d");
  std::vector<char*> argv;
  for (auto& a : arg_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(arg_strings.size()), argv.data());
  struct ArgsFree {
    fuse_args* a;
    ~ArgsFree() { fuse_opt_free_args(a); }
  } args_free{&args};

  Session session{fs, options};
  fuse_lowlevel_ops ops = make_ops();
  std::unique_ptr<fuse_session, SessionCloser> se(
      fuse_session_new(&args, &ops, sizeof ops, &session));
  if (!se) throw Error("invalid FUSE options '" + mount_opts + "' (libfuse's message above)");
  if (fuse_set_signal_handlers(se.get()) != 0) throw Error("cannot install signal handlers");
  struct SignalGuard {
    fuse_session* se;
    ~SignalGuard() { fuse_remove_signal_handlers(se); }
  } signal_guard{se.get()};

  if (fuse_session_mount(se.get(), options.mountpoint.c_str()) != 0)
    throw Error("cannot mount on " + options.mountpoint + " (libfuse's message above)");
  struct Unmount {
    fuse_session* se;
    ~Unmount() { fuse_session_unmount(se); }
  } unmount{se.get()};

  // Backing files need CAP_SYS_ADMIN: unprivileged servers keep the plain transport.
  Passthrough passthrough(options.log);
  if (options.passthrough && ::geteuid() == 0) {
    session.passthrough = &passthrough;
    session.fuse_fd = fuse_session_fd(se.get());
    fuse_custom_io io{};
    io.read = transport_read;
    io.writev = transport_writev;
    io.splice_send = transport_splice_send;
    if (fuse_session_custom_io(se.get(), &io, session.fuse_fd) != 0)
      throw Error("cannot install the FUSE transport");
  }

  if (fuse_daemonize(options.foreground ? 1 : 0) != 0) throw Error("cannot daemonise");
  if (options.on_serving) options.on_serving();

  fuse_loop_config config{};
  config.clone_fd = 0;
  config.max_idle_threads = options.idle_threads;
  std::optional<int> hook_rc;
  std::jthread hook;
  if (options.in_mount) hook = std::jthread([&] { hook_rc = options.in_mount(); });
  int rc = options.single_threaded ? fuse_session_loop(se.get())
                                   : fuse_session_loop_mt(se.get(), &config);
  if (options.on_stopped) options.on_stopped();
  if (options.stats && options.log) {
    std::string report = session.stats.report();
    options.log("requests served:");
    for (size_t at = 0; at < report.size();) {
      size_t end = report.find('\n', at);
      options.log(report.substr(at, end - at));
      at = end + 1;
    }
  }
  if (hook.joinable()) {
    hook.join();
    return *hook_rc;
  }
  // A positive value is the signal that asked us to stop: a normal, clean exit.
  return rc < 0 ? 1 : 0;
}

}  // namespace cfs::fuse
