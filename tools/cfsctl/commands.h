// cfsctl subcommand registration. Each command family lives in its own file and adds its
// subcommands to the CLI11 app; main.cc dispatches (and handles the argv[0] drop-in modes).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

namespace cfs::cli {

// Global options shared by every subcommand.
struct GlobalOptions {
  std::string repo;  // --repo DIR
};

// Each register_* adds subcommands whose callbacks run the command; a callback reports
// failure by throwing cfs::Error (printed by main as "cfsctl: <message>", exit 1) or by
// throwing CLI::RuntimeError(code) after printing its own message.
void register_image_commands(CLI::App& app, GlobalOptions& global);  // dump, compute-id
void register_repo_commands(CLI::App& app, GlobalOptions& global);   // init, create-image, ...
void register_oci_commands(CLI::App& app, GlobalOptions& global);    // oci pull, images, ...

// The C-compatible drop-in tools; argv excludes the program name. Return the exit code.
int mkcomposefs_main(int argc, char** argv);
int composefs_info_main(int argc, char** argv);

}  // namespace cfs::cli
