#!/bin/bash
# bench/fuse.sh: cfs-fuse against the kernel (overlayfs + EROFS) mount of the same image, in
# the same run.
#
#   sudo bench/fuse.sh [BUILD_DIR] [ROUNDS] [COLUMNS]
#
# Needs root (kernel mounts, drop_caches, a throwaway user) and BUILD_DIR/bin/{cfs-fuse,
# mkcomposefs,composefs-info} (default build/bin). The image is the cs9-x86_64-developer
# reference tree (64k entries) plus one 1 GiB file of random data stored as an object; every
# mount uses the same object directory.
#
# COLUMNS (default "user overlay") are compared with the kernel mount:
#   user      cfs-fuse run by an unprivileged throwaway user (no FUSE passthrough: the kernel
#             gives backing files to CAP_SYS_ADMIN only), read by that user
#   overlay   cfs-fuse --overlay run by that user: the metadata-only FUSE under a kernel
#             overlayfs (userxattr) in the user's own user+mount namespace; object data is
#             read by the overlay straight from the object files
#   root      cfs-fuse run by root, with FUSE passthrough where the kernel has it
# The user (cfs-bench-fuse) is created if absent and removed afterwards if it was created;
# /dev/fuse is made 0666 for the run and its previous mode restored on exit.
#
# Measured (median of ROUNDS, default 3, the mounts interleaved in each round):
#   cold seq     1 GiB dd bs=1M after dropping the page cache
#   warm seq     the same, cached
#   rand 4k      10000 4 KiB preads at random offsets (POSIX_FADV_RANDOM), cold, then warm
#   find -ls     over the whole tree, cold and warm
# Every read runs as the throwaway user (in the overlay's namespace for that column), so all
# columns pay the same process start-up. Ratios are FUSE/kernel throughput (or kernel/FUSE
# time): 1.0 = as fast as the kernel.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${1:-$root/build}/bin" && pwd)
rounds=${2:-3}
read -r -a columns <<<"${3:-user overlay}"
[ "$(id -u)" = 0 ] || { echo "bench/fuse.sh: needs root" >&2; exit 1; }
for tool in "$bin/cfs-fuse" "$bin/mkcomposefs" "$bin/composefs-info"; do
  [ -x "$tool" ] || { echo "bench/fuse.sh: $tool missing (build it first)" >&2; exit 1; }
done
for c in "${columns[@]}"; do
  case $c in user | overlay | root) ;; *) echo "bench/fuse.sh: unknown column $c" >&2; exit 2 ;; esac
done

user=cfs-bench-fuse
made_user=""
fuse_mode=$(stat -c %a /dev/fuse)
# On disk, not tmpfs: cold reads must come from the device.
work=$(mktemp -d /var/tmp/cfs-fuse-bench.XXXXXX)
declare -A pids=()
# Root cannot stat a user's FUSE mount (no allow_other): look mounts up in the table.
mounted() { grep -q " $1 " /proc/mounts; }
cleanup() {
  for c in user root; do
    mounted "$work/$c" && umount -l "$work/$c" || true
  done
  for pid in "${pids[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then kill "$pid"; wait "$pid" || true; fi
  done
  mountpoint -q "$work/kernel" && umount "$work/kernel" || true
  mountpoint -q "$work/erofs" && umount "$work/erofs" || true
  chmod "$fuse_mode" /dev/fuse
  [ -z "$made_user" ] || userdel "$user" || true
  rm -rf "$work"
}
trap cleanup EXIT
if ! id "$user" >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$user"
  made_user=1
fi
chmod 666 /dev/fuse
chmod 755 "$work"
mkdir -p "$work/objects" "$work/erofs" "$work/kernel"
for c in "${columns[@]}"; do mkdir -p "$work/$c"; done
chown "$user:" "$work/user" "$work/overlay" 2>/dev/null || true
# Not a function: a background job must be the server itself, so that its pid is the server's.
as_user=(setpriv --reuid="$user" --regid="$user" --clear-groups --)
as_user() { "${as_user[@]}" "$@"; }

