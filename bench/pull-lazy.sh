#!/bin/bash
# cfsctl oci pull --lazy of a zstd:chunked image (--size-mib MiB of incompressible 256 KiB
# files in one layer, written with Python's tarfile, made zstd:chunked by skopeo) from a local
# registry (Debian's docker-registry on 127.0.0.1, a random free port in 15000-15999, stopped
# by PID at the end), in one run:
#   (a) `skopeo copy docker://… dir:…` of the image: the peer (the whole image downloaded);
#   (b) `cfsctl oci pull` of the image into a fresh repository (not lazy);
#   (c) `cfsctl oci pull --lazy --mount DIR` into a fresh repository: seconds from its start
#       to the first `ls` of the mount, to the first read of a whole file (the last one in the
#       layer, fetched on demand), and to the image being wholly local (pulled and tagged).
# With --large-file-mib N the image is one incompressible file of N MiB instead (containers/
# storage splits it into chunks of its own), and the first read is 4 KiB in its middle: with
# --lazy that read fetches the chunks around it, not the file.
# Root, or a user who may mount through FUSE.
#
#   bench/pull-lazy.sh [--size-mib 1024 | --large-file-mib 512] [--build DIR] [--workdir DIR]
set -euo pipefail

size_mib=1024
large_file_mib=0
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"
build=$here/build
workdir=${TMPDIR:-/var/tmp}
parse_options bench/pull-lazy.sh "size-mib large-file-mib build workdir" "$@"
[ "$large_file_mib" -eq 0 ] || size_mib=$large_file_mib
require_cfsctl bench/pull-lazy.sh "$build"
for tool in docker-registry skopeo fusermount3 bc; do
  command -v "$tool" > /dev/null || { echo "bench/pull-lazy.sh: $tool is not installed" >&2; exit 1; }
done

dir=$(mktemp -d "$workdir/cfs-lazy-bench.XXXXXX")
registry_pid=""
lazy_pid=""
cleanup() {
  if [ -n "$lazy_pid" ]; then
    fusermount3 -u "$dir/mnt" 2>/dev/null || true
    wait "$lazy_pid" 2>/dev/null || true
  fi
  [ -z "$registry_pid" ] || { kill "$registry_pid" 2>/dev/null; wait "$registry_pid" 2>/dev/null || true; }
  rm -rf "$dir"
}
trap cleanup EXIT

start_registry bench/pull-lazy.sh "$dir"

echo "generating a $size_mib MiB zstd:chunked image in $dir ..." >&2
# The tar ends right after its end-of-archive blocks (see docs/CHUNKED.md, Limits).
python3 - "$dir" "$size_mib" "$here/tests/oci" "$large_file_mib" <<'PY'
import random, sys, tarfile
sys.path.insert(0, sys.argv[3])
import registry_test as rt
tarfile.RECORDSIZE = tarfile.BLOCKSIZE
d, mib, large = sys.argv[1], int(sys.argv[2]), int(sys.argv[4])
rnd = random.Random("lazy-bench")
if large:
    files = [("usr/lib/large", b"".join(rnd.randbytes(1 << 20) for _ in range(large)))]
else:
    files = [(f"usr/lib/f{i:05}", rnd.randbytes(256 << 10)) for i in range(mib * 4)]
rt.make_layout(f"{d}/layout", "v1", [[("etc/os-release", b"ID=bench\n")], files], compress=False)
PY
image="docker://127.0.0.1:$port/bench/lazy:v1"
skopeo copy -q --dest-tls-verify=false --dest-compress-format zstd:chunked "oci:$dir/layout:v1" "$image"
rm -rf "$dir/layout"
last=$(printf 'f%05d' $((size_mib * 4 - 1)))

now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc; }

t0=$(now)
skopeo copy -q --src-tls-verify=false "$image" "dir:$dir/skopeo" > /dev/null
t_skopeo=$(elapsed "$t0" "$(now)")
rm -rf "$dir/skopeo"

"$cfsctl" --repo "$dir/repo1" init --insecure > /dev/null
t0=$(now)
"$cfsctl" --repo "$dir/repo1" oci pull -q "$image" full > /dev/null
t_full=$(elapsed "$t0" "$(now)")
rm -rf "$dir/repo1"

"$cfsctl" --repo "$dir/repo2" init --insecure > /dev/null
mkdir "$dir/mnt"
t0=$(now)
"$cfsctl" --repo "$dir/repo2" oci pull "$image" lazy --lazy --mount "$dir/mnt" \
  > "$dir/lazy.out" 2> "$dir/lazy.err" &
lazy_pid=$!
until grep -q '^serving ' "$dir/lazy.out"; do
  kill -0 "$lazy_pid" 2>/dev/null || { cat "$dir/lazy.err" >&2; exit 1; }
  sleep 0.005
done
ls "$dir/mnt/usr/lib" > /dev/null
t_ls=$(elapsed "$t0" "$(now)")
if [ "$large_file_mib" -eq 0 ]; then
  cat "$dir/mnt/usr/lib/$last" > /dev/null
  what_read="first read of a file (256 KiB)"
else
  dd if="$dir/mnt/usr/lib/large" of=/dev/null bs=4096 skip=$((large_file_mib * 128)) count=1 status=none
  what_read="first 4 KiB read (middle of one $large_file_mib MiB file)"
fi
t_read=$(elapsed "$t0" "$(now)")
until grep -q 'wholly local' "$dir/lazy.out"; do
  kill -0 "$lazy_pid" 2>/dev/null || { cat "$dir/lazy.err" >&2; exit 1; }
  sleep 0.05
done
t_local=$(elapsed "$t0" "$(now)")
fusermount3 -u "$dir/mnt"
wait "$lazy_pid"
lazy_pid=""

printf '\n%s MiB zstd:chunked image from docker-registry on 127.0.0.1, fresh repositories\n' "$size_mib"
printf '%-58s %9s %8s\n' "what" "seconds" "ratio"
printf '%-58s %9.2f %8s\n' "skopeo copy docker:// -> dir: (peer)" "$t_skopeo" "1.00"
printf '%-58s %9.2f %8.2f\n' "cfsctl oci pull (not lazy)" "$t_full" "$(echo "$t_full / $t_skopeo" | bc -l)"
printf '%-58s %9.2f %8.3f\n' "cfsctl oci pull --lazy: first ls of the mount" "$t_ls" "$(echo "$t_ls / $t_skopeo" | bc -l)"
printf '%-58s %9.2f %8.3f\n' "cfsctl oci pull --lazy: $what_read" "$t_read" "$(echo "$t_read / $t_skopeo" | bc -l)"
printf '%-58s %9.2f %8.2f\n' "cfsctl oci pull --lazy: wholly local and tagged" "$t_local" "$(echo "$t_local / $t_skopeo" | bc -l)"
grep '^lazy ' "$dir/lazy.out"
