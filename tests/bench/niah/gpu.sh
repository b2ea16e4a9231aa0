#!/bin/sh
# gpu.sh - the GPU build of the model runtime and its figures: llama.cpp
# (the pinned source) built with CUDA, the niah driver and the parts of
# libctxd it needs built against it (gpu/CMakeLists.txt: no LMDB, FAISS or
# nghttp2 needed), a random-weight GGUF with the shapes of Qwen2.5-0.5B, then
# InfiniRetri and XL3M over 10k- and 1M-token haystacks with every layer on
# the GPU and flash attention off, each followed by plain llama.cpp prompt
# processing of as many tokens as the method fed the model, in the shape of
# its calls (niah --baseline), in the same process. Prints a summary table;
# the rows are in $OUTDIR.
#
#   LLAMA_SRC=<llama.cpp source> tests/bench/niah/gpu.sh [build] [model] [run]
#
# LLAMA_SRC  the llama.cpp source: the pinned commit (llama.cmake's
#            CTXD_LLAMA_COMMIT, e.g. ~/.cache/ctxd-deps/llama.cpp-<commit>),
#            or the subset gpu_bundle.sh copies; default: BUILD's
#            CTXD_LLAMA_SOURCE_DIR.
# LLAMA_PREFIX  an installed llama.cpp build to use instead of building one.
# WORK       build folder (default <root>/build-gpu); OUTDIR results
#            (default $WORK/out). CUDA=OFF makes the same flow on the CPU
#            (a dry run); CUDA_ARCH (default 90: H100/H200); CUDA_FA=ON also
#            compiles the flash-attention kernels (off: the runs keep flash
#            attention off, and the build is shorter); JOBS (default: the CPUs).
# PYTHON     a python3 with numpy (default python3).
# SHAPE      make_random_gguf.py shape (default Qwen2.5-0.5B's, Q8_0, as
#            tests/bench/model/run.sh); MODEL=file.gguf uses a model instead
#            (a real one, e.g. the one helper train makes).
# LENGTHS    haystack tokens (default 10k,1M); METHODS (default
#            infiniretri,xl3m); NGL (default -1:
#            every layer on the GPU; 0 with CUDA=OFF); GRID=1 also runs a
#            small accuracy grid (1k-64k) with the model: GRID_LENGTHS
#            (default 1k,4k,16k,64k), GRID_DEPTHS (default 0,25,50,75,100),
#            GRID_SEEDS (default 2), GRID_METHODS (default METHODS, e.g.
#            infiniretri,xl3m,bm25), GRID_TAG (default model): trials in
#            $OUTDIR/grid-$GRID_TAG-trials.tsv, grid.py's tables in
#            grid-$GRID_TAG.{tsv,md}. SPEED=0 skips the speed runs.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
t0=$(date +%s)
log() { echo "[gpu.sh +$(($(date +%s) - t0))s] $*" >&2; }
work=${WORK:-$root/build-gpu}
out=${OUTDIR:-$work/out}
cuda=${CUDA:-ON}
jobs=${JOBS:-$(nproc)}
if [ -z "${LLAMA_SRC:-}" ] && [ -f "${BUILD:-$root/build}/CMakeCache.txt" ]; then
  LLAMA_SRC=$(sed -n 's/^CTXD_LLAMA_SOURCE_DIR:INTERNAL=//p' "${BUILD:-$root/build}/CMakeCache.txt")
fi
: "${LLAMA_SRC:?set LLAMA_SRC to the pinned llama.cpp source}"
steps=${*:-build model run}
mkdir -p "$work" "$out"
gen=Ninja
command -v ninja >/dev/null || gen="Unix Makefiles"

