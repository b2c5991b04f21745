#include "cfs/erofs/scan.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cfs/erofs/format.h"
#include "cfs/error.h"
#include "cfs/fd.h"

namespace cfs::erofs {

namespace {

struct DirCloser {
  void operator()(DIR* dir) const noexcept { ::closedir(dir); }
};
using DirStream = std::unique_ptr<DIR, DirCloser>;

// Entry names of an open directory (without "." and ".."), sorted bytewise so that children
// are appended to the tree in order.
std::vector<std::string> list_directory(int dirfd, const std::string& path) {
  // fdopendir takes ownership of its fd, so give it a duplicate and keep dirfd for openat.
  int dup_fd = ::fcntl(dirfd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0) throw_errno(path);
  DirStream dir(::fdopendir(dup_fd));
  if (!dir) {
    int err = errno;
    ::close(dup_fd);
    throw_errno(err, path);
  }
  std::vector<std::string> names;
  for (;;) {
    errno = 0;
    const dirent* entry = ::readdir(dir.get());
    if (!entry) {
      if (errno != 0) throw_errno(path + ": reading directory");
      break;
    }
    std::string_view name(entry->d_name);
    if (name == "." || name == "..") continue;
    names.emplace_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

// The xattr calls come in three flavours (by fd, by path following the final component, and
// by path not following it); this hides which one a node needs.
struct XattrSource {
  int fd = -1;                // flistxattr/fgetxattr when >= 0
  std::string proc_path;      // otherwise a /proc/self/fd path
  bool follow_final = false;  // listxattr (the path is a magic link) vs llistxattr
  ssize_t list(char* buf, size_t size) const {
    if (fd >= 0) return ::flistxattr(fd, buf, size);
    return follow_final ? ::listxattr(proc_path.c_str(), buf, size)
                        : ::llistxattr(proc_path.c_str(), buf, size);
  }
  ssize_t get(const char* name, char* buf, size_t size) const {
    if (fd >= 0) return ::fgetxattr(fd, name, buf, size);
    return follow_final ? ::getxattr(proc_path.c_str(), name, buf, size)
                        : ::lgetxattr(proc_path.c_str(), name, buf, size);
  }
};

// Calls fill(buf, size) with a growing buffer until the data fits (the xattr size query and
// the read are not atomic, so a value may grow in between: retry on ERANGE).
template <typename Fill>
std::optional<std::string> read_sized(const Fill& fill, const std::string& what) {
  std::string buf;
  for (;;) {
    ssize_t needed = fill(nullptr, 0);
    if (needed < 0) {
      if (errno == ENODATA) return std::nullopt;  // removed since it was listed
      throw_errno(what);
    }
    buf.resize(static_cast<size_t>(needed));
    ssize_t got = fill(buf.data(), buf.size());
    if (got >= 0) {
      buf.resize(static_cast<size_t>(got));
      return buf;
    }
    if (errno == ENODATA) return std::nullopt;
    if (errno != ERANGE) throw_errno(what);
  }
}

void read_xattrs(Inode& inode, const XattrSource& source, const ScanOptions& options,
                 const std::string& path) {
  if (options.skip_xattrs) return;
  auto names = read_sized(
      [&](char* buf, size_t size) -> ssize_t {
        ssize_t n = source.list(buf, size);
        // A filesystem without xattr support has no xattrs to keep (as C mkcomposefs sees it).
        if (n < 0 && errno == ENOTSUP) return 0;
        return n;
      },
      path + ": listing xattrs");
  if (!names) return;
  std::string_view rest(*names);
  while (!rest.empty()) {
    size_t end = rest.find('\0');
    if (end == std::string_view::npos) end = rest.size();
    std::string name(rest.substr(0, end));
    rest.remove_prefix(std::min(end + 1, rest.size()));
    if (name.empty()) continue;
    if (options.user_xattrs_only && !name.starts_with("user.")) continue;
    // Refused here, with the file's path, rather than by the writer or the reader.
    if (name.size() > xattr_name_max(name))
      throw Error(path + ": xattr name '" + name.substr(0, 32) + "...' is longer than " +
                  std::to_string(xattr_name_max(name)) +
                  " bytes (trusted.overlay.* names grow by 8 when stored)");
    auto value =
        read_sized([&](char* buf, size_t size) { return source.get(name.c_str(), buf, size); },
                   path + ": reading xattr " + name);
    if (value && value->size() > kXattrValueMax)
      throw Error(path + ": xattr " + name + " has a value longer than " +
                  std::to_string(kXattrValueMax) + " bytes");
    if (value) inode.set_xattr(std::move(name), std::move(*value));
  }
}

std::string read_symlink(int dirfd, const std::string& name, const std::string& path) {
  // readlink truncates silently, so a result that fills the buffer may be cut: retry larger.
  std::string target(256, '\0');
  for (;;) {
    ssize_t n = ::readlinkat(dirfd, name.c_str(), target.data(), target.size());
    if (n < 0) throw_errno(path + ": readlink");
    if (static_cast<size_t>(n) < target.size()) {
      target.resize(static_cast<size_t>(n));
      return target;
    }
    target.resize(target.size() * 2);
  }
}

std::string read_exact(int fd, size_t size, const std::string& path) {
  std::string content(size, '\0');
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::read(fd, content.data() + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(path);
    }
    if (n == 0) throw Error(path + ": file shrank while being read");
    done += static_cast<size_t>(n);
  }
  char extra;
  ssize_t n;
  do n = ::read(fd, &extra, 1);
  while (n < 0 && errno == EINTR);
  if (n > 0) throw Error(path + ": file grew while being read");
  return content;
}

class Scanner {
 public:
  Scanner(const ScanOptions& options, const ObjectSink& sink) : options_(options), sink_(sink) {}

  Tree scan(const std::string& dir) {
    // The source itself may be given through a symlink; nothing below it is followed.
    UniqueFd fd = open_file(dir, O_RDONLY | O_DIRECTORY);
    struct stat st;
    if (::fstat(fd.get(), &st) < 0) throw_errno(dir);
    Tree tree;
    fill_metadata(*tree.root, st);
    XattrSource xattrs{.fd = -1, .proc_path = proc_fd_path(fd.get()), .follow_final = true};
    read_xattrs(*tree.root, xattrs, options_, dir);
    std::string path = dir;
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    scan_tree(*tree.root, std::move(fd), std::move(path));
    return tree;
  }

 private:
  static std::string proc_fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

  void fill_metadata(Inode& inode, const struct stat& st) const {
    inode.mode = st.st_mode;
    inode.uid = st.st_uid;
    inode.gid = st.st_gid;
    inode.nlink = 1;
    if (inode.is_device()) inode.rdev = static_cast<uint32_t>(st.st_rdev);  // EROFS: 32 bits
    if (!options_.use_epoch) {
      inode.mtime_sec = st.st_mtim.tv_sec;  // signed: before 1970 stays negative
      inode.mtime_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
    }
  }

  // One open directory being listed. Depth-first with an explicit stack, so the nesting
  // depth is bounded by kMaxDirDepth, not by the call stack.
  struct Frame {
    Inode* dir;
    UniqueFd fd;
    std::vector<std::string> names;
    size_t next = 0;
    size_t path_len = 0;  // the directory's path is path.substr(0, path_len)
  };

  void scan_tree(Inode& root, UniqueFd root_fd, std::string path) {
    std::vector<Frame> stack;
    std::vector<std::string> root_names = list_directory(root_fd.get(), path);
    stack.push_back({&root, std::move(root_fd), std::move(root_names), 0, path.size()});
    while (!stack.empty()) {
      Frame& frame = stack.back();
      if (frame.next == frame.names.size()) {
        stack.pop_back();
        continue;
      }
      std::string name = std::move(frame.names[frame.next++]);
      Inode& dir = *frame.dir;
      const int dirfd = frame.fd.get();
      path.resize(frame.path_len);
      path += '/';
      path += name;
      struct stat st;
      if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) throw_errno(path);
      if (options_.skip_devices && (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode))) continue;

      bool maybe_hardlink = options_.detect_hardlinks && !S_ISDIR(st.st_mode) && st.st_nlink > 1;
      if (maybe_hardlink) {
        auto it = hardlinks_.find({st.st_dev, st.st_ino});
        if (it != hardlinks_.end()) {
          it->second->nlink++;
          dir.set_child(std::move(name), it->second);
          continue;
        }
      }

      InodePtr inode = make_inode(st.st_mode);
      fill_metadata(*inode, st);
      switch (st.st_mode & S_IFMT) {
        case S_IFDIR: {
          // stack.size() is the new directory's depth below the root.
          if (stack.size() > kMaxDirDepth)
            throw Error(path.substr(0, 256) + "...: directories nested deeper than " +
                        std::to_string(kMaxDirDepth) + " levels (the composefs image limit)");
          UniqueFd fd = open_entry(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, path);
          check_same_file(fd.get(), st, path);
          read_xattrs(*inode, XattrSource{.fd = fd.get()}, options_, path);
          std::vector<std::string> names = list_directory(fd.get(), path);
          Inode* child = dir.set_child(std::move(name), std::move(inode)).get();
          stack.push_back({child, std::move(fd), std::move(names), 0, path.size()});
          continue;  // frame and dir are invalid from here on
        }
        case S_IFREG:
          scan_regular(*inode, dirfd, name, st, path);
          break;
        case S_IFLNK:
          inode->payload = read_symlink(dirfd, name, path);
          inode->size = inode->payload.size();
          if (inode->payload.size() > options_.max_symlink)
            throw Error(path + ": symlink target of " + std::to_string(inode->payload.size()) +
                        " bytes is longer than the " + std::to_string(options_.max_symlink) +
                        "-byte limit");
          read_xattrs(*inode, entry_xattrs(dirfd, name), options_, path);
          break;
        default:  // devices, fifos and sockets carry nothing but metadata
          read_xattrs(*inode, entry_xattrs(dirfd, name), options_, path);
          break;
      }
      if (maybe_hardlink) hardlinks_.emplace(std::pair{st.st_dev, st.st_ino}, inode);
      dir.set_child(std::move(name), std::move(inode));
    }
  }

