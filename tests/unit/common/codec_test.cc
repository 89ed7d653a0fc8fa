// Round trips of every wire message, and malformed bytes answered with errors, never a crash.
#include <gtest/gtest.h>

#include <random>

#include "stagefarm/common/build_protocol.h"
#include "stagefarm/common/message.h"
#include "stagefarm/common/worker_protocol.h"

namespace stagefarm {
namespace {

Digest D(char c, uint64_t size) { return Digest{std::string(64, c), size}; }

StageTask SampleTask() {
  StageTask t;
  t.task_id = "task-1";
  t.build_id = "build-1";
  t.stage = "build";
  t.base_layers = {LayerRef{D('a', 10), D('b', 20)}};
  StepSpec run;
  run.key = "k1";
  run.kind = StepKind::kRun;
  run.line = 3;
  run.text = "RUN make";
  run.created_by = "RUN /bin/sh -c make # buildkit";
  run.env = {"PATH=/bin", "A=b"};
  run.user = "app";
  run.workdir = "/src";
  run.argv = {"/bin/sh", "-c", "make"};
  run.network = "none";
  StepSpec copy;
  copy.key = "k2";
  copy.kind = StepKind::kCopy;
  copy.sources = {"a", "b/*"};
  copy.dest = "/x/";
  copy.chown = "1:2";
  copy.chmod = "0755";
  copy.context_root = D('c', 99);
  copy.from_layers = {LayerRef{D('d', 1), D('e', 2)}};
  copy.remote_files = {RemoteFile{"https://example.com/a.tgz", D('f', 5), 1700000001},
                       RemoteFile{"git://h/r#v1", D('f', 6), 1600000000,
                                  "92ecbf1ffcc322d4e27c0a210ba0f39b14039c4e", true}};
  copy.heredocs = {HeredocFile{"EOF", std::string("line\n\0bytes", 11)}, HeredocFile{"B", ""}};
  copy.parents = true;
  copy.excludes = {"*.md", "!keep.md"};
  copy.unpack = false;
  copy.link = true;
  StepSpec add = copy;
  add.key = "k2b";
  add.kind = StepKind::kAdd;
  add.unpack = true;
  StepSpec workdir;
  workdir.key = "k3";
  workdir.kind = StepKind::kWorkdir;
  workdir.text = "WORKDIR /srv/app";
  workdir.created_by = "WORKDIR /srv/app";
  workdir.user = "1000:1000";
  workdir.workdir = "/srv/app";
  t.steps = {run, copy, add, workdir};
  t.source_date_epoch = 1700000000;
  t.timeout_seconds = 60;
  return t;
}

template <typename T>
T RoundTrip(const T& in) {
  T out;
  Status s = Decode(Encode(in), &out);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

TEST(WorkerCodec, StageTaskRoundTrips) {
  StageTask t = SampleTask();
  EXPECT_EQ(RoundTrip(t), t);
}

TEST(WorkerCodec, TaskDoneRoundTripsWithStatus) {
  TaskDone d;
  d.task_id = "t";
  d.status = Status(StatusCode::kAborted, "exit code 3");
  d.failed_step = 1;
  d.exit_code = 3;
  d.layers = {LayerRef{D('1', 5), D('2', 6)}};
  d.seconds = {1.5};
  d.log_tail = std::string("bin\0ary", 7);
  EXPECT_EQ(RoundTrip(d), d);
  d.handed_back = true;
  EXPECT_TRUE(RoundTrip(d).handed_back);
}

TEST(WorkerCodec, HeartbeatCarriesDraining) {
  HeartbeatRequest hb;
  hb.name = "w1";
  hb.busy_slots = 1;
  hb.running_tasks = {"t1"};
  hb.layers = {"ab"};
  HeartbeatRequest back = RoundTrip(hb);
  EXPECT_FALSE(back.draining);
  EXPECT_EQ(back.running_tasks, hb.running_tasks);
  hb.draining = true;
  EXPECT_TRUE(RoundTrip(hb).draining);
}

TEST(WorkerCodec, TaskEventAndRegisterRoundTrip) {
  TaskEvent e;
  e.task_id = "t";
  e.kind = TaskEvent::Kind::kStepDone;
  e.step = 2;
  e.log = "log";
  e.seconds = 1.25;
  e.layer = LayerRef{D('f', 7), D('0', 8)};
  EXPECT_EQ(RoundTrip(e), e);
  RegisterWorkerRequest r;
  r.name = "w1";
  r.slots = 4;
  r.platform = "linux/amd64";
  r.labels = {{"size", "large"}};
  RegisterWorkerRequest r2 = RoundTrip(r);
  EXPECT_EQ(r2.name, "w1");
  EXPECT_EQ(r2.slots, 4u);
  EXPECT_EQ(r2.labels.at("size"), "large");
}

TEST(BuildCodec, RequestAndEventRoundTrip) {
  BuildRequest r;
  r.context_root = D('1', 1);
  r.dockerfile = D('2', 2);
  r.dockerfile_name = "Dockerfile";
  r.build_args = {{"A", "1"}};
  r.target = "t";
  r.tags = {"hello"};
  r.labels = {{"l", "v"}};
  r.no_cache = true;
  r.no_cache_filter = {"x"};
  r.network = "none";
  r.worker_constraints = {{"size", "large"}, {"gpu", "yes"}};
  r.remote_files = {RemoteFile{"http://127.0.0.1:8/x", D('4', 4), 0},
                    RemoteFile{"https://h/y?z=1", D('5', 5), 1700000000},
                    RemoteFile{"https://h/r.git", D('6', 6), 1,
                               "e0b5ce6fe5308b793cfd6b388255fb3d93322cd6"}};
  EXPECT_EQ(RoundTrip(r), r);
  BuildEvent e;
  e.kind = BuildEvent::Kind::kBuildDone;
  e.manifest = D('3', 3);
  e.stages = {StageSummary{"one", "w1", false, 1.5, 100}};
  EXPECT_EQ(RoundTrip(e), e);
}

TEST(Codec, RejectsUnknownEnumValues) {
  // A peer speaking a newer protocol (or garbage) may send values this build does not know.
  TaskEvent e;
  e.kind = static_cast<TaskEvent::Kind>(99);
  TaskEvent out;
  EXPECT_EQ(Decode(Encode(e), &out).code(), StatusCode::kInvalidArgument);
  StageTask t = SampleTask();
  t.steps[0].kind = static_cast<StepKind>(42);
  StageTask t_out;
  EXPECT_EQ(Decode(Encode(t), &t_out).code(), StatusCode::kInvalidArgument);
  // The first value past the last known step kind.
  t.steps[0].kind = static_cast<StepKind>(static_cast<uint8_t>(StepKind::kWorkdir) + 1);
  EXPECT_EQ(Decode(Encode(t), &t_out).code(), StatusCode::kInvalidArgument);
  BuildEvent be;
  be.kind = static_cast<BuildEvent::Kind>(200);
  BuildEvent be_out;
  EXPECT_EQ(Decode(Encode(be), &be_out).code(), StatusCode::kInvalidArgument);
}

TEST(Codec, MalformedBytesAreErrorsNotCrashes) {
  std::mt19937 rng(42);
  std::string good = Encode(SampleTask());
  for (int i = 0; i < 2000; ++i) {
    std::string b = good;
    int flips = 1 + static_cast<int>(rng() % 8);
    for (int f = 0; f < flips; ++f) b[rng() % b.size()] = static_cast<char>(rng());
    if (rng() % 4 == 0) b.resize(rng() % b.size());
    StageTask out;
    Decode(b, &out).IgnoreError();  // must not crash, whatever it returns
  }
  StageTask out;
  EXPECT_FALSE(Decode("", &out).ok());
  EXPECT_FALSE(Decode("1234567", &out).ok());  // not whole words
  EXPECT_FALSE(Decode(std::string(64, '\xff'), &out).ok());
}

TEST(WorkerCodec, RunMountsAndSecretsRoundTrip) {
  StageTask t = SampleTask();
  MountSpec cache;
  cache.type = MountSpec::Type::kCache;
  cache.target = "/root/.cache";
  cache.id = "go-build";
  cache.sharing = "locked";
  cache.mode = 0700;
  cache.uid = 1000;
  cache.gid = 1000;
  cache.source = "seed";
  cache.from_layers = {LayerRef{D('4', 4), D('5', 5)}};
  MountSpec bind;
  bind.target = "src";
  bind.source = "app";
  bind.readonly = true;
  bind.context_root = D('6', 6);
  MountSpec tmpfs;
  tmpfs.type = MountSpec::Type::kTmpfs;
  tmpfs.target = "/tmp";
  tmpfs.size_limit = 64 << 20;
  MountSpec secret;
  secret.type = MountSpec::Type::kSecret;
  secret.id = "tok";
  secret.env = "TOKEN";
  secret.required = true;
  t.steps[0].mounts = {cache, bind, tmpfs, secret};
  t.secrets = {{"tok", std::string("s3cr\0t\n", 7)}, {"other", ""}};
  StageTask out = RoundTrip(t);
  EXPECT_EQ(out, t);
  EXPECT_EQ(out.secrets.at("tok").size(), 7u) << "secret values are bytes, NULs included";
  EXPECT_EQ(out.steps[0].mounts[0].mode, 0700);
  EXPECT_EQ(out.steps[0].mounts[2].uid, -1) << "unset uid stays unset";
}

TEST(WorkerCodec, RejectsUnknownMountTypeAndBadMode) {
  StageTask t = SampleTask();
  MountSpec m;
  m.type = static_cast<MountSpec::Type>(9);
  m.target = "/x";
  t.steps[0].mounts = {m};
  StageTask out;
  Status s = Decode(Encode(t), &out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("unknown mount type 9"), std::string::npos) << s.ToString();
  t.steps[0].mounts[0].type = MountSpec::Type::kCache;
  t.steps[0].mounts[0].mode = 070000;
  s = Decode(Encode(t), &out);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("mount /x"), std::string::npos) << s.ToString();
}

TEST(BuildCodec, RequestCarriesSecrets) {
  BuildRequest r;
  r.dockerfile = D('2', 2);
  r.secrets = {{"tok", "value"}, {"bin", std::string("\0\xff", 2)}};
  BuildRequest out = RoundTrip(r);
  EXPECT_EQ(out, r);
  EXPECT_EQ(out.secrets.at("bin"), std::string("\0\xff", 2));
}

TEST(Envelope, FramesRoundTrip) {
  Message m;
  m.method = Method::kReadBlob;
  m.request_id = 77;
  m.status = NotFoundError("no blob");
  m.body = "body";
  m.data = {"chunk1", std::string(1000, 'z')};
  Message out;
  ASSERT_TRUE(DecodeFrames(EncodeFrames(m), &out).ok());
  EXPECT_EQ(out.method, Method::kReadBlob);
  EXPECT_EQ(out.request_id, 77u);
  EXPECT_EQ(out.status.code(), StatusCode::kNotFound);
  EXPECT_EQ(out.status.message(), "no blob");
  EXPECT_EQ(out.body, "body");
  EXPECT_EQ(out.data, m.data);
}

// A Frame's bytes are shared, never copied, once it holds them: copies and moves point at the
// same bytes, a string's buffer is taken over, and short strings (kept inside the string
// object) stay valid when the Frame moves.
TEST(Frame, SharesItsBytes) {
  std::string big(100000, 'q');
  const char* buffer = big.data();
  Frame f(std::move(big));
  EXPECT_EQ(f.data(), buffer);  // the string's buffer, not a copy of it
  Frame copy = f;
  EXPECT_EQ(copy.data(), f.data());
  EXPECT_EQ(copy, f);
  Frame moved = std::move(copy);
  EXPECT_EQ(moved.data(), buffer);
  EXPECT_EQ(moved.view(), std::string(100000, 'q'));

  std::vector<Frame> frames;
  frames.emplace_back(std::string("short"));
  for (int i = 0; i < 100; ++i) frames.emplace_back(std::to_string(i));  // reallocates, moving
  EXPECT_EQ(frames[0].view(), "short");
  EXPECT_EQ(frames[42].view(), "41");

  auto owner = std::make_shared<std::string>("held elsewhere");
  Frame borrowed(owner, std::string_view(*owner).substr(5));
  std::weak_ptr<std::string> alive = owner;
  owner.reset();
  EXPECT_EQ(borrowed.view(), "elsewhere");  // the Frame keeps its owner alive
  EXPECT_FALSE(alive.expired());
  borrowed = Frame();
  EXPECT_TRUE(alive.expired());
  EXPECT_TRUE(borrowed.empty());
}

TEST(Envelope, RejectsWrongVersionAndShortMessages) {
  Message out;
  EXPECT_FALSE(DecodeFrames({"only one frame"}, &out).ok());
  EXPECT_FALSE(DecodeFrames({"garbage!", ""}, &out).ok());
}

}  // namespace
}  // namespace stagefarm
