#!/bin/bash
# docker:// pulls from a local registry (Debian's docker-registry on 127.0.0.1, a random free
# port in 15000-15999, stopped by PID at the end), in one run:
#   (a) `skopeo copy docker://… dir:…`: the peer (verified blob download, no decompression);
#   (b) `cfsctl oci pull docker://…`: the built-in registry client (download, decompress,
#       split into objects, EROFS, streams);
#   (c) `cfsctl oci pull skopeo:docker://…`: the same pull through skopeo's image proxy;
#   (d) zstd:chunked: images v1 and v2 (v2 shares 95% of the files of v1, --size-mib MiB of
#       incompressible files in one layer; written with Python's tarfile, made zstd:chunked by
#       skopeo), v1 pulled first, then v2: the partial pull of v2 by cfsctl against
#       `skopeo copy` of v2 to dir: (the peer, which downloads v2 whole);
#   (e) the same for eStargz layers (stargz-snapshotter's estargz package), with 4 MiB and
#       64 KiB chunks.
# Bytes are what each fetched from the registry (skopeo: the blobs it wrote).
#
#   bench/pull-registry.sh [--size-mib 128] [--layers 4] [--compress gzip|zstd] [--build DIR]
#                          [--workdir DIR]
set -euo pipefail

size_mib=128
layers=4
compress=gzip
here=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"
build=$here/build
workdir=${TMPDIR:-/var/tmp}
parse_options bench/pull-registry.sh "size-mib layers compress build workdir" "$@"
require_cfsctl bench/pull-registry.sh "$build"
command -v docker-registry > /dev/null || { echo "bench/pull-registry.sh: docker-registry is not installed" >&2; exit 1; }

dir=$(mktemp -d "$workdir/cfs-registry-bench.XXXXXX")
registry_pid=""
cleanup() {
  [ -z "$registry_pid" ] || { kill "$registry_pid" 2>/dev/null; wait "$registry_pid" 2>/dev/null || true; }
  rm -rf "$dir"
}
trap cleanup EXIT

start_registry bench/pull-registry.sh "$dir"
# skopeo's image proxy takes no --tls-verify: the registry is declared insecure for it in
# the registries.conf of a HOME of its own (skopeo 1.9 ignores $CONTAINERS_REGISTRIES_CONF).
mkdir -p "$dir/home/.config/containers"
printf '[[registry]]\nlocation = "127.0.0.1:%s"\ninsecure = true\n' "$port" \
  > "$dir/home/.config/containers/registries.conf"

echo "generating a $size_mib MiB, $layers-layer $compress layout in $dir ..." >&2
"$here/tests/oci/make-sample-layout.sh" "$dir/layout" --layers "$layers" --size-mib "$size_mib" \
  --compress "$compress" > /dev/null
skopeo copy -q --dest-tls-verify=false "oci:$dir/layout:latest" "docker://127.0.0.1:$port/bench/img:latest"
image="docker://127.0.0.1:$port/bench/img:latest"

now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc; }

t0=$(now)
skopeo copy -q --src-tls-verify=false "$image" "dir:$dir/skopeo" > /dev/null
t_skopeo=$(elapsed "$t0" "$(now)")
b_skopeo=$(find "$dir/skopeo" -type f -name '[0-9a-f]*' ! -name manifest.json -printf '%s\n' | awk '{s += $1} END {print s}')
rm -rf "$dir/skopeo"

# read_bytes OUTPUT: the "N read" figure of a cfsctl pull, in bytes.
read_bytes() {
  sed -n 's/^layers .*), \([0-9.]*\) \([KMG]i\)\{0,1\}B read.*/\1 \2/p' <<< "$1" |
    awk '{m = 1; if ($2 == "Ki") m = 1024; if ($2 == "Mi") m = 1048576; if ($2 == "Gi") m = 1073741824; printf "%d\n", $1 * m}'
}

"$cfsctl" --repo "$dir/repo" init --insecure > /dev/null
t0=$(now)
out=$("$cfsctl" --repo "$dir/repo" oci pull "$image" native 2> /dev/null)
t_native=$(elapsed "$t0" "$(now)")
b_native=$(read_bytes "$out")

"$cfsctl" --repo "$dir/repo2" init --insecure > /dev/null
t0=$(now)
out=$(HOME=$dir/home "$cfsctl" --repo "$dir/repo2" oci pull "skopeo:$image" proxy 2> /dev/null)
t_proxy=$(elapsed "$t0" "$(now)")
b_proxy=$(read_bytes "$out")

