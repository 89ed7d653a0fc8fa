// The subcommands of `stagefarm`, each group in its own file. An Add*Commands function registers
// its subcommands and flags on `app`; when one of them is chosen, its parse callback sets
// ctx.run, which Main calls after parsing. Exit codes: 0 success, 1 failure, 2 usage error.
#pragma once

#include <functional>

#include "stagefarm/cli/farm_connection.h"

namespace CLI {
class App;
}

namespace stagefarm::cli {

struct CommandContext {
  FarmTarget farm;          // --farm / --cache / --home, for commands that take them
  bool daemon = false;      // a long-running command: blocks SIGINT/SIGTERM before threads start
  std::function<int()> run;
};

// Adds --farm, --cache and --home to `cmd`, bound to ctx.farm.
void AddFarmFlags(CLI::App* cmd, CommandContext& ctx);

void AddDaemonCommands(CLI::App& app, CommandContext& ctx);  // cache, coordinator, worker, up
void AddBuildCommand(CLI::App& app, CommandContext& ctx);    // build
void AddImageCommands(CLI::App& app, CommandContext& ctx);   // image import|ls|inspect
// image pull|push; after AddImageCommands (cli/src/registry_commands.cc)
void AddRegistryCommands(CLI::App& app, CommandContext& ctx);
void AddDebugCommands(CLI::App& app, CommandContext& ctx);   // debug dockerfile
void AddStoreCommands(CLI::App& app, CommandContext& ctx);   // du, prune
void AddOpsCommands(CLI::App& app, CommandContext& ctx);     // health, keys generate

// Prints "stagefarm: <message>" to stderr and returns `code`.
int Fail(const class Status& s, int code = 1);

}  // namespace stagefarm::cli
