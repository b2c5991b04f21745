#include "credential_helper.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>
#include <pthread.h>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fd.h"
#include "util.h"

extern char** environ;

namespace cfs::oci::registry {

namespace {

constexpr size_t kMaxAnswer = 1u << 20;

// Helper names become a program name: letters, digits, '-', '_' and '.' only.
bool valid_helper_name(const std::string& name) {
  if (name.empty() || name.size() > 128 || name.front() == '.') return false;
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
      return false;
  return true;
}

struct SpawnActions {
  posix_spawn_file_actions_t actions;
  SpawnActions() { posix_spawn_file_actions_init(&actions); }
  ~SpawnActions() { posix_spawn_file_actions_destroy(&actions); }
  SpawnActions(const SpawnActions&) = delete;
  SpawnActions& operator=(const SpawnActions&) = delete;
};

UniqueFd pipe_end(int fd) {
  return UniqueFd(fd);
}

}  // namespace

std::optional<Credentials> run_credential_helper(const std::string& helper,
                                                 const std::string& registry,
                                                 const std::string& file) {
  std::string program = "docker-credential-" + helper;
  std::string what = file + ": credential helper " + program + " for " + registry;
  if (!valid_helper_name(helper))
    throw Error(file + ": credential helper name '" + escape_for_log(helper) + "' is not valid");
  int in[2], out[2];
  if (::pipe2(in, O_CLOEXEC) != 0) throw_errno(what + ": pipe");
  UniqueFd in_r = pipe_end(in[0]), in_w = pipe_end(in[1]);
  if (::pipe2(out, O_CLOEXEC) != 0) throw_errno(what + ": pipe");
  UniqueFd out_r = pipe_end(out[0]), out_w = pipe_end(out[1]);
  SpawnActions sa;
  posix_spawn_file_actions_adddup2(&sa.actions, in_r.get(), 0);
  posix_spawn_file_actions_adddup2(&sa.actions, out_w.get(), 1);
  const char* argv[] = {program.c_str(), "get", nullptr};
  pid_t pid = 0;
  int rc =
      posix_spawnp(&pid, program.c_str(), &sa.actions, nullptr, const_cast<char**>(argv), environ);
  if (rc != 0)
    throw Error(what + ": cannot run it (" + std::strerror(rc) +
                (rc == ENOENT ? "; is it installed and on PATH?" : "") + ")");
  in_r.reset();
  out_w.reset();
  std::string answer;
  std::string failure;
  try {
    // A helper that exits without reading its input must not kill us with SIGPIPE.
    sigset_t pipe_set, old_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_set);
    ssize_t n = ::write(in_w.get(), registry.data(), registry.size());
    int write_errno = errno;
    // Discard a SIGPIPE this write raised before unblocking.
    timespec zero{};
    while (sigtimedwait(&pipe_set, nullptr, &zero) > 0) {
    }
    pthread_sigmask(SIG_SETMASK, &old_set, nullptr);
    if (n < 0 && write_errno != EPIPE)
      failure = std::string("writing: ") + std::strerror(write_errno);
    in_w.reset();
    answer = read_fd(out_r.get(), what, kMaxAnswer);
  } catch (const Error& e) {
    failure = e.what();
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!failure.empty()) throw Error(what + ": " + failure);
  if (WIFSIGNALED(status))
    throw Error(what + ": killed by signal " + std::to_string(WTERMSIG(status)));
  if (WEXITSTATUS(status) != 0) {
    if (answer.find("credentials not found") != std::string::npos) return std::nullopt;
    // A failing helper prints its error message; no secret is expected there.
    std::string msg = answer.substr(0, 200);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\r')) msg.pop_back();
    throw Error(what + ": exited with status " + std::to_string(WEXITSTATUS(status)) +
                (msg.empty() ? "" : " (" + escape_for_log(msg) + ")"));
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(answer);
  } catch (const nlohmann::json::exception&) {
    throw Error(what + ": its answer is not JSON");
  }
  if (!j.is_object()) throw Error(what + ": its answer is not a JSON object");
  std::string user = oci::json_string(j, "Username", "", what);
  std::string secret = oci::json_string(j, "Secret", "", what);
  if (secret.empty()) throw Error(what + ": its answer has no Secret");
  Credentials c;
  c.source = file + " (" + program + ")";
  if (user == "<token>") {
    c.identity_token = std::move(secret);
  } else {
    c.username = std::move(user);
    c.password = std::move(secret);
  }
  return c;
}

}  // namespace cfs::oci::registry
