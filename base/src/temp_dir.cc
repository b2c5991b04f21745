#include "cfs/temp_dir.h"

#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "cfs/error.h"

namespace cfs {

TempDir::TempDir(const std::string& parent, std::string_view prefix) {
  std::string templ = parent + "/" + std::string(prefix) + "XXXXXX";
  if (!::mkdtemp(templ.data())) throw_errno(templ + ": cannot create a temporary directory");
  path_ = std::move(templ);
}

TempDir::~TempDir() {
  remove();
}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    remove();
    path_ = other.release();
  }
  return *this;
}

void TempDir::remove() noexcept {
  if (path_.empty()) return;
  // remove_all does not follow symlinks: a link planted inside cannot widen the removal.
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
  path_.clear();
}

std::string TempDir::default_parent() {
  const char* tmp = std::getenv("TMPDIR");
  return tmp && *tmp ? tmp : "/tmp";
}

}  // namespace cfs
