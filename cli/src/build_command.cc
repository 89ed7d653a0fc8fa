#include "stagefarm/cli/build_command.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <thread>
#include <mutex>
#include <functional>
#include <set>
#include <sstream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <optional>

#include "stagefarm/cli/add_urls.h"
#include "stagefarm/cli/commands.h"
#include "stagefarm/cli/label_flags.h"
#include "stagefarm/cli/progress.h"
#include "stagefarm/cli/registry_commands.h"
#include "stagefarm/common/build_protocol.h"
#include "stagefarm/common/context_tree.h"
#include "stagefarm/common/dockerignore.h"
#include "stagefarm/common/image_export.h"
#include "stagefarm/common/image_import.h"
#include "stagefarm/common/layer_tar.h"
#include "stagefarm/common/image_ref.h"

namespace stagefarm::cli {
namespace {

std::atomic<bool> g_interrupted{false};
void OnInterrupt(int) { g_interrupted = true; }

// A directory for a context read from stdin, removed with the object.
class TempContextDir {
 public:
  TempContextDir() = default;
  TempContextDir(const TempContextDir&) = delete;
  TempContextDir& operator=(const TempContextDir&) = delete;
  ~TempContextDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);  // best effort: only disk
  }
  Status Make() {
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/stagefarm-context-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) return ErrnoError("mkdtemp " + tmpl, errno);
    path_ = tmpl;
    return Status();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
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
    out["type"] = spec == "-" ? "tar" : "local";
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

// One -o, checked before anything is built.
struct OutputSpec {
  std::string type;  // oci, docker, local, tar, image
  std::string dest;
  std::vector<std::string> names;  // name=, comma-separated in docker's syntax
  bool push = false;
  bool as_tar = true;  // oci: tar=false writes a layout directory
  LayerCompression compression = LayerCompression::kUncompressed;
};

constexpr const char* kOutputHelp =
    "use -o type=oci|docker|tar,dest=FILE, -o type=oci,tar=false,dest=DIR, "
    "-o type=local,dest=DIR or -o type=image,name=NAME";

StatusOr<OutputSpec> CheckOutput(const std::string& spec) {
  auto o = ParseOutput(spec);
  OutputSpec out;
  out.type = o["type"];
  out.dest = o["dest"];
  static const std::set<std::string> kTypes = {"oci", "docker", "local", "tar", "image"};
  if (!kTypes.count(out.type)) {
    return InvalidArgumentError("-o " + spec + ": unknown output type \"" + out.type + "\"; " +
                                kOutputHelp);
  }
  if (out.type != "image" && out.dest.empty()) {
    return InvalidArgumentError("-o " + spec + ": type=" + out.type + " needs dest=PATH");
  }
  if (out.dest == "-") {
    return InvalidArgumentError("-o " + spec + ": writing to stdout is not supported; " +
                                "give dest=FILE");
  }
  std::stringstream names(o["name"]);
  for (std::string n; std::getline(names, n, ',');) {
    if (n.empty()) continue;
    if (Status s = CheckImageRef(n); !s.ok()) {
      return InvalidArgumentError("-o " + spec + ": invalid name \"" + n + "\": " + s.message());
    }
    out.names.push_back(n);
  }
  out.push = o["push"] == "true";
  if (out.push && out.type != "image") {
    return InvalidArgumentError("-o " + spec + ": push=true applies to type=image,name=REF");
  }
  if (out.push) out.compression = LayerCompression::kGzip;  // what registries expect by default
  out.as_tar = o["tar"] != "false";
  if (o.count("compression")) {
    SF_ASSIGN_OR_RETURN(out.compression, ParseLayerCompression(o["compression"]));
    if (out.type == "local" || out.type == "tar") {
      return InvalidArgumentError("-o " + spec + ": compression= applies to image outputs " +
                                  "(oci, docker), not to a filesystem");
    }
  }
  if (out.type == "image" && out.names.empty()) {
    return InvalidArgumentError("-o " + spec + ": type=image needs name=NAME[:TAG] (or use -t)");
  }
  return out;
}

// Hashes the context and uploads what the store lacks, on kUploaders connections at once (made
// with `connect`), with a progress bar. Returns the root digest.
constexpr int kUploaders = 4;
constexpr uint64_t kContextBarBytes = 16 << 20;  // smaller contexts upload without a bar
StatusOr<Digest> UploadContext(CacheClient& cache,
                               const std::function<std::unique_ptr<CacheClient>()>& connect,
                               const std::string& dir, const std::string& dockerfile,
                               Progress& progress) {
  SF_ASSIGN_OR_RETURN(DockerIgnore ignore, LoadDockerIgnore(dir, dockerfile));
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
          },
          [&](const std::string& rel) { return ignore.MayReincludeUnder(rel); }));
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
  std::vector<const ContextBlob*> todo;
  uint64_t total_bytes = 0;
  for (const ContextBlob& b : blobs) {
    if (!want.erase(b.digest.hex)) continue;
    todo.push_back(&b);
    total_bytes += b.digest.size;
  }
  // Each uploader takes the next blob; the first error stops them all.
  std::mutex mu;  // guards next, sent_bytes, failure and progress
  size_t next = 0;
  uint64_t sent_bytes = 0;
  Status failure;
  auto upload = [&](CacheClient& client) {
    for (;;) {
      const ContextBlob* b = nullptr;
      {
        std::lock_guard lock(mu);
        if (next == todo.size() || !failure.ok()) return;
        b = todo[next++];
      }
      Status s = b->path.empty() ? client.PutBytes(b->bytes)
                                 : client.PutFile(b->path, b->digest).Annotate("uploading " + b->path);
      std::lock_guard lock(mu);
      if (!s.ok()) {
        if (failure.ok()) failure = s;
        return;
      }
      sent_bytes += b->digest.size;
      if (total_bytes >= kContextBarBytes) progress.Transfer("uploading context", sent_bytes, total_bytes);
    }
  };
  std::vector<std::thread> uploaders;
  if (todo.size() > 1) {
    for (int i = 1; i < kUploaders; ++i) {
      uploaders.emplace_back([&] {
        std::unique_ptr<CacheClient> client = connect();
        upload(*client);
      });
    }
  }
  upload(cache);
  for (std::thread& t : uploaders) t.join();
  SF_RETURN_IF_ERROR(failure);
  const uint64_t sent = todo.size();
  progress.Note("context: " + std::to_string(files) + " files, " + HumanSize(bytes) +
                "; uploaded " + std::to_string(sent) + " blobs, " + HumanSize(sent_bytes));
  return root;
}

