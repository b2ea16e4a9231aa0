#!/bin/sh
# gpu_bundle.sh - copies what gpu.sh needs into one folder, for a GPU machine
# that gets a copy of a working tree and nothing else (the device tool's
# `carry`, 64 MiB at most): the llama.cpp source minus its docs, tests, tools
# and the backends other than CPU and CUDA, one vocabulary GGUF, gguf-py; the
# ctxd sources the driver builds from (index/, this folder, the model
# generator); the prose, compressed. About 20 MB.
#   tests/bench/niah/gpu_bundle.sh DEST     then, there:
#   cd DEST/ctxd && LLAMA_SRC=../llama sh tests/bench/niah/gpu.sh
# LLAMA_SRC as gpu.sh takes it (default: BUILD's CTXD_LLAMA_SOURCE_DIR).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
dest=${1:?usage: gpu_bundle.sh DEST}
src=${LLAMA_SRC:-$(sed -n 's/^CTXD_LLAMA_SOURCE_DIR:INTERNAL=//p' "${BUILD:-$root/build}/CMakeCache.txt")}
[ -f "$src/include/llama.h" ] || { echo "gpu_bundle.sh: no llama.cpp source at '$src'" >&2; exit 1; }
[ -f "$here/prose.txt" ] || node "$here/build_prose.mjs"
rm -rf "$dest"
mkdir -p "$dest/llama/models" "$dest/llama/ggml/src" "$dest/ctxd/tests/bench" "$dest/ctxd/tests/model"
# llama.cpp: the top-level build, the library, ggml with the CPU and CUDA backends
(cd "$src" && cp -r CMakeLists.txt cmake include src vendor gguf-py LICENSE "$dest/llama/")
cp "$src/models/ggml-vocab-qwen2.gguf" "$dest/llama/models/"
(cd "$src/ggml" && cp -r CMakeLists.txt cmake include "$dest/llama/ggml/")
(cd "$src/ggml/src" && find . -maxdepth 1 -type f -exec cp {} "$dest/llama/ggml/src/" \; &&
  cp -r ggml-cpu ggml-cuda "$dest/llama/ggml/src/")
# ctxd: the sources of the driver (index/ minus nothing: gpu/CMakeLists.txt picks)
cp -r "$root/index" "$dest/ctxd/"
cp "$root/tests/model/make_random_gguf.py" "$dest/ctxd/tests/model/"
mkdir -p "$dest/ctxd/tests/bench/niah"
(cd "$here" && cp -r niah.c needles.tsv grid.py gpu.sh gpu_bundle.sh build_prose.mjs gpu "$dest/ctxd/tests/bench/niah/")
gzip -9c "$here/prose.txt" >"$dest/ctxd/tests/bench/niah/prose.txt.gz"
du -sh "$dest" >&2
