// The Dockerfile frontend's speed: parsing and resolving a generated 5,000-line Dockerfile with
// 50 stages (issue 3's target: under 10 ms for both).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <string>

#include "stagefarm/common/build_plan.h"
#include "stagefarm/common/dockerfile_parser.h"

namespace {

using namespace stagefarm;
using namespace stagefarm::frontend;

// 50 stages of 100 lines each: every instruction kind, ARG/ENV expansion, continuations,
// heredocs, mounts, and a graph where each stage copies from earlier ones.
std::string GenerateDockerfile(int stages, int lines_per_stage) {
  std::string df = "# syntax=docker/dockerfile:1\nARG BASE=debian:12\nARG VERSION=1.0\n";
  int lines = 3;
  for (int s = 0; s < stages; ++s) {
    std::string name = "stage" + std::to_string(s);
    if (s == 0 || s % 7 == 0) {
      df += "FROM --platform=$BUILDPLATFORM ${BASE} AS " + name + "\n";
    } else {
      df += "FROM stage" + std::to_string(s - 1) + " AS " + name + "\n";
    }
    df += "ARG VERSION\nENV APP_HOME=/opt/app" + std::to_string(s) + " PATH=/opt/bin:$PATH\n";
    df += "WORKDIR $APP_HOME\n";
    int used = 4;
    for (int i = 0; used < lines_per_stage; ++i) {
      switch (i % 8) {
        case 0:
          df += "RUN --mount=type=cache,target=/root/.cache \\\n"
                "    apt-get update && \\\n"
                "    apt-get install -y curl git make gcc ${VERSION}\n";
          used += 3;
          break;
        case 1:
          df += "COPY --chown=1000:1000 --chmod=0644 src/file" + std::to_string(i) +
                ".c include/ ${APP_HOME}/src/\n";
          used += 1;
          break;
        case 2:
          if (s > 0) {
            // Every stage needs the one before it, so the last stage needs all 50.
            int from = i % 16 == 2 ? s - 1 : s / 2;
            df += "COPY --from=stage" + std::to_string(from) + " /opt/app" +
                  std::to_string(from) + "/out /deps/" + std::to_string(i) + "\n";
          } else {
            df += "ADD --checksum=sha256:0000 https://example.com/a.tgz /tmp/\n";
          }
          used += 1;
          break;
        case 3:
          df += "LABEL org.example.step" + std::to_string(i) + "=\"value ${VERSION}\" b=c\n";
          used += 1;
          break;
        case 4:
          df += "RUN <<EOF\nset -e\necho building ${APP_HOME}\nmake -j4 all\nEOF\n";
          used += 5;
          break;
        case 5:
          df += "ENV STEP" + std::to_string(i) + "=${APP_HOME:-/x}/step" + std::to_string(i) + "\n";
          used += 1;
          break;
        case 6:
          df += "RUN [\"/bin/sh\", \"-c\", \"echo exec form " + std::to_string(i) + "\"]\n";
          used += 1;
          break;
        default:
          df += "# a comment line\nEXPOSE 80" + std::to_string(i % 10) + "/tcp\n";
          used += 2;
          break;
      }
    }
    df += "USER 1000:1000\nCMD [\"/opt/app/run\"]\n";
    lines += used + 2;
  }
  (void)lines;
  return df;
}

const std::string& Dockerfile() {
  static const std::string df = GenerateDockerfile(50, 98);
  return df;
}

ImageResolver Images() {
  return [](const std::string&) -> StatusOr<ImageConfig> {
    ImageConfig c;
    c.env = {"PATH=/usr/local/bin:/usr/bin:/bin"};
    return c;
  };
}

void BM_ParseDockerfile(benchmark::State& state) {
  const std::string& df = Dockerfile();
  for (auto _ : state) {
    StatusOr<ParsedDockerfile> parsed = ParseDockerfile(df);
    if (!parsed.ok()) state.SkipWithError(parsed.status().message().c_str());
    benchmark::DoNotOptimize(parsed);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * df.size()));
}
BENCHMARK(BM_ParseDockerfile)->Unit(benchmark::kMillisecond);

// Parse + Resolve of every stage (the last stage needs all 50), as the coordinator does it.
void BM_ParseAndResolve5000Lines50Stages(benchmark::State& state) {
  const std::string& df = Dockerfile();
  ImageResolver images = Images();
  size_t lines = static_cast<size_t>(std::count(df.begin(), df.end(), '\n'));
  size_t steps = 0, stages = 0;
  for (auto _ : state) {
    StatusOr<BuildPlan> plan = Resolve(df, BuildOptions{}, images);
    if (!plan.ok()) {
      state.SkipWithError(plan.status().message().c_str());
      break;
    }
    stages = plan->stages.size();
    steps = 0;
    for (const auto& s : plan->stages) steps += s.steps.size();
    benchmark::DoNotOptimize(plan);
  }
  state.counters["lines"] = static_cast<double>(lines);
  state.counters["stages"] = static_cast<double>(stages);
  state.counters["steps"] = static_cast<double>(steps);
}
BENCHMARK(BM_ParseAndResolve5000Lines50Stages)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
