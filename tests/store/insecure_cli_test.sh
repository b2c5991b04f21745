#!/bin/bash
# cfsctl's hidden --insecure (composefs-rs' backward-compatible option) on a secure repository
# (fs-verity on meta.json, on an ext4 loop filesystem with the verity feature): an image object
# replaced by a copy without fs-verity is refused normally and read with --insecure, and a
# kernel mount with --insecure has no verity=require. Needs root, mkfs.ext4 and loop devices;
# exits 77 (skipped) saying why where they are missing.
# Usage: insecure_cli_test.sh BINDIR
set -u
bindir=$1
cfsctl=$bindir/cfsctl
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (loop device, mount)"
command -v mkfs.ext4 >/dev/null || skip "mkfs.ext4 missing"
[ -x "$bindir/cfs-mount" ] || skip "cfs-mount not built"

work=$(mktemp -d /tmp/cfs-insecure.XXXXXX)
mnt=$work/fs
loop=
cleanup() {
  mountpoint -q "$mnt/root" 2>/dev/null && umount "$mnt/root"
  mountpoint -q "$mnt" 2>/dev/null && umount "$mnt"
  rm -rf "$work"
}
trap cleanup EXIT
truncate -s 64M "$work/fs.img"
mkfs.ext4 -q -b 4096 -O verity "$work/fs.img" || skip "mkfs.ext4 -O verity failed"
mkdir "$mnt"
mount -o loop "$work/fs.img" "$mnt" 2>/dev/null || skip "cannot mount an ext4 loop image"
failures=0
check() {
  if [ "$2" = 0 ]; then echo "ok   $1"; else echo "FAIL $1"; failures=$((failures + 1)); fi
}

repo=$mnt/repo
"$cfsctl" --repo "$repo" init --hash sha256 >/dev/null || skip "no fs-verity on the loop filesystem"
mkdir -p "$work/src/d"
echo hello >"$work/src/d/a"
head -c 100000 /dev/zero >"$work/src/d/big"
id=$("$cfsctl" --repo "$repo" create-image --no-propagate-usr-to-root "$work/src" img)
"$cfsctl" --repo "$repo" dump-files img /d/a >/dev/null
check "secure repository reads its image" $?
# The image object replaced by a copy of itself without fs-verity.
obj=$repo/objects/${id:0:2}/${id:2}
cp "$obj" "$work/copy" && cp "$work/copy" "$mnt/copy" && mv -f "$mnt/copy" "$obj"
out=$("$cfsctl" --repo "$repo" dump-files img /d/a 2>&1)
[ $? != 0 ] && grep -q "no fs-verity in a secure repository" <<<"$out"
check "without --insecure an object without fs-verity is refused ($out)" $?
out=$("$cfsctl" --insecure --repo "$repo" dump-files img /d/a 2>&1)
check "with --insecure it is read ($out)" $?
out=$("$cfsctl" --insecure --require-verity --repo "$repo" dump-files img /d/a 2>&1)
[ $? != 0 ]
check "--insecure with --require-verity is refused ($out)" $?

# Kernel mounts: a secure repository's image is mounted with verity=require, with
# --insecure without it.
mkdir "$mnt/root"
if out=$("$cfsctl" --repo "$repo" mount img "$mnt/root" 2>&1); then
  options=$(awk -v m="$mnt/root" '$5 == m {print $0}' /proc/self/mountinfo)
  grep -q "verity=require" <<<"$options"
  check "secure mount has verity=require ($options)" $?
  umount "$mnt/root"
else
  grep -qi "overlay\|kernel\|not supported" <<<"$out" && skip "kernel mount unavailable: $out"
  check "secure mount ($out)" 1
fi
if out=$("$cfsctl" --insecure --repo "$repo" mount img "$mnt/root" 2>&1); then
  options=$(awk -v m="$mnt/root" '$5 == m {print $0}' /proc/self/mountinfo)
  ! grep -q "verity=require" <<<"$options"
  check "--insecure mount has no verity=require ($options)" $?
  [ "$(cat "$mnt/root/d/a")" = hello ]
  check "--insecure mount shows the files" $?
  umount "$mnt/root"
else
  grep -qi "overlay\|kernel\|not supported" <<<"$out" && skip "kernel mount unavailable: $out"
  check "--insecure mount ($out)" 1
fi
[ "$failures" = 0 ] || { echo "$failures failure(s)"; exit 1; }
echo "all passed"
