#include "stagefarm/common/build_plan.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cctype>
#include <map>
#include <string>
#include <vector>

namespace stagefarm::frontend {
namespace {

using Strings = std::vector<std::string>;

// Images known to the fake resolver; every lookup is recorded.
struct FakeImages {
  std::map<std::string, ImageConfig> images;
  std::vector<std::string> asked;
  ImageResolver resolver() {
    return [this](const std::string& ref) -> StatusOr<ImageConfig> {
      asked.push_back(ref);
      auto it = images.find(ref);
      if (it == images.end()) return NotFoundError("no image " + ref);
      return it->second;
    };
  }
};

FakeImages DefaultImages() {
  FakeImages f;
  ImageConfig alpine;
  alpine.env = {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"};
  alpine.cmd = {"/bin/sh"};
  f.images["alpine"] = alpine;
  f.images["golang:1.22"] = alpine;
  f.images["busybox"] = ImageConfig{};
  return f;
}

StatusOr<BuildPlan> Plan(const std::string& text, BuildOptions options = {}) {
  FakeImages images = DefaultImages();
  return Resolve(text, options, images.resolver());
}

const ResolvedStep& Step(const BuildPlan& plan, int stage_pos, int step) {
  return plan.stages.at(stage_pos).steps.at(step);
}

TEST(Resolve, GlobalArgUsableInFromButNotInStageUntilRedeclared) {
  auto plan = Plan(
      "ARG TAG=1.22\n"
      "FROM golang:${TAG}\n"
      "RUN echo $TAG\n"
      "ENV A=x${TAG}\n"
      "ARG TAG\n"
      "ENV B=y${TAG}\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStage& s = plan->target_stage();
  EXPECT_EQ(s.base, "golang:1.22");
  EXPECT_EQ(s.steps[1].config().GetEnv("A"), "x");
  EXPECT_EQ(s.steps[3].config().GetEnv("B"), "y1.22");
  EXPECT_EQ(plan->external_images, Strings{"golang:1.22"});
}

TEST(Resolve, BuildArgOverridesDefaultAndEnvWinsOverArg) {
  BuildOptions options;
  options.build_args = {{"V", "fromcli"}, {"W", "w1"}};
  auto plan = Plan(
      "FROM alpine\n"
      "ARG V=default\n"
      "ARG W\n"
      "RUN echo $V\n"
      "ENV V=fromenv\n"
      "RUN echo $V\n"
      "LABEL v=$V w=$W\n",
      options);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStage& s = plan->target_stage();
  EXPECT_EQ(s.steps[2].env,
            (Strings{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "V=fromcli", "W=w1"}));
  EXPECT_EQ(s.steps[2].created_by, "RUN |2 V=fromcli W=w1 /bin/sh -c echo $V # buildkit");
  // In the order they were last set, as BuildKit's state env lists them.
  EXPECT_EQ(s.steps[4].env,
            (Strings{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "W=w1", "V=fromenv"}));
  EXPECT_EQ(s.steps[5].config().labels.at("v"), "fromenv");
  EXPECT_EQ(s.steps[5].config().labels.at("w"), "w1");
  EXPECT_TRUE(plan->warnings.empty());
}

TEST(Resolve, BuildChecksWarnWithFileAndLine) {
  const std::string text =
      "FROM alpine as Builder\n"
      "MAINTAINER me\n"
      "ENV API_TOKEN x\n"
      "WORKDIR src\n"
      "RUN echo $NOPE\n"
      "COPY a $MISSING/\n"
      "CMD run\n"
      "cmd [\"b\"]\n"
      "RUN a \\\n\n  b\n";
  auto plan = Plan(text);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->warnings,
            (Strings{
                // docker build's order: the parser, parsing, casing, then each instruction built.
                "Dockerfile:11: NoEmptyContinuation: Empty continuation line",
                "Dockerfile:1: StageNameCasing: Stage name 'Builder' should be lowercase",
                "Dockerfile:1: FromAsCasing: 'as' and 'FROM' keywords' casing do not match",
                "Dockerfile:2: MaintainerDeprecated: Maintainer instruction is deprecated in favor "
                "of using label",
                "Dockerfile:8: ConsistentInstructionCasing: Command 'cmd' should match the case "
                "of the command majority (uppercase)",
                "Dockerfile:3: LegacyKeyValueFormat: \"ENV key=value\" should be used instead of "
                "legacy \"ENV key value\" format",
                "Dockerfile:3: SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for "
                "sensitive data (ENV \"API_TOKEN\")",
                "Dockerfile:4: WorkdirRelativePath: Relative workdir \"src\" can have unexpected "
                "results if the base image changes",
                "Dockerfile:6: UndefinedVar: Usage of undefined variable '$MISSING'",
                "Dockerfile:7: JSONArgsRecommended: JSON arguments recommended for CMD to prevent "
                "unintended behavior related to OS signals",
                // Named as the later instruction is written, placed at the earlier one.
                "Dockerfile:7: MultipleInstructionsDisallowed: Multiple cmd instructions should not "
                "be used in the same stage because only the last one will be used",
            }));
  ASSERT_EQ(plan->checks.size(), plan->warnings.size());
  EXPECT_EQ(plan->checks[1].rule, "StageNameCasing");
  EXPECT_EQ(plan->checks[1].line, 1);
  EXPECT_EQ(plan->checks[1].message, "Stage name 'Builder' should be lowercase");
  EXPECT_EQ(plan->checks[1].description, "Stage names should be lowercase");
  EXPECT_EQ(plan->checks[1].url, "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/");
  EXPECT_EQ(plan->checks[3].description,
            "The MAINTAINER instruction is deprecated, use a label instead to define an image "
            "author");
  EXPECT_EQ(plan->checks[10].url,
            "https://docs.docker.com/go/dockerfile/rule/multiple-instructions-disallowed/");

  // skip= names rules exactly as BuildKit spells them (a differently cased name skips nothing);
  // skip=all silences every one.
  auto skipped = Plan("# check=skip=JSONArgsRecommended,maintainerdeprecated\n" + text);
  ASSERT_TRUE(skipped.ok());
  EXPECT_EQ(skipped->warnings.size(), 10u);
  for (const std::string& w : skipped->warnings) {
    EXPECT_EQ(w.find("JSONArgs"), std::string::npos) << w;
  }
  EXPECT_NE(skipped->warnings[3].find("MaintainerDeprecated"), std::string::npos);
  auto all = Plan("# check=skip=all\n" + text);
  ASSERT_TRUE(all.ok());
  EXPECT_TRUE(all->warnings.empty()) << all->warnings[0];

  // error=true: any finding fails the build; none, and it builds.
  auto failed = Plan("# check=error=true\nFROM alpine\nCMD run\n");
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(failed.status().message(),
            "Dockerfile: lint violation found for rules: JSONArgsRecommended (# check=error=true)\n"
            "  Dockerfile:3: JSONArgsRecommended: JSON arguments recommended for CMD to prevent "
            "unintended behavior related to OS signals");
  EXPECT_TRUE(Plan("# check=skip=JSONArgsRecommended;error=true\nFROM alpine\nCMD run\n").ok());
  EXPECT_TRUE(Plan("# check=error=true\nFROM alpine\nCMD [\"run\"]\n").ok());
  BuildOptions via_arg;
  via_arg.build_args = {{"BUILDKIT_DOCKERFILE_CHECK", "error=true"}};
  EXPECT_FALSE(Plan("FROM alpine\nCMD run\n", via_arg).ok());

  auto bad = Plan("# check=error=maybe\nFROM alpine\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().message(),
            "Dockerfile:1: # check=error=maybe: invalid check option \"error=maybe\": error must "
            "be true or false, not \"maybe\"");
}

// linter.ParseLintOptions: Go booleans, an accepted experimental key, parts need "=", and the
// build arg BUILDKIT_DOCKERFILE_CHECK replaces the directive rather than adding to it.
TEST(Resolve, CheckConfigReadAsBuildKitReadsIt) {
  const std::string body = "FROM alpine\nCMD run\n";
  for (const char* yes : {"1", "t", "TRUE", "True"}) {
    EXPECT_FALSE(Plan(std::string("# check=error=") + yes + "\n" + body).ok()) << yes;
  }
  EXPECT_TRUE(Plan("# check=error=0\n" + body).ok());
  EXPECT_FALSE(Plan("# check=error=tRuE\n" + body).ok());  // not a Go boolean: refused
  EXPECT_TRUE(Plan("# check=experimental=all;error=false\n" + body).ok());

  auto no_eq = Plan("# check=skip\n" + body);
  ASSERT_FALSE(no_eq.ok());
  EXPECT_EQ(no_eq.status().message(), "Dockerfile:1: # check=skip: invalid check option \"skip\"");
  auto bad_key = Plan("# check=Skip=all\n" + body);
  ASSERT_FALSE(bad_key.ok());
  EXPECT_NE(bad_key.status().message().find("invalid check option \"Skip\""), std::string::npos);

  BuildOptions via_arg;
  via_arg.build_args = {{"BUILDKIT_DOCKERFILE_CHECK", "skip=MaintainerDeprecated"}};
  auto replaced = Plan("# check=error=true\nFROM alpine\nCMD run\nMAINTAINER me\n", via_arg);
  ASSERT_TRUE(replaced.ok()) << replaced.status().ToString();
  EXPECT_EQ(replaced->checks.size(), 1u);
  EXPECT_EQ(replaced->checks[0].rule, "JSONArgsRecommended");
}

// A `# check=skip=...` comment right above an instruction skips rules for that instruction only.
TEST(Resolve, CheckCommentAboveAnInstructionSkipsItsFindings) {
  auto plan = Plan(
      "FROM alpine\n"
      "# about the maintainer\n"
      "# check=skip=MaintainerDeprecated\n"
      "MAINTAINER me\n"
      "MAINTAINER you\n"
      "# check=skip=all\n"
      "ENV A b\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->warnings, Strings{"Dockerfile:5: MaintainerDeprecated: Maintainer instruction is "
                                    "deprecated in favor of using label"});
}

// ConsistentInstructionCasing counts and checks the stages' instructions, not the global ARGs.
TEST(Resolve, InstructionCasingLeavesGlobalArgsOut) {
  auto plan = Plan("arg V=1\narg W=2\nFROM alpine\nRUN x\n");
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(plan->warnings.empty()) << plan->warnings[0];
  auto lower = Plan("ARG V=1\nfrom alpine\nRUN x\nrun y\n");
  ASSERT_TRUE(lower.ok());
  // "from" and "run" against "RUN"; counting the global ARG would make a tie, which is uppercase.
  EXPECT_EQ(lower->warnings, Strings{"Dockerfile:3: ConsistentInstructionCasing: Command 'RUN' "
                                     "should match the case of the command majority (lowercase)"});
}

// The checks docker build runs while building a stage: only for the stages the target needs,
// named as the instruction is written.
TEST(Resolve, BuildTimeChecksOnlyForStagesBuiltAndNamedAsWritten) {
  auto plan = Plan(
      "FROM alpine AS unused\n"
      "CMD a\n"
      "CMD b\n"
      "ENV K v\n"
      "FROM alpine\n"
      "cmd a\n"
      "Label k v\n");
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->warnings,
            (Strings{"Dockerfile:6: ConsistentInstructionCasing: Command 'cmd' should match the "
                     "case of the command majority (uppercase)",
                     "Dockerfile:7: ConsistentInstructionCasing: Command 'Label' should match the "
                     "case of the command majority (uppercase)",
                     "Dockerfile:6: JSONArgsRecommended: JSON arguments recommended for cmd to "
                     "prevent unintended behavior related to OS signals",
                     "Dockerfile:7: LegacyKeyValueFormat: \"Label key=value\" should be used "
                     "instead of legacy \"Label key value\" format"}));
}

// JSONArgsRecommended: the shell form is fine once a SHELL is set, here or in the base image.
TEST(Resolve, ShellFormAfterShellIsNotReported) {
  FakeImages images = DefaultImages();
  images.images["pwsh"].shell = {"pwsh", "-c"};
  auto plan = Resolve(
      "FROM alpine AS a\nSHELL [\"/bin/bash\", \"-c\"]\nENTRYPOINT run\n"
      "FROM a\nCMD run\nFROM pwsh\nCOPY --from=a / /\nCMD run\n",
      {}, images.resolver());
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_TRUE(plan->warnings.empty()) << plan->warnings[0];
}

// SecretsUsedInArgOrEnv: "public", "file" and "version" words say it is no secret; global ARGs
// are not checked, stage ARGs are.
TEST(Resolve, SecretNamesAsBuildKitTellsThem) {
  auto plan = Plan(
      "ARG GLOBAL_TOKEN=x\n"
      "FROM alpine\n"
      "ARG PUBLIC_KEY TOKEN_FILE AUTH_VERSION DB_password\n"
      "ENV GH_TOKEN=1 MONKEY=2\n");
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->warnings,
            (Strings{"Dockerfile:3: SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for "
                     "sensitive data (ARG \"DB_password\")",
                     "Dockerfile:4: SecretsUsedInArgOrEnv: Do not use ARG or ENV instructions for "
                     "sensitive data (ENV \"GH_TOKEN\")"}));
}

