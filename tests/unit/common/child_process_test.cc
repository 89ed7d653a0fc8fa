#include "stagefarm/common/child_process.h"

#include <gtest/gtest.h>

namespace stagefarm {
namespace {

TEST(RunCommand, InterleavesStderrWithStdoutUnlessAskedToKeepItApart) {
  const std::vector<std::string> argv = {"/bin/sh", "-c", "echo out; echo err >&2; exit 3"};
  StatusOr<CommandResult> both = RunCommand(argv);
  ASSERT_TRUE(both.ok()) << both.status().ToString();
  EXPECT_EQ(both->exit_code, 3);
  EXPECT_EQ(both->output, "out\nerr\n");
  EXPECT_EQ(both->error_output, "");
  StatusOr<CommandResult> apart = RunCommand(argv, 30, /*separate_stderr=*/true);
  ASSERT_TRUE(apart.ok()) << apart.status().ToString();
  EXPECT_EQ(apart->exit_code, 3);
  EXPECT_EQ(apart->output, "out\n");
  EXPECT_EQ(apart->error_output, "err\n");
}

TEST(RunCommand, ACommandThatOutlivesItsTimeoutIsKilled) {
  StatusOr<CommandResult> r = RunCommand({"/bin/sh", "-c", "echo x >&2; sleep 30"}, 1, true);
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().ToString();
}

}  // namespace
}  // namespace stagefarm
