// The registry v2 client behind `docker://` sources (see cfs/oci/registry.h).
#include "cfs/oci/registry.h"

#include <chrono>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fd.h"
#include "http.h"
#include "registry_config.h"
#include "util.h"

namespace cfs::oci {

namespace {

using nlohmann::json;
using registry::Endpoint;
using registry::Reference;

constexpr size_t kMaxManifest = 16u << 20;
constexpr size_t kMaxSmallBody = 1u << 20;
constexpr std::string_view kOciIndex = "application/vnd.oci.image.index.v1+json";
constexpr std::string_view kDockerList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
constexpr const char* kManifestAccept =
    "Accept: application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json";

// The registry's error document ({"errors": [{"code", "message"}]}) as " (CODE: message)".
std::string registry_error_detail(const std::string& body) {
  try {
    json j = json::parse(body);
    if (j.is_object() && j.contains("errors") && j["errors"].is_array() && !j["errors"].empty()) {
      const json& e = j["errors"][0];
      std::string code = e.is_object() && e.contains("code") && e["code"].is_string()
                             ? e["code"].get<std::string>()
                             : "";
      std::string msg = e.is_object() && e.contains("message") && e["message"].is_string()
                            ? e["message"].get<std::string>()
                            : "";
      return " (" + escape_for_log(code) + (msg.empty() ? "" : ": " + escape_for_log(msg)) + ")";
    }
  } catch (const json::exception&) {
  }
  return "";
}

bool retryable_status(long status) {
  return status == 429 || status == 408 || status >= 500;
}

class RegistryClient {
 public:
  RegistryClient(std::string spec, Reference ref, std::vector<Endpoint> endpoints,
                 RegistryOptions options)
      : spec_(std::move(spec)),
        ref_(std::move(ref)),
        endpoints_(std::move(endpoints)),
        options_(std::move(options)) {
    // Each location (mirror or rewritten registry) is authenticated with the auth files'
    // entry for what is pulled from it, as containers/image does.
    std::vector<std::string> files =
        options_.auth_files ? *options_.auth_files : registry::default_auth_files();
    for (const Endpoint& e : endpoints_) {
      Reference r = ref_;
      r.registry = e.host == "registry-1.docker.io" ? "docker.io" : e.host;
      r.repository = e.repository;
      if (!creds_.contains(e.host)) creds_[e.host] = registry::lookup_credentials(files, r);
    }
  }

  const std::string& spec() const { return spec_; }
  const Reference& ref() const { return ref_; }
  const RegistryOptions& options() const { return options_; }

  // "registry H, repository R" for messages.
  static std::string where(const Endpoint& e) {
    return "registry " + e.host + ", repository " + e.repository;
  }
  std::string where() const { return where(active()); }
  const Endpoint& active() const { return endpoints_[active_]; }

  // The manifest bytes for the reference, trying the mirrors first.
  std::string fetch_manifest(std::string& media_type) {
    std::string errors;
    for (size_t i = 0; i < endpoints_.size(); ++i) {
      try {
        std::string data = fetch_manifest_from(endpoints_[i], ref_.manifest_ref(), media_type);
        active_ = i;
        return data;
      } catch (const Error& e) {
        if (i + 1 == endpoints_.size()) {
          if (errors.empty()) throw;
          throw Error(errors + "; " + e.what());
        }
        errors += (errors.empty() ? "" : "; ") + std::string(e.what());
        notice(std::string(e.what()) + "; trying the next location");
      }
    }
    throw Error(spec_ + ": no registry to pull from");
  }

  std::string fetch_manifest_from(const Endpoint& e, const std::string& reference,
                                  std::string& media_type) {
    std::string what = "docker://" + ref_.name() + ": " + where(e) + ": manifest " + reference;
    std::unique_ptr<http::Transfer> t;
    std::string body;
    for (unsigned failures = 0;; ++failures) {
      t = open(e, "/manifests/" + reference, {kManifestAccept}, 0, what);
      if (t->read_all(body, kMaxManifest)) break;
      if (failures >= options_.retries || t->error().too_large)
        throw Error(what + ": " + t->error().message + give_up(failures));
      backoff(what + ": " + t->error().message, failures);
    }
    media_type = t->header("content-type");
    if (auto semi = media_type.find(';'); semi != std::string::npos) media_type.resize(semi);
    std::string actual = sha256_digest(body);
    if (reference.starts_with("sha256:")) {
      if (actual != reference)
        throw Error(what + ": the registry sent a manifest with digest " + actual +
                    " (corrupt or tampered)");
    } else if (std::string claimed = t->header("docker-content-digest");
               claimed.starts_with("sha256:") && claimed != actual) {
      throw Error(what + ": the manifest has digest " + actual +
                  ", the registry's Docker-Content-Digest says " + escape_for_log(claimed));
    }
    return body;
  }

