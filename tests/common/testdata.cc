#include "testdata.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "cfs/digest.h"
#include "cfs/fd.h"

namespace cfs::test {

std::string vectors_dir() {
  return std::string(CFS_TESTDATA) + "/composefs-c";
}

std::string read_vector(const std::string& name) {
  std::string path = name.starts_with("/") ? name : vectors_dir() + "/" + name;
  if (!name.ends_with(".gz")) return cfs::read_file(path);
  gzFile gz = gzopen(path.c_str(), "rb");
  if (!gz) throw std::runtime_error("cannot open " + path);
  std::string out;
  char buf[65536];
  int n;
  while ((n = gzread(gz, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  gzclose(gz);
  if (n < 0) throw std::runtime_error("cannot decompress " + path);
  return out;
}

std::vector<VectorRow> load_vectors() {
  std::vector<VectorRow> rows;
  std::istringstream in(cfs::read_file(vectors_dir() + "/VECTORS"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    VectorRow row;
    int strict = 0;
    fields >> row.asset >> row.min_version >> row.max_version >> row.fsverity >> row.sha256 >>
        strict;
    row.strict = strict != 0;
    rows.push_back(row);
  }
  return rows;
}

std::string sha256_hex(std::string_view data) {
  unsigned char md[32];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  return cfs::to_hex({md, len});
}

TempDir::TempDir() : cfs::TempDir(std::filesystem::temp_directory_path().string(), "cfs-test-") {}

void write_file(const std::string& path, std::string_view data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::string pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (auto& c : s) {
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    c = static_cast<char>(x);
  }
  return s;
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

pid_t spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("posix_spawn failed: " + args.at(0));
  return pid;
}

int wait_status(pid_t pid) {
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

bool RandomKiller::run(const std::vector<std::string>& args) {
  state_ ^= state_ << 13;
  state_ ^= state_ >> 17;
  state_ ^= state_ << 5;
  long delay =
      window_us_ > 0 ? static_cast<long>(state_ % static_cast<uint32_t>(window_us_ + 1)) : 0;
  pid_t pid = spawn(args);
  ::usleep(static_cast<useconds_t>(delay));
  ::kill(pid, SIGKILL);
  bool hit = wait_status(pid) == 128 + SIGKILL;
  ++attempts_;
  landed_ += hit;
  if (!hit) window_us_ = window_us_ * 2 / 3;
  return hit;
}

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

int run(const std::string& command, std::string* out) {
  FILE* p = popen(command.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed: " + command);
  std::string output;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) output.append(buf, n);
  int status = pclose(p);
  if (out) *out = std::move(output);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace cfs::test