echo "preparing: 1 GiB object, cs9-x86_64-developer tree, image ..." >&2
head -c 1G /dev/urandom >"$work/big"
digest=$("$bin/composefs-info" measure-file "$work/big" | awk '{print $NF}')
mkdir -p "$work/objects/${digest:0:2}"
mv "$work/big" "$work/objects/${digest:0:2}/${digest:2}"
chmod -R a+rX "$work/objects"
zcat "$root/tests/data/composefs-c/cs9-x86_64-developer.dump.gz" >"$work/tree.dump"
printf '/bench-1g 1073741824 100644 1 0 0 0 0.0 %s - %s\n' \
  "${digest:0:2}/${digest:2}" "$digest" >>"$work/tree.dump"
"$bin/mkcomposefs" --from-file "$work/tree.dump" "$work/image.cfs"
chmod 644 "$work/image.cfs"

mount -t erofs -o ro "$work/image.cfs" "$work/erofs"
mount -t overlay overlay -o "ro,lowerdir=$work/erofs::$work/objects,metacopy=on,redirect_dir=on" \
  "$work/kernel"
# The wrapper every read goes through: MOUNT -> how to reach it as the user.
declare -A reach=([kernel]=as_user)
verify_s="-"
for c in "${columns[@]}"; do
  case $c in
    user)
      "${as_user[@]}" "$bin/cfs-fuse" "$work/image.cfs" "$work/user" --basedir "$work/objects" -f \
        2>"$work/user.log" &
      pids[user]=$!
      reach[user]=as_user
      ;;
    root)
      "$bin/cfs-fuse" "$work/image.cfs" "$work/root" --basedir "$work/objects" -f \
        -o allow_other 2>"$work/root.log" &
      pids[root]=$!
      reach[root]=as_user
      ;;
    overlay)
      # The cs9 tree names objects this directory does not have: they read as EIO (as
      # through the kernel mount), the 1 GiB object is verified before the mount.
      t0=$(date +%s.%N)
      "${as_user[@]}" "$bin/cfs-fuse" --overlay --allow-missing-objects "$work/image.cfs" \
        "$work/overlay" --basedir "$work/objects" 2>"$work/overlay.log" &
      pids[overlay]=$!
      reach[overlay]=in_overlay
      ;;
  esac
done
# Root of the overlay's user namespace is the user itself.
in_overlay() { nsenter -t "${pids[overlay]}" -U -m -- "$@"; }
ready() {  # ready COLUMN: the mount is up
  case $1 in
    overlay) grep -q 'mounted at' "$work/overlay.log" 2>/dev/null ;;
    *) mounted "$work/$1" ;;
  esac
}
for c in "${columns[@]}"; do
  for _ in $(seq 1200); do ready "$c" && break; kill -0 "${pids[$c]}" || break; sleep 0.05; done
  ready "$c" || { cat "$work/$c.log" >&2; exit 1; }
  if [ "$c" = overlay ]; then
    t1=$(date +%s.%N)
    verify_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f s", b - a}')
  fi
done

drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
# seconds MOUNT CMD...: wall time of CMD run as the user where MOUNT can be seen.
seconds() {
  local t0 t1 m=$1
  shift
  t0=$(now)
  "${reach[$m]}" "$@" >/dev/null
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f\n", b - a}'
}
median() { sort -g | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
seq_read() { seconds "$1" dd if="$work/$1/bench-1g" of=/dev/null bs=1M status=none; }
rand_read() {
  seconds "$1" /usr/bin/python3 -c '
import os, random, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
rng = random.Random(1)
for _ in range(10000):
    os.pread(fd, 4096, rng.randrange(size // 4096) * 4096)
' "$work/$1/bench-1g"
}
# The few directories closed to the user (and, in the overlay's namespace, to its root) are
# skipped alike by every column.
walk() { seconds "$1" sh -c 'find "$1" -ls 2>/dev/null; true' sh "$work/$1"; }

# Same bytes everywhere (this also opens, and so verifies, the object in the FUSE servers).
sum_kernel=$(as_user sha256sum "$work/kernel/bench-1g" | cut -d' ' -f1)
for c in "${columns[@]}"; do
  s=$("${reach[$c]}" sha256sum "$work/$c/bench-1g" | cut -d' ' -f1)
  [ "$s" = "$sum_kernel" ] || { echo "bench/fuse.sh: $c and kernel contents differ" >&2; exit 1; }
done

mounts=(kernel "${columns[@]}")
declare -A samples
for _ in $(seq "$rounds"); do
  for m in "${mounts[@]}"; do
    drop; samples[cold_seq_$m]+="$(seq_read "$m") "
    samples[warm_seq_$m]+="$(seq_read "$m") "
    drop; samples[cold_rand_$m]+="$(rand_read "$m") "
    samples[warm_rand_$m]+="$(rand_read "$m") "
    drop; samples[cold_walk_$m]+="$(walk "$m") "
    samples[warm_walk_$m]+="$(walk "$m") "
  done
done
med() { tr ' ' '\n' <<<"${samples[$1]}" | grep . | median; }

entries=$(as_user sh -c 'find "$1" 2>/dev/null; true' sh "$work/kernel" | wc -l)
printf '\ncfs-fuse vs kernel overlay+EROFS, same image (%s entries + 1 GiB object), median of %s\n' \
  "$entries" "$rounds"
printf 'user = unprivileged cfs-fuse (no passthrough); overlay = cfs-fuse --overlay (rootless);\n'
printf 'root = cfs-fuse as root (passthrough); ratio = FUSE/kernel throughput, kernel/FUSE time\n'
header=$(printf '%-20s %11s' test kernel)
for c in "${columns[@]}"; do header+=$(printf ' %11s %6s' "$c" ratio); done
printf '%s  %s\n' "$header" target
row() {  # row NAME KEY UNIT_AMOUNT UNIT TARGET
  local line k
  k=$(med "$2_kernel")
  line=$(awk -v n="$1" -v k="$k" -v amt="$3" -v u="$4" 'BEGIN {
    printf "%-20s %11s", n, (u == "s" ? sprintf("%.3f s", k) : sprintf("%.0f %s", amt / k, u)) }')
  for c in "${columns[@]}"; do
    line+=$(awk -v k="$k" -v f="$(med "$2_$c")" -v amt="$3" -v u="$4" 'BEGIN {
      printf " %11s %5.2fx", (u == "s" ? sprintf("%.3f s", f) : sprintf("%.0f %s", amt / f, u)),
             k / f }')
  done
  printf '%s  %s\n' "$line" "$5"
}
row "cold seq read 1 GiB" cold_seq 1024 MiB/s "user >= 0.9x, overlay >= 0.95x"
row "warm seq read 1 GiB" warm_seq 1024 MiB/s "user >= 0.9x, overlay >= 0.95x"
row "cold rand 4k reads" cold_rand 10000 IOPS "overlay >= 0.95x"
row "warm rand 4k reads" warm_rand 10000 IOPS "overlay >= 0.95x"
row "cold find -ls" cold_walk 0 s "user >= 0.67x (<= 1.5x time), overlay >= 0.95x"
row "warm find -ls" warm_walk 0 s "overlay >= 0.95x"
for c in "${columns[@]}"; do
  rss_kib=$(awk '/VmHWM/{print $2}' "/proc/${pids[$c]}/status")
  printf '%-20s %s: %s MiB\n' "server peak RSS" "$c" "$((rss_kib / 1024))"
done
[ "$verify_s" = - ] ||
  printf '%-20s %s (start to mounted, incl. the userspace digest of the 1 GiB object)\n' \
    "overlay setup" "$verify_s"
