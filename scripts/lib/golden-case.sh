# Sourced by scripts/regen-golden and scripts/golden-check: reads a golden case directory
# (tests/golden/fs-cases/<case>/, see tests/golden/README.md) and starts what its build needs.
#
#   case_load DIR        sets CASE_CONTEXT, CASE_DOCKERFILE, CASE_TARGET, CASE_ERROR, CASE_GIT,
#                        CASE_FARM and the array CASE_BUILD_ARGS (K=V ...) from DIR/case.json
#   git_server_start W   makes the fixture repositories in W and serves them on 127.0.0.1 with
#                        git daemon and a static http server on fresh ports; sets GIT_HTTP and
#                        GIT_DAEMON, and GIT_REPLACE, the golden-flatten flags that turn those
#                        URLs into ${GIT_HTTP} and ${GIT_DAEMON} in listings
#   git_server_stop      stops them (a server per case: BuildKit keeps state per remote URL)

case_load() {
  local dir=$1 fields
  CASE_CONTEXT=$dir
  [[ -d $dir/context ]] && CASE_CONTEXT=$dir/context
  fields=$(python3 - "$dir/case.json" <<'PY'
import json, os, shlex, sys
path = sys.argv[1]
c = json.load(open(path)) if os.path.exists(path) else {}
known = {"why", "build_args", "target", "dockerfile", "error", "farm", "git"}
unknown = sorted(set(c) - known)
if unknown:
    sys.exit(f"{path}: unknown keys {unknown}")
print("CASE_DOCKERFILE=" + shlex.quote(c.get("dockerfile", "Dockerfile")))
print("CASE_TARGET=" + shlex.quote(c.get("target", "")))
print("CASE_ERROR=" + shlex.quote(c.get("error", "")))
print("CASE_GIT=" + ("1" if c.get("git") else ""))
print("CASE_FARM=" + ("1" if c.get("farm") else ""))
print("CASE_BUILD_ARGS=(" + " ".join(shlex.quote(f"{k}={v}") for k, v in c.get("build_args", {}).items()) + ")")
PY
  ) || return 1
  eval "$fields"
  CASE_DOCKERFILE=$dir/$CASE_DOCKERFILE
}

_git_pids=()
GIT_REPLACE=()
git_server_start() {
  local work=$1 repo_root
  repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
  git_server_stop
  rm -rf "$work/git"
  mkdir -p "$work/git"
  "$repo_root/tests/fixtures/make-git-repos" "$work/git" >/dev/null
  local ports
  ports=$(python3 -c 'import socket
s=[socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
  local http_port=${ports% *} git_port=${ports#* }
  git daemon --reuseaddr --export-all --base-path="$work/git" --listen=127.0.0.1 \
    --port="$git_port" "$work/git" >"$work/git-daemon.log" 2>&1 &
  _git_pids+=($!)
  python3 -m http.server --bind 127.0.0.1 --directory "$work/git" "$http_port" \
    >"$work/git-http.log" 2>&1 &
  _git_pids+=($!)
  GIT_HTTP=http://127.0.0.1:$http_port
  GIT_DAEMON=git://127.0.0.1:$git_port
  GIT_REPLACE=(--replace "$GIT_HTTP=\${GIT_HTTP}" --replace "$GIT_DAEMON=\${GIT_DAEMON}")
  for _ in $(seq 50); do
    if curl -fs "$GIT_HTTP/" >/dev/null 2>&1 && (exec 3<>"/dev/tcp/127.0.0.1/$git_port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "git_server_start: the git servers did not answer" >&2
  return 1
}

git_server_stop() {
  local p
  for p in "${_git_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  _git_pids=()
  GIT_HTTP= GIT_DAEMON=
  GIT_REPLACE=()
}
