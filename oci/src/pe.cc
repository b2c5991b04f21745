#include "cfs/oci/pe.h"

#include <cstring>

#include "cfs/error.h"

namespace cfs::oci {

namespace {

constexpr size_t kDosHeaderSize = 0x40;
constexpr size_t kPeOffsetField = 0x3c;
constexpr size_t kCoffHeaderSize = 20;
constexpr size_t kSectionHeaderSize = 40;

uint16_t le16(std::span<const std::byte> d, size_t at) {
  return static_cast<uint16_t>(std::to_integer<uint16_t>(d[at]) |
                               std::to_integer<uint16_t>(d[at + 1]) << 8);
}

uint32_t le32(std::span<const std::byte> d, size_t at) {
  return static_cast<uint32_t>(le16(d, at)) | static_cast<uint32_t>(le16(d, at + 2)) << 16;
}

}  // namespace

PeFile::PeFile(std::span<const std::byte> data, std::string what)
    : data_(data), what_(std::move(what)) {
  auto fail = [&](const std::string& why) {
    throw Error(what_ + ": not a valid PE/EFI executable: " + why);
  };
  if (data.size() < kDosHeaderSize) fail("shorter than a DOS header");
  if (std::to_integer<char>(data[0]) != 'M' || std::to_integer<char>(data[1]) != 'Z')
    fail("no 'MZ' signature");
  uint64_t pe = le32(data, kPeOffsetField);
  if (pe < kDosHeaderSize || pe + 4 + kCoffHeaderSize > data.size())
    fail("PE header offset " + std::to_string(pe) + " outside the file");
  if (std::memcmp(data.data() + pe, "PE\0\0", 4) != 0) fail("no 'PE' signature");
  size_t coff = pe + 4;
  uint16_t count = le16(data, coff + 2);
  uint16_t optional_size = le16(data, coff + 16);
  if (count == 0) fail("no sections");
  if (count > kPeMaxSections)
    fail(std::to_string(count) + " sections (at most " + std::to_string(kPeMaxSections) + ")");
  uint64_t table = coff + kCoffHeaderSize + optional_size;
  if (table + uint64_t{count} * kSectionHeaderSize > data.size())
    fail("section table outside the file");
  for (size_t i = 0; i < count; ++i) {
    size_t at = table + i * kSectionHeaderSize;
    PeSection s;
    const char* name = reinterpret_cast<const char*>(data.data() + at);
    s.name.assign(name, strnlen(name, 8));
    s.virtual_size = le32(data, at + 8);
    s.raw_size = le32(data, at + 16);
    s.raw_offset = le32(data, at + 20);
    if (s.raw_size > 0 && uint64_t{s.raw_offset} + s.raw_size > data.size())
      fail("section " + std::to_string(i) + " ('" + s.name + "') has its data outside the file");
    sections_.push_back(std::move(s));
  }
}

std::optional<std::span<const std::byte>> PeFile::section(std::string_view name) const {
  for (const PeSection& s : sections_) {
    if (s.name != name) continue;
    size_t size = std::min(s.virtual_size, s.raw_size);
    return data_.subspan(s.raw_offset, size);
  }
  return std::nullopt;
}

std::optional<std::string> PeFile::text_section(std::string_view name) const {
  std::optional<std::span<const std::byte>> bytes = section(name);
  if (!bytes) return std::nullopt;
  std::string text(reinterpret_cast<const char*>(bytes->data()), bytes->size());
  while (!text.empty() && text.back() == '\0') text.pop_back();
  if (text.find('\0') != std::string::npos)
    throw Error(what_ + ": section " + std::string(name) + " holds a NUL byte inside its text");
  return text;
}

}  // namespace cfs::oci
