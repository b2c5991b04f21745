// The tar stream state machine: header blocks, content (inline, external or sparse),
// padding and the trailer, and the hand-over of complete entries to the handler. Header
// decoding is in tar_header.cc, PAX records in tar_pax.cc, sparse members in tar_sparse.cc.
#include <algorithm>
#include <cstring>
#include <string_view>

#include "cfs/erofs/format.h"
#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/oci/tar.h"
#include "tar_format.h"

namespace cfs::oci {

bool xattr_kept(std::string_view name, XattrMode mode) noexcept {
  if (mode == XattrMode::all) return true;
  if (name == "security.capability") return true;
  return mode == XattrMode::keep_user_xattrs && name.starts_with("user.");
}

std::string tar_sparse_ref(const TarEntry& entry) {
  return "cfs.tar-sparse." + std::to_string(entry.header_offset);
}

TarParser::TarParser(TarHandler& handler, TarMode mode, std::string what, XattrMode xattrs)
    : handler_(handler), mode_(mode), what_(std::move(what)), xattr_mode_(xattrs) {}

TarParser::~TarParser() = default;

void TarParser::fail(const std::string& message) const {
  // Every message quotes something from the archive (paths, PAX values, type bytes); they are
  // escaped here, once, instead of at each of those call sites.
  throw Error(what_ + ": tar offset " + std::to_string(offset_) + ": " + escape_for_log(message));
}

void TarParser::feed(std::span<const std::byte> data) {
  while (!data.empty()) {
    switch (state_) {
      case State::header: {
        size_t n = std::min(kTarBlockSize - block_fill_, data.size());
        std::memcpy(block_ + block_fill_, data.data(), n);
        block_fill_ += n;
        data = data.subspan(n);
        offset_ += n;
        if (block_fill_ == kTarBlockSize) {
          block_fill_ = 0;
          handler_.inline_bytes({block_, kTarBlockSize});
          if (sparse_extension_)
            on_sparse_extension();
          else
            on_header();
        }
        break;
      }
      case State::content: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, data.size()));
        auto piece = data.first(n);
        switch (kind_) {
          case ContentKind::external:
            if (mode_ == TarMode::read_back)
              fail(entry_.path + ": content of a regular file over " +
                   std::to_string(kTarInlineMax) + " bytes stored inline");
            handler_.external_bytes(piece);
            break;
          case ContentKind::extension:
            extension_.append(reinterpret_cast<const char*>(piece.data()), piece.size());
            handler_.inline_bytes(piece);
            break;
          case ContentKind::small:
            entry_.content->append(reinterpret_cast<const char*>(piece.data()), piece.size());
            handler_.inline_bytes(piece);
            break;
          case ContentKind::sparse:
            // The tar bytes stay inline in the splitstream; the expanded content is extra.
            handler_.inline_bytes(piece);
            sparse_content(piece);
            break;
          case ContentKind::skip:
            handler_.inline_bytes(piece);
            break;
        }
        remaining_ -= n;
        offset_ += n;
        data = data.subspan(n);
        if (remaining_ == 0) end_content();
        break;
      }
      case State::padding: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(padding_, data.size()));
        handler_.inline_bytes(data.first(n));
        padding_ -= n;
        offset_ += n;
        data = data.subspan(n);
        if (padding_ == 0) state_ = State::header;
        break;
      }
      case State::trailer:
        // Zero blocks and record padding after the end marker: kept so the stream
        // reproduces the layer byte for byte (its diff_id covers them).
        handler_.inline_bytes(data);
        offset_ += data.size();
        data = {};
        break;
    }
  }
}

void TarParser::feed_external(const Digest& object, std::optional<uint64_t> known_size) {
  uint64_t size = known_size.value_or(remaining_);
  if (mode_ != TarMode::read_back) fail("external object in a raw tar stream");
  if (state_ != State::content || kind_ != ContentKind::external)
    fail("object " + object.hex() + " where no large regular file content is due");
  if (size != remaining_ || remaining_ != entry_.size)
    fail(entry_.path + ": object " + object.hex() + " has " + std::to_string(size) +
         " bytes, the entry needs " + std::to_string(entry_.size));
  entry_.object = object;
  remaining_ = 0;
  offset_ += size;
  end_content();
}

