// Images through `skopeo experimental-image-proxy`, the protocol composefs-rs and bootc use
// (containers-image-proxy): a SOCK_SEQPACKET socketpair, one JSON request
// {"method": M, "args": [...]} per message, one JSON reply {"success", "value", "pipeid",
// "error"} per message, and for blob-carrying replies a pipe read end passed with
// SCM_RIGHTS. The data is read from the pipe, then "FinishPipe" reports skopeo's own
// verdict (it checks the blob digest too).
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <exception>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/oci/source.h"
#include "util.h"

extern char** environ;

namespace cfs::oci {

namespace {

using nlohmann::json;

constexpr size_t kMaxReply = 1 << 20;
constexpr uint64_t kMaxManifest = 16u << 20;

class PipeReader : public BlobReader {
 public:
  // skopeo closes its end of the pipe only when FinishPipe is called, so a blob of known
  // size is read up to that size; without a size the caller runs FinishPipe concurrently.
  PipeReader(UniqueFd fd, uint32_t pipe_id, std::optional<uint64_t> size, std::string what)
      : fd_(std::move(fd)), pipe_id_(pipe_id), left_(size), what_(std::move(what)) {}
  size_t read(std::span<std::byte> buf) override {
    size_t want = buf.size();
    if (left_) want = static_cast<size_t>(std::min<uint64_t>(want, *left_));
    if (want == 0) return 0;
    ssize_t n;
    do {
      n = ::read(fd_.get(), buf.data(), want);
    } while (n < 0 && errno == EINTR);
    if (n < 0) throw_errno(what_);
    if (left_) {
      if (n == 0)
        throw Error(what_ + ": skopeo's stream ended " + std::to_string(*left_) + " bytes early");
      *left_ -= static_cast<uint64_t>(n);
    }
    return static_cast<size_t>(n);
  }
  uint32_t pipe_id() const { return pipe_id_; }
  bool finished = false;

 private:
  UniqueFd fd_;
  uint32_t pipe_id_;
  std::optional<uint64_t> left_;
  std::string what_;
};

struct Reply {
  json value;
  uint32_t pipe_id = 0;
  UniqueFd fd;
};

class SkopeoSource : public ImageSource {
 public:
  explicit SkopeoSource(std::string spec) : spec_(std::move(spec)) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
      throw_errno("socketpair for skopeo");
    sock_.reset(sv[0]);
    UniqueFd child(sv[1]);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    // dup2 onto fd 3 clears close-on-exec; the child end is never 3 itself since fds 0-2
    // are open and sv[0] was allocated first.
    posix_spawn_file_actions_adddup2(&actions, child.get(), 3);
    const char* argv[] = {"skopeo", "experimental-image-proxy", "--sockfd", "3", nullptr};
    pid_t pid;
    int rc = posix_spawnp(&pid, "skopeo", &actions, nullptr, const_cast<char**>(argv), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw SystemError(rc, "cannot run skopeo (needed for " + spec_ + ")");
    pid_ = pid;
    child.reset();
    call("Initialize", json::array());
    Reply r = call("OpenImage", json::array({spec_}));
    if (!r.value.is_number_unsigned()) throw Error(spec_ + ": skopeo returned no image handle");
    image_ = r.value.get<uint64_t>();
  }

  ~SkopeoSource() override {
    try {
      if (image_) call("CloseImage", json::array({*image_}));
    } catch (const Error&) {
      // The proxy is going away anyway.
    }
    sock_.reset();
    if (pid_ > 0) {
      int status;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }

  std::string manifest() override {
    Reply r = call("GetManifest", json::array({*image_}));
    if (!r.fd) throw Error(spec_ + ": skopeo sent no manifest data");
    PipeReader reader(std::move(r.fd), r.pipe_id, std::nullopt, spec_ + ": manifest");
    std::exception_ptr finish_error;
    std::thread finisher([&] {
      try {
        finish_pipe(reader.pipe_id());
      } catch (...) {
        finish_error = std::current_exception();
      }
    });
    std::string data;
    try {
      std::byte buf[65536];
      while (size_t n = reader.read(buf)) {
        data.append(reinterpret_cast<const char*>(buf), n);
        if (data.size() > kMaxManifest) throw Error(spec_ + ": manifest too large");
      }
    } catch (...) {
      finisher.join();
      throw;
    }
    finisher.join();
    if (finish_error) std::rethrow_exception(finish_error);
    return data;
  }

  std::unique_ptr<BlobReader> open_blob(const Descriptor& blob) override {
    validate_oci_digest(blob.digest, spec_);
    Reply r = call("GetBlob", json::array({*image_, blob.digest, blob.size}));
    if (!r.fd) throw Error(spec_ + ": skopeo sent no data for blob " + blob.digest);
    uint64_t size = r.value.is_number_unsigned() ? r.value.get<uint64_t>() : blob.size;
    return std::make_unique<PipeReader>(std::move(r.fd), r.pipe_id, size,
                                        spec_ + ": " + blob.digest);
  }

  void finish_blob(BlobReader& reader) override {
    auto* pipe = dynamic_cast<PipeReader*>(&reader);
    if (!pipe || pipe->finished) return;
    pipe->finished = true;
    finish_pipe(pipe->pipe_id());
  }

  std::string name() const override { return spec_; }

 private:
  void finish_pipe(uint32_t id) { call("FinishPipe", json::array({id})); }

  Reply call(const std::string& method, json args) {
    std::lock_guard lock(mutex_);
    std::string request = json{{"method", method}, {"args", std::move(args)}}.dump();
    ssize_t sent;
    do {
      sent = ::send(sock_.get(), request.data(), request.size(), MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) throw_errno(spec_ + ": skopeo proxy request " + method);

    std::string buf(kMaxReply, '\0');
    iovec iov{buf.data(), buf.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    do {
      n = ::recvmsg(sock_.get(), &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) throw_errno(spec_ + ": skopeo proxy reply to " + method);
    if (n == 0) throw Error(spec_ + ": skopeo exited (reply to " + method + ")");
    Reply reply;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
      // skopeo attaches an SCM_RIGHTS header with no descriptors to plain replies.
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
          c->cmsg_len >= CMSG_LEN(sizeof(int))) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
        reply.fd.reset(fd);
      }
    }
    if (msg.msg_flags & MSG_TRUNC) throw Error(spec_ + ": skopeo proxy reply too large");
    json j;
    // Members of the wrong type make json::value() throw too: all of it is a malformed reply.
    try {
      j = store::parse_json_bounded(std::string_view(buf).substr(0, static_cast<size_t>(n)),
                                    spec_ + ": skopeo proxy reply");
      if (!j.value("success", false))
        throw Error(spec_ + ": " + method + ": " + j.value("error", std::string("skopeo failed")));
      reply.value = j.value("value", json());
      reply.pipe_id = j.value("pipeid", 0u);
    } catch (const json::exception& e) {
      throw Error(spec_ + ": malformed skopeo proxy reply: " + e.what());
    }
    return reply;
  }

  std::string spec_;
  UniqueFd sock_;
  pid_t pid_ = -1;
  std::optional<uint64_t> image_;
  std::mutex mutex_;
};

}  // namespace

std::unique_ptr<ImageSource> open_skopeo_source(std::string_view spec) {
  return std::make_unique<SkopeoSource>(std::string(spec));
}

}  // namespace cfs::oci
