#!/bin/sh
# run.sh - retrieval engine overhead: coll_search (index lookup + chunk
# reads from LMDB + one result arena) next to vindex_search alone on the
# same vectors and spec, one thread, same run (see bench_coll.c).
#
#   N      vectors, default 100000      DIM   dimension, default 128
#   SPECS  index specs, default "Flat HNSW32"
#   QUERIES  default 2000   K  default 10   EF  ef_search, default 0 (16)
# Needs a configured build: BUILD (default build/) holding index/libctxd.a.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=${BUILD:-$root/build}
cmake --build "$build" --target ctxd >/dev/null
out=$(mktemp -d /tmp/ctxd-bench-coll-bin-XXXXXX)
trap 'rm -rf "$out"' EXIT
${CC:-cc} -std=c11 -O2 -g -D_GNU_SOURCE -I"$root/index" -o "$out/bench_coll" \
  "$here/bench_coll.c" "$build/index/libctxd.a" /usr/lib/x86_64-linux-gnu/libfaiss.a \
  -lblas -llapack -lgomp -lstdc++ -llmdb -ljansson -lpthread -lm
for spec in ${SPECS:-Flat HNSW32}; do
  OMP_WAIT_POLICY=PASSIVE "$out/bench_coll" "${N:-100000}" "${DIM:-128}" "$spec" \
    "${QUERIES:-2000}" "${K:-10}" "${EF:-0}"
  echo
done
