#!/bin/bash
# Pull of real payloads: the data.tar of the Debian packages in tests/conformance/debs.txt as
# the layers of one OCI image (uncompressed), `cfsctl oci pull` against GNU tar extracting the
# same tars to tmpfs, in the same run: wall time, ratio and peak RSS.
#
#   bench/pull-debs.sh [--count N] [--build DIR] [--workdir DIR] [--cache DIR]
#
# GNU tar runs as many extractions in parallel as cfsctl imports layers (nproc), each tar into
# its own directory on a tmpfs (no disk); cfsctl writes its repository to --workdir (a real
# filesystem: objects, splitstreams, the EROFS image). Root is not needed.
set -euo pipefail

count=100
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"
build=$here/build
workdir=${TMPDIR:-/var/tmp}
cache=$here/tests/conformance/.cache
parse_options bench/pull-debs.sh "count build workdir cache" "$@"
require_cfsctl bench/pull-debs.sh "$build"
threads=$(nproc)

mapfile -t names < <(grep -v '^#' "$here/tests/conformance/debs.txt" | grep . | head -n "$count")
"$here/tests/conformance/fetch-debs.sh" "$cache" "${names[@]}"

dir=$(mktemp -d "$workdir/cfs-pull-debs.XXXXXX")
tmpfs=$dir/tmpfs
mkdir -p "$tmpfs" "$dir/tars"
cleanup() { umount "$tmpfs" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
for n in "${names[@]}"; do
  deb=$(ls "$cache/${n}"_*.deb 2>/dev/null | head -n1) || true
  [ -n "$deb" ] || continue
  dpkg-deb --fsys-tarfile "$deb" > "$dir/tars/$n.tar"
done
ntars=$(ls "$dir/tars" | wc -l)
tar_bytes=$(cat "$dir/tars"/*.tar | wc -c)

# The layout: one image, one layer per package, uncompressed.
CFS_HERE=$here python3 -c '
import os, sys
sys.path.insert(0, os.path.join(os.environ["CFS_HERE"], "tests", "conformance"))
import corpus
corpus.make_layout(sys.argv[1], sys.argv[2:])
' "$dir/layout" "$dir"/tars/*.tar

# peak RSS (KiB) and wall seconds of a command, via GNU time.
measure() {  # measure OUTFILE CMD...
  local out=$1; shift
  /usr/bin/time -f '%e %M' -o "$out" "$@" > /dev/null
}

sync
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
cat "$dir/tars"/*.tar > /dev/null  # both sides read the tars from the page cache

# GNU tar: every tar into its own directory on tmpfs, $threads at a time.
if mount -t tmpfs -o size=8g tmpfs "$tmpfs" 2>/dev/null; then where=tmpfs; else where=$dir; fi
measure "$dir/t-tar" sh -c "ls '$dir/tars' | xargs -P $threads -I{} sh -c \
  'mkdir -p \"$tmpfs/{}\" && tar -xpf \"$dir/tars/{}\" -C \"$tmpfs/{}\"'"
read -r t_tar rss_tar < "$dir/t-tar"
umount "$tmpfs" 2>/dev/null || rm -rf "${tmpfs:?}"/*

"$cfsctl" --repo "$dir/repo" init --insecure > /dev/null
sync
measure "$dir/t-cfs" "$cfsctl" --repo "$dir/repo" oci pull -q "oci:$dir/layout:latest" debs
read -r t_cfs rss_cfs < "$dir/t-cfs"
measure "$dir/t-again" "$cfsctl" --repo "$dir/repo" oci pull -q "oci:$dir/layout:latest" debs2
read -r t_again rss_again < "$dir/t-again"

mib=$(echo "scale=1; $tar_bytes / 1048576" | bc)
printf '\nDebian payloads: %s packages, %s MiB of uncompressed data.tar, %s CPUs\n' \
  "$ntars" "$mib" "$threads"
printf '%-52s %8s %8s %12s\n' "what" "seconds" "ratio" "peak RSS"
printf '%-52s %8.2f %8s %9s MiB\n' "GNU tar -xpf to $where (parallel, $threads)" "$t_tar" "1.00" \
  "$((rss_tar / 1024))"
printf '%-52s %8.2f %8.2f %9s MiB\n' "cfsctl oci pull (one layer per package)" "$t_cfs" \
  "$(echo "$t_cfs / $t_tar" | bc -l)" "$((rss_cfs / 1024))"
printf '%-52s %8.2f %8s %9s MiB\n' "cfsctl oci pull, all layers present" "$t_again" "-" \
  "$((rss_again / 1024))"
