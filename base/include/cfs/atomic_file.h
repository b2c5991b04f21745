// Files that appear under their final name only when complete: written to a uniquely named
// temporary in the same directory, synced, then renamed over the target.
#pragma once

#include <string>

#include "cfs/fd.h"

namespace cfs {

// 12 random characters from [A-Za-z0-9] (getrandom), for temporary file names.
std::string random_suffix();

// Creates a file named "<prefix><random_suffix()>" relative to dirfd (O_EXCL, retried on a
// clash). Returns the fd and sets name to the chosen name.
UniqueFd create_unique_file(int dirfd, const std::string& prefix, unsigned mode, std::string& name,
                            const std::string& what);

// fsync, then close reporting its error (close(2) can report delayed write errors).
void fsync_and_close(UniqueFd& fd, const std::string& what);

// A file that appears under its final name only when commit() succeeds. If the object dies
// uncommitted (an error was thrown), the temporary file is removed, so a failed run never leaves
// a partial file behind.
class AtomicFile {
 public:
  // mode is the permission of the new file before the umask, as open(2) takes it.
  explicit AtomicFile(std::string path, unsigned mode = 0666);
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;
  ~AtomicFile();

  int fd() const noexcept { return fd_.get(); }
  const std::string& path() const noexcept { return path_; }
  void commit();

 private:
  std::string path_;
  std::string temp_path_;
  UniqueFd fd_;
  bool committed_ = false;
};

}  // namespace cfs
