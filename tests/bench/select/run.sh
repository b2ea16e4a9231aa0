#!/bin/sh
# run.sh - key-context selection on random-weight models (bench_select.c):
#   1. throughput: select_run's wall time over plain llama_decode of exactly
#      the tokens the method fed the model, same calls, same run, for xl3m
#      and infiniretri (target <= 1.15), on a small model with the GPT-2
#      vocabulary (4 layers, width 256, 4 heads, 2 kv heads, f32);
#   2. memory: peak resident memory of one xl3m and one infiniretri call at
#      10k and 1M tokens of input, each in its own process, on a tiny model
#      (2 layers, width 64, the GPT-2 vocabulary).
# The models are written once into $BUILD/bench-models/.
# BUILD=path/to/build (default ./build); TOKENS (default 30000) for the
# throughput rows; THREADS (default 1); RUNS (default 2); BIG (default
# 1000000) for the memory rows; ONLY=throughput|memory runs one part.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=${BUILD:-$root/build}
src=$(sed -n 's/^CTXD_LLAMA_SOURCE_DIR:INTERNAL=//p' "$build/CMakeCache.txt")
mk() { # name, shape
  model="$build/bench-models/$1.gguf"
  if [ ! -f "$model" ]; then
    mkdir -p "$build/bench-models"
    echo "writing $model ($2)" >&2
    PYTHONPATH="$src/gguf-py" /usr/bin/python3 "$root/tests/model/make_random_gguf.py" \
      --vocab "$src/models/ggml-vocab-gpt-2.gguf" --name "$1" $2 --out "$model.tmp" >&2
    mv "$model.tmp" "$model"
  fi
  echo "$model"
}
small=$(mk select-small "--arch llama --layers 4 --embd 256 --heads 4 --kv-heads 2 --ff 768 --ctx 8192")
tiny=$(mk select-tiny "--arch llama --layers 2 --embd 64 --heads 4 --kv-heads 2 --ctx 8192")
cmake --build "$build" --target bench_select >/dev/null
b="$build/tests/bench_select"
threads=${THREADS:-1}
if [ "${ONLY:-throughput}" = throughput ]; then
  for m in xl3m infiniretri; do
    echo "== throughput: $m, $(basename "$small")"
    nice "$b" "$small" $m "${TOKENS:-30000}" "$threads" "${RUNS:-2}"
  done
fi
if [ "${ONLY:-memory}" = memory ]; then
  for n in 10000 "${BIG:-1000000}"; do
    for m in xl3m infiniretri; do
      echo "== memory: $m, $n tokens, $(basename "$tiny")"
      nice "$b" "$tiny" $m "$n" rss "$threads"
    done
  done
fi
