// Hand-made tar layers and OCI image layouts for the reliability tests: every header field
// is under the test's control, so hostile archives can say exactly what a test needs.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cfs::test {

struct TarMember {
  std::string name;
  char type = '0';  // ustar typeflag: '0' file, '1' hardlink, '2' symlink, '3' chr, '4' blk,
                    // '5' dir, '6' fifo, 'x' PAX header, 'L' GNU long name, 'K' GNU long link
  std::string content;
  std::string link;
  uint32_t mode = 0644;
  uint32_t dev_major = 0, dev_minor = 0;
  std::optional<std::string> size_field;   // raw 12-byte size field (default: octal content size)
  std::optional<std::string> uid_field;    // raw 8-byte uid field (default: octal 0)
  std::optional<std::string> mtime_field;  // raw 12-byte mtime field (default: 1700000000)
  // Bytes 257..264: magic and version. ustar by default; GNU writes "ustar  \0", v7 nothing.
  std::string magic = std::string(
      "ustar\0"
      "00",
      8);
  std::string tail;  // raw bytes from offset 345 (ustar prefix, GNU atime/ctime/sparse, star)
  bool bad_checksum = false;
};

// One 512-byte header block followed by the content padded to 512 bytes.
std::string tar_member(const TarMember& m);
// The magic of GNU and oldgnu headers, and of v7 (none).
inline const std::string kGnuMagic = std::string("ustar  \0", 8);
inline const std::string kV7Magic = std::string(8, '\0');
// A PAX extended header ('x') member carrying the given records.
std::string pax_member(const std::vector<std::pair<std::string, std::string>>& records);
// The members followed by the two zero blocks that end an archive.
std::string tar_archive(const std::vector<std::string>& members);

std::string sha256_digest(std::string_view data);  // "sha256:<hex>"

struct LayoutOptions {
  // Lie about the layer in the manifest.
  std::optional<uint64_t> layer_size;
  std::optional<std::string> layer_digest;
  std::optional<uint64_t> config_size;
  std::optional<std::string> config_digest;
  std::optional<std::string> diff_id;
  std::optional<std::string> manifest;  // the manifest bytes themselves
  // The config's platform members, as JSON text ("architecture":...,"os":...).
  std::optional<std::string> config_platform;
};

// Writes an OCI image layout in dir with one uncompressed tar layer; returns the manifest
// digest.
std::string write_layout(const std::string& dir, const std::string& layer_tar,
                         const LayoutOptions& options = {});

}  // namespace cfs::test
