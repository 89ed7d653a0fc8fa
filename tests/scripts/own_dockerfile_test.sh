#!/usr/bin/env bash
# stagefarm's own Dockerfile stays buildable: it parses and resolves (`stagefarm debug dockerfile`),
# every directory it copies exists, and its builder stage installs every library package that
# scripts/install-deps installs for the build. The full build (apt in the builder, a compile of
# stagefarm; ~10 minutes on 2 cores) is scripts/build-own-image, run by hand.
set -euo pipefail
bin=$1
src=$2
cd "$src"
"$bin" debug dockerfile Dockerfile >/dev/null
fail=0
for path in $(awk '/^COPY / && !/--from/ {print $2}' Dockerfile); do
  [[ -e $path ]] || { echo "Dockerfile copies $path, which does not exist" >&2; fail=1; }
done
libs=$(sed -n '/^packages=(/,/^)/p' scripts/install-deps | grep -o '\blib[a-z0-9.+-]*-dev\b' \
  | grep -v -e '^libgtest' -e '^libgmock' -e '^libbenchmark' -e '^libclang')
[[ -n $libs ]] || { echo "no -dev packages found in scripts/install-deps" >&2; exit 1; }
for p in $libs cppzmq-dev capnproto; do
  grep -qw -- "$p" Dockerfile || { echo "Dockerfile's builder does not install $p" >&2; fail=1; }
done
exit $fail
