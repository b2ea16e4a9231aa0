#!/bin/bash
# put_unary.sh - unary Documents.Put throughput and latency with group commit
# (default store.group_commit_docs = 1024) next to one transaction per Put
# (--store.group_commit_docs 1, the behaviour before group commit), in the
# same run, alternating.
#
# usage: tests/bench/put_unary.sh [BUILD_DIR]          (default: ./build)
# env:   N (Puts per concurrent run, 3000), C (connections, 16), M (streams
#        per connection, 4), LAT_N (Puts per latency run, 1000), RUNS
#        (measured runs per server and load, 5), ID (document id in the
#        request: empty = the server generates a UUIDv4 per Put, so every
#        Put inserts a new document; any other value makes every Put an
#        upsert of that one id), DATA_ROOT (where the data directories go;
#        default BUILD_DIR/bench-put-data, which must be on a real disk so
#        that fsync costs what it costs), SERVER_CPU (0), LOAD_CPU (1)
#
# What it does
#   1. writes put.bin: a 5-byte-framed PutRequest of about 1.8 KB of text
#      (the first ~1.8 KB of a Brown Corpus sample, or generated prose when
#      the corpus is not installed) with id $ID, using the stubs in
#      BUILD_DIR/python;
#   2. starts two ctxd, each with its own data directory under DATA_ROOT,
#      both pinned to SERVER_CPU: "group" (defaults) and "alone"
#      (--store.group_commit_docs 1);
#   3. one warm-up run each, then RUNS rounds of
#        h2load -n N -c C -m M -t 1      (C x M concurrent calls)
#        h2load -n LAT_N -c 1 -m 1 -t 1  (one call at a time: latency)
#      alternating group, alone, group, alone, h2load pinned to LOAD_CPU;
#   4. checks correctness: every h2load request got HTTP 200; after each
#      run an `nghttp -v` Put shows DATA then trailers with grpc-status: 0;
#      at the end, over grpcio, Stats.documents equals the Puts made (with
#      generated ids) and Verify is ok, and each ctxd's call counters at
#      SIGTERM say every call ended with grpc-status 0;
#   5. prints calls/s min/median/max per server and load, mean latency of
#      the one-at-a-time runs, and the group/alone ratios.
#
# h2load command (only PORT and the load differ):
#   taskset -c 1 h2load -n 3000 -c 16 -m 4 -t 1 \
#     http://127.0.0.1:PORT/ctxd.v1.Documents/Put -d put.bin \
#     -H 'content-type: application/grpc' -H 'te: trailers'
#
# With a fixed ID every concurrent Put names the same document: those must
# commit one after another (the last write wins), so group commit cannot
# merge them and both servers run at about the same rate.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BENCH_NAME=put_unary
# shellcheck source=benchlib.sh
. "$HERE/benchlib.sh"
REPO=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:-${CTXD_BUILD:-$REPO/build}}" && pwd)
N=${N:-3000}
C=${C:-16}
M=${M:-4}
LAT_N=${LAT_N:-1000}
RUNS=${RUNS:-5}
ID=${ID:-}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
DATA_ROOT=${DATA_ROOT:-$BUILD/bench-put-data}
PY=${CTXD_PYTHON:-/usr/bin/python3}
export PYTHONPATH="$BUILD/python:$HERE${PYTHONPATH:+:$PYTHONPATH}"
CTXD=${CTXD_BIN:-$BUILD/ctxd}

for tool in h2load taskset; do
  command -v "$tool" >/dev/null || { echo "put_unary: $tool not found" >&2; exit 2; }
done
[ -x "$CTXD" ] || { echo "put_unary: no ctxd at $CTXD (build first)" >&2; exit 2; }

mkdir -p "$DATA_ROOT"
WORK=$(mktemp -d "$DATA_ROOT/run.XXXXXX")
FSTYPE=$(stat -f -c %T "$WORK")
if [ "$FSTYPE" = tmpfs ] || [ "$FSTYPE" = ramfs ]; then
  echo "put_unary: WARNING: $WORK is on $FSTYPE: fsync is free there, the" \
       "figures say nothing about a disk" >&2
fi
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---------------------------------------------------------------- request
"$PY" - "$WORK/put.bin" "$ID" <<'EOF'
import random, sys
import benchlib, grpc_check
s = benchlib.load_stubs()
pb = s["documents_pb2"]
try:
    text = benchlib.brown_documents()[0][1]
    src = "Brown Corpus sample"
