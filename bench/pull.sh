#!/bin/bash
# Pull throughput: `cfsctl oci pull` of a multi-layer OCI layout against, in the same run,
#   (a) the floor: decompressing every layer and `openssl dgst -sha256` of the compressed
#       and the uncompressed bytes (what any verifying pull must at least do), with as many
#       layers in parallel as cfsctl uses;
#   (b) `skopeo copy oci:… dir:…` (verified blob copy, no decompression, no splitting).
#
#   bench/pull.sh [--size-mib 1024] [--layers 8] [--compress gzip|zstd] [--build DIR]
#                 [--workdir DIR]
set -euo pipefail

size_mib=1024
layers=8
compress=gzip
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"
build=$here/build
workdir=${TMPDIR:-/var/tmp}
parse_options bench/pull.sh "size-mib layers compress build workdir" "$@"
require_cfsctl bench/pull.sh "$build"
threads=$(nproc)

dir=$(mktemp -d "$workdir/cfs-pull-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
echo "generating a $size_mib MiB, $layers-layer $compress layout in $dir ..." >&2
"$here/tests/oci/make-sample-layout.sh" "$dir/layout" --layers "$layers" --size-mib "$size_mib" \
  --compress "$compress" > /dev/null
blob_bytes=$(du -sb "$dir/layout/blobs" | cut -f1)
sync
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true

now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc; }

# (a) decompress + sha256 of compressed and uncompressed bytes, layers in parallel.
case "$compress" in gzip) dec="gzip -dc" ;; zstd) dec="zstd -dcq" ;; esac
t0=$(now)
find "$dir/layout/blobs/sha256" -type f -size +10k -print0 |
  xargs -0 -P "$threads" -I{} sh -c "openssl dgst -sha256 {} >/dev/null; $dec {} | openssl dgst -sha256 >/dev/null"
t_floor=$(elapsed "$t0" "$(now)")

# (b) skopeo copy to dir: (verifies digests, copies blobs).
t0=$(now)
skopeo copy -q "oci:$dir/layout:latest" "dir:$dir/skopeo" > /dev/null
t_skopeo=$(elapsed "$t0" "$(now)")
rm -rf "$dir/skopeo"

# cfs: pull into a fresh repository (insecure: tmp filesystems lack fs-verity), then the
# same image again (every layer already present).
"$cfsctl" --repo "$dir/repo" init --insecure > /dev/null
sync
t0=$(now)
"$cfsctl" --repo "$dir/repo" oci pull -q "oci:$dir/layout:latest" bench > /dev/null
t_cfs=$(elapsed "$t0" "$(now)")
t0=$(now)
"$cfsctl" --repo "$dir/repo" oci pull -q "oci:$dir/layout:latest" bench2 > /dev/null
t_again=$(elapsed "$t0" "$(now)")
t0=$(now)
"$cfsctl" --repo "$dir/repo" oci fsck bench > /dev/null
t_fsck=$(elapsed "$t0" "$(now)")

mib=$(echo "scale=1; $blob_bytes / 1048576" | bc)
rate() { echo "scale=1; $blob_bytes / 1048576 / $1" | bc; }
printf '\nOCI pull, %s MiB of %s blobs in %s layers, %s CPUs\n' "$mib" "$compress" "$layers" "$threads"
printf '%-48s %9s %10s %8s\n' "what" "seconds" "MiB/s" "ratio"
printf '%-48s %9.2f %10s %8s\n' "decompress + sha256 (floor, parallel)" "$t_floor" "$(rate "$t_floor")" "1.00"
printf '%-48s %9.2f %10s %8.2f\n' "skopeo copy oci: -> dir:" "$t_skopeo" "$(rate "$t_skopeo")" "$(echo "$t_skopeo / $t_floor" | bc -l)"
printf '%-48s %9.2f %10s %8.2f\n' "cfsctl oci pull (split, objects, EROFS, streams)" "$t_cfs" "$(rate "$t_cfs")" "$(echo "$t_cfs / $t_floor" | bc -l)"
printf '%-48s %9.2f %10s %8s\n' "cfsctl oci pull, all layers present" "$t_again" "-" "-"
printf '%-48s %9.2f %10s %8s\n' "cfsctl oci fsck (re-hash manifest/config/layers)" "$t_fsck" "$(rate "$t_fsck")" "-"
