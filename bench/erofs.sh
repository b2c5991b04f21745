#!/bin/sh
# bench/erofs.sh: dumpfile -> image and image -> dumpfile, cfs against C composefs, in one run.
#
#   C_TOOLS=/path/to/composefs/build/tools bench/erofs.sh [BUILD_DIR]
#
# C_TOOLS must hold mkcomposefs and composefs-info built from composefs C (1.0.8), optimised:
#   meson setup -Dbuildtype=release BUILD && ninja -C BUILD   (then C_TOOLS=BUILD/tools)
# A debug C build is several times slower, so the script prints the C build it compares
# against (version, meson buildtype, library) before the numbers. cfs's tools are taken from
# BUILD_DIR/bin (default build/bin). Inputs: the cs9-x86_64-developer reference dumpfile
# (64k entries), a generated 1,000,000-entry dumpfile (bench/gen-dumpfile.py) and a generated
# inline-heavy one, 300,000 entries and ~470 MB of inline content and xattrs
# (bench/gen-inline-dumpfile.py). Prints wall time and peak RSS (GNU time) for each, and the
# cfs/C ratios. Every image pair is also compared byte for byte: a benchmark of wrong output
# is worthless. `cfsctl dump` is timed too where it can read the image (it refuses redirects
# that are not object paths, as the cs9 dumpfile has).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${1:-$root/build}/bin" && pwd)
: "${C_TOOLS:?set C_TOOLS to the directory holding C mkcomposefs and composefs-info}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Which C build: version, buildtype and optimisation from meson's introspection data when
# C_TOOLS is a meson build directory's tools/, and the libcomposefs the tools load.
c_build=$(cd "$C_TOOLS/.." && pwd)
c_desc="unknown build (no meson-info next to C_TOOLS)"
if [ -f "$c_build/meson-info/intro-buildoptions.json" ]; then
  c_desc=$(python3 - "$c_build/meson-info" <<'PY'
import json, sys
info = sys.argv[1]
opts = {o["name"]: o["value"] for o in json.load(open(info + "/intro-buildoptions.json"))}
proj = json.load(open(info + "/intro-projectinfo.json"))
print(f"composefs {proj.get('version')}, meson buildtype={opts.get('buildtype')} "
      f"optimization={opts.get('optimization')} debug={opts.get('debug')}")
PY
)
fi
c_lib=$(ldd "$C_TOOLS/mkcomposefs" 2>/dev/null | awk '$1 ~ /^libcomposefs/ {print $3; exit}')
echo "C build: $C_TOOLS: $c_desc; libcomposefs: ${c_lib:-linked statically}"
case $c_desc in
*buildtype=release*) ;;
*) echo "warning: the C tools are not a meson buildtype=release build; ratios are not comparable" >&2 ;;
esac

zcat "$root/tests/data/composefs-c/cs9-x86_64-developer.dump.gz" >"$work/cs9.dump"
python3 "$root/bench/gen-dumpfile.py" 1000000 >"$work/gen1m.dump"
python3 "$root/bench/gen-inline-dumpfile.py" 300000 >"$work/inline.dump"
echo "inputs: cs9 $(wc -l <"$work/cs9.dump") entries, gen1m $(wc -l <"$work/gen1m.dump") entries," \
  "inline $(wc -l <"$work/inline.dump") entries / $(($(stat -c %s "$work/inline.dump") / 1048576)) MiB"

# measure LABEL CMD...: runs CMD 3 times, keeps the fastest; prints "seconds kilobytes".
measure() {
  best=""
  for _ in 1 2 3; do
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null
    t=$(cut -d' ' -f1 "$work/time")
    m=$(cut -d' ' -f2 "$work/time")
    if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; mem=$m; fi
  done
  echo "$best $mem"
}

printf '%-28s %10s %10s %10s %10s %8s %8s\n' case "C s" "cfs s" "C MiB" "cfs MiB" "time" "memory"
for input in cs9 gen1m inline; do
  set -- $(measure "$C_TOOLS/mkcomposefs" --from-file "$work/$input.dump" "$work/$input.c.img")
  ct=$1 cm=$2
  set -- $(measure "$bin/mkcomposefs" --from-file "$work/$input.dump" "$work/$input.cfs.img")
  ft=$1 fm=$2
  cmp "$work/$input.c.img" "$work/$input.cfs.img" || { echo "images differ for $input" >&2; exit 1; }
  awk -v n="$input: dump -> image" -v ct="$ct" -v ft="$ft" -v cm="$cm" -v fm="$fm" 'BEGIN{
    printf "%-28s %10.2f %10.2f %10.1f %10.1f %7.2fx %7.2fx\n", n, ct, ft, cm/1024, fm/1024, ft/ct, fm/cm}'

  set -- $(measure "$C_TOOLS/composefs-info" dump "$work/$input.c.img")
  ct=$1 cm=$2
  set -- $(measure "$bin/composefs-info" dump "$work/$input.c.img")
  ft=$1 fm=$2
  "$C_TOOLS/composefs-info" dump "$work/$input.c.img" >"$work/c.txt"
  "$bin/composefs-info" dump "$work/$input.c.img" >"$work/cfs.txt"
  cmp "$work/c.txt" "$work/cfs.txt" >/dev/null || echo "note: dump text differs from C for $input (xattr order)" >&2
  awk -v n="$input: image -> dump" -v ct="$ct" -v ft="$ft" -v cm="$cm" -v fm="$fm" 'BEGIN{
    printf "%-28s %10.2f %10.2f %10.1f %10.1f %7.2fx %7.2fx\n", n, ct, ft, cm/1024, fm/1024, ft/ct, fm/cm}'

  if "$bin/cfsctl" dump "$work/$input.c.img" >/dev/null 2>&1; then
    set -- $(measure "$bin/cfsctl" dump "$work/$input.c.img")
    ft=$1 fm=$2
    awk -v n="$input: cfsctl dump" -v ct="$ct" -v ft="$ft" -v cm="$cm" -v fm="$fm" 'BEGIN{
      printf "%-28s %10.2f %10.2f %10.1f %10.1f %7.2fx %7.2fx\n", n, ct, ft, cm/1024, fm/1024, ft/ct, fm/cm}'
  else
    echo "$input: cfsctl dump refuses this image (not cfs-style object paths); not timed"
  fi
  rm -f "$work/$input.c.img" "$work/$input.cfs.img" "$work/c.txt" "$work/cfs.txt"
done
echo "ratios are cfs/C: below 1.00x means cfs is faster / smaller"
