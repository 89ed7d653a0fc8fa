#include "stagefarm/worker/run_mounts.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <optional>
#include <set>

#include "stagefarm/common/clean_path.h"
#include "stagefarm/common/digest.h"
#include "stagefarm/worker/copy.h"
#include "stagefarm/worker/fs_util.h"

namespace stagefarm::worker {

// --- CacheMounts ------------------------------------------------------------------------------

CacheMounts::CacheMounts(std::string dir) : dir_(std::move(dir)) {}

CacheMounts::Lease::~Lease() {
  if (owner_ != nullptr) owner_->Release(path_);
}

CacheMounts::Lease& CacheMounts::Lease::operator=(Lease&& o) noexcept {
  if (this != &o) {
    Lease old(std::move(*this));
    owner_ = std::exchange(o.owner_, nullptr);
    path_ = std::move(o.path_);
    fresh_ = o.fresh_;
  }
  return *this;
}

void CacheMounts::Release(const std::string& path) {
  {
    std::lock_guard lock(mu_);
    Use& use = uses_[path];
    --use.users;
    use.locked = false;
    if (use.users == 0) uses_.erase(path);
  }
  released_.notify_all();
}

// Makes `path` when missing; true if it did.
StatusOr<bool> CacheMounts::Ensure(const std::string& path, int64_t mode, int64_t uid,
                                   int64_t gid) {
  SF_RETURN_IF_ERROR(MakeDirs(dir_, 0700));
  if (::mkdir(path.c_str(), 0700) != 0) {
    if (errno == EEXIST) return false;
    return ErrnoError("mkdir " + path, errno);
  }
  if (::chown(path.c_str(), static_cast<uid_t>(uid < 0 ? 0 : uid),
              static_cast<gid_t>(gid < 0 ? 0 : gid)) != 0) {
    return ErrnoError("chown " + path, errno);
  }
  if (::chmod(path.c_str(), static_cast<mode_t>(mode < 0 ? 0755 : mode)) != 0) {
    return ErrnoError("chmod " + path, errno);
  }
  return true;
}

StatusOr<CacheMounts::Lease> CacheMounts::Acquire(const std::string& id, const std::string& sharing,
                                                  int64_t mode, int64_t uid, int64_t gid,
                                                  const std::atomic<bool>& cancelled,
                                                  std::chrono::steady_clock::time_point deadline) {
  const std::string base = dir_ + "/" + Digest::Of(id).hex.substr(0, 32);
  Lease lease;
  {
    std::unique_lock lock(mu_);
    if (sharing == "private") {
      // The first of base, base-1, base-2... that no step uses now.
      std::string path = base;
      for (int n = 1; uses_.count(path); ++n) path = base + "-" + std::to_string(n);
      lease.path_ = path;
    } else {
      const bool exclusive = sharing == "locked";
      while (uses_.count(base) && (uses_[base].locked || (exclusive && uses_[base].users > 0))) {
        if (cancelled.load()) return CancelledError("cancelled while waiting for cache " + id);
        if (std::chrono::steady_clock::now() >= deadline) {
          return DeadlineExceededError("timed out waiting for the locked cache " + id +
                                       " (another step holds it)");
        }
        released_.wait_for(lock, std::chrono::milliseconds(100));
      }
      uses_[base].locked = exclusive;
      lease.path_ = base;
    }
    ++uses_[lease.path_].users;
    lease.owner_ = this;
  }
  SF_ASSIGN_OR_RETURN(lease.fresh_, Ensure(lease.path_, mode, uid, gid));
  return lease;
}

// --- PrepareRunMounts -------------------------------------------------------------------------

namespace {

std::string AbsoluteTarget(const std::string& target, const std::string& workdir) {
  if (!target.empty() && target[0] == '/') return CleanSlashPath(target);
  return CleanSlashPath((workdir.empty() ? "/" : workdir) + "/" + target);
}

// "--mount=type=bind,source=app,target=/src" for messages.
std::string Describe(const MountSpec& m) {
  static const char* kTypes[] = {"bind", "cache", "tmpfs", "secret"};
  std::string out = "--mount=type=" + std::string(kTypes[static_cast<int>(m.type)]);
  if (m.type == MountSpec::Type::kSecret || m.type == MountSpec::Type::kCache) {
    out += ",id=" + m.id;
  }
  if (!m.source.empty()) out += ",source=" + m.source;
  if (!m.target.empty()) out += ",target=" + m.target;
  return out;
}

std::vector<std::string> BindOptions(bool readonly) {
  std::vector<std::string> o = {"rbind", "rprivate", "nosuid", "nodev"};
  o.push_back(readonly ? "ro" : "rw");
  return o;
}

// The host path of `path` inside the directory `root`, its symlinks resolved within it as COPY
// resolves a source (and as the step's key reads it: copy_sources.h).
StatusOr<std::string> ResolveIn(const std::string& root, const std::string& path) {
  SF_ASSIGN_OR_RETURN(std::string resolved, ResolveSourceInDir(root, path));
  return resolved.empty() ? root : root + "/" + resolved;
}

// A cache mount's id: its target when it has none.
std::string CacheId(const MountSpec& m, const std::string& target) {
  return m.id.empty() ? target : m.id;
}

}  // namespace

// Fills a PreparedMounts, one MountSpec at a time.
class MountPreparer {
 public:
  MountPreparer(const RunMountEnv& env, PreparedMounts* out) : env_(env), out_(out) {}

