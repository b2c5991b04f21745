#include "http.h"

#include "tar_fields.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <mutex>

#include "cfs/error.h"

namespace cfs::oci::http {

namespace {

// The transfer stops taking data (CURL_WRITEFUNC_PAUSE) while this much is unread.
constexpr size_t kMaxBuffered = 8u << 20;

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
      throw Error("libcurl: global initialisation failed");
  });
}

struct EasyFree {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct MultiFree {
  void operator()(CURLM* m) const { curl_multi_cleanup(m); }
};
struct SlistFree {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

}  // namespace

// Idle multi handles a pool keeps beyond this many are closed with their connections.
constexpr size_t kMaxIdleSlots = 8;

struct ConnectionPool::Slot {
  std::unique_ptr<CURLM, MultiFree> multi;
  Slot() : multi(curl_multi_init()) {
    if (!multi) throw Error("libcurl: out of memory");
    // A few hosts per pool: the registry, its token realm, a blob storage redirect.
    curl_multi_setopt(multi.get(), CURLMOPT_MAXCONNECTS, 4L);
  }
};

ConnectionPool::ConnectionPool() = default;
ConnectionPool::~ConnectionPool() = default;

std::unique_ptr<ConnectionPool::Slot> ConnectionPool::take() {
  {
    std::lock_guard lock(mutex_);
    if (!idle_.empty()) {
      std::unique_ptr<Slot> slot = std::move(idle_.back());
      idle_.pop_back();
      return slot;
    }
  }
  return std::make_unique<Slot>();
}

void ConnectionPool::give_back(std::unique_ptr<Slot> slot) {
  std::lock_guard lock(mutex_);
  if (idle_.size() < kMaxIdleSlots) idle_.push_back(std::move(slot));
}

struct Transfer::Handles {
  std::unique_ptr<ConnectionPool::Slot> slot;
  std::unique_ptr<CURL, EasyFree> easy;
  std::unique_ptr<curl_slist, SlistFree> headers;
  std::string range;
  std::string body;
  char errbuf[CURL_ERROR_SIZE] = {};
  bool attached = false;
  CURLM* multi() const { return slot->multi.get(); }
  ~Handles() {
    if (attached) curl_multi_remove_handle(multi(), easy.get());
  }
};

Transfer::Transfer(const Request& request) : pool_(request.pool), h_(std::make_unique<Handles>()) {
  global_init();
  h_->slot = pool_ ? pool_->take() : std::make_unique<ConnectionPool::Slot>();
  h_->easy.reset(curl_easy_init());
  if (!h_->easy) throw Error(request.url + ": libcurl: out of memory");
  CURL* e = h_->easy.get();
  for (const std::string& line : request.headers) {
    curl_slist* next = curl_slist_append(h_->headers.get(), line.c_str());
    if (!next) throw Error(request.url + ": libcurl: out of memory");
    (void)h_->headers.release();
    h_->headers.reset(next);
  }
  bool https = request.url.starts_with("https://");
  curl_easy_setopt(e, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h_->errbuf);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "cfs");
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  // A redirect never downgrades an https request to plain http.
  curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, https ? "https" : "http,https");
  // Blob downloads are redirected to storage backends; libcurl sends an Authorization
  // header set here only to the original host.
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(e, CURLOPT_MAXREDIRS, 8L);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, h_->headers.get());
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, request.connect_timeout_s);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, request.low_speed_timeout_s);
  if (!request.verify_tls) {
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (!request.ranges.empty()) {
    h_->range = request.ranges;
    curl_easy_setopt(e, CURLOPT_RANGE, h_->range.c_str());
  } else if (request.range_start > 0 || request.range_end > 0) {
    h_->range = std::to_string(request.range_start) + "-" +
                (request.range_end > 0 ? std::to_string(request.range_end - 1) : std::string());
    curl_easy_setopt(e, CURLOPT_RANGE, h_->range.c_str());
  }
  if (!request.form_body.empty()) {
    h_->body = request.form_body;
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(h_->body.size()));
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, h_->body.c_str());
  }
  if (request.max_recv_speed > 0)
    curl_easy_setopt(e, CURLOPT_MAX_RECV_SPEED_LARGE,
                     static_cast<curl_off_t>(request.max_recv_speed));
  // Larger deliveries than the 16 KiB default: fewer callbacks and poll rounds per blob.
  curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 256L << 10);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, &Transfer::on_data);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, this);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, &Transfer::on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, this);
  if (curl_multi_add_handle(h_->multi(), e) != CURLM_OK)
    throw Error(request.url + ": libcurl: cannot start the transfer");
  h_->attached = true;
}

Transfer::~Transfer() {
  if (!pool_) return;
  // A response whose last bytes are in the socket but not yet taken by libcurl: one
  // non-blocking round completes it, so its connection stays in the cache for the next.
  int running = 0;
  if (!done_ && headers_done_ && !paused_) curl_multi_perform(h_->multi(), &running);
  curl_multi_remove_handle(h_->multi(), h_->easy.get());
  h_->attached = false;
  h_->easy.reset();
  pool_->give_back(std::move(h_->slot));
}

