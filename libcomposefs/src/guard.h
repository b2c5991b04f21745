// The C boundary: no exception leaves the library; each becomes an errno value.
#pragma once

#include <cerrno>
#include <new>
#include <system_error>

#include "cfs/error.h"

namespace cfs::lcfs {

// The errno value that best describes the exception being handled.
inline int current_errno() noexcept {
  try {
    throw;
  } catch (const SystemError& e) {
    return e.code() != 0 ? e.code() : EIO;
  } catch (const Error&) {
    return EINVAL;  // a tree or image that breaks a composefs rule
  } catch (const std::bad_alloc&) {
    return ENOMEM;
  } catch (const std::system_error& e) {
    return e.code().value() != 0 ? e.code().value() : EIO;
  } catch (...) {
    return EIO;
  }
}

// Runs fn; on an exception sets errno and returns fail.
template <typename Fn, typename T>
T with_errno(Fn&& fn, T fail) noexcept {
  try {
    return fn();
  } catch (...) {
    errno = current_errno();
    return fail;
  }
}

}  // namespace cfs::lcfs