  // Mounts the filesystem of `layers` at a new scratch dir (writable: changes go to a scratch
  // upper dir) and returns its path.
  StatusOr<std::string> MountLayers(const std::vector<LayerRef>& layers, bool writable,
                                    std::vector<ScopedMount>* held) {
    std::vector<std::string> dirs;
    for (const LayerRef& l : layers) {
      SF_ASSIGN_OR_RETURN(std::string dir, env_.layers->Ensure(l.diff_id, *env_.cache));
      dirs.push_back(std::move(dir));
    }
    SF_ASSIGN_OR_RETURN(std::string base, NewDir());
    for (const char* sub : {"/empty", "/upper", "/work", "/fs"}) {
      if (::mkdir((base + sub).c_str(), 0755) != 0) return ErrnoError("mkdir " + base + sub, errno);
    }
    OverlaySpec spec{dirs, base + "/empty", writable ? base + "/upper" : "",
                     writable ? base + "/work" : ""};
    SF_ASSIGN_OR_RETURN(ScopedMount m, MountOverlay(spec, base + "/fs"));
    held->push_back(std::move(m));
    return base + "/fs";
  }

  // The build context's `source` copied into a new scratch dir; returns the path to bind.
  StatusOr<std::string> MaterialiseContext(const MountSpec& m) {
    std::unique_ptr<CopySource> ctx = MakeContextSource(*env_.cache, m.context_root);
    std::string source = CleanSlashPath(m.source.empty() ? "." : m.source);
    if (source.rfind("../", 0) == 0 || source == "..") source = ".";  // cannot leave the context
    SF_ASSIGN_OR_RETURN(std::optional<SourceEntry> top, ctx->Stat(source == "." ? "" : source));
    if (!top) return NotFoundError("\"" + m.source + "\": not found in the build context");
    SF_ASSIGN_OR_RETURN(std::string dir, NewDir());
    CopyRequest copy;
    copy.sources = {source};
    copy.dest = "/";
    copy.instruction = "RUN " + Describe(m);
    SF_RETURN_IF_ERROR(ApplyCopy(copy, *ctx, dir));
    if (top->type == SourceEntry::Type::kDir) return dir;
    return dir + "/" + source.substr(source.rfind('/') + 1);
  }

  Status Bind(const MountSpec& m, const std::string& target) {
    std::string path;
    if (!m.context_root.empty()) {
      SF_ASSIGN_OR_RETURN(path, MaterialiseContext(m));
    } else {
      SF_ASSIGN_OR_RETURN(std::string fs, MountLayers(m.from_layers, !m.readonly, &out_->held_));
      StatusOr<std::string> resolved = ResolveIn(fs, m.source);
      if (!resolved.ok() && resolved.status().code() == StatusCode::kNotFound) {
        return NotFoundError("\"" + m.source + "\": not found in the source stage or image");
      }
      SF_ASSIGN_OR_RETURN(path, std::move(resolved));
    }
    out_->mounts_.push_back(SandboxMount{target, "bind", path, BindOptions(m.readonly)});
    return Status();
  }

