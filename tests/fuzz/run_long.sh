#!/bin/bash
# run_long.sh - the long fuzz run: each target of tests/fuzz to at least
# RUNS executions (default 10,000,000), spread over JOBS libFuzzer jobs
# (default: the number of cores; each job runs RUNS/JOBS), from the seeds,
# sharing one corpus per target. Prints a table target/execs/time/exec/s/
# crashes; exits 1 if any target crashed (inputs under $OUT/artifacts/).
#
#   tests/fuzz/run_long.sh                     # from a checkout: build-fuzz/
#   RUNS=1000000 JOBS=2 TARGETS="pb h2" tests/fuzz/run_long.sh
#   ./run_long.sh                              # inside a bundle (bundle.sh)
#
# BIN (the fuzz_* binaries), SEEDS (corpus/<t>/), OUT (work dir, default
# ./fuzz-long) may be set; nice it on a shared machine. MAX_S (seconds,
# default 0: none) bounds each target's run: the jobs stop there and still
# print their counts, so a machine lent for a fixed time reports what it
# ran (a target short of RUNS then fails the table). ASAN_OPTIONS defaults to
# malloc_context_size=0: no allocation stack per malloc (+23% exec/s on
# fuzz_chunk); the checks are the same, and a crash's input, replayed with
# the build's own binary, gives the stacks.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -d "$here/bin" ]; then # a bundle
  BIN=${BIN:-$here/bin}
  SEEDS=${SEEDS:-$here/corpus}
  DICTS=$here
  export CTXD_FUZZ_VOCAB=${CTXD_FUZZ_VOCAB:-$here/ggml-vocab-gpt-2.gguf}
else
  BIN=${BIN:-$here/../../build-fuzz/tests/fuzz}
  SEEDS=${SEEDS:-$here/corpus}
  DICTS=$here
fi
RUNS=${RUNS:-10000000}
JOBS=${JOBS:-$(nproc)}
TARGETS=${TARGETS:-h2 pb chunk jsonl config}
OUT=${OUT:-$PWD/fuzz-long}
MAX_S=${MAX_S:-0}
export ASAN_OPTIONS=${ASAN_OPTIONS:-malloc_context_size=0}
per_job=$(( (RUNS + JOBS - 1) / JOBS ))
mkdir -p "$OUT"
rows=()
fail=0
for t in $TARGETS; do
  exe=$BIN/fuzz_$t
  [ -x "$exe" ] || { echo "run_long: no $exe (build with -DCTXD_FUZZ=ON)" >&2; exit 2; }
  work=$OUT/corpus/$t art=$OUT/artifacts/$t/ logs=$OUT/logs/$t
  mkdir -p "$work" "$art" "$logs"
  dict=()
  [ -f "$DICTS/$t.dict" ] && dict=(-dict="$DICTS/$t.dict")
  t0=$(date +%s.%N)
  # -jobs runs JOBS processes (each to per_job executions), JOBS at a time;
  # a job that crashes stops and leaves its input in artifacts/.
  (cd "$logs" && "$exe" -runs="$per_job" -max_total_time="$MAX_S" \
     -jobs="$JOBS" -workers="$JOBS" \
     -timeout=25 -rss_limit_mb=4096 -print_final_stats=1 \
     -artifact_prefix="$art" "${dict[@]}" "$work" "$SEEDS/$t" \
     >"$logs/main.log" 2>&1) || true
  t1=$(date +%s.%N)
  execs=$(cat "$logs"/fuzz-*.log 2>/dev/null |
          sed -n 's/^stat::number_of_executed_units: *//p' | awk '{s+=$1} END {print s+0}')
  crashes=$(find "$art" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", b - a}')
  rate=$(awk -v e="$execs" -v s="$secs" 'BEGIN {printf "%.0f", (s > 0 ? e / s : 0)}')
  [ "$crashes" -gt 0 ] && fail=1
  [ "$execs" -lt "$RUNS" ] && [ "$crashes" -eq 0 ] && fail=1
  rows+=("$(printf '%-8s %12s %8ss %10s %8s' "$t" "$execs" "$secs" "$rate" "$crashes")")
  printf 'run_long: %s done: %s execs in %ss, %s crashes\n' "$t" "$execs" "$secs" "$crashes" >&2
done
printf '%-8s %12s %9s %10s %8s\n' target execs time exec/s crashes
printf '%s\n' "${rows[@]}"
printf 'jobs=%s runs/job=%s cores=%s host=%s\n' "$JOBS" "$per_job" "$(nproc)" "$(hostname)"
exit $fail
