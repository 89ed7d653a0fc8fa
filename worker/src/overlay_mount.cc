#include "stagefarm/worker/overlay_mount.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <set>
#include <sstream>
#include <utility>

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
    below_ = std::exchange(o.below_, {});
  }
  return *this;
}

namespace {

Status UnmountOne(const std::string& target) {
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

}  // namespace

Status ScopedMount::Unmount() {
  Status status;
  if (!target_.empty()) status = UnmountOne(std::exchange(target_, {}));
  if (std::unique_ptr<ScopedMount> below = std::exchange(below_, nullptr)) {
    std::string point = below->target_;
    Status s = below->Unmount();
    if (s.ok() && ::rmdir(point.c_str()) != 0 && errno != ENOENT) {
      s = ErrnoError("rmdir " + point, errno);
    }
    if (status.ok()) status = std::move(s);
  }
  return status;
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
constexpr size_t kMaxLowers = 500;        // overlayfs's OVL_MAX_STACK

// The lower dirs top-first, each directory (by device and inode) once, at its topmost place.
StatusOr<std::vector<std::string>> TopmostOnce(const std::vector<std::string>& lowest_first) {
  std::vector<std::string> out;
  std::set<std::pair<dev_t, ino_t>> seen;
  for (auto it = lowest_first.rbegin(); it != lowest_first.rend(); ++it) {
    struct stat st;
    if (::stat(it->c_str(), &st) != 0) return ErrnoError("stat " + *it, errno);
    if (seen.emplace(st.st_dev, st.st_ino).second) out.push_back(*it);
  }
  return out;
}

std::string Options(const std::vector<std::string>& lowers, const std::string& upper,
                    const std::string& work) {
  std::string data = "lowerdir=";
  for (size_t i = 0; i < lowers.size(); ++i) data += (i ? ":" : "") + EscapeOption(lowers[i]);
  if (!upper.empty()) data += ",upperdir=" + EscapeOption(upper) + ",workdir=" + EscapeOption(work);
  // No index or redirects: the upper dir must read as a plain diff when it becomes a layer.
  return data + ",index=off,redirect_dir=off,metacopy=off";
}

bool Fits(const std::vector<std::string>& lowers, const std::string& upper,
          const std::string& work) {
  return lowers.size() <= kMaxLowers && Options(lowers, upper, work).size() <= kMountDataLimit;
}

// Short names for directories: /dev/fd/N (or /proc/self/fd/N where /dev/fd is not that) of
// descriptors held while the names are used.
class FdNames {
 public:
  StatusOr<std::string> Name(const std::string& dir) {
    UniqueFd fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return ErrnoError("open " + dir, errno);
    static const std::string prefix = [] {
      char buf[32];
      ssize_t n = ::readlink("/dev/fd", buf, sizeof buf);
      return n > 0 && std::string(buf, static_cast<size_t>(n)) == "/proc/self/fd"
                 ? std::string("/dev/fd/")
                 : std::string("/proc/self/fd/");
    }();
    std::string name = prefix + std::to_string(fd.get());
    held_.push_back(std::move(fd));
    return name;
  }
  StatusOr<std::vector<std::string>> Names(const std::vector<std::string>& dirs) {
    std::vector<std::string> out;
    for (const auto& dir : dirs) {
      SF_ASSIGN_OR_RETURN(std::string name, Name(dir));
      out.push_back(std::move(name));
    }
    return out;
  }

 private:
  std::vector<UniqueFd> held_;
};

Status Mount(const std::vector<std::string>& lowers, const std::string& upper,
             const std::string& work, const std::string& target) {
  const std::string data = Options(lowers, upper, work);
  if (::mount("overlay", target.c_str(), "overlay", upper.empty() ? MS_RDONLY : 0, data.c_str()) !=
      0) {
    return ErrnoError("mount overlay on " + target, errno);
  }
  return Status();
}

}  // namespace

StatusOr<ScopedMount> MountOverlay(const OverlaySpec& spec, const std::string& target) {
  SF_ASSIGN_OR_RETURN(std::vector<std::string> lowers, TopmostOnce(spec.lower_dirs));
  if (lowers.empty() || (spec.upper_dir.empty() && lowers.size() < 2)) {
    // overlayfs needs one lower dir, and two without an upper dir.
    if (spec.empty_dir.empty())
      return InvalidArgumentError("overlay: no lower dir and no empty dir");
    lowers.push_back(spec.empty_dir);
  }
  const std::string& upper = spec.upper_dir;
  ScopedMount mounted;
  if (Fits(lowers, upper, spec.work_dir)) {
    SF_RETURN_IF_ERROR(Mount(lowers, upper, spec.work_dir, target));
    mounted.target_ = target;
    return mounted;
  }
  FdNames fds;
  SF_ASSIGN_OR_RETURN(std::vector<std::string> names, fds.Names(lowers));
  std::string short_upper, short_work;
  if (!upper.empty()) {
    SF_ASSIGN_OR_RETURN(short_upper, fds.Name(upper));
    SF_ASSIGN_OR_RETURN(short_work, fds.Name(spec.work_dir));
  }
  if (Fits(names, short_upper, short_work)) {
    SF_RETURN_IF_ERROR(Mount(names, short_upper, short_work, target));
    mounted.target_ = target;
    return mounted;
  }
  // Too deep for one mount: the top layers stay lower dirs of their own, and every layer below
  // them goes into one read-only overlay, the lowest lower dir. That view is the whole lower
  // stack merged (its whiteouts and opaque directories applied), and the layers above apply
  // theirs to it: the same as one stack. (Overlays of a few layers each would not be: a
  // whiteout in one would not hide what the next one down holds.) Overlayfs nests one level.
  // As many top layers as fit beside the mount point's name (a descriptor's, as long as any):
  const std::string point = target + ".lower";
  const std::string longest_name = "/proc/self/fd/" + std::string(10, '9');
  size_t keep = names.size() > 2 ? std::min(names.size() - 2, kMaxLowers - 1) : 0;
  auto outer = [&](size_t n) {
    std::vector<std::string> v(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(n));
    v.push_back(longest_name);
    return v;
  };
  while (keep > 0 && !Fits(outer(keep), short_upper, short_work)) --keep;
  std::vector<std::string> direct(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(keep));
  std::vector<std::string> below(names.begin() + static_cast<std::ptrdiff_t>(keep), names.end());
  if (keep == 0 || !Fits(below, "", "")) {
    return ResourceExhaustedError("overlay: " + std::to_string(lowers.size()) +
                                  " layers are more than one rootfs can stack (overlayfs takes "
                                  "at most 500 lower dirs in one page of options, nested once)");
  }
  if (::mkdir(point.c_str(), 0755) != 0) return ErrnoError("mkdir " + point, errno);
  Status s = Mount(below, "", "", point);
  if (!s.ok()) {
    ::rmdir(point.c_str());  // failure: an empty directory left in the caller's dir
    return s;
  }
  mounted.below_ = std::make_unique<ScopedMount>(point);
  SF_ASSIGN_OR_RETURN(std::string point_name, fds.Name(point));
  direct.push_back(point_name);
  SF_RETURN_IF_ERROR(Mount(direct, short_upper, short_work, target));
  mounted.target_ = target;
  return mounted;
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
