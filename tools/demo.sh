#!/bin/sh
# The cfs main job on an embedded default: build cfs, put a sample image into a fresh
# repository, mount it (kernel EROFS+overlayfs as root, FUSE otherwise), list it, check it,
# and clean everything up again.
#   ./tools/demo.sh            (as root on a fresh machine: installs dependencies first)
#   CFS_DEMO_KEEP=1 ./tools/demo.sh   keep the repository (path printed) for exploring
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)

if [ "$(id -u)" = 0 ]; then ./tools/setup-deps.sh; fi
if [ ! -x build/bin/cfsctl ] || [ ! -x build/bin/cfs-mount ] || [ ! -x build/bin/cfs-fuse ]; then
  echo "== building cfs"
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  ninja -C build cfsctl cfs-mount cfs-fuse
fi
bin=$top/build/bin

work=$(mktemp -d /tmp/cfs-demo.XXXXXX)
mnt=$work/mnt
mounted=""
cleanup() {
  if [ -n "$mounted" ]; then
    if [ "$mounted" = fuse ]; then fusermount3 -u "$mnt" 2>/dev/null || true; else umount "$mnt" 2>/dev/null || true; fi
  fi
  if [ "${CFS_DEMO_KEEP:-0}" = 1 ]; then echo "demo: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

repo=$work/repo
mkdir -p "$mnt"
echo "== the sample image: a small OS-like tree"
sh "$top/tools/sample-tree.sh" "$work/sample"
echo "== cfsctl --repo $repo init --insecure   (this host's kernel has no fs-verity)"
"$bin/cfsctl" --repo "$repo" init --insecure --hash sha256
echo "== cfsctl create-image (files over 64 bytes become objects, the rest is inline)"
id=$("$bin/cfsctl" --repo "$repo" create-image "$work/sample" --name sample)
echo "image id: $id"
"$bin/cfsctl" --repo "$repo" images

if [ "$(id -u)" = 0 ]; then
  echo "== cfs-mount --repo $repo sample $mnt   (kernel: EROFS + overlayfs data-only layer)"
  "$bin/cfs-mount" --verbose --repo "$repo" sample "$mnt"
  mounted=kernel
else
  echo "== cfs-fuse --repo $repo sample $mnt   (unprivileged FUSE)"
  "$bin/cfs-fuse" --repo "$repo" sample "$mnt"
  mounted=fuse
fi
echo "== the mounted image"
(cd "$mnt" && find . \( -type l -printf '%M %3n %8s %p -> %l\n' \) -o -printf '%M %3n %8s %p\n' | sort -k4)
echo "== /etc/os-release read through the mount"
cat "$mnt/etc/os-release"
echo "== an inline file and an object-backed file, through the mount and in the sample tree"
sha256sum "$mnt/usr/bin/cfs-hello" "$work/sample/usr/bin/cfs-hello" \
  "$mnt/usr/share/doc/cfs/README" "$work/sample/usr/share/doc/cfs/README"
echo "== cfsctl fsck"
"$bin/cfsctl" --repo "$repo" fsck
echo "demo: done"
