#!/bin/bash
# bench/hostile.sh: the costs hostile or unusual images used to blow up (issue 11 items 5, 8,
# 16), measured with the built tools.
#
#   sudo bench/hostile.sh [BUILD_DIR]
#
# Needs BUILD_DIR/bin/{mkcomposefs,composefs-info,cfsctl,cfs-fuse} (default build/bin), GNU
# time, python3 and (for the FUSE case) root or /dev/fuse access. Prints wall time and peak
# RSS:
#   info-dump xattrs   composefs-info dump of one inode with 1,200 xattrs and 200 names
#                      (was quadratic: a linear search per xattr, the inode decoded per name)
#   info-dump shared   composefs-info dump of 4000 inodes sharing one 30 KB xattr value: must
#                      stop at the output budget (32 x image + 64 MiB) with an error
#   sparse 64 GiB      cfsctl dump and composefs-info dump of a 20 KB image truncated to 64 GiB
#                      (was 8.6 GB of RSS: bookkeeping sized by the apparent image size)
#   fuse getxattr      1000 getxattr calls on a 500,000-entry directory carrying an overlay
#                      marker xattr (was ~21 ms of server CPU each: a directory scan per call)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${1:-$root/build}/bin" && pwd)
work=$(mktemp -d /var/tmp/cfs-hostile-bench.XXXXXX)
cleanup() {
  mountpoint -q "$work/mnt" && fusermount3 -u "$work/mnt" || true
  rm -rf "$work"
}
trap cleanup EXIT

timed() {  # LABEL CMD...: prints LABEL, seconds, peak RSS
  local label=$1
  shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || true
  read -r secs kib < <(tail -n 1 "$work/time")  # after "Command exited with ..." if any
  printf '%-22s %8s s %10s KiB  %s\n' "$label" "$secs" "$kib" "$(head -c 120 "$work/err")"
}

python3 - "$work" <<'PY'
import sys
work = sys.argv[1]
with open(f"{work}/xattrs.dump", "w") as f:
    f.write("/ 0 40755 2 0 0 0 0.0 - - -\n")
    xattrs = " ".join(f"user.x{i}=v{i}" for i in range(1200))
    f.write(f"/f 3 100644 200 0 0 0 0.0 - abc - {xattrs}\n")
    for i in range(199):
        f.write(f"/g{1000 + i} 0 @100644 0 0 0 0 0.0 /f - -\n")
with open(f"{work}/bigdir.dump", "w") as f:
    f.write("/ 0 40755 3 0 0 0 0.0 - - -\n")
    f.write("/big 0 40755 2 0 0 0 0.0 - - - trusted.overlay.whiteouts= user.x=1\n")
    for i in range(500000):
        f.write(f"/big/f{1000000 + i} 0 100644 1 0 0 0 0.0 - - -\n")
with open(f"{work}/shared.dump", "w") as f:
    f.write("/ 0 40755 2 0 0 0 0.0 - - -\n")
    value = "a" * 30000
    for i in range(4000):
        f.write(f"/f{10000 + i} 0 100644 1 0 0 0 0.0 - - - user.big={value}\n")
with open(f"{work}/small.dump", "w") as f:
    f.write("/ 0 40755 3 0 0 0 0.0 - - -\n/d 0 40755 2 0 0 0 0.0 - - -\n")
    for i in range(100):
        f.write(f"/d/f{i} 3 100644 1 0 0 0 0.0 - abc - user.a=b\n")
PY
for name in xattrs bigdir shared small; do
  "$bin/mkcomposefs" --from-file "$work/$name.dump" "$work/$name.cfs"
done
truncate -s 64G "$work/small.cfs"

timed "info-dump xattrs" "$bin/composefs-info" dump "$work/xattrs.cfs"
timed "info-dump shared" "$bin/composefs-info" dump "$work/shared.cfs"
timed "sparse cfsctl dump" "$bin/cfsctl" dump "$work/small.cfs"
timed "sparse info dump" "$bin/composefs-info" dump "$work/small.cfs"

if [ -e /dev/fuse ]; then
  mkdir "$work/mnt"
  "$bin/cfs-fuse" "$work/bigdir.cfs" "$work/mnt" -f &
  fuse_pid=$!
  for _ in $(seq 100); do mountpoint -q "$work/mnt" && break; sleep 0.1; done
  cpu_before=$(awk '{print $14 + $15}' "/proc/$fuse_pid/stat")
  start=$(date +%s.%N)
  # One process: the cost measured is the server's, not 1000 process starts.
  python3 -c 'import os, sys
for _ in range(1000): os.getxattr(sys.argv[1], "user.x")' "$work/mnt/big"
  end=$(date +%s.%N)
  cpu_after=$(awk '{print $14 + $15}' "/proc/$fuse_pid/stat")
  ticks=$(getconf CLK_TCK)
  awk -v a="$start" -v b="$end" -v c="$((cpu_after - cpu_before))" -v t="$ticks" \
    'BEGIN { printf "%-22s %8.3f s wall, server CPU %.3f ms per call\n", "fuse getxattr x1000", b - a, c / t }'
  fusermount3 -u "$work/mnt"
  wait "$fuse_pid" || true
fi