void TarParser::finish() {
  if (state_ == State::trailer) return;
  // Some writers omit the end-of-archive marker; a stream that stops at an entry
  // boundary is complete.
  if (state_ == State::header && block_fill_ == 0 && !sparse_extension_) return;
  fail("truncated tar stream (ends inside " +
       std::string(state_ == State::header ? "a header" : "the content of " + entry_.path) + ")");
}

void TarParser::check_path(const std::string& path, const char* role) const {
  if (path.size() > erofs::kPathMax)
    fail(std::string(role) + " of " + std::to_string(path.size()) + " bytes (at most " +
         std::to_string(erofs::kPathMax) + ")");
  if (path.find('\0') != std::string::npos) fail(std::string(role) + " contains a NUL byte");
  size_t depth = 0;
  for (size_t i = 0; i < path.size();) {
    size_t slash = path.find('/', i);
    if (slash == std::string::npos) slash = path.size();
    std::string_view part(path.data() + i, slash - i);
    if (!part.empty() && part != ".") ++depth;
    i = slash + 1;
  }
  if (depth > erofs::kMaxDirDepth)
    fail(std::string(role) + " '" + path.substr(0, 64) + "…' nests " + std::to_string(depth) +
         " levels deep (at most " + std::to_string(erofs::kMaxDirDepth) + ")");
}

void TarParser::begin_entry_content(uint64_t size) {
  if (entry_.type != TarEntryType::regular) {
    begin_content(size, ContentKind::skip);
    return;
  }
  if (entry_.sparse) {
    if (!entry_.external()) entry_.content.emplace();
    if (mode_ == TarMode::split && entry_.external()) handler_.external_begin(entry_);
    sparse_map_text_.clear();
    sparse_map_bytes_ = 0;
    sparse_map_count_.reset();
    sparse_map_offset_.reset();
    if (!sparse_map_in_data_) check_sparse_map(size);
    begin_content(size, ContentKind::sparse);
    return;
  }
  if (entry_.external()) {
    if (mode_ == TarMode::split) handler_.external_begin(entry_);
    begin_content(size, ContentKind::external);
  } else {
    entry_.content.emplace();
    begin_content(size, ContentKind::small);
  }
}

void TarParser::begin_content(uint64_t size, ContentKind kind) {
  kind_ = kind;
  remaining_ = size;
  padding_ = (kTarBlockSize - size % kTarBlockSize) % kTarBlockSize;
  if (size == 0)
    end_content();
  else
    state_ = State::content;
}

void TarParser::end_content() {
  state_ = padding_ > 0 ? State::padding : State::header;
  if (kind_ == ContentKind::extension) {
    switch (extension_type_) {
      case 'x':
        parse_pax(extension_, false);
        break;
      case 'g':
        parse_pax(extension_, true);
        break;
      case 'L':
        long_name_ = extension_.substr(0, extension_.find('\0'));
        break;
      case 'K':
        long_link_ = extension_.substr(0, extension_.find('\0'));
        break;
    }
    extension_.clear();
    if (extension_.capacity() > kTarBlockSize * 8) extension_.shrink_to_fit();
    return;
  }
  if (kind_ == ContentKind::skip && extension_type_ == 'V') {
    extension_type_ = 0;
    return;
  }
  if (kind_ == ContentKind::sparse) {
    if (sparse_map_in_data_) fail(entry_.path + ": GNU sparse 1.0 map is truncated");
    // Zero-length segments may remain (GNU marks the size with one at the end).
    while (sparse_index_ < sparse_.size() && sparse_[sparse_index_].length == 0) ++sparse_index_;
    if (sparse_left_ != 0 || sparse_index_ != sparse_.size())
      fail(entry_.path + ": sparse data ends before its map");
    sparse_emit_zeros(entry_.size - sparse_pos_);
    std::vector<SparseSegment>().swap(sparse_);
    if (mode_ == TarMode::split && entry_.external()) handler_.external_end();
    handler_.entry(entry_);
    return;
  }
  if (kind_ == ContentKind::external && mode_ == TarMode::split) handler_.external_end();
  handler_.entry(entry_);
}

}  // namespace cfs::oci
