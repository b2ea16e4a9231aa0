#!/usr/bin/python3
"""traverse_ref.py - the reference for the traversal benchmark: the same
greedy approximate maximum-TSP path as index/order_path.c, written the
straightforward way in plain Python (dicts for the undirected graph, a heap
with lazy deletion for the minimum residual degree).

Reads a kNN graph in ctxd's knn.ckpt format (see index/order.h) and the
normalised vectors beside it (GRAPH_FILE.vec, raw float32 rows: the
similarity across a jump is their dot product, as in ctxd), and prints one
tab-separated row: "python", seconds (undirected graph build + walk, not the
file reads), mean cosine of adjacent documents, jumps.

usage: traverse_ref.py GRAPH_FILE
"""
import heapq
import struct
import sys
import time
from array import array

NONE = 0xFFFFFFFF


def read_graph(path):
    with open(path, "rb") as f:
        head = f.read(8 + 4 + 4 + 8 + 8 + 4 + 4 + 64)
        if head[:8] != b"CTXDKNN1":
            sys.exit(f"{path}: not a knn.ckpt file")
        _version, k, n = struct.unpack_from("<IIQ", head, 8)
        nbr = array("I")
        nbr.frombytes(f.read(4 * n * k))
        sim = array("f")
        sim.frombytes(f.read(4 * n * k))
    vec = array("f")
    with open(path + ".vec", "rb") as f:
        vec.frombytes(f.read())
    if sys.byteorder != "little":
        nbr.byteswap()
        sim.byteswap()
        vec.byteswap()
    return n, k, nbr, sim, vec


def traverse(n, k, nbr, sim, vec):
    dim = len(vec) // n
    # undirected graph: an edge where either document lists the other
    adj = [dict() for _ in range(n)]
    for i in range(n):
        base = i * k
        for c in range(k):
            j = nbr[base + c]
            if j == NONE or j == i:
                continue
            s = sim[base + c]
            if s > adj[i].get(j, -2.0):
                adj[i][j] = s
                adj[j][i] = s
    deg = [len(a) for a in adj]
    heap = [(deg[v], v) for v in range(n)]
    heapq.heapify(heap)
    visited = [False] * n
    path, sims, jumps = [], [], 0
    cur = None
    while len(path) < n:
        best, bw = None, -2.0
        if cur is not None:
            for u, w in adj[cur].items():
                if not visited[u] and w > bw:
                    best, bw = u, w
        if best is None:
            # stuck (or at the start): an unvisited document of minimum
            # residual degree; stale heap entries are skipped
            while True:
                d, v = heapq.heappop(heap)
                if not visited[v] and d == deg[v]:
                    break
            best, bw = v, 0.0
            if path:
                jumps += 1
                a, b = cur * dim, v * dim
                bw = sum(x * y for x, y in zip(vec[a:a + dim], vec[b:b + dim]))
        visited[best] = True
        path.append(best)
        sims.append(bw)
        for u in adj[best]:
            if not visited[u]:
                deg[u] -= 1
                heapq.heappush(heap, (deg[u], u))
        cur = best
    mean = sum(sims[1:]) / (n - 1) if n > 1 else float("nan")
    return path, mean, jumps


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    n, k, nbr, sim, vec = read_graph(sys.argv[1])
    t0 = time.perf_counter()
    path, mean, jumps = traverse(n, k, nbr, sim, vec)
    dt = time.perf_counter() - t0
    assert len(set(path)) == n
    print(f"python\t{dt:.4f}\t{mean:.6f}\t{jumps}")


if __name__ == "__main__":
    main()
