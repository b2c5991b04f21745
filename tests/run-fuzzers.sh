#!/bin/sh
# run-fuzzers.sh BUILD_DIR SECONDS: runs every fuzz_* binary in BUILD_DIR/bin for SECONDS,
# seeded from the reference vectors (tests/data) and its corpus directory. Fails on any crash.
set -eu
build=$1
seconds=$2
root=$(cd "$(dirname "$0")/.." && pwd)
status=0
for fuzzer in "$build"/bin/fuzz_*; do
  [ -x "$fuzzer" ] || continue
  name=$(basename "$fuzzer")
  corpus=$(mktemp -d)
  seeds="$root/fuzz/corpus/$name"
  [ -d "$seeds" ] && cp -r "$seeds"/. "$corpus"/
  case $name in
    fuzz_dumpfile) for f in "$root"/tests/data/composefs-c/*.dump; do cp "$f" "$corpus"/; done ;;
  esac
  echo "fuzz: $name for ${seconds}s"
  if ! "$fuzzer" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 \
      -artifact_prefix="$build/$name-" "$corpus" >"$build/$name.log" 2>&1; then
    echo "fuzz: $name FAILED, see $build/$name.log" >&2
    tail -40 "$build/$name.log" >&2
    status=1
  else
    grep -E '^(#[0-9]+|Done)' "$build/$name.log" | tail -1
  fi
  rm -rf "$corpus"
done
exit $status