for step in $steps; do
  case $step in
  build)
    if [ -n "${LLAMA_PREFIX:-}" ]; then
      log "llama.cpp: using the build installed in $LLAMA_PREFIX"
      prefix=$LLAMA_PREFIX
    else
      prefix=$work/llama
      # -march=native without AMX, as llama.cmake builds it: these VMs advertise
      # AMX, yet tileloadd raises SIGILL (quantized models would crash)
      noamx=
      echo 'int main(void){return 0;}' >"$work/amx.c"
      if ${CC:-cc} -mno-amx-tile -c "$work/amx.c" -o "$work/amx.o" 2>/dev/null; then
        noamx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    fi
    log "llama.cpp: configure (CUDA=$cuda, arch ${CUDA_ARCH:-90}, flags '$noamx')"
    cmake -S "$LLAMA_SRC" -B "$work/llama-build" -G "$gen" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_C_FLAGS="$noamx" -DCMAKE_CXX_FLAGS="$noamx" \
      -DCMAKE_INSTALL_PREFIX="$work/llama" -DBUILD_SHARED_LIBS=OFF \
      -DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF \
      -DLLAMA_BUILD_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_OPENMP=OFF -DGGML_NATIVE=ON \
      -DGGML_CUDA="$cuda" -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH:-90}" \
      -DGGML_CUDA_FA="${CUDA_FA:-OFF}" -DGGML_CUDA_NCCL=OFF >"$out/llama-configure.log" 2>&1 ||
      { tail -30 "$out/llama-configure.log"; exit 1; }
    log "llama.cpp: build with $jobs jobs"
    cmake --build "$work/llama-build" --parallel "$jobs" >"$out/llama-build.log" 2>&1 ||
      { tail -40 "$out/llama-build.log"; exit 1; }
    cmake --install "$work/llama-build" >/dev/null
    fi
    log "niah: build against it"
    cmake -S "$here/gpu" -B "$work/niah-build" -G "$gen" -DCMAKE_PREFIX_PATH="$prefix" \
      >"$out/niah-configure.log" 2>&1 || { tail -30 "$out/niah-configure.log"; exit 1; }
    cmake --build "$work/niah-build" --parallel "$jobs" >"$out/niah-build.log" 2>&1 ||
      { tail -40 "$out/niah-build.log"; exit 1; }
    log "built $work/niah-build/niah"
    ;;
  model)
    if [ -n "${MODEL:-}" ]; then log "model: $MODEL (given)"; continue; fi
    shape=${SHAPE:---arch qwen2 --layers 24 --embd 896 --heads 14 --kv-heads 2 --ff 4864 --ctx 32768 --rope-base 1000000 --eps 1e-6 --dtype q8_0}
    tag=$(printf '%s' "$shape" | cksum | cut -d' ' -f1)
    if [ ! -f "$work/random-$tag.gguf" ]; then
      log "model: writing a random-weight GGUF ($shape)"
      PYTHONPATH="$LLAMA_SRC/gguf-py" "${PYTHON:-python3}" "$root/tests/model/make_random_gguf.py" \
        --vocab "$LLAMA_SRC/models/ggml-vocab-qwen2.gguf" --name qwen2.5-0.5b-shaped-random \
        $shape --out "$work/random-$tag.gguf.tmp"
      mv "$work/random-$tag.gguf.tmp" "$work/random-$tag.gguf"
    fi
    ln -sf "random-$tag.gguf" "$work/model.gguf"
    ;;
  run)
    model=${MODEL:-$work/model.gguf}
    prose=$here/prose.txt
    [ -f "$prose" ] || { [ -f "$prose.gz" ] && gunzip -c "$prose.gz" >"$work/prose.txt" && prose=$work/prose.txt; }
    [ -f "$prose" ] || node "$here/build_prose.mjs" "$prose"
    if [ "$cuda" = ON ]; then ngl=${NGL:--1}; else ngl=${NGL:-0}; fi
    { command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; } \
      >"$out/device.txt" 2>&1 || echo "no GPU" >"$out/device.txt"
    log "device: $(cat "$out/device.txt")"
    speed_methods=${METHODS:-infiniretri,xl3m}
    [ "${SPEED:-1}" = 0 ] && speed_methods=
    for m in $(echo "$speed_methods" | tr , ' '); do
      log "run: $m over ${LENGTHS:-10k,1M} tokens"
      "$work/niah-build/niah" --prose "$prose" --needles "$here/needles.tsv" --model "$model" \
        --ngl "$ngl" --methods "$m" --lengths "${LENGTHS:-10k,1M}" --depths 50 --seeds 1 \
        --variants literal --baseline ${NIAH_ARGS:-} \
        >"$out/speed-$m.tsv" 2>"$out/speed-$m.log" || { tail -20 "$out/speed-$m.log"; exit 1; }
    done
    if [ "${GRID:-0}" = 1 ]; then
      # the trials keep their own file (grid.py writes PREFIX.tsv)
      g=$out/grid-${GRID_TAG:-model}
      log "run: accuracy grid with the model over ${GRID_LENGTHS:-1k,4k,16k,64k} tokens"
      "$work/niah-build/niah" --prose "$prose" --needles "$here/needles.tsv" --model "$model" \
        --ngl "$ngl" --methods "${GRID_METHODS:-${METHODS:-infiniretri,xl3m}}" \
        --lengths "${GRID_LENGTHS:-1k,4k,16k,64k}" --depths "${GRID_DEPTHS:-0,25,50,75,100}" \
        --seeds "${GRID_SEEDS:-2}" ${NIAH_ARGS:-} >"$g-trials.tsv" 2>"$g.log" ||
        { tail -20 "$g.log"; exit 1; }
      "${PYTHON:-python3}" "$here/grid.py" "$g" "$g-trials.tsv" >/dev/null
    fi
    log "done; device: $(cat "$out/device.txt")"
    [ -n "$speed_methods" ] || { [ "${GRID:-0}" = 1 ] && cat "$g.md"; continue; }
    {
      printf 'method\tinput tokens\tfound\tselect s\tmodel tokens\tin llama_decode s\tplain llama.cpp s\tplain tok/s\tratio\tpeak RSS MiB\n'
      cat "$out"/speed-*.tsv | awk -F '\t' '$1 != "method" {
        printf "%s\t%s\t%s\t%.2f\t%s\t%.2f\t%.2f\t%.0f\t%.3f\t%.0f\n", $1, $7, $8, $9 / 1e3, $12, $14 / 1e3,
          $18 / 1e3, ($18 > 0 ? $12 / ($18 / 1e3) : 0), $19, $17 / 1024 }'
    } >"$out/summary.tsv"
    if command -v column >/dev/null; then column -t -s "$(printf '\t')" "$out/summary.tsv"; else cat "$out/summary.tsv"; fi
    ;;
  *) echo "gpu.sh: unknown step $step (build, model, run)" >&2; exit 2 ;;
  esac
done
