#!/bin/sh
# Regenerates the real-writer tar samples the tar reader tests use (GNU tar 1.34):
#   sparse-{gnu,oldgnu,pax00,pax01,pax10}.tar: a directory with
#     ./data/sparse  300 KiB: 4 KiB of 'a' at 0, 4 KiB of 'b' at 128 KiB, trailing hole
#     ./data/tiny    a 60-byte hole (realsize within the inline limit)
#     ./data/empty1g a 1 GiB hole
#     ./data/plain   a non-sparse 100-byte file
#   devices-gnu.tar: ./dev/null (1,3), ./dev/sda (8,0) and a fifo in GNU format
#   v7.tar: a directory and a file in v7 format (no magic)
set -eu
out=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/data"
cd "$work"
head -c 4096 /dev/zero | tr '\0' a >data/sparse
truncate -s 131072 data/sparse
head -c 4096 /dev/zero | tr '\0' b >>data/sparse
truncate -s 307200 data/sparse
truncate -s 60 data/tiny
truncate -s 1G data/empty1g
head -c 100 /dev/zero | tr '\0' p >data/plain
common="--owner=0 --group=0 --numeric-owner --mtime=@1700000000 --sort=name -S"
tar $common --format=gnu -cf "$out/sparse-gnu.tar" data
tar $common --format=oldgnu -cf "$out/sparse-oldgnu.tar" data
tar $common --format=posix --sparse-version=0.0 --pax-option=delete=atime,delete=ctime \
  -cf "$out/sparse-pax00.tar" data
tar $common --format=posix --sparse-version=0.1 --pax-option=delete=atime,delete=ctime \
  -cf "$out/sparse-pax01.tar" data
tar $common --format=posix --sparse-version=1.0 --pax-option=delete=atime,delete=ctime \
  -cf "$out/sparse-pax10.tar" data
mkdir dev
mknod dev/null c 1 3
mknod dev/sda b 8 0
mkfifo dev/fifo
tar --owner=0 --group=0 --numeric-owner --mtime=@1700000000 --sort=name --format=gnu \
  -cf "$out/devices-gnu.tar" dev
tar --owner=0 --group=0 --numeric-owner --mtime=@1700000000 --sort=name --format=v7 \
  --no-recursion -cf "$out/v7.tar" data data/plain
