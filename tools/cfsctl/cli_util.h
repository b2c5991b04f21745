// Helpers shared by the cfsctl image commands and the C-compatible drop-ins.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <string_view>

#include "cfs/digest.h"
#include "cfs/fd.h"
#include "cfs/output.h"

namespace cfs::cli {

// Parses argv (without the program name) for a drop-in tool. Returns -1 when the command
// should run, otherwise the exit code: 0 after --help, 1 after a usage error (the C tools
// exit 1 for every failure, and scripts rely on that).
int parse_dropin_args(CLI::App& app, std::string_view tool, int argc, char** argv);

// Discards everything: used when only an image digest is wanted.
class DiscardSink : public OutputSink {
 public:
  using OutputSink::write;
  void write(std::span<const std::byte>) override {}
};

// The fs-verity digest of exactly `size` bytes read from fd at offset 0; throws if the file
// is shorter or longer (it changed after it was stat'ed).
Digest hash_file_exact(int fd, uint64_t size, const std::string& path);

// Copies a regular file into a digest store (DIR/xx/rest), the layout of C mkcomposefs
// --digest-store and of composefs basedirs. Existing objects are kept as they are.
class DigestStore {
 public:
  explicit DigestStore(const std::string& dir);  // creates dir if needed
  // Stores the data of fd (size bytes) as the object named digest.
  void add(int fd, uint64_t size, const Digest& digest, const std::string& path);

 private:
  std::string dir_;
  UniqueFd dirfd_;
};

}  // namespace cfs::cli
