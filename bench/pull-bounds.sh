#!/bin/bash
# Peak RSS and time of `cfsctl oci pull` on layers that stress the pull's resource bounds
# (issue 11 item 2). Targets: 300,000 one-byte files under 200 MiB; the 50,000-deep layer
# refused in under 10 s; an xattr bomb handled or refused in under 2 s.
#
#   bench/pull-bounds.sh [--build DIR] [--workdir DIR] [--files N]
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"
build=$here/build
workdir=${TMPDIR:-/var/tmp}
files=300000
parse_options bench/pull-bounds.sh "build workdir files" "$@"
require_cfsctl bench/pull-bounds.sh "$build"
dir=$(mktemp -d "$workdir/cfs-pull-bounds.XXXXXX")
trap 'rm -rf "$dir"' EXIT

printf '%-34s %8s %10s %s\n' "layer" "seconds" "peak MiB" "result"
run() {
  local kind=$1 n=$2
  python3 "$here/bench/make-hostile-layer.py" "$dir/$kind" "$kind" "$n" 2>/dev/null
  rm -rf "$dir/repo"
  "$cfsctl" --repo "$dir/repo" init --insecure > /dev/null
  local result=ok
  /usr/bin/time -v -o "$dir/time" "$cfsctl" --repo "$dir/repo" oci pull -q "oci:$dir/$kind:latest" t \
    > /dev/null 2> "$dir/err" || result="refused: $(tail -c 120 "$dir/err" | tr '\n' ' ')"
  local rss secs
  rss=$(awk '/Maximum resident set size/ {print $NF}' "$dir/time")
  secs=$(awk '/Elapsed \(wall clock\)/ {print $NF}' "$dir/time")
  printf '%-34s %8s %10d %s\n' "$kind ($n)" "$secs" "$((rss / 1024))" "$result"
}
run many-files "$files"
run deep 50000
run xattr-bomb 20000
run cap-bomb 2000
