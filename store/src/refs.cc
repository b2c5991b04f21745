#include "cfs/store/refs.h"

#include <fcntl.h>
#include <unistd.h>

#include <vector>

#include "cfs/atomic_file.h"
#include "cfs/error.h"
#include "cfs/escape.h"
#include "fsutil.h"

namespace cfs::store {

void replace_symlink_at(int dirfd, const std::string& name, const std::string& target,
                        const std::string& what) {
  if (::symlinkat(target.c_str(), dirfd, name.c_str()) == 0) return;
  if (errno != EEXIST) throw_errno(what + ": creating symlink");
  if (detail::read_link_at(dirfd, name) == target) return;
  std::string temp = ".symlink-" + random_suffix();
  if (::symlinkat(target.c_str(), dirfd, temp.c_str()) < 0)
    throw_errno(what + ": creating temporary symlink");
  if (::renameat(dirfd, temp.c_str(), dirfd, name.c_str()) < 0) {
    int saved = errno;
    ::unlinkat(dirfd, temp.c_str(), 0);
    throw_errno(saved, what + ": replacing symlink");
  }
}

}  // namespace cfs::store
