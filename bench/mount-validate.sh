#!/bin/sh
# bench/mount-validate.sh: what the strict reader in front of the kernel costs cfs-mount.
# Every cfs-mount validates the whole image and looks up every object it names before the
# kernel sees anything; `cfs-mount -v` reports both parts. For the cs9-x86_64-developer
# reference tree (64k entries) and a generated 1M-entry image, in one run: the median
# open->mounted time of cfs-mount, the reader's validation and the object lookups inside it,
# the same with --allow-missing-objects (no lookups), and the validation's share. Needs root.
#
#   bench/mount-validate.sh [BUILD_DIR] [ROUNDS]     (defaults: build, 15)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
rounds=${2:-15}
bin=$(cd "$build/bin" && pwd)
[ "$(id -u)" = 0 ] || { echo "bench/mount-validate.sh: needs root" >&2; exit 1; }
if [ -z "${CFS_BENCH_INNER:-}" ]; then
  exec env CFS_BENCH_INNER=1 unshare -m --propagation private "$0" "$build" "$rounds"
fi
work=$(mktemp -d)
trap 'umount "$work/mnt" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/mnt"

# image NAME DUMPFILE: the image and an object directory holding (empty) files for every
# object it names, so the lookups find what a real repository has.
image() {
  "$bin/mkcomposefs" --from-file "$2" "$work/$1.cfs"
  mkdir -p "$work/$1-objects"
  "$bin/composefs-info" objects "$work/$1.cfs" | (cd "$work/$1-objects" &&
    sed 's|/.*||' | sort -u | xargs mkdir -p &&
    "$bin/composefs-info" objects "$work/$1.cfs" | xargs touch)
}

median() { sort -n | awk '{v[NR]=$1} END {printf "%.2f", v[int((NR+1)/2)]}'; }

# run NAME EXTRA: rounds of cfs-mount -v; prints "total reader lookups" medians in ms.
run() {
  : >"$work/t" && : >"$work/r" && : >"$work/o"
  i=0
  while [ $i -lt "$rounds" ]; do
    "$bin/cfs-mount" -v --basedir "$work/$1-objects" $2 "$work/$1.cfs" "$work/mnt" >"$work/out"
    umount "$work/mnt"
    sed -n 's/.* in \([0-9.]*\) ms:.*/\1/p' "$work/out" >>"$work/t"
    sed -n 's/.*validation: reader \([0-9.]*\) ms, object lookups \([0-9.]*\) ms/\1 \2/p' "$work/out" >"$work/v"
    cut -d' ' -f1 "$work/v" >>"$work/r"
    cut -d' ' -f2 "$work/v" >>"$work/o"
    i=$((i + 1))
  done
  echo "$(median <"$work/t") $(median <"$work/r") $(median <"$work/o")"
}

zcat "$root/tests/data/composefs-c/cs9-x86_64-developer.dump.gz" >"$work/cs9.dump"
python3 "$root/bench/gen-dumpfile.py" 1000000 >"$work/gen1m.dump"
printf '%-8s %8s %8s | %10s %10s %10s | %12s %10s\n' image entries objects \
  mount_ms reader_ms lookups_ms "no-lookup_ms" "share"
for name in cs9 gen1m; do
  image "$name" "$work/$name.dump"
  entries=$(wc -l <"$work/$name.dump")
  objects=$(find "$work/$name-objects" -type f | wc -l)
  "$bin/cfs-mount" --basedir "$work/$name-objects" "$work/$name.cfs" "$work/mnt" && umount "$work/mnt"  # warm
  set -- $(run "$name" "")
  total=$1 reader=$2 lookups=$3
  set -- $(run "$name" --allow-missing-objects)
  printf '%-8s %8s %8s | %10s %10s %10s | %12s %9s%%\n' "$name" "$entries" "$objects" \
    "$total" "$reader" "$lookups" "$1" "$(awk "BEGIN{printf \"%.0f\", 100*($reader+$lookups)/$total}")"
done
echo "mount_ms: cfs-mount open->mounted (median of $rounds); reader_ms/lookups_ms: the validation"
echo "inside it; no-lookup_ms: with --allow-missing-objects; share: validation / mount_ms."
echo "cfs-mount size: $(stat -c %s "$bin/cfs-mount") bytes, stripped $(strip -o "$work/s" "$bin/cfs-mount" && stat -c %s "$work/s")"
