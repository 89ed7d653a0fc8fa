#include "stagefarm/cli/commands.h"


#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "stagefarm/cli/farm_connection.h"
#include "stagefarm/cli/progress.h"
#include "stagefarm/common/build_plan.h"
#include "stagefarm/common/cache_protocol.h"
#include "stagefarm/common/dockerfile_parser.h"
#include "stagefarm/common/image_export.h"
#include "stagefarm/common/image_import.h"
#include "stagefarm/common/image_ref.h"
#include "stagefarm/common/oci.h"

namespace stagefarm::cli {
namespace {

// The farm's store as the image commands use it. Members are destroyed in reverse order: the
// client before the (possibly embedded) farm, the farm before the transport.
struct Store {
  Transport transport;
  FarmConnection conn;
  std::unique_ptr<CacheClient> cache;
};

StatusOr<std::unique_ptr<Store>> OpenStore(const FarmTarget& target) {
  auto store = std::make_unique<Store>();
  SF_ASSIGN_OR_RETURN(store->conn,
                      ConnectFarm(store->transport, target, /*need_coordinator=*/false));
  store->cache = ConnectCache(store->transport, store->conn.cache_endpoint);
  return store;
}

// The image a name (as docker writes it) points at.
StatusOr<ImageRecord> LoadNamedImage(CacheClient& cache, const std::string& name) {
  SF_ASSIGN_OR_RETURN(std::optional<Digest> manifest, cache.GetRef(NormalizeImageRef(name)));
  if (!manifest) {
    return NotFoundError("no image " + name + " in the store; see `stagefarm image ls`");
  }
  return LoadImage(cache, *manifest);
}

int RunImageImport(const FarmTarget& target, const std::string& src, const std::string& name) {
  if (Status s = CheckImageRef(name); !s.ok()) {
    return Fail(InvalidArgumentError("invalid tag \"" + name + "\": " + s.message()), 2);
  }
  StatusOr<std::unique_ptr<Store>> store = OpenStore(target);
  if (!store.ok()) return Fail(store.status());
  CacheClient& cache = *(*store)->cache;
  StatusOr<Digest> manifest = ImportImage(cache, src);
  if (!manifest.ok()) return Fail(manifest.status().Annotate("import " + src));
  std::string ref = NormalizeImageRef(name);
  if (Status s = cache.PutRef(ref, *manifest); !s.ok()) return Fail(s);
  std::printf("imported %s as %s (%s)\n", src.c_str(), FamiliarImageRef(ref).c_str(),
              manifest->str().c_str());
  return 0;
}

int RunImageLs(const FarmTarget& target) {
  StatusOr<std::unique_ptr<Store>> store = OpenStore(target);
  if (!store.ok()) return Fail(store.status());
  CacheClient& cache = *(*store)->cache;
  auto refs = cache.ListRefs();
  if (!refs.ok()) return Fail(refs.status());
  std::printf("%-40s %-20s %10s\n", "REPOSITORY:TAG", "IMAGE ID", "SIZE");
  for (const auto& [name, manifest] : *refs) {
    if (name.starts_with(kInternalRefPrefix)) continue;  // the farm's bookkeeping
    StatusOr<ImageRecord> image = LoadImage(cache, manifest);
    if (!image.ok()) {
      std::printf("%-40s %-20s %10s\n", FamiliarImageRef(name).c_str(), "(missing)", "-");
      continue;
    }
    uint64_t size = 0;
    for (const LayerRef& l : image->layers) size += l.diff_id.size;
    std::printf("%-40s %-20s %10s\n", FamiliarImageRef(name).c_str(),
                image->config_digest.hex.substr(0, 12).c_str(), HumanSize(size).c_str());
  }
  return 0;
}

int RunImageInspect(const FarmTarget& target, const std::string& name) {
  StatusOr<std::unique_ptr<Store>> store = OpenStore(target);
  if (!store.ok()) return Fail(store.status());
  CacheClient& cache = *(*store)->cache;
  StatusOr<ImageRecord> image = LoadNamedImage(cache, name);
  if (!image.ok()) return Fail(image.status());
  StatusOr<std::string> config = cache.ReadBytes(image->config_digest);
  if (!config.ok()) return Fail(config.status());
  nlohmann::json j = nlohmann::json::parse(*config, nullptr, false);
  j["Id"] = image->config_digest.str();
  j["Manifest"] = image->manifest.str();
  std::printf("%s\n", j.dump(2).c_str());
  return 0;
}

// Like `docker history`: newest first, one row per history entry, with the size of the layer it
// made ("0 B" for metadata-only instructions).
int RunImageHistory(const FarmTarget& target, const std::string& name, bool no_trunc) {
  StatusOr<std::unique_ptr<Store>> store = OpenStore(target);
  if (!store.ok()) return Fail(store.status());
  CacheClient& cache = *(*store)->cache;
  StatusOr<ImageRecord> image = LoadNamedImage(cache, name);
  if (!image.ok()) return Fail(image.status());
  struct Row {
    std::string layer, created_by, size, comment;
  };
  std::vector<Row> rows;
  size_t layer = 0;
  for (const HistoryEntry& h : image->history) {
    Row r{"<missing>", h.created_by, "0 B", h.comment};
    if (!h.empty_layer && layer < image->layers.size()) {
      const Digest& d = image->layers[layer++].diff_id;
      r.layer = d.hex.substr(0, 12);
      r.size = HumanSize(d.size);
    }
    rows.push_back(std::move(r));
  }
  // Layers the history does not describe (an image imported without history).
  for (; layer < image->layers.size(); ++layer) {
    const Digest& d = image->layers[layer].diff_id;
    rows.push_back({d.hex.substr(0, 12), "", HumanSize(d.size), ""});
  }
  std::printf("%-14s %-60s %10s  %s\n", "LAYER", "CREATED BY", "SIZE", "COMMENT");
  for (auto it = rows.rbegin(); it != rows.rend(); ++it) {
    std::string by = it->created_by;
    for (char& c : by) {
      if (c == '\n' || c == '\t') c = ' ';
    }
    if (!no_trunc && by.size() > 60) by = by.substr(0, 57) + "...";
    std::printf("%-14s %-60s %10s  %s\n", it->layer.c_str(), by.c_str(), it->size.c_str(),
                it->comment.c_str());
  }
  return 0;
}

// Like `docker image rm`: removes each name; the blobs stay until `stagefarm prune` or eviction
// takes them. Goes on past a name that is not there and fails at the end if any was.
int RunImageRm(const FarmTarget& target, const std::vector<std::string>& names) {
  StatusOr<std::unique_ptr<Store>> store = OpenStore(target);
  if (!store.ok()) return Fail(store.status());
  int rc = 0;
  for (const std::string& name : names) {
    std::string ref = NormalizeImageRef(name);
    Status s = DeleteCacheRef((*store)->transport, (*store)->conn.cache_endpoint, ref);
    if (s.code() == StatusCode::kNotFound) {
      s = NotFoundError("no such image: " + name + "; see `stagefarm image ls`");
    }
    if (!s.ok()) {
      rc = Fail(s);
      continue;
    }
    std::printf("Untagged: %s\n", FamiliarImageRef(ref).c_str());
  }
  return rc;
}

int RunDebugDockerfile(const std::string& file, bool dump,
                       const std::vector<std::string>& build_args, const std::string& target) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return Fail(NotFoundError("cannot read " + file), 2);
  std::string text(std::istreambuf_iterator<char>(in), {});
  if (dump) {
    StatusOr<frontend::ParsedDockerfile> parsed = frontend::ParseDockerfile(text, file);
    if (!parsed.ok()) return Fail(parsed.status());
    std::fputs(frontend::DumpParseTree(*parsed).c_str(), stdout);
    return 0;
  }
  frontend::BuildOptions opts;
  opts.filename = file;
  opts.target = target;
  for (const std::string& a : build_args) {
    size_t eq = a.find('=');
    opts.build_args[a.substr(0, eq)] = eq == std::string::npos ? "" : a.substr(eq + 1);
  }
  StatusOr<frontend::BuildPlan> plan = frontend::Resolve(
      text, opts, [](const std::string&) -> StatusOr<ImageConfig> { return ImageConfig{}; });
  if (!plan.ok()) return Fail(plan.status());
  std::fputs(frontend::DescribePlan(*plan).c_str(), stdout);
  return 0;
}

}  // namespace

