#include "cfs/fs_context.h"

#include <unistd.h>

#include <string_view>

namespace cfs {

std::string drain_fs_context_log(int fsfd) {
  std::string joined;
  char buf[1024];
  for (;;) {
    ssize_t n = ::read(fsfd, buf, sizeof buf);
    if (n <= 0) break;
    std::string_view msg(buf, static_cast<size_t>(n));
    if (msg.size() > 2 && msg[1] == ' ') msg.remove_prefix(2);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\0')) msg.remove_suffix(1);
    if (!joined.empty()) joined += "; ";
    joined += msg;
  }
  return joined;
}

}  // namespace cfs
