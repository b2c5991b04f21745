#!/bin/bash
# bench/fuse.sh: cfs-fuse against the kernel (overlayfs + EROFS) mount of the same image, in
# the same run.
#
#   sudo bench/fuse.sh [BUILD_DIR] [ROUNDS]
#
# Needs root (kernel mounts, drop_caches) and BUILD_DIR/bin/{cfs-fuse,mkcomposefs} (default
# build/bin). The image is the cs9-x86_64-developer reference tree (64k entries) plus one
# 1 GiB file of random data stored as an object; both mounts use the same object directory.
# Measured (median of ROUNDS, default 3, kernel and FUSE interleaved):
#   first open   the FUSE server's one-time userspace fs-verity check of the 1 GiB object
#                (the kernel mount does no check here: no fs-verity on this machine)
#   cold seq     1 GiB dd bs=1M after dropping the page cache
#   warm seq     the same, cached
#   rand 4k      10000 4 KiB preads at random offsets (POSIX_FADV_RANDOM), cold, then warm
#   find -ls     over the whole tree, cold and warm
# Ratios are FUSE/kernel throughput (or kernel/FUSE time): 1.0 = as fast as the kernel.
# Run as root, cfs-fuse uses FUSE passthrough for objects where the kernel has it (6.9+); the
# second cfs-fuse column is a server started with --no-passthrough, which is what an
# unprivileged user gets.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${1:-$root/build}/bin" && pwd)
rounds=${2:-3}
[ "$(id -u)" = 0 ] || { echo "bench/fuse.sh: needs root" >&2; exit 1; }
for tool in "$bin/cfs-fuse" "$bin/mkcomposefs" "$bin/composefs-info"; do
  [ -x "$tool" ] || { echo "bench/fuse.sh: $tool missing (build it first)" >&2; exit 1; }
done

