#!/bin/bash
# bundle.sh BUILD_FUZZ_DIR DEST: the fuzz binaries of a -DCTXD_FUZZ=ON build
# with every shared library they load (glibc and its loader too), the seeds,
# dictionaries, the GPT-2 vocabulary and run_long.sh, as DEST.tar.xz, so the
# long run goes on a machine with many cores and nothing installed:
#   tar xJf DEST.tar.xz && cd DEST && nice ./run_long.sh
# Each bin/fuzz_<t> is a wrapper that starts the real binary with the
# bundled loader and libraries (ld.so --argv0 keeps argv[0] the wrapper's,
# so the children libFuzzer's -jobs starts use the bundle too).
set -euo pipefail
B=$1 D=$2
src=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rm -rf "$D"; mkdir -p "$D/bin/real" "$D/lib"
for t in h2 pb chunk jsonl config; do
  cp "$B/tests/fuzz/fuzz_$t" "$D/bin/real/"
  cat >"$D/bin/fuzz_$t" <<W
#!/bin/sh
d=\$(cd "\$(dirname "\$0")/.." && pwd)
exec "\$d/lib/ld-linux-x86-64.so.2" --argv0 "\$0" --library-path "\$d/lib" "\$d/bin/real/fuzz_$t" "\$@"
W
  chmod +x "$D/bin/fuzz_$t"
done
# Debug info off (symbols kept: a crash's stack names its functions; for
# lines, symbolize the offsets with the build's own binaries).
strip --strip-debug "$D"/bin/real/*
for f in "$D"/bin/real/*; do ldd "$f"; done |
  awk '/=> \//{print $3} /^\s*\/lib64\//{print $1}' | sort -u |
  while read -r l; do cp -L "$l" "$D/lib/"; done
cp -L /lib64/ld-linux-x86-64.so.2 "$D/lib/"
cp -r "$src/corpus" "$D/corpus"
cp "$src"/*.dict "$src/run_long.sh" "$D/"
vocab=$(sed -n 's/^CTXD_LLAMA_SOURCE_DIR:INTERNAL=//p' "$B/CMakeCache.txt")/models/ggml-vocab-gpt-2.gguf
cp "$vocab" "$D/"
tar -C "$(dirname "$D")" -cJf "$D.tar.xz" "$(basename "$D")"
rm -rf "$D"
ls -la "$D.tar.xz"
