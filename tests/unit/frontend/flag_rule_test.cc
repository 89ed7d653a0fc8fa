// The rule of issue 21's class 2: every flag the frontend accepts is either honoured (it changes
// what the worker is sent, the cache key, or the image config) or refused with an error that
// names it; never parsed and dropped. The table below has one entry per flag of
// InstructionFlags(); a flag without an entry fails the test, so a new one cannot slip in.
//
// A flag the worker does not honour yet is Pending: the frontend keeps it (ResolvedStep and the
// cache key change) but the StepSpec is the same with it and without. The test fails as soon as
// the StepSpec does change, so that the entry is then turned into a Spec(...) naming the field.
#include <gtest/gtest.h>

#include <functional>
#include <optional>
#include <set>
#include <string>
#include <variant>

#include "stagefarm/common/build_plan.h"
#include "step_spec.h"  // coordinator/src: what the coordinator sends the worker for a step

namespace stagefarm::frontend {
namespace {

// What one Dockerfile resolves to: its target stage's last step and the StepSpec made of it.
struct Outcome {
  BuildPlan plan;
  const ResolvedStage& stage() const { return plan.target_stage(); }
  const ResolvedStep& step() const { return stage().steps.back(); }
  StepSpec spec;
};

// The flag changes this StepSpec field.
struct Spec {
  std::function<std::string(const StepSpec&)> read;
};
// The flag changes only the cache key (the coordinator acts on it, not the worker); `why` says how
// it changes the result.
struct KeyOnly {
  std::string why;
};
// The flag changes the image config or the stage (no step of its own carries it).
struct Config {
  std::function<std::string(const Outcome&)> read;
};
// The worker does not get the flag yet: `needs` is the StepSpec field it will need, `branch` who
// implements it.
struct Pending {
  std::string needs, branch;
};
// The flag is refused; the error names it.
struct Refused {
  std::string message;
};
using Rule = std::variant<Spec, KeyOnly, Config, Pending, Refused>;

struct FlagCase {
  std::string instruction, flag;
  std::string without, with;  // the Dockerfile without the flag and with it
  // The ResolvedStep field that carries the flag (for Spec, KeyOnly and Pending): it must differ.
  std::function<std::string(const ResolvedStep&)> resolved;
  Rule rule;
};

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const std::string& s : v) out += s + "\x1f";
  return out;
}
std::string Opt(const std::optional<bool>& b) { return b ? (*b ? "true" : "false") : "unset"; }

StatusOr<Outcome> Resolved(const std::string& dockerfile) {
  BuildOptions options;
  auto images = [](const std::string& ref) -> StatusOr<ImageConfig> {
    if (ref != "busybox") return NotFoundError("no image " + ref);
    return ImageConfig{};
  };
  SF_ASSIGN_OR_RETURN(BuildPlan plan, Resolve(dockerfile, options, images));
  Outcome out{std::move(plan), {}};
  if (!out.stage().steps.empty()) {
    out.spec = coordinator::MakeStepSpec(out.step(), "key", BuildRequest{}, {});
  }
  return out;
}

// The StepSpec without what only names or labels the step.
StepSpec Comparable(StepSpec s) {
  s.key.clear();
  s.text.clear();
  s.created_by.clear();
  return s;
}