  // A GET of /v2/<repository><path> that answered 200 or 206, after authentication and the
  // retries for transport failures and 429/5xx answers. Any other answer is an error naming
  // the registry, the repository and the HTTP status.
  std::unique_ptr<http::Transfer> open(const Endpoint& e, const std::string& path,
                                       const std::vector<std::string>& headers,
                                       uint64_t range_start, const std::string& what,
                                       uint64_t range_end = 0) {
    bool authenticated_now = false;
    unsigned failures = 0;
    for (;;) {
      std::string scheme = scheme_for(e);
      http::Request req;
      req.url = scheme + "://" + e.host + "/v2/" + e.repository + path;
      req.headers = headers;
      if (std::string auth = auth_header(e.host); !auth.empty()) req.headers.push_back(auth);
      req.verify_tls = options_.tls_verify && !e.insecure;
      req.range_start = range_start;
      req.range_end = range_end;
      req.max_recv_speed = options_.max_rate;
      auto t = std::make_unique<http::Transfer>(req);
      if (!t->wait_headers()) {
        // An insecure registry that does not speak TLS: plain http from now on.
        if (scheme == "https" && (e.insecure || !options_.tls_verify) && fall_back_to_http(e))
          continue;
        if (failures >= options_.retries)
          throw Error(what + ": " + t->error().message + give_up(failures));
        backoff(what + ": " + t->error().message, failures++);
        continue;
      }
      long status = t->status();
      if (status == 200 || status == 206) return t;
      std::string body;
      (void)t->read_all(body, 64 << 10);
      if (status == 401 && !authenticated_now) {
        std::string challenge = t->header("www-authenticate");
        if (!challenge.empty()) {
          authenticate(e, challenge, what);
          authenticated_now = true;
          continue;
        }
      }
      std::string msg = what + ": HTTP " + std::to_string(status) + registry_error_detail(body);
      if (status == 401 || status == 403) {
        auto c = creds_for(e.host);
        msg += c ? " (credentials of " + c->source + " refused)"
                 : " (no credentials for " + e.host + " in the auth files)";
      }
      if (retryable_status(status) && failures < options_.retries) {
        backoff(msg, failures++);
        continue;
      }
      throw Error(msg + (retryable_status(status) ? give_up(failures) : ""));
    }
  }

  void notice(const std::string& message) const {
    if (options_.notice) options_.notice(message);
  }

  void backoff(const std::string& why, unsigned failure) const {
    unsigned delay = options_.retry_delay_ms << std::min(failure, 10u);
    notice(why + "; retry " + std::to_string(failure + 1) + "/" + std::to_string(options_.retries) +
           " in " + std::to_string(delay) + " ms");
    std::this_thread::sleep_for(std::chrono::milliseconds(delay));
  }

  static std::string give_up(unsigned failures) {
    return failures ? " (gave up after " + std::to_string(failures + 1) + " attempts)" : "";
  }

 private:
  std::optional<registry::Credentials> creds_for(const std::string& host) const {
    auto it = creds_.find(host);
    return it != creds_.end() ? it->second : std::nullopt;
  }

  std::string scheme_for(const Endpoint& e) {
    std::lock_guard lock(mutex_);
    return http_hosts_.contains(e.host) ? "http" : "https";
  }
  bool fall_back_to_http(const Endpoint& e) {
    std::lock_guard lock(mutex_);
    return http_hosts_.insert(e.host).second;
  }
  std::string auth_header(const std::string& host) {
    std::lock_guard lock(mutex_);
    auto it = auth_.find(host);
    return it == auth_.end() ? "" : it->second;
  }

