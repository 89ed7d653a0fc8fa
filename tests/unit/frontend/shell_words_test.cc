#include "stagefarm/common/shell_words.h"

#include <gtest/gtest.h>

namespace stagefarm::frontend {
namespace {

TEST(ShellLex, TrimmingAnUnsetVariableGivesEmpty) {
  // Found by expander_fuzz: ${unset%pattern} read an empty optional.
  ShellLex lex;
  EnvLookup env = EnvFromList({"P=linux/arm64"});
  for (const char* word : {"${unset%/*}", "${unset%%/*}", "${unset#*/}", "${unset##*/}"}) {
    StatusOr<std::string> v = lex.ProcessWord(word, env);
    ASSERT_TRUE(v.ok()) << word << ": " << v.status().ToString();
    EXPECT_EQ(*v, "") << word;
  }
  EXPECT_EQ(*lex.ProcessWord("${P%/*}-${P##*/}", env), "linux-arm64");
}

}  // namespace
}  // namespace stagefarm::frontend
