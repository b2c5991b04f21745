// cfs/kernel_verity.h: the one rule for "no fs-verity here", and the ioctls on whatever the
// test machine's temporary filesystem offers.
#include "cfs/kernel_verity.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "cfs/error.h"
#include "cfs/fd.h"
#include "cfs/fsverity.h"
#include "testdata.h"

namespace cfs {
namespace {

TEST(KernelVerity, NoVerityRule) {
  for (int err : {ENODATA, ENOTTY, EOPNOTSUPP, EINVAL}) EXPECT_TRUE(is_no_verity_errno(err)) << err;
  for (int err : {0, EIO, EBADF, EPERM, EACCES, ETXTBSY, EROFS, EFBIG, ENOPKG, EEXIST, ENOMEM})
    EXPECT_FALSE(is_no_verity_errno(err)) << err;
}

TEST(KernelVerity, PipeHasNoVerity) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  EXPECT_FALSE(measure_verity(r.get(), "pipe"));
  EXPECT_EQ(enable_verity(r.get(), HashAlgorithm::sha256, "pipe"), VerityEnable::unsupported);
}

TEST(KernelVerity, OtherErrorsAreThrown) {
  try {
    measure_verity(-1, "nothing");
    ADD_FAILURE() << "measuring a closed descriptor succeeded";
  } catch (const SystemError& e) {
    EXPECT_EQ(e.code(), EBADF);
    EXPECT_NE(std::string(e.what()).find("nothing: measuring fs-verity"), std::string::npos);
  }
  EXPECT_THROW(enable_verity(-1, HashAlgorithm::sha256, "nothing"), SystemError);
}

// Where the temporary filesystem has fs-verity, the kernel's digest is the userspace one;
// where it has not, both calls say so instead of throwing.
TEST(KernelVerity, EnableThenMeasureAgreesWithUserspace) {
  test::TempDir tmp;
  const std::string content = test::pattern(3 * 4096 + 17, 7);
  test::write_file(tmp / "f", content);
  UniqueFd fd = open_file(tmp / "f", O_RDONLY);
  EXPECT_FALSE(measure_verity(fd.get(), "f"));
  VerityEnable result = enable_verity(fd.get(), HashAlgorithm::sha256, "f");
  if (result == VerityEnable::unsupported) {
    EXPECT_FALSE(measure_verity(fd.get(), "f"));
    GTEST_SKIP() << tmp.path() << ": no fs-verity on this filesystem";
  }
  EXPECT_EQ(result, VerityEnable::enabled);
  std::optional<Digest> measured = measure_verity(fd.get(), "f");
  ASSERT_TRUE(measured);
  EXPECT_EQ(*measured, fsverity_digest(content));
  EXPECT_EQ(measure_verity(fd.get(), HashAlgorithm::sha256, "f"), measured);
  EXPECT_THROW(measure_verity(fd.get(), HashAlgorithm::sha512, "f"), Error);
  EXPECT_EQ(enable_verity(fd.get(), HashAlgorithm::sha256, "f"), VerityEnable::already_enabled);
}

}  // namespace
}  // namespace cfs