const std::vector<FlagCase>& Cases() {
  auto chown = [](const ResolvedStep& s) { return s.chown; };
  auto chmod = [](const ResolvedStep& s) { return s.chmod; };
  auto link = [](const ResolvedStep& s) { return std::string(s.link ? "true" : "false"); };
  auto excludes = [](const ResolvedStep& s) { return Join(s.excludes); };
  const Spec spec_link{[](const StepSpec& s) { return std::string(s.link ? "true" : "false"); }};
  const Spec spec_excludes{[](const StepSpec& s) { return Join(s.excludes); }};
  static const std::vector<FlagCase> kCases = {
      {"copy", "chown", "FROM busybox\nCOPY a /a\n", "FROM busybox\nCOPY --chown=1:2 a /a\n", chown,
       Spec{[](const StepSpec& s) { return s.chown; }}},
      {"copy", "chmod", "FROM busybox\nCOPY a /a\n", "FROM busybox\nCOPY --chmod=600 a /a\n", chmod,
       Spec{[](const StepSpec& s) { return s.chmod; }}},
      {"copy", "link", "FROM busybox\nCOPY a /a\n", "FROM busybox\nCOPY --link a /a\n", link,
       spec_link},
      {"copy", "exclude", "FROM busybox\nCOPY d /d\n", "FROM busybox\nCOPY --exclude=*.log d /d\n",
       excludes, spec_excludes},
      {"copy", "from", "FROM busybox AS b\nFROM busybox\nCOPY a /a\n",
       "FROM busybox AS b\nFROM busybox\nCOPY --from=b a /a\n",
       [](const ResolvedStep& s) { return std::to_string(s.from_stage) + s.from_image; },
       // The coordinator turns from_stage / from_image into StepSpec::from_layers (the stage's
       // layers, which MakeStepSpec is given).
       KeyOnly{"the source filesystem: StepSpec::from_layers, given by the coordinator"}},
      {"copy", "parents", "FROM busybox\nCOPY a/b /x/\n", "FROM busybox\nCOPY --parents a/b /x/\n",
       [](const ResolvedStep& s) { return std::string(s.parents ? "true" : "false"); },
       Spec{[](const StepSpec& s) { return std::string(s.parents ? "true" : "false"); }}},
      {"add", "chown", "FROM busybox\nADD a /a\n", "FROM busybox\nADD --chown=1:2 a /a\n", chown,
       Spec{[](const StepSpec& s) { return s.chown; }}},
      {"add", "chmod", "FROM busybox\nADD a /a\n", "FROM busybox\nADD --chmod=600 a /a\n", chmod,
       Spec{[](const StepSpec& s) { return s.chmod; }}},
      {"add", "link", "FROM busybox\nADD a /a\n", "FROM busybox\nADD --link a /a\n", link,
       spec_link},
      {"add", "exclude", "FROM busybox\nADD d /d\n", "FROM busybox\nADD --exclude=*.log d /d\n",
       excludes, spec_excludes},
      {"add", "keep-git-dir", "FROM busybox\nADD https://h/r.git /r\n",
       "FROM busybox\nADD --keep-git-dir https://h/r.git /r\n",
       [](const ResolvedStep& s) { return Opt(s.keep_git_dir); },
       KeyOnly{"the client checks the repository out with its .git (FetchGitSource) and the "
               "coordinator sends the worker that checkout (FindRemoteFile by keep_git_dir)"}},
      {"add", "checksum", "FROM busybox\nADD https://h/f /f\n",
       "FROM busybox\nADD --checksum=sha256:" + std::string(64, 'a') + " https://h/f /f\n",
       [](const ResolvedStep& s) { return s.checksum; },
       KeyOnly{"the coordinator checks the fetched file's digest (CheckAddChecksum) and fails "
               "the build on a mismatch"}},
      {"add", "unpack", "FROM busybox\nADD https://h/f.tgz /f/\n",
       "FROM busybox\nADD --unpack https://h/f.tgz /f/\n",
       [](const ResolvedStep& s) { return Opt(s.unpack); },
       Spec{[](const StepSpec& s) { return Opt(s.unpack); }}},
      {"run", "mount", "FROM busybox\nRUN true\n",
       "FROM busybox\nRUN --mount=type=cache,target=/c true\n",
       [](const ResolvedStep& s) { return std::to_string(s.mounts.size()); },
       Spec{[](const StepSpec& s) { return std::to_string(s.mounts.size()); }}},
      {"run", "network", "FROM busybox\nRUN true\n", "FROM busybox\nRUN --network=none true\n",
       [](const ResolvedStep& s) { return s.network; },
       Spec{[](const StepSpec& s) { return s.network; }}},
      {"run", "device", "", "FROM busybox\nRUN --device=/dev/null true\n", nullptr,
       Refused{"--device is not supported"}},
      {"from", "platform", "FROM busybox\n", "FROM --platform=linux/arm64 busybox\n", nullptr,
       Config{[](const Outcome& o) { return o.stage().platform; }}},
      {"healthcheck", "interval", "FROM busybox\nHEALTHCHECK CMD true\n",
       "FROM busybox\nHEALTHCHECK --interval=5s CMD true\n", nullptr, Config{[](const Outcome& o) {
         return std::to_string(o.step().config().healthcheck->interval_ns);
       }}},
      {"healthcheck", "timeout", "FROM busybox\nHEALTHCHECK CMD true\n",
       "FROM busybox\nHEALTHCHECK --timeout=5s CMD true\n", nullptr, Config{[](const Outcome& o) {
         return std::to_string(o.step().config().healthcheck->timeout_ns);
       }}},
      {"healthcheck", "start-period", "FROM busybox\nHEALTHCHECK CMD true\n",
       "FROM busybox\nHEALTHCHECK --start-period=5s CMD true\n", nullptr,
       Config{[](const Outcome& o) {
         return std::to_string(o.step().config().healthcheck->start_period_ns);
       }}},
      {"healthcheck", "start-interval", "FROM busybox\nHEALTHCHECK CMD true\n",
       "FROM busybox\nHEALTHCHECK --start-interval=5s CMD true\n", nullptr,
       Config{[](const Outcome& o) {
         return std::to_string(o.step().config().healthcheck->start_interval_ns);
       }}},
      {"healthcheck", "retries", "FROM busybox\nHEALTHCHECK CMD true\n",
       "FROM busybox\nHEALTHCHECK --retries=5 CMD true\n", nullptr, Config{[](const Outcome& o) {
         return std::to_string(o.step().config().healthcheck->retries);
       }}},
  };
  return kCases;
}

