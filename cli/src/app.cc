#include "stagefarm/cli/app.h"

#include <CLI/CLI.hpp>
#include <cstdio>

#include "stagefarm/cli/commands.h"
#include "stagefarm/cli/daemon.h"
#include "stagefarm/common/log.h"

namespace stagefarm::cli {

int Fail(const Status& s, int code) {
  std::fprintf(stderr, "stagefarm: %s\n", s.message().c_str());
  return code;
}

void AddFarmFlags(CLI::App* cmd, CommandContext& ctx) {
  cmd->add_option("--farm", ctx.farm.farm,
                  "coordinator endpoint (or STAGEFARM_FARM); none: the embedded farm");
  cmd->add_option("--cache", ctx.farm.cache, "cache server endpoint (or STAGEFARM_CACHE)");
  cmd->add_option("--home", ctx.farm.home, "the embedded farm's store (or STAGEFARM_HOME)");
  cmd->add_option("--curve-keys", ctx.farm.curve_keys,
                  "CURVE key directory with this client's key (or STAGEFARM_CURVE_KEYS)");
}

int Main(int argc, char** argv) {
  CLI::App app{"stagefarm: a distributed build farm for Dockerfiles"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "stagefarm 0.1.0");
  bool verbose = false;
  app.add_flag("--debug", verbose, "log debug messages");

  CommandContext ctx;
  AddDaemonCommands(app, ctx);
  AddBuildCommand(app, ctx);
  AddImageCommands(app, ctx);
  AddRegistryCommands(app, ctx);
  AddDebugCommands(app, ctx);
  AddStoreCommands(app, ctx);
  AddOpsCommands(app, ctx);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!ctx.run) return 2;
  // Commands a person waits on show progress, not the embedded farm's daemon logs.
  SetLogLevel(verbose ? LogLevel::kDebug : ctx.daemon ? LogLevel::kInfo : LogLevel::kWarning);
  // Before any thread starts (ZeroMQ, RocksDB and the metrics server start their own).
  if (ctx.daemon) BlockShutdownSignals();
  return ctx.run();
}

}  // namespace stagefarm::cli
