// RUN --mount on the worker: what each MountSpec of a step becomes in its sandbox, and keeping the
// mount points out of the step's layer.
//
//   type=cache   a directory of this worker's, <root>/cache-mounts/<hash of id>, kept between
//                steps and builds (CacheMounts); sharing=shared|private|locked
//   type=tmpfs   a tmpfs (size= honoured)
//   type=bind    the build context (materialised from the CAS into the step's scratch dir) or a
//                stage's or image's filesystem (an overlay of its layers); read-only unless rw,
//                and rw changes are discarded with the scratch dir
//   type=secret  a file on a tmpfs of the step's (never on disk), bind-mounted read-only at its
//                target (mode 0400 by default), or an environment variable
//
// Nothing mounted enters the layer: the runtime writes to the mounts, not the upper dir, and the
// mount points it creates are removed from the upper dir after the step (MountStubs).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "stagefarm/common/cache_client.h"
#include "stagefarm/common/status.h"
#include "stagefarm/common/unique_fd.h"
#include "stagefarm/common/worker_protocol.h"
#include "stagefarm/worker/layer_store.h"
#include "stagefarm/worker/oci_spec.h"
#include "stagefarm/worker/overlay_mount.h"

namespace stagefarm::worker {

// The worker's persistent cache-mount directories. Thread-safe; shared by all tasks of a worker.
class CacheMounts {
 public:
  explicit CacheMounts(std::string dir);  // <worker root>/cache-mounts

  // A directory in use by one step; released on destruction. Move-only.
  class Lease {
   public:
    Lease() = default;
    ~Lease();
    Lease(Lease&& o) noexcept
        : owner_(std::exchange(o.owner_, nullptr)), path_(std::move(o.path_)), fresh_(o.fresh_) {}
    Lease& operator=(Lease&& o) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    const std::string& path() const { return path_; }
    bool fresh() const { return fresh_; }  // the directory was made for this lease

   private:
    friend class CacheMounts;
    CacheMounts* owner_ = nullptr;
    std::string path_;
    bool fresh_ = false;
  };

  // The directory for cache `id`. sharing "shared" (or ""): every step at once; "private": a
  // directory no other step uses now (a further one is made when the first is busy); "locked":
  // waits until no other step uses it. A new directory gets `mode` (default 0755) and `uid`:`gid`
  // (default 0:0). Cancelled when `cancelled` becomes true while waiting; DeadlineExceeded when
  // still waiting at `deadline`.
  StatusOr<Lease> Acquire(const std::string& id, const std::string& sharing, int64_t mode,
                          int64_t uid, int64_t gid, const std::atomic<bool>& cancelled,
                          std::chrono::steady_clock::time_point deadline =
                              std::chrono::steady_clock::time_point::max());

 private:
  struct Use {
    int users = 0;
    bool locked = false;
  };
  void Release(const std::string& path);
  StatusOr<bool> Ensure(const std::string& path, int64_t mode, int64_t uid, int64_t gid);

  const std::string dir_;
  std::mutex mu_;  // guards uses_
  std::condition_variable released_;
  std::map<std::string, Use> uses_;  // by path
};

// What a step's mounts need from the worker.
struct RunMountEnv {
  LayerStore* layers;                                 // extracted layers of bind/cache sources
  CacheClient* cache;                                 // the build context of binds without from=
  CacheMounts* caches;                                // type=cache directories
  const std::map<std::string, std::string>* secrets;  // the task's secrets by id
  const std::atomic<bool>* cancelled;
  std::string scratch_dir;  // an empty directory of the step's, removed after it
  std::string workdir;      // relative targets are relative to it
  // Waiting for a locked cache fails after this (the step's timeout).
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

// The mounts of one step, prepared and held until destroyed (or Release()d): overlay mounts,
// tmpfs, cache leases. Destroy it before the scratch dir is removed.
class PreparedMounts {
 public:
  PreparedMounts() = default;
  ~PreparedMounts() { Release().IgnoreError(); }  // errors: the destructor cannot report them
  PreparedMounts(PreparedMounts&&) = default;
  PreparedMounts& operator=(PreparedMounts&&) = default;

  // For SandboxConfig::mounts, shallowest target first.
  const std::vector<SandboxMount>& sandbox_mounts() const { return mounts_; }
  // "VAR=value" of secrets mounted as environment variables (append to the process env).
  const std::vector<std::string>& env() const { return env_; }
  // The targets, absolute and clean, for MountStubs.
  std::vector<std::string> targets() const;
  // A directory on a tmpfs of the step's, when the step uses secrets: keep anything that
  // contains them (the runtime's config.json, with secret env vars) there. "" otherwise.
  const std::string& private_dir() const { return private_dir_; }

  // Unmounts and releases everything now (a locked cache is free for the next step at once).
  Status Release();

 private:
  friend StatusOr<PreparedMounts> PrepareRunMounts(const std::vector<MountSpec>& specs,
                                                   const RunMountEnv& env);
  friend class MountPreparer;
  std::vector<SandboxMount> mounts_;
  std::vector<std::string> env_;
  std::string private_dir_;
  std::vector<CacheMounts::Lease> leases_;
  std::vector<ScopedMount> held_;  // unmounted last first
};

// Prepares `specs`. Cache leases are taken in the order of their ids (so steps sharing locked
// caches cannot deadlock); the same cache id twice in one step is InvalidArgument. Errors name
// the mount: "--mount=type=bind,source=app: not found in the build context". A required secret the
// task lacks: FailedPrecondition naming its id and how to pass it; an optional one is not mounted.
// Secret values never appear in errors.
StatusOr<PreparedMounts> PrepareRunMounts(const std::vector<MountSpec>& specs,
                                          const RunMountEnv& env);

// The directory holding `rel` (relative, clean) below the directory `dir_fd`, opened without
// following any symlink on the way; `*name` gets the last component. An error when a component is
// missing or is not a real directory (e.g. a symlink a step planted in its upper dir).
StatusOr<UniqueFd> OpenParentNoFollow(int dir_fd, const std::string& rel, std::string* name);

// The mount points the runtime will create in the rootfs for `targets` (paths missing in the
// rootfs before the step), and the existing directories above them that overlayfs copies up when
// they get a new entry. Remove() deletes those from the upper dir after the step when they are
// still just stubs (empty, and copied-up directories with unchanged mode and owner), so the layer
// holds only what the command wrote.
class MountStubs {
 public:
  // `root_fd`: the step's rootfs (the overlay), `upper`: its upper dir, before the command runs.
  static StatusOr<MountStubs> Record(int root_fd, const std::string& upper,
                                     const std::vector<std::string>& targets);
  void Remove(const std::string& upper) const;

 private:
  struct Parent {
    std::string path;
    mode_t mode;
    uid_t uid;
    gid_t gid;
  };
  std::vector<std::string> created_;  // relative paths
  std::vector<Parent> parents_;
};

}  // namespace stagefarm::worker
