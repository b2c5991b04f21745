// cfs::escape_for_log and its UTF-8 / control-character predicates (cfs/escape.h), and the
// bounded read_fd used for metadata documents.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "cfs/error.h"
#include "cfs/escape.h"
#include "cfs/fd.h"
#include "testdata.h"

namespace cfs {
namespace {

TEST(EscapeForLog, PrintableTextAndUtf8PassUnchanged) {
  EXPECT_EQ(escape_for_log("usr/bin/ls"), "usr/bin/ls");
  EXPECT_EQ(escape_for_log("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"),
            "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
  EXPECT_EQ(escape_for_log(""), "");
}

TEST(EscapeForLog, ControlsBackslashAndBadBytesAreHexEscaped) {
  // A fake log line and a terminal escape sequence from a redirect or tar path.
  EXPECT_EQ(escape_for_log("a\nfake: ok\x1b[2J"), "a\\x0afake: ok\\x1b[2J");
  EXPECT_EQ(escape_for_log(std::string("nul\0x", 5)), "nul\\x00x");
  EXPECT_EQ(escape_for_log("\t\r\x7f"), "\\x09\\x0d\\x7f");
  // The backslash itself, so an escaped string cannot pose as another.
  EXPECT_EQ(escape_for_log("\\x41"), "\\x5cx41");
  // Bytes outside well-formed UTF-8: lone continuation, truncated sequence, overlong form,
  // surrogate, past U+10FFFF, 0xff.
  EXPECT_EQ(escape_for_log("\x80"), "\\x80");
  EXPECT_EQ(escape_for_log("\xe2\x82"), "\\xe2\\x82");
  EXPECT_EQ(escape_for_log("\xc0\xaf"), "\\xc0\\xaf");
  EXPECT_EQ(escape_for_log("\xed\xa0\x80"), "\\xed\\xa0\\x80");
  EXPECT_EQ(escape_for_log("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");
  EXPECT_EQ(escape_for_log("\xff\xfe"), "\\xff\\xfe");
  // A bad byte does not swallow the valid character after it.
  EXPECT_EQ(escape_for_log("\xe2\xc3\xa9"), "\\xe2\xc3\xa9");
  // C1 controls encoded as UTF-8 (U+009B is CSI on some terminals).
  EXPECT_EQ(escape_for_log("\xc2\x9b"
                           "31m"),
            "\\xc2\\x9b31m");
}

TEST(EscapeForLog, Utf8AndControlPredicates) {
  EXPECT_TRUE(is_valid_utf8("plain"));
  EXPECT_TRUE(is_valid_utf8("\xe2\x82\xac"));
  EXPECT_FALSE(is_valid_utf8("\xff"));
  EXPECT_FALSE(is_valid_utf8("\xc0\x80"));
  EXPECT_FALSE(has_control_chars("6.1.0-9 \xe2\x82\xac"));  // 0x82 inside a sequence is fine
  EXPECT_TRUE(has_control_chars("6.1\noptions rd.break"));
  EXPECT_TRUE(has_control_chars("x\x7f"));
  EXPECT_TRUE(has_control_chars("x\xc2\x85"));  // NEL
  EXPECT_TRUE(has_control_chars("x\x9b"));      // a raw C1 byte
}

TEST(ReadFd, LimitIsAClearError) {
  test::TempDir tmp;
  test::write_file(tmp / "doc", std::string(100000, 'x'));
  UniqueFd fd = open_file(tmp / "doc", O_RDONLY);
  EXPECT_EQ(read_fd(fd.get(), "doc", 100000).size(), 100000u);
  ASSERT_EQ(::lseek(fd.get(), 0, SEEK_SET), 0);
  try {
    read_fd(fd.get(), tmp / "doc", 99999);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), tmp / "doc" + ": larger than 99999 bytes");
  }
}

}  // namespace
}  // namespace cfs
