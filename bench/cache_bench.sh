#!/bin/sh
# Runs bench/cache_bench against a `stagefarm cache` server in its own process and prints each
# figure beside this machine's single-core SHA-256 rate (openssl speed) and raw disk write rate
# (dd with fdatasync) in $TMPDIR, as ratios, with the server's peak memory (VmHWM) and the server's
# CPU time per GiB put (measured in a second, short run of the 1 GiB puts).
# Targets (issue 4): ingest >= 70% of SHA-256, FindMissing(10k) < 20 ms, 50,000 action-cache gets
# per second, server RSS < 300 MiB. BM_LocalIngest is the store's write path in the benchmark's own
# process, without the network: the durable write rate alone (hash:0) and with the hash (hash:1).
# Usage: bench/cache_bench.sh BUILD_DIR [benchmark flags, e.g. --benchmark_filter=Put]
set -eu
build=${1:?usage: cache_bench.sh BUILD_DIR [flags]}
shift
tmp=${TMPDIR:-/tmp}
work=$(mktemp -d "$tmp/sf-cache-bench.XXXXXX")
server=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "== openssl speed -bytes 1048576 -seconds 3 sha256 (one core)"
sha=$(openssl speed -bytes 1048576 -seconds 3 sha256 2>/dev/null | tail -1)
echo "$sha"
# "sha256  1473356.28k" is in 1000s of bytes per second.
sha_bps=$(echo "$sha" | awk '{v=$NF; sub(/k$/, "", v); printf "%.0f", v * 1000}')
echo "== raw disk write, 1 GiB, fdatasync, in $tmp"
dd_out=$(dd if=/dev/zero of="$work/dd-test" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1)
rm -f "$work/dd-test"
echo "$dd_out"
# "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 5.5 s, 194 MB/s"
dd_bps=$(echo "$dd_out" | awk '{printf "%.0f", $1 / $(NF-3)}')

echo "== stagefarm cache (its own process)"
"$build/cli/stagefarm" cache --listen tcp://127.0.0.1:0 --data "$work/data" 2>"$work/server.log" &
server=$!
endpoint=
for _ in $(seq 1 100); do
  endpoint=$(sed -n 's/.*cache server listening on \(tcp:\/\/[0-9.:]*\).*/\1/p' "$work/server.log")
  [ -n "$endpoint" ] && break
  sleep 0.1
done
[ -n "$endpoint" ] || { cat "$work/server.log"; echo "cache server did not start" >&2; exit 1; }
echo "server pid $server on $endpoint"

echo "== cache_bench"
STAGEFARM_CACHE_BENCH_ENDPOINT=$endpoint "$build/bench/cache_bench" \
  --benchmark_out="$work/bench.json" --benchmark_out_format=json "$@"
# The server's own CPU time for the 1 GiB puts alone (user + system, all its threads), in a second,
# short run: what a put costs the server's cores, whoever else shares the machine.
server_ticks() { sed 's/^.*) //' "/proc/$server/stat" | awk '{print $12 + $13}'; }
if grep -q '"name": "BM_Put/1073741824' "$work/bench.json"; then
  echo "== server CPU time of the 1 GiB puts"
  before=$(server_ticks)
  STAGEFARM_CACHE_BENCH_ENDPOINT=$endpoint "$build/bench/cache_bench" \
    --benchmark_filter='^BM_Put/1073741824/' \
    --benchmark_out="$work/put-cpu.json" --benchmark_out_format=json
  after=$(server_ticks)
  server_cpu_s=$(awk -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" 'BEGIN {print t / hz}')
else
  server_cpu_s=
fi
hwm_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$server/status")

echo "== against this machine"
python3 - "$work/bench.json" "$sha_bps" "$dd_bps" "$hwm_kib" "$server_cpu_s" "$work/put-cpu.json" \
  "$(nproc)" <<'PY'
import json, sys
bench = json.load(open(sys.argv[1]))["benchmarks"]
sha, dd, hwm_kib = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
server_cpu_s, put_cpu_json, cores = sys.argv[5], sys.argv[6], int(sys.argv[7])
mb = 1e6
print(f"single-core SHA-256: {sha / mb:8.0f} MB/s    raw disk write (fdatasync): {dd / mb:6.0f} MB/s")
for b in bench:
    name = b["name"]
    if "bytes_per_second" in b:
        bps = b["bytes_per_second"]
        print(f"{name:50s} {bps / mb:8.1f} MB/s  = {bps / sha:5.1%} of SHA-256, {bps / dd:5.1%} of disk")
    elif "FindMissing" in name:
        ms = b["real_time"] if b["time_unit"] == "ms" else b["real_time"] / 1e6
        print(f"{name:50s} {ms:8.1f} ms    (target < 20 ms)")
    elif "items_per_second" in b:
        print(f"{name:50s} {b['items_per_second']:8.0f} /s    (target 50,000/s)")
# The network's share: a Put of 1 GiB against the same write path without it (BM_LocalIngest).
by_name = {b["name"]: b.get("bytes_per_second") for b in bench}
put = next((v for k, v in by_name.items() if k.startswith("BM_Put/1073741824")), None)
local = next((v for k, v in by_name.items() if k.startswith("BM_LocalIngest/hash:1")), None)
if put and local:
    print(f"{'Put 1 GiB over loopback against BM_LocalIngest/hash:1':50s} {put / local:8.1%}")
# What bounds the Put here: it can go no faster than the hash (one core) nor than the durable write
# path alone (BM_LocalIngest/hash:0), which on a virtual disk varies from run to run. Put against
# the lower of the two says how much of what this machine allows the server gets; the target
# itself is against SHA-256 and cannot be met in a run whose write path alone is below it.
store = next((v for k, v in by_name.items() if k.startswith("BM_LocalIngest/hash:0")), None)
if put and store:
    bound, what = (sha, "SHA-256") if sha <= store else (store, "write path")
    label = f"Put 1 GiB against its bound ({what})"
    print(f"{label:50s} {put / bound:8.1%}")
    verdict = "met" if put >= 0.7 * sha else "NOT met"
    why = "" if put >= 0.7 * sha or store >= 0.7 * sha else \
        f" (the write path alone reaches only {store / sha:.1%} of SHA-256 in this run)"
    print(f"{'ingest target, 70% of SHA-256':50s} {verdict}{why}")
# The CPU bound: the server's CPU seconds per GiB put, spread over all of this machine's cores
# with nothing else running (the client of a farm is on another machine), is the shortest a put
# can take. Below 70% of SHA-256, the target is out of reach of a server with this many cores.
if server_cpu_s:
    runs = json.load(open(put_cpu_json))["benchmarks"]
    gib = sum(r["iterations"] for r in runs if r.get("run_type") != "aggregate")
    per_gib = float(server_cpu_s) / gib
    ceiling = 2**30 / (per_gib / cores)
    print(f"{'server CPU per GiB put':50s} {per_gib:8.2f} s     = at most {ceiling / mb:.0f} MB/s "
          f"on {cores} cores, {ceiling / sha:.1%} of SHA-256")
mib = hwm_kib / 1024
print(f"{'server peak RSS (VmHWM)':50s} {mib:8.1f} MiB   (target < 300 MiB){'' if mib < 300 else '  OVER'}")
PY
