// A streamed HTTP GET (or form POST) on libcurl, read like a file: the registry client's only
// transport. One Transfer owns its curl easy handle and a multi handle (RAII); data is pulled by
// read(), and the transfer is paused while the caller does not keep up, so memory stays bounded.
// Transfers given a ConnectionPool borrow its multi handles, whose connection caches keep
// TCP (and TLS) connections open from one request to the next.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cfs::oci::http {

// Open connections kept between transfers: a set of idle curl multi handles, each with its
// own connection (and DNS) cache. A Transfer takes one for its lifetime and gives it back, so
// threads never share a handle and the next request to the same host reuses a connection
// whose response was read to its end. Thread-safe.
class ConnectionPool {
 public:
  ConnectionPool();
  ~ConnectionPool();
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;
  struct Slot;  // one multi handle (defined in http.cc)

 private:
  friend class Transfer;
  std::unique_ptr<Slot> take();
  void give_back(std::unique_ptr<Slot> slot);

  std::mutex mutex_;
  std::vector<std::unique_ptr<Slot>> idle_;
};

struct Request {
  std::string url;
  ConnectionPool* pool = nullptr;    // null: a connection of the transfer's own
  std::vector<std::string> headers;  // "Name: value"
  // Non-empty: a POST of this application/x-www-form-urlencoded body instead of a GET.
  std::string form_body;
  bool verify_tls = true;
  uint64_t range_start = 0;     // > 0: "Range: bytes=<start>-"
  uint64_t range_end = 0;       // > 0: exclusive end, "Range: bytes=<start>-<end - 1>"
  std::string ranges;           // non-empty: "Range: bytes=<ranges>" instead ("a-b,c-d,...")
  uint64_t max_recv_speed = 0;  // bytes/s, 0: unlimited
  long connect_timeout_s = 30;
  long low_speed_timeout_s = 60;  // abort when below 1 byte/s for this long
};

// A failure of the transport itself (connection refused, reset, TLS, timeout): worth a retry.
struct TransportError {
  int curl_code = 0;
  std::string message;
  bool too_large = false;  // read_all's limit, not the network: not worth a retry
};

class Transfer {
 public:
  explicit Transfer(const Request& request);
  ~Transfer();
  Transfer(const Transfer&) = delete;
  Transfer& operator=(const Transfer&) = delete;

  // Runs the transfer until the final response's headers arrived (or it failed). Returns
  // false on a transport failure (see error()).
  bool wait_headers();
  long status() const { return status_; }
  // Header of the final response, lowercase name; empty if absent.
  std::string header(std::string_view lowercase_name) const;
  // The transport failure; meaningful after wait_headers() or read_some() returned false.
  const TransportError& error() const { return error_; }
  // Up to buf.size() body bytes; 0 at the end of the body. Returns false on a transport
  // failure (n is then 0).
  bool read_some(std::span<std::byte> buf, size_t& n);
  // The whole body, at most limit bytes (false on a transport failure or an oversized body).
  bool read_all(std::string& out, size_t limit);

 private:
  struct Handles;
  bool pump();  // one round of curl_multi_perform/poll; false on failure
  static size_t on_data(char* p, size_t size, size_t n, void* self);
  static size_t on_header(char* p, size_t size, size_t n, void* self);

  ConnectionPool* pool_;
  std::unique_ptr<Handles> h_;
  std::string buffer_;
  size_t buffer_pos_ = 0;
  bool paused_ = false;
  bool done_ = false;
  bool headers_done_ = false;
  long status_ = 0;
  std::map<std::string, std::string> headers_;
  TransportError error_;
};

// "YWxhZGRpbjpvcGVuc2VzYW1l" for base64 encode/decode (auth.json's "auth" field, Basic auth).
std::string base64_encode(std::string_view data);
// Throws cfs::Error naming what on malformed input.
std::string base64_decode(std::string_view text, const std::string& what);
// Percent-encodes a query parameter value.
std::string url_escape(std::string_view s);

}  // namespace cfs::oci::http
