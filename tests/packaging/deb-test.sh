#!/bin/bash
# The Debian packages, end to end: build them from a copy of the tree with
# `dpkg-buildpackage -b -us -uc`, check them with lintian (no errors allowed), install them on
# this machine, run the README's demo against the installed binaries, purge them, and check
# that nothing they installed is left behind.
#   tests/packaging/deb-test.sh          (as root; debhelper, dpkg-dev and lintian installed)
# Refuses to run if any of the packages is installed already: purging is part of the test.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
packages=(cfs cfs-mount libcfs-dev libcomposefs1-cfs libcomposefs-cfs-dev)

fail() {
  echo "deb-test: FAIL: $*" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || fail "needs root (installs and purges packages)"
for tool in dpkg-buildpackage dh lintian; do
  command -v "$tool" >/dev/null || fail "$tool is not installed (tools/setup-deps.sh installs it)"
done
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
for p in "${packages[@]}" composefs libcomposefs1 libcomposefs-dev; do
  installed "$p" && fail "package $p is installed already; this test installs and purges its own"
done

work=$(mktemp -d /tmp/cfs-deb.XXXXXX)
we_installed=0
cleanup() {
  if [ "$we_installed" = 1 ]; then dpkg --purge "${packages[@]}" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== dpkg-buildpackage -b -us -uc (from a copy of the tree)"
mkdir "$work/cfs"
git -C "$top" ls-files -co --exclude-standard | grep -v '^build' |
  tar -C "$top" -cf - -T - | tar -C "$work/cfs" -xf -
if ! (cd "$work/cfs" && dpkg-buildpackage -b -us -uc) >"$work/build.log" 2>&1; then
  tail -40 "$work/build.log" >&2
  fail "dpkg-buildpackage failed (log above)"
fi
ls "$work"/*.deb

echo "== lintian"
lintian --fail-on error --suppress-tags-from-file /dev/null "$work"/*.changes |
  tee "$work/lintian.log" || fail "lintian reports errors (above)"

echo "== install"
# The packages themselves, not their -dbgsym companions (which would then block the purge).
debs=()
for p in "${packages[@]}"; do debs+=("$work/${p}_"*.deb); done
dpkg -i "${debs[@]}" >/dev/null || fail "dpkg -i failed"
we_installed=1
for p in "${packages[@]}"; do installed "$p" || fail "$p did not install"; done
# Everything each package owns, to check after the purge.
for p in "${packages[@]}"; do dpkg -L "$p"; done | sort -u >"$work/owned"

/usr/bin/cfsctl --version
/usr/bin/mkcomposefs --help >/dev/null || fail "installed mkcomposefs --help"
/usr/sbin/mount.composefs -h >/dev/null || fail "installed mount.composefs -h"
[ -x /usr/lib/dracut/modules.d/37cfs-composefs/module-setup.sh ] || fail "dracut module missing"
[ -x /usr/lib/initcpio/install/cfs-composefs ] && [ -f /usr/lib/initcpio/hooks/cfs-composefs ] ||
  fail "mkinitcpio hook missing"
man -w mkcomposefs >/dev/null 2>&1 || [ -e /usr/share/man/man1/mkcomposefs.1.gz ] ||
  fail "mkcomposefs(1) not installed"
pkg-config --exists cfs || fail "pkg-config does not find cfs.pc"
# A C program built against the installed libcomposefs headers and library writes an image
# that the installed composefs-info reads.
cat >"$work/lcfs.c" <<'C'
#include <libcomposefs/lcfs-writer.h>
#include <stdio.h>
#include <sys/stat.h>
static ssize_t out(void *file, void *buf, size_t len) { return fwrite(buf, 1, len, file); }
int main(int argc, char **argv) {
  struct lcfs_node_s *root = lcfs_node_new(), *file = lcfs_node_new();
  lcfs_node_set_mode(root, S_IFDIR | 0755);
  lcfs_node_set_mode(file, S_IFREG | 0644);
  lcfs_node_set_content(file, (const uint8_t *)"hello\n", 6);
  lcfs_node_set_size(file, 6);
  if (lcfs_node_add_child(root, file, "hello") != 0) return 1;
  FILE *f = fopen(argv[argc - 1], "wb");
  struct lcfs_write_options_s options = {.format = LCFS_FORMAT_EROFS, .file = f, .file_write_cb = out};
  int r = lcfs_write_to(root, &options);
  fclose(f);
  lcfs_node_unref(root);
  return r != 0;
}
C
# shellcheck disable=SC2046
cc -o "$work/lcfs" "$work/lcfs.c" $(pkg-config --cflags --libs composefs) ||
  fail "a C program does not build against the installed libcomposefs"
"$work/lcfs" "$work/lcfs.cfs" || fail "lcfs_write_to through the installed library"
/usr/bin/composefs-info dump "$work/lcfs.cfs" | grep -q '^/hello 6 100644 1 0 0 0 0.0 - hello\\n -' ||
  fail "the image written through libcomposefs does not read back"

echo "== the README's demo, against the installed cfsctl"
CFS_DEMO_CFSCTL=/usr/bin/cfsctl "$top/tools/demo.sh" | tee "$work/demo.log"
grep -q '^demo: done' "$work/demo.log" || fail "the demo did not finish"

echo "== purge"
dpkg --purge "${packages[@]}" >/dev/null || fail "dpkg --purge failed"
we_installed=0
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'not-installed' ||
    ! dpkg-query -W "$p" >/dev/null 2>&1 || fail "$p is still known to dpkg after the purge"
done
left=0
while IFS= read -r path; do
  [ -e "$path" ] || [ -L "$path" ] || continue
  # Directories shared with the rest of the system (/usr/bin, /usr/share/man/...) stay.
  if [ -d "$path" ] && [ ! -L "$path" ]; then
    dpkg -S "$path" >/dev/null 2>&1 && continue
    [ -n "$(ls -A "$path")" ] && continue
  fi
  echo "deb-test: left behind: $path" >&2
  left=1
done <"$work/owned"
[ "$left" = 0 ] || fail "the purge left files behind (above)"
echo "deb-test: packages built, lintian-clean, installed, demo passed, purged without a trace"
