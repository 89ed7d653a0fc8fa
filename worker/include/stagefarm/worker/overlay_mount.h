// Mounts, owned: a ScopedMount unmounts on destruction (lazily, with MNT_DETACH, if something
// still holds the mount busy), so a step leaves nothing mounted whatever happens. An overlay of
// more layers than one mount takes holds the read-only overlay of its lowest layers, and
// unmounts it (and removes its mount point) after its own.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "stagefarm/common/status.h"

namespace stagefarm::worker {

struct OverlaySpec;

class ScopedMount {
 public:
  ScopedMount() = default;
  explicit ScopedMount(std::string target) : target_(std::move(target)) {}
  ~ScopedMount();
  ScopedMount(ScopedMount&& o) noexcept
      : target_(std::exchange(o.target_, {})), below_(std::exchange(o.below_, {})) {}
  ScopedMount& operator=(ScopedMount&& o) noexcept;
  ScopedMount(const ScopedMount&) = delete;
  ScopedMount& operator=(const ScopedMount&) = delete;

  const std::string& target() const { return target_; }
  // Unmounts now and reports failure (the destructor cannot). Falls back to a lazy detach when
  // the mount is busy. Idempotent.
  Status Unmount();

 private:
  friend StatusOr<ScopedMount> MountOverlay(const OverlaySpec&, const std::string&);
  std::string target_;
  // The overlay this one stacks on (its lowest lower dir), if any, on a mount point of its own
  // next to target_: unmounted after target_, and its mount point removed.
  std::unique_ptr<ScopedMount> below_;
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

// Mounts an overlay at `target` that shows exactly what the lower dirs stacked in order show, for
// any stack:
// - A directory listed more than once (the same layer made by two steps, e.g. two `RUN true`) is
//   used once, at its topmost place: overlayfs refuses a directory twice (ELOOP), and the lower
//   copy adds nothing. At every path the upper copy has the same entry as the lower one, so it
//   either hides it (a file, whiteout or opaque directory) or is a directory whose children it
//   holds too; where it has none the lower copy has none. Directories are told apart by device
//   and inode, so two names of one directory count as one.
// - When the option string would exceed the kernel's one-page limit, the directories are named as
//   /dev/fd/N (or /proc/self/fd/N) of descriptors held during the mount.
// - A stack deeper than one mount takes (overlayfs stacks at most 500 lower dirs, and one page of
//   options holds some 330 such names) keeps as many top layers as fit and puts all the layers
//   below them into one read-only overlay, mounted at "<target>.lower" (a sibling of `target`),
//   its lowest lower dir: the merged view of those layers, to which the layers above apply their
//   whiteouts as to any directory. Overlayfs allows this one level of nesting on a worker root
//   that is not itself on overlayfs (CheckHost refuses one that is). Some 650 layers fit;
//   beyond, ResourceExhausted.
StatusOr<ScopedMount> MountOverlay(const OverlaySpec& spec, const std::string& target);

// The mount points at or below `path` listed in /proc/self/mountinfo (for tests and checks).
StatusOr<std::vector<std::string>> MountsUnder(const std::string& path);

}  // namespace stagefarm::worker