  // Answers a 401's challenge: Basic with the credentials, or Bearer with a token from the
  // realm (requested with the credentials when there are any).
  void authenticate(const Endpoint& e, const std::string& header, const std::string& what) {
    registry::Challenge c = registry::parse_challenge(header, what);
    auto creds = creds_for(e.host);
    std::string basic = creds ? "Authorization: Basic " +
                                    http::base64_encode(creds->username + ":" + creds->password)
                              : "";
    if (c.scheme == "basic") {
      if (!creds)
        throw Error(what + ": HTTP 401 (the registry wants a password; none for " + e.host +
                    " in the auth files)");
      std::lock_guard lock(mutex_);
      auth_[e.host] = basic;
      return;
    }
    if (c.scheme != "bearer")
      throw Error(what + ": HTTP 401 with an unsupported auth scheme '" + escape_for_log(c.scheme) +
                  "'");
    std::string realm = c.params["realm"];
    if (!realm.starts_with("https://") && !realm.starts_with("http://"))
      throw Error(what + ": bearer challenge without an http(s) realm");
    std::string url = realm + (realm.find('?') == std::string::npos ? "?" : "&");
    if (c.params.contains("service"))
      url += "service=" + http::url_escape(c.params["service"]) + "&";
    url += "scope=" + http::url_escape("repository:" + e.repository + ":pull");
    std::string token_what = what + ": token from " + realm;
    unsigned failures = 0;
    for (;;) {
      http::Request req;
      req.url = url;
      if (!basic.empty()) req.headers.push_back(basic);
      req.verify_tls = options_.tls_verify && !e.insecure;
      http::Transfer t(req);
      std::string body;
      if (!t.wait_headers() || !t.read_all(body, kMaxSmallBody)) {
        if (failures >= options_.retries)
          throw Error(token_what + ": " + t.error().message + give_up(failures));
        backoff(token_what + ": " + t.error().message, failures++);
        continue;
      }
      if (t.status() != 200) {
        std::string msg =
            token_what + ": HTTP " + std::to_string(t.status()) + registry_error_detail(body);
        if (t.status() == 401 || t.status() == 403)
          msg += creds ? " (credentials of " + creds->source + " refused)"
                       : " (no credentials for " + e.host + " in the auth files)";
        if (retryable_status(t.status()) && failures < options_.retries) {
          backoff(msg, failures++);
          continue;
        }
        throw Error(msg);
      }
      json j = store::parse_json_bounded(body, token_what);
      std::string token = json_string(j, "token", "", token_what);
      if (token.empty()) token = json_string(j, "access_token", "", token_what);
      if (token.empty()) throw Error(token_what + ": the answer holds no token");
      std::lock_guard lock(mutex_);
      auth_[e.host] = "Authorization: Bearer " + token;
      return;
    }
  }

  std::string spec_;
  Reference ref_;
  std::vector<Endpoint> endpoints_;
  RegistryOptions options_;
  std::map<std::string, std::optional<registry::Credentials>> creds_;  // by endpoint host
  size_t active_ = 0;
  std::mutex mutex_;  // guards auth_ and http_hosts_ (blobs are read by several threads)
  std::map<std::string, std::string> auth_;  // host -> "Authorization: …"
  std::set<std::string> http_hosts_;         // insecure hosts that answered only over http
};

// One blob, or the byte range [first, end) of it, streamed; a broken transfer is resumed with
// a ranged GET from the byte it reached (a registry that ignores the range sends the blob
// from its start again and the prefix is skipped).
class RegistryBlobReader : public BlobReader {
 public:
  RegistryBlobReader(RegistryClient& client, Descriptor blob, uint64_t first, uint64_t end)
      : client_(client),
        blob_(std::move(blob)),
        what_("docker://" + client.ref().name() + ": " + client.where() + ": blob " + blob_.digest),
        first_(first),
        end_(end),
        pos_(first) {
    if (first_ > 0 || end_ < blob_.size)
      what_ += " bytes " + std::to_string(first_) + "-" + std::to_string(end_);
  }

  size_t read(std::span<std::byte> buf) override {
    for (;;) {
      if (pos_ >= end_) {
        transfer_.reset();
        return 0;
      }
      if (!transfer_) start();
      size_t n = 0;
      std::string failure;
      auto want = buf.first(static_cast<size_t>(std::min<uint64_t>(buf.size(), end_ - pos_)));
      if (transfer_->read_some(want, n)) {
        if (n == 0) {
          failure = "the connection ended at byte " + std::to_string(pos_) + " of " +
                    std::to_string(end_);
        } else {
          pos_ += n;
          failures_ = 0;  // progress: the retries start afresh
          return n;
        }
      } else {
        failure = transfer_->error().message + " at byte " + std::to_string(pos_) + " of " +
                  std::to_string(end_);
      }
      transfer_.reset();
      if (failures_ >= client_.options().retries)
        throw Error(what_ + ": " + failure + RegistryClient::give_up(failures_));
      client_.backoff(what_ + ": " + failure + "; resuming with a ranged GET", failures_++);
    }
  }

