// The coordinator against peers played by the test: a cache server and the coordinator in this
// process over inproc://, clients and workers as raw sockets speaking the wire protocol. What a
// buggy or hostile peer may send, and races real workers rarely hit, are staged here exactly.
#include "stagefarm/coordinator/coordinator.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <deque>
#include <filesystem>
#include <functional>
#include <future>
#include <optional>
#include <thread>

#include "stagefarm/cache/cache_service.h"
#include "stagefarm/common/build_protocol.h"
#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/worker_protocol.h"

namespace stagefarm::coordinator {
namespace {

using namespace std::chrono_literals;
using Kind = BuildEvent::Kind;

// A peer's socket: sends requests with fresh ids, keeps what it receives in order.
class Peer {
 public:
  Peer(Transport& t, const std::string& endpoint) {
    auto s = t.Connect(endpoint);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    socket_ = std::move(s).value();
  }
  uint64_t Send(Method method, std::string body) {
    Message m;
    m.method = method;
    m.request_id = next_id_++;
    m.body = std::move(body);
    EXPECT_TRUE(socket_->Send(m).ok());
    return m.request_id;
  }
  // The next message that `want` accepts, within `timeout`; the others received meanwhile are
  // kept for later calls.
  std::optional<Message> Next(const std::function<bool(const Message&)>& want,
                              std::chrono::milliseconds timeout = 5s) {
    for (auto it = inbox_.begin(); it != inbox_.end(); ++it) {
      if (want(*it)) {
        Message m = std::move(*it);
        inbox_.erase(it);
        return m;
      }
    }
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      Message m;
      StatusOr<bool> got = socket_->Receive(&m, 20ms);
      if (!got.ok() || !*got) continue;
      if (want(m)) return m;
      inbox_.push_back(std::move(m));
    }
    return std::nullopt;
  }
  std::optional<Message> Reply(uint64_t id, std::chrono::milliseconds timeout = 5s) {
    return Next([id](const Message& m) { return m.request_id == id; }, timeout);
  }
  std::optional<Message> Call(Method method, std::string body) {
    return Reply(Send(method, std::move(body)));
  }

 private:
  std::unique_ptr<ClientSocket> socket_;
  uint64_t next_id_ = 1;
  std::deque<Message> inbox_;
};

// A client: submits one build and reads its events.
class Client : public Peer {
 public:
  using Peer::Peer;
  // The build id, or "" when the submission was refused.
  std::string Submit(const BuildRequest& req) {
    auto reply = Call(Method::kSubmitBuild, Encode(req));
    SubmitBuildResponse r;
    if (!reply || !reply->status.ok() || !Decode(reply->body, &r).ok()) return "";
    return r.build_id;
  }
  // The next event of `kind`, skipping others.
  std::optional<BuildEvent> Event(Kind kind, std::chrono::milliseconds timeout = 5s) {
    std::optional<BuildEvent> found;
    Next(
        [&](const Message& m) {
          BuildEvent e;
          if (m.method != Method::kBuildEvent || !Decode(m.body, &e).ok() || e.kind != kind) {
            return false;
          }
          found = std::move(e);
          return true;
        },
        timeout);
    return found;
  }
};

// A successful end of `task`: a layer for each of its steps.
TaskDone Success(const StageTask& task) {
  TaskDone d;
  d.task_id = task.task_id;
  for (size_t i = 0; i < task.steps.size(); ++i) {
    d.layers.push_back(LayerRef{Digest::Of("layer " + std::to_string(i)), Digest::Of("toc")});
    d.seconds.push_back(0.1);
  }
  return d;
}

// What a shutting-down worker answers for a task it stops.
TaskDone HandBack(const StageTask& task) {
  TaskDone d;
  d.task_id = task.task_id;
  d.status = UnavailableError("the worker is shutting down");
  d.handed_back = true;
  return d;
}

// A worker: registers, receives tasks, answers as the test says.
class FakeWorker : public Peer {
 public:
  FakeWorker(Transport& t, const std::string& endpoint, const std::string& name, uint32_t slots,
             std::vector<std::string> running = {})
      : Peer(t, endpoint), name_(name) {
    RegisterWorkerRequest req;
    req.name = name;
    req.slots = slots;
    req.running_tasks = std::move(running);
    auto reply = Call(Method::kRegisterWorker, Encode(req));
    EXPECT_TRUE(reply && reply->status.ok()) << name;
  }
  std::optional<StageTask> Task(std::chrono::milliseconds timeout = 5s) {
    auto m = Next([](const Message& m) { return m.method == Method::kAssignTask; }, timeout);
    StageTask t;
    if (!m || !Decode(m->body, &t).ok()) return std::nullopt;
    return t;
  }
  std::optional<std::string> Cancelled(std::chrono::milliseconds timeout = 5s) {
    auto m = Next([](const Message& m) { return m.method == Method::kCancelTask; }, timeout);
    CancelTaskRequest c;
    if (!m || !Decode(m->body, &c).ok()) return std::nullopt;
    return c.task_id;
  }
  void Done(const TaskDone& d) { Send(Method::kTaskDone, Encode(d)); }
  // A heartbeat saying it runs `running`; whether the coordinator answered it.
  bool Heartbeat(std::vector<std::string> running, bool draining = false) {
    HeartbeatRequest hb;
    hb.name = name_;
    hb.draining = draining;
    hb.running_tasks = std::move(running);
    auto reply = Call(Method::kHeartbeat, Encode(hb));
    return reply && reply->status.ok();
  }
  void Succeed(const StageTask& task) { Done(Success(task)); }

