// The top-level error policy every cfs binary runs its main() in (cfs/main_frame.h).
#include "cfs/main_frame.h"

#include <gtest/gtest.h>

#include <system_error>

namespace {

struct Outcome {
  int status;
  std::string err;
};

template <class Body>
Outcome frame(Body body) {
  testing::internal::CaptureStderr();
  int status = cfs::run_main("prog", body);
  return {status, testing::internal::GetCapturedStderr()};
}

TEST(MainFrame, ReturnsTheStatusOfABodyThatEndsNormally) {
  Outcome o = frame([] { return 7; });
  EXPECT_EQ(o.status, 7);
  EXPECT_EQ(o.err, "");
}

TEST(MainFrame, ReportsEachExceptionOnceWithItsStatus) {
  Outcome o = frame([]() -> int { throw cfs::Error("image.cfs: not an EROFS image"); });
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.err, "prog: image.cfs: not an EROFS image\n");

  o = frame([]() -> int { cfs::throw_errno(ENOENT, "/x"); });
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.err, "prog: /x: No such file or directory\n");

  o = frame([]() -> int { throw cfs::UsageError("expected IMAGE and MOUNTPOINT"); });
  EXPECT_EQ(o.status, 2);
  EXPECT_EQ(o.err, "prog: expected IMAGE and MOUNTPOINT\n");

  o = frame([]() -> int { throw std::bad_alloc(); });
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.err, "prog: out of memory\n");

  o = frame([]() -> int { throw std::system_error(EACCES, std::generic_category(), "open"); });
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.err.rfind("prog: open: ", 0), 0u) << o.err;

  o = frame([]() -> int { throw 42; });
  EXPECT_EQ(o.status, 1);
  EXPECT_EQ(o.err, "prog: unknown error\n");
}

TEST(MainFrame, ExitStatusIsSilent) {
  Outcome o = frame([]() -> int { throw cfs::ExitStatus(3); });
  EXPECT_EQ(o.status, 3);
  EXPECT_EQ(o.err, "");
}

TEST(MainFrame, ProgramNameIsTheLastComponentOfArgv0) {
  char full[] = "/usr/bin/mkcomposefs", bare[] = "cfsctl", empty[] = "";
  char* argv_full[] = {full, nullptr};
  char* argv_bare[] = {bare, nullptr};
  char* argv_empty[] = {empty, nullptr};
  char* argv_none[] = {nullptr};
  EXPECT_EQ(cfs::program_name(1, argv_full, "x"), "mkcomposefs");
  EXPECT_EQ(cfs::program_name(1, argv_bare, "x"), "cfsctl");
  EXPECT_EQ(cfs::program_name(1, argv_empty, "x"), "x");
  EXPECT_EQ(cfs::program_name(0, argv_none, "x"), "x");
}

}  // namespace
