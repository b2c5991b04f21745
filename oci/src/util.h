// Helpers shared by the OCI sources and the pull: streaming SHA-256 and OCI digest strings.
#pragma once

#include <openssl/evp.h>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "cfs/digest.h"
#include "cfs/error.h"
#include "json_util.h"

struct archive;

namespace cfs::oci {

// Registers libarchive's gzip, zstd, xz and bzip2 decompressors, refusing to go on if any of
// them would run as an external program (libarchive's fallback when built without the
// library): untrusted input is only ever decompressed in-process.
void support_in_process_filters(::archive* a, const std::string& what);

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1)
      throw Error("OpenSSL: cannot initialise SHA-256");
  }
  void update(std::span<const std::byte> data) {
    if (EVP_DigestUpdate(ctx_.get(), data.data(), data.size()) != 1)
      throw Error("OpenSSL: SHA-256 update failed");
  }
  void update(std::string_view s) {
    update({reinterpret_cast<const std::byte*>(s.data()), s.size()});
  }
  // "sha256:<hex>"
  std::string finish() {
    unsigned char md[32];
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), md, &len) != 1 || len != 32)
      throw Error("OpenSSL: SHA-256 final failed");
    return "sha256:" + to_hex({md, 32});
  }

 private:
  struct Free {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
  };
  std::unique_ptr<EVP_MD_CTX, Free> ctx_;
};

inline std::string sha256_digest(std::string_view data) {
  Sha256 h;
  h.update(data);
  return h.finish();
}

// Throws unless digest is "sha256:" + 64 lowercase hex digits (the only algorithm OCI
// registries use in practice; anything else could also smuggle path components).
inline void validate_oci_digest(std::string_view digest, const std::string& what) {
  bool ok = digest.size() == 71 && digest.starts_with("sha256:");
  for (size_t i = 7; ok && i < digest.size(); ++i) {
    char c = digest[i];
    ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  }
  if (!ok) throw Error(what + ": '" + std::string(digest) + "' is not a sha256 digest");
}

// The string member key of j, or fallback when j is not an object or has no such member.
// json::value() would throw nlohmann's type_error for a member of another type, which
// escapes every cfs::Error handler; here it is a cfs::Error naming the document.
inline std::string json_string(const nlohmann::json& j, const std::string& key,
                               std::string fallback, const std::string& what) {
  if (!j.is_object()) return fallback;
  auto it = j.find(key);
  if (it == j.end()) return fallback;
  if (!it->is_string()) throw Error(what + ": '" + key + "' is not a string");
  return it->get<std::string>();
}

}  // namespace cfs::oci
