// `stagefarm image pull` and `stagefarm image push`, and the registry work of `stagefarm build`.
#include "stagefarm/cli/registry_commands.h"

#include <CLI/CLI.hpp>
#include <cstdio>
#include <set>

#include "stagefarm/cli/commands.h"
#include "stagefarm/cli/progress.h"
#include "stagefarm/common/build_plan.h"
#include "stagefarm/common/image_ref.h"
#include "stagefarm/common/oci.h"
#include "stagefarm/common/registry_images.h"

namespace stagefarm::cli {
namespace {

// Where `image push` records what it pushed (stored manifest), so a later push to another
// repository of the same registry can mount the blobs instead of uploading them.
std::string PushedRef(const RegistryRef& dest) {
  return std::string(kInternalRefPrefix) + "pushed/" + dest.str();
}

RegistryOptions OptionsFor(const std::vector<std::string>& insecure_registries) {
  RegistryOptions o;
  o.insecure_registries.insert(insecure_registries.begin(), insecure_registries.end());
  return o;
}

// Pulls `text` into the store and names it; notes the resolution and the download.
StatusOr<PullResult> PullAndName(RegistryClient& registry, CacheClient& cache,
                                 const std::string& text, const NoteFn& note) {
  SF_ASSIGN_OR_RETURN(RegistryRef ref, ParseRegistryRef(text));
  StatusOr<PullResult> pulled = PullImage(registry, cache, ref);
  if (!pulled.ok()) {
    const Status& s = pulled.status();
    return s.message().find(text) == std::string::npos ? s.Annotate("pull " + text) : s;
  }
  note("resolved " + text + " to " + pulled->registry_digest.str());
  if (pulled->downloaded) {
    note("pulled " + text + ": " + HumanSize(pulled->downloaded_bytes) + " downloaded, stored as " +
         pulled->stored_manifest.str());
  } else {
    note(text + " is already in the store (" + pulled->stored_manifest.str() + ")");
  }
  SF_RETURN_IF_ERROR(cache.PutRef(NormalizeImageRef(text), pulled->stored_manifest));
  return pulled;
}

// Repositories of `dest`'s registry the store knows blobs of, those holding `manifest` first.
StatusOr<std::vector<std::string>> MountCandidates(CacheClient& cache, const RegistryRef& dest,
                                                   const Digest& manifest) {
  SF_ASSIGN_OR_RETURN(auto refs, cache.ListRefs());
  const std::string pushed_prefix = std::string(kInternalRefPrefix) + "pushed/";
  std::vector<std::string> same, other;
  std::set<std::string> seen = {dest.repository};
  for (const auto& [name, digest] : refs) {
    std::string text = name.starts_with(pushed_prefix) ? name.substr(pushed_prefix.size()) : name;
    if (!text.starts_with(dest.registry + "/")) continue;
    StatusOr<RegistryRef> r = ParseRegistryRef(text);
    if (!r.ok() || !seen.insert(r->repository).second) continue;
    (digest.hex == manifest.hex ? same : other).push_back(r->repository);
  }
  same.insert(same.end(), other.begin(), other.end());
  return same;
}

// The store as these commands use it; members go in reverse order (client, farm, transport).
struct Store {
  Transport transport;
  FarmConnection conn;
  std::unique_ptr<CacheClient> cache;
};

int WithStore(const FarmTarget& target, const std::function<Status(CacheClient&)>& body) {
  Store store;
  StatusOr<FarmConnection> conn = ConnectFarm(store.transport, target, /*need_coordinator=*/false);
  if (!conn.ok()) return Fail(conn.status());
  store.conn = std::move(*conn);
  store.cache = ConnectCache(store.transport, store.conn.cache_endpoint);
  Status s = body(*store.cache);
  return s.ok() ? 0 : Fail(s);
}

void PrintLine(const std::string& line) { std::printf("%s\n", line.c_str()); }

}  // namespace

Status PullRegistryBaseImages(CacheClient& cache, std::string_view dockerfile,
                              const std::string& dockerfile_name,
                              const std::map<std::string, std::string>& build_args,
                              const std::string& target,
                              const std::vector<std::string>& insecure_registries,
                              const NoteFn& note) {
  RegistryClient registry(OptionsFor(insecure_registries));
  frontend::BuildOptions opts;
  opts.build_args = build_args;
  opts.target = target;
  opts.filename = dockerfile_name;
  std::map<std::string, ImageConfig> done;
  Status registry_error;
  auto resolver = [&](const std::string& ref) -> StatusOr<ImageConfig> {
    if (!NamesRegistryHost(ref)) return ImageConfig{};  // the coordinator's business
    if (auto it = done.find(ref); it != done.end()) return it->second;
    StatusOr<PullResult> pulled = PullAndName(registry, cache, ref, note);
    StatusOr<ImageRecord> image =
        pulled.ok() ? LoadImage(cache, pulled->stored_manifest) : pulled.status();
    if (!image.ok()) {
      registry_error = image.status();
      return registry_error;
    }
    done[ref] = image->config;
    return image->config;
  };
  // A Dockerfile error here is reported by the coordinator, with its place; only the registry's
  // errors stop the build before it is submitted.
  frontend::Resolve(dockerfile, opts, resolver).status().IgnoreError();
  return registry_error;
}

Status PushStoredImage(CacheClient& cache, const Digest& manifest, const std::string& dest,
                       LayerCompression compression,
                       const std::vector<std::string>& insecure_registries, const NoteFn& note) {
  SF_ASSIGN_OR_RETURN(RegistryRef ref, ParseRegistryRef(dest));
  if (ref.tag.empty() && !ref.digest.empty()) {
    return InvalidArgumentError("push " + dest + ": give a tag to push to, not a digest");
  }
  RegistryClient registry(OptionsFor(insecure_registries));
  SF_ASSIGN_OR_RETURN(std::vector<std::string> mount_from, MountCandidates(cache, ref, manifest));
  StatusOr<PushResult> pushed = PushImage(registry, cache, manifest, ref, compression, mount_from);
  if (!pushed.ok()) return pushed.status().Annotate("push " + dest);
  SF_RETURN_IF_ERROR(cache.PutRef(PushedRef(ref), manifest));
  note("pushed " + ref.str() + "@" + pushed->manifest.str() + ": " +
       std::to_string(pushed->uploaded) + " blobs uploaded (" + HumanSize(pushed->uploaded_bytes) +
       "), " + std::to_string(pushed->existed) + " already there, " +
       std::to_string(pushed->mounted) + " mounted");
  return Status();
}

void AddRegistryCommands(CLI::App& app, CommandContext& ctx) {
  CLI::App* image_cmd = app.get_subcommand("image");
  struct Flags {
    std::string ref, name, dest, compression = "gzip";
    std::vector<std::string> insecure;
  };
  auto f = std::make_shared<Flags>();
  const char* insecure_help = "registry host[:port] to reach over plain http (repeatable)";

  CLI::App* pull_cmd = image_cmd->add_subcommand("pull", "pull an image from a registry");
  pull_cmd->add_option("REF", f->ref, "registry/repository[:tag|@digest]")->required();
  pull_cmd->add_option("--insecure-registry", f->insecure, insecure_help);
  AddFarmFlags(pull_cmd, ctx);
  pull_cmd->callback([&ctx, f] {
    ctx.run = [&ctx, f] {
      if (Status s = ParseRegistryRef(f->ref).status(); !s.ok()) return Fail(s, 2);
      return WithStore(ctx.farm, [&](CacheClient& cache) {
        RegistryClient registry(OptionsFor(f->insecure));
        return PullAndName(registry, cache, f->ref, PrintLine).status();
      });
    };
  });

  CLI::App* push_cmd = image_cmd->add_subcommand("push", "push a stored image to a registry");
  push_cmd->add_option("NAME", f->name, "stored image name")->required();
  push_cmd->add_option("DEST_REF", f->dest, "registry/repository:tag (default: NAME)");
  push_cmd->add_option("--compression", f->compression, "gzip (default), zstd or uncompressed");
  push_cmd->add_option("--insecure-registry", f->insecure, insecure_help);
  AddFarmFlags(push_cmd, ctx);
  push_cmd->callback([&ctx, f] {
    ctx.run = [&ctx, f] {
      StatusOr<LayerCompression> compression = ParseLayerCompression(f->compression);
      if (!compression.ok()) return Fail(compression.status().Annotate("--compression"), 2);
      for (const std::string& r : {f->name, f->dest}) {
        if (Status s = ParseRegistryRef(r.empty() ? f->name : r).status(); !s.ok()) {
          return Fail(s, 2);
        }
      }
      return WithStore(ctx.farm, [&](CacheClient& cache) -> Status {
        SF_ASSIGN_OR_RETURN(std::optional<Digest> manifest,
                            cache.GetRef(NormalizeImageRef(f->name)));
        if (!manifest) {
          return NotFoundError("no image " + f->name + " in the store; see `stagefarm image ls`");
        }
        return PushStoredImage(cache, *manifest, f->dest.empty() ? f->name : f->dest, *compression,
                               f->insecure, PrintLine);
      });
    };
  });
}

}  // namespace stagefarm::cli
