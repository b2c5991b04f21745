// composefs-dump(5): the text form of a composefs tree, one line per inode:
//   PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST [KEY=VALUE ...]
// Parsing canonicalises (directory size 0, hardlink metadata taken from the target,
// xattrs sorted) and every rejection names the file, the line and the reason.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "cfs/erofs/format.h"
#include "cfs/erofs/tree.h"
#include "cfs/output.h"

namespace cfs::erofs {

struct DumpfileParseOptions {
  // Strict rules (the C tools' CFS_PARSE_STRICT): final newline required, symlink SIZE must
  // equal the target length, no CONTENT on symlinks, RDEV 0 on non-devices.
  bool strict = false;
  size_t max_symlink = kSymlinkMaxCfs;
  // parse_dumpfile_fd on a regular file: leave inline content in the file (Inode::content_ref,
  // read back through Tree::content_source, which keeps the file open) instead of copying it.
  // Other inputs (pipes, text) are copied as usual.
  bool reference_content = false;
};

// Incremental parser: feed lines (without the trailing '\n') in order, then finish().
class DumpfileParser {
 public:
  DumpfileParser(std::string filename, DumpfileParseOptions options = {});
  ~DumpfileParser();
  DumpfileParser(DumpfileParser&&) noexcept;

  void parse_line(std::string_view line);
  // final_newline: whether the input ended with '\n' (checked in strict mode).
  Tree finish(bool final_newline = true);

 private:
  friend Tree parse_dumpfile_fd(int fd, std::string filename, const DumpfileParseOptions& options);
  struct State;
  std::unique_ptr<State> state_;
};

Tree parse_dumpfile(std::string_view text, std::string filename,
                    const DumpfileParseOptions& options = {});
// Reads from fd until EOF, streaming line by line.
Tree parse_dumpfile_fd(int fd, std::string filename, const DumpfileParseOptions& options = {});

// Writes the tree as a dumpfile: DFS pre-order over sorted children, hardlinks after the
// first occurrence as '@' lines carrying the target's fields, C-compatible escaping.
// Directory SIZE is inode.size as stored (the reader fills in the EROFS directory size,
// the parser 0); directory NLINK is always 2 + subdirectories.
void write_dumpfile(const Tree& tree, OutputSink& out);
std::string dumpfile_to_string(const Tree& tree);

// One line of write_dumpfile's output, appended to out: the entry at path, or with
// hardlink_target a '@' line naming it. content is a regular file's inline data; nlink is
// printed as given (write_dumpfile passes 2 + subdirectories for a directory).
void append_dump_entry(std::string& out, std::string_view path, const Inode& inode, uint32_t nlink,
                       const std::string* hardlink_target, std::string_view content);

// Escaping as the C tools write it. xattr=true also escapes '='.
void append_escaped(std::string& out, std::string_view bytes, bool xattr);
// The same for composefs-info ls paths, which keep spaces readable.
void append_listing_escaped(std::string& out, std::string_view bytes);
// Field escaping: empty -> "-", exactly "-" -> "\x2d".
void append_field(std::string& out, std::string_view bytes);
// A number as the dumpfile writes it: no padding, base 10 or 8 (modes).
void append_number(std::string& out, uint64_t v, int base = 10);

}  // namespace cfs::erofs
