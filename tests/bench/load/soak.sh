#!/bin/bash
# soak.sh - 10 minutes of mixed load on one ctxd, sampling its resident
# memory and open file descriptors every second (from /proc and, beside
# them, from its metrics endpoint), then a TSV, a PNG plot and a pass/fail
# check that both stay flat (soak_sample.py judge: the last minute's median
# RSS within RSS_TOL % of the second minute's; fds the same; fds back to the
# idle baseline once the clients have left).
#
# usage: tests/bench/load/soak.sh [BUILD_DIR]          (default: ./build)
# env:   SOAK_S (600) CONNS (100) STREAMS (10) DOCS (200)
#        MIX (put=5,search=60,bm25=30,model=5) SLOW (5) CANCEL (10)
#        RSS_TOL (10, percent) FD_TOL (0) NICE (10)
#        OUT (tests/bench/load: soak.tsv, soak.png, soak.txt there)
#        KEEP=1 keeps the work directory (ctxd.log, driver.err) for a post
#        mortem; CTXD_ARGS adds daemon options (e.g. "--log.level debug")
# The load: CONNS x STREAMS measured calls in flight for SOAK_S seconds;
# from the first to the last minute also SLOW connections that never read
# and CANCEL that reset calls and drop their connections every 50 calls.
# 10 s idle before (the baseline) and 30 s idle after. Puts replace 200
# ids, so the store reaches a steady size. Model selections use one thread
# (--model.threads 1), at most one at a time.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BENCH_NAME=soak
# shellcheck source=../benchlib.sh
. "$HERE/../benchlib.sh"
REPO=$(cd "$HERE/../../.." && pwd)
BUILD=$(cd "${1:-${CTXD_BUILD:-$REPO/build}}" && pwd)
SOAK_S=${SOAK_S:-600}
CONNS=${CONNS:-100}
STREAMS=${STREAMS:-10}
DOCS=${DOCS:-200}
MIX=${MIX:-put=5,search=60,bm25=30,model=5}
SLOW=${SLOW:-5}
CANCEL=${CANCEL:-10}
RSS_TOL=${RSS_TOL:-10}
FD_TOL=${FD_TOL:-0}
NICE=${NICE:-10}
OUT=${OUT:-$HERE}
CTXD=${CTXD_BIN:-$BUILD/ctxd}
LOAD=${CTXD_LOAD_BIN:-$BUILD/tests/ctxd_load}
PY=/usr/bin/python3

[ -x "$CTXD" ] || { echo "soak: no ctxd at $CTXD (build first)" >&2; exit 2; }
[ -x "$LOAD" ] || { echo "soak: no ctxd_load at $LOAD (make ctxd_load)" >&2; exit 2; }
if ! "$PY" -c 'import matplotlib' 2>/dev/null; then
  echo "soak: installing python3-matplotlib for the plot"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -q python3-matplotlib >/dev/null || true
  else sudo -n apt-get install -y -q python3-matplotlib >/dev/null || true; fi
  "$PY" -c 'import matplotlib' 2>/dev/null || echo "soak: no matplotlib: the check runs, no plot"
fi

bench_workdir
"$PY" "$HERE/prep_brown.py" "$WORK/brown.txt"
# shellcheck disable=SC2086 # CTXD_ARGS: options split on spaces
start_ctxd "$CTXD" --model.threads 1 ${CTXD_ARGS:-}
echo idle-before > "$WORK/state"
"$PY" "$HERE/soak_sample.py" sample "$DPID" "$MADDR" "$OUT/soak.tsv" "$WORK/state" &
SPID=$!
BENCH_PIDS+=("$SPID")
LA0=$(cut -d' ' -f1-3 /proc/loadavg)
sleep 10
echo load > "$WORK/state"
BAD_TO=$((SOAK_S > 120 ? SOAK_S - 60 : SOAK_S))
nice -n "$NICE" "$LOAD" --addr "$ADDR" --corpus "$WORK/brown.txt" --max-docs "$DOCS" \
  --prepare --conns "$CONNS" --streams "$STREAMS" --duration "$SOAK_S" --warmup 5 \
  --mix "$MIX" --slow "$SLOW" --cancel "$CANCEL" --bad-window "60,$BAD_TO" --seed 3 \
  > "$WORK/driver.out" 2> "$WORK/driver.err" ||
  { note_fail "driver: measured errors or stalls"; grep -v "^row" "$WORK/driver.err" | tail -5; }
LA1=$(cut -d' ' -f1-3 /proc/loadavg)
echo idle-after > "$WORK/state"
sleep 30
echo done > "$WORK/state"
wait "$SPID" || true
kill -0 "$DPID" 2>/dev/null || note_fail "ctxd died (log: $WORK/ctxd.log)"
{
  echo "soak: $SOAK_S s, $CONNS connections x $STREAMS streams, mix $MIX, $SLOW slow readers"
  echo "and $CANCEL cancellers from 60 s to $BAD_TO s; load average $LA0 before, $LA1 at the end"
  cat "$WORK/driver.out"
  "$PY" "$HERE/soak_sample.py" judge "$OUT/soak.tsv" "$OUT/soak.png" "$RSS_TOL" "$FD_TOL" ||
    echo "soak: FAIL (flatness)"
} | tee "$OUT/soak.txt"
grep -q 'soak: FAIL' "$OUT/soak.txt" && FAILS=$((FAILS + 1))
grep -E 'level=(error|fatal)' "$WORK/ctxd.log" | head -5 || true
[ "$FAILS" = 0 ] || { echo "soak: $FAILS failure(s)"; exit 1; }
echo "soak: pass"