 private:
  void start() {
    bool whole = pos_ == 0 && end_ >= blob_.size;
    transfer_ = client_.open(client_.active(), "/blobs/" + blob_.digest, {}, pos_,
                             pos_ > first_ ? what_ + " from byte " + std::to_string(pos_) : what_,
                             whole || end_ >= blob_.size ? 0 : end_);
    if (whole) return;
    if (transfer_->status() == 206) {
      std::string range = transfer_->header("content-range");
      std::string expect = "bytes " + std::to_string(pos_) + "-";
      if (!range.starts_with(expect))
        throw Error(what_ + ": asked for the bytes from " + std::to_string(pos_) +
                    ", the registry answered Content-Range '" + escape_for_log(range) + "'");
      if (pos_ > first_) client_.notice(what_ + ": resumed at byte " + std::to_string(pos_));
      return;
    }
    // 200: the whole blob again; skip up to where this reader is.
    client_.notice(what_ + ": the registry ignored the range; skipping " + std::to_string(pos_) +
                   " bytes");
    std::vector<std::byte> skip(1 << 16);
    uint64_t left = pos_;
    while (left > 0) {
      size_t n = 0;
      auto piece =
          std::span(skip).first(static_cast<size_t>(std::min<uint64_t>(left, skip.size())));
      if (!transfer_->read_some(piece, n) || n == 0) {
        transfer_.reset();
        throw Error(what_ + ": the connection broke while skipping to byte " +
                    std::to_string(pos_));
      }
      left -= n;
    }
  }

  RegistryClient& client_;
  Descriptor blob_;
  std::string what_;
  std::unique_ptr<http::Transfer> transfer_;
  uint64_t first_;
  uint64_t end_;
  uint64_t pos_;
  unsigned failures_ = 0;
};

class RegistrySource : public ImageSource {
 public:
  RegistrySource(std::string spec, Reference ref, std::vector<Endpoint> endpoints,
                 RegistryOptions options)
      : client_(std::move(spec), std::move(ref), std::move(endpoints), std::move(options)) {}

  std::string manifest() override {
    std::string media_type;
    std::string data = client_.fetch_manifest(media_type);
    for (int depth = 0;; ++depth) {
      std::string what = client_.spec() + ": " + client_.where() + ": manifest";
      json m = store::parse_json_bounded(data, what);
      std::string mt = json_string(m, "mediaType", media_type, what);
      if (mt != kOciIndex && mt != kDockerList) return data;
      if (depth > 2) throw Error(what + ": image indexes nested too deeply");
      std::string digest = choose_platform(m, what);
      data = client_.fetch_manifest_from(client_.active(), digest, media_type);
    }
  }

  std::unique_ptr<BlobReader> open_blob(const Descriptor& blob) override {
    validate_oci_digest(blob.digest, client_.spec());
    return std::make_unique<RegistryBlobReader>(client_, blob, 0, blob.size);
  }

  std::unique_ptr<BlobReader> open_blob_range(const Descriptor& blob, uint64_t offset,
                                              uint64_t length) override {
    validate_oci_digest(blob.digest, client_.spec());
    if (offset > blob.size || length > blob.size - offset)
      throw Error(client_.spec() + ": blob " + blob.digest + ": range " + std::to_string(offset) +
                  "+" + std::to_string(length) + " is beyond its " + std::to_string(blob.size) +
                  " bytes");
    return std::make_unique<RegistryBlobReader>(client_, blob, offset, offset + length);
  }

  std::string name() const override { return client_.spec(); }

 private:
  static std::string choose_platform(const json& index, const std::string& what) {
    if (!index.contains("manifests") || !index["manifests"].is_array())
      throw Error(what + ": image index without a 'manifests' array");
    std::string arch = host_oci_architecture();
    for (const json& m : index["manifests"]) {
      if (!m.is_object() || !m.contains("platform") || !m["platform"].is_object()) continue;
      const json& p = m["platform"];
      if (json_string(p, "architecture", "", what) != arch ||
          json_string(p, "os", "", what) != "linux")
        continue;
      std::string digest = json_string(m, "digest", "", what);
      validate_oci_digest(digest, what);
      return digest;
    }
    throw Error(what + ": the image index has no image for linux/" + arch);
  }

  RegistryClient client_;
};

}  // namespace

std::unique_ptr<ImageSource> open_registry_source(std::string_view reference,
                                                  const RegistryOptions& options) {
  Reference ref = registry::parse_reference(reference);
  registry::RegistriesConf conf;
  if (options.registries_conf)
    conf.add(read_file(*options.registries_conf), *options.registries_conf);
  else
    conf = registry::RegistriesConf::load_default();
  std::vector<Endpoint> endpoints = conf.endpoints(ref);
  return std::make_unique<RegistrySource>("docker://" + std::string(reference), std::move(ref),
                                          std::move(endpoints), options);
}

}  // namespace cfs::oci
