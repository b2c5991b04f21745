#include "cfs/error.h"

#include <cstring>

namespace cfs {

SystemError::SystemError(int code, const std::string& what)
    : Error(what + ": " + std::strerror(code)), code_(code) {}

void throw_errno(const std::string& what) {
  throw SystemError(errno, what);
}
void throw_errno(int code, const std::string& what) {
  throw SystemError(code, what);
}

}  // namespace cfs
