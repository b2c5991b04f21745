// A push parser for the tar streams of OCI layers. It reads every header format real writers
// produce: POSIX ustar (name prefix), PAX (path, linkpath, size, uid, gid, mtime with
// fraction or sign, SCHILY.devmajor/minor, SCHILY.xattr.*, LIBARCHIVE.xattr.*), GNU and
// oldgnu (magic "ustar  ", long names 'L'/'K', base-256 numbers, no prefix field), star
// (131-byte prefix) and v7 (no magic, directories by a trailing '/'), and sparse members
// (GNU 'S' headers with extension blocks, PAX GNU.sparse maps 0.0, 0.1 and 1.0).
// It serves both directions of the layer splitstream:
//
//  - splitting: feed() the uncompressed layer; the handler gets every byte exactly once,
//    either as inline bytes (headers, extension records, padding, small or non-regular
//    content, the end-of-archive trailer) or as the content of a regular file larger than
//    kTarInlineMax (which becomes an external object);
//  - reading back: feed() the inline chunks of a splitstream and feed_external() its object
//    references; the handler gets the entries with the object digest of large files.
//
// Sparse members keep their tar bytes (map and data segments) inline in the splitstream, so
// the layer still re-exports byte for byte; in split mode the expanded content (holes as
// zeros) additionally goes to external_bytes/external_zeros and becomes an object that the
// stream names with a named ref (tar_sparse_ref). In read-back mode such an entry arrives
// with sparse set and no object; the caller looks the object up by that ref.
//
// Resource bounds are enforced while parsing, before anything is kept: PAX headers of at
// most kTarPaxHeaderMax bytes, GNU long names/links and PAX paths of at most PATH_MAX bytes,
// nesting at most erofs::kMaxDirDepth, xattr names and values within EROFS's limits,
// xattrs the image would drop (see xattr_kept) discarded at once, values over Linux's
// XATTR_SIZE_MAX refused whatever their name, and at most kTarXattrBudget bytes of xattr
// records per layer.
//
// Every entry is reported through TarHandler::entry once its content is complete.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "cfs/digest.h"
#include "cfs/erofs/tree.h"

namespace cfs::oci {

// Regular files of more than this many bytes are external objects in layer splitstreams
// (composefs-rs' INLINE_CONTENT_MAX_V0).
inline constexpr uint64_t kTarInlineMax = 64;
// A PAX extended header ('x' or 'g') is metadata: one xattr value (64 KiB, twice when
// libarchive writes it both raw and in base64) plus the paths fit many times over.
inline constexpr uint64_t kTarPaxHeaderMax = 1u << 20;
// Bytes of xattr records (kept or dropped) one layer may carry; more is a bomb, not a layer.
inline constexpr uint64_t kTarXattrBudget = 64u << 20;
// Bytes of holes the sparse members of one layer may expand to (hashing them costs about
// a second per 100 GiB).
inline constexpr uint64_t kTarSparseHolesMax = uint64_t{256} << 30;
// Entries of one sparse map (16 bytes each in memory).
inline constexpr size_t kTarSparseEntriesMax = 1u << 20;

// Which xattrs survive into the image (composefs-rs' xattr modes).
enum class XattrMode {
  allowlist_only,    // only security.capability (the default)
  keep_user_xattrs,  // the allowlist plus user.*
  all                // every xattr the layer records (layer inspection; images never use it)
};

// Whether an xattr of a layer entry survives into the image in that mode.
bool xattr_kept(std::string_view name, XattrMode mode) noexcept;

enum class TarEntryType { regular, hardlink, symlink, chardev, blockdev, directory, fifo };

struct TarEntry {
  std::string path;  // as written in the archive (PAX/GNU long names applied)
  std::string link;  // symlink target or hardlink target
  TarEntryType type = TarEntryType::regular;
  uint32_t mode = 0;  // permission bits (07777)
  uint32_t uid = 0;
  uint32_t gid = 0;
  int64_t mtime_sec = 0;  // signed: before 1970 is negative, as the image keeps it
  uint32_t mtime_nsec = 0;
  uint64_t size = 0;  // content size (regular files)
  uint32_t dev_major = 0;
  uint32_t dev_minor = 0;
  std::vector<erofs::Xattr> xattrs;    // kept PAX SCHILY.xattr.* / LIBARCHIVE.xattr.* records
  std::optional<std::string> content;  // regular files of at most kTarInlineMax bytes
  std::optional<Digest> object;        // regular files larger than that (read-back mode)
  bool sparse = false;                 // a sparse member: size is the expanded size
  // Lazy pulls (lazy.h): a regular file whose content is not local yet, stored whatever its
  // size as an external file redirected to this path below the object directory
  // (kPendingRedirectDir + "/<sha256 hex>"), without a metacopy digest.
  std::optional<std::string> pending;
  uint64_t header_offset = 0;  // tar offset of the entry's own header block

