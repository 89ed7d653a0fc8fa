// Mounts, owned: a ScopedMount unmounts on destruction (lazily, with MNT_DETACH, if something
// still holds the mount busy), so a step leaves nothing mounted whatever happens.
#pragma once

#include <string>
#include <vector>

#include "stagefarm/common/status.h"

namespace stagefarm::worker {

class ScopedMount {
 public:
  ScopedMount() = default;
  explicit ScopedMount(std::string target) : target_(std::move(target)) {}
  ~ScopedMount();
  ScopedMount(ScopedMount&& o) noexcept : target_(std::exchange(o.target_, {})) {}
  ScopedMount& operator=(ScopedMount&& o) noexcept;
  ScopedMount(const ScopedMount&) = delete;
  ScopedMount& operator=(const ScopedMount&) = delete;

  const std::string& target() const { return target_; }
  // Unmounts now and reports failure (the destructor cannot). Falls back to a lazy detach when
  // the mount is busy. Idempotent.
  Status Unmount();

 private:
  std::string target_;
};

struct OverlaySpec {
  // Lowest first, as layers stack (the order of StageTask::base_layers). May be empty: an empty
  // directory (`empty_dir`) then stands in, since overlayfs needs at least one lower dir.
  std::vector<std::string> lower_dirs;
  std::string empty_dir;
  // Empty upper_dir = a read-only overlay of the lower dirs.
  std::string upper_dir;
  std::string work_dir;  // same filesystem as upper_dir
};

// Mounts an overlay at `target`. The lower dirs are passed top-first, as overlayfs wants them.
// When the option string would exceed the kernel's one-page limit, the lower dirs are named as
// /proc/self/fd/N of descriptors held during the mount (about 200 layers fit); beyond that,
// ResourceExhausted.
StatusOr<ScopedMount> MountOverlay(const OverlaySpec& spec, const std::string& target);

// The mount points at or below `path` listed in /proc/self/mountinfo (for tests and checks).
StatusOr<std::vector<std::string>> MountsUnder(const std::string& path);

}  // namespace stagefarm::worker
