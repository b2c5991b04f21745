#!/bin/sh
# bench/create-image.sh: cfsctl create-image throughput on a tree of mixed file sizes,
# against `openssl dgst -sha256` over the same files in the same run.
#
#   bench/create-image.sh [BUILD_DIR] [SIZE_MIB]      (defaults: build, 1024)
#   C_TOOLS=DIR bench/create-image.sh   also runs C mkcomposefs --digest-store from DIR
#
# The tree (random data: 10% of the bytes in files of 100 B - 16 KiB, 30% in 16 KiB - 1 MiB,
# 60% in 1 - 64 MiB, plus some files of at most 64 bytes that stay inline) is generated
# under $TMPDIR and read once before timing, so every case runs from the page cache and
# measures CPU cost, not the disk. Each case runs 3 times; the fastest counts.
#   openssl     openssl dgst -sha256 over every file (the hashing floor)
#   compute-id  scan + fs-verity digests + EROFS image, nothing written
#   create-image   the above + objects written and linked durably (syncfs), fresh repo
#   create-image (present)  same tree into a repository that already has every object
#   fsck        re-hash every object of the resulting repository (parallel per objects/XX)
#   create-image, repo in RAM  fresh repository on tmpfs (/dev/shm, if present): the CPU
#                 cost of storing, without the disk write-back that durability waits for
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${1:-$root/build}/bin" && pwd)
size_mib=${2:-1024}
work=$(mktemp -d "${TMPDIR:-/tmp}/cfs-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

python3 - "$work/src" "$size_mib" <<'PY'
import os, random, sys
root, total = sys.argv[1], int(sys.argv[2]) << 20
rng = random.Random(1)
classes = [(0.10, 100, 16 << 10), (0.30, 16 << 10, 1 << 20), (0.60, 1 << 20, 64 << 20)]
n = 0
for share, lo, hi in classes:
    budget = int(total * share)
    while budget > 0:
        size = min(budget, rng.randint(lo, hi))
        d = os.path.join(root, "d%02d" % (n % 37), "e%d" % (n % 5))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "f%d" % n), "wb") as f:
            f.write(os.urandom(size))
        budget -= size
        n += 1
for i in range(200):  # inline files
    with open(os.path.join(root, "d%02d" % (i % 37), "tiny%d" % i), "wb") as f:
        f.write(os.urandom(rng.randint(0, 64)))
PY
files=$(find "$work/src" -type f | wc -l)
bytes=$(find "$work/src" -type f -printf '%s\n' | awk '{s+=$1} END{print s}')
find "$work/src" -type f -print0 | xargs -0 cat >/dev/null  # warm the page cache

# best_of CMD...: fastest wall time of 3 runs, in seconds.
best_of() {
  best=""
  for _ in 1 2 3; do
    [ -n "${PREPARE:-}" ] && sh -c "$PREPARE"
    start=$(date +%s.%N)
    "$@" >/dev/null
    end=$(date +%s.%N)
    t=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.3f", b-a}')
    if [ -z "$best" ] || awk -v t="$t" -v b="$best" 'BEGIN{exit !(t < b)}'; then best=$t; fi
  done
  echo "$best"
}

openssl_all() { find "$work/src" -type f -print0 | xargs -0 openssl dgst -sha256; }
t_openssl=$(best_of openssl_all)
"$bin/cfsctl" --repo "$work/r256" init --insecure --hash sha256 >/dev/null
t_compute=$(best_of "$bin/cfsctl" compute-id --hash sha256 "$work/src")
t_create=$(PREPARE="rm -rf '$work/repo' && '$bin/cfsctl' --repo '$work/repo' init --insecure --hash sha256 >/dev/null" \
  best_of "$bin/cfsctl" --repo "$work/repo" create-image "$work/src")
t_again=$(best_of "$bin/cfsctl" --repo "$work/repo" create-image "$work/src")
t_shm=""
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  shm=$(mktemp -d /dev/shm/cfs-bench.XXXXXX)
  trap 'rm -rf "$work" "$shm"' EXIT
  t_shm=$(PREPARE="rm -rf '$shm/repo' && '$bin/cfsctl' --repo '$shm/repo' init --insecure --hash sha256 >/dev/null" \
    best_of "$bin/cfsctl" --repo "$shm/repo" create-image "$work/src")
  rm -rf "$shm/repo"
fi
t_cmk="" t_mk=""
if [ -n "${C_TOOLS:-}" ]; then
  # The C tool and cfs's drop-in, both writing a digest store (objects + image).
  t_cmk=$(PREPARE="rm -rf '$work/cstore' '$work/c.img'" \
    best_of "$C_TOOLS/mkcomposefs" --digest-store="$work/cstore" "$work/src" "$work/c.img")
  t_mk=$(PREPARE="rm -rf '$work/cstore' '$work/c.img'" \
    best_of "$bin/mkcomposefs" --digest-store="$work/cstore" "$work/src" "$work/c.img")
fi
id1=$("$bin/cfsctl" --repo "$work/repo" compute-id "$work/src")
id2=$("$bin/cfsctl" --repo "$work/repo" create-image "$work/src")
[ "$id1" = "$id2" ] || { echo "compute-id $id1 != create-image $id2" >&2; exit 1; }
"$bin/cfsctl" --repo "$work/repo" fsck >/dev/null || { echo "fsck failed after the benchmark" >&2; exit 1; }
t_fsck=$(best_of "$bin/cfsctl" --repo "$work/repo" fsck)

echo "tree: $files files, $bytes bytes ($(nproc) CPUs, page cache warm)"
printf '%-26s %9s %10s %16s\n' case seconds MiB/s "time vs openssl"
row() {
  awk -v n="$1" -v t="$2" -v o="$t_openssl" -v b="$bytes" \
    'BEGIN{printf "%-26s %9.3f %10.0f %15.2fx\n", n, t, b/1048576/t, t/o}'
}
row "openssl dgst -sha256" "$t_openssl"
row "cfsctl compute-id" "$t_compute"
row "cfsctl create-image" "$t_create"
row "create-image (present)" "$t_again"
row "cfsctl fsck" "$t_fsck"
[ -n "$t_shm" ] && row "create-image, repo in RAM" "$t_shm"
[ -n "$t_cmk" ] && row "C mkcomposefs --digest-store" "$t_cmk"
[ -n "$t_mk" ] && row "cfs mkcomposefs --digest-store" "$t_mk"
exit 0
