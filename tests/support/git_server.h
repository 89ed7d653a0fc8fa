// A git server on 127.0.0.1 for tests of ADD from git repositories: the repositories of
// tests/fixtures/make-git-repos (fixed authors and dates, so their commit hashes never change),
// served by `git daemon` (git://) and by a static http server (dumb http, as BuildKit's own tests
// serve theirs). Golden cases with "git": true get its URLs as the build args GIT_HTTP and
// GIT_DAEMON. The object owns the repositories' directory and both server processes (their
// whole process groups are killed with it).
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "support/process.h"

namespace stagefarm::testing {

class GitServer {
 public:
  // Makes the repositories and starts both servers on free ports. A failure is reported as a
  // test failure (ADD_FAILURE) and leaves ok() false.
  GitServer();
  GitServer(const GitServer&) = delete;
  GitServer& operator=(const GitServer&) = delete;

  bool ok() const { return ok_; }
  // "http://127.0.0.1:P": repository NAME is at http_url() + "/NAME.git".
  std::string http_url() const { return "http://127.0.0.1:" + std::to_string(http_port_); }
  // "git://127.0.0.1:Q": repository NAME is at git_url() + "/NAME.git".
  std::string git_url() const { return "git://127.0.0.1:" + std::to_string(git_port_); }
  // {"GIT_HTTP=<http_url()>", "GIT_DAEMON=<git_url()>"}, the build args of golden cases.
  std::vector<std::string> BuildArgs() const;
  // The bare repositories: <repos()>/repo.git, <repos()>/lib.git.
  std::string repos() const { return dir_.path() + "/repos"; }
  // A commit the fixture script names ("repo:main", "repo:v1", "repo:v2-tag-object", "lib:main",
  // as in its commits.txt); "" if there is none of that name.
  std::string Commit(const std::string& name) const;

 private:
  bool StartHttp();
  bool StartDaemon();

  TempDir dir_;
  std::unique_ptr<ChildProcess> http_, daemon_;
  int http_port_ = 0, git_port_ = 0;
  std::map<std::string, std::string> commits_;
  bool ok_ = false;
};

}  // namespace stagefarm::testing