mib() { echo "scale=1; $1 / 1048576" | bc; }
printf '\ndocker:// pull from docker-registry on 127.0.0.1, %s MiB %s image, %s layers\n' "$size_mib" "$compress" "$layers"
printf '%-52s %9s %10s %8s\n' "what" "seconds" "MiB read" "ratio"
printf '%-52s %9.2f %10s %8s\n' "skopeo copy docker:// -> dir: (peer)" "$t_skopeo" "$(mib "$b_skopeo")" "1.00"
printf '%-52s %9.2f %10s %8.2f\n' "cfsctl oci pull docker:// (built-in client)" "$t_native" "$(mib "$b_native")" "$(echo "$t_native / $t_skopeo" | bc -l)"
printf '%-52s %9.2f %10s %8.2f\n' "cfsctl oci pull skopeo:docker:// (image proxy)" "$t_proxy" "$(mib "$b_proxy")" "$(echo "$t_proxy / $t_skopeo" | bc -l)"

# (d) zstd:chunked v1 then v2. The tars end right after their end-of-archive blocks: skopeo
# 1.9 drops zero records after them, which would break the layers' diff_ids.
python3 - "$dir" "$size_mib" "$here/tests/oci" <<'PY'
import random, sys, tarfile
sys.path.insert(0, sys.argv[3])
import registry_test as rt
tarfile.RECORDSIZE = tarfile.BLOCKSIZE
d, mib = sys.argv[1], int(sys.argv[2])
rnd = random.Random("bench")
files = [(f"usr/lib/f{i}", rnd.randbytes(256 << 10)) for i in range(mib * 4)]
v2 = list(files)
for i in range(0, len(v2), 20):  # 5% of the files change
    v2[i] = (v2[i][0], rnd.randbytes(256 << 10))
base = [("etc/os-release", b"ID=bench\n")]
rt.make_layout(f"{d}/cv1", "v1", [base, files], compress=False)
rt.make_layout(f"{d}/cv2", "v2", [base, v2], compress=False)
PY
for v in v1 v2; do
  skopeo copy -q --dest-tls-verify=false --dest-compress-format zstd:chunked "oci:$dir/c$v:$v" \
    "docker://127.0.0.1:$port/bench/chunked:$v"
done
cimage="docker://127.0.0.1:$port/bench/chunked:v2"
t0=$(now)
skopeo copy -q --src-tls-verify=false "$cimage" "dir:$dir/skopeo-c" > /dev/null
t_cskopeo=$(elapsed "$t0" "$(now)")
b_cskopeo=$(find "$dir/skopeo-c" -type f -name '[0-9a-f]*' ! -name manifest.json -printf '%s\n' | awk '{s += $1} END {print s}')
"$cfsctl" --repo "$dir/repo3" init --insecure > /dev/null
"$cfsctl" --repo "$dir/repo3" oci pull -q "docker://127.0.0.1:$port/bench/chunked:v1" v1 > /dev/null
t0=$(now)
out=$("$cfsctl" --repo "$dir/repo3" oci pull "$cimage" v2 2> /dev/null)
t_partial=$(elapsed "$t0" "$(now)")
b_partial=$(sed -n 's/^partial .*, \([0-9]*\) bytes fetched.*/\1/p' <<< "$out")
"$cfsctl" --repo "$dir/repo4" init --insecure > /dev/null
t0=$(now)
"$cfsctl" --repo "$dir/repo4" oci pull -q --no-partial "$cimage" v2 > /dev/null
t_cfull=$(elapsed "$t0" "$(now)")

printf '\nzstd:chunked v2 (%s MiB, 95%% of its files in v1) after v1, same registry\n' "$size_mib"
printf '%-52s %9s %10s %8s\n' "what" "seconds" "MiB read" "ratio"
printf '%-52s %9.2f %10s %8s\n' "skopeo copy docker:// -> dir: v2 (peer)" "$t_cskopeo" "$(mib "$b_cskopeo")" "1.00"
printf '%-52s %9.2f %10s %8.2f\n' "cfsctl oci pull docker:// v2, partial (v1 present)" "$t_partial" "$(mib "$b_partial")" "$(echo "$t_partial / $t_cskopeo" | bc -l)"
printf '%-52s %9.2f %10s %8.2f\n' "cfsctl oci pull --no-partial v2 (fresh repository)" "$t_cfull" "$(mib "$b_cskopeo")" "$(echo "$t_cfull / $t_cskopeo" | bc -l)"
printf 'bytes fetched by the partial pull: %s of %s (%.1f%%)\n' "$b_partial" "$b_cskopeo" "$(echo "100 * $b_partial / $b_cskopeo" | bc -l)"

