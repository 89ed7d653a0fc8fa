#!/bin/sh
# Runs bench/cache_bench and prints, beside it, this machine's single-core SHA-256 rate
# (openssl speed) and raw disk write rate (dd with fdatasync) in $TMPDIR, the figures the cache
# server's targets are ratios of. Usage: bench/cache_bench.sh BUILD_DIR [benchmark flags]
set -eu
build=${1:?usage: cache_bench.sh BUILD_DIR [flags]}
shift
tmp=${TMPDIR:-/tmp}
echo "== openssl speed -bytes 1048576 -seconds 3 sha256 (one core)"
openssl speed -bytes 1048576 -seconds 3 sha256 2>/dev/null | tail -1
echo "== raw disk write, 1 GiB, fdatasync, in $tmp"
dd if=/dev/zero of="$tmp/sf-dd-test" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1
rm -f "$tmp/sf-dd-test"
echo "== cache_bench"
exec "$build/bench/cache_bench" "$@"
