// cfsctl subcommand registration. Each command family lives in its own file and adds its
// subcommands to the CLI11 app; main.cc dispatches (and handles the argv[0] drop-in modes).
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <utility>

#include <cstdint>
#include <optional>

#include "cfs/main_frame.h"
#include "cfs/store/repository.h"

namespace cfs::cli {

// Global options shared by every subcommand (composefs-rs' cfsctl has the same ones).
struct GlobalOptions {
  std::string repo;             // --repo DIR
  bool user = false;            // --user: $HOME/.var/lib/composefs
  bool system = false;          // --system: /sysroot/composefs
  std::string hash;             // --hash sha256|sha512: must match the repository's algorithm
  bool no_upgrade = false;      // --no-upgrade: refuse repositories without meta.json
  bool require_verity = false;  // --require-verity: refuse insecure repositories
  bool insecure = false;        // --insecure (hidden, composefs-rs compatibility)
  bool no_repo = false;         // --no-repo: compute-id, compute-karg, create-dumpfile only
  // --erofs-version 0|1|2 (composefs-rs' spelling): the EROFS format compute-id computes,
  // and, for commands that open a repository, the one format images are written in and
  // looked up by instead of meta.json's erofs_formats (meta.json is not changed).
  std::optional<uint32_t> erofs_version;
};

// Each register_* adds subcommands whose callbacks run the command; a callback reports
// failure by throwing cfs::Error (printed by main's frame as "cfsctl: <message>", exit 1) or
// by throwing cfs::ExitStatus(code) after printing its own report.
void register_image_commands(CLI::App& app, GlobalOptions& global);  // dump, compute-id
void register_repo_commands(CLI::App& app, GlobalOptions& global);   // init, create-image, ...
void register_oci_commands(CLI::App& app, GlobalOptions& global);    // oci pull, images, ...

// Adds the subcommand `name` to parent. CLI11 parses its options into an Args that the
// subcommand owns (bind them through the returned pointer); after parsing, its callback calls
// run(args, global).
template <class Args, class Run>
std::pair<CLI::App*, Args*> add_command(CLI::App& parent, const GlobalOptions& global,
                                        std::string name, std::string description, Run run) {
  auto args = std::make_shared<Args>();
  CLI::App* command = parent.add_subcommand(std::move(name), std::move(description));
  command->callback([args, &global, run = std::move(run)] { run(*args, global); });
  return {command, args.get()};
}

// The repository path: --repo, --system (/sysroot/composefs), --user
// ($HOME/.var/lib/composefs), else the system one for root and the user one for others, as
// composefs-rs' cfsctl chooses. A cfs::Error naming `command` when $HOME is needed and unset.
std::string require_repo(const GlobalOptions& global, const std::string& command);

// Opens that repository with the global options applied: a repository without meta.json is
// upgraded as composefs-rs does (refused with --no-upgrade), --hash must match its algorithm
// and --require-verity its security; --erofs-version becomes the handle's EROFS format.
store::Repository open_repo(const GlobalOptions& global, const std::string& command,
                            store::LockMode lock = store::LockMode::shared);

// Writes a command's output to stdout, failing (rather than exiting 0) when it cannot.
void print(const std::string& text);

// The C-compatible drop-in tools; argv excludes the program name. Return the exit code.
int mkcomposefs_main(int argc, char** argv);
int composefs_info_main(int argc, char** argv);

}  // namespace cfs::cli
