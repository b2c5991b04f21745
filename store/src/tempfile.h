// Temporary files published under their final name only once complete: O_TMPFILE where the
// filesystem has it, a named ".tmp-*" entry elsewhere (internal: not installed).
#pragma once

#include <string>

#include "cfs/fd.h"

namespace cfs::store::detail {

// A new read-only descriptor of the file behind fd (through /proc/self/fd): fs-verity
// refuses files that still have writers.
UniqueFd reopen_read_only(int fd, const std::string& what);

// O_TMPFILE in dirfd, or an empty fd if the filesystem lacks it.
UniqueFd open_tmpfile(int dirfd, unsigned mode, const std::string& what);

// A new file dirfd/<prefix><random>, created exclusively; its name is stored in name.
UniqueFd create_named_temp(int dirfd, const std::string& prefix, std::string& name, unsigned mode,
                           const std::string& what);

// Links an anonymous (O_TMPFILE) file into dirfd/name. Returns false if name exists.
bool link_tmpfile(int fd, int dirfd, const std::string& name, const std::string& what);

// Renames from_dir/from to to_dir/to without replacing; returns false if to exists. Falls
// back to link+unlink where the filesystem lacks RENAME_NOREPLACE.
bool rename_noreplace(int from_dir, const std::string& from, int to_dir, const std::string& to,
                      const std::string& what);

}  // namespace cfs::store::detail
