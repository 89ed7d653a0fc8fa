#include "stagefarm/worker/user_db.h"

#include <algorithm>
#include <charconv>
#include <optional>

#include "stagefarm/worker/fs_util.h"

namespace stagefarm::worker {

namespace {

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    size_t pos = s.find(sep, start);
    if (pos == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

std::optional<uint32_t> ParseId(std::string_view s) {
  uint32_t v = 0;
  if (s.empty()) return std::nullopt;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

struct PasswdEntry {
  std::string_view name;
  uint32_t uid = 0, gid = 0;
  std::string_view home;
};
struct GroupEntry {
  std::string_view name;
  uint32_t gid = 0;
  std::vector<std::string_view> members;
};

std::vector<PasswdEntry> ParsePasswd(std::string_view text) {
  std::vector<PasswdEntry> out;
  for (std::string_view line : Split(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    auto f = Split(line, ':');
    if (f.size() < 4) continue;
    auto uid = ParseId(f[2]);
    auto gid = ParseId(f[3]);
    if (!uid || !gid) continue;
    out.push_back({f[0], *uid, *gid, f.size() > 5 ? f[5] : std::string_view()});
  }
  return out;
}

std::vector<GroupEntry> ParseGroup(std::string_view text) {
  std::vector<GroupEntry> out;
  for (std::string_view line : Split(text, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    auto f = Split(line, ':');
    if (f.size() < 3) continue;
    auto gid = ParseId(f[2]);
    if (!gid) continue;
    GroupEntry g{f[0], *gid, {}};
    if (f.size() > 3 && !f[3].empty()) g.members = Split(f[3], ',');
    out.push_back(std::move(g));
  }
  return out;
}

// A number, or "root" (BuildKit's executor takes it as 0 without reading /etc/passwd).
std::optional<uint32_t> ParseIdOrRoot(std::string_view s) {
  return s == "root" ? std::optional<uint32_t>(0) : ParseId(s);
}

void SplitSpec(std::string_view spec, std::string_view* user, std::string_view* group) {
  size_t colon = spec.find(':');
  *user = spec.substr(0, colon);
  *group = colon == std::string_view::npos ? std::string_view() : spec.substr(colon + 1);
}

// runc's GetExecUser, which BuildKit's executor uses when USER is not "uid:gid".
StatusOr<ResolvedUser> LookUpExecUser(std::string_view spec, std::string_view passwd,
                                      std::string_view group) {
  ResolvedUser out;
  std::string_view user_part, group_part;
  SplitSpec(spec, &user_part, &group_part);
  auto users = ParsePasswd(passwd);
  const PasswdEntry* matched = nullptr;
  if (auto uid = ParseId(user_part)) {
    out.uid = *uid;
    for (const auto& u : users) {
      if (u.uid == *uid) {
        matched = &u;
        break;
      }
    }
  } else {
    if (user_part.empty())
      return InvalidArgumentError("invalid user \"" + std::string(spec) + "\"");
    for (const auto& u : users) {
      if (u.name == user_part) {
        matched = &u;
        break;
      }
    }
    if (!matched) {
      return InvalidArgumentError("unable to find user " + std::string(user_part) +
                                  ": no matching entries in passwd file");
    }
    out.uid = matched->uid;
  }
  if (matched) out.gid = matched->gid;
  auto groups = ParseGroup(group);
  if (!group_part.empty()) {
    if (auto gid = ParseId(group_part)) {
      out.gid = *gid;
    } else {
      const GroupEntry* g = nullptr;
      for (const auto& e : groups) {
        if (e.name == group_part) {
          g = &e;
          break;
        }
      }
      if (!g) {
        return InvalidArgumentError("unable to find group " + std::string(group_part) +
                                    ": no matching entries in group file");
      }
      out.gid = g->gid;
    }
  } else if (matched) {
    // Like runc's GetExecUser: supplementary groups only when USER named no group.
    for (const auto& g : groups) {
      for (auto m : g.members) {
        if (m == matched->name && g.gid != out.gid) {
          out.additional_gids.push_back(g.gid);
          break;
        }
      }
    }
  }
  return out;
}

struct UserFiles {
  std::string passwd, group;
};

// The rootfs's /etc/passwd and /etc/group; a missing one reads as empty.
StatusOr<UserFiles> ReadUserFiles(int root_fd) {
  auto read = [&](std::string_view path) -> StatusOr<std::string> {
    auto text = ReadFileInRoot(root_fd, path, 64 << 20);
    if (!text.ok() && text.status().code() == StatusCode::kNotFound) return std::string();
    return text;
  };
  UserFiles files;
  SF_ASSIGN_OR_RETURN(files.passwd, read("/etc/passwd"));
  SF_ASSIGN_OR_RETURN(files.group, read("/etc/group"));
  return files;
}

}  // namespace

StatusOr<ResolvedUser> ResolveUserFrom(std::string_view spec, std::string_view passwd,
                                       std::string_view group) {
  ResolvedUser out;
  std::string_view user_part, group_part;
  SplitSpec(spec, &user_part, &group_part);
  std::optional<uint32_t> uid = ParseIdOrRoot(user_part), gid = ParseIdOrRoot(group_part);
  if (spec.find(':') != std::string_view::npos && uid && gid) {
    out.uid = *uid;
    out.gid = *gid;
  } else if (spec.empty()) {
    // No USER: uid 0 as /etc/passwd has it, or plain 0:0 when it has none.
    StatusOr<ResolvedUser> root = LookUpExecUser("0", passwd, group);
    if (root.ok()) out = std::move(*root);
  } else {
    SF_ASSIGN_OR_RETURN(out, LookUpExecUser(spec, passwd, group));
  }
  // HOME is runc's: the first /etc/passwd entry with the uid, whatever USER's form (USER toor
  // with toor's uid 0 has root's), else "/".
  out.home = "/";
  for (const PasswdEntry& u : ParsePasswd(passwd)) {
    if (u.uid == out.uid) {
      if (!u.home.empty()) out.home = std::string(u.home);
      break;
    }
  }
  // As BuildKit's executor (containerd's rule): the primary group is a supplementary one too.
  if (std::find(out.additional_gids.begin(), out.additional_gids.end(), out.gid) ==
      out.additional_gids.end()) {
    out.additional_gids.insert(out.additional_gids.begin(), out.gid);
  }
  return out;
}

StatusOr<ResolvedUser> ResolveUser(int root_fd, std::string_view spec) {
  SF_ASSIGN_OR_RETURN(UserFiles files, ReadUserFiles(root_fd));
  return ResolveUserFrom(spec, files.passwd, files.group);
}

ResolvedUser ResolveOwnerFrom(std::string_view spec, std::string_view passwd,
                              std::string_view group) {
  ResolvedUser out;
  if (spec.empty()) return out;
  std::string_view user_part, group_part;
  SplitSpec(spec, &user_part, &group_part);
  if (std::optional<uint32_t> uid = ParseIdOrRoot(user_part)) {
    out.uid = *uid;
    out.gid = *uid;
  } else {
    for (const PasswdEntry& u : ParsePasswd(passwd)) {
      if (u.name == user_part) {
        out.uid = u.uid;
        out.gid = u.gid;
        break;
      }
    }
  }
  if (spec.find(':') == std::string_view::npos) return out;
  if (std::optional<uint32_t> gid = ParseIdOrRoot(group_part)) {
    out.gid = *gid;
  } else {
    for (const GroupEntry& g : ParseGroup(group)) {
      if (g.name == group_part) {
        out.gid = g.gid;
        break;
      }
    }
  }
  return out;
}

StatusOr<ResolvedUser> ResolveOwner(int root_fd, std::string_view spec) {
  std::string_view user_part, group_part;
  SplitSpec(spec, &user_part, &group_part);
  const bool numeric = ParseIdOrRoot(user_part) &&
                       (spec.find(':') == std::string_view::npos || ParseIdOrRoot(group_part));
  if (spec.empty() || numeric) return ResolveOwnerFrom(spec, "", "");
  SF_ASSIGN_OR_RETURN(UserFiles files, ReadUserFiles(root_fd));
  return ResolveOwnerFrom(spec, files.passwd, files.group);
}

}  // namespace stagefarm::worker
