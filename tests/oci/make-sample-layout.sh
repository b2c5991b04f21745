#!/bin/bash
# Writes a sample multi-layer OCI image layout with GNU tar, gzip/zstd and sha256sum (no
# cfs code involved, so it also checks cfs against an independent producer).
#
#   make-sample-layout.sh OUTDIR [--layers N] [--size-mib M] [--compress gzip|zstd|none]
#                         [--tag NAME] [--from DIR]
#
# --from DIR: one layer holding DIR as it is (owners, modes and mtimes kept) instead of the
# generated content.
#
# Layer 1 is a small base system (/usr, /etc, /run, /bin -> usr/bin, a hardlink, a
# setcap-style xattr is not needed); layers 2..N carry M MiB of file data between them
# (1 MiB files plus many small ones), and the last layer whites out one file of layer 1.
# Output is deterministic: the same arguments give the same digests.
set -euo pipefail

out=""
layers=3
size_mib=16
compress=gzip
tag=latest
from=""
while [ $# -gt 0 ]; do
  case "$1" in
    --layers) layers=$2; shift 2 ;;
    --size-mib) size_mib=$2; shift 2 ;;
    --compress) compress=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --from) from=$2; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "make-sample-layout: unknown option $1" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
[ -n "$out" ] || { echo "usage: make-sample-layout.sh OUTDIR [options]" >&2; exit 2; }
[ "$layers" -ge 1 ] || { echo "make-sample-layout: --layers must be >= 1" >&2; exit 2; }
case "$compress" in gzip|zstd|none) ;; *) echo "make-sample-layout: bad --compress" >&2; exit 2 ;; esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out/blobs/sha256"
printf '{"imageLayoutVersion":"1.0.0"}' > "$out/oci-layout"

# Deterministic pseudo-random bytes: AES-CTR keystream of a fixed key, seeded per file.
bytes() {  # bytes SEED COUNT
  local key
  key=$(printf '%s' "$1" | sha256sum | cut -c1-32)
  # head closes the pipe early; openssl's SIGPIPE is expected.
  (set +o pipefail; openssl enc -aes-128-ctr -nosalt -K "$key" \
    -iv 00000000000000000000000000000000 < /dev/zero 2>/dev/null | head -c "$2")
}

make_layer_tree() {  # make_layer_tree INDEX DIR
  local i=$1 dir=$2
  mkdir -p "$dir"
  if [ "$i" -eq 1 ]; then
    mkdir -p "$dir"/usr/bin "$dir"/usr/lib "$dir"/etc "$dir"/run/lock "$dir"/var/tmp "$dir"/tmp
    printf 'NAME="cfs sample"\nID=cfs-sample\nVERSION_ID=1\n' > "$dir/etc/os-release"
    printf '#!/bin/sh\necho hello from the cfs sample image\n' > "$dir/usr/bin/hello"
    chmod 0755 "$dir/usr/bin/hello"
    bytes base-lib 200000 > "$dir/usr/lib/libsample.so.1"
    ln "$dir/usr/lib/libsample.so.1" "$dir/usr/lib/libsample-hardlink.so.1"
    ln -s libsample.so.1 "$dir/usr/lib/libsample.so"
    ln -s usr/bin "$dir/bin"
    echo "to be removed by a whiteout" > "$dir/etc/obsolete.conf"
    echo stale > "$dir/run/lock/stale"
    chmod 1777 "$dir/tmp" "$dir/var/tmp"
    return
  fi
  local share="$dir/usr/share/sample/layer$i"
  mkdir -p "$share/small"
  local per_layer=$(( size_mib * 1048576 / (layers - 1) ))
  local small_total=$(( per_layer / 20 ))
  local n=0 written=0
  while [ "$written" -lt "$small_total" ]; do
    bytes "small-$i-$n" $(( 64 + (n * 97) % 4000 )) > "$share/small/f$n"
    written=$(( written + 64 + (n * 97) % 4000 ))
    n=$(( n + 1 ))
  done
  local big=$(( per_layer - written ))
  n=0
  while [ "$big" -gt 0 ]; do
    local chunk=$(( big < 1048576 ? big : 1048576 ))
    bytes "big-$i-$n" "$chunk" > "$share/data$n.bin"
    big=$(( big - chunk ))
    n=$(( n + 1 ))
  done
  if [ "$i" -eq "$layers" ]; then
    mkdir -p "$dir/etc"
    : > "$dir/etc/.wh.obsolete.conf"
  fi
}

compress_blob() {  # compress_blob IN OUT
  case "$compress" in
    gzip) gzip -n -6 -c "$1" > "$2" ;;
    zstd) zstd -q -3 -c "$1" > "$2" ;;
    none) cp "$1" "$2" ;;
  esac
}

media="application/vnd.oci.image.layer.v1.tar"
case "$compress" in gzip) media="$media+gzip" ;; zstd) media="$media+zstd" ;; esac

layer_json=""
diff_json=""
if [ -n "$from" ]; then
  [ -d "$from" ] || { echo "make-sample-layout: --from $from: not a directory" >&2; exit 2; }
  layers=1
fi
for i in $(seq 1 "$layers"); do
  if [ -n "$from" ]; then
    tree=$from
    tar_opts=()
  else
    tree="$work/l$i"
    make_layer_tree "$i" "$tree"
    tar_opts=(--mtime=@1700000000 --owner=0 --group=0)
  fi
  tar --sort=name "${tar_opts[@]}" --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$tree" -cf "$work/l$i.tar" .
  compress_blob "$work/l$i.tar" "$work/l$i.blob"
  diff=$(sha256sum < "$work/l$i.tar" | cut -d' ' -f1)
  dig=$(sha256sum < "$work/l$i.blob" | cut -d' ' -f1)
  size=$(stat -c %s "$work/l$i.blob")
  mv "$work/l$i.blob" "$out/blobs/sha256/$dig"
  [ -n "$from" ] || rm -rf "$tree"
  rm -f "$work/l$i.tar"
  layer_json="$layer_json${layer_json:+,}{\"mediaType\":\"$media\",\"digest\":\"sha256:$dig\",\"size\":$size}"
  diff_json="$diff_json${diff_json:+,}\"sha256:$diff\""
done

arch=$(uname -m)
case "$arch" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
config="{\"architecture\":\"$arch\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"/usr/bin/hello\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diff_json]}}"
printf '%s' "$config" > "$work/config"
cdig=$(sha256sum < "$work/config" | cut -d' ' -f1)
csize=$(stat -c %s "$work/config")
mv "$work/config" "$out/blobs/sha256/$cdig"

manifest="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cdig\",\"size\":$csize},\"layers\":[$layer_json]}"
printf '%s' "$manifest" > "$work/manifest"
mdig=$(sha256sum < "$work/manifest" | cut -d' ' -f1)
msize=$(stat -c %s "$work/manifest")
mv "$work/manifest" "$out/blobs/sha256/$mdig"

printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
  "$mdig" "$msize" "$tag" > "$out/index.json"
echo "sha256:$mdig"
