// The runtime part of an image's configuration (OCI image config "config" object), as the
// frontend, coordinator and worker see it. oci.h converts it to and from OCI JSON.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace stagefarm {

struct HealthConfig {
  std::vector<std::string> test;  // ["NONE"], ["CMD", ...] or ["CMD-SHELL", "..."]
  int64_t interval_ns = 0, timeout_ns = 0, start_period_ns = 0, start_interval_ns = 0;
  int retries = 0;
  friend bool operator==(const HealthConfig&, const HealthConfig&) = default;
};

struct ImageConfig {
  std::string user;
  std::vector<std::string> env;  // "KEY=value", in order; a key appears once
  std::vector<std::string> entrypoint;
  std::vector<std::string> cmd;
  std::string working_dir;
  std::map<std::string, std::string> labels;
  std::set<std::string> exposed_ports;  // "80/tcp"
  std::set<std::string> volumes;
  std::string stop_signal;
  std::vector<std::string> shell;  // empty: the default ["/bin/sh", "-c"]
  std::vector<std::string> on_build;
  std::optional<HealthConfig> healthcheck;
  bool args_escaped = false;
  // The image's "author" (MAINTAINER), a member of the config document beside "config": kept
  // here so a stage inherits it from its base image as the rest of the config.
  std::string author;

  // The value of KEY in env, if set.
  std::optional<std::string> GetEnv(const std::string& key) const;
  // Sets or replaces KEY in env, keeping its position if it existed.
  void SetEnv(const std::string& key, const std::string& value);

  friend bool operator==(const ImageConfig&, const ImageConfig&) = default;
};

// One entry of the image config's "history".
struct HistoryEntry {
  std::string created;  // RFC 3339; empty to leave out
  std::string created_by;
  std::string comment;
  bool empty_layer = false;
  friend bool operator==(const HistoryEntry&, const HistoryEntry&) = default;
};

}  // namespace stagefarm