// WorkdirRelativePath: the base image's working directory does not count; a WORKDIR of the stage
// this one is built FROM does, and only the first relative WORKDIR is reported.
TEST(Resolve, RelativeWorkdirIgnoresTheBaseImageWorkdir) {
  FakeImages images = DefaultImages();
  images.images["golang"].working_dir = "/go";
  auto plan = Resolve(
      "FROM golang AS a\nWORKDIR src\nWORKDIR more\n"
      "FROM golang AS b\nWORKDIR /abs\n"
      "FROM b\nWORKDIR rel\n",
      {}, images.resolver());
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_TRUE(plan->warnings.empty()) << plan->warnings[0];
  BuildOptions target_a;
  target_a.target = "a";
  auto a = Resolve("FROM golang AS a\nWORKDIR src\nWORKDIR more\n", target_a, images.resolver());
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->warnings, Strings{"Dockerfile:2: WorkdirRelativePath: Relative workdir \"src\" can "
                                 "have unexpected results if the base image changes"});
}

// UndefinedVar: an ARG declared without a value is defined; a close name is suggested.
TEST(Resolve, UndefinedVarSkipsDeclaredArgsAndSuggests) {
  auto plan = Plan(
      "FROM alpine AS base\n"
      "ARG NOVALUE\n"
      "FROM base\n"
      "ENV PROJECT=x\n"
      "LABEL a=$NOVALUE b=$PROJCT c=$ZZZ\n");
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->warnings,
            (Strings{"Dockerfile:5: UndefinedVar: Usage of undefined variable '$PROJCT' (did you "
                     "mean $PROJECT?)",
                     "Dockerfile:5: UndefinedVar: Usage of undefined variable '$ZZZ'"}));
}

