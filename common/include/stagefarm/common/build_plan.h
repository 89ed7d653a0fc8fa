// Resolution of a Dockerfile into the typed, expanded steps the coordinator schedules: stages in
// dependency order (only those --target needs), each step with its expanded arguments, the
// canonical text that enters its cache key, its docker-history text and the image config after
// it. Semantics follow docker build (BuildKit's dockerfile2llb): ARG scoping, ENV over ARG,
// automatic platform args, FROM <stage>, COPY --from, RUN --mount from=.
//
// Resolve is a pure function of its inputs apart from the resolver it calls; it is thread-safe
// if the resolver is. Errors are InvalidArgument (NotFound for an unknown --target, stage or image)
// and name the file and line and quote the instruction (up to 60 bytes):
// "Dockerfile:7: COPY --frm=x a /b: unknown flag --frm". A name that is neither a stage nor an
// image the resolver knows suggests the nearest stage: "Dockerfile:12: COPY --from=biuld: no
// stage or image named "biuld" (did you mean "build"?)"; an unknown instruction the nearest one.
// Every image named by FROM, COPY --from or RUN --mount from= goes through the resolver.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "stagefarm/common/image_config.h"
#include "stagefarm/common/status.h"

namespace stagefarm::frontend {

struct BuildOptions {
  std::map<std::string, std::string> build_args;  // --build-arg K=V
  std::string target;                             // --target; empty: the last stage
  std::string platform = "linux/amd64";           // the target platform
  std::string build_platform;                     // empty: same as platform
  std::string filename = "Dockerfile";            // for error places
};

enum class StepKind {
  kRun,
  kCopy,
  kAdd,
  kEnv,
  kLabel,
  kCmd,
  kEntrypoint,
  kExpose,
  kVolume,
  kUser,
  kWorkdir,
  kArg,
  kShell,
  kStopSignal,
  kHealthcheck,
  kOnbuild,
  kMaintainer
};

// "RUN", "COPY"...
std::string_view StepKindName(StepKind kind);

// RUN --mount=type=...,...
struct RunMount {
  std::string type = "bind";  // bind, cache, tmpfs, secret, ssh
  std::string target;
  std::string source;
  std::string from;     // as written after expansion; empty: the build context
  int from_stage = -1;  // original stage index when `from` names a stage
  std::string id;       // cache id, secret id or ssh id
  std::string sharing;  // cache: shared (default), private, locked
  bool readonly = false;
  bool required = false;
  std::optional<uint32_t> mode, uid, gid;
  std::optional<std::string> env;  // secret as environment variable
  int64_t size_limit = 0;          // tmpfs bytes
};

// A file written by a heredoc (COPY <<EOF dest, or RUN's heredocs).
struct InlineFile {
  std::string name;
  std::string content;  // chomped and, if the heredoc is unquoted, expanded (COPY/ADD)
  bool expand = true;
  bool chomp = false;
  unsigned file_descriptor = 0;
};

struct ResolvedStep {
  StepKind kind = StepKind::kRun;
  int line = 0;            // first line of the instruction, 1-based
  std::string text;        // the instruction as written (continuations joined), for display
  std::string canonical;   // JSON: everything of the instruction that enters the cache key
  std::string created_by;  // docker history text; empty: no history entry (ONBUILD)

  // RUN
  std::vector<std::string> argv;     // shell form: SHELL (or /bin/sh -c) + command
  std::vector<std::string> env;      // what the command sees: config env + build args in scope
  std::string network = "default";   // default, none, host
  std::vector<RunMount> mounts;
  // COPY/ADD: the heredoc sources. RUN: the script a single heredoc starting with `#!` is, which
  // the worker mounts read-only, mode 0755, at /dev/pipes/<name> (argv runs it, as BuildKit);
  // other RUN heredocs are part of argv.
  std::vector<InlineFile> heredocs;

  // COPY / ADD
  std::vector<std::string> sources;  // expanded, context-relative or URLs (ADD)
  std::string dest;                  // expanded, as written (may be relative to WORKDIR)
  std::string from;                  // --from after expansion; empty: the context
  int from_stage = -1;               // original stage index if --from names a stage
  std::string from_image;            // if --from names an image
  std::string chown, chmod, checksum;
  bool link = false, parents = false;
  std::optional<bool> keep_git_dir, unpack;
  std::vector<std::string> excludes;

