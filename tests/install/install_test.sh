#!/bin/sh
# install_test.sh SOURCE_DIR BUILD_DIR: installs cfs into a scratch prefix, then builds a
# consumer program against it twice, with find_package(cfs) and with pkg-config.
set -eu
src=$1
build=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
test -f "$work/prefix/include/cfs/erofs/dumpfile.h"
test -f "$work/prefix/lib/pkgconfig/cfs.pc"
# Every installed header belongs to an installed library: cfs_oci is not installed.
test -z "$(find "$work/prefix/include" -name 'oci*')"
for page in man1/cfsctl.1 man5/composefs-dump.5 man8/mount.composefs.8 man8/cfs-mount.8; do
  test -f "$work/prefix/share/man/$page"
done
for name in cfsctl mkcomposefs composefs-info; do
  test -e "$work/prefix/share/bash-completion/completions/$name"
done

# The installed cfsctl (bin/) finds the installed cfs-mount (sbin/), which root mounts with:
# the lookup comes before the repository is opened, so a missing repository is the next error.
# Without cfs-mount (and none where the build was configured to install it) root gets an
# error naming it, not a FUSE mount.
if [ "$(id -u)" = 0 ]; then
  mount_error() {
    "$work/prefix/bin/cfsctl" --repo "$work/no-repo" oci mount tag "$work" 2>&1 || true
  }
  case $(mount_error) in
    *"no such repository"*) ;;
    *) echo "installed cfsctl does not find the installed cfs-mount: $(mount_error)" >&2; exit 1 ;;
  esac
  configured=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$build/CMakeCache.txt")
  if [ ! -e "$configured/sbin/cfs-mount" ]; then
    mv "$work/prefix/sbin/cfs-mount" "$work/cfs-mount"
    case $(mount_error) in
      *"cfs-mount not found"*) ;;
      *) echo "no cfs-mount: expected an error naming it: $(mount_error)" >&2; exit 1 ;;
    esac
    mv "$work/cfs-mount" "$work/prefix/sbin/cfs-mount"
  fi
fi

# A sanitized build installs sanitized libraries: the consumers must link the runtimes too.
sanitize=$(sed -n 's/^CFS_SANITIZE:STRING=//p' "$build/CMakeCache.txt")
san_flags=${sanitize:+-fsanitize=$sanitize}
cmake -S "$src/tests/install/consumer" -B "$work/cm" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix" \
  -DCMAKE_EXE_LINKER_FLAGS="$san_flags" >/dev/null
ninja -C "$work/cm" >/dev/null
printf '/ 0 40755 2 0 0 0 0.0 - - -\n/a 1 100644 1 0 0 0 1.5 - x -\n' >"$work/in.dump"
"$work/cm/consumer" <"$work/in.dump" >"$work/out.dump"
cmp "$work/in.dump" "$work/out.dump"

flags=$(PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig" pkg-config --cflags --libs --static cfs)
# shellcheck disable=SC2086
g++ -std=c++20 $san_flags -o "$work/pc-consumer" "$src/tests/install/consumer/consumer.cc" $flags
"$work/pc-consumer" <"$work/in.dump" | cmp - "$work/in.dump"
echo "install test: find_package and pkg-config consumers work"
