#!/bin/bash
# grpc_health.sh - unary gRPC throughput of ctxd next to a reference gRPC C++
# server, driven by the same h2load command.
#
# usage: tests/bench/grpc_health.sh [BUILD_DIR]       (default: ./build)
# env:   N (requests per run, 200000), C (connections, 100), M (streams per
#        connection, 10), RUNS (measured runs per server, 3), GET_N (requests
#        per Documents.Get run, 100000), SERVER_CPU (0), LOAD_CPU (1)
#
# What it does
#   1. builds tests/bench/grpc_ref/health_server.cc (Debian libgrpc++ 1.51,
#      callback API) into BUILD_DIR/bench-grpc-ref/ unless already up to date;
#   2. starts that server and ctxd (temporary data dir), both pinned to
#      SERVER_CPU with taskset, and pins h2load to LOAD_CPU;
#   3. Health.Check: one warm-up run against each, then RUNS measured runs,
#      alternating reference, ctxd, reference, ctxd ...;
#   4. after each load run, checks correctness over real gRPC: a grpcio
#      Health.Check must say SERVING and an `nghttp -v` capture of one call
#      must show a DATA frame followed by trailers with grpc-status: 0 (h2load
#      itself only sees the HTTP :status);
#   5. Documents.Get on a stored Brown Corpus sample (ctxd only; the reference
#      has no Documents service): id-only and with_text requests;
#   6. prints a table: req/s min/median/max per server and the ratio of the
#      ctxd median to the reference median, plus the pair-by-pair ratio.
#
# h2load command used for both servers (only PORT differs):
#   taskset -c 1 h2load -n N -c C -m M -t 1 \
#     http://127.0.0.1:PORT/grpc.health.v1.Health/Check -d req.bin \
#     -H 'content-type: application/grpc' -H 'te: trailers'
# where req.bin is the 5-byte-framed empty HealthCheckRequest (00 00000000).
#
# Caveat: on a 2-core machine "one core for the server, one for the load"
# is the best isolation available; anything else running (builds, other
# benchmarks) shows up as spread between min and max.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BENCH_NAME=grpc_health
# shellcheck source=benchlib.sh
. "$HERE/benchlib.sh"
REPO=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:-${CTXD_BUILD:-$REPO/build}}" && pwd)
N=${N:-200000}
C=${C:-100}
M=${M:-10}
RUNS=${RUNS:-3}
GET_N=${GET_N:-100000}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PY=${CTXD_PYTHON:-/usr/bin/python3}
export PYTHONPATH="$BUILD/python${PYTHONPATH:+:$PYTHONPATH}"
CTXD=${CTXD_BIN:-$BUILD/ctxd}

for tool in h2load protoc grpc_cpp_plugin pkg-config g++ taskset; do
  command -v "$tool" >/dev/null || { echo "grpc_health: $tool not found" >&2; exit 2; }
