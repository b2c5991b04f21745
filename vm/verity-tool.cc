// cfs-vm-verity: turns fs-verity on for files, or prints their kernel-measured digest, inside the
// smoke-test VM. Busybox has no fs-verity applet and the fsverity tool would drag its shared
// libraries into the initramfs, so vm/run-smoke builds this as one static binary.
//
//   cfs-vm-verity enable FILE...   (files that already have fs-verity are left as they are)
//   cfs-vm-verity measure FILE     prints sha256:<hex> / sha512:<hex>
#include <fcntl.h>
#include <linux/fsverity.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>

namespace {

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  ~FileDescriptor() {
    if (fd_ >= 0) ::close(fd_);
  }
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_;
};

bool report_errno(const char* path, const char* step) {
  std::fprintf(stderr, "cfs-vm-verity: %s: %s: %s\n", path, step, std::strerror(errno));
  return false;
}

bool enable(const char* path) {
  // fs-verity can only be enabled through a read-only descriptor.
  FileDescriptor fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return report_errno(path, "open");
  fsverity_enable_arg arg{};
  arg.version = 1;
  arg.hash_algorithm = FS_VERITY_HASH_ALG_SHA256;
  arg.block_size = 4096;  // what composefs digests assume
  if (::ioctl(fd.get(), FS_IOC_ENABLE_VERITY, &arg) < 0 && errno != EEXIST)
    return report_errno(path, "FS_IOC_ENABLE_VERITY");
  return true;
}

bool measure(const char* path) {
  FileDescriptor fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return report_errno(path, "open");
  constexpr size_t max_digest = 64;
  alignas(fsverity_digest) std::array<unsigned char, sizeof(fsverity_digest) + max_digest> buf{};
  auto* header = reinterpret_cast<fsverity_digest*>(buf.data());
  header->digest_size = max_digest;
  if (::ioctl(fd.get(), FS_IOC_MEASURE_VERITY, header) < 0)
    return report_errno(path, "FS_IOC_MEASURE_VERITY");
  const char* algorithm = header->digest_algorithm == FS_VERITY_HASH_ALG_SHA256   ? "sha256"
                          : header->digest_algorithm == FS_VERITY_HASH_ALG_SHA512 ? "sha512"
                                                                                  : "unknown";
  std::printf("%s:", algorithm);
  for (size_t i = 0; i < header->digest_size; i++)
    std::printf("%02x", buf[sizeof(fsverity_digest) + i]);
  std::printf("\n");
  return true;
}

int usage() {
  std::fprintf(stderr, "usage: cfs-vm-verity enable FILE... | measure FILE\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  std::string_view command = argv[1];
  if (command == "measure" && argc == 3) return measure(argv[2]) ? 0 : 1;
  if (command != "enable") return usage();
  bool ok = true;
  for (int i = 2; i < argc; i++) ok = enable(argv[i]) && ok;
  return ok ? 0 : 1;
}
