#include "stagefarm/cli/farm_connection.h"

#include <unistd.h>

#include <cstdlib>

#include "stagefarm/cli/curve_keys.h"
#include "stagefarm/common/build_protocol.h"

namespace stagefarm::cli {
namespace {

std::string FromEnv(const std::string& flag, const char* env) {
  if (!flag.empty()) return flag;
  const char* v = std::getenv(env);
  return v ? v : "";
}

}  // namespace

StatusOr<FarmConnection> ConnectFarm(Transport& transport, const FarmTarget& target,
                                     bool need_coordinator) {
  FarmConnection c;
  std::string farm = FromEnv(target.farm, "STAGEFARM_FARM");
  c.cache_endpoint = FromEnv(target.cache, "STAGEFARM_CACHE");
  if (!farm.empty() || !c.cache_endpoint.empty()) {
    // A remote farm: present this client's CURVE key if it has one.
    SF_RETURN_IF_ERROR(UseClientCurveKeys(transport, target.curve_keys));
  }
  if (!farm.empty()) {
    c.coordinator_endpoint = farm;
    if (c.cache_endpoint.empty()) {
      SF_ASSIGN_OR_RETURN(std::unique_ptr<ClientSocket> sock, transport.Connect(farm));
      RpcChannel rpc(std::move(sock));
      Message ping;
      ping.method = Method::kPing;
      StatusOr<Message> reply = rpc.Call(std::move(ping), std::chrono::seconds(10));
      if (!reply.ok()) {
        return UnavailableError("cannot reach the coordinator at " + farm + ": " +
                                reply.status().message());
      }
      FarmInfo info;
      SF_RETURN_IF_ERROR(Decode(reply->body, &info).Annotate("coordinator's farm info"));
      c.cache_endpoint = info.cache_endpoint;
    }
    return c;
  }
  if (!c.cache_endpoint.empty() && !need_coordinator) return c;

  EmbeddedFarmOptions opts;
  opts.home = target.home.empty() ? DefaultHome() : target.home;
  opts.with_coordinator = need_coordinator;
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  opts.workers = target.embedded_workers > 0 ? target.embedded_workers : (n > 0 ? int(n) : 1);
  SF_ASSIGN_OR_RETURN(c.embedded, EmbeddedFarm::Start(transport, opts, nullptr));
  c.cache_endpoint = c.embedded->cache_endpoint();
  if (need_coordinator) c.coordinator_endpoint = c.embedded->coordinator_endpoint();
  return c;
}

}  // namespace stagefarm::cli
