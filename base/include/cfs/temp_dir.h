// A temporary directory owned by one object: created private (0700) and unique, removed with
// everything below it when the owner goes away, however the scope is left.
#pragma once

#include <string>
#include <string_view>
#include <utility>

namespace cfs {

class TempDir {
 public:
  // parent/<prefix>XXXXXX (mkdtemp). Throws SystemError naming the template.
  TempDir(const std::string& parent, std::string_view prefix);
  ~TempDir();
  TempDir(TempDir&& other) noexcept : path_(other.release()) {}
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const noexcept { return path_; }
  std::string operator/(std::string_view name) const { return path_ + "/" + std::string(name); }
  // Stops owning the directory (it stays on disk) and returns its path.
  std::string release() noexcept { return std::exchange(path_, {}); }
  // Removes the tree now; best effort, as in the destructor.
  void remove() noexcept;

  // $TMPDIR when set and not empty, else /tmp.
  static std::string default_parent();

 private:
  std::string path_;
};

}  // namespace cfs