// BuildKit's --metadata-file keys, for scripts that read them.
std::string BuildMetadata(const BuildEvent& done, const std::vector<std::string>& names) {
  nlohmann::json j;
  j["containerimage.digest"] = done.manifest.str();
  j["containerimage.config.digest"] = done.config.str();
  j["containerimage.descriptor"] = {{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                                    {"digest", done.manifest.str()},
                                    {"size", done.manifest.size}};
  if (!names.empty()) {
    std::string joined;
    for (const std::string& n : names) joined += (joined.empty() ? "" : ",") + n;
    j["image.name"] = joined;
  }
  return j.dump(2) + "\n";
}

Status WriteSmallFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  out.close();
  if (!out) return ErrnoError("write " + path, errno);
  return Status();
}

Status Export(CacheClient& cache, const BuildEvent& done, const BuildFlags& flags,
              const std::vector<OutputSpec>& outputs, Progress& progress) {
  std::vector<std::string> names;
  for (const std::string& t : flags.tags) names.push_back(NormalizeImageRef(t));
  for (const OutputSpec& o : outputs) {
    std::vector<std::string> refs;
    for (const std::string& n : o.names) refs.push_back(NormalizeImageRef(n));
    refs.insert(refs.end(), names.begin(), names.end());
    ImageExportOptions opts{refs, o.compression};
    if (o.type == "oci") {
      SF_RETURN_IF_ERROR(ExportOciImage(cache, done.manifest, opts, o.dest, o.as_tar));
      progress.Note("exported OCI image " + std::string(o.as_tar ? "archive" : "layout") +
                    " to " + o.dest);
    } else if (o.type == "docker") {
      SF_RETURN_IF_ERROR(ExportDockerArchive(cache, done.manifest, opts, o.dest));
      progress.Note("exported docker image archive to " + o.dest);
    } else if (o.type == "local" || o.type == "tar") {
      SF_RETURN_IF_ERROR(ExportRootfs(cache, done.manifest, o.dest, o.type == "tar"));
      progress.Note("exported the image's filesystem to " + o.dest);
    } else if (o.type == "image") {
      for (const std::string& r : refs) {
        SF_RETURN_IF_ERROR(cache.PutRef(r, done.manifest));
        progress.Note("naming to " + FamiliarImageRef(r));
        if (!o.push) continue;
        SF_RETURN_IF_ERROR(PushStoredImage(cache, done.manifest, r, o.compression,
                                           flags.insecure_registries,
                                           [&](const std::string& line) { progress.Note(line); }));
      }
    }
  }
  for (const std::string& n : names) progress.Note("naming to " + n);
  if (!flags.iidfile.empty()) {
    SF_RETURN_IF_ERROR(WriteSmallFile(flags.iidfile, done.config.str()));
  }
  if (!flags.metadata_file.empty()) {
    SF_RETURN_IF_ERROR(WriteSmallFile(flags.metadata_file, BuildMetadata(done, names)));
  }
  return Status();
}

