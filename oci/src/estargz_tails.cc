#include "estargz_tails.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "cfs/atomic_file.h"
#include "cfs/error.h"
#include "cfs/safe_open.h"
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

}  // namespace cfs::oci::estargz_tails