TEST(FlagRule, EveryAcceptedFlagHasAnEntryAndEveryEntryAnAcceptedFlag) {
  std::set<std::pair<std::string, std::string>> accepted, listed;
  for (const auto& [instruction, flags] : InstructionFlags()) {
    for (const auto& [flag, kind] : flags) accepted.emplace(instruction, flag);
  }
  for (const FlagCase& c : Cases()) {
    EXPECT_TRUE(listed.emplace(c.instruction, c.flag).second)
        << c.instruction << " --" << c.flag << " has two entries";
  }
  for (const auto& [instruction, flag] : accepted) {
    EXPECT_TRUE(listed.count({instruction, flag}))
        << "the frontend accepts " << instruction << " --" << flag
        << " but the flag rule has no entry for it: add one to Cases() saying what it changes "
           "(the StepSpec field, the cache key, the config) or refuse it with an error naming it";
  }
  for (const auto& [instruction, flag] : listed) {
    EXPECT_TRUE(accepted.count({instruction, flag}))
        << instruction << " --" << flag << " is listed but the frontend does not accept it";
  }
}

TEST(FlagRule, EveryFlagChangesWhatTheWorkerIsSentTheKeyOrTheConfigOrIsRefused) {
  std::vector<std::string> pending;
  for (const FlagCase& c : Cases()) {
    const std::string name = c.instruction + " --" + c.flag;
    SCOPED_TRACE(name);
    StatusOr<Outcome> with = Resolved(c.with);
    if (const auto* refused = std::get_if<Refused>(&c.rule)) {
      ASSERT_FALSE(with.ok()) << name << " is accepted, but the rule says it is refused";
      EXPECT_NE(with.status().message().find(refused->message), std::string::npos)
          << with.status().ToString();
      EXPECT_NE(with.status().message().find("--" + c.flag), std::string::npos)
          << "the error must name the flag: " << with.status().ToString();
      continue;
    }
    ASSERT_TRUE(with.ok()) << with.status().ToString();
    StatusOr<Outcome> without = Resolved(c.without);
    ASSERT_TRUE(without.ok()) << without.status().ToString();
    if (const auto* config = std::get_if<Config>(&c.rule)) {
      EXPECT_NE(config->read(*with), config->read(*without)) << name << " changes nothing";
      continue;
    }
    // The step carries the flag and its cache key changes.
    ASSERT_TRUE(c.resolved) << name << ": say which ResolvedStep field carries it";
    EXPECT_NE(c.resolved(with->step()), c.resolved(without->step()))
        << name << ": the resolved step does not carry it";
    EXPECT_NE(with->step().canonical, without->step().canonical)
        << name << ": the cache key does not change with it";
    const bool spec_differs = !(Comparable(with->spec) == Comparable(without->spec));
    if (const auto* spec = std::get_if<Spec>(&c.rule)) {
      EXPECT_NE(spec->read(with->spec), spec->read(without->spec))
          << name << ": the worker is not sent it";
    } else if (const auto* p = std::get_if<Pending>(&c.rule)) {
      EXPECT_FALSE(spec_differs) << name << " now reaches the worker: replace its Pending{...} "
                                 << "entry by Spec{...} reading " << p->needs;
      pending.push_back(name + ": needs " + p->needs + " (branch " + p->branch + ")");
    } else {
      EXPECT_FALSE(spec_differs) << name << " reaches the worker: make its entry a Spec{...}";
    }
  }
  // Not a failure: the flags other branches are implementing, for whoever reads the log.
  for (const std::string& p : pending) std::printf("pending: %s\n", p.c_str());
}

}  // namespace
}  // namespace stagefarm::frontend
