// The new mount API's filesystem contexts (fsopen(2)), as cfs-mount and cfs-fuse's overlay
// mode use them.
#pragma once

#include <string>

namespace cfs {

// Reads the messages the kernel queued on the fs_context fsfd ("e overlay: ..."), without
// their severity prefix, joined by "; "; empty when there are none. Used to explain a failed
// fsconfig(2) or fsmount(2).
std::string drain_fs_context_log(int fsfd);

}  // namespace cfs
