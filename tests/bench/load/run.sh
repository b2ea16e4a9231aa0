#!/bin/bash
# run.sh - the load campaign's full run: the gRPC-aware driver (ctxd_load)
# against one ctxd over a prepared Brown Corpus collection, then h2load on
# unary Search for comparison, then the bad-actor run (slow readers and
# cancellers beside the measured clients, both phases in one run).
#
# usage: tests/bench/load/run.sh [BUILD_DIR]          (default: ./build)
# env:   CONNS (200) STREAMS (20) DURATION (60) DOCS (200 Brown samples)
#        MIX (put=5,search=60,bm25=30,model=5) H2_S (h2load seconds, 30)
#        BAD_CONNS (100) BAD_STREAMS (10) SLOW (20) CANCEL (20)
#        NICE (10: the driver's and h2load's nice level)
# Needs: a built tree (ctxd, ctxd_load), h2load (nghttp2-client), the Brown
# Corpus (`npm ci` in tests/bench). The load average is printed with each
# table: on a shared machine the figures depend on it.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BENCH_NAME=load
# shellcheck source=../benchlib.sh
. "$HERE/../benchlib.sh"
REPO=$(cd "$HERE/../../.." && pwd)
BUILD=$(cd "${1:-${CTXD_BUILD:-$REPO/build}}" && pwd)
CONNS=${CONNS:-200}
STREAMS=${STREAMS:-20}
DURATION=${DURATION:-60}
DOCS=${DOCS:-200}
MIX=${MIX:-put=5,search=60,bm25=30,model=5}
H2_S=${H2_S:-30}
BAD_CONNS=${BAD_CONNS:-100}
BAD_STREAMS=${BAD_STREAMS:-10}
SLOW=${SLOW:-20}
CANCEL=${CANCEL:-20}
NICE=${NICE:-10}
CTXD=${CTXD_BIN:-$BUILD/ctxd}
LOAD=${CTXD_LOAD_BIN:-$BUILD/tests/ctxd_load}

command -v h2load >/dev/null || { echo "load: h2load not found (nghttp2-client)" >&2; exit 2; }
[ -x "$CTXD" ] || { echo "load: no ctxd at $CTXD (build first)" >&2; exit 2; }
[ -x "$LOAD" ] || { echo "load: no ctxd_load at $LOAD (make ctxd_load)" >&2; exit 2; }

bench_workdir
/usr/bin/python3 "$HERE/prep_brown.py" "$WORK/brown.txt"
start_ctxd "$CTXD"
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
echo "ctxd pid $DPID at $ADDR; $(nproc) CPUs; load average before: $(loadavg)"

echo
echo "== 1. mixed load: $CONNS connections x $STREAMS streams, $DURATION s, mix $MIX"
nice -n "$NICE" "$LOAD" --addr "$ADDR" --corpus "$WORK/brown.txt" --max-docs "$DOCS" \
  --prepare --conns "$CONNS" --streams "$STREAMS" --duration "$DURATION" --warmup 5 \
  --mix "$MIX" 2> "$WORK/driver1.err" || note_fail "mixed load: errors or stalls"
grep -v '^row \|^summary' "$WORK/driver1.err" || true
echo "load average after: $(loadavg)"

echo
echo "== 2. h2load, unary Search (the same query every call), $CONNS connections x $STREAMS streams"
"$LOAD" --corpus "$WORK/brown.txt" --max-docs "$DOCS" --write-search "$WORK/search.bin"
h2() { # SECONDS REQFILE PATH: timed run after a 5 s warm-up
  nice -n "$NICE" h2load -D "$1" --warm-up-time 5 -c "$CONNS" -m "$STREAMS" -t 1 -d "$2" \
    -H 'content-type: application/grpc' -H 'te: trailers' "http://$ADDR$3" 2>&1 |
    grep -E '^finished in|^requests:|^status codes:|time for request:'
}
h2 "$H2_S" "$WORK/search.bin" /ctxd.v1.Retrieval/Search
echo "load average after: $(loadavg)"
echo "-- ctxd_load, the same connections and streams, Search only ($H2_S s + 5 s warm-up)"
nice -n "$NICE" "$LOAD" --addr "$ADDR" --corpus "$WORK/brown.txt" --max-docs "$DOCS" \
  --conns "$CONNS" --streams "$STREAMS" --duration "$((H2_S + 5))" --warmup 5 \
  --mix search=1 2> /dev/null | grep -E '^search|^connection' || note_fail "Search-only run"
echo "load average after: $(loadavg)"
echo "-- h2load on a request every call of which fails (a truncated protobuf:"
echo "   INVALID_ARGUMENT in grpc-status, HTTP 200): h2load still counts successes"
printf '\0\0\0\0\3\x0a\x05a' > "$WORK/bad.bin"
h2 10 "$WORK/bad.bin" /ctxd.v1.Retrieval/Search

echo
B0=$((DURATION / 3))
B1=$((2 * DURATION / 3))
echo "== 3. bad actors: $BAD_CONNS measured connections x $BAD_STREAMS streams for $DURATION s;"
echo "   from $B0 s to $B1 s also $SLOW connections that never read"
echo "   ($((SLOW * 20)) Searches with 50 hits of text each, window left full) and $CANCEL that reset"
echo "   their calls within 50 ms (half mid-message) and drop the connection every 50 calls,"
echo "   from a second driver process (so the measured clients' driver does not share a"
echo "   thread with them); phase 'bad' = calls started in that window"
nice -n "$NICE" "$LOAD" --addr "$ADDR" --corpus "$WORK/brown.txt" --max-docs "$DOCS" \
  --conns 0 --duration "$DURATION" --slow "$SLOW" --cancel "$CANCEL" \
  --bad-window "$B0,$B1" --seed 4 > "$WORK/bad.out" 2>&1 &
BADPID=$!
nice -n "$NICE" "$LOAD" --addr "$ADDR" --corpus "$WORK/brown.txt" --max-docs "$DOCS" \
  --conns "$BAD_CONNS" --streams "$BAD_STREAMS" --duration "$DURATION" --warmup 5 \
  --mix "$MIX" --bad-window "$B0,$B1" --seed 2 \
  2> "$WORK/driver3.err" || note_fail "bad-actor run: measured errors or stalls"
grep -v '^row \|^summary' "$WORK/driver3.err" || true
wait "$BADPID" || true
grep '^connection' "$WORK/bad.out" | sed 's/^/bad actors: /'
echo "load average after: $(loadavg)"

kill -0 "$DPID" 2>/dev/null || note_fail "ctxd died (log: $WORK/ctxd.log)"
grep -E 'level=(error|fatal)|Sanitizer' "$WORK/ctxd.log" | head -5 || true
[ "$FAILS" = 0 ] || { echo "load: $FAILS failure(s)"; exit 1; }
