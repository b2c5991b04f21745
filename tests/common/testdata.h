// Shared helpers for tests: the composefs C reference vectors and temp directories.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/temp_dir.h"

namespace cfs::test {

// Directory holding the composefs C vectors (tests/data/composefs-c).
std::string vectors_dir();
// Reads a test data file; *.gz files are decompressed.
std::string read_vector(const std::string& name);

struct VectorRow {
  std::string asset;
  uint32_t min_version;
  uint32_t max_version;
  std::string fsverity;  // hex
  std::string sha256;    // hex
  bool strict;
};
std::vector<VectorRow> load_vectors();

std::string sha256_hex(std::string_view data);

// A temporary directory for one test (cfs-test-XXXXXX below $TMPDIR or /tmp), removed with
// its contents on destruction.
class TempDir : public cfs::TempDir {
 public:
  TempDir();
};

void write_file(const std::string& path, std::string_view data);

// n deterministic pseudo-random bytes (xorshift32 from seed): test file contents.
std::string pattern(size_t n, uint32_t seed);
// s without trailing newlines and spaces (command output).
std::string trim(std::string s);

// Starts args[0] (a path) with args, stdout and stderr to /dev/null; returns its pid.
pid_t spawn(const std::vector<std::string>& args);
// Waits for pid: its exit status, or 128 + signal number if a signal ended it.
int wait_status(pid_t pid);

// Interrupts runs of a command with SIGKILL at random points. Each run is killed after a
// random delay in [0, window]; a kill that arrives after the run has ended shrinks the window
// by a third, so a machine faster (or less loaded) than the one the first window was timed on
// still gets its runs cut short, and a test can ask for a number of kills that landed.
class RandomKiller {
 public:
  RandomKiller(long window_us, uint32_t seed) : window_us_(window_us), state_(seed | 1) {}
  // Starts args (as spawn() does), kills it; true if the kill ended it.
  bool run(const std::vector<std::string>& args);
  int landed() const { return landed_; }
  int attempts() const { return attempts_; }
  long window_us() const { return window_us_; }

 private:
  long window_us_;
  uint32_t state_;
  int landed_ = 0;
  int attempts_ = 0;
};

// Runs a shell command, returns its exit status; output captured into *out if given.
int run(const std::string& command, std::string* out = nullptr);
// s as one single-quoted shell word, for commands given to run().
std::string quote(const std::string& s);

}  // namespace cfs::test
