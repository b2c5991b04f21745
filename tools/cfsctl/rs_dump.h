// Dumpfile lines as composefs-rs' cfsctl writes them outside whole-image dumps (dump-files,
// oci layer --dumpfile): the composefs-dump(5) fields with directory SIZE 0, and a further
// name of a hardlinked inode as "PATH 0 @120000 - - - - 0.0 TARGET - -".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/erofs/tree.h"

namespace cfs::cli {

struct RsDumpEntry {
  uint64_t size = 0;
  uint32_t mode = 0;  // with the file type bits
  uint64_t nlink = 1;
  uint32_t uid = 0, gid = 0;
  uint64_t rdev = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  std::string payload;  // symlink target or object path "xx/rest"
  std::string content;  // inline data of a regular file
  std::optional<std::string> digest;
  std::vector<erofs::Xattr> xattrs;  // in output order
};

void append_rs_entry(std::string& out, std::string_view path, const RsDumpEntry& e);
void append_rs_hardlink(std::string& out, std::string_view path, std::string_view target);

// composefs-rs' dump-files of one path of a tree: the inode at path and, for a directory,
// everything below it (paths printed from `shown`, the path as the user gave it).
void append_rs_subtree(std::string& out, const erofs::Tree& tree, const erofs::Inode& inode,
                       const std::string& shown);

}  // namespace cfs::cli
