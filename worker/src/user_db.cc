#include "stagefarm/worker/user_db.h"

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

}  // namespace

StatusOr<ResolvedUser> ResolveUserFrom(std::string_view spec, std::string_view passwd,
                                       std::string_view group) {
  ResolvedUser out;
  if (spec.empty()) return out;
  std::string_view user_part = spec, group_part;
  size_t colon = spec.find(':');
  if (colon != std::string_view::npos) {
    user_part = spec.substr(0, colon);
    group_part = spec.substr(colon + 1);
  }
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
  if (matched) {
    out.gid = matched->gid;
    if (!matched->home.empty()) out.home = std::string(matched->home);
  }
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

StatusOr<ResolvedUser> ResolveUser(int root_fd, std::string_view spec) {
  if (spec.empty()) return ResolvedUser();
  auto read = [&](std::string_view path) -> StatusOr<std::string> {
    auto text = ReadFileInRoot(root_fd, path, 64 << 20);
    if (!text.ok() && text.status().code() == StatusCode::kNotFound) return std::string();
    return text;
  };
  SF_ASSIGN_OR_RETURN(std::string passwd, read("/etc/passwd"));
  SF_ASSIGN_OR_RETURN(std::string group, read("/etc/group"));
  return ResolveUserFrom(spec, passwd, group);
}

}  // namespace stagefarm::worker

namespace stagefarm::worker {

StatusOr<ResolvedUser> ResolveOwner(int root_fd, std::string_view spec) {
  SF_ASSIGN_OR_RETURN(ResolvedUser owner, ResolveUser(root_fd, spec));
  owner.additional_gids.clear();
  std::string_view user_part = spec.substr(0, spec.find(':'));
  if (spec.find(':') == std::string_view::npos && ParseId(user_part)) owner.gid = owner.uid;
  return owner;
}

}  // namespace stagefarm::worker
