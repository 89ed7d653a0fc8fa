#include "stagefarm/worker/step_cgroup.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <sstream>
#include <vector>

#include "stagefarm/worker/fs_util.h"

namespace stagefarm::worker {

namespace {

bool IsDir(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// The path of this process's cgroup in the hierarchy holding `controller` (v1), or in the
// unified hierarchy when `controller` is empty.
std::string OwnCgroup(const std::string& self_cgroup, const std::string& controller) {
  std::istringstream in(self_cgroup);
  for (std::string line; std::getline(in, line);) {
    size_t a = line.find(':');
    size_t b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    std::string controllers = line.substr(a + 1, b - a - 1);
    std::string path = line.substr(b + 1);
    if (controller.empty()
            ? controllers.empty()
            : ("," + controllers + ",").find("," + controller + ",") != std::string::npos) {
      return path == "/" ? "" : path;
    }
  }
  return "";
}

uint64_t ReadCounter(const std::string& file, const std::string& key) {
  auto text = ReadFile(file, 1 << 16);
  if (!text.ok()) return 0;
  std::istringstream in(*text);
  for (std::string line; std::getline(in, line);) {
    if (key.empty()) return std::strtoull(line.c_str(), nullptr, 10);
    if (line.compare(0, key.size() + 1, key + " ") == 0) {
      return std::strtoull(line.c_str() + key.size() + 1, nullptr, 10);
    }
  }
  return 0;
}

}  // namespace

StatusOr<StepCgroup> StepCgroup::Create(const std::string& name, uint64_t memory_limit_bytes,
                                        uint32_t pids_limit, const std::string& cgroup_root,
                                        const std::string& self_cgroup_path) {
  SF_ASSIGN_OR_RETURN(std::string self, ReadFile(self_cgroup_path, 1 << 16));
  StepCgroup cg;
  cg.root_ = cgroup_root;
  cg.unified_ = ::access((cgroup_root + "/cgroup.controllers").c_str(), F_OK) == 0;
  const std::string base = OwnCgroup(self, cg.unified_ ? "" : "memory");
  cg.path_ = base + "/stagefarm-" + name;

  auto write = [](const std::string& file, const std::string& value) -> Status {
    Status s = WriteFile(file, value);
    return s.ok() ? s : s.Annotate("setting the step's cgroup limit");
  };
  if (cg.unified_) {
    // The parent must hand the controllers down; fails (EBUSY) if the worker sits in it itself
    // and it is not the root: run the worker in a cgroup of its own (Delegate=yes, or a pod).
    const std::string parent = cgroup_root + base;
    Status s = WriteFile(parent + "/cgroup.subtree_control", "+memory +pids");
    if (!s.ok()) {
      return FailedPreconditionError("cgroup v2: cannot delegate memory and pids below " + parent +
                                     " (" + s.ToString() +
                                     "); run the worker in a cgroup with no other processes");
    }
    const std::string dir = cgroup_root + cg.path_;
    if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
      return ErrnoError("mkdir " + dir, errno);
    }
    StepCgroup owned = std::move(cg);  // removed on any error below
    WriteFile(dir + "/cgroup.subtree_control", "+memory +pids").IgnoreError();  // best effort:
    // the limits are on this directory; the runtime enables what it needs for its child.
    if (memory_limit_bytes > 0) {
      SF_RETURN_IF_ERROR(write(dir + "/memory.max", std::to_string(memory_limit_bytes)));
      // No swap, as the v1 memsw limit below: a step over its limit is killed, not swapped.
      WriteFile(dir + "/memory.swap.max", "0").IgnoreError();  // absent without swap accounting
    }
    if (pids_limit > 0) SF_RETURN_IF_ERROR(write(dir + "/pids.max", std::to_string(pids_limit)));
    return owned;
  }
  StepCgroup owned = std::move(cg);
  const std::string mem = cgroup_root + "/memory" + owned.path_;
  const std::string pids = cgroup_root + "/pids" + owned.path_;
  SF_RETURN_IF_ERROR(MakeDirs(mem));
  SF_RETURN_IF_ERROR(MakeDirs(pids));
  if (memory_limit_bytes > 0) {
    SF_RETURN_IF_ERROR(write(mem + "/memory.limit_in_bytes", std::to_string(memory_limit_bytes)));
    // memory+swap no higher than memory: absent when the kernel does not account swap.
    if (::access((mem + "/memory.memsw.limit_in_bytes").c_str(), F_OK) == 0) {
      SF_RETURN_IF_ERROR(
          write(mem + "/memory.memsw.limit_in_bytes", std::to_string(memory_limit_bytes)));
    }
  }
  if (pids_limit > 0) SF_RETURN_IF_ERROR(write(pids + "/pids.max", std::to_string(pids_limit)));
  return owned;
}

StepCgroup::StepCgroup(StepCgroup&& o) noexcept
    : root_(std::exchange(o.root_, {})), path_(std::exchange(o.path_, {})), unified_(o.unified_) {}

StepCgroup& StepCgroup::operator=(StepCgroup&& o) noexcept {
  if (this != &o) {
    StepCgroup old(std::move(*this));
    root_ = std::exchange(o.root_, {});
    path_ = std::exchange(o.path_, {});
    unified_ = o.unified_;
  }
  return *this;
}

StepCgroup::~StepCgroup() {
  if (path_.empty()) return;
  std::vector<std::string> hierarchies;
  if (unified_) {
    hierarchies.push_back(root_);
  } else if (DIR* d = ::opendir(root_.c_str())) {
    // The runtime made P/ctr in every v1 hierarchy (cpu, cpuset, devices...), not only ours.
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != ".." && IsDir(root_ + "/" + n)) hierarchies.push_back(root_ + "/" + n);
    }
    ::closedir(d);
  }
  for (const auto& h : hierarchies) {
    // Errors ignored: a cgroup still busy (a process the runtime failed to kill) stays, visible
    // under the worker's cgroup; nothing else depends on its removal.
    ::rmdir((h + path_ + "/ctr").c_str());
    ::rmdir((h + path_).c_str());
  }
}

bool StepCgroup::OomKilled(int exit_code) const {
  if (path_.empty()) return false;
  if (unified_) return ReadCounter(root_ + path_ + "/memory.events", "oom_kill") > 0;
  // Which counter records the failed charge depends on the kernel (memory's or memory+swap's
  // failcnt, not tracked at all on some); a peak usage at the limit says the same.
  if (exit_code != 137) return false;
  const std::string dir = root_ + "/memory" + path_;
  for (const char* prefix : {"/memory.", "/memory.memsw."}) {
    if (ReadCounter(dir + prefix + "failcnt", "") > 0) return true;
    uint64_t limit = ReadCounter(dir + prefix + "limit_in_bytes", "");
    if (limit > 0 && ReadCounter(dir + prefix + "max_usage_in_bytes", "") >= limit) return true;
  }
  return false;
}

}  // namespace stagefarm::worker
