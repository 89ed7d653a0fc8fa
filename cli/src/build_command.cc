#include "stagefarm/cli/build_command.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <set>
#include <sstream>

#include <CLI/CLI.hpp>

#include "stagefarm/cli/commands.h"
#include "stagefarm/cli/progress.h"
#include "stagefarm/common/build_protocol.h"
#include "stagefarm/common/context_tree.h"
#include "stagefarm/common/dockerignore.h"
#include "stagefarm/common/image_import.h"
#include "stagefarm/common/image_ref.h"

namespace stagefarm::cli {
namespace {

std::atomic<bool> g_interrupted{false};
void OnInterrupt(int) { g_interrupted = true; }

struct UsageError {
  std::string message;
};

StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// "type=oci,dest=x.tar" -> {type: oci, dest: x.tar}; a bare path means type=local,dest=path.
std::map<std::string, std::string> ParseOutput(const std::string& spec) {
  std::map<std::string, std::string> out;
  if (spec.find('=') == std::string::npos) {
    out["type"] = "local";
    out["dest"] = spec;
    return out;
  }
  std::stringstream ss(spec);
  std::string kv;
  while (std::getline(ss, kv, ',')) {
    size_t eq = kv.find('=');
    out[kv.substr(0, eq)] = eq == std::string::npos ? "" : kv.substr(eq + 1);
  }
  return out;
}

// Hashes the context and uploads what the store lacks. Returns the root digest.
StatusOr<Digest> UploadContext(CacheClient& cache, const std::string& dir, PlainProgress& progress) {
  DockerIgnore ignore;
  if (StatusOr<std::string> text = ReadFile(dir + "/.dockerignore"); text.ok()) {
    SF_ASSIGN_OR_RETURN(ignore, DockerIgnore::Parse(*text));
  }
  std::vector<ContextBlob> blobs;
  uint64_t files = 0, bytes = 0;
  SF_ASSIGN_OR_RETURN(
      Digest root,
      HashContextDir(
          dir, [&](const std::string& rel) { return !ignore.empty() && ignore.Excluded(rel); },
          [&](ContextBlob b) {
            if (!b.path.empty()) {
              ++files;
              bytes += b.digest.size;
            }
            blobs.push_back(std::move(b));
          }));
  std::vector<Digest> digests;
  for (const ContextBlob& b : blobs) digests.push_back(b.digest);
  std::vector<Digest> missing;
  constexpr size_t kBatch = 1000;
  for (size_t i = 0; i < digests.size(); i += kBatch) {
    std::vector<Digest> batch(digests.begin() + i,
                              digests.begin() + std::min(digests.size(), i + kBatch));
    SF_ASSIGN_OR_RETURN(std::vector<Digest> m, cache.FindMissing(batch));
    missing.insert(missing.end(), m.begin(), m.end());
  }
  std::set<std::string> want;
  for (const Digest& d : missing) want.insert(d.hex);
  uint64_t sent = 0, sent_bytes = 0;
  for (const ContextBlob& b : blobs) {
    if (!want.erase(b.digest.hex)) continue;
    if (!b.path.empty()) {
      SF_RETURN_IF_ERROR(cache.PutFile(b.path, b.digest).Annotate("uploading " + b.path));
    } else {
      SF_RETURN_IF_ERROR(cache.PutBytes(b.bytes));
    }
    ++sent;
    sent_bytes += b.digest.size;
  }
  progress.Note("context: " + std::to_string(files) + " files, " + HumanSize(bytes) +
                "; uploaded " + std::to_string(sent) + " blobs, " + HumanSize(sent_bytes));
  return root;
}

Status Export(CacheClient& cache, const BuildEvent& done, const BuildFlags& flags,
              PlainProgress& progress) {
  std::vector<std::string> names;
  for (const std::string& t : flags.tags) names.push_back(NormalizeImageRef(t));
  for (const std::string& spec : flags.outputs) {
    auto o = ParseOutput(spec);
    const std::string& type = o["type"];
    if (type == "oci") {
      if (o["dest"].empty()) return InvalidArgumentError("-o type=oci needs dest=FILE");
      std::vector<std::string> refs = names;
      if (!o["name"].empty()) refs.insert(refs.begin(), NormalizeImageRef(o["name"]));
      SF_RETURN_IF_ERROR(ExportOciArchive(cache, done.manifest, refs, o["dest"]));
      progress.Note("exported OCI archive to " + o["dest"]);
    } else {
      return UnimplementedError("output type \"" + type +
                                "\" is not supported yet (supported: type=oci,dest=FILE)");
    }
  }
  for (const std::string& n : names) progress.Note("naming to " + n);
  if (!flags.iidfile.empty()) {
    std::ofstream out(flags.iidfile);
    out << done.config.str();
    if (!out) return ErrnoError("write " + flags.iidfile, errno);
  }
  return Status();
}

}  // namespace

int RunBuild(const BuildFlags& flags) {
  PlainProgress progress(stderr, flags.quiet);
  auto fail = [&](const Status& s, int code) {
    std::fprintf(stderr, "ERROR: %s\n", s.message().c_str());
    return code;
  };
  for (const std::string& spec : flags.outputs) {
    std::string type = ParseOutput(spec)["type"];
    if (type != "oci") {
      return fail(InvalidArgumentError("output type \"" + type +
                                       "\" is not supported yet (supported: type=oci,dest=FILE)"),
                  2);
    }
  }
  BuildRequest req;
  for (const std::string& a : flags.build_args) {
    size_t eq = a.find('=');
    if (eq == std::string::npos) {
      // docker build takes a bare KEY from the environment, and drops it when unset.
      if (const char* v = std::getenv(a.c_str())) req.build_args[a] = v;
    } else {
      req.build_args[a.substr(0, eq)] = a.substr(eq + 1);
    }
  }
  for (const std::string& l : flags.labels) {
    size_t eq = l.find('=');
    req.labels[l.substr(0, eq)] = eq == std::string::npos ? "" : l.substr(eq + 1);
  }
  req.target = flags.target;
  req.tags = flags.tags;
  req.no_cache = flags.no_cache;
  req.no_cache_filter = flags.no_cache_filter;
  req.platform = flags.platform;
  req.network = flags.network;
  req.dockerfile_name = flags.file.empty() ? "Dockerfile" : flags.file;

  std::string dockerfile_text;
  if (flags.file == "-") {
    dockerfile_text.assign(std::istreambuf_iterator<char>(std::cin), {});
  } else {
    std::string path = flags.file.empty() ? flags.context + "/Dockerfile" : flags.file;
    StatusOr<std::string> text = ReadFile(path);
    if (!text.ok()) return fail(NotFoundError("cannot read Dockerfile " + path), 2);
    dockerfile_text = std::move(*text);
  }

  Transport transport;
  StatusOr<FarmConnection> conn = ConnectFarm(transport, flags.farm, /*need_coordinator=*/true);
  if (!conn.ok()) return fail(conn.status(), 1);
  if (conn->embedded) progress.Note("using the embedded farm in " +
                                    (flags.farm.home.empty() ? DefaultHome() : flags.farm.home));
  std::unique_ptr<CacheClient> cache = ConnectCache(transport, conn->cache_endpoint);

  StatusOr<Digest> root = UploadContext(*cache, flags.context, progress);
  if (!root.ok()) return fail(root.status().Annotate("build context"), 1);
  req.context_root = *root;
  Status put = cache->PutBytes(dockerfile_text, &req.dockerfile);
  if (!put.ok()) return fail(put.Annotate("uploading the Dockerfile"), 1);

  StatusOr<std::unique_ptr<ClientSocket>> sock = transport.Connect(conn->coordinator_endpoint);
  if (!sock.ok()) return fail(sock.status(), 1);
  RpcChannel rpc(std::move(*sock));
  Message submit;
  submit.method = Method::kSubmitBuild;
  submit.body = Encode(req);
  StatusOr<uint64_t> id = rpc.SendRequest(std::move(submit));
  if (!id.ok()) return fail(id.status(), 1);
  StatusOr<Message> accepted = rpc.AwaitReply(*id, std::chrono::seconds(30));
  if (!accepted.ok()) return fail(accepted.status().Annotate("submitting the build"), 1);
  SubmitBuildResponse sub;
  if (Status s = Decode(accepted->body, &sub); !s.ok()) return fail(s, 1);

  struct sigaction sa = {};
  sa.sa_handler = OnInterrupt;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  auto last_heard = std::chrono::steady_clock::now();
  auto last_ping = last_heard;
  for (;;) {
    if (g_interrupted) {
      Message cancel;
      cancel.method = Method::kCancelBuild;
      cancel.body = Encode(CancelBuildRequest{sub.build_id});
      rpc.Call(std::move(cancel), std::chrono::seconds(2)).status().IgnoreError();  // best effort
      std::fprintf(stderr, "ERROR: build cancelled\n");
      return 130;
    }
    Message m;
    StatusOr<bool> got = rpc.socket().Receive(&m, std::chrono::milliseconds(200));
    if (!got.ok()) return fail(got.status(), 1);
    auto silent = std::chrono::steady_clock::now() - last_heard;
    if (!*got) {
      // A quiet step is normal; a coordinator that stops answering pings is not.
      if (silent > std::chrono::seconds(60)) {
        return fail(UnavailableError("lost the coordinator at " + conn->coordinator_endpoint +
                                     ": no answer for 60 s"),
                    1);
      }
      if (silent > std::chrono::seconds(5) &&
          std::chrono::steady_clock::now() - last_ping > std::chrono::seconds(5)) {
        Message ping;
        ping.method = Method::kPing;
        rpc.SendRequest(std::move(ping)).status().IgnoreError();  // failure shows as silence
        last_ping = std::chrono::steady_clock::now();
      }
      continue;
    }
    last_heard = std::chrono::steady_clock::now();
    if (m.method != Method::kBuildEvent || m.request_id != *id) continue;
    BuildEvent e;
    if (Status s = Decode(m.body, &e); !s.ok()) return fail(s, 1);
    progress.OnEvent(e);
    if (e.kind == BuildEvent::Kind::kBuildFailed) return 1;
    if (e.kind == BuildEvent::Kind::kBuildDone) {
      Status s = Export(*cache, e, flags, progress);
      if (!s.ok()) return fail(s, 1);
      if (flags.quiet) std::printf("%s\n", e.config.str().c_str());
      return 0;
    }
  }
}

void AddBuildCommand(CLI::App& app, CommandContext& ctx) {
  auto bf = std::make_shared<BuildFlags>();
  CLI::App* cmd = app.add_subcommand("build", "build a Dockerfile (docker build's flags)");
  cmd->add_option("PATH", bf->context, "build context directory")->required();
  cmd->add_option("-f,--file", bf->file, "Dockerfile (default PATH/Dockerfile; - for stdin)");
  cmd->add_option("-t,--tag", bf->tags, "name:tag for the result (repeatable)");
  cmd->add_option("--build-arg", bf->build_args, "KEY=VALUE or KEY (repeatable)");
  cmd->add_option("--target", bf->target, "stage to build");
  cmd->add_option("--label", bf->labels, "KEY=VALUE label on the image (repeatable)");
  cmd->add_flag("--no-cache", bf->no_cache, "do not use cached steps");
  cmd->add_option("--no-cache-filter", bf->no_cache_filter, "stages not to use the cache for");
  cmd->add_option("--platform", bf->platform, "target platform (linux/amd64)");
  cmd->add_option("--progress", bf->progress, "auto, plain, tty or quiet");
  cmd->add_flag("-q,--quiet", bf->quiet, "print only the image ID");
  cmd->add_option("--iidfile", bf->iidfile, "write the image ID to this file");
  cmd->add_option("-o,--output", bf->outputs, "type=oci,dest=FILE");
  cmd->add_option("--network", bf->network, "network for RUN: default or none");
  AddFarmFlags(cmd, ctx);
  cmd->callback([&ctx, bf] {
    ctx.run = [&ctx, bf] {
      bf->farm = ctx.farm;
      if (bf->progress == "quiet") bf->quiet = true;
      return RunBuild(*bf);
    };
  });
}

}  // namespace stagefarm::cli
