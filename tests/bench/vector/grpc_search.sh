#!/bin/bash
# grpc_search.sh - vector Search over gRPC, the daemon pinned to one core,
# next to FAISS searched in process (one query at a time, one thread) on the
# same data in the same run.
#
# usage: tests/bench/vector/grpc_search.sh [BUILD_DIR]      (default ./build)
# env:   N, DIM, NQ, SEED   data (default 1000000, 128, 1000, 42; shared with
#                           run.sh, generated there when missing)
#        INDEXES            default "HNSW32 IVF1024,Flat"
#        TARGET             recall@10 to reach (default 0.95)
#        CONNS              client connections, one call in flight each (4)
#        RUN_S, RUNS        measured runs at the chosen setting (5 s, 3)
#        SWEEP_S            seconds per sweep step (2)
#        SERVER_CPU, LOAD_CPU   cores for the daemon and the client (0, 1)
#        SKIP_INPROC=1      reuse INPROC_FILE (run.sh output) instead of
#                           running run.sh again
#        REBUILD=1          also time a RebuildIndex of each collection
#
# Steps
#   1. run.sh (helper vindex's in-process benchmark): generates the data and
#      the exact ground truth if missing, builds each index with ctxd's FAISS
#      binding, finds the smallest efSearch / nprobe reaching TARGET and times
#      single-query searches on one thread: its `inproc` lines.
#   2. starts ctxd (server.workers 1) on a temporary data dir, creates one
#      collection per index (embedder none:dim=DIM, metric l2, that spec),
#      and loads the base vectors through Documents.PutStream with
#      grpc_search_load (document "v<i>", one chunk carrying row i as its
#      client vector): load time = LMDB writes + index adds; IVF collections
#      search exactly until they hold min_train vectors, then train in the
#      background (waited for);
#   3. pins every daemon thread to SERVER_CPU (taskset -a) and the client to
#      LOAD_CPU; for each collection sweeps ef_search / nprobe over gRPC
#      (grpc_search_load: CONNS connections, each one Search(k=10) at a time,
#      recall@10 computed from the answers' doc ids against the ground
#      truth), takes the smallest setting reaching TARGET, and measures RUNS
#      runs of RUN_S seconds there;
#   4. prints one table: in-process setting / recall / queries per second,
#      gRPC setting / recall / calls per second (median of the runs), and the
#      ratio gRPC / in-process. Every call must end with grpc-status 0.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BENCH_NAME=grpc_search
# shellcheck source=../benchlib.sh
. "$HERE/../benchlib.sh"
REPO=$(cd "$HERE/../../.." && pwd)
BUILD=$(cd "${1:-${CTXD_BUILD:-$REPO/build}}" && pwd)
N=${N:-1000000}
DIM=${DIM:-128}
NQ=${NQ:-1000}
SEED=${SEED:-42}
export N DIM NQ SEED
DATA=${DATA:-/tmp/ctxd-bench-vector-$N-$DIM-$SEED}
export DATA
INDEXES=${INDEXES:-HNSW32 IVF1024,Flat}
TARGET=${TARGET:-0.95}
CONNS=${CONNS:-4}
RUN_S=${RUN_S:-5}
RUNS=${RUNS:-3}
SWEEP_S=${SWEEP_S:-2}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
CTXD=${CTXD_BIN:-$BUILD/ctxd}
CTXCTL=${CTXCTL_BIN:-$BUILD/ctxctl}

for tool in taskset cc; do
  command -v "$tool" >/dev/null || { echo "$BENCH_NAME: $tool not found" >&2; exit 2; }
done
[ -x "$CTXD" ] && [ -x "$CTXCTL" ] || { echo "$BENCH_NAME: build ctxd and ctxctl first" >&2; exit 2; }

WORK=$(mktemp -d /tmp/ctxd-bench-grpc-search.XXXXXX)
PID=
cleanup() {
  [ -z "$PID" ] || { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "machine cpus=$(nproc) load=\"$(cut -d' ' -f1-3 /proc/loadavg)\" commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none)"

# ---- 1. in process ------------------------------------------------------
INPROC_FILE=${INPROC_FILE:-$WORK/inproc.txt}
if [ "${SKIP_INPROC:-0}" != 1 ]; then
  # efConstruction 40 is what an "HNSW32" collection gets.
  specs=""
  for s in $INDEXES; do
    case $s in HNSW*) specs="$specs $s:efc=40" ;; *) specs="$specs $s" ;; esac
  done
  echo "== in process: INDEXES=\"${specs# }\" $HERE/run.sh"
  INDEXES="${specs# }" TARGET=$TARGET "$HERE/run.sh" "$BUILD" | tee "$INPROC_FILE"
fi
for f in base.f32 queries.f32 gt.i64; do
  [ -f "$DATA/$f" ] || { echo "$BENCH_NAME: $DATA/$f missing (run.sh makes it)" >&2; exit 2; }
done

# ---- 2. the daemon and the data ---------------------------------------------
LOADER=$WORK/grpc_search_load
cc -std=c11 -O2 -D_GNU_SOURCE -I"$HERE" -I"$REPO/clients" -I"$BUILD/proto" \
  -o "$LOADER" "$HERE/grpc_search_load.c" "$BUILD/clients/libctxclient.a" \
  "$BUILD/proto/libctxd_proto.a" -lnghttp2 -lprotobuf-c -lpthread

"$CTXD" --listen 127.0.0.1:0 --data "$WORK/data" --server.workers 1 \
  --index.save_interval_s 86400 --index.save_every_changes 1000000000 \
  >"$WORK/ctxd.log" 2>&1 &
