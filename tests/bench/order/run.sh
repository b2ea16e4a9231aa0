#!/bin/sh
# run.sh - corpus-ordering benchmarks (not part of ctest):
#   1. the traversal alone: ctxd's order_graph_build + order_traverse (C)
#      next to traverse_ref.py (the same greedy algorithm in plain Python,
#      written straightforwardly; and its heap-based variant for context) on
#      one kNN graph written to a file that all read; target: C at least
#      200x faster than the straightforward one, with an equal or higher
#      mean adjacent similarity. Times are wall-clock and CPU (the ratio is
#      taken on CPU time: other work shares the two cores).
#   2. end to end, kNN + dedup + traversal of E2E_N clustered vectors of
#      dimension E2E_DIM (default 1,000,000 x 384); targets: under 10
#      minutes, peak memory (ru_maxrss) under 2.5x the raw vectors.
#
# usage: tests/bench/order/run.sh [BUILD_DIR]   (default: ./build, built with
#        `make ctxd`). Knobs: TRAV_N (200000), TRAV_DIM (64), K (20),
#        RUNS (5, best of, C side), E2E_N, E2E_DIM, SKIP_E2E=1, SKIP_TRAV=1.
# OMP_WAIT_POLICY=PASSIVE is set as the daemon sets it (spinning OpenMP
# threads starve OpenBLAS's on two cores).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
lib="$build/index/libctxd.a"
[ -f "$lib" ] || { echo "no $lib: run make ctxd in $build" >&2; exit 2; }
work=${TMPDIR:-/tmp}/ctxd-bench-order.$$
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT INT TERM
export OMP_WAIT_POLICY=PASSIVE
${CXX:-c++} -O2 -g -o "$work/bench_order" -x c -std=c11 -D_GNU_SOURCE \
  -I"$root/index" "$here/bench_order.c" -x none "$lib" \
  -lfaiss -lblas -llapack -fopenmp -ljansson -llmdb -lpthread -lm
echo "machine: $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg)," \
  "ctxd $(git -C "$root" rev-parse --short HEAD 2>/dev/null)"

if [ -z "${SKIP_TRAV:-}" ]; then
  n=${TRAV_N:-200000}
  echo
  echo "## traversal: $n documents, dim ${TRAV_DIM:-64}, k ${K:-20}"
  "$work/bench_order" graph "$n" "${TRAV_DIM:-64}" "${K:-20}" "$work/g.ckpt" \
    2>"$work/graph.log" || { cat "$work/graph.log"; exit 1; }
  tail -1 "$work/graph.log"
  c=$("$work/bench_order" traverse "$work/g.ckpt" "${RUNS:-5}")
  py=$(/usr/bin/python3 "$here/traverse_ref.py" "$work/g.ckpt")
  heap=$(/usr/bin/python3 "$here/traverse_ref.py" --heap "$work/g.ckpt")
  printf '%s\n%s\n%s\n' "$c" "$py" "$heap" | awk -F'\t' '
    BEGIN { printf "%-12s %10s %10s %20s %7s\n", "impl", "wall s", "CPU s", "adjacent similarity", "jumps" }
    { printf "%-12s %10.4f %10.4f %20.6f %7d\n", $1, $2, $3, $4, $5; w[$1] = $2; c[$1] = $3; s[$1] = $4 }
    END {
      r = c["python"] / c["C"]; rw = w["python"] / w["C"]
      fast = (r >= 200) ? "met" : "NOT met"
      ge = (s["C"] >= s["python"])
      printf "C vs python: %.0fx in CPU time, %.0fx wall-clock (target >= 200x: %s)\n", r, rw, fast
      printf "C vs python-heap: %.0fx in CPU time, %.0fx wall-clock\n", c["python-heap"] / c["C"], w["python-heap"] / w["C"]
      printf "adjacent similarity: C %s python (target C >= python: %s)\n", (ge ? ">=" : "<"), (ge ? "met" : "NOT met")
    }'
fi

if [ -z "${SKIP_E2E:-}" ]; then
  echo
  echo "## end to end: ${E2E_N:-1000000} documents, dim ${E2E_DIM:-384}, k ${K:-20}"
  "$work/bench_order" e2e "${E2E_N:-1000000}" "${E2E_DIM:-384}" "${K:-20}" \
    2>"$work/e2e.log" || { cat "$work/e2e.log"; exit 1; }
  grep -E "train|index .*/|dedup|traverse" "$work/e2e.log" | sed 's/^/  progress:/' | tail -8
fi
