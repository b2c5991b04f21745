#!/bin/bash
# fuzz/campaign.sh: long fuzzing campaigns, the ones docs/RELIABILITY.md reports.
#
#   fuzz/campaign.sh BUILD_DIR WORK_DIR SECONDS JOBS [TARGET...]
#
# Runs each fuzz_* target of BUILD_DIR/bin (or the TARGETs named) for SECONDS, JOBS of them at
# a time, at nice 19 so builds and tests on the same machine keep priority. Each target keeps
# its corpus in WORK_DIR/<target>/corpus (seeded from fuzz/corpus and, for fuzz_dumpfile, the
# composefs C dumpfiles) and its crash inputs in WORK_DIR/<target>/; a second campaign in the
# same WORK_DIR resumes from the corpus. Prints one table row per target: wall time,
# executions, coverage (edges / features) at the start and the end, corpus size, crashes.
set -euo pipefail
[ $# -ge 4 ] || { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "$1/bin" && pwd)
work=$2
seconds=$3
jobs=$4
shift 4
mkdir -p "$work"
work=$(cd "$work" && pwd)
targets=("$@")
if [ ${#targets[@]} = 0 ]; then
  for f in "$bin"/fuzz_*; do [ -x "$f" ] && targets+=("$(basename "$f")"); done
fi

campaign() { # target
  local name=$1 dir=$work/$1
  mkdir -p "$dir/corpus"
  [ -d "$root/fuzz/corpus/$name" ] && cp -rn "$root/fuzz/corpus/$name/." "$dir/corpus/"
  if [ "$name" = fuzz_dumpfile ]; then
    cp -n "$root"/tests/data/composefs-c/*.dump "$dir/corpus/" 2>/dev/null || true
  fi
  local start rc=0
  start=$(date +%s)
  nice -n 19 "$bin/$name" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$dir/" "$dir/corpus" >"$dir/log" 2>&1 &
  local pid=$!
  # With scheduler autogroups, nice only ranks processes of one session against each other:
  # lowering the group's own weight is what leaves other work its CPU.
  echo 19 >"/proc/$pid/autogroup" 2>/dev/null || true
  wait "$pid" || rc=$?
  echo "$rc $(($(date +%s) - start))" >"$dir/result"
}

running=0
for t in "${targets[@]}"; do
  [ -x "$bin/$t" ] || { echo "campaign: $bin/$t not found" >&2; exit 2; }
  campaign "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

printf '| Target | Wall time | Executions | Coverage at start → end (edges / features) | Corpus | Crashes |\n'
printf '|---|---|---|---|---|---|\n'
status=0
for t in "${targets[@]}"; do
  dir=$work/$t
  read -r rc wall <"$dir/result"
  inited=$(grep -m 1 -oE 'INITED cov: [0-9]+ ft: [0-9]+' "$dir/log" | awk '{ print $3 " / " $5 }')
  last=$(grep -E '^#[0-9]+' "$dir/log" | tail -n 1)
  final=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' <<<"$last" | awk '{ print $2 " / " $4 }')
  corpus=$(grep -oE 'corp: [0-9]+' <<<"$last" | awk '{ print $2 }')
  execs=$(grep -oE 'number_of_executed_units: [0-9]+' "$dir/log" | awk '{ print $2 }')
  crashes=$(ls "$dir" | grep -cE '^(crash|leak|timeout|oom|slow-unit)-' || true)
  [ "$rc" = 0 ] || status=1
  printf '| `%s` | %s s | %s | %s → %s | %s | %s |\n' "$t" "$wall" "${execs:-?}" "${inited:-?}" \
    "${final:-?}" "${corpus:-?}" "$crashes"
done
exit $status