  // A path that reaches the entry without depending on the length of its full path; the
  // final component is not followed by the l*xattr calls.
  static XattrSource entry_xattrs(int dirfd, const std::string& name) {
    return {.fd = -1, .proc_path = proc_fd_path(dirfd) + "/" + name, .follow_final = false};
  }

  // Guards against the entry being swapped between fstatat and open; returns the fresh stat.
  static struct stat check_same_file(int fd, const struct stat& expected, const std::string& path) {
    struct stat st;
    if (::fstat(fd, &st) < 0) throw_errno(path);
    if (st.st_dev != expected.st_dev || st.st_ino != expected.st_ino)
      throw Error(path + ": replaced while being scanned");
    return st;
  }

  static UniqueFd open_entry(int dirfd, const std::string& name, int flags,
                             const std::string& path) {
    int fd;
    do fd = ::openat(dirfd, name.c_str(), flags | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) throw_errno(path);
    return UniqueFd(fd);
  }

  void scan_regular(Inode& inode, int dirfd, const std::string& name, const struct stat& st,
                    const std::string& path) {
    UniqueFd fd = open_entry(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NOCTTY, path);
    uint64_t size = static_cast<uint64_t>(check_same_file(fd.get(), st, path).st_size);
    inode.size = size;
    read_xattrs(inode, XattrSource{.fd = fd.get()}, options_, path);
    if (size == 0) return;
    if (size <= options_.inline_max) {
      inode.content = read_exact(fd.get(), static_cast<size_t>(size), path);
      return;
    }
    Digest digest = sink_(fd.get(), size, path);
    inode.payload = digest.object_path();
    inode.digest = digest;
  }

  const ScanOptions& options_;
  const ObjectSink& sink_;
  std::map<std::pair<dev_t, ino_t>, InodePtr> hardlinks_;
};

}  // namespace

Tree scan_directory(const std::string& dir, const ScanOptions& options, const ObjectSink& sink) {
  if (options.skip_xattrs && options.user_xattrs_only)
    throw Error("--skip-xattrs and --user-xattrs cannot be combined");
  return Scanner(options, sink).scan(dir);
}

}  // namespace cfs::erofs