TEST(Resolve, UnusedBuildArgIsAWarning) {
  BuildOptions options;
  options.build_args = {{"NOBODY", "1"}, {"HTTP_PROXY", "http://p"}};
  auto plan = Plan("FROM alpine\nRUN env\n", options);
  ASSERT_TRUE(plan.ok());
  ASSERT_EQ(plan->warnings.size(), 1u);
  EXPECT_NE(plan->warnings[0].find("NOBODY"), std::string::npos);
  // Proxy args reach RUN without an ARG (in both cases), and stay out of the history.
  const Strings& env = plan->target_stage().steps[0].env;
  EXPECT_EQ(Strings(env.end() - 2, env.end()),
            (Strings{"HTTP_PROXY=http://p", "http_proxy=http://p"}));
  EXPECT_EQ(plan->target_stage().steps[0].created_by, "RUN /bin/sh -c env # buildkit");
}

TEST(Resolve, BaseImageEnvExpandsInInstructions) {
  auto plan = Plan(
      "FROM alpine\n"
      "ENV PATH=/opt/bin:$PATH GO=${LANG:-none}\n"
      "WORKDIR /src\n"
      "WORKDIR app/../lib\n"
      "USER ${LANG}\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStage& s = plan->target_stage();
  EXPECT_EQ(s.steps[0].config().GetEnv("PATH"), "/opt/bin:/usr/local/bin:/usr/bin:/bin");
  EXPECT_EQ(s.steps[0].config().GetEnv("GO"), "C.UTF-8");
  EXPECT_EQ(s.steps[0].created_by, "ENV PATH=/opt/bin:/usr/local/bin:/usr/bin:/bin GO=C.UTF-8");
  EXPECT_EQ(s.steps[2].config().working_dir, "/src/lib");
  EXPECT_EQ(s.steps[2].created_by, "WORKDIR /src/lib");
  EXPECT_EQ(s.steps[3].config().user, "C.UTF-8");
}

TEST(Resolve, WorkdirIsAStepThatMakesItsDirectory) {
  // As BuildKit: WORKDIR is a step of its own with a layer (mkdir -p as the USER of the time),
  // relative to the previous WORKDIR and expanded; WORKDIR / changes nothing on disk.
  auto plan = Plan(
      "FROM alpine\n"
      "ARG SUB=lib\n"
      "USER 1000\n"
      "WORKDIR /a/b\n"
      "WORKDIR ./$SUB/../c\n"
      "WORKDIR /\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStage& s = plan->target_stage();
  ASSERT_EQ(s.steps.size(), 5u);
  EXPECT_EQ(s.steps[2].kind, StepKind::kWorkdir);
  EXPECT_TRUE(s.steps[2].makes_layer());
  EXPECT_EQ(s.steps[2].config().working_dir, "/a/b");
  EXPECT_EQ(s.steps[2].config().user, "1000");
  EXPECT_EQ(s.steps[2].text, "WORKDIR /a/b");
  EXPECT_EQ(s.steps[2].line, 4);
  EXPECT_TRUE(s.steps[3].makes_layer());
  EXPECT_EQ(s.steps[3].config().working_dir, "/a/b/c");
  EXPECT_EQ(s.steps[3].created_by, "WORKDIR /a/b/c");
  EXPECT_EQ(s.steps[4].kind, StepKind::kWorkdir);
  EXPECT_FALSE(s.steps[4].makes_layer());
  EXPECT_EQ(s.steps[4].created_by, "WORKDIR /");
  EXPECT_FALSE(s.steps[1].makes_layer());  // USER
}

TEST(Resolve, ScratchGetsDefaultPathAndNeverReachesResolver) {
  FakeImages images = DefaultImages();
  auto plan = Resolve("FROM scratch\nCOPY a /a\n", {}, images.resolver());
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(images.asked.empty());
  EXPECT_EQ(plan->target_stage().base_config.env,
            Strings{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"});
  EXPECT_TRUE(plan->external_images.empty());
}

// docker build's "scratch" is exactly that word; other spellings are image names, and an image's
// repository must be lowercase. Before, "FROM SCRATCH" counted as scratch here but not in the
// coordinator, which then looked up an image never resolved and died.
TEST(Resolve, ScratchIsLowercaseOnlyAndUppercaseRepositoriesAreRefused) {
  FakeImages images = DefaultImages();
  auto plan = Resolve("FROM SCRATCH\nCOPY a /a\n", {}, images.resolver());
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().message(),
            "Dockerfile:1: FROM SCRATCH: invalid reference format: repository name (SCRATCH) must "
            "be lowercase");
  EXPECT_TRUE(images.asked.empty());

  for (std::string ref : {"localhost:5000/Team/app:v1", "Alpine@sha256:abc"}) {
    plan = Resolve("FROM " + ref + "\n", {}, images.resolver());
    ASSERT_FALSE(plan.ok()) << ref;
    EXPECT_NE(plan.status().message().find("must be lowercase"), std::string::npos) << ref;
  }
  // A registry host and a tag may have capitals.
  plan = Resolve("FROM Registry.Example:5000/team/app:V1\n", {}, images.resolver());
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().message().find("must be lowercase"), std::string::npos)
      << plan.status().message();
}

TEST(Resolve, RunArgvForShellExecAndShellInstruction) {
  auto plan = Plan(
      "FROM alpine\n"
      "RUN make \\\n  all\n"
      "RUN [\"echo\", \"hi there\"]\n"
      "SHELL [\"/bin/bash\", \"-eo\", \"pipefail\", \"-c\"]\n"
      "RUN make\n"
      "CMD run me\n"
      "ENTRYPOINT [\"tini\"]\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStage& s = plan->target_stage();
  EXPECT_EQ(s.steps[0].argv, (Strings{"/bin/sh", "-c", "make   all"}));
  EXPECT_EQ(s.steps[0].text, "RUN make   all");
  EXPECT_EQ(s.steps[0].line, 2);
  EXPECT_EQ(s.steps[1].argv, (Strings{"echo", "hi there"}));
  EXPECT_EQ(s.steps[1].created_by, "RUN echo hi there # buildkit");
  EXPECT_EQ(s.steps[2].created_by, "SHELL [/bin/bash -eo pipefail -c]");
  EXPECT_EQ(s.steps[3].argv, (Strings{"/bin/bash", "-eo", "pipefail", "-c", "make"}));
  EXPECT_EQ(s.steps[4].config().cmd, (Strings{"/bin/bash", "-eo", "pipefail", "-c", "run me"}));
  EXPECT_EQ(s.steps[4].created_by, "CMD [\"/bin/bash\" \"-eo\" \"pipefail\" \"-c\" \"run me\"]");
  // CMD set in this stage survives ENTRYPOINT.
  EXPECT_EQ(s.steps[5].config().entrypoint, Strings{"tini"});
  EXPECT_EQ(s.steps[5].config().cmd.size(), 5u);
  EXPECT_TRUE(s.steps[0].makes_layer());
  EXPECT_FALSE(s.steps[2].makes_layer());
}

TEST(Resolve, EntrypointResetsInheritedCmd) {
  auto plan = Plan("FROM alpine\nENTRYPOINT [\"tini\"]\n");
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(plan->target_stage().steps[0].config().cmd.empty());
  EXPECT_EQ(plan->target_stage().steps[0].created_by, "ENTRYPOINT [\"tini\"]");
}

TEST(Resolve, CreatedByStrings) {
  auto plan = Plan(
      "FROM alpine\n"
      "COPY --chown=1:1 a b /dst/\n"
      "EXPOSE 80 53/udp\n"
      "VOLUME /data /logs\n"
      "STOPSIGNAL SIGTERM\n"
      "ARG X=1 Y\n"
      "HEALTHCHECK --interval=30s --retries=3 CMD curl -f localhost\n"
      "ONBUILD RUN echo later\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStage& s = plan->target_stage();
  EXPECT_EQ(s.steps[0].created_by, "COPY --chown=1:1 a b /dst/ # buildkit");
  EXPECT_EQ(s.steps[0].sources, (Strings{"a", "b"}));
  EXPECT_EQ(s.steps[1].created_by, "EXPOSE [53/udp 80/tcp]");
  EXPECT_EQ(s.steps[1].config().exposed_ports, (std::set<std::string>{"80/tcp", "53/udp"}));
  EXPECT_EQ(s.steps[2].created_by, "VOLUME [/data /logs]");
  EXPECT_EQ(s.steps[3].created_by, "STOPSIGNAL SIGTERM");
  EXPECT_EQ(s.steps[4].created_by, "ARG X=1 Y");
  EXPECT_EQ(s.steps[5].created_by,
            "HEALTHCHECK &{[\"CMD-SHELL\" \"curl -f localhost\"] \"30s\" \"0s\" \"0s\" "
            "\"0s\" '\\x03'}");
  EXPECT_EQ(s.steps[6].config().on_build, Strings{"RUN echo later"});
}

TEST(Resolve, StagesInheritPruneAndOrderByDeps) {
  auto plan = Plan(
      "FROM golang:1.22 AS Build\n"  // 0
      "ENV CGO_ENABLED=0\n"
      "WORKDIR /src\n"
      "FROM alpine AS unused\n"  // 1
      "RUN exit 1\n"
      "FROM busybox AS assets\n"  // 2
      "RUN mkdir /assets\n"
      "FROM build AS test\n"  // 3
      "RUN go test\n"
      "FROM alpine\n"  // 4
      "COPY --from=BUILD /src/app /app\n"
      "COPY --from=2 /assets /assets\n"
      "RUN --mount=type=bind,from=test,target=/t true\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  std::vector<int> order;
  for (const auto& s : plan->stages) order.push_back(s.index);
  EXPECT_EQ(order, (std::vector<int>{0, 2, 3, 4}));
  EXPECT_EQ(plan->target, 3);
  const ResolvedStage& test = plan->stages[plan->PositionOf(3)];
  EXPECT_EQ(test.base_stage, 0);
  EXPECT_EQ(test.base_config.GetEnv("CGO_ENABLED"), "0");
  EXPECT_EQ(test.base_config.working_dir, "/src");
  EXPECT_EQ(test.steps[0].config().working_dir, "/src");
  const ResolvedStage& last = plan->target_stage();
  EXPECT_EQ(last.display_name, "stage-4");
  EXPECT_EQ(last.deps, (std::vector<int>{0, 2, 3}));
  EXPECT_EQ(last.steps[0].from_stage, 0);
  EXPECT_EQ(last.steps[0].created_by, "COPY /src/app /app # buildkit");
  EXPECT_EQ(last.steps[1].from_stage, 2);
  EXPECT_EQ(last.steps[2].mounts.at(0).from_stage, 3);
  EXPECT_TRUE(last.steps[2].mounts.at(0).readonly);
  EXPECT_EQ(plan->stages[0].name, "build");
}

TEST(Resolve, TargetPrunesLaterStages) {
  BuildOptions options;
  options.target = "Base";
  auto plan = Plan("FROM alpine AS base\nRUN a\nFROM nothere AS other\nRUN b\n", options);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->stages.size(), 1u);
  EXPECT_EQ(plan->target, 0);
  EXPECT_EQ(plan->external_images, Strings{"alpine"});
}

TEST(Resolve, CopyFromImageIsExternal) {
  auto plan = Plan("FROM alpine\nCOPY --from=busybox /bin/sh /sh\n");
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->target_stage().steps[0].from_image, "busybox");
  EXPECT_EQ(plan->target_stage().steps[0].from_stage, -1);
  EXPECT_EQ(plan->external_images, (Strings{"alpine", "busybox"}));
}

TEST(Resolve, PlatformArgsAvailableWhenDeclared) {
  BuildOptions options;
  options.platform = "linux/arm64/v8";
  auto plan = Plan(
      "FROM --platform=$BUILDPLATFORM alpine\n"
      "ENV BEFORE=x$TARGETARCH\n"
      "ARG TARGETARCH TARGETVARIANT\n"
      "ENV AFTER=$TARGETARCH/$TARGETVARIANT\n",
      options);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStage& s = plan->target_stage();
  EXPECT_EQ(s.platform, "linux/arm64/v8");
  EXPECT_EQ(s.steps[0].config().GetEnv("BEFORE"), "x");
  EXPECT_EQ(s.steps[2].config().GetEnv("AFTER"), "arm64/v8");
}

TEST(Resolve, HeredocCopyAndRun) {
  auto plan = Plan(
      "FROM alpine\n"
      "ENV NAME=world\n"
      "COPY <<EOF <<'RAW' /etc/\n"
      "hello $NAME\n"
      "EOF\n"
      "keep $NAME\n"
      "RAW\n"
      "RUN <<EOF\n"
      "echo one\n"
      "echo two\n"
      "EOF\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStage& s = plan->target_stage();
  ASSERT_EQ(s.steps[1].heredocs.size(), 2u);
  EXPECT_EQ(s.steps[1].heredocs[0].content, "hello world\n");
  EXPECT_EQ(s.steps[1].heredocs[1].content, "keep $NAME\n");
  EXPECT_EQ(s.steps[1].created_by, "COPY <<EOF <<RAW /etc/ # buildkit");
  EXPECT_EQ(s.steps[2].argv, (Strings{"/bin/sh", "-c", "echo one\necho two\n"}));
  EXPECT_EQ(s.steps[2].line, 8);
}

TEST(Resolve, CanonicalChangesWithExpandedArgsAndEnv) {
  BuildOptions a, b;
  a.build_args = {{"V", "1"}};
  b.build_args = {{"V", "2"}};
  const std::string text = "FROM alpine\nARG V\nRUN make\nCOPY x /y\n";
  auto pa = Plan(text, a);
  auto pb = Plan(text, b);
  ASSERT_TRUE(pa.ok() && pb.ok());
  EXPECT_NE(Step(*pa, 0, 1).canonical, Step(*pb, 0, 1).canonical);  // RUN sees V
  EXPECT_EQ(Step(*pa, 0, 2).canonical, Step(*pb, 0, 2).canonical);  // COPY does not
}

TEST(Resolve, CanonicalEscapesLongStringsAsNlohmannJsonDoes) {
  // Long values take the word-at-a-time path of the escaper: a character that needs escaping (or
  // a multi-byte one) at every offset of an 8-byte word must still come out as dump() writes it.
  std::string env;
  const std::vector<std::string> specials = {"\\\"", "\\\\", "\xc3\xa9", "\x7f", "\xe2\x82\xac"};
  for (size_t offset = 0; offset < 9; ++offset) {
    for (size_t k = 0; k < specials.size(); ++k) {
      env += " V" + std::to_string(offset) + "_" + std::to_string(k) + "=\"" +
             std::string(offset, 'x') + specials[k] + "yyyyyyyyyyyyyyyy\"";
    }
  }
  auto plan = Plan("FROM alpine\nENV" + env +
                   "\nRUN --mount=type=cache,target=/a/very/long/cache/"
                   "target/\xc3\xa9/path echo \"$V3_1\" '\\t\\n' \"$V8_4\"\nLABEL k=\"" +
                   std::string(40, 'z') + "\\\"\"\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  for (const ResolvedStep& step : plan->target_stage().steps) {
    nlohmann::json parsed = nlohmann::json::parse(step.canonical);
    EXPECT_EQ(parsed.dump(), step.canonical);
  }
}

TEST(Resolve, CanonicalIsExactlyWhatNlohmannJsonDumps) {
  // The canonical form is written without a JSON tree; it must stay the sorted-key dump.
  auto plan = Plan(
      "FROM alpine\n"
      "ENV CTRL=\"a\\tb\" UNI=caf\xc3\xa9\\\"q\\\\ E=\x7f\n"
      "ARG X=\"\x01\"\n"
      "RUN --mount=type=cache,target=/c echo \"$CTRL\" $UNI $X \u00e9\n"
      "COPY --chown=1:1 a b /dst/\n"
      "EXPOSE 80\nLABEL k=v\nHEALTHCHECK --interval=5s CMD true\nWORKDIR sub\nUSER u\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  int runs = 0;
  for (const ResolvedStep& step : plan->target_stage().steps) {
    nlohmann::json parsed = nlohmann::json::parse(step.canonical);
    EXPECT_EQ(parsed.dump(), step.canonical);
    runs += step.kind == StepKind::kRun;
    if (step.kind == StepKind::kRun) {
      EXPECT_EQ(parsed["env"].get<Strings>(), step.env);
      EXPECT_EQ(parsed["argv"].get<Strings>(), step.argv);
    }
  }
  EXPECT_EQ(runs, 1);
}

TEST(Resolve, StepsThatKeepTheConfigShareIt) {
  auto plan = Plan("FROM alpine\nENV A=1\nRUN a\nCOPY x /y\nENV B=2\nRUN b\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStage& s = plan->target_stage();
  EXPECT_EQ(&s.steps[0].config(), &s.steps[1].config());
  EXPECT_EQ(&s.steps[1].config(), &s.steps[2].config());
  EXPECT_NE(&s.steps[2].config(), &s.steps[3].config());
  EXPECT_EQ(s.steps[2].config().GetEnv("B"), std::nullopt);
  EXPECT_EQ(s.steps[4].config().GetEnv("B"), "2");
  // Writing through one step copies first: the others keep theirs.
  ResolvedStep copy = s.steps[1];
  copy.mutable_config().user = "changed";
  EXPECT_EQ(s.steps[1].config().user, "");
  EXPECT_EQ(copy.config().user, "changed");
  EXPECT_EQ(ResolvedStep().config(), ImageConfig());
}

TEST(Resolve, ErrorsNameFileLineAndQuoteTheInstruction) {
  struct Case {
    std::string text;
    std::string error;  // the whole message, or its start when it ends in "..."
  } cases[] = {
      {"FROM alpine\nCOPY a b\n\n\n\n\nCOPY --frm=x a /b\n",
       "Dockerfile:7: COPY --frm=x a /b: unknown flag --frm"},
      {"FROM alpine\nBOGUS x\n", "Dockerfile:2: BOGUS x: unknown instruction: BOGUS"},
      {"RUN x\nFROM alpine\n", "Dockerfile:1: RUN x: no build stage in current context"},
      {"FROM alpine\nRUN --network=wifi x\n",
       "Dockerfile:2: RUN --network=wifi x: unsupported network mode \"wifi\""},
      {"FROM alpine\nCOPY --from=7 a b\n", "Dockerfile:2: COPY --from=7 a b: invalid stage index 7"},
      {"FROM alpine\nENV A=${B?required}\n", "Dockerfile:2: ENV A=${B?required}: failed to process..."},
      {"FROM nosuchimage\n",
       "Dockerfile:1: FROM nosuchimage: no stage or image named \"nosuchimage\": no image "
       "nosuchimage"},
      // A long instruction is quoted up to 60 bytes.
      {"FROM alpine\nRUN --network=bad " + std::string(100, 'x') + "\n",
       "Dockerfile:2: RUN --network=bad " + std::string(39, 'x') + "...: unsupported network..."},
      {"FROM alpine AS build\nFROM alpine\n\nCOPY --from=biuld a b\n",
       "Dockerfile:4: COPY --from=biuld: no stage or image named \"biuld\" (did you mean "
       "\"build\"?)"},
      {"FROM alpine AS build\nRUN --mount=from=buidl,target=/x true\n",
       "Dockerfile:2: RUN --mount=from=buidl: no stage or image named \"buidl\": no image buidl"},
      {"FROM alpine\nSTOPSIGNAL SIGNOPE\n", "Dockerfile:2: STOPSIGNAL SIGNOPE: Invalid signal: SIGNOPE"},
      {"FROM alpine\nHEALTHCHECK --interval=1x CMD true\n",
       "Dockerfile:2: HEALTHCHECK --interval=1x CMD true: time: invalid duration \"1x\""},
      {"FROM alpine\nEXPOSE 80/xyz\n", "Dockerfile:2: EXPOSE 80/xyz: invalid proto: xyz"},
      {"FROM alpine\nWORKDIR\n", "Dockerfile:2: WORKDIR: WORKDIR requires exactly one argument"},
      {"FROM alpine\nRUM make\n", "Dockerfile:2: RUM make: unknown instruction: RUM (did you mean RUN?)"},
      {"FROM alpine\nENV A\n", "Dockerfile:2: ENV A: ENV must have two arguments"},
      // Lower-case keywords are quoted in upper case.
      {"from alpine\ncopy --from=nope a b\n",
       "Dockerfile:2: COPY --from=nope: no stage or image named \"nope\": no image nope"},
  };
  for (const Case& c : cases) {
    auto plan = Plan(c.text);
    ASSERT_FALSE(plan.ok()) << c.text;
    std::string msg = plan.status().message();
    if (c.error.size() > 3 && c.error.substr(c.error.size() - 3) == "...") {
      std::string start = c.error.substr(0, c.error.size() - 3);
      EXPECT_EQ(msg.substr(0, start.size()), start) << c.text;
    } else {
      EXPECT_EQ(msg, c.error) << c.text;
    }
  }
}

TEST(Resolve, UnknownFromSuggestsTheNearestStage) {
  FakeImages images = DefaultImages();
  auto plan = Resolve(
      "FROM golang:1.22 AS build\n"
      "RUN make\n"
      "FROM alpine AS assets\n"
      "FROM alpine\n"
      "COPY --from=assets /a /a\n"
      "\n"
      "COPY --from=biuld /src/app /app\n",
      {}, images.resolver());
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(plan.status().message(),
            "Dockerfile:7: COPY --from=biuld: no stage or image named \"biuld\" (did you mean "
            "\"build\"?)");
  // The resolver was asked: an image of that name would have been fine.
  EXPECT_EQ(images.asked.back(), "biuld");

  // FROM and RUN --mount from= suggest too; only stages before the current one are offered.
  auto from = Plan("FROM alpine AS builder\nFROM buidler\n");
  ASSERT_FALSE(from.ok());
  EXPECT_EQ(from.status().message(),
            "Dockerfile:2: FROM buidler: no stage or image named \"buidler\" (did you mean "
            "\"builder\"?)");
  auto mount = Plan("FROM alpine AS deps\nFROM alpine\nRUN --mount=from=dpes,target=/d true\n");
  ASSERT_FALSE(mount.ok());
  EXPECT_EQ(mount.status().message(),
            "Dockerfile:3: RUN --mount=from=dpes: no stage or image named \"dpes\" (did you mean "
            "\"deps\"?)");
  auto far = Plan("FROM alpine AS build\nFROM alpine\nCOPY --from=unrelated a b\n");
  ASSERT_FALSE(far.ok());
  EXPECT_EQ(far.status().message().find("did you mean"), std::string::npos)
      << far.status().message();
  // A resolver failure other than NotFound is passed on with its code.
  auto unavailable = Resolve("FROM alpine\nCOPY --from=remote a b\n", {},
                             [](const std::string& ref) -> StatusOr<ImageConfig> {
                               if (ref == "alpine") return ImageConfig{};
                               return UnavailableError("registry down");
                             });
  ASSERT_FALSE(unavailable.ok());
  EXPECT_EQ(unavailable.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(unavailable.status().message(),
            "Dockerfile:2: COPY --from=remote a b: registry down");
}

TEST(Resolve, UnknownInstructionSuggestsTheNearestOne) {
  struct Case {
    const char* keyword;
    const char* suggestion;  // nullptr: none
  } cases[] = {{"COPPY", "COPY"},         {"RUNN", "RUN"},       {"workdri", "WORKDIR"},
               {"ENTRYPIONT", "ENTRYPOINT"}, {"HEALTCHECK", "HEALTHCHECK"}, {"EVN", "ENV"},
               {"XYZZY", nullptr},        {"FROMAGE", nullptr}};
  for (const Case& c : cases) {
    auto plan = Plan(std::string("FROM alpine\n") + c.keyword + " x\n");
    ASSERT_FALSE(plan.ok()) << c.keyword;
    std::string upper = c.keyword;
    for (char& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    // The quote is upper-cased; the message keeps the keyword as written.
    std::string want = "Dockerfile:2: " + upper + " x: unknown instruction: " + c.keyword;
    if (c.suggestion) want += std::string(" (did you mean ") + c.suggestion + "?)";
    EXPECT_EQ(plan.status().message(), want);
  }
}

TEST(Resolve, StageReferencesMustPointBackwards) {
  struct Case {
    std::string text;
    std::string error;
  } cases[] = {
      // Forward reference.
      {"FROM alpine AS first\nCOPY --from=later x y\nFROM alpine AS later\nFROM first\n",
       "Dockerfile:2: COPY --from=later x y: stage \"later\" is defined later: a stage can only "
       "use stages defined before it"},
      {"FROM alpine\nCOPY --from=1 x y\nFROM alpine\nCOPY --from=0 x y\n",
       "Dockerfile:2: COPY --from=1 x y: stage \"1\" is defined later: a stage can only use stages "
       "defined before it"},
      // A cycle needs a forward edge, so it is refused at that edge.
      {"FROM alpine AS a\nCOPY --from=b x y\nFROM alpine AS b\nCOPY --from=a x y\n",
       "Dockerfile:2: COPY --from=b x y: stage \"b\" is defined later: a stage can only use "
       "stages defined before it"},
      // FROM names only stages before it (BuildKit's addState): a later one is an image.
      {"FROM b AS a\nFROM a AS b\n",
       "Dockerfile:1: FROM b AS a: no stage or image named \"b\": no image b"},
      {"FROM alpine AS a\nRUN --mount=from=a,target=/x true\n",
       "Dockerfile:2: RUN --mount=from=a,target=/x true: stage \"a\" refers to itself: a stage "
       "can only use stages defined before it"},
      {"FROM me AS me\n", "Dockerfile:1: FROM me AS me: no stage or image named \"me\": no image me"},
      {"FROM alpine AS a\nCOPY --from=a x y\n",
       "Dockerfile:2: COPY --from=a x y: stage \"a\" refers to itself: a stage can only use stages "
       "defined before it"},
  };
  for (const Case& c : cases) {
    auto plan = Plan(c.text);
    ASSERT_FALSE(plan.ok()) << c.text;
    EXPECT_EQ(plan.status().message(), c.error) << c.text;
  }
}

TEST(Resolve, TargetKeepsOnlyTheStagesItNeeds) {
  BuildOptions options;
  options.target = "app";
  auto plan = Plan(
      "FROM alpine AS base\n"        // 0: needed through app's FROM
      "FROM golang:1.22 AS tools\n"  // 1: needed through COPY --from
      "FROM busybox AS docs\n"       // 2: not needed
      "FROM base AS app\n"           // 3: the target
      "COPY --from=tools /go /go\n"
      "FROM nothere AS release\n"    // 4: after the target; its image is never asked for
      "COPY --from=app / /\n",
      options);
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  std::vector<int> order;
  for (const auto& s : plan->stages) order.push_back(s.index);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 3}));
  EXPECT_EQ(plan->target_stage().name, "app");
  EXPECT_EQ(plan->external_images, (Strings{"alpine", "golang:1.22"}));

  options.target = "ap";
  auto typo = Plan("FROM alpine AS app\n", options);
  ASSERT_FALSE(typo.ok());
  EXPECT_EQ(typo.status().message(),
            "Dockerfile: target stage \"ap\" could not be found (did you mean \"app\"?)");
}

TEST(Resolve, OnbuildTriggersOfTheBaseRunFirstInFrom) {
  FakeImages images = DefaultImages();
  ImageConfig onbuild_base;
  onbuild_base.on_build = {"ENV FROM_TRIGGER=yes", "RUN echo triggered"};
  images.images["onbuild-base"] = onbuild_base;
  auto plan = Resolve("FROM onbuild-base\nRUN echo mine\n", {}, images.resolver());
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  // The image's triggers, at the FROM line, then the stage's own steps.
  const ResolvedStage& first = plan->target_stage();
  ASSERT_EQ(first.steps.size(), 3u);
  EXPECT_EQ(first.steps[0].kind, StepKind::kEnv);
  EXPECT_EQ(first.steps[0].line, 1);
  EXPECT_EQ(first.steps[1].argv, (Strings{"/bin/sh", "-c", "echo triggered"}));
  EXPECT_EQ(first.steps[1].line, 1);
  EXPECT_EQ(first.steps[1].config().GetEnv("FROM_TRIGGER"), "yes");
  EXPECT_EQ(first.steps[2].argv, (Strings{"/bin/sh", "-c", "echo mine"}));
  // Triggers are consumed: the resulting image does not carry them on.
  EXPECT_TRUE(first.steps.back().config().on_build.empty());

  plan = Resolve(
      "FROM alpine AS parent\n"
      "ONBUILD RUN echo from-parent\n"
      "FROM parent\n"
      "RUN echo child\n",
      {}, images.resolver());
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  // A stage's own ONBUILD runs in the stage built FROM it.
  const ResolvedStage& child = plan->target_stage();
  ASSERT_EQ(child.steps.size(), 2u);
  EXPECT_EQ(child.steps[0].argv, (Strings{"/bin/sh", "-c", "echo from-parent"}));
  EXPECT_EQ(child.steps[0].line, 3);
  EXPECT_EQ(child.steps[1].argv, (Strings{"/bin/sh", "-c", "echo child"}));

  // A bad trigger fails the build at the FROM that runs it, and the error says it came from the
  // base image's ONBUILD.
  struct Case {
    std::string trigger, error;
  } cases[] = {
      {"COPPY a b",
       "Dockerfile:2: FROM bad-onbuild (ONBUILD COPPY a b): unknown instruction: COPPY (did you "
       "mean COPY?)"},
      {"ENV A", "Dockerfile:2: FROM bad-onbuild (ONBUILD ENV A): ENV must have two arguments"},
      {"COPY --from=nope a b",
       "Dockerfile:2: FROM bad-onbuild (ONBUILD COPY --from=nope a b): no stage or image named "
       "\"nope\": no image nope"},
      {"RUN --network=wifi x",
       "Dockerfile:2: FROM bad-onbuild (ONBUILD RUN --network=wifi x): unsupported network mode "
       "\"wifi\""},
      {"FROM alpine",
       "Dockerfile:2: FROM bad-onbuild (ONBUILD FROM alpine): FROM isn't allowed as an ONBUILD "
       "trigger"},
      {"WORKDIR ${X?unset}",
       "Dockerfile:2: FROM bad-onbuild (ONBUILD WORKDIR ${X?unset}): failed to process..."},
  };
  for (const Case& c : cases) {
    ImageConfig bad;
    bad.on_build = {"RUN true", c.trigger};
    images.images["bad-onbuild"] = bad;
    auto failed = Resolve("# a comment\nFROM bad-onbuild\n", {}, images.resolver());
    ASSERT_FALSE(failed.ok()) << c.trigger;
    std::string msg = failed.status().message();
    if (c.error.ends_with("...")) msg = msg.substr(0, c.error.size() - 3) + "...";
    EXPECT_EQ(msg, c.error);
  }
}

TEST(Resolve, InvalidUtf8InAnInstructionIsAnErrorNotACrash) {
  // Found by parser_fuzz: the canonical JSON cannot hold invalid UTF-8.
  auto plan = Plan("FROM alpine\nRUN apt-get\x9d update\n");
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().message(),
            "Dockerfile:2: RUN apt-get\x9d update: the instruction is not valid UTF-8");
  // Invalid bytes in a comment do not matter.
  EXPECT_TRUE(Plan("# caf\xe9\nFROM alpine\nRUN true\n").ok());
}

TEST(Resolve, UnknownTargetIsNotFound) {
  BuildOptions options;
  options.target = "nope";
  auto plan = Plan("FROM alpine\n", options);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().code(), StatusCode::kNotFound);
}

TEST(Resolve, FilenameAppearsInErrors) {
  BuildOptions options;
  options.filename = "build/Dockerfile.dev";
  auto plan = Plan("FROM alpine\nCMD [\"a\", [\"b\"]]\n", options);
  ASSERT_FALSE(plan.ok());
  EXPECT_EQ(plan.status().message().rfind("build/Dockerfile.dev:2: ", 0), 0u)
      << plan.status().message();
}

TEST(Resolve, RunMountsParsed) {
  auto plan = Plan(
      "FROM alpine\n"
      "RUN --mount=type=cache,target=/root/.cache,sharing=locked,uid=1000 "
      "--mount=type=secret,id=tok,env=TOKEN --network=none true\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStep& run = plan->target_stage().steps[0];
  ASSERT_EQ(run.mounts.size(), 2u);
  EXPECT_EQ(run.mounts[0].type, "cache");
  EXPECT_EQ(run.mounts[0].sharing, "locked");
  EXPECT_EQ(run.mounts[0].uid, 1000u);
  EXPECT_FALSE(run.mounts[0].readonly);
  EXPECT_EQ(run.mounts[1].type, "secret");
  EXPECT_EQ(run.mounts[1].env, "TOKEN");
  EXPECT_EQ(run.network, "none");
}

TEST(Resolve, DescribePlanMentionsStagesAndSteps) {
  auto plan = Plan("FROM alpine AS base\nRUN make\n");
  ASSERT_TRUE(plan.ok());
  std::string text = DescribePlan(*plan);
  EXPECT_NE(text.find("stage 0 base (target)"), std::string::npos) << text;
  EXPECT_NE(text.find("RUN /bin/sh -c make # buildkit"), std::string::npos) << text;
}

// BuildKit's ExpandRaw on a COPY heredoc: no quote removal, `\` escapes (`\$` is `$`, `\\` is
// `\`, a `\` at the end of a line joins nothing but goes), variables expand; a quoted heredoc is
// kept as written (BuildKit's testCopyHeredocSpecialSymbols, checked against v0.24).
TEST(Resolve, CopyHeredocBodyExpandsAsBuildKit) {
  auto plan = Plan(
      "FROM alpine\n"
      "ARG X=ex\n"
      "COPY <<EOF <<\"RAW\" /d/\n"
      "\"q\" a\\\n"
      "b \\\\ c \\$ d $X\n"
      "EOF\n"
      "raw $X \\$\n"
      "RAW\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ResolvedStep& copy = Step(*plan, 0, 1);
  ASSERT_EQ(copy.heredocs.size(), 2u);
  EXPECT_EQ(copy.heredocs[0].name, "EOF");
  EXPECT_EQ(copy.heredocs[0].content, "\"q\" a\nb \\ c $ d ex\n");
  EXPECT_EQ(copy.heredocs[1].name, "RAW");
  EXPECT_EQ(copy.heredocs[1].content, "raw $X \\$\n");
  EXPECT_TRUE(copy.sources.empty());
}

TEST(Resolve, ChildStageSeesTheArgsOfTheStageItIsBuiltFrom) {
  auto plan = Plan(
      "FROM alpine AS base\n"
      "ARG V=base\n"
      "ARG U=u\n"
      "FROM base AS child\n"
      "ARG V=\"$V-child\"\n"
      "ARG U\n"
      "RUN echo $V $U\n"
      "FROM child\n"
      "RUN echo $V\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  ASSERT_EQ(plan->stages.size(), 3u);
  const ResolvedStep& arg = Step(*plan, 1, 0);
  EXPECT_EQ(arg.created_by, "ARG V=base-child");
  const ResolvedStep& run = Step(*plan, 1, 2);
  EXPECT_EQ(run.created_by, "RUN |2 V=base-child U=u /bin/sh -c echo $V $U # buildkit");
  EXPECT_NE(std::find(run.env.begin(), run.env.end(), "V=base-child"), run.env.end());
  EXPECT_NE(std::find(run.env.begin(), run.env.end(), "U=u"), run.env.end());
  const ResolvedStep& grand = Step(*plan, 2, 0);
  EXPECT_EQ(grand.created_by, "RUN |2 V=base-child U=u /bin/sh -c echo $V # buildkit");
  EXPECT_TRUE(plan->stages[2].base_config.GetEnv("V") == std::nullopt) << "args are not ENV";
}

// BuildKit keeps ENV and ARG values in one environment where the later wins; a stage built FROM
// another sets its image's ENV again over what it inherits (checked against v0.24).
TEST(Resolve, TheLaterOfEnvAndArgWinsAndAChildStageTakesTheEnv) {
  auto plan = Plan(
      "FROM alpine AS base\n"
      "ENV P=env\n"
      "ARG P=arg\n"
      "ARG Q=arg\n"
      "ENV Q=env\n"
      "RUN echo $P $Q\n"
      "FROM base\n"
      "RUN echo $P $Q\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Step(*plan, 0, 4).created_by, "RUN |2 P=arg Q=env /bin/sh -c echo $P $Q # buildkit");
  EXPECT_EQ(Step(*plan, 1, 0).created_by, "RUN |2 P=env Q=env /bin/sh -c echo $P $Q # buildkit");
  const Strings& env = Step(*plan, 0, 4).env;
  EXPECT_NE(std::find(env.begin(), env.end(), "P=arg"), env.end());
  EXPECT_EQ(std::find(env.begin(), env.end(), "P=env"), env.end());
}

TEST(Resolve, ADefaultBeatsTheAutomaticPlatformValue) {
  auto plan = Plan(
      "ARG TARGETOS=plan9\n"
      "FROM alpine\n"
      "ARG TARGETARCH=foo\n"
      "ARG TARGETOS\n"
      "ARG TARGETVARIANT\n"
      "RUN true\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Step(*plan, 0, 3).created_by,
            "RUN |3 TARGETARCH=foo TARGETOS=plan9 TARGETVARIANT= /bin/sh -c true # buildkit");
}

// BuildKit v0.24 never expands an ARG's name (docker 20.10's BuildKit did).
TEST(Resolve, ArgNamesAreNotExpanded) {
  auto plan = Plan(
      "ARG gname=gfoo\n"
      "ARG ${gname}=gvalue\n"
      "FROM alpine\n"
      "ARG name=foo\n"
      "ARG ${name}=value\n"
      "ARG $name\n"
      "ARG gfoo\n"
      "RUN echo $foo\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(Step(*plan, 0, 1).created_by, "ARG ${name}=value");
  EXPECT_EQ(Step(*plan, 0, 4).created_by,
            "RUN |4 name=foo ${name}=value $name= gfoo= /bin/sh -c echo $foo # buildkit");
}

TEST(Resolve, ScratchStartsWithBuildKitsEmptyImageConfig) {
  auto plan = Plan("FROM scratch\nCOPY f /f\n");
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  const ImageConfig& config = Step(*plan, 0, 0).config();
  EXPECT_EQ(config.working_dir, "/");
  EXPECT_EQ(config.env,
            Strings{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"});
  EXPECT_TRUE(config.cmd.empty());
  EXPECT_TRUE(config.entrypoint.empty());
  auto image = Plan("FROM busybox\nCOPY f /f\n");
  ASSERT_TRUE(image.ok());
  EXPECT_EQ(Step(*image, 0, 0).config().working_dir, "") << "an image's config is kept as is";
}

}  // namespace
}  // namespace stagefarm::frontend