size_t Transfer::on_header(char* p, size_t size, size_t n, void* self_ptr) {
  auto* self = static_cast<Transfer*>(self_ptr);
  std::string_view line(p, size * n);
  if (line.starts_with("HTTP/")) {
    // A new response (after a redirect or a 100 Continue): its headers replace the last.
    self->headers_.clear();
    return size * n;
  }
  auto colon = line.find(':');
  if (colon != std::string_view::npos)
    self->headers_[lower(trim(line.substr(0, colon)))] = std::string(trim(line.substr(colon + 1)));
  return size * n;
}

size_t Transfer::on_data(char* p, size_t size, size_t n, void* self_ptr) {
  auto* self = static_cast<Transfer*>(self_ptr);
  if (self->buffer_.size() - self->buffer_pos_ >= kMaxBuffered) {
    self->paused_ = true;
    return CURL_WRITEFUNC_PAUSE;
  }
  if (self->buffer_pos_ > 0 && self->buffer_pos_ == self->buffer_.size()) {
    self->buffer_.clear();
    self->buffer_pos_ = 0;
  }
  self->buffer_.append(p, size * n);
  if (!self->headers_done_) {
    self->headers_done_ = true;
    curl_easy_getinfo(self->h_->easy.get(), CURLINFO_RESPONSE_CODE, &self->status_);
  }
  return size * n;
}

bool Transfer::pump() {
  if (paused_ && buffer_pos_ == buffer_.size()) {
    paused_ = false;
    curl_easy_pause(h_->easy.get(), CURLPAUSE_CONT);
  }
  int running = 0;
  CURLMcode mc = curl_multi_perform(h_->multi(), &running);
  if (mc != CURLM_OK) {
    error_ = {0, std::string("libcurl: ") + curl_multi_strerror(mc)};
    done_ = true;
    return false;
  }
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(h_->multi(), &left)) {
    if (msg->msg != CURLMSG_DONE || msg->easy_handle != h_->easy.get()) continue;
    done_ = true;
    CURLcode rc = msg->data.result;
    if (rc != CURLE_OK) {
      error_ = {static_cast<int>(rc),
                h_->errbuf[0] ? std::string(h_->errbuf) : std::string(curl_easy_strerror(rc))};
      return false;
    }
    if (!headers_done_) {
      headers_done_ = true;
      curl_easy_getinfo(h_->easy.get(), CURLINFO_RESPONSE_CODE, &status_);
    }
    return true;
  }
  if (running && buffer_pos_ == buffer_.size()) {
    mc = curl_multi_poll(h_->multi(), nullptr, 0, 1000, nullptr);
    if (mc != CURLM_OK) {
      error_ = {0, std::string("libcurl: ") + curl_multi_strerror(mc)};
      done_ = true;
      return false;
    }
  }
  return true;
}

bool Transfer::wait_headers() {
  while (!headers_done_) {
    if (done_) return error_.message.empty();
    // One round can deliver the headers, body bytes and then a failure: the failure is the
    // body's, reported by read_some after the bytes that did arrive.
    if (!pump()) return headers_done_;
  }
  return true;
}

std::string Transfer::header(std::string_view name) const {
  auto it = headers_.find(std::string(name));
  return it == headers_.end() ? std::string() : it->second;
}

bool Transfer::read_some(std::span<std::byte> buf, size_t& n) {
  n = 0;
  while (buffer_pos_ == buffer_.size()) {
    if (done_) return error_.message.empty();
    // Bytes that arrived before a failure are handed out first.
    if (!pump() && buffer_pos_ == buffer_.size()) return false;
  }
  n = std::min(buf.size(), buffer_.size() - buffer_pos_);
  std::memcpy(buf.data(), buffer_.data() + buffer_pos_, n);
  buffer_pos_ += n;
  return true;
}

bool Transfer::read_all(std::string& out, size_t limit) {
  out.clear();
  std::byte buf[65536];
  for (;;) {
    size_t n = 0;
    if (!read_some(buf, n)) return false;
    if (n == 0) return true;
    if (out.size() + n > limit) {
      error_ = {0, "response larger than " + std::to_string(limit) + " bytes", true};
      return false;
    }
    out.append(reinterpret_cast<const char*>(buf), n);
  }
}

std::string base64_encode(std::string_view data) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    uint32_t v = (uint32_t(uint8_t(data[i])) << 16) | (uint32_t(uint8_t(data[i + 1])) << 8) |
                 uint8_t(data[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out += kAlphabet[(v >> s) & 63];
  }
  if (size_t rest = data.size() - i) {
    uint32_t v = uint32_t(uint8_t(data[i])) << 16;
    if (rest == 2) v |= uint32_t(uint8_t(data[i + 1])) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += rest == 2 ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

std::string base64_decode(std::string_view text, const std::string& what) {
  std::optional<std::string> out = tar::base64_decode(text);
  if (!out) throw Error(what + ": not valid base64");
  return std::move(*out);
}

std::string url_escape(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : s) {
    unsigned char u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += c;
    } else {
      out += '%';
      out += kHex[u >> 4];
      out += kHex[u & 15];
    }
  }
  return out;
}

}  // namespace cfs::oci::http