  Status Cache(const MountSpec& m, const std::string& target) {
    SF_ASSIGN_OR_RETURN(CacheMounts::Lease lease,
                        env_.caches->Acquire(CacheId(m, target), m.sharing, m.mode, m.uid, m.gid,
                                             *env_.cancelled, env_.deadline));
    if (lease.fresh() && !m.from_layers.empty()) {
      // Seeded once, when the cache directory is new, from= the stage's or image's source.
      std::vector<ScopedMount> seed_mounts;
      SF_ASSIGN_OR_RETURN(std::string fs, MountLayers(m.from_layers, false, &seed_mounts));
      SF_ASSIGN_OR_RETURN(auto source, MakeDirSource(fs));
      CopyRequest copy;
      copy.sources = {m.source.empty() ? "." : m.source};
      copy.dest = "/";
      copy.instruction = "RUN " + Describe(m);
      SF_RETURN_IF_ERROR(ApplyCopy(copy, *source, lease.path()));
      source.reset();
      for (ScopedMount& sm : seed_mounts) SF_RETURN_IF_ERROR(sm.Unmount());
    }
    out_->mounts_.push_back(SandboxMount{target, "bind", lease.path(), BindOptions(m.readonly)});
    out_->leases_.push_back(std::move(lease));
    return Status();
  }

  Status Secret(const MountSpec& m, const std::string& target) {
    auto it = env_.secrets->find(m.id);
    if (it == env_.secrets->end()) {
      if (!m.required) return Status();  // an optional secret nobody gave: nothing is mounted
      return FailedPreconditionError("secret \"" + m.id + "\" is required but was not given: " +
                                     "pass it with `stagefarm build --secret id=" + m.id +
                                     ",src=FILE` (or env=VAR)");
    }
    // Even for env= only: the runtime's config.json and state then hold the value.
    SF_RETURN_IF_ERROR(EnsurePrivateDir());
    if (!m.env.empty()) out_->env_.push_back(m.env + "=" + it->second);
    if (m.target.empty()) return Status();
    std::string file = out_->private_dir_ + "/secret-" + std::to_string(++count_);
    SF_RETURN_IF_ERROR(
        WriteFile(file, it->second, static_cast<mode_t>(m.mode < 0 ? 0400 : m.mode)));
    if (::chown(file.c_str(), static_cast<uid_t>(m.uid < 0 ? 0 : m.uid),
                static_cast<gid_t>(m.gid < 0 ? 0 : m.gid)) != 0) {
      return ErrnoError("chown " + file, errno);
    }
    std::vector<std::string> options = BindOptions(true);
    options.push_back("noexec");
    out_->mounts_.push_back(SandboxMount{target, "bind", file, std::move(options)});
    return Status();
  }

  Status Tmpfs(const MountSpec& m, const std::string& target) {
    std::vector<std::string> options = {"nosuid", "nodev", "mode=1777"};
    if (m.size_limit > 0) options.push_back("size=" + std::to_string(m.size_limit));
    out_->mounts_.push_back(SandboxMount{target, "tmpfs", "tmpfs", std::move(options)});
    return Status();
  }

 private:
  StatusOr<std::string> NewDir() {
    std::string dir = env_.scratch_dir + "/mount-" + std::to_string(++count_);
    if (::mkdir(dir.c_str(), 0755) != 0) return ErrnoError("mkdir " + dir, errno);
    return dir;
  }

  // A tmpfs only root can read, so secrets never touch a disk.
  Status EnsurePrivateDir() {
    if (!out_->private_dir_.empty()) return Status();
    std::string dir = env_.scratch_dir + "/private";
    if (::mkdir(dir.c_str(), 0700) != 0) return ErrnoError("mkdir " + dir, errno);
    if (::mount("tmpfs", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "mode=0700,size=64m") != 0) {
      return ErrnoError("mount tmpfs on " + dir, errno);
    }
    out_->held_.push_back(ScopedMount(dir));
    out_->private_dir_ = dir;
    return Status();
  }

