// Sparse members: the GNU map in the header and its extension blocks, the PAX maps (formats
// 0.0, 0.1 and 1.0, the last at the start of the data area), and the expansion of the data
// segments and holes into the file's content.
#include <algorithm>

#include "cfs/oci/tar.h"
#include "tar_fields.h"
#include "tar_format.h"
#include "tar_raw_entry.h"

namespace cfs::oci {

namespace {

// Bytes of a PAX 1.0 sparse map: a count and two numbers per entry, each at most 20 digits
// and a newline.
constexpr size_t kSparseMapTextMax = (2 * kTarSparseEntriesMax + 1) * 21;

}  // namespace

// GNU old-style sparse member ('S'): map in the header (and extension blocks), real size in
// the header's GNU tail.
void TarParser::read_gnu_sparse_header(const TarHeader& h, RawEntry& raw) {
  sparse_.clear();
  if (raw.type != 'S') return;
  tar::Failer failer = [this](const std::string& m) { fail(m); };
  auto gnu = tar_tail<TarGnuTail>(h);
  raw.sparse = true;
  for (const TarSparseEntry& entry : gnu.sparse) {
    if (entry.offset[0] == 0) break;
    sparse_.push_back({tar::parse_number(entry.offset, "sparse offset", failer),
                       tar::parse_number(entry.numbytes, "sparse numbytes", failer)});
  }
  raw.realsize = tar::parse_number(gnu.realsize, "sparse realsize", failer);
  sparse_extension_ = gnu.is_extended != 0;
}

void TarParser::on_sparse_extension() {
  tar::Failer failer = [this](const std::string& m) { fail(m); };
  auto block = tar_struct<TarGnuSparseBlock>(block_);
  for (const TarSparseEntry& entry : block.sparse) {
    if (entry.offset[0] == 0) break;
    if (sparse_.size() >= kTarSparseEntriesMax) fail(entry_.path + ": sparse map too large");
    sparse_.push_back({tar::parse_number(entry.offset, "sparse offset", failer),
                       tar::parse_number(entry.numbytes, "sparse numbytes", failer)});
  }
  sparse_extension_ = block.is_extended != 0;
  if (!sparse_extension_) begin_entry_content(sparse_data_size_);
}

// PAX sparse members (GNU tar --posix -S): 0.0 offset/numbytes records, 0.1 a map record,
// 1.0 the map at the start of the data area. The real name and size are records.
void TarParser::apply_pax_sparse(RawEntry& raw, Pax& pax) {
  sparse_map_in_data_ = false;
  bool pax_sparse = pax.sparse_map || !pax.sparse_00.empty() || pax.sparse_major ||
                    pax.sparse_realsize || pax.sparse_name;
  if (!pax_sparse || raw.type == 'S') return;
  TarEntry& e = raw.entry;
  raw.sparse = true;
  if (pax.sparse_name) e.path = std::move(*pax.sparse_name);
  if (pax.sparse_major) {
    if (*pax.sparse_major != "1" || pax.sparse_minor.value_or("0") != "0")
      fail(e.path + ": GNU sparse format " + *pax.sparse_major + "." +
           pax.sparse_minor.value_or("?") + " is not supported");
    sparse_map_in_data_ = true;
  } else if (pax.sparse_map) {
    std::string_view m = *pax.sparse_map;
    std::vector<uint64_t> numbers;
    while (!m.empty()) {
      auto comma = m.find(',');
      uint64_t n = 0;
      if (!tar::parse_decimal(m.substr(0, comma), n)) fail(e.path + ": malformed GNU.sparse.map");
      numbers.push_back(n);
      if (numbers.size() > 2 * kTarSparseEntriesMax) fail(e.path + ": sparse map too large");
      m = comma == std::string_view::npos ? std::string_view{} : m.substr(comma + 1);
    }
    if (numbers.size() % 2) fail(e.path + ": GNU.sparse.map has an odd count");
    for (size_t i = 0; i < numbers.size(); i += 2) sparse_.push_back({numbers[i], numbers[i + 1]});
  } else {
    if (pax.sparse_00.size() % 2) fail(e.path + ": GNU.sparse.offset without GNU.sparse.numbytes");
    for (size_t i = 0; i < pax.sparse_00.size(); i += 2)
      sparse_.push_back({pax.sparse_00[i], pax.sparse_00[i + 1]});
  }
  if (!pax.sparse_realsize) fail(e.path + ": sparse member without GNU.sparse.size");
  if (!tar::parse_decimal(*pax.sparse_realsize, raw.realsize))
    fail("PAX GNU.sparse.size '" + *pax.sparse_realsize + "' is not a number");
}

void TarParser::check_sparse_map(uint64_t data_size) {
  uint64_t end = 0, stored = 0;
  for (const SparseSegment& s : sparse_) {
    if (s.offset < end || s.length > entry_.size || s.offset > entry_.size - s.length)
      fail(entry_.path + ": sparse map segment " + std::to_string(s.offset) + "+" +
           std::to_string(s.length) + " overlaps another or lies beyond the file size " +
           std::to_string(entry_.size));
    end = s.offset + s.length;
    stored += s.length;
  }
  if (stored != data_size)
    fail(entry_.path + ": sparse map holds " + std::to_string(stored) +
         " bytes, the member stores " + std::to_string(data_size));
  // Holes cost no I/O but are hashed (one precomputed hash per 4 KiB block): a few bytes
  // of tar claiming exabytes of holes would hash for hours.
  sparse_holes_ += entry_.size - stored;
  if (sparse_holes_ > kTarSparseHolesMax)
    fail(entry_.path + ": the layer's sparse members hold more than " +
         std::to_string(kTarSparseHolesMax >> 30) + " GiB of holes");
  sparse_index_ = 0;
  sparse_left_ = 0;
  sparse_pos_ = 0;
}

void TarParser::sparse_emit_zeros(uint64_t n) {
  if (n == 0) return;
  sparse_pos_ += n;
  if (!entry_.external())
    entry_.content->append(static_cast<size_t>(n), '\0');
  else if (mode_ == TarMode::split)
    handler_.external_zeros(n);
}

void TarParser::sparse_emit_data(std::span<const std::byte> data) {
  sparse_pos_ += data.size();
  if (!entry_.external())
    entry_.content->append(reinterpret_cast<const char*>(data.data()), data.size());
  else if (mode_ == TarMode::split)
    handler_.external_bytes(data);
}

// PAX 1.0: the data area starts with decimal lines (count, then offset and size per
// segment), padded to a block. Parses the complete lines collected so far (consuming them)
// and returns true once the map is complete.
bool TarParser::parse_sparse_map_text() {
  size_t pos = 0;
  bool done = false;
  for (;;) {
    if (sparse_map_count_ && sparse_.size() == *sparse_map_count_ && !sparse_map_offset_) {
      done = true;
      break;
    }
    auto nl = sparse_map_text_.find('\n', pos);
    if (nl == std::string::npos) break;
    uint64_t n = 0;
    if (!tar::parse_decimal(std::string_view(sparse_map_text_).substr(pos, nl - pos), n))
      fail(entry_.path + ": malformed GNU sparse 1.0 map");
    pos = nl + 1;
    if (!sparse_map_count_) {
      if (n > kTarSparseEntriesMax) fail(entry_.path + ": sparse map too large");
      sparse_map_count_ = n;
    } else if (!sparse_map_offset_) {
      sparse_map_offset_ = n;
    } else {
      sparse_.push_back({*sparse_map_offset_, n});
      sparse_map_offset_.reset();
    }
  }
  sparse_map_text_.erase(0, pos);
  return done;
}

void TarParser::sparse_content(std::span<const std::byte> piece) {
  // The map occupies whole blocks at the start of the data area; collect them block by
  // block until it is complete.
  while (sparse_map_in_data_ && !piece.empty()) {
    size_t want = kTarBlockSize - static_cast<size_t>(sparse_map_bytes_ % kTarBlockSize);
    size_t take = std::min(want, piece.size());
    sparse_map_text_.append(reinterpret_cast<const char*>(piece.data()), take);
    sparse_map_bytes_ += take;
    piece = piece.subspan(take);
    if (sparse_map_bytes_ % kTarBlockSize != 0) return;
    if (!parse_sparse_map_text()) {
      if (sparse_map_bytes_ > kSparseMapTextMax)
        fail(entry_.path + ": GNU sparse 1.0 map too large");
      continue;
    }
    sparse_map_in_data_ = false;
    sparse_map_text_.clear();
    sparse_map_text_.shrink_to_fit();
    if (sparse_map_bytes_ > sparse_data_size_)
      fail(entry_.path + ": GNU sparse 1.0 map is truncated");
    check_sparse_map(sparse_data_size_ - sparse_map_bytes_);
  }
  while (!piece.empty()) {
    while (sparse_left_ == 0) {
      if (sparse_index_ >= sparse_.size()) fail(entry_.path + ": sparse data beyond the map");
      const SparseSegment& s = sparse_[sparse_index_++];
      sparse_emit_zeros(s.offset - sparse_pos_);
      sparse_left_ = s.length;
    }
    size_t take = static_cast<size_t>(std::min<uint64_t>(sparse_left_, piece.size()));
    sparse_emit_data(piece.first(take));
    sparse_left_ -= take;
    piece = piece.subspan(take);
  }
}

}  // namespace cfs::oci
