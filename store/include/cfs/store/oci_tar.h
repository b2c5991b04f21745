// A push parser for the tar streams of OCI layers (POSIX ustar, GNU long names, PAX
// extended headers). It serves both directions of the layer splitstream:
//
//  - splitting: feed() the uncompressed layer; the handler gets every byte exactly once,
//    either as inline bytes (headers, extension records, padding, small or non-regular
//    content, the end-of-archive trailer) or as the content of a regular file larger than
//    kTarInlineMax (which becomes an external object);
//  - reading back: feed() the inline chunks of a splitstream and feed_external() its object
//    references; the handler gets the entries with the object digest of large files.
//
// Every entry is reported through TarHandler::entry once its content is complete.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cfs/digest.h"
#include "cfs/erofs/tree.h"

namespace cfs::store {

// Regular files of more than this many bytes are external objects in layer splitstreams
// (composefs-rs' INLINE_CONTENT_MAX_V0).
inline constexpr uint64_t kTarInlineMax = 64;

enum class TarEntryType { regular, hardlink, symlink, chardev, blockdev, directory, fifo };

struct TarEntry {
  std::string path;  // as written in the archive (PAX/GNU long names applied)
  std::string link;  // symlink target or hardlink target
  TarEntryType type = TarEntryType::regular;
  uint32_t mode = 0;  // permission bits (07777)
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint64_t size = 0;  // content size (regular files)
  uint32_t dev_major = 0;
  uint32_t dev_minor = 0;
  std::vector<erofs::Xattr> xattrs;    // from PAX SCHILY.xattr.* records
  std::optional<std::string> content;  // regular files of at most kTarInlineMax bytes
  std::optional<Digest> object;        // regular files larger than that (read-back mode)

  bool external() const noexcept { return type == TarEntryType::regular && size > kTarInlineMax; }
};

class TarHandler {
 public:
  virtual ~TarHandler() = default;
  virtual void inline_bytes(std::span<const std::byte>) {}
  virtual void external_begin(const TarEntry&) {}
  virtual void external_bytes(std::span<const std::byte>) {}
  virtual void external_end() {}
  virtual void entry(TarEntry&) {}
};

enum class TarMode {
  split,     // raw tar bytes in, large file content out through external_bytes
  read_back  // splitstream chunks in: large file content arrives through feed_external
};

class TarParser {
 public:
  // what names the stream in errors ("layer sha256:…").
  TarParser(TarHandler& handler, TarMode mode, std::string what);
  ~TarParser();
  TarParser(const TarParser&) = delete;
  TarParser& operator=(const TarParser&) = delete;

  void feed(std::span<const std::byte> data);
  // The whole content of the current entry, stored as an object (read-back mode only).
  // size, when known, must equal the entry's size.
  void feed_external(const Digest& object, std::optional<uint64_t> size = std::nullopt);
  // Throws unless the stream ended after a complete end-of-archive marker.
  void finish();

  uint64_t offset() const noexcept { return offset_; }

 private:
  enum class State { header, content, padding, trailer };
  enum class ContentKind { skip, extension, small, external };

  void on_header();
  void begin_content(uint64_t size, ContentKind kind);
  void end_content();
  void parse_pax(std::string_view records, bool global);
  [[noreturn]] void fail(const std::string& message) const;

  TarHandler& handler_;
  TarMode mode_;
  std::string what_;
  State state_ = State::header;
  uint64_t offset_ = 0;  // bytes consumed
  std::byte block_[512];
  size_t block_fill_ = 0;

  ContentKind kind_ = ContentKind::skip;
  uint64_t remaining_ = 0;   // content bytes left
  uint64_t padding_ = 0;     // padding bytes left after the content
  char extension_type_ = 0;  // 'x', 'g', 'L', 'K' while reading an extension's content
  std::string extension_;    // its bytes
  TarEntry entry_;           // the entry whose content is being read

  // Pending overrides for the next real entry.
  std::optional<std::string> long_name_;
  std::optional<std::string> long_link_;
  std::vector<std::pair<std::string, std::string>> pax_;
  bool ended_ = false;
};

}  // namespace cfs::store
