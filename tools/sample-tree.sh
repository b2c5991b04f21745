#!/bin/sh
# sample-tree.sh DIR: writes the demo's small, deterministic OS-like tree into DIR.
set -eu
d=$1
mkdir -p "$d/usr/bin" "$d/usr/lib" "$d/usr/share/doc/cfs" "$d/etc" "$d/var/empty"
cat >"$d/etc/os-release" <<'OS'
NAME="cfs sample"
ID=cfs-sample
VERSION_ID=1
PRETTY_NAME="cfs sample image 1"
OS
printf '#!/bin/sh\necho "hello from a composefs image"\n' >"$d/usr/bin/cfs-hello"
# A larger file (stored as an object) with deterministic content.
i=0
while [ $i -lt 2000 ]; do echo "line $i of the cfs sample documentation, padded to look like text"; i=$((i+1)); done >"$d/usr/share/doc/cfs/README"
head -c 300000 /dev/zero | tr '\0' 'z' >"$d/usr/lib/libsample.so.1"
ln -s libsample.so.1 "$d/usr/lib/libsample.so"
ln -s usr/bin "$d/bin"
ln "$d/usr/bin/cfs-hello" "$d/usr/bin/hello-hardlink"
chmod 0755 "$d/usr/bin/cfs-hello"
mkfifo "$d/var/empty/fifo"
touch -d '2024-01-01 00:00:00' "$d" "$d"/* "$d"/*/* 2>/dev/null || true