done
[ -x "$CTXD" ] || { echo "grpc_health: no ctxd at $CTXD (build first)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/ctxd-bench-health.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---------------------------------------------------------------- reference
REFDIR="$BUILD/bench-grpc-ref"
REF="$REFDIR/health_server"
SRC="$HERE/grpc_ref/health_server.cc"
PROTO="$REPO/proto/grpc/health/v1/health.proto"
if [ ! -x "$REF" ] || [ "$SRC" -nt "$REF" ] || [ "$PROTO" -nt "$REF" ]; then
  echo "building reference server -> $REF"
  mkdir -p "$REFDIR/gen"
  protoc -I "$REPO/proto" --cpp_out="$REFDIR/gen" --grpc_out="$REFDIR/gen" \
    --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" grpc/health/v1/health.proto
  # shellcheck disable=SC2046
  g++ -O2 -std=c++17 -I "$REFDIR/gen" "$SRC" \
    "$REFDIR/gen/grpc/health/v1/health.pb.cc" "$REFDIR/gen/grpc/health/v1/health.grpc.pb.cc" \
    $(pkg-config --cflags --libs grpc++ protobuf) -o "$REF.tmp"
  mv "$REF.tmp" "$REF"
fi

# ---------------------------------------------------------------- servers
taskset -c "$SERVER_CPU" "$REF" 127.0.0.1:0 2>"$WORK/ref.log" &
PIDS+=($!); REF_PID=$!
mkdir -p "$WORK/data"
taskset -c "$SERVER_CPU" "$CTXD" --listen 127.0.0.1:0 --data "$WORK/data" \
  2>"$WORK/ctxd.log" &
PIDS+=($!); CTXD_PID=$!
REF_ADDR=$(wait_addr "$WORK/ref.log" "$REF_PID")
CTXD_ADDR=$(wait_addr "$WORK/ctxd.log" "$CTXD_PID")
echo "reference (grpc++ $(pkg-config --modversion grpc++), callback API) at $REF_ADDR pid $REF_PID"
echo "ctxd $(timeout 5 "$CTXD" --version 2>&1 | head -1) at $CTXD_ADDR pid $CTXD_PID"

"$PY" "$HERE/grpc_check.py" frame-health "$WORK/health.bin"

# ---------------------------------------------------------------- checks
nghttp_check() {  # ADDR PATH REQFILE
  if nghttp_ok "$1" "$2" "$3"; then
    command -v nghttp >/dev/null && echo "  nghttp $2 -> DATA + trailers grpc-status: 0"
  else
    note_fail "nghttp $2: no DATA frame followed by grpc-status: 0"
  fi
  return 0
}

after_load_checks() {  # ADDR
  "$PY" "$HERE/grpc_check.py" health "$1" || note_fail "grpcio Health.Check at $1"
  nghttp_check "$1" /grpc.health.v1.Health/Check "$WORK/health.bin"
}

# ---------------------------------------------------------------- load
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
CTXD_SENT=0  # h2load requests that ctxd answered with HTTP 200

cpu_ticks() {  # PID -> utime+stime of all its threads, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}
TICK=$(getconf CLK_TCK)

run_load() {  # LABEL ADDR PATH REQFILE NREQ RECORD(0/1) PID
  local label=$1 addr=$2 path=$3 req=$4 n=$5 record=$6 pid=$7 out rps ok t0 t1 us
  t0=$(cpu_ticks "$pid")
  out=$(taskset -c "$LOAD_CPU" h2load -n "$n" -c "$C" -m "$M" -t 1 "http://$addr$path" \
        -d "$req" -H 'content-type: application/grpc' -H 'te: trailers' 2>&1) || true
  t1=$(cpu_ticks "$pid")
  # server CPU time per call (user+system, all threads), in microseconds
  us=$(awk -v a="$t0" -v b="$t1" -v n="$n" -v hz="$TICK" 'BEGIN{printf "%.1f", (b-a)/hz*1e6/n}')
  rps=$(echo "$out" | sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p')
  ok=$(echo "$out" | sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p')
  local s2xx
  s2xx=$(echo "$out" | sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p')
  if [ -z "$rps" ] || [ "${ok:-0}" != "$n" ] || [ "${s2xx:-0}" != "$n" ]; then
    note_fail "$label: h2load did not complete $n requests with HTTP 200"
    echo "$out" | grep -E 'finished|requests:|status codes' | sed 's/^/    /'
    rps=${rps:-0}
  fi
  printf '  %-22s %10s req/s  (%s/%s ok, server %s us CPU/call)\n' "$label" "$rps" "${ok:-0}" "$n" "$us"
  [ "$record" = 1 ] && printf '%s\t%s\t%s\n' "$label" "$rps" "$us" >>"$RESULTS"
  [ "$pid" = "$CTXD_PID" ] && CTXD_SENT=$((CTXD_SENT + ${ok:-0}))
  return 0
}

HPATH=/grpc.health.v1.Health/Check
echo
echo "== Health.Check: h2load -n $N -c $C -m $M -t 1 (server on cpu $SERVER_CPU, h2load on cpu $LOAD_CPU)"
echo "warm-up"
run_load reference "$REF_ADDR" $HPATH "$WORK/health.bin" "$N" 0 "$REF_PID"
run_load ctxd "$CTXD_ADDR" $HPATH "$WORK/health.bin" "$N" 0 "$CTXD_PID"
for r in $(seq 1 "$RUNS"); do
  echo "run $r"
  run_load reference "$REF_ADDR" $HPATH "$WORK/health.bin" "$N" 1 "$REF_PID"
  after_load_checks "$REF_ADDR"
  run_load ctxd "$CTXD_ADDR" $HPATH "$WORK/health.bin" "$N" 1 "$CTXD_PID"
  after_load_checks "$CTXD_ADDR"
done

echo
echo "== Documents.Get on a stored document (ctxd only): h2load -n $GET_N -c $C -m $M -t 1"
DOC_BYTES=$("$PY" "$HERE/grpc_check.py" prepare-get "$CTXD_ADDR" bench-get-doc "$WORK/get") ||
  { note_fail "could not store the Get document"; DOC_BYTES=0; }
GPATH=/ctxd.v1.Documents/Get
if [ "$DOC_BYTES" != 0 ]; then
  run_load "ctxd Get (warm-up)" "$CTXD_ADDR" $GPATH "$WORK/get.meta.bin" "$GET_N" 0 "$CTXD_PID"
  for r in $(seq 1 "$RUNS"); do
    run_load "ctxd Get id-only" "$CTXD_ADDR" $GPATH "$WORK/get.meta.bin" "$GET_N" 1 "$CTXD_PID"
    run_load "ctxd Get with_text" "$CTXD_ADDR" $GPATH "$WORK/get.text.bin" "$GET_N" 1 "$CTXD_PID"
  done
  "$PY" "$HERE/grpc_check.py" get "$CTXD_ADDR" bench-get-doc "$DOC_BYTES" ||
    note_fail "grpcio Documents.Get after load"
  nghttp_check "$CTXD_ADDR" $GPATH "$WORK/get.text.bin"
fi

# ---------------------------------------------------------------- server-side view
kill -0 "$CTXD_PID" 2>/dev/null || note_fail "ctxd died during the benchmark"
if grep -a -E '^(error|fatal)' "$WORK/ctxd.log" >/dev/null 2>&1; then
  echo "ctxd logged errors:"; grep -a -E '^(error|fatal)' "$WORK/ctxd.log" | head -5
fi
echo "ctxd: $(grep -E '^(VmHWM|RssAnon)' /proc/"$CTXD_PID"/status | tr -s ' \t' ' ' | tr '\n' ' ')"

# ctxd logs its call counters when it stops: every call must have ended with
# grpc-status 0 (ok == calls) and it must have seen at least every request
# h2load counted (the grpcio/nghttp checks add a few more).
kill -TERM "$CTXD_PID" 2>/dev/null || true
rc=0; wait "$CTXD_PID" || rc=$?
[ "$rc" = 0 ] || note_fail "ctxd exit code $rc after SIGTERM"
STOPPED=$(grep -a 'msg=stopped' "$WORK/ctxd.log" | tail -1 || true)
if [ -n "$STOPPED" ]; then
  calls=$(echo "$STOPPED" | sed -n 's/.* calls=\([0-9]*\).*/\1/p')
  okc=$(echo "$STOPPED" | sed -n 's/.* ok=\([0-9]*\).*/\1/p')
  echo "ctxd counters at stop: ${STOPPED#*msg=stopped }; h2load got $CTXD_SENT HTTP 200s"
  if [ -z "$calls" ] || [ "$calls" != "$okc" ]; then
    note_fail "ctxd counted calls=$calls but ok=$okc (some calls ended with a non-zero grpc-status)"
  elif [ "$okc" -lt "$CTXD_SENT" ]; then
    note_fail "ctxd counted ok=$okc calls, fewer than the $CTXD_SENT h2load completed"
  fi
else
  echo "ctxd logged no 'msg=stopped' counters line (grpc-status not cross-checked by count)"
fi

# ---------------------------------------------------------------- table
echo
"$PY" - "$RESULTS" "$DOC_BYTES" <<'EOF'
import statistics, sys
rows = {}
cpu = {}
order = []
for line in open(sys.argv[1]):
    k, v, us = line.rstrip("\n").split("\t")
    if k not in rows:
        rows[k] = []
        cpu[k] = []
        order.append(k)
    rows[k].append(float(v))
    cpu[k].append(float(us))
doc_bytes = int(sys.argv[2])
def mmm(xs):
    return min(xs), statistics.median(xs), max(xs)
print("%-30s %10s %10s %10s %5s %14s" % ("unary gRPC calls/s", "min", "median", "max",
                                         "runs", "server us/call"))
for k in order:
    lo, md, hi = mmm(rows[k])
    label = k
    if k.endswith("with_text"):
        label = k + " (%.1f KB)" % (doc_bytes / 1000.0)
    print("%-30s %10.0f %10.0f %10.0f %5d %14.1f" % (label, lo, md, hi, len(rows[k]),
                                                  statistics.median(cpu[k])))
if "reference" in rows and "ctxd" in rows:
    ref, ctx = rows["reference"], rows["ctxd"]
    pairs = [c / r for c, r in zip(ctx, ref) if r > 0]
    print()
    print("Health.Check ctxd/reference: %.2f (median/median); pair-by-pair %s"
          % (statistics.median(ctx) / statistics.median(ref),
             " ".join("%.2f" % p for p in pairs)))
    print("server CPU per Health.Check: ctxd %.1f us, reference %.1f us (medians)"
          % (statistics.median(cpu["ctxd"]), statistics.median(cpu["reference"])))
    print("target: ctxd >= reference -> %s" %
          ("MET" if statistics.median(ctx) >= statistics.median(ref) else "NOT MET"))
EOF
echo
if [ "$FAILS" -gt 0 ]; then
  echo "grpc_health: $FAILS correctness check(s) FAILED"
  exit 1
fi
echo "grpc_health: all correctness checks passed"
