#include "stagefarm/common/file_mode.h"

#include <gtest/gtest.h>

namespace stagefarm {
namespace {

uint32_t Applied(const char* change, uint32_t mode, bool is_dir = false) {
  StatusOr<FileModeChange> m = FileModeChange::Parse(change);
  EXPECT_TRUE(m.ok()) << change << ": " << m.status().ToString();
  return m.ok() ? m->Apply(mode, is_dir) : 0xFFFFFFFF;
}

TEST(FileModeChange, OctalReplacesTheMode) {
  EXPECT_EQ(Applied("755", 0600), 0755u);
  EXPECT_EQ(Applied("0640", 0777, true), 0640u);
  EXPECT_EQ(Applied("4755", 0), 04755u);
}

// The cases of BuildKit's testCopyChmodNonOctal (golden case bk-copy-chmod-non-octal).
TEST(FileModeChange, SymbolicChangesEachFilesOwnMode) {
  EXPECT_EQ(Applied("go-w", 0666), 0644u);
  EXPECT_EQ(Applied("u=rw,g=r,o=r", 0666), 0644u);
  EXPECT_EQ(Applied("a+X", 0666), 0666u);  // a file without x keeps it off
  EXPECT_EQ(Applied("a+X", 0744), 0755u);  // with some x, all get it
  EXPECT_EQ(Applied("go-w", 0124, true), 0104u);
  EXPECT_EQ(Applied("u+rw,g+r,o-x,o+w", 0124, true), 0766u);
  EXPECT_EQ(Applied("a+X", 0124, true), 0135u);
  EXPECT_EQ(Applied("+x", 0644), 0755u);        // no who: all
  EXPECT_EQ(Applied("u+s,g+s", 0755), 06755u);  // setuid and setgid
  EXPECT_EQ(Applied("o+s", 0755), 0755u);       // no set-id bit for others
  EXPECT_EQ(Applied("+t", 0777, true), 01777u);
  EXPECT_EQ(Applied("g=u", 0740), 0770u);  // copied from the user's bits
  EXPECT_EQ(Applied("o=", 0777), 0770u);
  EXPECT_EQ(Applied("u-w+x", 0644), 0544u);  // several operations in one clause
}

TEST(FileModeChange, RefusesWhatIsNeitherNamingIt) {
  for (const char* bad : {"8", "0789", "10000", "99999999999999999999"}) {
    StatusOr<FileModeChange> m = FileModeChange::Parse(bad);
    ASSERT_FALSE(m.ok()) << bad;
    EXPECT_EQ(m.status().message(), std::string("invalid chmod parameter: '") + bad +
                                        "'. it should be octal string and between 0 and 07777");
  }
  for (const char* bad : {"", "u", "u+q", "go-w,", "u+r g", "x+w", ",u+x"}) {
    StatusOr<FileModeChange> m = FileModeChange::Parse(bad);
    ASSERT_FALSE(m.ok()) << bad;
    EXPECT_EQ(m.status().message(), std::string("invalid chmod parameter: '") + bad + "'");
  }
}

}  // namespace
}  // namespace stagefarm
