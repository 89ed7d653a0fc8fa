#!/bin/sh
# The test stage's check: the binary runs and computes what it should.
set -e
out=$("$1" --fib)
[ "$out" = 6765 ] || { echo "fib(20) = $out, want 6765" >&2; exit 1; }
"$1" | grep -q '^hello from a static C binary'
echo "tests passed"