// `stagefarm build -`: stdin is a context tarball (plain, gzip or zstd), or a Dockerfile with an
// empty context, as docker build takes it. Unpacks into `dir`; returns the Dockerfile text when
// stdin was one.
StatusOr<std::optional<std::string>> ContextFromStdin(const std::string& dir) {
  std::string bytes(std::istreambuf_iterator<char>(std::cin), {});
  auto is_archive = [&] {
    if (bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
        static_cast<unsigned char>(bytes[1]) == 0x8b) {
      return true;  // gzip
    }
    if (bytes.size() >= 4 && bytes.compare(0, 4, "\x28\xb5\x2f\xfd") == 0) return true;  // zstd
    return bytes.size() >= 263 && bytes.compare(257, 5, "ustar") == 0;
  };
  std::filesystem::create_directories(dir + "/context");
  if (!is_archive()) return std::optional<std::string>(std::move(bytes));
  const std::string tar = dir + "/context.tar";
  SF_RETURN_IF_ERROR(WriteSmallFile(tar, bytes));
  SF_RETURN_IF_ERROR(ExtractLayer(tar, dir + "/context").Annotate("unpacking the context from stdin"));
  return std::optional<std::string>();
}

// --secret id=ID[,src=PATH|,env=VAR][,type=file|env] -> (id, value), as docker buildx reads it:
// with neither src nor env, the variable named ID if set, else the file named ID.
StatusOr<std::pair<std::string, std::string>> ReadSecret(const std::string& spec) {
  const std::string where = "--secret " + spec + ": ";
  std::string id, src, env, type;
  std::stringstream ss(spec);
  for (std::string kv; std::getline(ss, kv, ',');) {
    size_t eq = kv.find('=');
    std::string key = kv.substr(0, eq), value = eq == std::string::npos ? "" : kv.substr(eq + 1);
    if (key == "id") {
      id = value;
    } else if (key == "src" || key == "source") {
      src = value;
    } else if (key == "env") {
      env = value;
    } else if (key == "type") {
      type = value;
      if (type != "file" && type != "env") {
        return InvalidArgumentError(where + "type must be file or env, not \"" + type + "\"");
      }
    } else {
      return InvalidArgumentError(where + "unknown key \"" + key +
                                  "\"; use id=ID,src=PATH or id=ID,env=VAR");
    }
  }
  if (id.empty()) {
    if (src.empty() && env.empty()) {
      return InvalidArgumentError(where + "needs id=ID; use id=ID,src=PATH or id=ID,env=VAR");
    }
    id = !env.empty() ? env : std::filesystem::path(src).filename().string();
  }
  if (type == "env" && env.empty()) {
    env = src.empty() ? id : src;  // type=env,src=VAR names the variable
    src.clear();
  }
  if (type == "file" && src.empty()) src = id;
  if (src.empty() && env.empty()) {
    if (std::getenv(id.c_str()) != nullptr) {
      env = id;
    } else {
      src = id;
    }
  }
  if (!env.empty()) {
    const char* value = std::getenv(env.c_str());
    if (value == nullptr) {
      return InvalidArgumentError(where + "environment variable " + env + " is not set");
    }
    return std::make_pair(id, std::string(value));
  }
  StatusOr<std::string> value = ReadFile(src);
  if (!value.ok()) {
    return InvalidArgumentError(where + "cannot read the secret file " + src +
                                "; check src= (or use env=VAR)");
  }
  return std::make_pair(id, std::move(*value));
}

}  // namespace