 private:
  std::string name_;
};

class CoordinatorPeersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int n = 0;
    ++n;
    std::string tmpl = (std::filesystem::temp_directory_path() / "sf-coord-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;

    cache::CacheServerOptions co;
    co.data_dir = dir_ + "/cache";
    auto service = cache::CacheService::Open(co, nullptr);
    ASSERT_TRUE(service.ok()) << service.status().ToString();
    cache_service_ = std::move(service).value();
    cache_endpoint_ = Start(cache_thread_, [&](auto ready) {
      return cache_service_->Serve(transport_, "inproc://coord-test-cache-" + std::to_string(n),
                                   false, ready);
    });

    CoordinatorOptions o;
    o.cache_endpoint = cache_endpoint_;
    o.heartbeat_timeout = 60s;  // workers are lost only when a test says so
    o.client_timeout = 60s;
    coordinator_ = std::make_unique<Coordinator>(transport_, o, nullptr);
    endpoint_ = Start(coordinator_thread_, [&](auto ready) {
      return coordinator_->Serve("inproc://coord-test-" + std::to_string(n), false, ready);
    });
    cache_ = ConnectCache(transport_, cache_endpoint_);
  }

  void TearDown() override {
    if (coordinator_) coordinator_->Stop();
    if (coordinator_thread_.joinable()) coordinator_thread_.join();
    if (cache_service_) cache_service_->Stop();
    if (cache_thread_.joinable()) cache_thread_.join();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Runs `serve` on `thread` and returns the endpoint it bound.
  template <typename Serve>
  std::string Start(std::thread& thread, Serve serve) {
    std::promise<std::string> ready;
    auto bound = ready.get_future();
    thread = std::thread([&ready, serve] {
      Status s = serve([&ready](const std::string& e) { ready.set_value(e); });
      EXPECT_TRUE(s.ok()) << s.ToString();
    });
    return bound.get();
  }

  BuildRequest Request(const std::string& dockerfile) {
    BuildRequest req;
    EXPECT_TRUE(cache_->PutBytes(dockerfile, &req.dockerfile).ok());
    return req;
  }

  // A build given to `worker`, cancelled by its client (the worker is told to cancel the task),
  // then submitted again by `again`: the task, the same for both.
  std::optional<StageTask> CancelAndSubmitAgain(FakeWorker& worker, Client& again) {
    Client first(transport_, endpoint_);
    const BuildRequest req = Request("FROM scratch\nRUN make\n");
    std::string id = first.Submit(req);
    auto task = worker.Task();
    auto cancelled = first.Call(Method::kCancelBuild, Encode(CancelBuildRequest{id}));
    if (!task || !cancelled || !cancelled->status.ok() || worker.Cancelled() != task->task_id ||
        again.Submit(req).empty()) {
      ADD_FAILURE() << "cancelling and submitting again";
      return std::nullopt;
    }
    return task;
  }

  // `client` submits a one-step build, which `worker` is given: its task.
  std::optional<StageTask> Submit(Client& client, FakeWorker& worker) {
    if (client.Submit(Request("FROM scratch\nRUN true\n")).empty()) return std::nullopt;
    return worker.Task();
  }

  // `worker` is given `task` and runs it well, which finishes `client`'s build.
  void RunsAndFinishes(FakeWorker& worker, const StageTask& task, Client& client) {
    auto given = worker.Task();
    ASSERT_TRUE(given);
    EXPECT_EQ(given->task_id, task.task_id);
    worker.Succeed(*given);
    EXPECT_TRUE(client.Event(Kind::kBuildDone));
  }

  // The coordinator still answers.
  bool Alive() {
    Peer p(transport_, endpoint_);
    auto reply = p.Call(Method::kPing, "");
    return reply && reply->status.ok();
  }

  std::string dir_;
  Transport transport_;
  std::unique_ptr<cache::CacheService> cache_service_;
  std::thread cache_thread_;
  std::string cache_endpoint_;
  std::unique_ptr<Coordinator> coordinator_;
  std::thread coordinator_thread_;
  std::string endpoint_;
  std::unique_ptr<CacheClient> cache_;
};

// "FROM SCRATCH" is an image name, as in docker build, and an invalid one. Before, the frontend
// took it for scratch and the coordinator looked it up as an image: the coordinator died.
TEST_F(CoordinatorPeersTest, FromUppercaseScratchFailsTheBuildNotTheCoordinator) {
  Client client(transport_, endpoint_);
  ASSERT_NE(client.Submit(Request("FROM SCRATCH\nRUN true\n")), "");
  auto failed = client.Event(Kind::kBuildFailed);
  ASSERT_TRUE(failed);
  EXPECT_NE(failed->error.find("must be lowercase"), std::string::npos) << failed->error;
  EXPECT_TRUE(Alive());
}

TEST_F(CoordinatorPeersTest, SourceDateEpochMustBeANumberOfSeconds) {
  for (std::string bad : {"9223372036854775807", "12abc", "-5", ""}) {
    Client client(transport_, endpoint_);
    BuildRequest req = Request("FROM scratch\nRUN true\n");
    req.build_args["SOURCE_DATE_EPOCH"] = bad;
    ASSERT_NE(client.Submit(req), "");
    auto failed = client.Event(Kind::kBuildFailed);
    ASSERT_TRUE(failed) << bad;
    EXPECT_NE(failed->error.find("invalid SOURCE_DATE_EPOCH \"" + bad + "\""), std::string::npos)
        << failed->error;
  }
  // A good one reaches the worker.
  FakeWorker worker(transport_, endpoint_, "w", 1);
  Client client(transport_, endpoint_);
  BuildRequest req = Request("FROM scratch\nRUN true\n");
  req.build_args["SOURCE_DATE_EPOCH"] = "1700000000";
  ASSERT_NE(client.Submit(req), "");
  auto task = worker.Task();
  ASSERT_TRUE(task);
  EXPECT_EQ(task->source_date_epoch, 1700000000);
}

// Two builds share one task while its step is the second of one stage and the first of the
// other: each build hears of the step at its own place. Before, the second build's events were
// read at the first build's positions, past the end of its stage's steps.
TEST_F(CoordinatorPeersTest, ASharedTaskReportsEachBuildsOwnStepPositions) {
  FakeWorker worker(transport_, endpoint_, "w", 1);
  Client one(transport_, endpoint_), two(transport_, endpoint_);
  ASSERT_NE(one.Submit(Request("FROM scratch\nENV X=1\nRUN make\n")), "");
  auto task = worker.Task();
  ASSERT_TRUE(task);
  ASSERT_EQ(task->steps.size(), 1u);
  ASSERT_NE(two.Submit(Request("FROM scratch AS base\nENV X=1\nFROM base\nRUN make\n")), "");
  auto shared = two.Event(Kind::kStageQueued);
  ASSERT_TRUE(shared);
  EXPECT_EQ(shared->text, "shared with another build");

  TaskEvent started;
  started.task_id = task->task_id;
  started.kind = TaskEvent::Kind::kStepStarted;
  started.step = 0;
  worker.Send(Method::kTaskEvent, Encode(started));
  auto first = one.Event(Kind::kStepStarted), second = two.Event(Kind::kStepStarted);
  ASSERT_TRUE(first && second);
  EXPECT_EQ(first->line, 3);
  EXPECT_EQ(first->step, 1);
  EXPECT_EQ(second->line, 4);
  EXPECT_EQ(second->step, 0);
  EXPECT_EQ(second->text, "RUN make");

  TaskDone failed;
  failed.task_id = task->task_id;
  failed.status = InternalError("exit code 2");
  failed.failed_step = 0;
  failed.exit_code = 2;
  worker.Done(failed);
  auto f1 = one.Event(Kind::kBuildFailed), f2 = two.Event(Kind::kBuildFailed);
  ASSERT_TRUE(f1 && f2);
  EXPECT_EQ(f1->line, 3);
  EXPECT_EQ(f2->line, 4);
  EXPECT_EQ(f2->step, 0);
}

// A worker reconnects under a new connection over and over, each time dropping one of its two
// tasks, until that task runs out of attempts and fails the build; the task the worker keeps
// belonged to the same build. Before, the coordinator then looked up that task, gone with the
// build, and died.
TEST_F(CoordinatorPeersTest, AWorkerReconnectingAfterItsBuildFailedLeavesTheCoordinatorUp) {
  Client client(transport_, endpoint_);
  ASSERT_NE(client.Submit(Request("FROM scratch AS a\nRUN a\nFROM scratch AS b\nRUN b\n"
                                  "FROM a\nCOPY --from=b /b /b\n")),
            "");
  std::vector<std::unique_ptr<FakeWorker>> conns;
  conns.push_back(std::make_unique<FakeWorker>(transport_, endpoint_, "w", 2));
  auto a = conns.back()->Task(), b = conns.back()->Task();
  ASSERT_TRUE(a && b);
  // Attempts 2 and 3, each on a new connection that says it runs nothing.
  for (int attempt = 2; attempt <= 3; ++attempt) {
    conns.push_back(std::make_unique<FakeWorker>(transport_, endpoint_, "w", 2));
    ASSERT_TRUE(conns.back()->Task() && conns.back()->Task()) << attempt;
  }
  // The last connection still runs b; a is lost a third time.
  conns.push_back(std::make_unique<FakeWorker>(transport_, endpoint_, "w", 2,
                                               std::vector<std::string>{b->task_id}));
  auto failed = client.Event(Kind::kBuildFailed);
  ASSERT_TRUE(failed);
  EXPECT_NE(failed->error.find("lost its worker 3 times"), std::string::npos) << failed->error;
  EXPECT_EQ(conns.back()->Cancelled(), b->task_id);  // nobody waits for it any more
  EXPECT_TRUE(Alive());
}

// Only a worker the task was given to may end it. Before, any peer could, and its made-up
// layers went into the image while the real worker was told to cancel.
TEST_F(CoordinatorPeersTest, OnlyAWorkerGivenTheTaskMayReportItDone) {
  FakeWorker worker(transport_, endpoint_, "w", 1);
  Client client(transport_, endpoint_);
  auto task = Submit(client, worker);
  ASSERT_TRUE(task);

  FakeWorker intruder(transport_, endpoint_, "x", 1);
  intruder.Succeed(*task);
  Client stranger(transport_, endpoint_);
  stranger.Send(Method::kTaskDone, Encode(Success(*task)));
  EXPECT_FALSE(client.Event(Kind::kBuildDone, 500ms));
  EXPECT_FALSE(worker.Cancelled(100ms));

  worker.Succeed(*task);
  auto done = client.Event(Kind::kBuildDone);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->stages.back().worker, "w");
}

