// A worker on another "machine": its own network namespace, joined to the host by a veth pair,
// talking to the coordinator and the cache server over a real (virtual) link. The link is cut in
// the middle of a RUN: the coordinator gives the step to another worker, the build succeeds with
// the image an undisturbed build gives, and when the link comes back the cut worker rejoins
// without being handed the work again.
//
// The worker enters only the namespace's network (nsenter --net), not `ip netns exec`, which also
// remounts /sys and so hides the cgroup hierarchies the OCI runtime needs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <random>
#include <thread>

#include "coordinator_farm.h"

namespace stagefarm::testing {
namespace {

using namespace std::chrono_literals;

// A network namespace with one veth link to the host: host side 10.231.N.1, namespace side
// 10.231.N.2. Everything is deleted on destruction.
class NetnsHost {
 public:
  NetnsHost() {
    std::random_device rd;
    subnet_ = std::to_string(2 + rd() % 250);
    const std::string id = std::to_string(getpid() % 100000);
    ns_ = "sf-" + id;
    host_if_ = "sfh" + id;
    ns_if_ = "sfn" + id;
    ok_ = Ip({"netns", "add", ns_}) && Ip({"link", "add", host_if_, "type", "veth", "peer", "name",
                                           ns_if_}) &&
          Ip({"link", "set", ns_if_, "netns", ns_}) &&
          Ip({"addr", "add", host_ip() + "/24", "dev", host_if_}) &&
          Ip({"link", "set", host_if_, "up"}) &&
          Ip({"-n", ns_, "addr", "add", "10.231." + subnet_ + ".2/24", "dev", ns_if_}) &&
          Ip({"-n", ns_, "link", "set", ns_if_, "up"}) && Ip({"-n", ns_, "link", "set", "lo", "up"});
  }
  ~NetnsHost() {
    Ip({"link", "del", host_if_});
    Ip({"netns", "del", ns_});
  }
  bool ok() const { return ok_; }
  std::string host_ip() const { return "10.231." + subnet_ + ".1"; }
  // The command prefix that runs a program on this "machine".
  std::vector<std::string> Prefix() const { return {"nsenter", "--net=/var/run/netns/" + ns_}; }
  bool SetLink(bool up) { return Ip({"link", "set", host_if_, up ? "up" : "down"}); }
  std::string error() const { return error_; }

 private:
  bool Ip(std::vector<std::string> args) {
    args.insert(args.begin(), "ip");
    std::string out, err;
    if (RunCommand(args, &out, &err) == 0) return true;
    error_ += err;
    return false;
  }
  std::string subnet_, ns_, host_if_, ns_if_, error_;
  bool ok_ = false;
};

TEST(CoordinatorNetns, LinkCutMidRunMovesTheStepAndTheWorkerRejoinsWithoutDuplicateWork) {
  NetnsHost remote;
  ASSERT_TRUE(remote.ok()) << remote.error();
  TempDir tmp;
  // The daemons listen on the host end of the link; the first worker is on the other end.
  Farm farm(tmp.path(), FarmOptions{.workers = 0, .heartbeat_timeout = 2,
                                    .host = remote.host_ip()});
  ASSERT_TRUE(farm.ok()) << farm.Logs();
  farm.StartWorker("remote", remote.Prefix());
  ASSERT_TRUE(farm.WaitForWorker("remote")) << farm.Logs();

  std::string mark = farm.Marker("netcut");
  std::string ctx = farm.Context("ctx",
                                 "FROM busybox\n"
                                 "RUN echo " +
                                     mark +
                                     " >/m; sleep 4; echo built >/out\n"
                                     "RUN cat /out /m >/both\n");
  std::vector<std::string> args = {"--build-arg", "SOURCE_DATE_EPOCH=1700000000"};
  ChildProcess client(farm.BuildArgv(ctx, args), tmp.path() + "/client-log");
  ASSERT_TRUE(client.WaitForStderr(std::regex(R"(RUN echo .* \(on remote at)"), 60s))
      << client.Stderr() << farm.Logs();

  // A second worker on this machine, then the cut.
  farm.StartWorker("local");
  ASSERT_TRUE(farm.WaitForWorker("local")) << farm.Logs();
  ASSERT_TRUE(remote.SetLink(false)) << remote.error();
  ASSERT_EQ(client.Wait(120s), 0) << client.Stderr() << farm.Logs();
  std::string disturbed = client.Stderr();
  EXPECT_NE(disturbed.find("lost worker remote"), std::string::npos) << disturbed;
  std::vector<StepStart> starts = StepStarts(disturbed);
  ASSERT_EQ(starts.size(), 3u) << disturbed;  // the first RUN twice, then the second
  EXPECT_EQ(starts[0].worker, "remote");
  EXPECT_EQ(starts[1].worker, "local");
  EXPECT_EQ(starts[2].worker, "local");
  std::string first = ManifestOf(disturbed);
  ASSERT_FALSE(first.empty()) << disturbed;

  // The link comes back: the remote worker registers again (its old step may report late and is
  // ignored), and a fully cached build gives nobody any work.
  ASSERT_TRUE(remote.SetLink(true)) << remote.error();
  const std::regex registered("worker remote registered");
  for (int i = 0; i < 300 && CountMatches(farm.coordinator().Stderr(), registered) < 2; ++i) {
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_EQ(CountMatches(farm.coordinator().Stderr(), registered), 2) << farm.Logs();
  std::string out, err;
  ASSERT_EQ(RunCommand(farm.BuildArgv(ctx, args), &out, &err), 0) << err << farm.Logs();
  EXPECT_EQ(StepStarts(err).size(), 0u) << err;
  EXPECT_EQ(ManifestOf(err), first) << err;

  // The same build from scratch, undisturbed, on both workers gives the same bits.
  args.push_back("--no-cache");
  ASSERT_EQ(RunCommand(farm.BuildArgv(ctx, args), &out, &err), 0) << err << farm.Logs();
  EXPECT_EQ(StepStarts(err).size(), 2u) << err;
  EXPECT_EQ(ManifestOf(err), first) << err;
  farm.CleanUp();
}

}  // namespace
}  // namespace stagefarm::testing