PID=$!
ADDR=$(wait_addr "$WORK/ctxd.log" "$PID")
echo "== ctxd pid=$PID addr=$ADDR ($(grep -o 'msg=omp-wait-policy.*' "$WORK/ctxd.log"))"

coll_name() { echo "bench-$(echo "$1" | tr -c 'A-Za-z0-9\n' '-' | tr 'A-Z' 'a-z')"; }

# Field of a collection in `ctxctl collection ls --json`.
coll_field() {
  "$CTXCTL" --addr "$ADDR" collection ls --json |
    /usr/bin/python3 -c 'import json,sys
for l in sys.stdin:
    c = json.loads(l)
    if c["config"]["name"] == sys.argv[1]: print(c.get(sys.argv[2], 0))' "$1" "$2"
}

declare -A LOAD_S
for spec in $INDEXES; do
  name=$(coll_name "$spec")
  "$CTXCTL" --addr "$ADDR" collection create "$name" --embedder "none:dim=$DIM" \
    --metric l2 --index "$spec" >/dev/null
  echo "== load $N vectors into $name ($spec) over 2 PutStreams"
  out=$("$LOADER" load "$ADDR" "$name" "$DATA/base.f32" 2)
  echo "   $out"
  LOAD_S[$spec]=$(echo "$out" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p')
  if [ "$(coll_field "$name" exact_until_trained)" = True ]; then
    t0=$(date +%s)
    while [ "$(coll_field "$name" trained)" != True ]; do sleep 1; done
    echo "   trained in the background, $(( $(date +%s) - t0 )) s after the load"
  fi
  if [ "${REBUILD:-0}" = 1 ]; then
    echo "   $("$CTXCTL" --addr "$ADDR" reindex -c "$name")"
  fi
done

# ---- 3. search over gRPC, the daemon on one core --------------------------------
taskset -apc "$SERVER_CPU" "$PID" >/dev/null
search() { # COLLECTION EF NPROBE SECONDS -> the loader's line
  taskset -c "$LOAD_CPU" "$LOADER" search "$ADDR" "$1" "$DATA/queries.f32" "$DATA/gt.i64" \
    "$CONNS" "$4" "$2" "$3"
}
field() { echo "$1" | sed -n "s/.*$2=\([0-9.]*\).*/\1/p"; }

declare -A G_SET G_RECALL G_QPS
for spec in $INDEXES; do
  name=$(coll_name "$spec")
  case $spec in
    HNSW*) knob=ef; vals="16 24 32 48 64 96 128 192 256 384 512" ;;
    IVF*) knob=nprobe; vals="1 2 4 8 12 16 24 32 48 64 96 128" ;;
    *) knob=none; vals="0" ;;
  esac
  chosen=
  for v in $vals; do
    if [ $knob = nprobe ]; then line=$(search "$name" 0 "$v" "$SWEEP_S"); else line=$(search "$name" "$v" 0 "$SWEEP_S"); fi
    rec=$(field "$line" recall_at_10)
    echo "   sweep $name $knob=$v recall=$rec calls_per_s=$(field "$line" calls_per_s) errors=$(field "$line" errors)"
    [ "$(field "$line" errors)" = 0 ] || note_fail "$name $knob=$v: calls failed"
    if awk -v r="$rec" -v t="$TARGET" 'BEGIN{exit !(r >= t)}'; then chosen=$v; break; fi
  done
  [ -n "$chosen" ] || { note_fail "$name: no setting reached recall $TARGET"; continue; }
  rates=()
  for i in $(seq 1 "$RUNS"); do
    if [ $knob = nprobe ]; then line=$(search "$name" 0 "$chosen" "$RUN_S"); else line=$(search "$name" "$chosen" 0 "$RUN_S"); fi
    echo "   run $i $name $knob=$chosen $line"
    [ "$(field "$line" errors)" = 0 ] || note_fail "$name run $i: calls failed"
    rates+=("$(field "$line" calls_per_s)")
  done
  G_SET[$spec]="$knob=$chosen"
  G_RECALL[$spec]=$(field "$line" recall_at_10)
  G_QPS[$spec]=$(printf '%s\n' "${rates[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
done

# ---- 4. the table -------------------------------------------------------------
echo
echo "$N x $DIM vectors, $NQ queries, k=10, target recall@10 $TARGET; gRPC: daemon on cpu $SERVER_CPU (server.workers 1), $CONNS connections one call each on cpu $LOAD_CPU"
printf '%-14s %9s %-14s %8s %10s %-14s %8s %10s %6s\n' index load_s in-process recall qps gRPC recall calls/s ratio
for spec in $INDEXES; do
  l=$(grep "^inproc index=$spec[ ]" "$INPROC_FILE" | head -1 || true)
  iset=$(echo "$l" | grep -o '\(ef\|nprobe\)=[0-9]*' | tail -1 || true)
  iq=$(field "$l" qps)
  ir=$(field "$l" recall)
  gq=${G_QPS[$spec]:-}
  ratio=$( [ -n "$iq" ] && [ -n "$gq" ] && awk -v a="$gq" -v b="$iq" 'BEGIN{printf "%.2f", a/b}' || echo "-")
  printf '%-14s %9s %-14s %8s %10s %-14s %8s %10s %6s\n' "$spec" "${LOAD_S[$spec]:--}" \
    "${iset:--}" "${ir:--}" "${iq:--}" "${G_SET[$spec]:--}" "${G_RECALL[$spec]:--}" "${gq:--}" "$ratio"
done
grep -q 'level=error' "$WORK/ctxd.log" && note_fail "the daemon logged errors: $(grep 'level=error' "$WORK/ctxd.log" | head -3)"
[ "$FAILS" = 0 ] || { echo "$BENCH_NAME: $FAILS failure(s)"; exit 1; }
