#!/bin/sh
# run.sh - chunker benchmark: ctxd's chunk_text() (C) against the JavaScript
# chunkers in package.json, on ~8 MB of Brown Corpus prose. Prints one table:
# chunker, MB/s (best of several runs, one thread), chunks,
# utf8-boundaries-ok.
#
# The C side is built from the index/ sources with the flags of the CMake
# RelWithDebInfo build of libctxd (-std=c11 -O2 -g -fPIC), so the figure is
# the daemon's; LIBCTXD=path/to/build/index/libctxd.a links that very library
# instead. BENCH_CPU=N pins the C benchmark to CPU N (taskset) for steadier
# numbers; RUNS sets the number of runs (best of, default 7).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
cd "$here"
# npm install, not npm ci: @chonkiejs/core's optional per-platform packages
# (@kreuzberg/tree-sitter-language-pack-*) are absent from the registry, and
# npm ci refuses a lockfile without them; install keeps the lockfile's
# versions and skips what this platform does not need.
[ -d node_modules ] || npm install --no-audit --no-fund >/dev/null
[ -f corpus.txt ] && [ -f corpus-mixed.txt ] || node build_corpus.mjs
flags="-std=c11 -O2 -g -fPIC -D_GNU_SOURCE"
if [ -n "${LIBCTXD:-}" ]; then
  ${CC:-cc} $flags -I"$root/index" -o bench_chunk bench_chunk.c "$LIBCTXD"
else
  ${CC:-cc} $flags -I"$root/index" -o bench_chunk bench_chunk.c \
    "$root/index/chunk.c" "$root/index/tok.c" "$root/index/utf8.c" "$root/index/err.c"
fi
pin=
[ -z "${BENCH_CPU:-}" ] || pin="taskset -c $BENCH_CPU"
{
  printf 'chunker\tMB/s\tchunks\tutf8-boundaries-ok\n'
  $pin ./bench_chunk corpus.txt corpus-mixed.txt 512 "${RUNS:-7}"
  node bench_js.mjs corpus.txt corpus-mixed.txt
} | column -t -s "$(printf '\t')"
echo "input: corpus.txt $(wc -c <corpus.txt) bytes of English; UTF-8 check also on corpus-mixed.txt (CJK and emoji runs)"
