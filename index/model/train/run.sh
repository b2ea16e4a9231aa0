#!/bin/sh
# run.sh - the exact steps that made index/model/ctxd-mini.gguf.
#   run.sh data WORK          Debian packages -> WORK/tok/{train,heldout}.u16, synsets.json
#   run.sh train1 WORK OUT    stage 1 (GPU, 2,048-token sequences, ~9 minutes)
#   run.sh train2 WORK OUT    stage 2 (GPU, resumes stage 1's stable state, 4,096 tokens)
#   run.sh export OUT         OUT/weights.npz.part* -> ../ctxd-mini.gguf, its checksum,
#                             tests/model/ctxd-mini.logits
#   run.sh ppl BUILD WORK     held-out perplexity of the GGUF through ctxd (ppl_lm)
# VOCAB: the GPT-2 vocabulary GGUF (default: the one in the llama.cpp source
# that the build uses, under $CTXD_DEPS_DIR). Needs /usr/bin/python3 with
# numpy and regex (python3-numpy, python3-regex); training needs PyTorch >= 2.
# Stages 1 and 2 ran on one H200 (PyTorch 2.11, bf16) as one command each;
# the stable state (--stable) stays on that machine between the two.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
VOCAB=${VOCAB:-$(ls "${CTXD_DEPS_DIR:-$HOME/.cache/ctxd-deps}"/llama.cpp-*/models/ggml-vocab-gpt-2.gguf | head -1)}
py=/usr/bin/python3
REF_TEXT="Debian packages are built from source packages. The value of key violin-4721 is 8832615. Each source package has a control file that names its maintainer and its build dependencies.
Q: What is the value of key violin-4721?
A: 8832615."

case "${1:-}" in
data)
  w=$2
  $py "$here/data.py" fetch "$w"
  $py "$here/data.py" render "$w"
  $py "$here/data.py" tokens "$w" "$VOCAB" "$w/tok"
  $py "$here/tasks.py" synsets "$w/root/usr/share/wordnet" "$w/docs.jsonl" "$w/tok/synsets.json"
  ;;
train1)
  python3 "$here/train.py" --data "$2/tok" --vocab "$VOCAB" --synsets "$2/tok/synsets.json" \
    --out "$3" --stable /tmp/ctxd-stable.pt --deadline 535 --decay 100 --warmup 100 --seed 1234
  ;;
train2)
  python3 "$here/train.py" --data "$2/tok" --vocab "$VOCAB" --synsets "$2/tok/synsets.json" \
    --out "$3" --stable /tmp/ctxd-stable.pt --resume --seq 4096 --batch 16 --accum 2 \
    --deadline 540 --decay 130 --warmup 100 --seed 1234
  ;;
export)
  cat "$2"/weights.npz.part* > "$2/weights.npz"
  $py "$here/export.py" "$2/weights.npz" "$2/config.json" "$VOCAB" "$here/../ctxd-mini.gguf" \
    --ref "$root/tests/model/ctxd-mini.logits" --ref-text "$REF_TEXT"
  (cd "$here/.." && sha256sum ctxd-mini.gguf > ctxd-mini.gguf.sha256)
  ;;
ppl)
  cmake --build "$2" --target ppl_lm >/dev/null
  "$2/tests/ppl_lm" "$here/../ctxd-mini.gguf" "$3/tok/heldout.u16" 2048 0 2
  ;;
*)
  sed -n '2,14p' "$0"
  exit 2
  ;;
esac
