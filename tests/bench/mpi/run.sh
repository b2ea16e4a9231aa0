#!/bin/bash
# run.sh [N] [DIM] [RANKS...]: strong scaling of ctxd-corpus (mode order,
# raw float32 shards, one thread per rank) on this machine's cores: time per
# phase, bytes sent between ranks and parallel efficiency against 1 rank.
#   CORPUS=path/to/ctxd-corpus MPIRUN=mpirun tests/bench/mpi/run.sh 1000000 64
# With a bundle from bundle.sh (another machine, e.g. the device machine):
#   tar xJf mpib.tar.xz; BUNDLE=$PWD/mpib tests/bench/mpi/run.sh ...
set -euo pipefail
N=${1:-1000000} DIM=${2:-64}; shift 2 || true
RANKS=${*:-1 2 4 8 16}
W=${WORK:-/tmp/ctxd-bench-mpi}
mkdir -p "$W"
GEN=${GEN:-$(dirname "$0")/gen_shards.py}
if [ -n "${BUNDLE:-}" ]; then
  # the bundle's own glibc only when it carries one (BUNDLE_GLIBC=1 in
  # bundle.sh: a machine with an older glibc); else the machine's
  L=
  if [ -e "$BUNDLE/lib/ld-linux-x86-64.so.2" ]; then
    L="$BUNDLE/lib/ld-linux-x86-64.so.2 --library-path $BUNDLE/lib"
  fi
  export LD_LIBRARY_PATH=$BUNDLE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  printf '#!/bin/sh\nexec %s %s/bin/ctxd-corpus "$@"\n' "$L" "$BUNDLE" > "$W/corpus.sh"
  chmod +x "$W/corpus.sh"
  CORPUS=$W/corpus.sh
  MPIRUN="$L $BUNDLE/bin/orterun"
  export OPAL_PREFIX=$BUNDLE OMPI_MCA_mca_base_component_path=$BUNDLE/plugins
  export PMIX_MCA_mca_base_component_path=$BUNDLE/pmix2/lib/pmix OPAL_PKGDATADIR=$BUNDLE/share/openmpi
  GEN=$BUNDLE/bin/gen_shards.py
fi
CORPUS=${CORPUS:-build/ctxd-corpus} MPIRUN=${MPIRUN:-mpirun}
D=$W/data-$N-$DIM
[ -e "$D/s015.ids" ] || python3 "$GEN" "$N" "$DIM" 16 "$D"
ROOT=; [ "$(id -u)" = 0 ] && ROOT=--allow-run-as-root
for r in $RANKS; do
  rm -rf "$W/out-$r"
  $MPIRUN $ROOT -np "$r" --oversubscribe --bind-to core \
    --mca btl self,vader --mca pml ob1 "$CORPUS" --mode order --dim "$DIM" \
    --threads 1 --out "$W/out-$r" "$D"/s*.f32 2> "$W/log-$r" || { tail -20 "$W/log-$r"; exit 1; }
done
# TABLE="1 2 4 8 16": the ranks the table shows (default RANKS), so that
# runs split over several calls on one machine are tabled together
python3 - "$W" ${TABLE:-$RANKS} <<'PY'
import json, sys
w, ranks = sys.argv[1], [int(r) for r in sys.argv[2:]]
rows = {}
for r in ranks:
    m = json.load(open("%s/out-%d/manifest.json" % (w, r)))["mpi"]
    s = json.load(open("%s/out-%d/summary.json" % (w, r)))
    rows[r] = (m, s)
ranks.sort()
base = rows[ranks[0]][0]
print("| ranks | read s | knn s | traverse s | pack s | total s | knn MB sent | traverse MB sent | pack MB sent | knn efficiency | total efficiency | search CPU s (slowest rank) | search efficiency | adjacent sim | method |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
cbase = base["knn_search_cpu_seconds"]["max"]
phases = ("read", "knn", "traverse", "pack")
tbase = sum(base[p]["seconds"] for p in phases)
for r in ranks:
    m, s = rows[r]
    eff = base["knn"]["seconds"] * ranks[0] / (m["knn"]["seconds"] * r)
    c = m["knn_search_cpu_seconds"]["max"]
    tot = sum(m[p]["seconds"] for p in phases)
    print("| %d | %.2f | %.2f | %.2f | %.2f | %.2f | %.1f | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %.4f | %s |" % (
        r, m["read"]["seconds"], m["knn"]["seconds"], m["traverse"]["seconds"],
        m["pack"]["seconds"], tot, m["knn"]["bytes_sent"] / 1e6,
        m["traverse"]["bytes_sent"] / 1e6, m["pack"]["bytes_sent"] / 1e6, eff,
        tbase * ranks[0] / (tot * r), c,
        cbase * ranks[0] / (c * r) if c else float("nan"),
        s["adjacent_similarity"], s["knn"]["method"]))
PY