  const RunMountEnv& env_;
  PreparedMounts* out_;
  int count_ = 0;
};

std::vector<std::string> PreparedMounts::targets() const {
  std::vector<std::string> out;
  for (const SandboxMount& m : mounts_) out.push_back(m.destination);
  return out;
}

Status PreparedMounts::Release() {
  Status first;
  while (!held_.empty()) {
    Status s = held_.back().Unmount();
    if (first.ok() && !s.ok()) first = std::move(s);
    held_.pop_back();
  }
  leases_.clear();
  return first;
}

StatusOr<PreparedMounts> PrepareRunMounts(const std::vector<MountSpec>& specs,
                                          const RunMountEnv& env) {
  PreparedMounts out;
  MountPreparer prep(env, &out);
  // Caches first, by id: two steps taking locked caches a,b and b,a must not deadlock.
  std::vector<const MountSpec*> order;
  for (const MountSpec& m : specs) order.push_back(&m);
  auto cache_key = [&](const MountSpec* m) {
    return m->type == MountSpec::Type::kCache
               ? std::optional(
                     CacheId(*m, m->target.empty() ? "" : AbsoluteTarget(m->target, env.workdir)))
               : std::nullopt;
  };
  std::stable_sort(order.begin(), order.end(), [&](const MountSpec* a, const MountSpec* b) {
    auto ka = cache_key(a), kb = cache_key(b);
    if (ka && kb) return *ka < *kb;
    return ka.has_value() && !kb.has_value();
  });
  for (size_t i = 1; i < order.size(); ++i) {
    auto prev = cache_key(order[i - 1]), cur = cache_key(order[i]);
    if (cur && prev == cur) {
      return InvalidArgumentError(Describe(*order[i]) + ": cache id \"" + *cur +
                                  "\" is mounted twice in this step (each cache id may be " +
                                  "mounted once per RUN)");
    }
  }
  for (const MountSpec* spec : order) {
    const MountSpec& m = *spec;
    std::string target = m.target.empty() ? "" : AbsoluteTarget(m.target, env.workdir);
    if (target == "/") return InvalidArgumentError(Describe(m) + ": cannot mount over /");
    Status s;
    switch (m.type) {
      case MountSpec::Type::kBind:
        s = prep.Bind(m, target);
        break;
      case MountSpec::Type::kCache:
        s = prep.Cache(m, target);
        break;
      case MountSpec::Type::kTmpfs:
        s = prep.Tmpfs(m, target);
        break;
      case MountSpec::Type::kSecret:
        s = prep.Secret(m, target);
        break;
    }
    if (!s.ok()) return s.Annotate(Describe(m));
  }
  // A mount inside another's target goes after it.
  std::stable_sort(out.mounts_.begin(), out.mounts_.end(),
                   [](const SandboxMount& a, const SandboxMount& b) {
                     return std::count(a.destination.begin(), a.destination.end(), '/') <
                            std::count(b.destination.begin(), b.destination.end(), '/');
                   });
  return out;
}

// --- MountStubs -------------------------------------------------------------------------------

namespace {

StatusOr<std::string> FdPath(int fd) {
  std::string link = "/proc/self/fd/" + std::to_string(fd);
  char buf[PATH_MAX];
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
  if (n < 0) return ErrnoError("readlink " + link, errno);
  return std::string(buf, static_cast<size_t>(n));
}

// Where the directory `fd` (opened inside the rootfs `root_fd`) really is in the rootfs, relative
// and without symlinks ("" for the root): the runtime follows symlinks on the way to a mount
// target, so the stubs it makes are below the directories they lead to.
StatusOr<std::string> RealPathInRoot(int root_fd, int fd) {
  SF_ASSIGN_OR_RETURN(std::string root, FdPath(root_fd));
  SF_ASSIGN_OR_RETURN(std::string path, FdPath(fd));
  if (path == root) return std::string();
  if (path.size() <= root.size() + 1 || path.compare(0, root.size() + 1, root + "/") != 0) {
    return FailedPreconditionError(path + " is not below the rootfs " + root);
  }
  return path.substr(root.size() + 1);
}

// Walks `rel` (clean, relative to the rootfs) as the runtime does on its way to a mount target:
// symlinks followed inside the root. Adds to `created` the directories that do not exist yet,
// below the real directory they will be made in, and that directory to `parents`. Returns
// NotFound at a symlink that leads nowhere (`*dangling` is its path and `*dangling_parent` the
// real directory holding it), FailedPrecondition under a file; OK otherwise.
Status WalkToTarget(int root_fd, const std::string& rel, std::set<std::string>* created,
                    std::set<std::string>* parents, std::string* dangling,
                    std::string* dangling_parent) {
  std::string so_far;  // the last existing directory, symlinks resolved
  for (size_t start = 0; start < rel.size();) {
    size_t end = rel.find('/', start);
    if (end == std::string::npos) end = rel.size();
    std::string path = rel.substr(0, end);
    // Symlinks on the way are followed (inside the root), as the runtime does.
    auto fd = OpenInRoot(root_fd, path, O_PATH);
    if (!fd.ok()) {
      if (fd.status().code() != StatusCode::kNotFound) return fd.status();  // under a file
      auto link = OpenInRoot(root_fd, path, O_PATH | O_NOFOLLOW);
      struct stat st;
      if (link.ok() && ::fstat(link->get(), &st) == 0 && S_ISLNK(st.st_mode)) {
        *dangling = path;
        *dangling_parent = so_far;
        return NotFoundError("/" + path + " is a symlink to nothing");
      }
      // From here down the runtime makes the path, below the real directory: all stubs.
      const std::string base = so_far.empty() ? "" : so_far + "/";
      for (size_t p = end; p != std::string::npos; p = rel.find('/', p + 1)) {
        created->insert(base + rel.substr(start, p - start));
      }
      created->insert(base + rel.substr(start));
      if (!so_far.empty()) parents->insert(so_far);
      return Status();
    }
    start = end + 1;
    struct stat st;
    if (::fstat(fd->get(), &st) != 0) return ErrnoError("stat /" + path + " in the rootfs", errno);
    if (!S_ISDIR(st.st_mode)) return Status();  // the existing target: nothing is created
    SF_ASSIGN_OR_RETURN(so_far, RealPathInRoot(root_fd, fd->get()));
  }
  return Status();
}

// The target of the symlink at `path` inside the rootfs, clean and relative to the root, for a
// symlink held by the real directory `parent`.
StatusOr<std::string> SymlinkTargetInRoot(int root_fd, const std::string& path,
                                          const std::string& parent) {
  SF_ASSIGN_OR_RETURN(UniqueFd link, OpenInRoot(root_fd, path, O_PATH | O_NOFOLLOW));
  char buf[PATH_MAX];
  ssize_t n = ::readlinkat(link.get(), "", buf, sizeof buf);
  if (n < 0) return ErrnoError("readlink /" + path + " in the rootfs", errno);
  std::string target(buf, static_cast<size_t>(n));
  if (target.empty()) return InvalidArgumentError("/" + path + " is an empty symlink");
  // ".." stops at the root, as openat2(RESOLVE_IN_ROOT) has it.
  return CleanSlashPath(target[0] == '/' ? target : "/" + parent + "/" + target).substr(1);
}

// mkdir -p of `rel` inside the rootfs as runc does it: symlinks on the way are followed, and
// one that leads nowhere has the directories it names made first (up to 40 of them, the
// kernel's limit). Adds what it makes to `created` and the directories they are made in to
// `parents`.
Status MakeDirsThrough(int root_fd, const std::string& rel, std::set<std::string>* created,
                       std::set<std::string>* parents, int links) {
  for (std::string last;;) {
    std::set<std::string> made, made_in;
    std::string dangling, dangling_parent;
    Status walked = WalkToTarget(root_fd, rel, &made, &made_in, &dangling, &dangling_parent);
    if (!dangling.empty() && dangling == last) {
      return FailedPreconditionError("/" + dangling + " still leads nowhere");
    }
    last = dangling;
    if (dangling.empty()) {
      SF_RETURN_IF_ERROR(walked);
      SF_RETURN_IF_ERROR(MakeDirsInRoot(root_fd, rel, 0755, 0, 0).status());
      created->insert(made.begin(), made.end());
      parents->insert(made_in.begin(), made_in.end());
      return Status();
    }
    if (links >= 40) return FailedPreconditionError("too many levels of symlinks at /" + rel);
    SF_ASSIGN_OR_RETURN(std::string to, SymlinkTargetInRoot(root_fd, dangling, dangling_parent));
    SF_RETURN_IF_ERROR(MakeDirsThrough(root_fd, to, created, parents, links + 1));
  }
}

}  // namespace

StatusOr<MountStubs> MountStubs::Record(int root_fd, const std::string& upper,
                                        const std::vector<std::string>& targets) {
  MountStubs stubs;
  std::set<std::string> created, parents;
  std::vector<std::string> target_dirs;  // the directories holding the targets
  for (const std::string& target : targets) {
    const std::string rel = CleanSlashPath(target).substr(1);  // targets are absolute
    std::string dangling, dangling_parent;
    // An error is the runtime's to report, when it fails the same way.
    Status walked = WalkToTarget(root_fd, rel, &created, &parents, &dangling, &dangling_parent);
    if (!dangling.empty()) {
      // A symlink on the way leads nowhere yet: runc makes the directories it names (and docker
      // build runs the step), crun refuses ("openat2 ...: No such file or directory"). They are
      // made here, as runc would, and are stubs like those the runtime makes below them.
      auto to = SymlinkTargetInRoot(root_fd, dangling, dangling_parent);
      if (!to.ok() || !MakeDirsThrough(root_fd, *to, &created, &parents, 1).ok()) continue;
      dangling.clear();
      walked = WalkToTarget(root_fd, rel, &created, &parents, &dangling, &dangling_parent);
    }
    const size_t slash = rel.rfind('/');
    if (walked.ok() && dangling.empty() && slash != std::string::npos) {
      target_dirs.push_back(rel.substr(0, slash));
    }
  }
  // Every directory above a created stub is copied up to the upper dir.
  for (const std::string& p : std::set<std::string>(parents)) {
    for (size_t slash = p.find('/'); slash != std::string::npos; slash = p.find('/', slash + 1)) {
      parents.insert(p.substr(0, slash));
    }
  }
  for (const std::string& p : parents) {
    struct stat st;
    // Already in the upper dir (e.g. the WORKDIR it just made): part of the step, not a copy-up.
    if (::lstat((upper + "/" + p).c_str(), &st) == 0) continue;
    auto fd = OpenInRoot(root_fd, p, O_PATH | O_NOFOLLOW);
    if (!fd.ok() || ::fstat(fd->get(), &st) != 0) continue;
    stubs.parents_.push_back(Parent{p, st.st_mode & 07777, st.st_uid, st.st_gid});
  }
  stubs.created_.assign(created.begin(), created.end());
  // The directories above the targets are made here, after the copy-ups above were recorded, as
  // runc makes them (0755; crun's are 01755): one the step writes into stays in the layer with
  // BuildKit's mode. An error is the runtime's to report.
  for (const std::string& dir : target_dirs) {
    MakeDirsInRoot(root_fd, dir, 0755, 0, 0).status().IgnoreError();
  }
  return stubs;
}

StatusOr<UniqueFd> OpenParentNoFollow(int dir_fd, const std::string& rel, std::string* name) {
  UniqueFd dir(::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0));
  if (!dir) return ErrnoError("dup", errno);
  size_t start = 0;
  for (size_t slash; (slash = rel.find('/', start)) != std::string::npos; start = slash + 1) {
    std::string part = rel.substr(start, slash - start);
    if (part.empty() || part == "." || part == "..") {
      return InvalidArgumentError("not a clean relative path: " + rel);
    }
    UniqueFd next(
        ::openat(dir.get(), part.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next) return ErrnoError("open " + rel.substr(0, slash), errno);  // ELOOP: a symlink
    dir = std::move(next);
  }
  *name = rel.substr(start);
  if (name->empty() || *name == "." || *name == "..") {
    return InvalidArgumentError("not a clean relative path: " + rel);
  }
  return dir;
}

void MountStubs::Remove(const std::string& upper) const {
  // Everything is resolved below the upper dir without following symlinks: the step may have
  // replaced any directory on the way by a symlink to the host's files.
  UniqueFd upper_fd(::open(upper.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!upper_fd) return;
  std::string name;
  // Deepest first (reverse path order puts children before their parents).
  for (auto it = created_.rbegin(); it != created_.rend(); ++it) {
    auto parent = OpenParentNoFollow(upper_fd.get(), *it, &name);
    struct stat st;
    if (!parent.ok() || ::fstatat(parent->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      // ENOTEMPTY: the step wrote there (outside any mount): keep it
      ::unlinkat(parent->get(), name.c_str(), AT_REMOVEDIR);
    } else if (S_ISREG(st.st_mode) && st.st_size == 0) {
      ::unlinkat(parent->get(), name.c_str(), 0);
    }
  }
  for (auto it = parents_.rbegin(); it != parents_.rend(); ++it) {
    auto parent = OpenParentNoFollow(upper_fd.get(), it->path, &name);
    if (!parent.ok()) continue;
    UniqueFd fd(
        ::openat(parent->get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    struct stat st;
    if (!fd || ::fstat(fd.get(), &st) != 0) continue;
    if ((st.st_mode & 07777) != it->mode || st.st_uid != it->uid || st.st_gid != it->gid) continue;
    char opaque[2];
    if (::fgetxattr(fd.get(), "trusted.overlay.opaque", opaque, sizeof opaque) > 0) continue;
    // Only when empty: just the copy-up of a directory above a stub.
    ::unlinkat(parent->get(), name.c_str(), AT_REMOVEDIR);
  }
}

}  // namespace stagefarm::worker
