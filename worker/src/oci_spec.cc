#include "stagefarm/worker/oci_spec.h"

#include <cmath>
#include <nlohmann/json.hpp>

#include "stagefarm/worker/seccomp_profile.h"

namespace stagefarm::worker {

using nlohmann::json;

const std::vector<std::string>& SandboxMountPoints() {
  static const std::vector<std::string> kPoints = {"/etc/hosts", "/etc/resolv.conf"};
  return kPoints;
}

namespace {

bool HasVar(const std::vector<std::string>& env, const std::string& name) {
  for (const auto& kv : env) {
    if (kv.compare(0, name.size() + 1, name + "=") == 0) return true;
  }
  return false;
}

json Mount(const std::string& dest, const std::string& type, const std::string& source,
           std::vector<std::string> options) {
  return json{{"destination", dest}, {"type", type}, {"source", source}, {"options", options}};
}

json DeviceRule(bool allow, const char* type, int64_t major, int64_t minor, const char* access) {
  json rule{{"allow", allow}, {"access", access}};
  if (type) rule["type"] = type;
  if (major >= 0) rule["major"] = major;
  if (minor >= 0) rule["minor"] = minor;
  return rule;
}

}  // namespace

std::string MakeOciConfig(const SandboxConfig& c) {
  // Docker's default capability set (moby oci/caps/defaults.go).
  std::vector<std::string> caps = {
      "CAP_CHOWN",   "CAP_DAC_OVERRIDE", "CAP_FSETID",           "CAP_FOWNER",
      "CAP_MKNOD",   "CAP_NET_RAW",      "CAP_SETGID",           "CAP_SETUID",
      "CAP_SETFCAP", "CAP_SETPCAP",      "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
      "CAP_KILL",    "CAP_AUDIT_WRITE"};

  std::vector<std::string> env = c.env;
  if (!HasVar(env, "PATH")) {
    env.push_back("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  }
  if (!HasVar(env, "HOME")) env.push_back("HOME=" + c.user.home);

  json user{{"uid", c.user.uid}, {"gid", c.user.gid}};
  if (!c.user.additional_gids.empty()) user["additionalGids"] = c.user.additional_gids;

  json process{
      {"terminal", false},
      {"user", user},
      {"args", c.args},
      {"env", env},
      {"cwd", c.cwd.empty() ? "/" : c.cwd},
      {"capabilities",
       {{"bounding", caps},
        {"effective", caps},
        {"permitted", caps},
        {"inheritable", json::array()}}},
      {"noNewPrivileges", false},
  };

  json mounts = json::array({
      Mount("/proc", "proc", "proc", {"nosuid", "noexec", "nodev"}),
      Mount("/dev", "tmpfs", "tmpfs", {"nosuid", "strictatime", "mode=755", "size=65536k"}),
      Mount("/dev/pts", "devpts", "devpts",
            {"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}),
      Mount("/dev/shm", "tmpfs", "shm", {"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}),
      Mount("/dev/mqueue", "mqueue", "mqueue", {"nosuid", "noexec", "nodev"}),
      Mount("/sys", "sysfs", "sysfs", {"nosuid", "noexec", "nodev", "ro"}),
  });
  if (!c.hosts_file.empty()) {
    mounts.push_back(Mount("/etc/hosts", "bind", c.hosts_file, {"rbind", "rprivate"}));
  }
  if (!c.resolv_conf_file.empty()) {
    mounts.push_back(Mount("/etc/resolv.conf", "bind", c.resolv_conf_file, {"rbind", "rprivate"}));
  }
  for (const SandboxMount& m : c.mounts) {
    mounts.push_back(Mount(m.destination, m.type, m.source, m.options));
  }

  json namespaces =
      json::array({{{"type", "pid"}}, {{"type", "ipc"}}, {{"type", "uts"}}, {{"type", "mount"}}});
  if (c.isolated_network) namespaces.push_back({{"type", "network"}});

  // The runtime creates null, zero, full, random, urandom, tty (and ptmx -> pts/ptmx) itself;
  // the device cgroup allows those and nothing else, as Docker's default does.
  json devices = json::array({
      DeviceRule(false, nullptr, -1, -1, "rwm"), DeviceRule(true, "c", 1, 3, "rwm"),  // null
      DeviceRule(true, "c", 1, 5, "rwm"),                                             // zero
      DeviceRule(true, "c", 1, 7, "rwm"),                                             // full
      DeviceRule(true, "c", 1, 8, "rwm"),                                             // random
      DeviceRule(true, "c", 1, 9, "rwm"),                                             // urandom
      DeviceRule(true, "c", 5, 0, "rwm"),                                             // tty
      DeviceRule(true, "c", 5, 2, "rwm"),                                             // ptmx
      DeviceRule(true, "c", 136, -1, "rwm"),                                          // pts/*
  });
  json resources{{"devices", devices}};
  if (c.memory_limit_bytes > 0) {
    resources["memory"] = {{"limit", c.memory_limit_bytes}, {"swap", c.memory_limit_bytes}};
  }
  if (c.pids_limit > 0) resources["pids"] = {{"limit", c.pids_limit}};
  if (c.cpus > 0) {
    constexpr uint64_t kPeriod = 100000;
    resources["cpu"] = {{"period", kPeriod},
                        {"quota", static_cast<int64_t>(std::llround(c.cpus * kPeriod))}};
  }

  json linux_section{
      {"namespaces", namespaces},
      {"resources", resources},
      // Docker's defaults (moby oci/defaults.go).
      {"maskedPaths",
       {"/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
        "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}},
      {"readonlyPaths", {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}},
  };

  if (!c.cgroups_path.empty()) linux_section["cgroupsPath"] = c.cgroups_path;
  if (c.seccomp) linux_section["seccomp"] = DefaultSeccompProfile();

  json config{
      {"ociVersion", "1.0.2"},
      {"process", process},
      {"root", {{"path", c.rootfs}, {"readonly", false}}},
      {"hostname", c.hostname},
      {"mounts", mounts},
      {"linux", linux_section},
  };
  return config.dump(2);
}

}  // namespace stagefarm::worker
