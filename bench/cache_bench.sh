#!/bin/sh
# Runs bench/cache_bench against a `stagefarm cache` server in its own process and prints each
# figure beside this machine's single-core SHA-256 rate (openssl speed) and raw disk write rate
# (dd with fdatasync) in $TMPDIR, as ratios, with the server's peak memory (VmHWM).
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
hwm_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$server/status")

echo "== against this machine"
python3 - "$work/bench.json" "$sha_bps" "$dd_bps" "$hwm_kib" <<'PY'
import json, sys
bench = json.load(open(sys.argv[1]))["benchmarks"]
sha, dd, hwm_kib = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
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
mib = hwm_kib / 1024
print(f"{'server peak RSS (VmHWM)':50s} {mib:8.1f} MiB   (target < 300 MiB){'' if mib < 300 else '  OVER'}")
PY
