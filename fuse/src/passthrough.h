// FUSE passthrough for object files: the kernel reads an opened object directly, as the
// EROFS+overlayfs mount does, instead of asking the server for every page.
//
// libfuse 3.14 cannot negotiate passthrough (its capability word has 32 bits), so this sits
// under it as the session's transport (fuse_session_custom_io): it watches requests as they
// are read and amends two replies as they are written. The INIT reply gains the passthrough
// flag when the kernel offered it; an OPEN reply whose handle was given a backing file gains
// FOPEN_PASSTHROUGH and the backing id. Everything else passes through untouched, and any
// failure (older kernel, no CAP_SYS_ADMIN, objects on a stacked filesystem) leaves that open
// on the ordinary read path.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <unordered_set>

namespace cfs::fuse {

class Passthrough {
 public:
  // log receives one line when the connection is set up (on, or why not) and one on the
  // first open that could not be given its backing file.
  explicit Passthrough(std::function<void(const std::string&)> log) : log_(std::move(log)) {}

  // The transport: what libfuse calls instead of read(2)/writev(2) on /dev/fuse.
  ssize_t read_request(int fuse_fd, void* buf, size_t size);
  ssize_t write_reply(int fuse_fd, iovec* iov, int count);

  // True once the kernel has accepted passthrough for this connection.
  bool active() const noexcept { return active_.load(std::memory_order_acquire); }

  // Registers object_fd as the backing file of the open handle fh, to be announced in the
  // OPEN reply. Returns 0 or an errno (the open then simply uses the server's read path).
  int attach(int fuse_fd, uint64_t fh, int object_fd);
  // Drops the registration when the handle is released. The id must outlive the OPEN reply:
  // the opener looks it up only after the reply has been written.
  void detach(int fuse_fd, uint64_t fh);

 private:
  void saw_request(std::span<const std::byte> request);

  std::function<void(const std::string&)> log_;
  std::atomic<bool> offered_{false};
  std::atomic<bool> attach_failed_{false};
  std::atomic<bool> active_{false};
  std::atomic<uint64_t> init_unique_{0};
  std::mutex mutex_;
  std::unordered_set<uint64_t> open_requests_;     // uniques of OPENs awaiting their reply
  std::unordered_map<uint64_t, int32_t> backing_;  // fh -> backing id, until its RELEASE
};

}  // namespace cfs::fuse
