#!/bin/sh
# The cfs main job on an embedded default: build cfs, generate a sample multi-layer OCI image
# (tests/oci/make-sample-layout.sh: GNU tar + gzip, no cfs code), pull it into a fresh
# repository (the EROFS image is built at pull time), mount it (kernel EROFS + overlayfs as
# root, FUSE otherwise), list it, check it, and clean everything up again.
#   ./tools/demo.sh                   (as root on a fresh machine: installs dependencies first)
#   CFS_DEMO_KEEP=1 ./tools/demo.sh   keep the work directory (path printed) for exploring
#   CFS_DEMO_CFSCTL=/usr/bin/cfsctl ./tools/demo.sh   run an installed cfsctl (no build)
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)

if [ -n "${CFS_DEMO_CFSCTL:-}" ]; then
  cfsctl=$CFS_DEMO_CFSCTL
  echo "== using $cfsctl"
else
  if [ "$(id -u)" = 0 ]; then ./tools/setup-deps.sh; fi
  if [ ! -x build/bin/cfsctl ] || [ ! -x build/bin/cfs-mount ] || [ ! -x build/bin/cfs-fuse ]; then
    echo "== building cfs"
    cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
    ninja -C build cfsctl cfs-mount cfs-fuse
  fi
  cfsctl=$top/build/bin/cfsctl
fi

work=$(mktemp -d /tmp/cfs-demo.XXXXXX)
mnt=$work/mnt
repo=$work/repo
mounted=""
cleanup() {
  if [ -n "$mounted" ]; then
    if [ "$mounted" = fuse ]; then fusermount3 -u "$mnt" 2>/dev/null || true; else umount "$mnt" 2>/dev/null || true; fi
  fi
  if [ "${CFS_DEMO_KEEP:-0}" = 1 ]; then echo "demo: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM
mkdir -p "$mnt"

echo "== a sample OCI image: 3 gzip layers (base system, data, whiteouts), tag 'demo'"
bash "$top/tests/oci/make-sample-layout.sh" "$work/layout" --layers 3 --size-mib 8 --tag demo >/dev/null
echo "== cfsctl --repo REPO init --insecure   (this host's kernel has no fs-verity)"
"$cfsctl" --repo "$repo" init --insecure --hash sha256
echo "== cfsctl oci pull oci:LAYOUT:demo demo   (digests and diff_ids verified, EROFS built)"
"$cfsctl" --repo "$repo" oci pull "oci:$work/layout:demo" demo
"$cfsctl" --repo "$repo" oci images
echo "== cfsctl oci mount demo MNT"
"$cfsctl" --repo "$repo" oci mount demo "$mnt"
if [ "$(id -u)" = 0 ]; then mounted=kernel; else mounted=fuse; fi
grep " $mnt " /proc/self/mounts || true
echo "== the mounted image (files below usr/share/sample summarised)"
(cd "$mnt" && find . -path ./usr/share/sample -prune -o \
  \( -type l -printf '%M %3n %8s %p -> %l\n' \) -o -printf '%M %3n %8s %p\n' | sort -k4)
echo "   usr/share/sample: $(find "$mnt/usr/share/sample" -type f | wc -l) files," \
  "$(du -sb "$mnt/usr/share/sample" | cut -f1) bytes"
echo "== /etc/os-release read through the mount"
cat "$mnt/etc/os-release"
echo "== cfsctl oci fsck demo"
"$cfsctl" --repo "$repo" oci fsck demo
echo "demo: done"
