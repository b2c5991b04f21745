// The one top-level error policy of every cfs binary (cfsctl and its drop-in names, cfs-fuse,
// cfs-mount and its helper names): main() runs its body through run_main(), and whatever
// escapes is reported once on stderr as "PROGRAM: message" with a fixed exit status:
//   ExitStatus(n)        nothing printed (the command already reported), exit n
//   UsageError           exit 2, as getopt-based tools do for a bad command line
//   std::bad_alloc       "out of memory", exit 1
//   any std::exception   (cfs::Error, std::system_error, CLI11, nlohmann, ...) exit 1
// No exception reaches std::terminate. Header-only and libc-only, so the static cfs-mount
// takes it without pulling anything in.
#pragma once

#include <cstdio>
#include <exception>
#include <new>
#include <string>
#include <string_view>

#include "cfs/error.h"

namespace cfs {

// A command line the program cannot run; the message says what is wrong with it.
class UsageError : public Error {
 public:
  using Error::Error;
};

// Ends the program with this exit status after the failure has been reported (e.g. a check
// that printed its findings), so the frame adds nothing.
class ExitStatus : public std::exception {
 public:
  explicit ExitStatus(int status) noexcept : status_(status) {}
  int status() const noexcept { return status_; }
  const char* what() const noexcept override { return "exit status"; }

 private:
  int status_;
};

// The name a binary was started under: the last component of argv[0], or fallback when the
// caller passed no argv[0] at all (execve with an empty argv).
inline std::string_view program_name(int argc, char** argv, std::string_view fallback) {
  if (argc < 1 || argv[0] == nullptr || argv[0][0] == '\0') return fallback;
  std::string_view path(argv[0]);
  auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

// Reports the exception being handled (call only from a catch block) and returns the exit
// status the policy above gives it.
inline int report_exception(std::string_view program) noexcept {
  auto say = [program](const char* message) {
    std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(program.size()), program.data(), message);
  };
  try {
    throw;
  } catch (const ExitStatus& e) {
    return e.status();
  } catch (const UsageError& e) {
    say(e.what());
    return 2;
  } catch (const std::bad_alloc&) {
    say("out of memory");
    return 1;
  } catch (const std::exception& e) {
    say(e.what());
    return 1;
  } catch (...) {
    say("unknown error");
    return 1;
  }
}

// Runs a program's body (returning its exit status) inside the policy above.
template <class Body>
int run_main(std::string_view program, Body&& body) noexcept {
  try {
    return body();
  } catch (...) {
    return report_exception(program);
  }
}

}  // namespace cfs