// Only the client that submitted a build may cancel it. Before, anyone who knew its id could.
TEST_F(CoordinatorPeersTest, OnlyTheSubmittingClientMayCancelABuild) {
  FakeWorker worker(transport_, endpoint_, "w", 1);
  Client owner(transport_, endpoint_), other(transport_, endpoint_);
  std::string id = owner.Submit(Request("FROM scratch\nRUN true\n"));
  ASSERT_NE(id, "");
  ASSERT_TRUE(worker.Task());

  auto refused = other.Call(Method::kCancelBuild, Encode(CancelBuildRequest{id}));
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status.code(), StatusCode::kNotFound);
  EXPECT_FALSE(owner.Event(Kind::kBuildFailed, 300ms));
  EXPECT_FALSE(worker.Cancelled(100ms));

  auto accepted = owner.Call(Method::kCancelBuild, Encode(CancelBuildRequest{id}));
  ASSERT_TRUE(accepted);
  EXPECT_TRUE(accepted->status.ok());
  auto failed = owner.Event(Kind::kBuildFailed);
  ASSERT_TRUE(failed);
  EXPECT_EQ(failed->error, "build cancelled");
  EXPECT_TRUE(worker.Cancelled());
}

// A worker that hands its task back is shutting down, whether or not it said so: the task goes
// elsewhere. Before, it went straight back to the same worker (which holds its base layers), and
// came back again, for ever.
TEST_F(CoordinatorPeersTest, AWorkerThatHandsATaskBackGetsNoMoreTasks) {
  FakeWorker quitter(transport_, endpoint_, "q", 1);
  Client client(transport_, endpoint_);
  auto task = Submit(client, quitter);
  ASSERT_TRUE(task);
  quitter.Done(HandBack(*task));
  EXPECT_FALSE(quitter.Task(500ms));
  // It never said it was draining: the hand-back counts as an attempt.
  auto retried = client.Event(Kind::kStageRetried);
  ASSERT_TRUE(retried);
  EXPECT_NE(retried->text.find("(attempt 2 of 3)"), std::string::npos) << retried->text;

  FakeWorker other(transport_, endpoint_, "o", 1);
  RunsAndFinishes(other, *task, client);
}