  // The image config after this step (USER, WORKDIR... apply to later steps; for RUN and
  // COPY they are what this step runs with). Steps that do not change it share one immutable
  // copy; mutable_config() copies it first if another step shares it.
  const ImageConfig& config() const { return config_ ? *config_ : EmptyConfig(); }
  ImageConfig& mutable_config();
  // `config` must point to a non-const ImageConfig (std::make_shared<ImageConfig>).
  void set_config(std::shared_ptr<const ImageConfig> config) { config_ = std::move(config); }

  // WORKDIR makes its directory (mkdir -p, as BuildKit does), except WORKDIR /.
  bool makes_layer() const {
    return kind == StepKind::kRun || kind == StepKind::kCopy || kind == StepKind::kAdd ||
           (kind == StepKind::kWorkdir && config().working_dir != "/");
  }

 private:
  static const ImageConfig& EmptyConfig();
  std::shared_ptr<const ImageConfig> config_;
};

struct ResolvedStage {
  int index = 0;             // position among all stages of the Dockerfile
  std::string name;          // AS name lowercased, or ""
  std::string display_name;  // name or "stage-<index>"
  int line = 0;              // the FROM line
  std::string base;          // FROM after ARG expansion ("scratch", an image, or a stage name)
  int base_stage = -1;       // original index of the stage it starts FROM, or -1
  std::string platform;      // FROM --platform, expanded; else the build's target platform
  ImageConfig base_config;   // the config it starts with (PATH always set; scratch: WorkingDir /)
  std::vector<ResolvedStep> steps;
  std::vector<int> deps;  // original indices: FROM stage, COPY --from stage, mount from=
};

// A finding of docker build's Dockerfile checks (BuildKit's linter, `# check=`), with the texts
// docker build prints for it: " - <rule>: <message> (line <line>)", and with --debug the
// description and "More info: <url>".
struct CheckWarning {
  std::string rule;         // "StageNameCasing"
  std::string message;      // "Stage name 'Build' should be lowercase"
  std::string description;  // "Stage names should be lowercase"
  std::string url;          // "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/"
  int line = 0;
};

struct BuildPlan {
  std::vector<ResolvedStage> stages;         // only those the target needs, each after its deps
  int target = -1;                           // position in `stages` of the target
  std::vector<std::string> external_images;  // FROM / COPY --from / mount from= images
  // "Dockerfile:3: <rule>: <message>" for each of `checks`, then the unused build args.
  std::vector<std::string> warnings;
  std::vector<CheckWarning> checks;  // in the order docker build reports them
  std::vector<std::pair<std::string, std::string>> directives;  // # syntax=, # check=...

  const ResolvedStage& target_stage() const { return stages.at(target); }
  // The position in `stages` of the stage with this original index, or -1.
  int PositionOf(int original_index) const;
};

// The flags an instruction takes (BuildKit's BFlags): --f=v, --f[=true|false], --f=v repeated.
enum class FlagKind { kString, kBool, kStrings };

// Every instruction's flags, by lower-case instruction name; an instruction not here takes none.
// Each is honoured (it changes what the worker is sent, the cache key or the image config) or
// refused with an error naming it, never read and dropped: tests/unit/frontend/flag_rule_test.cc
// holds every one of them to that.
const std::map<std::string, std::map<std::string, FlagKind>, std::less<>>& InstructionFlags();

// Gives the config of an image reference (after expansion), e.g. from a registry or the local
// store. "scratch" never goes to the resolver.
using ImageResolver = std::function<StatusOr<ImageConfig>(const std::string& image_ref)>;

StatusOr<BuildPlan> Resolve(std::string_view dockerfile_text, const BuildOptions& options,
                            const ImageResolver& resolver);

// A readable dump of the plan, one stage after the other (`stagefarm debug dockerfile`).
std::string DescribePlan(const BuildPlan& plan);

}  // namespace stagefarm::frontend