void AddImageCommands(CLI::App& app, CommandContext& ctx) {
  CLI::App* image_cmd = app.add_subcommand("image", "manage images in the farm's store");
  image_cmd->require_subcommand(1);
  auto src = std::make_shared<std::string>();
  auto name = std::make_shared<std::string>();
  CLI::App* import_cmd = image_cmd->add_subcommand(
      "import", "import an OCI layout, OCI archive or docker save tarball");
  import_cmd->add_option("SRC", *src, "directory or tarball")->required();
  import_cmd->add_option("NAME", *name, "name[:tag] to give it")->required();
  AddFarmFlags(import_cmd, ctx);
  import_cmd->callback([&ctx, src, name] {
    ctx.run = [&ctx, src, name] { return RunImageImport(ctx.farm, *src, *name); };
  });
  CLI::App* ls_cmd = image_cmd->add_subcommand("ls", "list images");
  AddFarmFlags(ls_cmd, ctx);
  ls_cmd->callback([&ctx] { ctx.run = [&ctx] { return RunImageLs(ctx.farm); }; });
  CLI::App* inspect_cmd = image_cmd->add_subcommand("inspect", "print an image's config as JSON");
  inspect_cmd->add_option("NAME", *name, "image name")->required();
  AddFarmFlags(inspect_cmd, ctx);
  inspect_cmd->callback(
      [&ctx, name] { ctx.run = [&ctx, name] { return RunImageInspect(ctx.farm, *name); }; });
  auto no_trunc = std::make_shared<bool>(false);
  CLI::App* history_cmd =
      image_cmd->add_subcommand("history", "show an image's layers and the steps that made them");
  history_cmd->add_option("NAME", *name, "image name")->required();
  history_cmd->add_flag("--no-trunc", *no_trunc, "do not shorten CREATED BY");
  AddFarmFlags(history_cmd, ctx);
  history_cmd->callback([&ctx, name, no_trunc] {
    ctx.run = [&ctx, name, no_trunc] { return RunImageHistory(ctx.farm, *name, *no_trunc); };
  });
  auto rm_names = std::make_shared<std::vector<std::string>>();
  CLI::App* rm_cmd = image_cmd->add_subcommand("rm", "remove image names (blobs go on prune)");
  rm_cmd->add_option("NAME", *rm_names, "image names")->required();
  AddFarmFlags(rm_cmd, ctx);
  rm_cmd->callback(
      [&ctx, rm_names] { ctx.run = [&ctx, rm_names] { return RunImageRm(ctx.farm, *rm_names); }; });
}

void AddDebugCommands(CLI::App& app, CommandContext& ctx) {
  CLI::App* debug_cmd = app.add_subcommand("debug", "developer tools");
  debug_cmd->require_subcommand(1);
  struct Flags {
    std::string file, target;
    bool dump = false;
    std::vector<std::string> build_args;
  };
  auto f = std::make_shared<Flags>();
  CLI::App* df_cmd = debug_cmd->add_subcommand("dockerfile", "print a Dockerfile's stages");
  df_cmd->add_option("FILE", f->file, "Dockerfile")->required();
  df_cmd->add_flag("--dump", f->dump, "print the parse tree instead");
  df_cmd->add_option("--build-arg", f->build_args, "KEY=VALUE");
  df_cmd->add_option("--target", f->target, "stage to build");
  df_cmd->callback([&ctx, f] {
    ctx.run = [f] { return RunDebugDockerfile(f->file, f->dump, f->build_args, f->target); };
  });
}

}  // namespace stagefarm::cli