int RunBuild(const BuildFlags& flags) {
  std::unique_ptr<Progress> progress_view;
  const bool tty = flags.progress == "tty" || (flags.progress == "auto" && !flags.quiet &&
                                               ::isatty(::fileno(stderr)));
  if (tty) {
    progress_view = std::make_unique<TtyProgress>(stderr);
  } else {
    progress_view = std::make_unique<PlainProgress>(stderr, flags.quiet);
  }
  Progress& progress = *progress_view;
  auto fail = [&](const Status& s, int code) {
    std::fprintf(stderr, "ERROR: %s\n", s.message().c_str());
    return code;
  };
  auto usage = [&](const std::string& message) {
    return fail(InvalidArgumentError(message), 2);
  };
  for (const std::string& tag : flags.tags) {
    // As docker build: a name docker could not parse is refused before anything is built.
    if (Status s = CheckImageRef(tag); !s.ok()) {
      return usage("invalid tag \"" + tag + "\": " + s.message());
    }
  }
  std::vector<OutputSpec> outputs;
  for (const std::string& spec : flags.outputs) {
    StatusOr<OutputSpec> o = CheckOutput(spec);
    if (!o.ok()) return fail(o.status(), 2);
    outputs.push_back(std::move(*o));
  }
  if (!flags.platform.empty() && flags.platform != "linux/amd64" &&
      flags.platform != "linux/x86_64") {
    return usage("--platform " + flags.platform +
                 ": this farm builds linux/amd64 only; drop --platform or pass linux/amd64");
  }
  if (flags.progress != "auto" && flags.progress != "plain" && flags.progress != "tty" &&
      flags.progress != "quiet") {
    return usage("--progress " + flags.progress + ": use auto, plain, tty or quiet");
  }
  BuildRequest req;
  StatusOr<std::map<std::string, std::string>> constraints =
      ParseLabelFlags("--worker-label", flags.worker_labels);
  if (!constraints.ok()) return fail(constraints.status(), 2);
  req.worker_constraints = std::move(*constraints);
  for (const std::string& spec : flags.secrets) {
    StatusOr<std::pair<std::string, std::string>> secret = ReadSecret(spec);
    if (!secret.ok()) return fail(secret.status(), 2);
    req.secrets[secret->first] = std::move(secret->second);
  }
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
  for (const OutputSpec& o : outputs) {
    if (o.type == "image") req.tags.insert(req.tags.end(), o.names.begin(), o.names.end());
  }
  req.no_cache = flags.no_cache;
  req.no_cache_filter = flags.no_cache_filter;
  req.platform = flags.platform;
  req.network = flags.network;
  req.tenant = flags.tenant;
  req.priority = flags.priority;
  req.dockerfile_name = flags.file.empty() || flags.file == "-" ? "Dockerfile" : flags.file;

  std::string context = flags.context;
  std::string dockerfile_text;
  bool have_dockerfile = false;
  TempContextDir stdin_dir;
  if (flags.context == "-") {
    if (flags.file == "-") return usage("the context and -f cannot both be - (stdin)");
    Status made = stdin_dir.Make();
    if (!made.ok()) return fail(made, 1);
    StatusOr<std::optional<std::string>> from_stdin = ContextFromStdin(stdin_dir.path());
    if (!from_stdin.ok()) return fail(from_stdin.status(), 2);
    context = stdin_dir.path() + "/context";
    if (*from_stdin) {
      dockerfile_text = std::move(**from_stdin);
      have_dockerfile = true;
    }
  }
  if (have_dockerfile) {
    if (!flags.file.empty()) return usage("-f with a Dockerfile on stdin: pass one or the other");
  } else if (flags.file == "-") {
    dockerfile_text.assign(std::istreambuf_iterator<char>(std::cin), {});
  } else {
    std::string path = flags.file.empty() ? context + "/Dockerfile" : flags.file;
    StatusOr<std::string> text = ReadFile(path);
    if (!text.ok()) {
      return usage("cannot read the Dockerfile " + path +
                   (flags.file.empty() ? ": put a Dockerfile in the context or pass -f PATH"
                                       : ": check the -f path"));
    }
    dockerfile_text = std::move(*text);
  }
  if (!std::filesystem::is_directory(context)) {
    return usage("the context " + context + " is not a directory; pass a directory, or - with " +
                 "a tarball on stdin");
  }
  progress.SetDockerfile(req.dockerfile_name, dockerfile_text);

  Transport transport;
  StatusOr<FarmConnection> conn = ConnectFarm(transport, flags.farm, /*need_coordinator=*/true);
  if (!conn.ok()) return fail(conn.status(), 1);
  if (conn->embedded) progress.Note("using the embedded farm in " +
                                    (flags.farm.home.empty() ? DefaultHome() : flags.farm.home));
  std::unique_ptr<CacheClient> cache = ConnectCache(transport, conn->cache_endpoint);

  StatusOr<Digest> root = UploadContext(
      *cache, [&] { return ConnectCache(transport, conn->cache_endpoint); }, context, flags.file,
      progress);
  if (!root.ok()) return fail(root.status().Annotate("build context"), 1);
  req.context_root = *root;
  Status put = cache->PutBytes(dockerfile_text, &req.dockerfile);
  if (!put.ok()) return fail(put.Annotate("uploading the Dockerfile"), 1);
  Status pulled = PullRegistryBaseImages(*cache, dockerfile_text, req.dockerfile_name,
                                         req.build_args, req.target, flags.insecure_registries,
                                         [&](const std::string& line) { progress.Note(line); });
  if (!pulled.ok()) return fail(pulled, 1);
  // ADD URLs are fetched here, like the context, so their content enters the steps' keys.
  frontend::BuildOptions plan_options;
  plan_options.build_args = req.build_args;
  plan_options.target = req.target;
  plan_options.filename = req.dockerfile_name;
  if (!req.platform.empty()) plan_options.platform = req.platform;
  StatusOr<std::vector<RemoteFile>> remote = FetchAddUrls(
      *cache, dockerfile_text, plan_options, [&](const std::string& line) { progress.Note(line); });
  if (!remote.ok()) return fail(remote.status(), 1);
  req.remote_files = std::move(*remote);

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
  auto last_keepalive = last_heard;
  for (;;) {
    if (g_interrupted) {
      Message cancel;
      cancel.method = Method::kCancelBuild;
      cancel.body = Encode(CancelBuildRequest{sub.build_id});
      rpc.Call(std::move(cancel), std::chrono::seconds(2)).status().IgnoreError();  // best effort
      std::fprintf(stderr, "ERROR: build cancelled\n");
      return 130;
    }
    if (std::chrono::steady_clock::now() - last_keepalive > std::chrono::seconds(1)) {
      // The coordinator cancels a build whose client stops sending these.
      Message keepalive;
      keepalive.method = Method::kKeepAlive;
      keepalive.body = Encode(CancelBuildRequest{sub.build_id});
      rpc.SendRequest(std::move(keepalive)).status().IgnoreError();  // failure shows as silence
      last_keepalive = std::chrono::steady_clock::now();
    }
    Message m;
    StatusOr<bool> got = rpc.socket().Receive(&m, std::chrono::milliseconds(200));
    if (!got.ok()) return fail(got.status(), 1);
    auto silent = std::chrono::steady_clock::now() - last_heard;
    if (!*got) {
      progress.Tick();
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
    if (m.method == Method::kKeepAlive && !m.status.ok()) return fail(m.status, 1);
    if (m.method != Method::kBuildEvent || m.request_id != *id) continue;
    BuildEvent e;
    if (Status s = Decode(m.body, &e); !s.ok()) return fail(s, 1);
    progress.OnEvent(e);
    if (e.kind == BuildEvent::Kind::kBuildFailed) return 1;
    if (e.kind == BuildEvent::Kind::kBuildDone) {
      Status s = Export(*cache, e, flags, outputs, progress);
      if (!s.ok()) return fail(s, 1);
      if (flags.quiet) std::printf("%s\n", e.config.str().c_str());
      return 0;
    }
  }
}

void AddBuildCommand(CLI::App& app, CommandContext& ctx) {
  auto bf = std::make_shared<BuildFlags>();
  CLI::App* cmd = app.add_subcommand("build", "build a Dockerfile (docker build's flags)");
  cmd->add_option("PATH", bf->context, "build context directory, or - for a tarball on stdin")
      ->required();
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
  cmd->add_option("--metadata-file", bf->metadata_file, "write the build result as JSON here");
  cmd->add_option("--secret", bf->secrets, "id=ID,src=PATH or id=ID,env=VAR (repeatable)");
  cmd->add_option("-o,--output", bf->outputs,
                  "type=oci|docker|local|tar|image,dest=PATH[,name=N][,compression=gzip|zstd]");
  cmd->add_option("--network", bf->network, "network for RUN: default or none");
  cmd->add_option("--insecure-registry", bf->insecure_registries,
                  "registry host[:port] to reach over plain http (repeatable)");
  cmd->add_option("--tenant", bf->tenant, "who the build is for; the farm shares turns fairly");
  cmd->add_option("--priority", bf->priority, "higher runs first (default 0)");
  cmd->add_option("--worker-label", bf->worker_labels,
                  "KEY=VALUE a worker must carry (stagefarm worker --label) to run this build's "
                  "stages (repeatable)");
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
