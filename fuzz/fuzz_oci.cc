// libFuzzer target: pulling an OCI image layout whose JSON is hostile. The first byte picks
// which document the rest of the input is; the harness writes the others, valid, so the
// fuzzer works on one document at a time and still reaches the later stages:
//   0: index.json                        (manifest, config, layer blobs valid)
//   1: the manifest                      (index.json names it with the right digest/size)
//   2: the config                        (manifest names it with the right digest/size)
// In documents the fuzzer writes, $L / $S / $C / $Z / $D are replaced by the layer's digest,
// its size, the config's digest, its size and the layer's diff_id, so mutations keep
// reaching past digest verification.
//  * pull may only throw cfs::Error;
//  * a refused pull leaves nothing named: no tag, no stream, no image;
//  * an accepted pull passes the OCI fsck, its image tree is readable, and its stored
//    manifest and config read back within the JSON limits (depth 128, 16 MiB): seeds
//    json-depth-* nest past, at and (inside strings) around the depth limit.
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "../oci/src/util.h"
#include "cfs/error.h"
#include "cfs/oci/oci.h"
#include "cfs/store/repository.h"

namespace {

namespace fs = std::filesystem;
using namespace cfs;
using namespace cfs::store;

void write_file(const fs::path& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  if (!out) std::abort();
}

std::string octal(uint64_t value, size_t width) {
  std::string s(width - 1, '0');
  for (size_t i = width - 1; i-- > 0; value >>= 3) s[i] = static_cast<char>('0' + (value & 7));
  return s;
}

// One ustar header block.
std::string tar_header(const std::string& name, char type, uint64_t size,
                       const std::string& link = "") {
  std::string h(512, '\0');
  h.replace(0, name.size(), name);
  h.replace(100, 7, octal(type == '5' ? 0755 : 0644, 8));
  h.replace(108, 7, octal(0, 8));
  h.replace(116, 7, octal(0, 8));
  h.replace(124, 11, octal(size, 12));
  h.replace(136, 11, octal(1700000000, 12));
  h[156] = type;
  h.replace(157, link.size(), link);
  h.replace(257, 6, std::string("ustar\0", 6));
  h.replace(263, 2, "00");
  h.replace(148, 8, "        ");
  unsigned sum = 0;
  for (char c : h) sum += static_cast<unsigned char>(c);
  h.replace(148, 7, octal(sum, 7) + '\0');
  return h;
}

// A small layer: /usr, a large (external) file, a small file and a symlink.
std::string layer_tar() {
  std::string content(300, 'x');
  std::string tar = tar_header("./", '5', 0) + tar_header("./usr/", '5', 0) +
                    tar_header("./usr/big", '0', content.size()) + content +
                    std::string(512 - content.size() % 512, '\0') +
                    tar_header("./usr/small", '0', 5) + "small" + std::string(507, '\0') +
                    tar_header("./usr/link", '2', 0, "big");
  return tar + std::string(1024, '\0');
}

void replace_all(std::string& text, std::string_view token, const std::string& value) {
  for (size_t at = 0; (at = text.find(token, at)) != std::string::npos; at += value.size())
    text.replace(at, token.size(), value);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  int role = data[0] % 3;
  std::string doc(reinterpret_cast<const char*>(data + 1), size - 1);

  const std::string layer = layer_tar();
  const std::string layer_digest = oci::sha256_digest(layer);
  std::string config =
      R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[")" +
      layer_digest + R"("]}})";
  auto fill = [&](std::string text) {
    replace_all(text, "$L", layer_digest);
    replace_all(text, "$S", std::to_string(layer.size()));
    replace_all(text, "$D", layer_digest);
    replace_all(text, "$C", oci::sha256_digest(config));
    replace_all(text, "$Z", std::to_string(config.size()));
    return text;
  };
  if (role == 2) config = fill(doc);
  std::string manifest = role == 1 ? fill(doc)
                                   : fill(R"({"schemaVersion":2,"mediaType":)"
                                          R"("application/vnd.oci.image.manifest.v1+json",)"
                                          R"("config":{"mediaType":)"
                                          R"("application/vnd.oci.image.config.v1+json",)"
                                          R"("digest":"$C","size":$Z},"layers":[{"mediaType":)"
                                          R"("application/vnd.oci.image.layer.v1.tar",)"
                                          R"("digest":"$L","size":$S}]})");
  std::string manifest_digest = oci::sha256_digest(manifest);
  std::string index = role == 0 ? doc
                                : R"({"schemaVersion":2,"manifests":[{"mediaType":)"
                                  R"("application/vnd.oci.image.manifest.v1+json","digest":")" +
                                      manifest_digest + R"(","size":)" +
                                      std::to_string(manifest.size()) + "}]}";
  if (role == 0) {
    replace_all(index, "$M", manifest_digest);
    replace_all(index, "$N", std::to_string(manifest.size()));
  }

  fs::path dir = "/dev/shm/cfs-fuzz-oci-" + std::to_string(::getpid());
  fs::remove_all(dir);
  fs::create_directories(dir / "layout/blobs/sha256");
  write_file(dir / "layout/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  write_file(dir / "layout/index.json", index);
  for (const std::string* blob : {&layer, static_cast<const std::string*>(&config),
                                  static_cast<const std::string*>(&manifest)})
    write_file(dir / "layout/blobs/sha256" / oci::sha256_digest(*blob).substr(7), *blob);

  Repository repo =
      Repository::init(dir / "repo", {.algorithm = HashAlgorithm::sha256, .insecure = true});
  bool pulled = false;
  try {
    oci::pull(repo, "oci:" + (dir / "layout").string(), "fuzz", {.threads = 1});
    pulled = true;
  } catch (const Error& e) {
    if (std::getenv("CFS_FUZZ_DEBUG")) std::fprintf(stderr, "refused: %s\n", e.what());
  }
  if (pulled) {
    if (!oci::fsck_images(repo, std::nullopt).ok()) std::abort();
    (void)oci::image_tree(repo, "fuzz", false);
    (void)oci::manifest_json(repo, "fuzz");
    (void)oci::config_json(repo, "fuzz");
  } else {
    if (!oci::list_images(repo).empty()) std::abort();
    for (const char* named : {"streams", "images"})
      for (const auto& e : fs::recursive_directory_iterator(dir / "repo" / named))
        if (!e.is_directory()) std::abort();  // a refused pull named something
  }
  fs::remove_all(dir);
  return 0;
}
