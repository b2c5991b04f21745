#include "fuse_helpers.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "cfs/erofs/scan.h"
#include "cfs/erofs/writer.h"
#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/fsverity.h"
#include "cfs/output.h"
#include "testdata.h"

namespace cfs::test {

namespace {

std::string printable(std::string_view bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (char c : bytes) {
    auto u = static_cast<unsigned char>(c);
    if (u > 0x20 && u < 0x7f && u != '\\' && u != '=') {
      out += c;
    } else {
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

std::string hex_of(std::string_view bytes) {
  return to_hex({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
}

std::string format_line(const std::string& path, uint32_t mode, uint64_t nlink, uint32_t uid,
                        uint32_t gid, uint64_t rdev, uint64_t size, int64_t mtime_sec,
                        uint32_t mtime_nsec, const std::string& link_group,
                        const std::string& target, const std::string& content,
                        std::vector<std::pair<std::string, std::string>> xattrs) {
  std::sort(xattrs.begin(), xattrs.end());
  std::ostringstream o;
  o << printable(path) << " mode=" << std::oct << mode << std::dec << " nlink=" << nlink
    << " uid=" << uid << " gid=" << gid << " rdev=" << rdev << " size=" << size
    << " mtime=" << mtime_sec << "." << mtime_nsec;
  if (!link_group.empty() && link_group != path) o << " link=" << printable(link_group);
  if (!target.empty()) o << " target=" << printable(target);
  if (!content.empty()) o << " content=" << content;
  for (auto& [k, v] : xattrs) o << " x:" << printable(k) << "=" << hex_of(v);
  return o.str();
}

std::string errno_name(int err) {
  const char* n = strerrorname_np(err);
  return n ? n : "E" + std::to_string(err);
}

void redirect_output(const std::string& log_path) {
  int null = ::open("/dev/null", O_RDONLY);
  if (null >= 0) ::dup2(null, 0);
  int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log >= 0) {
    ::dup2(log, 1);
    ::dup2(log, 2);
  }
}

void become(const RunAs& as) {
  if (::setgroups(0, nullptr) != 0 || ::setresgid(as.gid, as.gid, as.gid) != 0 ||
      ::setresuid(as.uid, as.uid, as.uid) != 0)
    _exit(126);
}

std::vector<char*> c_argv(std::vector<std::string>& args) {
  std::vector<char*> v;
  for (auto& a : args) v.push_back(a.data());
  v.push_back(nullptr);
  return v;
}

}  // namespace

std::string cfs_fuse_binary() {
  return std::string(CFS_BINDIR) + "/cfs-fuse";
}

bool is_mounted(const std::string& path) {
  char real[PATH_MAX];
  std::string want = ::realpath(path.c_str(), real) ? real : path;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mnt;
    fields >> id >> parent >> devno >> root >> mnt;
    if (mnt == want) return true;
  }
  return false;
}

// ---- FuseProcess ---------------------------------------------------------------------------

FuseProcess::FuseProcess(std::vector<std::string> args, std::string mountpoint,
                         std::string log_path, std::optional<RunAs> as)
    : mountpoint_(std::move(mountpoint)), log_path_(std::move(log_path)) {
  args.insert(args.begin(), cfs_fuse_binary());
  auto argv = c_argv(args);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    redirect_output(log_path_);
    if (as) become(*as);
    ::execv(argv[0], argv.data());
    _exit(127);
  }
}

bool FuseProcess::wait_mounted() {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    if (is_mounted(mountpoint_)) return true;
    if (status_ < 0) {
      int st;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        status_ = st;
        return false;
      }
    } else {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

int FuseProcess::wait_exit(int timeout_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  while (status_ < 0) {
    int st;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
      status_ = st;
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
}

std::string FuseProcess::log() const {
  std::ifstream in(log_path_);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

FuseProcess::~FuseProcess() {
  if (is_mounted(mountpoint_)) ::umount2(mountpoint_.c_str(), MNT_DETACH);
  if (status_ < 0 && wait_exit(10) < 0) {
    ::kill(pid_, SIGKILL);
    int st;
    ::waitpid(pid_, &st, 0);
  }
}

// ---- KernelMount ---------------------------------------------------------------------------

KernelMount::KernelMount(const std::string& image, const std::string& objects,
                         const std::string& erofs_dir, const std::string& overlay_dir)
    : erofs_dir_(erofs_dir), overlay_dir_(overlay_dir) {
  if (::mount(image.c_str(), erofs_dir.c_str(), "erofs", MS_RDONLY, nullptr) != 0) {
    error_ = "mount -t erofs: " + std::string(std::strerror(errno));
    return;
  }
  erofs_mounted_ = true;
  std::string opts = "lowerdir=" + erofs_dir + "::" + objects + ",metacopy=on,redirect_dir=on";
  if (::mount("overlay", overlay_dir.c_str(), "overlay", MS_RDONLY, opts.c_str()) != 0) {
    error_ = "mount -t overlay: " + std::string(std::strerror(errno));
    return;
  }
  overlay_mounted_ = true;
  ok_ = true;
}

KernelMount::~KernelMount() {
  if (overlay_mounted_) ::umount2(overlay_dir_.c_str(), MNT_DETACH);
  if (erofs_mounted_) ::umount2(erofs_dir_.c_str(), MNT_DETACH);
}

// ---- descriptions --------------------------------------------------------------------------

std::string describe_mount(const std::string& root) {
  std::map<std::string, std::string> lines;
  std::map<std::pair<dev_t, ino_t>, std::string> first_path;

  std::function<void(const std::string&, const std::string&, unsigned char)> visit =
      [&](const std::string& rel, const std::string& abs, unsigned char d_type) {
        struct stat st;
        if (::lstat(abs.c_str(), &st) != 0) {
          lines[rel] = printable(rel) + " lstat=" + errno_name(errno);
          return;
        }
        std::string link_group, target, content;
        std::vector<std::pair<std::string, std::string>> xattrs;
        if (!S_ISDIR(st.st_mode)) {
          auto [it, inserted] = first_path.emplace(std::make_pair(st.st_dev, st.st_ino), rel);
          link_group = it->second;
        }
        if (S_ISLNK(st.st_mode)) {
          std::string buf(8192, '\0');
          ssize_t n = ::readlink(abs.c_str(), buf.data(), buf.size());
          target = n < 0 ? "readlink=" + errno_name(errno) : buf.substr(0, size_t(n));
        } else if (S_ISREG(st.st_mode)) {
          int fd = ::open(abs.c_str(), O_RDONLY | O_CLOEXEC);
          if (fd < 0) {
            content = errno_name(errno);
          } else {
            try {
              content = sha256_hex(read_fd(fd, abs));
            } catch (const SystemError& e) {
              content = errno_name(e.code());
            }
            ::close(fd);
          }
        }
        std::string names(65536, '\0');
        ssize_t n = ::llistxattr(abs.c_str(), names.data(), names.size());
        if (n < 0) {
          xattrs.emplace_back("llistxattr", errno_name(errno));
        } else {
          for (size_t pos = 0; pos < size_t(n);) {
            std::string name(names.c_str() + pos);
            pos += name.size() + 1;
            std::string value(65536, '\0');
            ssize_t vn = ::lgetxattr(abs.c_str(), name.c_str(), value.data(), value.size());
            xattrs.emplace_back(
                name, vn < 0 ? "lgetxattr=" + errno_name(errno) : value.substr(0, size_t(vn)));
          }
        }
        bool dev = S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode);
        std::string line = format_line(
            rel, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, dev ? uint64_t(st.st_rdev) : 0,
            (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || S_ISLNK(st.st_mode)) ? st.st_size : 0,
            st.st_mtim.tv_sec, uint32_t(st.st_mtim.tv_nsec), link_group, target, content, xattrs);
        if (d_type != DT_UNKNOWN && static_cast<mode_t>(DTTOIF(d_type)) != (st.st_mode & S_IFMT))
          line += " d_type-mismatch=" + std::to_string(d_type);
        lines[rel] = line;
        if (!S_ISDIR(st.st_mode)) return;
        DIR* d = ::opendir(abs.c_str());
        if (!d) {
          lines[rel] += " opendir=" + errno_name(errno);
          return;
        }
        std::vector<std::pair<std::string, unsigned char>> children;
        while (dirent* e = ::readdir(d)) {
          std::string_view name = e->d_name;
          if (name == "." || name == "..") continue;
          children.emplace_back(std::string(name), e->d_type);
        }
        ::closedir(d);
        std::sort(children.begin(), children.end());
        for (auto& [name, type] : children)
          visit(rel == "/" ? "/" + name : rel + "/" + name, abs + "/" + name, type);
      };
  visit("/", root, DT_DIR);
  std::string out;
  for (auto& [path, line] : lines) out += line + "\n";
  return out;
}

std::string describe_tree(const erofs::Tree& tree,
                          const std::function<std::string(const erofs::Inode&)>& external_content) {
  std::map<std::string, std::string> lines;
  std::map<const erofs::Inode*, std::string> first_path;
  erofs::walk(tree, [&](const erofs::WalkEntry& e) {
    const erofs::Inode& in = e.inode;
    std::string link_group, target, content;
    if (!in.is_dir()) link_group = first_path.emplace(&in, e.path).first->second;
    if (in.is_symlink()) target = in.payload;
    if (in.is_reg()) {
      if (in.content)
        content = sha256_hex(*in.content);
      else if (in.size == 0)
        content = sha256_hex("");
      else
        content = external_content(in);
    }
    std::vector<std::pair<std::string, std::string>> xattrs;
    for (auto& x : in.xattrs) {
      // The VFS refuses user.* values on anything but files and directories (they are
      // still listed), whatever the filesystem holds.
      bool user_refused = x.name.starts_with("user.") && !in.is_reg() && !in.is_dir();
      // POSIX ACLs are parsed by the kernel, which refuses malformed ones (the fuzz vector).
      bool acl = x.name == "system.posix_acl_access" || x.name == "system.posix_acl_default";
      bool acl_malformed = acl && (x.value.size() < 4 || (x.value.size() - 4) % 8 != 0 ||
                                   x.value.compare(0, 4, std::string("\x02\0\0\0", 4)) != 0);
      xattrs.emplace_back(x.name, user_refused    ? "lgetxattr=ENODATA"
                                  : acl_malformed ? "lgetxattr=EINVAL"
                                                  : x.value);
    }
    uint64_t size = (in.is_reg() || in.is_dir() || in.is_symlink()) ? in.size : 0;
    lines[e.path] =
        format_line(e.path, in.mode, in.nlink, in.uid, in.gid, in.is_device() ? in.rdev : 0, size,
                    int64_t(in.mtime_sec), in.mtime_nsec, link_group, target, content, xattrs);
  });
  std::string out;
  for (auto& [path, line] : lines) out += line + "\n";
  return out;
}

// ---- building images -----------------------------------------------------------------------

erofs::Tree scan_with_objects(const std::string& source_dir, const std::string& objects_dir) {
  erofs::ScanOptions options;
  return erofs::scan_directory(source_dir, options, [&](int fd, uint64_t, const std::string& path) {
    Digest d = fsverity_digest_fd(fd, HashAlgorithm::sha256, path);
    std::string obj = objects_dir + "/" + d.object_path();
    ::mkdir((objects_dir + "/" + d.object_path().substr(0, 2)).c_str(), 0755);
    if (::lseek(fd, 0, SEEK_SET) != 0) throw_errno(path);
    std::string data = read_fd(fd, path);
    write_file(obj, data);
    return d;
  });
}

void write_image_file(const erofs::Tree& tree, const std::string& path, uint32_t min_version,
                      uint32_t max_version) {
  UniqueFd fd = open_file(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  FdSink sink(fd.get(), path);
  erofs::WriterOptions options;
  options.min_version = min_version;
  options.max_version = max_version;
  erofs::write_image(tree, sink, options);
  sink.flush();
}

// ---- processes -----------------------------------------------------------------------------

namespace {
// Reads the child's pipe to EOF, closes it, reaps pid; status gets its exit status (or
// 128 + signal).
std::string drain_and_reap(int read_fd, pid_t pid, int& status) {
  std::string out;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(read_fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0) out.append(buf, size_t(n));
  ::close(read_fd);
  int st;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  return out;
}
}  // namespace

int run_argv(const std::vector<std::string>& argv_in, std::string* output,
             std::optional<RunAs> as) {
  std::vector<std::string> args = argv_in;
  auto argv = c_argv(args);
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    int null = ::open("/dev/null", O_RDONLY);
    if (null >= 0) ::dup2(null, 0);
    ::dup2(pipefd[1], 1);
    ::dup2(pipefd[1], 2);
    if (as) become(*as);
    ::execvp(argv[0], argv.data());
    _exit(127);
  }
  ::close(pipefd[1]);
  int status = 0;
  std::string out = drain_and_reap(pipefd[0], pid, status);
  if (output) *output = std::move(out);
  return status;
}

namespace {

// fn's result from a forked child that first ran enter().
std::string run_in_child(const std::function<void()>& enter,
                         const std::function<std::string()>& fn) {
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::close(pipefd[0]);
    std::string result;
    try {
      enter();
      result = fn();
    } catch (const std::exception& e) {
      result = std::string("EXCEPTION: ") + e.what();
    }
    const char* p = result.data();
    size_t left = result.size();
    while (left > 0) {
      ssize_t w = ::write(pipefd[1], p, left);
      if (w <= 0) break;
      p += w;
      left -= size_t(w);
    }
    _exit(0);
  }
  ::close(pipefd[1]);
  int status = 0;
  return drain_and_reap(pipefd[0], pid, status);
}

}  // namespace

std::string run_in_child_as(const RunAs& as, const std::function<std::string()>& fn) {
  return run_in_child([&] { become(as); }, fn);
}

std::string run_in_namespaces_of(pid_t pid, const std::function<std::string()>& fn) {
  return run_in_child(
      [&] {
        for (const char* ns : {"user", "mnt"}) {
          std::string path = "/proc/" + std::to_string(pid) + "/ns/" + ns;
          UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
          if (!fd) throw std::runtime_error("open " + path + ": " + std::strerror(errno));
          if (::setns(fd.get(), 0) != 0)
            throw std::runtime_error("setns " + path + ": " + std::strerror(errno));
        }
      },
      fn);
}

TempUser::TempUser() {
  name_ = "cfsfuse" + std::to_string(::getpid());
  std::string out;
  if (run_argv({"useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name_},
               &out) != 0)
    throw std::runtime_error("useradd failed: " + out);
  created_ = true;
  passwd* pw = ::getpwnam(name_.c_str());
  if (!pw) throw std::runtime_error("getpwnam failed after useradd");
  as_ = {pw->pw_uid, pw->pw_gid};
}

TempUser::~TempUser() {
  if (created_) run_argv({"userdel", name_});
}

DevFuseMode::DevFuseMode() {
  struct stat st;
  if (::stat("/dev/fuse", &st) == 0) {
    saved_ = st.st_mode & 07777;
    known_ = true;
  }
}

DevFuseMode::~DevFuseMode() {
  if (known_) ::chmod("/dev/fuse", saved_);
}

bool DevFuseMode::set(mode_t mode) {
  return ::chmod("/dev/fuse", mode) == 0;
}

}  // namespace cfs::test
