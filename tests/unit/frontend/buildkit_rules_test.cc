// Rules of BuildKit v0.24's Dockerfile frontend (dockerfile2llb/convert.go, instructions/)
// that the golden corpus found stagefarm breaking, one TEST group per rule.
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "stagefarm/common/build_plan.h"
#include "stagefarm/common/oci.h"
#include "step_spec.h"

namespace stagefarm::frontend {
namespace {

using Strings = std::vector<std::string>;

StatusOr<BuildPlan> Plan(const std::string& text, BuildOptions options = {}) {
  ImageResolver images = [](const std::string& ref) -> StatusOr<ImageConfig> {
    if (ref != "busybox" && ref != "alpine") return NotFoundError("no image " + ref);
    ImageConfig c;
    c.env = {"PATH=/bin"};
    return c;
  };
  return Resolve(text, options, images);
}

std::string ErrorOf(const std::string& text, BuildOptions options = {}) {
  auto plan = Plan(text, options);
  return plan.ok() ? "(built)" : plan.status().message();
}

// --- HEALTHCHECK: the history text is Go's %q of the *HealthcheckConfig.

TEST(Healthcheck, RetriesPrintAsAGoQuotedRune) {
  const std::map<int, std::string> cases = {
      {0, "'\\x00'"}, {2, "'\\x02'"},  {7, "'\\a'"},     {10, "'\\n'"},
      {34, "'\"'"},    {39, "'\\''"},   {65, "'A'"},       {92, "'\\\\'"},
      {127, "'\\x7f'"}, {133, "'\\u0085'"}, {233, "'\xC3\xA9'"}, {55296, "'\xEF\xBF\xBD'"},
      {1114112, "'\xEF\xBF\xBD'"}};
  for (const auto& [retries, quoted] : cases) {
    auto plan =
        Plan("FROM busybox\nHEALTHCHECK --retries=" + std::to_string(retries) + " CMD true\n");
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    EXPECT_EQ(plan->target_stage().steps[0].created_by,
              "HEALTHCHECK &{[\"CMD-SHELL\" \"true\"] \"0s\" \"0s\" \"0s\" \"0s\" " + quoted + "}")
        << retries;
  }
}

TEST(Healthcheck, HistoryIsGoQuotedConfig) {
  auto plan = Plan(
      "FROM busybox\n"
      "HEALTHCHECK --interval=5s --timeout=3s --retries=2 CMD [\"true\"]\n"
      "HEALTHCHECK --interval=30s --start-period=1m30s --start-interval=2s --retries=65 \\\n"
      "  CMD wget -q -O- \"http://x/\" || exit 1\n"
      "HEALTHCHECK --interval=5m CMD true\n"
      "HEALTHCHECK NONE\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStage& s = plan->target_stage();
  EXPECT_EQ(s.steps[0].created_by, "HEALTHCHECK &{[\"CMD\" \"true\"] \"5s\" \"3s\" \"0s\" \"0s\" '\\x02'}");
  EXPECT_EQ(s.steps[1].created_by,
            "HEALTHCHECK &{[\"CMD-SHELL\" \"wget -q -O- \\\"http://x/\\\" || exit 1\"] \"30s\" "
            "\"0s\" \"1m30s\" \"2s\" 'A'}");
  EXPECT_EQ(s.steps[2].created_by,
            "HEALTHCHECK &{[\"CMD-SHELL\" \"true\"] \"5m0s\" \"0s\" \"0s\" \"0s\" '\\x00'}");
  EXPECT_EQ(s.steps[3].created_by,
            "HEALTHCHECK &{[\"NONE\"] \"0s\" \"0s\" \"0s\" \"0s\" '\\x00'}");
}

// --- ONBUILD: the trigger goes into the config, no history entry is written.

TEST(Onbuild, WritesNoHistoryEntry) {
  auto plan = Plan("FROM busybox\nONBUILD RUN echo later\nENV A=1\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStage& s = plan->target_stage();
  EXPECT_EQ(s.steps[0].config().on_build, Strings{"RUN echo later"});
  EXPECT_EQ(s.steps[0].created_by, "");
  EXPECT_EQ(s.steps[1].created_by, "ENV A=1");
}

// --- Stage references are not expanded: COPY --from and RUN --mount from=.

TEST(StageReference, CopyFromRefusesVariablesAndQuotes) {
  const std::string reason =
      "variable expansion is not supported for --from, define a new stage with FROM using ARG "
      "from global scope as a workaround";
  EXPECT_EQ(ErrorOf("FROM busybox\nARG FOO=busybox\nCOPY --from=$FOO /a /b\n"),
            "Dockerfile:3: COPY --from=$FOO /a /b: " + reason);
  EXPECT_EQ(ErrorOf("FROM busybox AS a\nFROM busybox\nARG V=a\nCOPY --from=\"${V}\" /a /b\n"),
            "Dockerfile:4: COPY --from=\"${V}\" /a /b: " + reason);
  // Checked before anything is resolved: also in a stage the target does not need.
  EXPECT_EQ(ErrorOf("FROM busybox\nCOPY --from=$X /a /b\nFROM busybox\n"),
            "Dockerfile:2: COPY --from=$X /a /b: " + reason);
  // Quotes around a flag's value are the parser's (as BuildKit's extractBuilderFlags), not words.
  for (const char* ref : {"a", "\"a\""}) {
    auto plain = Plan(std::string("FROM busybox AS a\nFROM busybox\nCOPY --from=") + ref +
                      " /a /b\n");
    ASSERT_TRUE(plain.ok()) << plain.status().ToString();
    EXPECT_EQ(plain->target_stage().steps[0].from_stage, 0);
  }
}

TEST(StageReference, MountFromRefusesVariables) {
  EXPECT_EQ(ErrorOf("FROM busybox AS t\nFROM busybox\nENV t=t\n"
                    "RUN --mount=from=$t,type=cache,target=/tmp ls\n"),
            "Dockerfile:4: RUN --mount=from=$t,type=cache,target=/tmp ls: 'from' doesn't support "
            "variable expansion, define alias stage instead");
  EXPECT_EQ(ErrorOf("FROM busybox\nRUN --mount=FROM=${x},target=/m ls\n"),
            "Dockerfile:2: RUN --mount=FROM=${x},target=/m ls: 'from' doesn't support variable "
            "expansion, define alias stage instead");
  // A `$` at the very end is no variable; other fields still expand.
  auto plan = Plan("FROM busybox AS t\nFROM busybox\nARG D=/m\nRUN --mount=from=t,target=$D ls\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->target_stage().steps[1].mounts.at(0).target, "/m");
  EXPECT_EQ(ErrorOf("FROM busybox\nRUN --mount=from=t$,target=/m ls\n").find("variable"),
            std::string::npos);
}

// --- FROM finds a stage by its exact name; a name may be given twice.

TEST(StageName, FromMatchesTheLowerCasedNameExactly) {
  // `AS BUG_stage` is stored as bug_stage: FROM BUG_stage is an image reference, refused.
  std::string err = ErrorOf("FROM busybox AS BUG_stage\nFROM BUG_stage\n");
  EXPECT_NE(err.find("Dockerfile:2: "), std::string::npos) << err;
  EXPECT_NE(err.find("must be lowercase"), std::string::npos) << err;
  auto plan = Plan("FROM busybox AS Base\nRUN x\nFROM base\nCOPY --from=BASE /a /b\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->target_stage().base_stage, 0);
  EXPECT_EQ(plan->target_stage().steps[0].from_stage, 0);  // --from ignores case
}

TEST(StageName, DuplicateNameWarnsAndTheLaterStageIsMeant) {
  BuildOptions options;
  options.build_args = {{"app", "m"}};
  auto plan = Plan(
      "ARG app\n"
      "FROM busybox AS m\nRUN echo one\n"     // 0
      "FROM busybox AS final\nRUN echo a\n"   // 1
      "FROM busybox AS m\nRUN echo two\n"     // 2
      "FROM ${app} AS final\nRUN echo b\n",   // 3
      options);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->target_stage().index, 3);
  EXPECT_EQ(plan->target_stage().base_stage, 2);
  ASSERT_EQ(plan->checks.size(), 2u);
  EXPECT_EQ(plan->checks[0].rule, "DuplicateStageName");
  EXPECT_EQ(plan->checks[0].line, 6);
  EXPECT_EQ(plan->checks[0].message, "Duplicate stage name \"m\", stage names should be unique");
  EXPECT_EQ(plan->checks[1].line, 8);
  options.target = "final";
  auto targeted = Plan("FROM busybox AS final\nFROM busybox AS final\nRUN x\n", options);
  ASSERT_TRUE(targeted.ok()) << targeted.status().ToString();
  EXPECT_EQ(targeted->target_stage().index, 1);
}

// --- MAINTAINER sets the image's author, which reaches the config document.

TEST(Maintainer, SetsTheAuthorTheConfigDocumentCarries) {
  auto plan = Plan("FROM busybox\nMAINTAINER kaniko\nRUN true\nMAINTAINER nobody@domain.test\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStage& s = plan->target_stage();
  EXPECT_EQ(s.steps[0].config().author, "kaniko");
  EXPECT_EQ(s.steps[1].config().author, "kaniko");
  EXPECT_EQ(s.steps[2].config().author, "nobody@domain.test");
  EXPECT_EQ(s.steps[2].created_by, "MAINTAINER nobody@domain.test");

  ImageRecord image;
  image.config = s.steps[2].config();
  std::string doc = SerializeImageConfigDocument(image);
  EXPECT_NE(doc.find("\"author\":\"nobody@domain.test\""), std::string::npos) << doc;
  ImageRecord back;
  ASSERT_TRUE(ParseImageConfigDocument(doc, &back).ok());
  EXPECT_EQ(back.config.author, "nobody@domain.test");
}

// --- WORKDIR: an absolute path as written in the config and history, the worker gets it clean.

TEST(Workdir, AbsoluteKeptAsWrittenRelativeJoinedAndCleaned) {
  auto plan = Plan(
      "FROM busybox\n"
      "WORKDIR /a/b/c/\n"
      "WORKDIR d//e/\n"
      "WORKDIR /x//y/\n"
      "ARG EMPTY\n"
      "WORKDIR $EMPTY\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStage& s = plan->target_stage();
  EXPECT_EQ(s.steps[0].config().working_dir, "/a/b/c/");
  EXPECT_EQ(s.steps[0].created_by, "WORKDIR /a/b/c/");
  EXPECT_EQ(s.steps[1].config().working_dir, "/a/b/c/d/e");
  EXPECT_EQ(s.steps[2].config().working_dir, "/x//y/");
  EXPECT_EQ(s.steps[2].created_by, "WORKDIR /x//y/");
  EXPECT_EQ(s.steps[4].config().working_dir, "/x//y/");  // empty: the current one
  EXPECT_EQ(coordinator::MakeStepSpec(s.steps[2], "k", BuildRequest{}, {}).workdir, "/x/y");
}

// --- ARG: a redeclaration without a value keeps the value; ENV and a later ARG.

TEST(Arg, RedeclaredWithoutValueKeepsTheEarlierValue) {
  auto plan = Plan("FROM busybox\nARG BASE=/srv\nARG BASE\nWORKDIR ${BASE}/logs\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->target_stage().steps[1].created_by, "ARG BASE");
  EXPECT_EQ(plan->target_stage().steps[2].config().working_dir, "/srv/logs");
}

TEST(Arg, ArgAfterEnvOfTheSameNameWinsForLaterStepsNotTheConfig) {
  BuildOptions options;
  options.build_args = {{"file", "context/foo"}};
  auto plan = Plan(
      "FROM busybox\nARG file\nENV file=env\nCOPY $file /env\nARG file=dflt\nCOPY $file /arg\n"
      "RUN echo $file\n",
      options);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStage& s = plan->target_stage();
  EXPECT_EQ(s.steps[2].sources, Strings{"env"});
  EXPECT_EQ(s.steps[4].sources, Strings{"context/foo"});
  EXPECT_EQ(s.steps[5].config().GetEnv("file"), "env");
}

// --- Predefined args: TARGETSTAGE, the OS versions, and the proxies.

TEST(PredefinedArg, TargetStageIsTheTargetOrTheLastStageOrDefault) {
  auto value = [](const std::string& text, const std::string& target) {
    BuildOptions options;
    options.target = target;
    auto plan = Plan(text, options);
    if (!plan.ok()) return plan.status().ToString();
    return plan->target_stage().steps.back().created_by;
  };
  EXPECT_EQ(value("FROM busybox\nARG TARGETSTAGE\n", ""), "ARG TARGETSTAGE=default");
  EXPECT_EQ(value("FROM busybox AS final\nARG TARGETSTAGE\n", ""), "ARG TARGETSTAGE=final");
  EXPECT_EQ(value("FROM busybox AS Foo\nARG TARGETSTAGE\nFROM busybox\n", "Foo"),
            "ARG TARGETSTAGE=Foo");
  EXPECT_EQ(value("FROM busybox\nARG TARGETOSVERSION\n", ""), "ARG TARGETOSVERSION=");
  // Not in the environment before its ARG.
  auto plan = Plan("FROM busybox\nRUN echo $TARGETSTAGE\n");
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->target_stage().steps[0].created_by, "RUN /bin/sh -c echo $TARGETSTAGE # buildkit");
  for (const std::string& e : plan->target_stage().steps[0].env) {
    EXPECT_NE(e.rfind("TARGETSTAGE=", 0), 0u) << e;
  }
}

TEST(PredefinedArg, ProxyReachesRunInBothCasesAndStaysOutOfHistory) {
  BuildOptions options;
  options.build_args = {{"http_proxy", "hp"}, {"No_Proxy", "np"}};
  auto plan = Plan("FROM busybox\nRUN env\n", options);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStep& run = plan->target_stage().steps[0];
  EXPECT_EQ(run.env, (Strings{"PATH=/bin", "HTTP_PROXY=hp", "http_proxy=hp", "NO_PROXY=np",
                              "no_proxy=np"}));
  EXPECT_EQ(run.created_by, "RUN /bin/sh -c env # buildkit");
}

// --- `# syntax=`: only the built-in frontend.

TEST(SyntaxDirective, OnlyTheBuiltInFrontendIsAccepted) {
  for (const char* ok : {"docker/dockerfile:1", "docker/dockerfile:1.4", "docker/dockerfile:1.18.0",
                         "docker.io/docker/dockerfile:1", "docker/dockerfile", "docker/dockerfile:1-labs",
                         "docker/dockerfile:1.7-labs",
                         "docker/dockerfile:1@sha256:"
                         "9857836c9ee4268391bb5b09f9f157f3c91bb15821bb77969642813b0d00518d"}) {
    EXPECT_EQ(ErrorOf(std::string("# syntax=") + ok + "\nFROM busybox\n"), "(built)") << ok;
  }
  for (const char* bad : {"foobar", "docker/dockerfile:1.19", "docker/dockerfile:2",
                          "docker/dockerfile-upstream:master", "docker/dockerfile:1.x",
                          "example.com/docker/dockerfile:1", "docker/dockerfile:1.2.3.4"}) {
    std::string err = ErrorOf(std::string("# syntax=") + bad + "\nFROM busybox\n");
    EXPECT_EQ(err.rfind(std::string("Dockerfile:1: # syntax=") + bad +
                            ": stagefarm cannot run the frontend image \"",
                        0),
              0u)
        << err;
  }
  // Refused before the Dockerfile's own errors, as BuildKit hands it over before parsing.
  EXPECT_NE(ErrorOf("#syntax=foobar\nfrom busybox\nBOGUS\n").find("foobar"), std::string::npos);
  BuildOptions options;
  options.build_args = {{"BUILDKIT_SYNTAX", "foobar"}};
  EXPECT_EQ(ErrorOf("# syntax=docker/dockerfile:1\nFROM busybox\n", options).rfind(
                "--build-arg BUILDKIT_SYNTAX=foobar: stagefarm cannot run", 0),
            0u);
}

// --- RUN with one heredoc starting with #!: a file at /dev/pipes, run by path.

TEST(RunHeredoc, ShebangScriptRunsAsAFile) {
  auto plan = Plan(
      "FROM busybox\n"
      "RUN <<EOF\n#!/bin/awk -f\nBEGIN { print \"$HOME\" }\nEOF\n"
      "RUN <<-EOF\n\techo plain\nEOF\n"
      "RUN <<EOF sh\n#!/bin/sh\necho x\nEOF\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStage& s = plan->target_stage();
  EXPECT_EQ(s.steps[0].argv, (Strings{"/bin/sh", "-c", "/dev/pipes/EOF"}));
  EXPECT_EQ(s.steps[0].created_by, "RUN /bin/sh -c /dev/pipes/EOF # buildkit");
  ASSERT_EQ(s.steps[0].heredocs.size(), 1u);
  EXPECT_EQ(s.steps[0].heredocs[0].content, "#!/bin/awk -f\nBEGIN { print \"$HOME\" }\n");
  EXPECT_EQ(coordinator::MakeStepSpec(s.steps[0], "k", BuildRequest{}, {}).heredocs.size(), 1u);
  // Without #!, the body is the shell command; with more words, the shell reads the heredoc.
  EXPECT_EQ(s.steps[1].argv, (Strings{"/bin/sh", "-c", "echo plain\n"}));
  EXPECT_TRUE(s.steps[1].heredocs.empty());
  EXPECT_EQ(s.steps[2].argv, (Strings{"/bin/sh", "-c", "<<EOF sh\n#!/bin/sh\necho x\nEOF"}));
  EXPECT_TRUE(s.steps[2].heredocs.empty());
  EXPECT_TRUE(coordinator::MakeStepSpec(s.steps[2], "k", BuildRequest{}, {}).heredocs.empty());
}

// --- COPY/ADD --chmod: octal up to 07777 or symbolic, refused with BuildKit's message otherwise.

TEST(CopyChmod, SymbolicAcceptedBadRefusedNamingIt) {
  auto plan = Plan("FROM busybox\nCOPY --chmod=go-w a /a\nADD --chmod=u=rw,g=r,o=r b /b\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->target_stage().steps[0].chmod, "go-w");
  EXPECT_EQ(plan->target_stage().steps[0].created_by, "COPY --chmod=go-w a /a # buildkit");
  EXPECT_EQ(ErrorOf("FROM busybox\nCOPY --chmod=10000 a /a\n"),
            "Dockerfile:2: COPY --chmod=10000 a /a: invalid chmod parameter: '10000'. it should be "
            "octal string and between 0 and 07777");
  EXPECT_EQ(ErrorOf("FROM busybox\nARG M=u+q\nCOPY --chmod=$M a /a\n"),
            "Dockerfile:3: COPY --chmod=$M a /a: invalid chmod parameter: 'u+q'");
}

}  // namespace
}  // namespace stagefarm::frontend
