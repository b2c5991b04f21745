#!/bin/sh
# bench/mount.sh: mount latency of cfs-mount (image open to mounted, process start included)
# against the same composefs mount made by hand with `mount -t erofs` + `mount -t overlay`,
# interleaved in one run, in a private mount namespace. Needs root.
#
#   bench/mount.sh [BUILD_DIR] [ROUNDS]        (BUILD_DIR default build; ROUNDS default 40)
#
# The image is built from $SRC (default /usr/include) with BUILD_DIR/bin/mkcomposefs
# (--digest-store; MKCOMPOSEFS overrides the binary). Prints the
# median and p90 in milliseconds for each method and the cfs/manual ratio of the medians; also
# cfs-mount with --digest (userspace fs-verity of the image on this host) and with a loop
# device (CFS_MOUNT_FORCE_LOOP=1, the path kernels before 6.12 take).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
rounds=${2:-40}
src=${SRC:-/usr/include}
bin=$(cd "$build/bin" && pwd)
[ "$(id -u)" = 0 ] || { echo "bench/mount.sh: needs root" >&2; exit 1; }
[ -x "$bin/cfs-mount" ] || { echo "bench/mount.sh: no $bin/cfs-mount" >&2; exit 1; }
mkcfs=${MKCOMPOSEFS:-$bin/mkcomposefs}
[ -x "$mkcfs" ] || { echo "bench/mount.sh: no mkcomposefs ($mkcfs); set MKCOMPOSEFS" >&2; exit 1; }

if [ -z "${CFS_BENCH_INNER:-}" ]; then
  exec env CFS_BENCH_INNER=1 unshare -m --propagation private "$0" "$build" "$rounds"
fi

work=$(mktemp -d)
cleanup() {
  umount "$work/mnt" 2>/dev/null || true
  umount "$work/erofs" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mnt" "$work/erofs" "$work/objects"
"$mkcfs" --digest-store="$work/objects" "$src" "$work/image.cfs"
digest=$("$mkcfs" --print-digest-only "$src")
echo "image: $(stat -c %s "$work/image.cfs") bytes from $src, $(find "$work/objects" -type f | wc -l) objects"

now() { date +%s%N; }
# Each function mounts, records the elapsed nanoseconds into its file, and unmounts.
cfs() {
  t0=$(now)
  env $1 "$bin/cfs-mount" -v --basedir "$work/objects" $2 "$work/image.cfs" "$work/mnt" >"$work/out"
  t1=$(now)
  echo $((t1 - t0)) >>"$work/$3"
  # cfs-mount's own measurement: image open to mounted, without process start-up.
  sed -n 's/.* in \([0-9.]*\) ms:.*/\1/p' "$work/out" | awk '{printf "%d\n", $1*1e6}' >>"$work/$3-inproc"
  umount "$work/mnt"
}
manual() {
  t0=$(now)
  mount -t erofs -o ro "$work/image.cfs" "$work/erofs"
  mount -t overlay composefs -o "ro,lowerdir=$work/erofs::$work/objects,metacopy=on,redirect_dir=on" "$work/mnt"
  t1=$(now)
  echo $((t1 - t0)) >>"$work/manual"
  umount "$work/mnt"
  umount "$work/erofs"
}

# Warm up caches and check that both give the same tree.
"$bin/cfs-mount" --basedir "$work/objects" "$work/image.cfs" "$work/mnt"
ls -lR "$work/mnt" >"$work/tree-cfs"
umount "$work/mnt"
mount -t erofs -o ro "$work/image.cfs" "$work/erofs"
mount -t overlay composefs -o "ro,lowerdir=$work/erofs::$work/objects,metacopy=on,redirect_dir=on" "$work/mnt"
ls -lR "$work/mnt" >"$work/tree-manual"
umount "$work/mnt"
umount "$work/erofs"
cmp -s "$work/tree-cfs" "$work/tree-manual" || { echo "bench/mount.sh: the two mounts differ" >&2; exit 1; }
i=0
while [ $i -lt "$rounds" ]; do
  cfs "" "" cfs
  manual
  cfs "" "--digest $digest" cfs-digest
  cfs "CFS_MOUNT_FORCE_LOOP=1" "" cfs-loop
  i=$((i + 1))
done

stats() {  # prints "median p90" in ms
  sort -n "$work/$1" | awk '{v[NR]=$1} END {m=v[int((NR+1)/2)]; p=v[int(NR*0.9+0.5)];
    printf "%.2f %.2f", m/1e6, p/1e6}'
}
printf '%-34s %10s %10s\n' method median_ms p90_ms
for f in manual cfs cfs-inproc cfs-digest cfs-loop cfs-loop-inproc; do
  case $f in
    manual) label="mount -t erofs + mount -t overlay" ;;
    cfs) label="cfs-mount" ;;
    cfs-inproc) label="  of which open->mounted in-process" ;;
    cfs-digest) label="cfs-mount --digest (userspace)" ;;
    cfs-loop) label="cfs-mount, loop device" ;;
    cfs-loop-inproc) label="  of which open->mounted in-process" ;;
  esac
  set -- $(stats $f)
  printf '%-34s %10s %10s\n' "$label" "$1" "$2"
done
m=$(stats manual | cut -d' ' -f1)
c=$(stats cfs | cut -d' ' -f1)
echo "ratio cfs-mount / manual (medians): $(awk "BEGIN{printf \"%.2f\", $c/$m}")"
