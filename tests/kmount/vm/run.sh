#!/bin/sh
# tests/kmount/vm/run.sh: boots a Debian kernel under qemu (TCG) with a busybox initramfs holding
# the static cfs-mount and a composefs image, and checks mounting, rw upper, verity refusals and
# setup-root on that kernel, with no tier forced (run-time probing) and with each tier forced.
#
#   tests/kmount/vm/run.sh KERNEL_ROOT BUILD_DIR [MKCOMPOSEFS]
#
# KERNEL_ROOT: a linux-image .deb extracted with `dpkg-deb -x` and `depmod -b`-ed (see
# docs/reference/machine-facts.md §3). BUILD_DIR holds bin/cfs-mount; MKCOMPOSEFS defaults to
# BUILD_DIR/bin/mkcomposefs. Prints the guest's PASS/FAIL lines; exits 1 if a line that must pass
# failed. Needs qemu-system-x86_64, busybox (static), cpio, modprobe, xz.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
kroot=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
mkcfs=${3:-$build/bin/mkcomposefs}
version=$(ls "$kroot/lib/modules")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Test data: an image with external objects, and a fake sysroot holding it as a repository.
data=$work/root/data
mkdir -p "$data/src/dir" "$data/src/etc" "$data/src/var" "$data/src/sysroot"
seq 1 3000 >"$data/src/big"
echo inline >"$data/src/small"
echo conf >"$data/src/etc/app.conf"
seq 1 5000 >"$data/src/dir/other"
"$mkcfs" --digest-store="$data/objects" "$data/src" "$data/img.cfs"
digest=$("$mkcfs" --print-digest-only "$data/src")
echo "$digest" >"$data/digest"
mkdir -p "$data/sysroot/composefs/images"
cp -a "$data/objects" "$data/sysroot/composefs/"
cp "$data/img.cfs" "$data/sysroot/composefs/images/$digest"
rm -rf "$data/src"

# The initramfs: busybox, cfs-mount, the modules composefs needs (decompressed), /init.
r=$work/root
mkdir -p "$r/bin" "$r/proc" "$r/sys" "$r/dev" "$r/modules" "$r/tmp" "$r/run"
cp /bin/busybox "$r/bin/"
cp "$build/bin/cfs-mount" "$r/bin/"
strip "$r/bin/cfs-mount"
cp "$here/init.sh" "$r/init"
chmod +x "$r/init"
for m in erofs overlay loop; do modprobe -d "$kroot" -S "$version" --show-depends "$m"; done |
  awk '$1=="insmod"{print $2}' | awk '!s[$0]++' | while read -r p; do
    b=$(basename "$p")
    case $b in
      *.xz) xz -dc "$p" >"$r/modules/${b%.xz}"; b=${b%.xz} ;;
      *) cp "$p" "$r/modules/" ;;
    esac
    echo "$b" >>"$r/modules/order"
  done
(cd "$r" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"

timeout 300 qemu-system-x86_64 -accel tcg -m 1024 -nographic -no-reboot \
  -kernel "$kroot/boot/vmlinuz-$version" -initrd "$work/initrd.gz" \
  -append 'console=ttyS0 panic=-1 quiet' 2>&1 | tr -d '\r' >"$work/serial.log" || true
grep -E '^(KERNEL|PASS|FAIL|EXPECTED-FAIL|LEFT|DONE)' "$work/serial.log" | cut -c1-300
grep -q '^DONE' "$work/serial.log" || { echo "guest did not finish"; exit 1; }
grep -q '^LEFT: mounts=0 loops=0 tmp=0' "$work/serial.log" || { echo "guest left mounts behind"; exit 1; }
! grep -q '^FAIL' "$work/serial.log"