except Exception:  # corpus not installed: prose-like filler
    rng = random.Random(1)
    words = ("the of and to a in that is was he for it with as his on be at by "
             "retrieval context window document segment budget token question "
             "answer river mountain").split()
    text = " ".join(rng.choice(words) for _ in range(2000))
    src = "generated text"
cut = text.rfind(" ", 0, 1800)
text = text[:cut if cut > 0 else 1800]
msg = pb.PutRequest(document=pb.Document(id=sys.argv[2], text=text)).SerializeToString()
with open(sys.argv[1], "wb") as f:
    f.write(grpc_check.framed(msg))
print("put.bin: PutRequest of %d bytes (%d bytes of %s), id %s" % (
    len(msg), len(text.encode()), src, repr(sys.argv[2]) if sys.argv[2] else
    "empty (server-generated, a new document per Put)"))
EOF

# ---------------------------------------------------------------- servers
start_ctxd() {  # NAME EXTRA-ARGS... ; sets ADDR_<NAME>, PID_<NAME>
  local name=$1
  shift
  mkdir -p "$WORK/$name"
  taskset -c "$SERVER_CPU" "$CTXD" --listen 127.0.0.1:0 --data "$WORK/$name" "$@" \
    2>"$WORK/$name.log" &
  local pid=$!
  PIDS+=("$pid")
  eval "PID_$name=$pid"
  eval "ADDR_$name=$(wait_addr "$WORK/$name.log" "$pid")"
}
start_ctxd group
start_ctxd alone --store.group_commit_docs 1
# shellcheck disable=SC2154
echo "ctxd $("$CTXD" --version | head -1): group (store.group_commit_docs 1024) at" \
     "$ADDR_group, alone (store.group_commit_docs 1) at $ADDR_alone; data on $FSTYPE" \
     "($WORK); servers on cpu $SERVER_CPU, h2load on cpu $LOAD_CPU"

# ---------------------------------------------------------------- checks
declare -A PUTS=([group]=0 [alone]=0)

nghttp_put() {  # NAME ADDR: one Put through nghttp, DATA then grpc-status: 0
  if nghttp_ok "$2" /ctxd.v1.Documents/Put "$WORK/put.bin"; then
    command -v nghttp >/dev/null && PUTS[$1]=$((PUTS[$1] + 1))
  else
    note_fail "nghttp Put to $1: no DATA frame followed by grpc-status: 0"
  fi
  return 0
}

# ---------------------------------------------------------------- load
RESULTS="$WORK/results.tsv"
: >"$RESULTS"

