// cfs/file_copy.h: in-kernel copies, the read/write fallback, and sources that end early.
#include "cfs/file_copy.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include "cfs/error.h"
#include "cfs/fd.h"
#include "testdata.h"

namespace cfs {
namespace {

class FileCopyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    content = test::pattern(3 << 20, 11);  // more than one 1 MiB chunk
    test::write_file(tmp / "in", content);
    in = open_file(tmp / "in", O_RDONLY);
  }

  test::TempDir tmp;
  std::string content;
  UniqueFd in;
};

TEST_F(FileCopyTest, CopiesARangeToTheCurrentOffset) {
  UniqueFd out = open_file(tmp / "out", O_WRONLY | O_CREAT | O_EXCL, 0644);
  write_all(out.get(), std::as_bytes(std::span(std::string_view("head"))), "out");
  copy_file_data(in.get(), 5, out.get(), content.size() - 10, "in");
  copy_file_data(in.get(), 0, out.get(), 0, "in");  // nothing to do
  out.reset();
  EXPECT_EQ(read_file(tmp / "out"), "head" + content.substr(5, content.size() - 10));
}

// A pipe is no copy_file_range target: the read/write path does the copy.
TEST_F(FileCopyTest, FallsBackWhereTheKernelRefuses) {
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  ASSERT_GE(::fcntl(w.get(), F_SETPIPE_SZ, 1 << 16), 0);
  copy_file_data(in.get(), 100, w.get(), 1000, "in");
  w.reset();
  EXPECT_EQ(read_fd(r.get(), "pipe"), content.substr(100, 1000));
}

TEST_F(FileCopyTest, ShortSourceIsAnError) {
  UniqueFd out = open_file(tmp / "out", O_WRONLY | O_CREAT | O_EXCL, 0644);
  try {
    copy_file_data(in.get(), 10, out.get(), content.size(), "in");
    ADD_FAILURE() << "copied more than the source holds";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("in: file shrank while being copied"), std::string::npos)
        << e.what();
  }
}

TEST(ReadSome, ReadsUntilEndOfFile) {
  test::TempDir tmp;
  test::write_file(tmp / "f", "abc");
  UniqueFd fd = open_file(tmp / "f", O_RDONLY);
  std::array<std::byte, 2> buf;
  EXPECT_EQ(read_some(fd.get(), buf, "f"), 2u);
  EXPECT_EQ(read_some(fd.get(), buf, "f"), 1u);
  EXPECT_EQ(read_some(fd.get(), buf, "f"), 0u);
  EXPECT_THROW(read_some(-1, buf, "f"), SystemError);
}

}  // namespace
}  // namespace cfs
