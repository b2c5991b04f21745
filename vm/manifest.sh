#!/bin/sh
# manifest.sh DIR: one line per entry below DIR, sorted, describing what a mounted composefs
# image must reproduce: name, type and permission bits, owner, link count, size and mtime of
# non-directories, and the content (sha256 of a file, target of a symlink, major:minor of a
# device). Run with busybox on the host (over the source tree) and in the VM (over the mount), so
# both sides format every field with the same tools. Does not cross into other mounts.
set -eu
cd "$1"
find . -xdev | LC_ALL=C sort | while IFS= read -r path; do
  # Directory sizes, link counts and mtimes depend on the filesystem (ext4 vs. EROFS, overlay
  # merges), so only their mode and owner are compared.
  # shellcheck disable=SC2046 # the fields are meant to be split
  set -- $(stat -c '%f %u %g %h %s %Y %t %T' "$path")
  mode=$1 owner=$2:$3 links=$4 size=$5 mtime=$6 device=$7:$8
  case $(stat -c %F "$path") in
    directory) echo "$path $mode $owner" ;;
    "regular file"|"regular empty file")
      sum=$(sha256sum "$path")
      echo "$path $mode $owner $links $size $mtime ${sum%% *}" ;;
    "symbolic link") echo "$path $mode $owner $links $size $mtime -> $(readlink "$path")" ;;
    "character special file"|"block special file") echo "$path $mode $owner $links $mtime $device" ;;
    *) echo "$path $mode $owner $links $mtime" ;;
  esac
done
