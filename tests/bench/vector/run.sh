#!/bin/sh
# run.sh - vector index benchmark: ctxd's FAISS binding in process. Generates
# clustered random vectors (gen_vectors.c), computes exact ground truth with
# a Flat index (batched, every core), builds each index, finds the smallest
# efSearch / nprobe with recall@10 >= TARGET and times single-query searches
# on one thread there (bench_vindex.c). Prints bench_vindex's key=value lines
# (`inproc index=HNSW32 efc=40 ef=64 recall=0.957 qps=...`); a later gRPC
# step can reuse $VEC_DATA/base.f32, queries.f32 and gt.i64 there.
#
#   usage: tests/bench/vector/run.sh [BUILD_DIR]   (default ./build)
#
#   VEC_N, VEC_DIM, VEC_CLUSTERS, VEC_NQ, VEC_SEED   the data (default
#             1000000, 128, 1000, 1000, 42)
#   VEC_INDEXES   default "HNSW32:efc=40 HNSW32:efc=80 IVF1024,Flat"
#   VEC_TARGET    recall@10 to reach (default 0.95)
#   VEC_QPS_SECONDS   timing of each single-query run (default 2)
#   VEC_DATA  where the data and ground truth live (default
#             /tmp/ctxd-bench-vector-N-DIM-SEED); generated only if missing
#   VEC_OMP_COMPARE=1   first time the exact search with 1 and 2 threads
#             under libgomp's default wait policy and under PASSIVE
# The benchmark itself runs with OMP_WAIT_POLICY=PASSIVE, as the daemon does.
# It links BUILD_DIR/index/libctxd.a when that exists (else it compiles
# index/vindex.cpp and index/err.c with the RelWithDebInfo flags).
# At 1M x 128 on the shared 2-core VM (load average 10-15, under nice -n 10)
# it took about an hour: HNSW32 builds of 20 (efc=40) and 37 (efc=80)
# minutes, IVF1024,Flat 1 minute, exact ground truth 1.5 minutes (reused from
# gt.i64 on later runs), the sweeps and timings a few minutes.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=${1:-$root/build}
N=${VEC_N:-1000000}
DIM=${VEC_DIM:-128}
NQ=${VEC_NQ:-1000}
SEED=${VEC_SEED:-42}
DATA=${VEC_DATA:-/tmp/ctxd-bench-vector-$N-$DIM-$SEED}
out=$(mktemp -d /tmp/ctxd-bench-vector-bin-XXXXXX)
trap 'rm -rf "$out"' EXIT

cflags="-std=c11 -O2 -g -D_GNU_SOURCE"
${CC:-cc} $cflags -o "$out/gen_vectors" "$here/gen_vectors.c" -lm
cmake --build "$build" --target bench_vindex >/dev/null
cp "$build/tests/bench_vindex" "$out/bench_vindex"

mkdir -p "$DATA"
if [ ! -f "$DATA/base.f32" ] || [ ! -f "$DATA/queries.f32" ]; then
  "$out/gen_vectors" "$DATA/base.f32" "$DATA/queries.f32" "$N" "$DIM" \
    "${VEC_CLUSTERS:-1000}" "$NQ" "$SEED"
fi
echo "machine cpus=$(nproc) load=\"$(cut -d' ' -f1-3 /proc/loadavg)\" commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo none)"

set -- --base "$DATA/base.f32" --queries "$DATA/queries.f32" \
  --target "${VEC_TARGET:-0.95}" --seconds "${VEC_QPS_SECONDS:-2}"
if [ "${VEC_OMP_COMPARE:-0}" = 1 ]; then
  for policy in default PASSIVE; do
    for t in 1 2; do
      echo "omp policy=$policy threads=$t"
      if [ $policy = default ]; then
        env -u OMP_WAIT_POLICY "$out/bench_vindex" "$@" --gt-only --threads $t
      else
        OMP_WAIT_POLICY=PASSIVE "$out/bench_vindex" "$@" --gt-only --threads $t
      fi
    done
  done
fi
for spec in ${VEC_INDEXES:-HNSW32:efc=40 HNSW32:efc=80 IVF1024,Flat}; do
  set -- "$@" --index "$spec"
done
OMP_WAIT_POLICY=PASSIVE "$out/bench_vindex" "$@" --gt "$DATA/gt.i64"
