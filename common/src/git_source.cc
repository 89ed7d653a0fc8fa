#include "stagefarm/common/git_source.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <regex>
#include <vector>

#include "stagefarm/common/child_process.h"
#include "stagefarm/common/clean_path.h"

namespace stagefarm {
namespace {

bool IsHex(std::string_view s, bool lower_only) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [&](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
           (!lower_only && c >= 'A' && c <= 'F');
  });
}

// gitutil.IsCommitSHA: a full SHA-1 commit hash, lowercase.
bool IsCommitSha(std::string_view s) { return s.size() == 40 && IsHex(s, true); }

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Go's url unescaping: %XX (a malformed escape fails), and '+' as a space in a query.
std::optional<std::string> Unescape(std::string_view s, bool query) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      int hi = HexDigit(s[i + 1]), lo = HexDigit(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (query && s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

using Query = std::map<std::string, std::vector<std::string>>;

// Go's url.ParseQuery: "&"-separated key=value pairs, unescaped. A pair with a ';' or a malformed
// escape is left out, and the result says so (url.Query() ignores that; an scp-like URL fails).
Query ParseQuery(std::string_view raw, bool* malformed) {
  Query q;
  while (!raw.empty()) {
    size_t amp = raw.find('&');
    std::string_view pair = raw.substr(0, amp);
    raw = amp == std::string_view::npos ? std::string_view() : raw.substr(amp + 1);
    if (pair.find(';') != std::string_view::npos) {
      *malformed = true;
      continue;
    }
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    std::optional<std::string> key = Unescape(pair.substr(0, eq), true);
    std::optional<std::string> value =
        Unescape(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1), true);
    if (!key || !value) {
      *malformed = true;
      continue;
    }
    q[*key].push_back(*value);
  }
  return q;
}

struct GitUrl {
  std::string remote;    // without query and fragment
  std::string fragment;  // "ref[:subdir]"
  Query query;
};

// gitutil.ParseURL as dfgitutil.ParseGitRef uses it; nullopt when the source is no git URL.
std::optional<GitUrl> ParseGitUrl(std::string_view source) {
  // Relative paths, and "github.com/..." (BuildKit reads that form as a git ref for build
  // contexts only; ADD copies such a path from the context).
  if (source.starts_with("./") || source.starts_with("../") || source.starts_with("github.com/")) {
    return std::nullopt;
  }
  GitUrl u;
  static const std::regex kProto("^[a-zA-Z0-9]+://");
  std::match_results<std::string_view::const_iterator> m;
  if (std::regex_search(source.begin(), source.end(), m, kProto)) {
    std::string scheme(source.substr(0, static_cast<size_t>(m.length(0)) - 3));
    std::transform(scheme.begin(), scheme.end(), scheme.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (scheme != "http" && scheme != "https" && scheme != "ssh" && scheme != "git") {
      return std::nullopt;
    }
    // url.Parse: the fragment after the first '#', the query after the first '?' before it.
    size_t hash = source.find('#');
    std::string_view before = source.substr(0, hash);
    if (hash != std::string_view::npos) {
      std::optional<std::string> fragment = Unescape(source.substr(hash + 1), false);
      if (!fragment) return std::nullopt;
      u.fragment = *fragment;
    }
    size_t question = before.find('?');
    // url.URL.String(): the scheme in lowercase.
    u.remote = scheme + std::string(before.substr(scheme.size(), question - scheme.size()));
    if (question != std::string_view::npos) {
      bool malformed = false;
      u.query = ParseQuery(before.substr(question + 1), &malformed);
    }
    std::string_view rest = std::string_view(u.remote).substr(scheme.size() + 3);
    size_t slash = rest.find('/');
    std::string_view authority = rest.substr(0, slash);
    std::string_view host = authority.substr(authority.rfind('@') + 1);
    if (size_t colon = host.rfind(':'); colon != std::string_view::npos && !host.ends_with(']')) {
      std::string_view port = host.substr(colon + 1);
      if (!std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return std::nullopt;  // url.Parse: invalid port
      }
    }
    std::optional<std::string> path =
        Unescape(slash == std::string_view::npos ? std::string_view() : rest.substr(slash), false);
    if (!path) return std::nullopt;
    // An http(s) URL names a repository only when its path ends in .git.
    if ((scheme == "http" || scheme == "https") && !path->ends_with(".git")) return std::nullopt;
    return u;
  }
  // scp-like: user@host:path[?query][#fragment] (sshutil's pattern).
  static const std::regex kScp(
      R"(^([a-zA-Z0-9_-]+)@([a-zA-Z0-9.-]+):([^?#]*)(?:\?([^#]*))?(?:#(.*))?$)");
  std::string text(source);
  std::smatch s;
  if (text.find('\n') != std::string::npos || !std::regex_match(text, s, kScp)) return std::nullopt;
  bool malformed = false;
  u.query = ParseQuery(s[4].str(), &malformed);
  if (malformed) return std::nullopt;  // ParseSCPStyleURL fails on any bad pair
  u.remote = s[1].str() + "@" + s[2].str() + ":" + s[3].str();
  u.fragment = s[5].str();
  return u;
}

std::optional<bool> ParseGoBool(const std::string& v) {
  static const std::map<std::string, bool> kValues = {
      {"1", true},    {"t", true},      {"T", true},      {"true", true},
      {"TRUE", true}, {"True", true},   {"0", false},     {"f", false},
      {"F", false},   {"false", false}, {"FALSE", false}, {"False", false}};
  auto it = kValues.find(v);
  if (it == kValues.end()) return std::nullopt;
  return it->second;
}

// dfgitutil's loadQuery (keys in sorted order, so that of two errors the same one is reported).
Status LoadQuery(const Query& query, GitRef* ref) {
  std::string tag, branch;
  for (const auto& [key, values] : query) {
    std::optional<std::string> value;
    if (values.size() > 1) return InvalidArgumentError("query \"" + key + "\" has multiple values");
    if (values.empty() || values[0].empty()) {
      if (key != "submodules" && key != "keep-git-dir") {
        return InvalidArgumentError("query \"" + key + "\" has no value");
      }
    } else {
      value = values[0];
    }
    if (key == "ref") {
      if (!ref->ref.empty() && ref->ref != *value) {
        return InvalidArgumentError("ref conflicts: \"" + ref->ref + "\" vs \"" + *value + "\"");
      }
      ref->ref = *value;
    } else if (key == "tag") {
      tag = *value;
    } else if (key == "branch") {
      branch = *value;
    } else if (key == "subdir") {
      if (!ref->subdir.empty() && ref->subdir != *value) {
        return InvalidArgumentError("subdir conflicts: \"" + ref->subdir + "\" vs \"" + *value +
                                    "\"");
      }
      ref->subdir = *value;
    } else if (key == "checksum" || key == "commit") {
      ref->checksum = *value;
    } else if (key == "keep-git-dir" || key == "submodules") {
      std::optional<bool> b = value ? ParseGoBool(*value) : std::optional<bool>(true);
      if (!b) return InvalidArgumentError("invalid " + key + " value: \"" + *value + "\"");
      (key == "keep-git-dir" ? ref->keep_git_dir : ref->submodules) = *b;
    } else {
      return InvalidArgumentError("unexpected query \"" + key + "\"");
    }
  }
  auto set_ref = [&](std::string name, std::string_view prefix) -> Status {
    if (!name.starts_with(prefix)) name = std::string(prefix) + name;
    if (!ref->ref.empty() && ref->ref != name) {
      return InvalidArgumentError("ref conflicts: \"" + ref->ref + "\" vs \"" + name + "\"");
    }
    ref->ref = name;
    return Status();
  };
  if (!tag.empty()) SF_RETURN_IF_ERROR(set_ref(tag, "refs/tags/"));
  if (!branch.empty()) {
    if (!tag.empty()) return InvalidArgumentError("branch conflicts with tag");
    SF_RETURN_IF_ERROR(set_ref(branch, "refs/heads/"));
  }
  return Status();
}

// urlutil.RedactCredentials: the user and password of a URL masked, for messages and .git/config.
std::string RedactCredentials(const std::string& remote) {
  size_t scheme = remote.find("://");
  if (scheme == std::string::npos) return remote;
  size_t start = scheme + 3;
  size_t end = std::min(remote.find('/', start), remote.size());
  size_t at = remote.rfind('@', end);
  if (at == std::string::npos || at < start) return remote;
  std::string_view info = std::string_view(remote).substr(start, at - start);
  size_t colon = info.find(':');
  std::string_view user = info.substr(0, colon);
  std::string masked = user.empty() ? "" : "xxxxx";
  if (colon != std::string_view::npos) masked += ":xxxxx";
  return remote.substr(0, start) + masked + remote.substr(at);
}

// Go's %q of a string, for "output: %q" in messages.
std::string GoQuote(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\x";
          out.push_back(kHex[c >> 4]);
          out.push_back(kHex[c & 15]);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  return out + "\"";
}

std::string Trim(std::string s) {
  s.erase(0, s.find_first_not_of(" \t\r\n"));
  s.erase(s.find_last_not_of(" \t\r\n") + 1);
  return s;
}

// git's own words for an error: its stderr, lines joined, at most the last 2000 bytes.
std::string GitWords(const std::string& err) {
  std::string joined;
  size_t start = 0;
  while (start < err.size()) {
    size_t end = std::min(err.find('\n', start), err.size());
    std::string line = Trim(err.substr(start, end - start));
    if (!line.empty()) joined += (joined.empty() ? "" : "; ") + line;
    start = end + 1;
  }
  if (joined.size() > 2000) joined = "..." + joined.substr(joined.size() - 2000);
  return joined;
}

// The git CLI as BuildKit's gitutil runs it: a clean environment (no system or user config, no
// prompts, C locale, the proxy and ssh-agent variables passed on), umask 022, and its retries: a
// fetch the server cannot make shallow runs again without --depth=1, one that the server refuses
// a commit for runs again without the commit.
class Git {
 public:
  Git(std::string git_dir, std::string work_tree)
      : git_dir_(std::move(git_dir)), work_tree_(std::move(work_tree)) {}

  // stdout of `git args...`; an error carries git's stderr.
  StatusOr<std::string> Run(std::vector<std::string> args) const {
    for (;;) {
      std::vector<std::string> argv = {"/bin/sh", "-c",  "umask 022 && exec \"$@\"",
                                       "sh",      "env", "-i"};
      for (const std::string& e : Environment()) argv.push_back(e);
      argv.push_back("git");
      if (!work_tree_.empty()) argv.insert(argv.end(), {"-C", work_tree_});
      argv.insert(argv.end(), {"-c", "protocol.file.allow=user"});
      if (!work_tree_.empty()) argv.insert(argv.end(), {"--work-tree", work_tree_});
      if (!git_dir_.empty()) argv.insert(argv.end(), {"--git-dir", git_dir_});
      argv.insert(argv.end(), args.begin(), args.end());
      SF_ASSIGN_OR_RETURN(CommandResult r,
                          RunCommand(argv, kTimeoutSeconds, /*separate_stderr=*/true));
      if (r.exit_code == 0) return std::move(r.output);
      const std::string& err = r.error_output;
      if (err.find("--depth") != std::string::npos || err.find("shallow") != std::string::npos) {
        auto depth = std::find(args.begin(), args.end(), "--depth=1");
        if (depth != args.end()) {
          args.erase(depth);
          continue;
        }
      }
      if ((err.find("not our ref") != std::string::npos ||
           err.find("unadvertised object") != std::string::npos) &&
          args.size() > 2 && args[0] == "fetch" && IsCommitSha(args.back())) {
        args.pop_back();
        continue;
      }
      std::string words = GitWords(err);
      if (words.empty()) words = "exit code " + std::to_string(r.exit_code);
      return UnavailableError("git " + args[0] + ": " + words);
    }
  }

 private:
  static constexpr int kTimeoutSeconds = 3600;

  static std::vector<std::string> Environment() {
    // Nothing in stagefarm calls setenv after start-up, so reading the environment is safe.
    auto get = [](const char* name) -> const char* {
      return std::getenv(name);  // NOLINT(concurrency-mt-unsafe)
    };
    const char* path = get("PATH");
    std::vector<std::string> env = {
        std::string("PATH=") + (path ? path : "/usr/local/bin:/usr/bin:/bin"),
        "GIT_TERMINAL_PROMPT=0",
        "GIT_SSH_COMMAND=ssh -F /dev/null -o StrictHostKeyChecking=no",
        "GIT_CONFIG_NOSYSTEM=1",
        "HOME=/dev/null",
        "LC_ALL=C"};
    for (const char* name : {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy",
                             "https_proxy", "no_proxy", "all_proxy", "SSH_AUTH_SOCK"}) {
      if (const char* v = get(name)) env.push_back(std::string(name) + "=" + v);
    }
    return env;
  }

  std::string git_dir_, work_tree_;
};

// The remote's default branch (ls-remote --symref HEAD).
StatusOr<std::string> DefaultBranch(const Git& git, const std::string& remote,
                                    const std::string& shown) {
  StatusOr<std::string> out = git.Run({"ls-remote", "--symref", remote, "HEAD"});
  if (!out.ok()) {
    return out.status().Annotate("error fetching default branch for repository " + shown);
  }
  static const std::regex kBranch(R"(refs/heads/(\S+))");
  std::smatch m;
  if (!std::regex_search(*out, m, kBranch)) {
    return NotFoundError("could not find default branch for repository: " + shown);
  }
  return m[1].str();
}

// The commit `ref` names on the remote, as BuildKit picks it from ls-remote: the ref itself
// under refs/, else a branch, else a tag (an annotated tag's commit).
StatusOr<std::string> ResolveRef(const Git& git, const std::string& ref, const std::string& shown) {
  StatusOr<std::string> out = git.Run({"ls-remote", "origin", ref, ref + "^{}"});
  if (!out.ok()) return out.status().Annotate("failed to fetch remote " + shown);
  auto strip = [&](std::string_view prefix) {
    return ref.starts_with(prefix) ? ref.substr(prefix.size()) : ref;
  };
  const std::string partial_ref = "refs/" + strip("refs/");
  const std::string head_ref = "refs/heads/" + strip("refs/heads/");
  const std::string tag_ref = "refs/tags/" + strip("refs/tags/");
  const std::string annotated_tag_ref = tag_ref + "^{}";
  std::string sha, head_sha, tag_sha;
  size_t start = 0;
  while (start < out->size()) {
    size_t end = std::min(out->find('\n', start), out->size());
    std::string line = out->substr(start, end - start);
    start = end + 1;
    size_t tab = line.find('\t');
    std::string line_sha = line.substr(0, tab);
    std::string line_ref = tab == std::string::npos ? "" : line.substr(tab + 1);
    if (line_ref == head_ref) {
      head_sha = line_sha;
    } else if (line_ref == tag_ref || line_ref == annotated_tag_ref) {
      tag_sha = line_sha;
    } else if (line_ref == partial_ref) {
      sha = line_sha;
    }
  }
  if (sha.empty()) sha = head_sha;  // git checkout prefers a branch when a name is ambiguous
  if (sha.empty()) sha = tag_sha;
  if (sha.empty()) {
    return NotFoundError("repository does not contain ref " + ref + ", output: " + GoQuote(*out));
  }
  if (!IsCommitSha(sha)) return InvalidArgumentError("invalid commit sha " + GoQuote(sha));
  return sha;
}

// Moves the entries of `subdir` of the checkout `from` into `dir`, then removes `from`.
Status KeepSubdir(const std::string& from, const std::string& subdir, const std::string& dir) {
  const std::string failed = "failed to open subdir " + subdir;
  std::error_code ec;
  // The subdirectory and the links on its way must stay inside the checkout.
  std::filesystem::path root = std::filesystem::canonical(from, ec);
  std::filesystem::path src = std::filesystem::canonical(from + "/" + subdir, ec);
  if (ec) return NotFoundError(failed + ": " + ec.message());
  auto rel = src.lexically_relative(root);
  if (rel.empty() || *rel.begin() == "..") {
    return InvalidArgumentError(failed + ": it is outside the repository");
  }
  if (!std::filesystem::is_directory(src, ec)) {
    return InvalidArgumentError(failed + ": not a directory");
  }
  std::vector<std::filesystem::path> entries;
  for (const auto& entry : std::filesystem::directory_iterator(src, ec)) {
    entries.push_back(entry.path());
  }
  if (ec) return ErrnoError("list " + src.string(), ec.value());
  for (const auto& entry : entries) {
    std::filesystem::rename(entry, std::filesystem::path(dir) / entry.filename(), ec);
    if (ec) return ErrnoError("move " + entry.string() + " to " + dir, ec.value());
  }
  std::filesystem::remove_all(from, ec);
  if (ec) return ErrnoError("remove " + from, ec.value());
  return Status();
}

}  // namespace

bool IsGitSource(std::string_view source) { return ParseGitUrl(source).has_value(); }

StatusOr<GitRef> ParseGitRef(std::string_view source) {
  std::optional<GitUrl> url = ParseGitUrl(source);
  if (!url) return InvalidArgumentError(std::string(source) + " is not a git URL");
  GitRef ref;
  ref.remote = url->remote;
  size_t colon = url->fragment.find(':');
  ref.ref = url->fragment.substr(0, colon);
  if (colon != std::string::npos) ref.subdir = url->fragment.substr(colon + 1);
  SF_RETURN_IF_ERROR(LoadQuery(url->query, &ref));
  return ref;
}

StatusOr<GitRef> WithAddFlags(GitRef ref, const std::string& checksum,
                              std::optional<bool> keep_git_dir) {
  if (keep_git_dir && ref.keep_git_dir && *keep_git_dir != *ref.keep_git_dir) {
    return InvalidArgumentError("inconsistent keep-git-dir configuration");
  }
  if (!ref.keep_git_dir) ref.keep_git_dir = keep_git_dir;
  if (!checksum.empty() && !ref.checksum.empty() && checksum != ref.checksum) {
    return InvalidArgumentError("checksum mismatch \"" + checksum + "\" != \"" + ref.checksum +
                                "\"");
  }
  if (ref.checksum.empty()) ref.checksum = checksum;
  return ref;
}

Status CheckGitChecksum(const std::string& checksum, const std::string& commit) {
  if (checksum.empty() || commit.starts_with(checksum)) return Status();
  return InvalidArgumentError("expected checksum to match " + checksum + ", got " + commit);
}

StatusOr<GitCheckout> CheckoutGitRef(const GitRef& ref, const std::string& scratch,
                                     const std::string& dir) {
  const std::string shown = RedactCredentials(ref.remote);
  if (!ref.checksum.empty() && !IsHex(ref.checksum, false)) {
    return InvalidArgumentError("invalid checksum " + ref.checksum +
                                " for Git URL, expected hex commit hash");
  }
  // git would read these as options (git itself allows no ref name that starts with '-').
  if (ref.remote.starts_with("-") || ref.ref.starts_with("-")) {
    return InvalidArgumentError("invalid git ref " + GoQuote(ref.ref) + " of " + shown);
  }
  const bool keep = ref.keep_git_dir.value_or(false);
  std::string subdir = CleanSlashPath(ref.subdir);
  if (subdir == "/") subdir = ".";

  // A bare repository with the remote as origin (BuildKit keeps one per remote; ours is new).
  const std::string bare = scratch + "/repo.git";
  Git git(bare, "");
  SF_RETURN_IF_ERROR(git.Run({"-c", "init.defaultBranch=master", "init", "--bare"}).status());
  SF_RETURN_IF_ERROR(git.Run({"remote", "add", "origin", ref.remote}).status());
  std::string name = ref.ref;
  if (name.empty()) {
    SF_ASSIGN_OR_RETURN(name, DefaultBranch(git, ref.remote, shown));
  }

  // BuildKit's cache key: the ref resolved on the remote, unless a full commit hash is given.
  if (!(IsCommitSha(ref.checksum) && !keep) && !IsCommitSha(name)) {
    SF_ASSIGN_OR_RETURN(std::string sha, ResolveRef(git, name, shown));
    SF_RETURN_IF_ERROR(CheckGitChecksum(ref.checksum, sha));
  }

  // The snapshot: fetch, check the checksum against what was fetched, check out.
  std::vector<std::string> fetch = {"fetch"};
  if (IsCommitSha(name)) {
    fetch.insert(fetch.end(), {"--tags", "origin", name});
  } else {
    fetch.insert(fetch.end(),
                 {"--depth=1", "--no-tags", "origin", "--force", name + ":tags/" + name});
  }
  SF_RETURN_IF_ERROR(git.Run(fetch).status().Annotate("failed to fetch remote " + shown));
  if (!ref.checksum.empty()) {
    StatusOr<std::string> actual = git.Run({"rev-parse", name});
    if (!actual.ok()) {
      return actual.status().Annotate("failed to rev-parse " + name + " for " + shown);
    }
    SF_RETURN_IF_ERROR(CheckGitChecksum(ref.checksum, Trim(*actual)));
  }

  std::string work_tree = dir;
  std::string git_dir = bare;
  std::string checked_out = name;  // what names the commit in git_dir
  if (keep && subdir == ".") {
    // dir/.git: a depth-1 clone of the bare repository at a detached HEAD, origin the remote.
    git_dir = dir + "/.git";
    checked_out = "HEAD";
    Git clone(git_dir, dir);
    SF_RETURN_IF_ERROR(clone.Run({"-c", "init.defaultBranch=master", "init"}).status());
    SF_RETURN_IF_ERROR(clone.Run({"remote", "add", "origin", "file://" + bare}).status());
    SF_ASSIGN_OR_RETURN(std::string type, git.Run({"cat-file", "-t", name}));
    std::string pull = name + ":" + name;
    if (Trim(type) == "tag") {
      pull = name + ":refs/tags/" + name;
    } else if (IsCommitSha(name)) {
      pull = "refs/stagefarm/checkout";  // fetched into FETCH_HEAD alone
      SF_RETURN_IF_ERROR(git.Run({"update-ref", pull, name}).status());
    }
    SF_RETURN_IF_ERROR(clone.Run({"fetch", "-u", "--depth=1", "origin", pull}).status());
    SF_RETURN_IF_ERROR(clone.Run({"checkout", "FETCH_HEAD"})
                           .status()
                           .Annotate("failed to checkout remote " + shown));
    SF_RETURN_IF_ERROR(clone.Run({"remote", "set-url", "origin", shown}).status());
    SF_RETURN_IF_ERROR(clone.Run({"reflog", "expire", "--all", "--expire=now"}).status());
    if (::unlink((git_dir + "/FETCH_HEAD").c_str()) != 0 && errno != ENOENT) {
      return ErrnoError("remove " + git_dir + "/FETCH_HEAD", errno);
    }
  } else {
    if (subdir != ".") {
      std::string tmpl = dir + "/checkoutXXXXXX";
      if (::mkdtemp(tmpl.data()) == nullptr) return ErrnoError("mkdtemp " + tmpl, errno);
      work_tree = tmpl;
    }
    SF_RETURN_IF_ERROR(Git(bare, work_tree)
                           .Run({"checkout", name, "--", "."})
                           .status()
                           .Annotate("failed to checkout remote " + shown));
  }
  if (ref.submodules.value_or(true)) {
    SF_RETURN_IF_ERROR(Git(git_dir, work_tree)
                           .Run({"submodule", "update", "--init", "--recursive", "--depth=1"})
                           .status()
                           .Annotate("failed to update submodules for " + shown));
  }
  if (work_tree != dir) SF_RETURN_IF_ERROR(KeepSubdir(work_tree, subdir, dir));

  SF_ASSIGN_OR_RETURN(std::string log,
                      Git(git_dir, "").Run({"log", "-1", "--format=%H %ct", checked_out}));
  GitCheckout out;
  size_t space = log.find(' ');
  out.commit = log.substr(0, space);
  if (!IsCommitSha(out.commit) || space == std::string::npos) {
    return InternalError("git log printed " + GoQuote(log) + " for " + name);
  }
  out.commit_time = std::strtoll(log.c_str() + space + 1, nullptr, 10);
  return out;
}

}  // namespace stagefarm