  bool external() const noexcept { return type == TarEntryType::regular && size > kTarInlineMax; }
};

class TarHandler {
 public:
  virtual ~TarHandler() = default;
  virtual void inline_bytes(std::span<const std::byte>) {}
  virtual void external_begin(const TarEntry&) {}
  virtual void external_bytes(std::span<const std::byte>) {}
  virtual void external_zeros(uint64_t) {}  // a hole of a sparse member (split mode)
  virtual void external_end() {}
  virtual void entry(TarEntry&) {}
};

// The named ref under which a layer splitstream records the expanded object of a sparse
// member larger than kTarInlineMax.
std::string tar_sparse_ref(const TarEntry& entry);

enum class TarMode {
  split,     // raw tar bytes in, large file content out through external_bytes
  read_back  // splitstream chunks in: large file content arrives through feed_external
};

struct TarHeader;  // tar_format.h

class TarParser {
 public:
  // what names the stream in errors ("layer sha256:…"); xattrs that mode drops from the
  // image are dropped while parsing.
  TarParser(TarHandler& handler, TarMode mode, std::string what,
            XattrMode xattrs = XattrMode::keep_user_xattrs);
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
  enum class ContentKind { skip, extension, small, external, sparse };
  struct SparseSegment {
    uint64_t offset;
    uint64_t length;
  };
  // Overrides from PAX records for the next entry (only the keys the image uses).
  struct Pax {
    std::optional<std::string> path, linkpath, size, uid, gid, mtime, devmajor, devminor;
    std::vector<erofs::Xattr> xattrs;  // kept ones, in record order
    // GNU sparse keys.
    std::optional<std::string> sparse_name, sparse_realsize, sparse_major, sparse_minor, sparse_map;
    std::vector<uint64_t> sparse_00;  // GNU.sparse.offset/numbytes pairs (format 0.0)
    bool any = false;
  };

  // A header's fields before PAX records and entry-type rules are applied.
  struct RawEntry;

  // Header blocks (tar_header.cc).
  void on_header();
  void end_of_archive();
  bool begin_extension(char type, uint64_t size);
  RawEntry decode_header(const TarHeader& h, uint64_t size);
  void start_entry(RawEntry raw);
  // PAX records (tar_pax.cc).
  void parse_pax(std::string_view records, bool global);
  void pax_record(std::string_view key, std::string_view value);
  void add_xattr(std::string_view name, std::string_view value);
  void apply_pax(RawEntry& raw);
  // Sparse members (tar_sparse.cc).
  void read_gnu_sparse_header(const TarHeader& h, RawEntry& raw);
  void apply_pax_sparse(RawEntry& raw, Pax& pax);
  void on_sparse_extension();
  void check_sparse_map(uint64_t data_size);
  bool parse_sparse_map_text();
  void sparse_content(std::span<const std::byte> piece);
  void sparse_emit_zeros(uint64_t n);
  void sparse_emit_data(std::span<const std::byte> data);
  // Content and the stream state (tar_parser.cc).
  void begin_entry_content(uint64_t data_size);
  void begin_content(uint64_t size, ContentKind kind);
  void end_content();
  void check_path(const std::string& path, const char* role) const;
  [[noreturn]] void fail(const std::string& message) const;

  TarHandler& handler_;
  TarMode mode_;
  std::string what_;
  XattrMode xattr_mode_;
  uint64_t xattr_bytes_ = 0;  // xattr record bytes so far in this layer (kTarXattrBudget)
  State state_ = State::header;
  uint64_t offset_ = 0;   // bytes consumed
  std::byte block_[512];  // kTarBlockSize
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
  Pax pax_;
  bool ended_ = false;

  // Sparse member state.
  uint64_t entry_header_offset_ = 0;
  bool sparse_extension_ = false;    // GNU 'S' extension blocks follow
  uint64_t sparse_data_size_ = 0;    // the member's data area (header size field)
  bool sparse_map_in_data_ = false;  // PAX 1.0: the map precedes the data segments
  std::string sparse_map_text_;      // its unparsed bytes
  uint64_t sparse_map_bytes_ = 0;    // its bytes so far
  std::optional<uint64_t> sparse_map_count_;
  std::optional<uint64_t> sparse_map_offset_;  // an offset waiting for its size
  std::vector<SparseSegment> sparse_;          // the map
  size_t sparse_index_ = 0;                    // segment being filled
  uint64_t sparse_left_ = 0;                   // bytes left in that segment
  uint64_t sparse_pos_ = 0;                    // expanded bytes emitted
  uint64_t sparse_holes_ = 0;                  // hole bytes of this layer so far
};

}  // namespace cfs::oci
