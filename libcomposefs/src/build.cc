// lcfs_build and lcfs_load_node_from_file: nodes from files on disk, with C composefs'
// flags (digests, inlining, xattr filters). Hardlinks are not detected, as in 1.0.8.
#include <dirent.h>
#include <fcntl.h>
#include <linux/limits.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cfs/fd.h"
#include "guard.h"
#include "node.h"

namespace cfs::lcfs {
namespace {

constexpr int kKnownFlags = LCFS_BUILD_SKIP_XATTRS | LCFS_BUILD_USE_EPOCH |
                            LCFS_BUILD_SKIP_DEVICES | LCFS_BUILD_COMPUTE_DIGEST |
                            LCFS_BUILD_NO_INLINE | LCFS_BUILD_USER_XATTRS | LCFS_BUILD_BY_DIGEST;

struct DirCloser {
  void operator()(DIR* dir) const noexcept { closedir(dir); }
};

// "ab/cdef…": where an object with this digest lives below the object directory.
std::string object_path(const uint8_t* digest) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < LCFS_DIGEST_SIZE; ++i) {
    if (i == 1) out += '/';
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xf];
  }
  return out;
}

// Reads the xattrs through an O_PATH fd, which works for symlinks and devices alike.
void read_xattrs(lcfs_node_s* node, int dirfd, const char* fname, int flags) {
  UniqueFd fd(openat(dirfd, fname, O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) throw_errno(fname);
  const std::string path = "/proc/self/fd/" + std::to_string(fd.get());
  ssize_t size = listxattr(path.c_str(), nullptr, 0);
  if (size < 0) throw_errno(fname);
  std::string names(static_cast<size_t>(size), '\0');
  size = listxattr(path.c_str(), names.data(), names.size());
  if (size < 0) throw_errno(fname);
  names.resize(static_cast<size_t>(size));
  for (size_t pos = 0; pos < names.size();) {
    const char* name = names.c_str() + pos;
    pos += std::strlen(name) + 1;
    if ((flags & LCFS_BUILD_USER_XATTRS) != 0 && std::strncmp(name, "user.", 5) != 0) continue;
    ssize_t len = getxattr(path.c_str(), name, nullptr, 0);
    if (len < 0) throw_errno(fname);
    std::string value(static_cast<size_t>(len), '\0');
    len = getxattr(path.c_str(), name, value.data(), value.size());
    if (len < 0) throw_errno(fname);
    if (lcfs_node_set_xattr(node, name, value.data(), static_cast<size_t>(len)) < 0)
      throw_errno(fname);
  }
}

void read_exact(int fd, std::span<uint8_t> out) {
  while (!out.empty()) {
    ssize_t n = read(fd, out.data(), out.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("read");
    if (n == 0) throw_errno(ENODATA, "short read");
    out = out.subspan(static_cast<size_t>(n));
  }
}

void set_from_content(lcfs_node_s* node, int dirfd, const char* fname, int flags) {
  const uint64_t size = node->head.inode.st_size;
  const bool compute = (flags & LCFS_BUILD_COMPUTE_DIGEST) != 0;
  const bool by_digest = (flags & LCFS_BUILD_BY_DIGEST) != 0;
  const bool digest = size != 0 && (compute || by_digest);
  const bool inline_data = size != 0 && (flags & LCFS_BUILD_NO_INLINE) == 0 &&
                           size <= LCFS_RECOMMENDED_INLINE_CONTENT_MAX;
  if (!digest && !inline_data) return;
  UniqueFd fd(openat(dirfd, fname, O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno(fname);
  if (digest) {
    if (lcfs_node_set_fsverity_from_fd(node, fd.get()) < 0) throw_errno(fname);
    if (by_digest) {
      if (lcfs_node_set_payload(node, object_path(node->head.digest).c_str()) < 0)
        throw_errno(fname);
      // The digest only named the object; the caller did not ask to record it.
      if (!compute) node->head.digest_set = false;
    }
    lseek(fd.get(), 0, SEEK_SET);
  }
  if (inline_data) {
    uint8_t buf[LCFS_RECOMMENDED_INLINE_CONTENT_MAX];
    read_exact(fd.get(), {buf, static_cast<size_t>(size)});
    if (lcfs_node_set_content(node, buf, size) < 0) throw_errno(fname);
  }
}

NodePtr load_file(int dirfd, const char* fname, int flags) {
  if ((flags & ~kKnownFlags) != 0 ||
      ((flags & LCFS_BUILD_SKIP_XATTRS) != 0 && (flags & LCFS_BUILD_USER_XATTRS) != 0))
    throw_errno(EINVAL, "libcomposefs: build flags");
  struct stat st {};
  if (fstatat(dirfd, fname, &st, AT_SYMLINK_NOFOLLOW) < 0) throw_errno(fname);
  NodePtr node(new_node());
  InodeHead& in = node->head.inode;
  in.st_mode = st.st_mode;
  in.st_uid = st.st_uid;
  in.st_gid = st.st_gid;
  in.st_rdev = static_cast<uint32_t>(st.st_rdev);
  in.st_size = static_cast<uint64_t>(st.st_size);
  if (S_ISREG(st.st_mode)) {
    set_from_content(node.get(), dirfd, fname, flags);
  } else if (S_ISLNK(st.st_mode)) {
    char target[PATH_MAX + 1];
    ssize_t n = readlinkat(dirfd, fname, target, sizeof target - 1);
    if (n < 0) throw_errno(fname);
    target[n] = '\0';
    if (lcfs_node_set_symlink_payload(node.get(), target) < 0) throw_errno(fname);
  }
  if ((flags & LCFS_BUILD_USE_EPOCH) == 0) {
    in.st_mtim_sec = st.st_mtim.tv_sec;
    in.st_mtim_nsec = static_cast<uint32_t>(st.st_mtim.tv_nsec);
  }
  if ((flags & LCFS_BUILD_SKIP_XATTRS) == 0) read_xattrs(node.get(), dirfd, fname, flags);
  return node;
}

// On failure, failed names the path (relative to the starting point) that broke.
NodePtr build(int dirfd, const std::string& fname, int flags, std::string& failed) {
  failed = fname;
  NodePtr node = load_file(dirfd, fname.c_str(), flags);
  if (!lcfs_node_dirp(node.get())) return node;
  UniqueFd dfd(openat(dirfd, fname.c_str(), O_DIRECTORY | O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!dfd) throw_errno(fname);
  std::unique_ptr<DIR, DirCloser> dir(fdopendir(dfd.get()));
  if (!dir) throw_errno(fname);
  const int fd = dfd.release();  // owned by dir now
  for (;;) {
    errno = 0;
    dirent* de = readdir(dir.get());
    if (de == nullptr) {
      if (errno != 0) throw_errno(fname);
      break;
    }
    const std::string name = de->d_name;
    if (name == "." || name == "..") continue;
    failed = fname + "/" + name;
    unsigned char type = de->d_type;
    if (type == DT_UNKNOWN) {
      struct stat st {};
      if (fstatat(fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0) throw_errno(failed);
      if (S_ISDIR(st.st_mode)) type = DT_DIR;
    }
    NodePtr child;
    if (type == DT_DIR) {
      std::string sub_failed;
      try {
        child = build(fd, name, flags, sub_failed);
      } catch (...) {
        failed = fname + "/" + sub_failed;
        throw;
      }
    } else {
      if ((flags & LCFS_BUILD_SKIP_DEVICES) != 0 && (type == DT_BLK || type == DT_CHR)) continue;
      child = load_file(fd, name.c_str(), flags);
    }
    if (lcfs_node_add_child(node.get(), child.get(), name.c_str()) < 0) throw_errno(failed);
    child.release();  // the directory holds the reference now
  }
  failed = fname;
  return node;
}

}  // namespace
}  // namespace cfs::lcfs

using cfs::lcfs::with_errno;

extern "C" {

int lcfs_node_set_from_content(lcfs_node_s* node, int dirfd, const char* fname, int buildflags) {
  if (node == nullptr) {
    errno = EINVAL;
    return -1;
  }
  return with_errno(
      [&] {
        cfs::lcfs::set_from_content(node, dirfd, fname, buildflags);
        return 0;
      },
      -1);
}

lcfs_node_s* lcfs_load_node_from_file(int dirfd, const char* fname, int buildflags) {
  return with_errno([&] { return cfs::lcfs::load_file(dirfd, fname, buildflags).release(); },
                    static_cast<lcfs_node_s*>(nullptr));
}

lcfs_node_s* lcfs_build(int dirfd, const char* fname, int buildflags, char** failed_path_out) {
  std::string failed;
  lcfs_node_s* root =
      with_errno([&] { return cfs::lcfs::build(dirfd, fname, buildflags, failed).release(); },
                 static_cast<lcfs_node_s*>(nullptr));
  if (root == nullptr && failed_path_out != nullptr) {
    const int saved = errno;
    *failed_path_out = strdup(failed.c_str());  // the caller frees it, as with C's
    errno = saved;
  }
  return root;
}

}  // extern "C"