run_load() {  # NAME LOAD(conc|lat) RECORD(0/1)
  local name=$1 load=$2 record=$3 addr n c m out rps ok s2xx lat
  eval "addr=\$ADDR_$name"
  if [ "$load" = conc ]; then n=$N c=$C m=$M; else n=$LAT_N c=1 m=1; fi
  out=$(taskset -c "$LOAD_CPU" h2load -n "$n" -c "$c" -m "$m" -t 1 \
        "http://$addr/ctxd.v1.Documents/Put" -d "$WORK/put.bin" \
        -H 'content-type: application/grpc' -H 'te: trailers' 2>&1) || true
  rps=$(echo "$out" | sed -n 's/^finished in [^,]*, \([0-9.]*\) req\/s.*/\1/p')
  ok=$(echo "$out" | sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p')
  s2xx=$(echo "$out" | sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p')
  lat=$(echo "$out" | awk '/^time for request:/ {print $6}')
  if [ -z "$rps" ] || [ "${ok:-0}" != "$n" ] || [ "${s2xx:-0}" != "$n" ]; then
    note_fail "$name $load: h2load did not complete $n requests with HTTP 200"
    echo "$out" | grep -E 'finished|requests:|status codes' | sed 's/^/    /'
    rps=${rps:-0}
  fi
  PUTS[$name]=$((PUTS[$name] + ${ok:-0}))
  printf '  %-6s %-4s -c %-2s -m %s %9s calls/s  mean %s\n' "$name" "$load" "$c" "$m" "$rps" "$lat"
  [ "$record" = 1 ] && printf '%s\t%s\t%s\t%s\n' "$name" "$load" "$rps" "$lat" >>"$RESULTS"
  nghttp_put "$name" "$addr"
  return 0
}

echo
echo "warm-up"
run_load group conc 0
run_load alone conc 0
for r in $(seq 1 "$RUNS"); do
  echo "run $r"
  run_load group conc 1
  run_load alone conc 1
  run_load group lat 1
  run_load alone lat 1
done

# ---------------------------------------------------------------- server-side view
for name in group alone; do
  eval "addr=\$ADDR_$name; pid=\$PID_$name"
  # shellcheck disable=SC2154
  "$PY" - "$addr" "${PUTS[$name]}" "$ID" "$name" <<'EOF' || note_fail "$name: Stats/Verify check"
import sys
import benchlib
s = benchlib.load_stubs()
addr, puts, doc_id, name = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
with s["grpc"].insecure_channel(addr) as ch:
    admin = s["admin_pb2_grpc"].AdminStub(ch)
    st = admin.Stats(s["admin_pb2"].StatsRequest(), timeout=30)
    v = admin.Verify(s["admin_pb2"].VerifyRequest(), timeout=300)
want = 1 if doc_id else puts
print("  %s: Stats.documents=%d (want %d), last_seq=%d, Verify ok=%s" % (
    name, st.documents, want, st.last_seq, v.ok))
sys.exit(0 if st.documents == want and st.last_seq == puts and v.ok else 1)
EOF
  # shellcheck disable=SC2154
  kill -TERM "$pid" 2>/dev/null || true
  rc=0; wait "$pid" || rc=$?
  [ "$rc" = 0 ] || note_fail "$name: ctxd exit code $rc after SIGTERM"
  stopped=$(grep -a 'msg=stopped' "$WORK/$name.log" | tail -1 || true)
  calls=$(echo "$stopped" | sed -n 's/.* calls=\([0-9]*\).*/\1/p')
  okc=$(echo "$stopped" | sed -n 's/.* ok=\([0-9]*\).*/\1/p')
  echo "  $name: ${stopped#*msg=stopped }"
  grep -a 'msg=writer-stopped' "$WORK/$name.log" | sed 's/.*msg=/    /' || true
  if [ -z "$calls" ] || [ "$calls" != "$okc" ]; then
    note_fail "$name: calls=$calls but ok=$okc (some call ended with a non-zero grpc-status)"
  fi
done

# ---------------------------------------------------------------- table
echo
"$PY" - "$RESULTS" "$C" "$M" <<'EOF'
import statistics, sys
rows = {}
lat = {}
for line in open(sys.argv[1]):
    name, load, rps, l = line.rstrip("\n").split("\t")
    rows.setdefault((name, load), []).append(float(rps))
    if l.endswith("us"):
        lat.setdefault((name, load), []).append(float(l[:-2]) / 1000.0)
    elif l.endswith("ms"):
        lat.setdefault((name, load), []).append(float(l[:-2]))
c, m = sys.argv[2], sys.argv[3]
label = {"conc": "%d concurrent (-c %s -m %s)" % (int(c) * int(m), c, m), "lat": "one at a time (-c 1 -m 1)"}
print("%-28s %-6s %9s %9s %9s %5s %12s" % ("unary Put calls/s", "server", "min", "median",
                                           "max", "runs", "mean lat ms"))
for load in ("conc", "lat"):
    for name in ("group", "alone"):
        xs = rows.get((name, load), [0])
        ls = lat.get((name, load))
        print("%-28s %-6s %9.0f %9.0f %9.0f %5d %12s" % (
            label[load], name, min(xs), statistics.median(xs), max(xs), len(xs),
            "%.3f" % statistics.median(ls) if ls else "-"))
for load in ("conc", "lat"):
    g, a = rows.get(("group", load)), rows.get(("alone", load))
    if g and a:
        pairs = " ".join("%.2f" % (x / y) for x, y in zip(g, a) if y)
        print("%s: group/alone %.2f (median/median); pair by pair %s" % (
            label[load], statistics.median(g) / statistics.median(a), pairs))
EOF
echo
if [ "$FAILS" -gt 0 ]; then
  echo "put_unary: $FAILS correctness check(s) FAILED"
  exit 1
fi
echo "put_unary: all correctness checks passed"