# (e) eStargz v1 then v2 (the same files as (d)), written by stargz-snapshotter's estargz
# package (tests/oci/estargz-gen, built here), twice: with the library's default 4 MiB chunks
# and with 64 KiB chunks. A file's last chunk shares its gzip member with the tar headers that
# follow it; the pull of v1 records those tails, so v2 rebuilds such members from the object
# and the tail once their 8-byte gzip trailers match (docs/CHUNKED.md), and the 256 KiB files
# here are not fetched again even with 4 MiB chunks.
if command -v go > /dev/null && [ -d /usr/share/gocode/src/github.com/containerd/stargz-snapshotter/estargz ]; then
  python3 - "$dir" "$size_mib" "$here/tests/oci" <<'PY'
import random, sys
sys.path.insert(0, sys.argv[3])
import estargz_test as et
d, mib = sys.argv[1], int(sys.argv[2])
gen = et.build_generator(f"{d}/estargz-gen")
rnd = random.Random("bench")
files = [(f"usr/lib/f{i}", rnd.randbytes(256 << 10)) for i in range(mib * 4)]
v2 = list(files)
for i in range(0, len(v2), 20):  # 5% of the files change
    v2[i] = (v2[i][0], rnd.randbytes(256 << 10))
base = [("etc/os-release", b"ID=bench\n")]
for chunk in (0, 64 << 10):
    et.make_estargz_layout(gen, f"{d}/ev1-{chunk}", "v1", [base, files], chunk_size=chunk)
    et.make_estargz_layout(gen, f"{d}/ev2-{chunk}", "v2", [base, v2], chunk_size=chunk)
PY
  printf '\neStargz v2 (%s MiB, 95%% of its files in v1) after v1, same registry\n' "$size_mib"
  printf '%-52s %9s %10s %8s\n' "what" "seconds" "MiB read" "ratio"
  for chunk in 0 65536; do
    label=$([ "$chunk" = 0 ] && echo "4 MiB chunks" || echo "64 KiB chunks")
    for v in v1 v2; do
      skopeo copy -q --dest-tls-verify=false "oci:$dir/e$v-$chunk:$v" \
        "docker://127.0.0.1:$port/bench/estargz-$chunk:$v"
    done
    eimage="docker://127.0.0.1:$port/bench/estargz-$chunk:v2"
    t0=$(now)
    skopeo copy -q --src-tls-verify=false "$eimage" "dir:$dir/skopeo-e$chunk" > /dev/null
    t_eskopeo=$(elapsed "$t0" "$(now)")
    b_eskopeo=$(find "$dir/skopeo-e$chunk" -type f -name '[0-9a-f]*' ! -name manifest.json -printf '%s\n' | awk '{s += $1} END {print s}')
    "$cfsctl" --repo "$dir/repo-e$chunk" init --insecure > /dev/null
    "$cfsctl" --repo "$dir/repo-e$chunk" oci pull -q "docker://127.0.0.1:$port/bench/estargz-$chunk:v1" v1 > /dev/null
    t0=$(now)
    out=$("$cfsctl" --repo "$dir/repo-e$chunk" oci pull "$eimage" v2 2> /dev/null)
    t_epartial=$(elapsed "$t0" "$(now)")
    b_epartial=$(sed -n 's/^partial .*, \([0-9]*\) bytes fetched.*/\1/p' <<< "$out")
    printf '%-52s %9.2f %10s %8s\n' "skopeo copy docker:// -> dir: v2, $label (peer)" "$t_eskopeo" "$(mib "$b_eskopeo")" "1.00"
    printf '%-52s %9.2f %10s %8.2f\n' "cfsctl oci pull docker:// v2, partial, $label" "$t_epartial" "$(mib "$b_epartial")" "$(echo "$t_epartial / $t_eskopeo" | bc -l)"
    printf 'bytes fetched by the partial pull, %s: %s of %s (%.1f%%)\n' "$label" "$b_epartial" "$b_eskopeo" "$(echo "100 * $b_epartial / $b_eskopeo" | bc -l)"
  done
else
  echo "(eStargz rows skipped: golang-go or golang-github-containerd-stargz-snapshotter-dev missing)"
fi
