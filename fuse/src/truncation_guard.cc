#include "truncation_guard.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

#include "cfs/error.h"

namespace cfs::fuse {

namespace {

// A signal handler can only reach process-wide state; these are written once before the
// handler is installed (range) or only ever set (truncated).
std::atomic<uintptr_t> guarded_begin{0};
std::atomic<uintptr_t> guarded_end{0};
std::atomic<bool> truncated{false};

void on_sigbus(int sig, siginfo_t* info, void*) {
  auto addr = reinterpret_cast<uintptr_t>(info->si_addr);
  if (addr >= guarded_begin.load() && addr < guarded_end.load()) {
    uintptr_t page = addr & ~(static_cast<uintptr_t>(sysconf(_SC_PAGESIZE)) - 1);
    // mmap is async-signal-safe: replace the lost page with zeros and retry the access.
    void* p = mmap(reinterpret_cast<void*>(page), static_cast<size_t>(sysconf(_SC_PAGESIZE)),
                   PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (p != MAP_FAILED) {
      truncated.store(true);
      return;
    }
  }
  // Not ours (or unrecoverable): die as the default action would.
  signal(sig, SIG_DFL);
  raise(sig);
}

}  // namespace

void guard_image_mapping(std::span<const std::byte> mapping) {
  guarded_begin.store(reinterpret_cast<uintptr_t>(mapping.data()));
  guarded_end.store(reinterpret_cast<uintptr_t>(mapping.data() + mapping.size()));
  struct sigaction sa {};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGBUS, &sa, nullptr) < 0) throw_errno("sigaction(SIGBUS)");
}

bool image_mapping_truncated() noexcept {
  return truncated.load();
}

}  // namespace cfs::fuse
