// The registry v2 client behind `docker://` sources (see cfs/oci/registry.h).
#include "cfs/oci/registry.h"

#include <cctype>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fd.h"
#include "credential_helper.h"
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
      // Credential helpers run only when a registry asks for credentials (creds_for).
      if (!creds_.contains(e.host)) creds_[e.host] = registry::lookup_credentials(files, r, false);
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
  size_t active_index() const { return active_; }
  const Endpoint& endpoint(size_t i) const { return endpoints_[i]; }
  // "docker://NAME: registry H, repository R: subject" for location i.
  std::string what(size_t location, const std::string& subject) const {
    return "docker://" + ref_.name() + ": " + where(endpoints_[location]) + ": " + subject;
  }

  // A GET of a blob (by digest, so any location holding it serves the same bytes, and the
  // pull verifies them): from location, and when that answers with an error (a mirror that
  // lacks the blob: 404) or fails after its retries, from the next locations in order (later
  // mirrors, then the registry itself). location is left at the one that answered. what(loc)
  // names the request at a location; the error after the last names every failure.
  template <typename What>
  std::unique_ptr<http::Transfer> open_blob(size_t& location, const std::string& digest,
                                            const What& what, uint64_t range_start,
                                            uint64_t range_end = 0,
                                            const std::string& ranges = {}) {
    std::string errors;
    for (;;) {
      try {
        return open(endpoints_[location], "/blobs/" + digest, {}, range_start, what(location),
                    range_end, ranges);
      } catch (const Error& e) {
        if (location + 1 >= endpoints_.size()) {
          if (errors.empty()) throw;
          throw Error(errors + "; " + e.what());
        }
        errors += (errors.empty() ? "" : "; ") + std::string(e.what());
        notice(std::string(e.what()) + "; trying the next location for this blob");
        ++location;
      }
    }
  }

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
                                       uint64_t range_end = 0, const std::string& ranges = {}) {
    bool authenticated_now = false;
    unsigned failures = 0;
    for (;;) {
      std::string scheme = scheme_for(e);
      http::Request req;
      req.url = scheme + "://" + e.host + "/v2/" + e.repository + path;
      req.pool = &pool_;
      req.headers = headers;
      if (std::string auth = auth_header(e.host); !auth.empty()) req.headers.push_back(auth);
      req.verify_tls = options_.tls_verify && !e.insecure;
      req.range_start = range_start;
      req.range_end = range_end;
      req.ranges = ranges;
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
  std::optional<registry::Credentials> creds_for(const std::string& host) {
    std::lock_guard lock(mutex_);
    auto it = creds_.find(host);
    if (it == creds_.end()) return std::nullopt;
    std::optional<registry::Credentials>& c = it->second;
    if (c && !c->helper.empty())
      c = registry::run_credential_helper(
          c->helper, host == "registry-1.docker.io" ? "docker.io" : host, c->source);
    return c;
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
    bool has_password = creds && !creds->username.empty();
    std::string basic =
        has_password
            ? "Authorization: Basic " + http::base64_encode(creds->username + ":" + creds->password)
            : "";
    if (c.scheme == "basic") {
      if (!has_password)
        throw Error(
            what + ": HTTP 401 (the registry wants a password; none for " + e.host +
            (creds ? " in " + creds->source + ", only an identity token)" : " in the auth files)"));
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
    std::string query;
    if (c.params.contains("service"))
      query += "service=" + http::url_escape(c.params["service"]) + "&";
    query += "scope=" + http::url_escape("repository:" + e.repository + ":pull");
    std::string url = realm + (realm.find('?') == std::string::npos ? "?" : "&") + query;
    std::string token_what = what + ": token from " + realm;
    // An identity token is exchanged with a form POST (OAuth2 grant_type=refresh_token);
    // a token server without POST (404, 405) gets the GET below instead.
    bool post = creds && !creds->identity_token.empty();
    unsigned failures = 0;
    for (;;) {
      http::Request req;
      req.url = post ? realm : url;
      req.pool = &pool_;
      if (post)
        req.form_body = "grant_type=refresh_token&client_id=cfs&refresh_token=" +
                        http::url_escape(creds->identity_token) + "&" + query;
      else if (!basic.empty())
        req.headers.push_back(basic);
      req.verify_tls = options_.tls_verify && !e.insecure;
      http::Transfer t(req);
      std::string body;
      if (!t.wait_headers() || !t.read_all(body, kMaxSmallBody)) {
        if (failures >= options_.retries)
          throw Error(token_what + ": " + t.error().message + give_up(failures));
        backoff(token_what + ": " + t.error().message, failures++);
        continue;
      }
      if (post && (t.status() == 404 || t.status() == 405)) {
        notice(token_what + ": HTTP " + std::to_string(t.status()) +
               " to the identity token's POST; asking with a GET");
        post = false;
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
  std::mutex mutex_;  // guards creds_, auth_ and http_hosts_ (blobs are read by several threads)
  std::map<std::string, std::string> auth_;  // host -> "Authorization: …"
  std::set<std::string> http_hosts_;         // insecure hosts that answered only over http
  http::ConnectionPool pool_;                // connections kept open between requests
};

// One blob, or the byte range [first, end) of it, streamed; a broken transfer is resumed with
// a ranged GET from the byte it reached (a registry that ignores the range sends the blob
// from its start again and the prefix is skipped).
class RegistryBlobReader : public BlobReader {
 public:
  RegistryBlobReader(RegistryClient& client, Descriptor blob, uint64_t first, uint64_t end)
      : client_(client),
        blob_(std::move(blob)),
        subject_("blob " + blob_.digest),
        location_(client.active_index()),
        first_(first),
        end_(end),
        pos_(first) {
    if (first_ > 0 || end_ < blob_.size)
      subject_ += " bytes " + std::to_string(first_) + "-" + std::to_string(end_);
    what_ = client_.what(location_, subject_);
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
    auto what = [&](size_t location) {
      std::string w = client_.what(location, subject_);
      return pos_ > first_ ? w + " from byte " + std::to_string(pos_) : w;
    };
    transfer_ = client_.open_blob(location_, blob_.digest, what, pos_,
                                  whole || end_ >= blob_.size ? 0 : end_);
    what_ = client_.what(location_, subject_);
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
  std::string subject_;  // "blob D[ bytes A-B]"
  size_t location_;      // the endpoint it is read from
  std::string what_;     // subject_ at location_, for messages
  std::unique_ptr<http::Transfer> transfer_;
  uint64_t first_;
  uint64_t end_;
  uint64_t pos_;
  unsigned failures_ = 0;
};

// Several byte ranges of one blob in one GET ("Range: bytes=a-b,c-d,..."), read as their
// concatenation. The answer may be multipart/byteranges (the parts must come in the order
// asked), a single 206 part when one range is left, or the whole blob (200: the bytes between
// the ranges are skipped). A broken transfer is resumed with the ranges not yet read.
class RegistryRangesReader : public BlobReader {
 public:
  RegistryRangesReader(RegistryClient& client, Descriptor blob,
                       std::vector<std::pair<uint64_t, uint64_t>> ranges)
      : client_(client),
        blob_(std::move(blob)),
        subject_("blob " + blob_.digest + " (" + std::to_string(ranges.size()) + " ranges)"),
        location_(client.active_index()),
        what_(client.what(location_, subject_)),
        ranges_(std::move(ranges)) {
    if (!ranges_.empty()) pos_ = ranges_[0].first;
  }

  size_t read(std::span<std::byte> buf) override {
    for (;;) {
      if (cur_ >= ranges_.size()) {
        transfer_.reset();
        return 0;
      }
      std::string failure;
      try {
        if (!transfer_) start();
        if (!in_part_) next_part();
        uint64_t end = ranges_[cur_].first + ranges_[cur_].second;
        size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), end - pos_));
        size_t n = take(buf.first(want));
        pos_ += n;
        failures_ = 0;
        if (pos_ == end) advance();
        return n;
      } catch (const Broken& b) {
        failure = b.message;
      }
      transfer_.reset();
      if (failures_ >= client_.options().retries)
        throw Error(what_ + ": " + failure + RegistryClient::give_up(failures_));
      client_.backoff(what_ + ": " + failure + "; resuming with a ranged GET", failures_++);
    }
  }

 private:
  struct Broken {
    std::string message;
  };

  void advance() {
    ++cur_;
    in_part_ = false;
    if (cur_ < ranges_.size()) pos_ = ranges_[cur_].first;
  }

  // Up to dst.size() body bytes (at least one); Broken when the transfer fails or ends.
  size_t take(std::span<std::byte> dst) {
    if (buf_pos_ < buf_.size()) {
      size_t n = std::min(dst.size(), buf_.size() - buf_pos_);
      std::memcpy(dst.data(), buf_.data() + buf_pos_, n);
      buf_pos_ += n;
      return n;
    }
    size_t n = 0;
    if (!transfer_->read_some(dst, n))
      throw Broken{transfer_->error().message + " at byte " + std::to_string(pos_)};
    if (n == 0) throw Broken{"the connection ended at byte " + std::to_string(pos_)};
    return n;
  }

  // One line of a multipart answer, without its CRLF.
  std::string line() {
    std::string out;
    for (;;) {
      std::byte c;
      take(std::span(&c, 1));
      if (c == std::byte{'\n'}) break;
      out.push_back(static_cast<char>(c));
      if (out.size() > 4096) throw Error(what_ + ": a multipart header line is too long");
    }
    if (!out.empty() && out.back() == '\r') out.pop_back();
    return out;
  }

  void skip(uint64_t n) {
    std::vector<std::byte> tmp(1 << 16);
    while (n > 0)
      n -= take(std::span(tmp).first(static_cast<size_t>(std::min<uint64_t>(n, tmp.size()))));
  }

  void start() {
    std::string spec;
    for (size_t i = cur_; i < ranges_.size(); ++i) {
      uint64_t first = i == cur_ ? pos_ : ranges_[i].first;
      uint64_t last = ranges_[i].first + ranges_[i].second - 1;
      spec += (spec.empty() ? "" : ",") + std::to_string(first) + "-" + std::to_string(last);
    }
    buf_.clear();
    buf_pos_ = 0;
    in_part_ = false;
    transfer_ = client_.open_blob(
        location_, blob_.digest, [&](size_t location) { return client_.what(location, subject_); },
        0, 0, spec);
    what_ = client_.what(location_, subject_);
    std::string type = transfer_->header("content-type");
    if (transfer_->status() == 200) {
      mode_ = Mode::whole;
      where_ = 0;
    } else if (type.starts_with("multipart/byteranges")) {
      mode_ = Mode::multipart;
      size_t b = type.find("boundary=");
      if (b == std::string::npos) throw Error(what_ + ": multipart answer without a boundary");
      boundary_ = "--" + type.substr(b + 9);
      if (boundary_.size() > 2 && boundary_[2] == '"') {
        boundary_.erase(2, 1);
        if (!boundary_.empty() && boundary_.back() == '"') boundary_.pop_back();
      }
    } else {
      mode_ = Mode::single;
      std::string range = transfer_->header("content-range");
      uint64_t last = ranges_[cur_].first + ranges_[cur_].second - 1;
      if (cur_ + 1 != ranges_.size() ||
          !range.starts_with("bytes " + std::to_string(pos_) + "-" + std::to_string(last) + "/"))
        throw Error(what_ + ": asked for " + std::to_string(ranges_.size() - cur_) +
                    " ranges, the registry answered Content-Range '" + escape_for_log(range) + "'");
      in_part_ = true;
    }
  }

  // Positions the transfer at the first byte of the current range.
  void next_part() {
    if (mode_ == Mode::whole) {
      if (where_ > pos_) throw Error(what_ + ": ranges out of order");
      skip(pos_ - where_);
      where_ = ranges_[cur_].first + ranges_[cur_].second;  // after this range is read
      in_part_ = true;
      return;
    }
    if (mode_ == Mode::single) throw Error(what_ + ": the registry sent one range of several");
    // multipart: [CRLF] --boundary CRLF headers CRLF CRLF data
    std::string l;
    for (int i = 0; i < 3 && (l = line()).empty(); ++i) {
    }
    if (l != boundary_)
      throw Error(what_ + ": expected the multipart boundary, got '" + escape_for_log(l) + "'");
    std::string range;
    for (int i = 0; i < 32; ++i) {
      l = line();
      if (l.empty()) break;
      std::string lower = l;
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      if (lower.starts_with("content-range:")) range = lower.substr(14);
    }
    while (!range.empty() && range.front() == ' ') range.erase(0, 1);
    uint64_t last = ranges_[cur_].first + ranges_[cur_].second - 1;
    if (!range.starts_with("bytes " + std::to_string(pos_) + "-" + std::to_string(last) + "/"))
      throw Error(what_ + ": expected the part for bytes " + std::to_string(pos_) + "-" +
                  std::to_string(last) + ", the registry sent '" + escape_for_log(range) + "'");
    in_part_ = true;
  }

  enum class Mode { whole, multipart, single };
  RegistryClient& client_;
  Descriptor blob_;
  std::string subject_;  // "blob D (N ranges)"
  size_t location_;      // the endpoint it is read from
  std::string what_;     // subject_ at location_, for messages
  std::vector<std::pair<uint64_t, uint64_t>> ranges_;
  size_t cur_ = 0;
  uint64_t pos_ = 0;    // next blob offset to hand out
  uint64_t where_ = 0;  // whole mode: blob offset of the transfer
  bool in_part_ = false;
  Mode mode_ = Mode::whole;
  std::string boundary_;
  std::vector<std::byte> buf_;
  size_t buf_pos_ = 0;
  std::unique_ptr<http::Transfer> transfer_;
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

  std::unique_ptr<BlobReader> open_blob_ranges(
      const Descriptor& blob, std::vector<std::pair<uint64_t, uint64_t>> ranges) override {
    validate_oci_digest(blob.digest, client_.spec());
    uint64_t prev = 0;
    for (const auto& [offset, length] : ranges)
      if (offset < prev || length == 0 || offset > blob.size || length > blob.size - offset)
        throw Error(client_.spec() + ": blob " + blob.digest +
                    ": ranges out of order or beyond its " + std::to_string(blob.size) + " bytes");
      else
        prev = offset + length;
    return std::make_unique<RegistryRangesReader>(client_, blob, std::move(ranges));
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
