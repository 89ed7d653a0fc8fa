#include "stagefarm/cli/label_flags.h"

#include <gtest/gtest.h>

namespace stagefarm::cli {
namespace {

TEST(LabelFlags, KeyValuePairsBecomeAMapLaterKeyWins) {
  StatusOr<std::map<std::string, std::string>> m =
      ParseLabelFlags("--label", {"size=large", "gpu=", "zone=a=b", "size=small"});
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(*m,
            (std::map<std::string, std::string>{{"size", "small"}, {"gpu", ""}, {"zone", "a=b"}}));
}

TEST(LabelFlags, SpecWithoutKeyOrEqualsNamesTheFlag) {
  for (const char* bad : {"size", "=large", ""}) {
    StatusOr<std::map<std::string, std::string>> m = ParseLabelFlags("--worker-label", {bad});
    ASSERT_FALSE(m.ok()) << bad;
    EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(m.status().message().find("--worker-label " + std::string(bad) + ": want KEY=VALUE"),
              std::string::npos)
        << m.status().ToString();
  }
}

}  // namespace
}  // namespace stagefarm::cli
