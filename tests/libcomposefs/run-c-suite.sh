#!/bin/bash
# Acceptance test of libcomposefs.so.1: C composefs 1.0.8's own tools (mkcomposefs,
# composefs-info, composefs-dump, mount.composefs) and its test-lcfs program are compiled
# against cfs's lcfs-*.h headers, linked to cfs's library, and run through C composefs' own
# test scripts.
#
#   run-c-suite.sh BUILD_DIR [C_SOURCE_DIR]
#
# The C source (an unpacked composefs-1.0.8 tree) comes from, in this order: the argument,
# $CFS_COMPOSEFS_C_SOURCE, a copy cached under BUILD_DIR by an earlier run, or Debian's
# composefs source package, fetched with `apt-get source` through an apt configuration
# private to this script (the host's sources stay untouched; the archive is the one the
# host's apt uses). Without any, the test is skipped (exit 77) with the reason printed.
set -euo pipefail

build=$(cd "${1:?usage: run-c-suite.sh BUILD_DIR [C_SOURCE_DIR]}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
headers=$here/../../libcomposefs/include/libcomposefs
work=$build/libcomposefs-c-suite
cache=$work/source
version=1.0.8

skip() {
  echo "SKIP: $*"
  exit 77
}

# Debian's archive as the host's apt sees it (the one serving its own suite), or nothing.
host_archive() {
  local codename
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(TARGET_OF)' 2>/dev/null |
    awk -v r="$codename" '$2 == r && $3 == "deb" { sub("/$", "", $1); print $1; exit }' || true
}

# Fetches composefs $version's source package into $cache; prints why it could not.
fetch_debian_source() {
  local mirror suite dir
  command -v apt-get >/dev/null || { echo "no apt-get"; return 1; }
  mirror=${CFS_DEBIAN_MIRROR:-$(host_archive)}
  [ -n "$mirror" ] || { echo "no Debian archive in the host's apt sources"; return 1; }
  # composefs 1.0.8 is in sid (and in trixie while it is there).
  for suite in sid trixie; do
    dir=$work/apt/$suite
    mkdir -p "$dir/sources.list.d" "$dir/preferences.d" "$dir/lists/partial" \
      "$dir/cache/archives/partial" "$dir/download"
    : >"$dir/status"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" \
      >"$dir/sources.list"
    local opts=(-o "Dir::Etc::sourcelist=$dir/sources.list" -o "Dir::Etc::sourceparts=$dir/sources.list.d"
      -o "Dir::Etc::preferencesparts=$dir/preferences.d" -o "Dir::State::Lists=$dir/lists"
      -o "Dir::Cache=$dir/cache" -o "Dir::State::status=$dir/status" -o "APT::Sandbox::User=root")
    apt-get "${opts[@]}" update -qq >"$dir/update.log" 2>&1 || continue
    local debian_version
    debian_version=$(apt-cache "${opts[@]}" showsrc composefs 2>/dev/null |
      awk -v v="$version" 'index($0, "Version: " v "-") == 1 { print $2; exit }')
    [ -n "$debian_version" ] || continue
    # apt-get source checks every file against the signed Sources index.
    (cd "$dir/download" && apt-get "${opts[@]}" source --download-only "composefs=$debian_version" \
      >"$dir/source.log" 2>&1) || continue
    local orig=$dir/download/composefs_$version.orig.tar.gz
    [ -f "$orig" ] || continue
    rm -rf "$cache.new" && mkdir -p "$cache.new"
    # The upstream tarball only: Debian's patches are not part of what is being compared.
    tar -xzf "$orig" -C "$cache.new" --strip-components=1
    rm -rf "$cache" && mv "$cache.new" "$cache"
    return 0
  done
  echo "composefs $version's source package not found in $mirror (sid, trixie)"
  return 1
}

src=${2:-${CFS_COMPOSEFS_C_SOURCE:-}}
if [ -z "$src" ]; then
  if [ ! -f "$cache/tools/mkcomposefs.c" ]; then
    mkdir -p "$work"
    why=$(fetch_debian_source) || skip "no C composefs $version source: $why"
  fi
  src=$cache
fi
src=$(cd "$src" && pwd)
[ -f "$src/tools/mkcomposefs.c" ] && [ -f "$src/tests/test-checksums.sh" ] ||
  skip "$src is not a composefs source tree"
grep -q "version : '$version'" "$src/meson.build" || skip "$src is not composefs $version"

# ---- build the C tools against cfs's headers and library ----------------------------------
bin=$work/bin
inc=$work/include
rm -rf "$bin" "$inc"
mkdir -p "$bin" "$inc/libcomposefs"
# Public headers: cfs's. Private ones the tools include (lcfs-internal.h, lcfs-utils.h,
# hash.h and what they include): C's, from the source being tested.
cp "$headers"/lcfs-writer.h "$headers"/lcfs-erofs.h "$headers"/lcfs-mount.h "$inc/libcomposefs/"
for h in "$src"/libcomposefs/*.h; do
  case $(basename "$h") in lcfs-writer.h | lcfs-erofs.h | lcfs-mount.h) ;; *) cp "$h" "$inc/libcomposefs/" ;; esac
done
cat >"$inc/config.h" <<'EOC'
#pragma once
#define HAVE_ENDIAN_H 1
#define HAVE_FSCONFIG_CMD_CREATE_LINUX_MOUNT_H 1
#define HAVE_FSCONFIG_CMD_CREATE_SYS_MOUNT_H 1
#define HAVE_MOUNT_ATTR_IDMAP 1
#define HAVE_OPENSSL 1
#define HAVE_REALLOCARRAY 1
EOC

cc=${CC:-cc}
cflags=(-O2 -g -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -DUSE_OBSTACK=0 -DTESTING=0 -DUSE_DIFF_HASH=0
  -I"$inc" -I"$inc/libcomposefs" -w)
libs=(-L"$build/lib" -Wl,-rpath,"$build/lib" -lcomposefs)
utils=$src/libcomposefs/lcfs-utils.c
"$cc" "${cflags[@]}" -o "$bin/mkcomposefs" "$src/tools/mkcomposefs.c" "$utils" "${libs[@]}" -lpthread
"$cc" "${cflags[@]}" -o "$bin/composefs-info" "$src/tools/composefs-info.c" \
  "$src/libcomposefs/hash.c" "$utils" "${libs[@]}"
"$cc" "${cflags[@]}" -o "$bin/composefs-dump" "$src/tools/composefs-dump.c" "$utils" "${libs[@]}"
"$cc" "${cflags[@]}" -o "$bin/mount.composefs" "$src/tools/mountcomposefs.c" "$utils" "${libs[@]}"
"$cc" "${cflags[@]}" -o "$bin/test-lcfs" "$src/tests/test-lcfs.c" "${libs[@]}"
# C's FUSE server reads images with its own code (no library calls): it checks that images
# written through this library read back right in C's reader too.
if pkg-config --exists fuse3 && [ -e /dev/fuse ]; then
  # shellcheck disable=SC2046 # pkg-config prints several words
  "$cc" "${cflags[@]}" -DHAVE_FUSE3=1 $(pkg-config --cflags fuse3) -o "$bin/composefs-fuse" \
    "$src/tools/cfs-fuse.c" "$utils" $(pkg-config --libs fuse3) "${libs[@]}"
fi

# The tools read node->inode.st_mode through C's private struct: cfs's node must put it at
# the same offset (its own static_assert says 144).
cat >"$work/layout.c" <<'EOC'
#include <stddef.h>
#include <stdio.h>
#include "libcomposefs/lcfs-internal.h"
int main(void) { printf("%zu\n", offsetof(struct lcfs_node_s, inode)); return 0; }
EOC
"$cc" "${cflags[@]}" -o "$work/layout" "$work/layout.c"
offset=$("$work/layout")
[ "$offset" = 144 ] || { echo "FAIL: C's struct lcfs_node_s has its inode at $offset, cfs's at 144"; exit 1; }

# The library exports exactly the LCFS_EXTERN functions of C's public headers, nothing more.
lib=$build/lib/libcomposefs.so.1
expected=$(cat "$src"/libcomposefs/lcfs-writer.h "$src"/libcomposefs/lcfs-mount.h | tr '\n' ' ' |
  grep -o 'LCFS_EXTERN[^(]*(' | grep -o 'lcfs_[a-z0-9_]*[[:space:]]*($' | tr -d ' (' | sort)
exported=$(nm -D --defined-only "$lib" | awk '{ print $3 }' | sort)
if [ "$expected" != "$exported" ]; then
  echo "FAIL: exported symbols differ from C's LCFS_EXTERN list:"
  diff <(echo "$expected") <(echo "$exported") | sed 's/^/  | /'
  exit 1
fi
echo "PASS exports ($(echo "$exported" | wc -l) symbols, as C's headers declare)"

# ---- run C composefs' test suite ------------------------------------------------------------
# The asset lists, as C's tests/meson.build passes them.
list() { # VARIABLE
  awk -v v="$1" '$0 ~ "^" v " = " { p = 1 } p { while (match($0, /\x27[^\x27]+\x27/)) {
    print substr($0, RSTART + 1, RLENGTH - 2); $0 = substr($0, RSTART + RLENGTH) } } p && /\]/ { exit }' \
    "$src/tests/meson.build"
}
assets=$src/tests/assets
checksum_assets="$(list test_assets_small | tr '\n' ' ')$(list test_assets | tr '\n' ' ')"
should_fail=()
while read -r f; do should_fail+=("$assets/$f"); done < <(list test_assets_should_fail)

passed=0
failed=()
run() { # NAME COMMAND...
  local name=$1 log=$work/$1.log
  shift
  if "$@" >"$log" 2>&1; then
    echo "PASS $name ($(grep -c -E '^ok |: OK$' "$log" || true) cases)"
    passed=$((passed + 1))
  else
    echo "FAIL $name (log: $log)"
    tail -n 20 "$log" | sed 's/^/  | /'
    failed+=("$name")
  fi
}
run test-lcfs "$bin/test-lcfs"
run check-units "$src/tests/test-units.sh" "$bin"
run check-checksums "$src/tests/test-checksums.sh" "$bin" "$assets" "$checksum_assets"
run check-dump-filtered "$src/tests/test-dump-filtered.sh" "$bin" "$assets"
run check-should-fail "$src/tests/test-should-fail.sh" "$bin" "${should_fail[@]}"
# Ten random trees through mkcomposefs and C's FUSE server: minutes on a loaded machine, so
# only when asked for.
if [ "${CFS_LIBCOMPOSEFS_RANDOM_FUSE:-0}" != 1 ]; then
  echo "SKIP check-random-fuse (set CFS_LIBCOMPOSEFS_RANDOM_FUSE=1 to run it)"
elif [ -x "$bin/composefs-fuse" ] && command -v python3 >/dev/null; then
  run check-random-fuse "$src/tests/test-random-fuse.sh" "$bin"
else
  echo "SKIP check-random-fuse (needs fuse3's pkg-config file, /dev/fuse and python3)"
fi

echo "libcomposefs C suite: $passed passed, ${#failed[@]} failed${failed[*]:+: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
