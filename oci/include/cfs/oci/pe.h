// The sections of a PE/COFF executable (an EFI binary: a unified kernel image or a UKI addon),
// read by a small strict parser: DOS header, "PE\0\0" signature, COFF file header and section
// table, every offset and size checked against the file before it is used. Only what boot
// entries need: the section table and the bytes of a named section (.cmdline, .osrel,
// .uname). Long section names ("/N" string-table references) are returned as written.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cfs::oci {

struct PeSection {
  std::string name;           // up to 8 bytes, NUL padding removed
  uint32_t virtual_size = 0;  // bytes the section occupies in memory
  uint32_t raw_offset = 0;    // PointerToRawData
  uint32_t raw_size = 0;      // SizeOfRawData (file bytes, aligned)
};

// More sections than the PE specification allows (96) is an error.
inline constexpr size_t kPeMaxSections = 96;

class PeFile {
 public:
  // Parses the headers of data (which must outlive the PeFile); throws cfs::Error naming what
  // and the broken rule.
  PeFile(std::span<const std::byte> data, std::string what);

  const std::vector<PeSection>& sections() const { return sections_; }
  // The file bytes of the first section of that name: min(virtual size, raw size) from its
  // raw offset (the rest of a section's memory image is zero fill); in a multi-profile UKI the
  // first is the base profile's. nullopt if there is no such section.
  std::optional<std::span<const std::byte>> section(std::string_view name) const;
  // A text section (.cmdline, .osrel, .uname) as a string, trailing NUL bytes removed; throws
  // if it holds other NULs.
  std::optional<std::string> text_section(std::string_view name) const;

 private:
  std::span<const std::byte> data_;
  std::string what_;
  std::vector<PeSection> sections_;
};

}  // namespace cfs::oci
