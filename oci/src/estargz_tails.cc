#include "estargz_tails.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "cfs/atomic_file.h"
#include "cfs/error.h"
#include "cfs/safe_open.h"
#include "content_index.h"
#include "util.h"

namespace cfs::oci::estargz_tails {

namespace {

std::optional<std::string> dir_of(std::string_view chunk_digest) {
  if (!chunk_digest.starts_with("sha256:") || chunk_digest.size() != 71) return std::nullopt;
  for (char c : chunk_digest.substr(7))
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return std::nullopt;
  return std::string(kDir) + "/" + std::string(chunk_digest.substr(7));
}

std::string name_of(uint32_t crc, uint32_t isize) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08x-%u", crc, isize);
  return buf;
}

bool is_hex(std::string_view s, size_t size) {
  if (s.size() != size) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// The isize of a tail file's name "<crc32 hex>-<isize>", nullopt when malformed.
std::optional<uint32_t> isize_of(std::string_view name) {
  if (name.size() < 10 || !is_hex(name.substr(0, 8), 8) || name[8] != '-') return std::nullopt;
  std::string_view digits = name.substr(9);
  if (digits.size() > 10 || (digits.size() > 1 && digits[0] == '0')) return std::nullopt;
  uint64_t v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > UINT32_MAX) return std::nullopt;
  return static_cast<uint32_t>(v);
}

}  // namespace

bool known(const store::Repository& repo, std::string_view chunk_digest) {
  auto dir = dir_of(chunk_digest);
  if (!dir) return false;
  auto st = lstat_beneath(repo.dirfd(), *dir, repo.path() + ": " + std::string(kDir));
  return st && S_ISDIR(st->st_mode);
}

std::optional<std::vector<std::byte>> lookup(const store::Repository& repo,
                                             std::string_view chunk_digest, uint32_t crc,
                                             uint32_t isize) {
  auto dir = dir_of(chunk_digest);
  if (!dir) return std::nullopt;
  std::string rel = *dir + "/" + name_of(crc, isize);
  std::string what = repo.path() + "/" + rel;
  UniqueFd fd = open_beneath_if_exists(repo.dirfd(), rel, O_RDONLY | O_NONBLOCK, what);
  if (!fd) return std::nullopt;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw SystemError(errno, what);
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) > kMaxTail) return std::nullopt;
  std::vector<std::byte> out(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::pread(fd.get(), out.data() + got, out.size() - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw SystemError(errno, what);
    if (n == 0) return std::nullopt;  // shrunk meanwhile
    got += static_cast<size_t>(n);
  }
  return out;
}

void record(const store::Repository& repo, const std::vector<Tail>& tails) {
  for (const Tail& t : tails) {
    auto dir = dir_of(t.chunk_digest);
    if (!dir || t.bytes.size() > kMaxTail) continue;
    std::string what = repo.path() + "/" + *dir;
    UniqueFd d = mkdirs_beneath(repo.dirfd(), *dir, 0755, what);
    std::string name = name_of(t.crc, t.isize);
    std::string temp;
    UniqueFd fd = create_unique_file(d.get(), ".tmp-", 0644, temp, what);
    try {
      write_all(fd.get(), t.bytes, what + "/" + temp);
      // No fsync: a tail is checked against the member's CRC-32 and size before any use, so
      // one cut short by a crash is only a cache miss.
      fd.reset();
      if (::renameat(d.get(), temp.c_str(), d.get(), name.c_str()) != 0)
        throw SystemError(errno, what + "/" + name);
    } catch (...) {
      ::unlinkat(d.get(), temp.c_str(), 0);
      throw;
    }
  }
}

uint64_t prune(const store::Repository& repo,
               const std::function<bool(std::string_view chunk_hex)>& wanted, bool dry_run) {
  const std::string what = repo.path() + "/" + std::string(kDir);
  UniqueFd top = open_beneath_if_exists(repo.dirfd(), kDir, O_RDONLY | O_DIRECTORY, what);
  if (!top) return 0;
  uint64_t removed = 0;
  for (const std::string& chunk : content_index::directory_names(top.get(), what)) {
    if (!is_hex(chunk, 64) || wanted(chunk)) continue;
    std::string dir = std::string(kDir) + "/" + chunk;
    struct stat dst {};
    if (::fstatat(top.get(), chunk.c_str(), &dst, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISDIR(dst.st_mode))
      continue;  // gone meanwhile, or not a directory: fsck's to report
    UniqueFd d =
        open_beneath_if_exists(repo.dirfd(), dir, O_RDONLY | O_DIRECTORY, repo.path() + "/" + dir);
    if (!d) continue;  // not a directory: fsck's to report
    bool all = true;
    for (const std::string& name : content_index::directory_names(d.get(), what + "/" + chunk)) {
      struct stat st {};
      if (::fstatat(d.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode) ||
          !isize_of(name)) {
        all = false;  // fsck's to report
        continue;
      }
      ++removed;
      if (!dry_run && ::unlinkat(d.get(), name.c_str(), 0) != 0 && errno != ENOENT)
        throw SystemError(errno, repo.path() + "/" + dir + "/" + name + ": removing");
    }
    // A pull may be recording into it meanwhile (then it is not empty): kept.
    if (!dry_run && all && ::unlinkat(top.get(), chunk.c_str(), AT_REMOVEDIR) != 0 &&
        errno != ENOTEMPTY && errno != EEXIST && errno != ENOENT)
      throw SystemError(errno, repo.path() + "/" + dir + ": removing");
  }
  return removed;
}

CheckResult check(const store::Repository& repo) {
  CheckResult result;
  const std::string what = repo.path() + "/" + std::string(kDir);
  UniqueFd top = open_beneath_if_exists(repo.dirfd(), kDir, O_RDONLY | O_DIRECTORY, what);
  if (!top) return result;
  auto bad = [&](const std::string& rel, const std::string& problem) {
    result.errors.push_back("estargz-tail-invalid: " + rel + ": " + problem);
  };
  for (const std::string& chunk : content_index::directory_names(top.get(), what)) {
    std::string dir = std::string(kDir) + "/" + chunk;
    if (!is_hex(chunk, 64)) {
      bad(dir, "not named by a chunk's sha256 hex");
      continue;
    }
    struct stat st {};
    if (::fstatat(top.get(), chunk.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
      throw SystemError(errno, repo.path() + "/" + dir);
    if (!S_ISDIR(st.st_mode)) {
      bad(dir, "not a directory");
      continue;
    }
    UniqueFd d =
        open_beneath_if_exists(repo.dirfd(), dir, O_RDONLY | O_DIRECTORY, repo.path() + "/" + dir);
    if (!d) continue;  // removed meanwhile
    for (const std::string& name : content_index::directory_names(d.get(), what + "/" + chunk)) {
      std::string rel = dir + "/" + name;
      ++result.entries;
      std::optional<uint32_t> isize = isize_of(name);
      if (!isize) {
        bad(rel, "not named <crc32 hex>-<isize>");
        continue;
      }
      if (::fstatat(d.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
        throw SystemError(errno, repo.path() + "/" + rel);
      if (!S_ISREG(st.st_mode))
        bad(rel, "not a regular file");
      else if (static_cast<uint64_t>(st.st_size) > kMaxTail)
        bad(rel, std::to_string(st.st_size) + " bytes, more than the " + std::to_string(kMaxTail) +
                     " a tail may have");
      else if (static_cast<uint64_t>(st.st_size) > *isize)
        bad(rel, std::to_string(st.st_size) + " bytes, more than the member's isize");
    }
  }
  return result;
}

}  // namespace cfs::oci::estargz_tails
