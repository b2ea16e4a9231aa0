#!/usr/bin/env python3
"""gen_shards.py N DIM SHARDS OUTDIR: clustered unit vectors as raw float32
shards (NAME.f32) with their ids (NAME.ids), for ctxd-corpus benchmarks."""
import sys, os
import numpy as np
n, dim, S, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
os.makedirs(out, exist_ok=True)
C = max(8, int(n ** 0.5) // 2)
rng = np.random.default_rng(1)
cen = rng.normal(size=(C, dim)).astype(np.float32)
per = (n + S - 1) // S
for s in range(S):
    a, b = s * per, min(n, (s + 1) * per)
    lab = rng.integers(0, C, size=b - a)
    x = cen[lab] + rng.normal(scale=0.6, size=(b - a, dim)).astype(np.float32)
    x.astype(np.float32).tofile(os.path.join(out, "s%03d.f32" % s))
    with open(os.path.join(out, "s%03d.ids" % s), "w") as f:
        f.write("".join("d%d\n" % i for i in range(a, b)))
