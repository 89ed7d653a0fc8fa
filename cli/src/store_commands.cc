// `stagefarm du` and `stagefarm prune`: the cache server's space, like `docker system df` and
// `docker system prune`.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>

#include "stagefarm/cli/commands.h"
#include "stagefarm/cli/daemon.h"
#include "stagefarm/cli/farm_connection.h"
#include "stagefarm/cli/progress.h"
#include "stagefarm/common/cache_protocol.h"

namespace stagefarm::cli {
namespace {

int RunDu(const FarmTarget& target) {
  Transport transport;
  StatusOr<FarmConnection> conn = ConnectFarm(transport, target, /*need_coordinator=*/false);
  if (!conn.ok()) return Fail(conn.status());
  StatusOr<CacheStatsResponse> st = QueryCacheStats(transport, conn->cache_endpoint);
  if (!st.ok()) return Fail(st.status());
  std::printf("%-16s %10s %12s %12s\n", "TYPE", "TOTAL", "SIZE", "LIMIT");
  std::printf("%-16s %10lu %12s %12s\n", "Blobs", static_cast<unsigned long>(st->blobs),
              HumanSize(st->bytes).c_str(),
              st->max_bytes == 0 ? "none" : HumanSize(st->max_bytes).c_str());
  std::printf("%-16s %10lu %12s %12s\n", "Action cache", static_cast<unsigned long>(st->actions),
              "-", "-");
  std::printf("%-16s %10lu %12s %12s\n", "Image refs", static_cast<unsigned long>(st->refs), "-",
              "-");
  std::printf("%-16s %10lu %12s %12s\n", "Uploads", static_cast<unsigned long>(st->uploads_in_progress),
              "-", "-");
  return 0;
}

int RunPrune(const FarmTarget& target, bool all, const std::string& keep, bool dry_run) {
  PruneCacheRequest req;
  req.all = all;
  req.dry_run = dry_run;
  if (!keep.empty()) {
    StatusOr<uint64_t> n = ParseBytes(keep);
    if (!n.ok()) return Fail(n.status(), 2);
    req.keep_bytes = *n;
  }
  Transport transport;
  StatusOr<FarmConnection> conn = ConnectFarm(transport, target, /*need_coordinator=*/false);
  if (!conn.ok()) return Fail(conn.status());
  StatusOr<PruneCacheResponse> r = PruneCache(transport, conn->cache_endpoint, req);
  if (!r.ok()) return Fail(r.status());
  std::printf("%s %lu blobs", dry_run ? "Would delete" : "Deleted",
              static_cast<unsigned long>(r->blobs));
  if (r->refs > 0) std::printf(" and %lu image refs", static_cast<unsigned long>(r->refs));
  if (r->actions > 0) {
    std::printf(", and %lu cached steps that used them", static_cast<unsigned long>(r->actions));
  }
  std::printf("\nTotal reclaimed space: %s\n", HumanSize(r->bytes).c_str());
  std::printf("Left: %lu blobs, %s\n", static_cast<unsigned long>(r->blobs_left),
              HumanSize(r->bytes_left).c_str());
  return 0;
}

}  // namespace

void AddStoreCommands(CLI::App& app, CommandContext& ctx) {
  CLI::App* du = app.add_subcommand("du", "show the store's disk usage (like docker system df)");
  AddFarmFlags(du, ctx);
  du->callback([&ctx] { ctx.run = [&ctx] { return RunDu(ctx.farm); }; });

  struct PruneFlags {
    bool all = false;
    bool dry_run = false;
    bool force = false;
    std::string keep;
  };
  auto f = std::make_shared<PruneFlags>();
  CLI::App* prune = app.add_subcommand(
      "prune", "free space: remove blobs no image needs, least recently used first");
  prune->add_flag("-a,--all", f->all,
                  "also remove the blobs of tagged images (and refs left without a manifest)");
  prune->add_option("--keep-storage", f->keep,
                    "stop once the store is this small (e.g. 10G); default: remove all it may");
  prune->add_flag("--dry-run", f->dry_run, "only report what would be removed");
  prune->add_flag("-f,--force", f->force, "accepted for docker compatibility; never prompts");
  AddFarmFlags(prune, ctx);
  prune->callback([&ctx, f] {
    ctx.run = [&ctx, f] { return RunPrune(ctx.farm, f->all, f->keep, f->dry_run); };
  });
}

}  // namespace stagefarm::cli
