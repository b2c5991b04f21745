#include "cfs/kmount/verity.h"

#include <unistd.h>

#include <optional>

#include "cfs/error.h"
#include "cfs/fsverity.h"
#include "cfs/kernel_verity.h"
#include "enum_names.h"

namespace cfs::kmount {

std::string_view to_string(DigestCheck check) {
  constexpr auto kNames = detail::enum_names(std::pair{DigestCheck::none, "none"},
                                             std::pair{DigestCheck::kernel, "kernel"},
                                             std::pair{DigestCheck::userspace, "userspace"});
  return kNames.name(check);
}

DigestCheck check_digest(int fd, const Digest& expected, bool kernel_only,
                         const std::string& what) {
  DigestCheck how = DigestCheck::kernel;
  std::optional<Digest> actual = measure_verity(fd, what);
  if (!actual) {
    if (kernel_only)
      throw Error(
          what +
          ": Image has no fs-verity, but verity is required (a digest computed in userspace "
          "would not protect later reads); enable fs-verity on it or mount with "
          "--verity try/off");
    if (::lseek(fd, 0, SEEK_SET) < 0) throw_errno(what);
    actual = fsverity_digest_fd(fd, expected.algorithm(), what);
    how = DigestCheck::userspace;
  }
  if (*actual != expected) {
    std::string measured = how == DigestCheck::kernel ? "kernel-measured" : "computed";
    // "Image has wrong fs-verity" is C mount.composefs's wording, which scripts grep for.
    throw Error(what + ": Image has wrong fs-verity: expected " +
                std::string(algorithm_name(expected.algorithm())) + ":" + expected.hex() + ", " +
                measured + " " + std::string(algorithm_name(actual->algorithm())) + ":" +
                actual->hex() + "; refusing to mount");
  }
  return how;
}

}  // namespace cfs::kmount
