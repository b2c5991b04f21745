#include "passthrough.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "kernel_abi.h"

namespace cfs::fuse {

namespace {

template <typename T>
T load(const void* p) {
  T value;
  std::memcpy(&value, p, sizeof value);
  return value;
}

}  // namespace

ssize_t Passthrough::read_request(int fuse_fd, void* buf, size_t size) {
  ssize_t n = ::read(fuse_fd, buf, size);
  if (n > 0) saw_request({static_cast<const std::byte*>(buf), static_cast<size_t>(n)});
  return n;
}

void Passthrough::saw_request(std::span<const std::byte> request) {
  if (request.size() < sizeof(abi::InHeader)) return;
  auto header = load<abi::InHeader>(request.data());
  auto body = request.subspan(sizeof header);
  if (header.opcode == abi::kOpcodeInit) {
    // Only a 7.36+ kernel sends flags2; passthrough itself needs 7.40 (Linux 6.9).
    if (body.size() < sizeof(abi::InitIn)) return;
    auto init = load<abi::InitIn>(body.data());
    offered_ = (init.flags & abi::kInitExt) && (init.flags2 & abi::kInitPassthroughFlags2);
    init_unique_ = header.unique;
  } else if (header.opcode == abi::kOpcodeOpen && active()) {
    std::lock_guard lock(mutex_);
    open_requests_.insert(header.unique);
  }
}

int Passthrough::attach(int fuse_fd, uint64_t fh, int object_fd) {
  abi::BackingMap map{};
  map.fd = object_fd;
  int id = ::ioctl(fuse_fd, abi::kIocBackingOpen, &map);
  if (id < 0) {
    int err = errno;
    if (!attach_failed_.exchange(true) && log_)
      log_(std::string("FUSE passthrough refused for an object (") + std::strerror(err) +
           (err == ELOOP ? ": the object directory is on a stacked filesystem" : "") +
           "); such files are served by this process");
    return err;
  }
  std::lock_guard lock(mutex_);
  backing_[fh] = id;
  return 0;
}

ssize_t Passthrough::write_reply(int fuse_fd, iovec* iov, int count) {
  // libfuse writes a reply as the header followed by its argument: the two replies amended
  // here are exactly that shape.
  if (count != 2 || iov[0].iov_len != sizeof(abi::OutHeader)) return ::writev(fuse_fd, iov, count);
  auto header = load<abi::OutHeader>(iov[0].iov_base);

  if (header.unique == init_unique_ && init_unique_ != 0) {
    init_unique_ = 0;
    if (header.error == 0 && offered_ && iov[1].iov_len == sizeof(abi::InitOut)) {
      auto init = load<abi::InitOut>(iov[1].iov_base);
      init.flags |= abi::kInitExt;
      init.flags2 |= abi::kInitPassthroughFlags2;
      init.max_stack_depth = abi::kPassthroughStackDepth;
      iovec amended[2] = {iov[0], {&init, sizeof init}};
      ssize_t n = ::writev(fuse_fd, amended, 2);
      if (n >= 0) {
        active_.store(true, std::memory_order_release);
        if (log_) log_("FUSE passthrough on: the kernel reads opened object files directly");
      }
      return n;
    }
    if (header.error == 0 && log_)
      log_(offered_ ? "FUSE passthrough off: unexpected INIT reply size"
                    : "FUSE passthrough off: this kernel does not offer it (needs Linux 6.9+)");
    return ::writev(fuse_fd, iov, count);
  }

  if (!active()) return ::writev(fuse_fd, iov, count);
  int32_t backing_id = -1;
  {
    std::lock_guard lock(mutex_);
    if (open_requests_.erase(header.unique) == 0) return ::writev(fuse_fd, iov, count);
    if (header.error == 0 && iov[1].iov_len == sizeof(abi::OpenOut)) {
      auto it = backing_.find(load<abi::OpenOut>(iov[1].iov_base).fh);
      if (it != backing_.end()) backing_id = it->second;
    }
  }
  if (backing_id < 0) return ::writev(fuse_fd, iov, count);
  auto open = load<abi::OpenOut>(iov[1].iov_base);
  open.open_flags |= abi::kOpenPassthrough;
  open.backing_id = backing_id;
  iovec amended[2] = {iov[0], {&open, sizeof open}};
  return ::writev(fuse_fd, amended, 2);
}

void Passthrough::detach(int fuse_fd, uint64_t fh) {
  int32_t id;
  {
    std::lock_guard lock(mutex_);
    auto it = backing_.find(fh);
    if (it == backing_.end()) return;
    id = it->second;
    backing_.erase(it);
  }
  auto value = static_cast<uint32_t>(id);
  ::ioctl(fuse_fd, abi::kIocBackingClose, &value);
}

}  // namespace cfs::fuse
