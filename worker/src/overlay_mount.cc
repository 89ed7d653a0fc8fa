#include "stagefarm/worker/overlay_mount.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <sstream>

#include "stagefarm/common/unique_fd.h"
#include "stagefarm/worker/fs_util.h"

namespace stagefarm::worker {

ScopedMount::~ScopedMount() {
  Status s = Unmount();
  // A destructor cannot report; Unmount already fell back to a detach.
  if (!s.ok()) std::fprintf(stderr, "stagefarm: %s\n", s.ToString().c_str());
}

ScopedMount& ScopedMount::operator=(ScopedMount&& o) noexcept {
  if (this != &o) {
    ScopedMount old(std::move(*this));
    target_ = std::exchange(o.target_, {});
  }
  return *this;
}

Status ScopedMount::Unmount() {
  if (target_.empty()) return Status();
  std::string target = std::exchange(target_, {});
  for (;;) {
    if (::umount2(target.c_str(), UMOUNT_NOFOLLOW) == 0) return Status();
    int err = errno;
    if (err == EINTR) continue;
    if (err == EINVAL || err == ENOENT) return Status();  // not mounted (any more)
    // EBUSY: a just-exited sandbox's mount namespace, which the kernel tears down a moment
    // later, still holds it. Nothing uses the mount any more (the layer is read from the upper
    // directory), so it is detached now rather than waited for.
    if (::umount2(target.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0) return Status();
    return ErrnoError("unmount " + target, errno);
  }
}

namespace {
std::string EscapeOption(const std::string& path) {
  // overlayfs splits lowerdir on ':' and options on ','; both can be escaped with a backslash.
  std::string out;
  for (char c : path) {
    if (c == ':' || c == ',' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}
constexpr size_t kMountDataLimit = 4095;  // one page, less the terminating NUL
}  // namespace

StatusOr<ScopedMount> MountOverlay(const OverlaySpec& spec, const std::string& target) {
  std::vector<std::string> lowers(spec.lower_dirs.rbegin(), spec.lower_dirs.rend());
  if (lowers.empty() || (spec.upper_dir.empty() && lowers.size() < 2)) {
    // overlayfs needs one lower dir, and two without an upper dir.
    if (spec.empty_dir.empty())
      return InvalidArgumentError("overlay: no lower dir and no empty dir");
    lowers.push_back(spec.empty_dir);
  }
  auto build = [&](const std::vector<std::string>& names) {
    std::string data = "lowerdir=";
    for (size_t i = 0; i < names.size(); ++i) data += (i ? ":" : "") + EscapeOption(names[i]);
    if (!spec.upper_dir.empty()) {
      data +=
          ",upperdir=" + EscapeOption(spec.upper_dir) + ",workdir=" + EscapeOption(spec.work_dir);
    }
    // No index or redirects: the upper dir must read as a plain diff when it becomes a layer.
    data += ",index=off,redirect_dir=off,metacopy=off";
    return data;
  };
  std::string data = build(lowers);
  std::vector<UniqueFd> held;
  if (data.size() > kMountDataLimit) {
    std::vector<std::string> short_names;
    for (const auto& dir : lowers) {
      UniqueFd fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      if (!fd) return ErrnoError("open " + dir, errno);
      short_names.push_back("/proc/self/fd/" + std::to_string(fd.get()));
      held.push_back(std::move(fd));
    }
    data = build(short_names);
    if (data.size() > kMountDataLimit) {
      return ResourceExhaustedError("overlay: " + std::to_string(lowers.size()) +
                                    " layers do not fit in one mount's options (limit ~200)");
    }
  }
  int flags = spec.upper_dir.empty() ? MS_RDONLY : 0;
  if (::mount("overlay", target.c_str(), "overlay", flags, data.c_str()) != 0) {
    return ErrnoError("mount overlay on " + target, errno);
  }
  return ScopedMount(target);
}

StatusOr<std::vector<std::string>> MountsUnder(const std::string& path) {
  SF_ASSIGN_OR_RETURN(std::string info, ReadFile("/proc/self/mountinfo"));
  std::vector<std::string> out;
  std::istringstream in(info);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, dev, root, mount_point;
    fields >> id >> parent >> dev >> root >> mount_point;
    if (mount_point == path || mount_point.rfind(path + "/", 0) == 0) out.push_back(mount_point);
  }
  return out;
}

}  // namespace stagefarm::worker