# On disk, not tmpfs: cold reads must come from the device.
work=$(mktemp -d /var/tmp/cfs-fuse-bench.XXXXXX)
fuse_pid=""
plain_pid=""
cleanup() {
  mountpoint -q "$work/fuse" && fusermount3 -u "$work/fuse" || true
  mountpoint -q "$work/plain" && fusermount3 -u "$work/plain" || true
  for pid in $fuse_pid $plain_pid; do
    if kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" || true; fi
  done
  mountpoint -q "$work/overlay" && umount "$work/overlay" || true
  mountpoint -q "$work/erofs" && umount "$work/erofs" || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/objects" "$work/erofs" "$work/overlay" "$work/fuse" "$work/plain"

echo "preparing: 1 GiB object, cs9-x86_64-developer tree, image ..." >&2
head -c 1G /dev/urandom >"$work/big"
digest=$("$bin/composefs-info" measure-file "$work/big" | awk '{print $NF}')
mkdir -p "$work/objects/${digest:0:2}"
mv "$work/big" "$work/objects/${digest:0:2}/${digest:2}"
zcat "$root/tests/data/composefs-c/cs9-x86_64-developer.dump.gz" >"$work/tree.dump"
printf '/bench-1g 1073741824 100644 1 0 0 0 0.0 %s - %s\n' \
  "${digest:0:2}/${digest:2}" "$digest" >>"$work/tree.dump"
"$bin/mkcomposefs" --from-file "$work/tree.dump" "$work/image.cfs"

mount -t erofs -o ro "$work/image.cfs" "$work/erofs"
mount -t overlay overlay -o "ro,lowerdir=$work/erofs::$work/objects,metacopy=on,redirect_dir=on" \
  "$work/overlay"
"$bin/cfs-fuse" "$work/image.cfs" "$work/fuse" --basedir "$work/objects" -f \
  2>"$work/fuse.log" &
fuse_pid=$!
"$bin/cfs-fuse" "$work/image.cfs" "$work/plain" --basedir "$work/objects" -f --no-passthrough \
  2>"$work/plain.log" &
plain_pid=$!
for m in fuse plain; do
  for _ in $(seq 200); do mountpoint -q "$work/$m" && break; sleep 0.05; done
  mountpoint -q "$work/$m" || { cat "$work/$m.log" >&2; exit 1; }
done

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
# seconds CMD...: wall time of CMD.
seconds() {
  local t0 t1
  t0=$(now)
  "$@" >/dev/null
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f\n", b - a}'
}
median() { sort -g | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
seq_read() { dd if="$1/bench-1g" of=/dev/null bs=1M status=none; }
rand_read() {
  python3 - "$1/bench-1g" 10000 <<'EOF'
import os, random, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
rng = random.Random(1)
for _ in range(int(sys.argv[2])):
    os.pread(fd, 4096, rng.randrange(size // 4096) * 4096)
EOF
}
walk() { find "$1" -ls; }

# The one-time verification, measured apart from the reads it precedes.
drop
first_open=$(seconds head -c 1 "$work/fuse/bench-1g")
head -c 1 "$work/plain/bench-1g" >/dev/null
for m in fuse plain; do
  [ "$(cmp "$work/$m/bench-1g" "$work/overlay/bench-1g" && echo same)" = same ] ||
    { echo "bench/fuse.sh: FUSE ($m) and kernel contents differ" >&2; exit 1; }
done

declare -A samples
for _ in $(seq "$rounds"); do
  for m in overlay fuse plain; do
    drop; samples[cold_seq_$m]+="$(seconds seq_read "$work/$m") "
    samples[warm_seq_$m]+="$(seconds seq_read "$work/$m") "
    drop; samples[cold_rand_$m]+="$(seconds rand_read "$work/$m") "
    samples[warm_rand_$m]+="$(seconds rand_read "$work/$m") "
    drop; samples[cold_walk_$m]+="$(seconds walk "$work/$m") "
    samples[warm_walk_$m]+="$(seconds walk "$work/$m") "
  done
done
med() { tr ' ' '\n' <<<"${samples[$1]}" | grep . | median; }

entries=$(find "$work/fuse" | wc -l)
rss_kib=$(awk '/VmHWM/{print $2}' "/proc/$fuse_pid/status")
printf '\ncfs-fuse vs kernel overlay+EROFS, same image (%s entries + 1 GiB object), median of %s\n' \
  "$entries" "$rounds"
printf '%-22s %12s %12s %7s %14s %7s  %s\n' test kernel cfs-fuse ratio no-passthrough ratio \
  target
row() {  # name kernel_s fuse_s plain_s unit_amount unit target
  awk -v n="$1" -v k="$2" -v f="$3" -v p="$4" -v amt="$5" -v u="$6" -v tgt="$7" '
    function show(t) { return u == "s" ? sprintf("%.3f s", t) : sprintf("%.0f %s", amt / t, u) }
    BEGIN { printf "%-22s %12s %12s %6.2fx %14s %6.2fx  %s\n", n, show(k), show(f), k / f,
                   show(p), k / p, tgt }'
}
r() { row "$1" "$(med "$2_overlay")" "$(med "$2_fuse")" "$(med "$2_plain")" "${@:3}"; }
r "cold seq read 1 GiB" cold_seq 1024 MiB/s ">= 0.8x"
r "warm seq read 1 GiB" warm_seq 1024 MiB/s ">= 0.9x"
r "cold rand 4k reads" cold_rand 10000 IOPS ""
r "warm rand 4k reads" warm_rand 10000 IOPS ""
r "cold find -ls" cold_walk 0 s ">= 0.5x (<= 2x time)"
r "warm find -ls" warm_walk 0 s ">= 0.5x (<= 2x time)"
printf '%-22s %12s %12s\n' "first open (verify)" "-" "$(printf '%.3f s' "$first_open")"
printf '%-22s %12s %12s\n' "cfs-fuse peak RSS" "-" "$((rss_kib / 1024)) MiB"
