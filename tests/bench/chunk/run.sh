#!/bin/sh
# run.sh - chunker benchmark: ctxd's chunk_text() (C, built here with cc -O2
# from the index/ sources) against the JavaScript chunkers in package.json,
# on ~8 MB of Brown Corpus prose. Prints one table: chunker, MB/s (best of
# several runs, one thread), chunks, utf8-boundaries-ok.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
cd "$here"
[ -d node_modules ] || npm ci --no-audit --no-fund >/dev/null
[ -f corpus.txt ] && [ -f corpus-mixed.txt ] || node build_corpus.mjs
${CC:-cc} -std=c11 -O2 -D_GNU_SOURCE -I"$root/index" -o bench_chunk bench_chunk.c \
  "$root/index/chunk.c" "$root/index/tok.c" "$root/index/utf8.c" "$root/index/err.c"
{
  printf 'chunker\tMB/s\tchunks\tutf8-boundaries-ok\n'
  ./bench_chunk corpus.txt corpus-mixed.txt 512 "${RUNS:-7}"
  node bench_js.mjs corpus.txt corpus-mixed.txt
} | column -t -s "$(printf '\t')"
echo "input: corpus.txt $(wc -c <corpus.txt) bytes of English; UTF-8 check also on corpus-mixed.txt (CJK and emoji runs)"
