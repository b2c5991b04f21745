// One error style for all of cfs: functions throw cfs::Error (or its errno-carrying
// subclass SystemError); front ends catch at the top and print e.what().
// Messages name the file/object first and the broken rule second, e.g.
//   "image.cfs: /usr/bin: dirent '..' points to nid 40, expected parent nid 36".
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>
#include <string_view>

namespace cfs {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// An error caused by a failed system call; code() is the errno value.
class SystemError : public Error {
 public:
  SystemError(int code, const std::string& what);
  int code() const noexcept { return code_; }

 private:
  int code_;
};

// Throws SystemError(errno, "<what>: <strerror(errno)>").
[[noreturn]] void throw_errno(const std::string& what);
[[noreturn]] void throw_errno(int code, const std::string& what);

}  // namespace cfs