// A worker that says it drains and then hands its task back: that was no attempt.
TEST_F(CoordinatorPeersTest, AHandBackWhileDrainingIsNoAttempt) {
  FakeWorker worker(transport_, endpoint_, "w", 1);
  Client client(transport_, endpoint_);
  auto task = Submit(client, worker);
  ASSERT_TRUE(task);
  ASSERT_TRUE(worker.Heartbeat({task->task_id}, /*draining=*/true));
  worker.Done(HandBack(*task));
  auto retried = client.Event(Kind::kStageRetried);
  ASSERT_TRUE(retried);
  EXPECT_NE(retried->text.find("(attempt 1 of 3)"), std::string::npos) << retried->text;
}

// A build is cancelled and the same build submitted again at once (Ctrl-C, then the command
// again): the task, the same work under the same id, must not go to the worker still cancelling
// its run, which would take the new assignment for the one it has and answer it with its
// cancellation. Before, the new build failed with "cancelled".
TEST_F(CoordinatorPeersTest, AResubmittedBuildWaitsForTheCancelledRunToEnd) {
  FakeWorker worker(transport_, endpoint_, "w", 1);
  Client second(transport_, endpoint_);
  auto task = CancelAndSubmitAgain(worker, second);
  ASSERT_TRUE(task);
  EXPECT_FALSE(worker.Task(300ms));  // its run of the task is still being cancelled
  TaskDone cancelled;
  cancelled.task_id = task->task_id;
  cancelled.status = CancelledError("task cancelled");
  worker.Done(cancelled);
  EXPECT_FALSE(second.Event(Kind::kBuildFailed, 200ms));
  RunsAndFinishes(worker, *task, second);  // now it may run it again
}

// The same, when the worker's TaskDone for the cancelled run never comes: a heartbeat that no
// longer lists the task says the run is over.
TEST_F(CoordinatorPeersTest, AHeartbeatWithoutTheCancelledTaskEndsTheWait) {
  FakeWorker worker(transport_, endpoint_, "w", 1);
  Client second(transport_, endpoint_);
  auto task = CancelAndSubmitAgain(worker, second);
  ASSERT_TRUE(task);

  ASSERT_TRUE(worker.Heartbeat({task->task_id}));
  EXPECT_FALSE(worker.Task(300ms));  // still running it: still waits
  EXPECT_FALSE(worker.Cancelled(100ms));  // and is not told twice
  ASSERT_TRUE(worker.Heartbeat({}));
  auto again = worker.Task();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->task_id, task->task_id);
}

}  // namespace
}  // namespace stagefarm::coordinator
