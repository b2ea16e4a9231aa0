#!/bin/sh
# run.sh - prompt-processing speed of the model runtime next to plain
# llama.cpp, on a random-weight model with the shapes of Qwen2.5-0.5B
# (24 layers, width 896, 14 heads, 2 kv heads, feed-forward 4864, the Qwen2
# vocabulary, Q8_0 weights as people run it) that
# tests/model/make_random_gguf.py writes once into $BUILD/bench-models/
# (about 530 MB). See bench_lm.c for the rows.
#
# BUILD=path/to/build (default ./build at the root); TOKENS (default 2048),
# THREADS (default 1: then tokens per CPU second is what a quiet machine
# gives one core, whatever else runs), RUNS (default 3); BENCH_CPUS=0-1 pins
# the run (taskset). SHAPE="--layers 2 --embd 64 ..." overrides the shape.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=${BUILD:-$root/build}
src=$(sed -n 's/^CTXD_LLAMA_SOURCE_DIR:INTERNAL=//p' "$build/CMakeCache.txt")
shape=${SHAPE:---arch qwen2 --layers 24 --embd 896 --heads 14 --kv-heads 2 --ff 4864 --ctx 32768 --rope-base 1000000 --eps 1e-6 --dtype q8_0}
tag=$(printf '%s' "$shape" | cksum | cut -d' ' -f1)
model="$build/bench-models/random-$tag.gguf"
if [ ! -f "$model" ]; then
  mkdir -p "$build/bench-models"
  echo "writing $model ($shape)" >&2
  PYTHONPATH="$src/gguf-py" /usr/bin/python3 "$root/tests/model/make_random_gguf.py" \
    --vocab "$src/models/ggml-vocab-qwen2.gguf" --name qwen2.5-0.5b-shaped-random $shape --out "$model.tmp"
  mv "$model.tmp" "$model"
fi
cmake --build "$build" --target bench_lm >/dev/null
pin=
[ -z "${BENCH_CPUS:-}" ] || pin="taskset -c $BENCH_CPUS"
$pin "$build/tests/bench_lm" "$model" "${TOKENS:-2048}" "${THREADS:-1}" "${RUNS:-3}" |
  column -t -s "$(printf '\t')"
