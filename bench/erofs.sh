#!/bin/sh
# bench/erofs.sh: dumpfile -> image and image -> dumpfile, cfs against C composefs, in one run.
#
#   C_TOOLS=/path/to/composefs/build/tools bench/erofs.sh [BUILD_DIR]
#
# C_TOOLS must hold mkcomposefs and composefs-info built from composefs C (1.0.8); cfs's are
# taken from BUILD_DIR/bin (default build/bin). Inputs: the cs9-x86_64-developer reference
# dumpfile (64k entries) and a generated 1,000,000-entry dumpfile (bench/gen-dumpfile.py).
# Prints wall time and peak RSS (GNU time) for each, and the cfs/C ratios. Every image pair
# is also compared byte for byte: a benchmark of wrong output is worthless.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${1:-$root/build}/bin" && pwd)
: "${C_TOOLS:?set C_TOOLS to the directory holding C mkcomposefs and composefs-info}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

zcat "$root/tests/data/composefs-c/cs9-x86_64-developer.dump.gz" >"$work/cs9.dump"
python3 "$root/bench/gen-dumpfile.py" 1000000 >"$work/gen1m.dump"

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
for input in cs9 gen1m; do
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
done
echo "ratios are cfs/C: below 1.00x means cfs is faster / smaller"
