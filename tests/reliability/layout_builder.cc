#include "layout_builder.h"

#include <filesystem>

#include "testdata.h"

namespace cfs::test {

namespace {

std::string octal(uint64_t value, size_t digits) {
  std::string s(digits, '0');
  for (size_t i = digits; i-- > 0; value >>= 3) s[i] = static_cast<char>('0' + (value & 7));
  return s;
}

void put(std::string& block, size_t offset, std::string_view value) {
  block.replace(offset, value.size(), value);
}

}  // namespace

std::string tar_member(const TarMember& m) {
  std::string h(512, '\0');
  put(h, 0, m.name.substr(0, 100));
  put(h, 100, octal(m.mode, 7));
  put(h, 108, m.uid_field ? *m.uid_field : octal(0, 7));
  put(h, 116, octal(0, 7));
  put(h, 124, m.size_field ? *m.size_field : octal(m.content.size(), 11));
  put(h, 136, m.mtime_field ? *m.mtime_field : octal(1700000000, 11));
  h[156] = m.type;
  put(h, 157, m.link.substr(0, 100));
  put(h, 257, m.magic.substr(0, 8));
  if (m.magic != std::string(8, '\0')) {
    put(h, 329, octal(m.dev_major, 7));
    put(h, 337, octal(m.dev_minor, 7));
  }
  put(h, 345, m.tail.substr(0, 167));
  put(h, 148, "        ");
  unsigned sum = 0;
  for (char c : h) sum += static_cast<unsigned char>(c);
  if (m.bad_checksum) sum += 1;
  put(h, 148, octal(sum, 6));
  h[154] = '\0';
  std::string out = h + m.content;
  out.append((512 - m.content.size() % 512) % 512, '\0');
  return out;
}

std::string pax_member(const std::vector<std::pair<std::string, std::string>>& records) {
  std::string body;
  for (const auto& [key, value] : records) {
    // "<len> key=value\n", where len counts itself.
    std::string rest = " " + key + "=" + value + "\n";
    size_t len = rest.size() + 1;
    while (std::to_string(len).size() + rest.size() != len) ++len;
    body += std::to_string(len) + rest;
  }
  return tar_member({.name = "PaxHeaders/x", .type = 'x', .content = body});
}

std::string tar_archive(const std::vector<std::string>& members) {
  std::string out;
  for (const auto& m : members) out += m;
  return out + std::string(1024, '\0');
}

std::string sha256_digest(std::string_view data) {
  return "sha256:" + sha256_hex(data);
}

std::string write_layout(const std::string& dir, const std::string& layer_tar,
                         const LayoutOptions& o) {
  namespace fs = std::filesystem;
  fs::create_directories(dir + "/blobs/sha256");
  auto blob = [&](const std::string& data) {
    std::string digest = sha256_digest(data);
    write_file(dir + "/blobs/sha256/" + digest.substr(7), data);
    return digest;
  };
  std::string layer = blob(layer_tar);
  std::string config = "{" + o.config_platform.value_or(R"("architecture":"amd64","os":"linux")") +
                       R"(,"rootfs":{"type":"layers","diff_ids":[")" + o.diff_id.value_or(layer) +
                       R"("]}})";
  std::string config_digest = blob(config);
  std::string manifest =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
      R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
      o.config_digest.value_or(config_digest) + R"(","size":)" +
      std::to_string(o.config_size.value_or(config.size())) +
      R"(},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":")" +
      o.layer_digest.value_or(layer) + R"(","size":)" +
      std::to_string(o.layer_size.value_or(layer_tar.size())) + "}]}";
  if (o.manifest) manifest = *o.manifest;
  std::string manifest_digest = blob(manifest);
  write_file(dir + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  write_file(dir + "/index.json", R"({"schemaVersion":2,"manifests":[{"mediaType":)"
                                  R"("application/vnd.oci.image.manifest.v1+json","digest":")" +
                                      manifest_digest + R"(","size":)" +
                                      std::to_string(manifest.size()) + "}]}");
  return manifest_digest;
}

}  // namespace cfs::test
