// What a tar header says about an entry before PAX records and the entry-type rules are
// applied; shared by the header, PAX and sparse parts of the parser.
#pragma once

#include <cstdint>

#include "cfs/oci/tar.h"

namespace cfs::oci {

struct TarParser::RawEntry {
  TarEntry entry;     // path, link, mode, mtime and header offset so far
  char type = 0;      // the typeflag
  uint64_t size = 0;  // the size field: the data area (tar bytes) of the member
  uint64_t uid = 0;
  uint64_t gid = 0;
  uint64_t dev_major = 0;
  uint64_t dev_minor = 0;
  bool sparse = false;
  uint64_t realsize = 0;  // a sparse member's expanded size
};

}  // namespace cfs::oci
