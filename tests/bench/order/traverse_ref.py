#!/usr/bin/python3
"""traverse_ref.py - the reference for the traversal benchmark: the same
greedy approximate maximum-TSP path as index/order_path.c, in plain Python,
written the straightforward way: dicts for the undirected graph, residual
degrees in a list, and each jump takes min() over the unvisited documents.
With --heap the jumps use a heap with lazy deletion instead (the usual
optimisation; shown beside the straightforward figure).

Reads a kNN graph in ctxd's knn.ckpt format (see index/order.h) and the
normalised vectors beside it (GRAPH_FILE.vec, raw float32 rows: the
similarity across a jump is their dot product, as in ctxd), and prints one
tab-separated row: "python", seconds (undirected graph build + walk, not the
file reads) in wall-clock and CPU time (the machine is shared), mean cosine
of adjacent documents, jumps.

usage: traverse_ref.py [--heap] GRAPH_FILE
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


def undirected(n, k, nbr, sim):
    """An edge where either document lists the other."""
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
    return adj


def dot(vec, dim, a, b):
    a, b = a * dim, b * dim
    return sum(x * y for x, y in zip(vec[a:a + dim], vec[b:b + dim]))


def traverse(n, k, nbr, sim, vec):
    dim = len(vec) // n
    adj = undirected(n, k, nbr, sim)
    deg = [len(a) for a in adj]
    unvisited = set(range(n))
    path, sims, jumps = [], [], 0
    cur = None
    while unvisited:
        best, bw = None, -2.0
        if cur is not None:
            for u, w in adj[cur].items():
                if u in unvisited and w > bw:
                    best, bw = u, w
        if best is None:
            # at the start or stuck: an unvisited document of minimum
            # residual degree
            best = min(unvisited, key=deg.__getitem__)
            bw = 0.0
            if path:
                jumps += 1
                bw = dot(vec, dim, cur, best)
        unvisited.remove(best)
        path.append(best)
        sims.append(bw)
        for u in adj[best]:
            if u in unvisited:
                deg[u] -= 1
        cur = best
    mean = sum(sims[1:]) / (n - 1) if n > 1 else float("nan")
    return path, mean, jumps


def traverse_heap(n, k, nbr, sim, vec):
    dim = len(vec) // n
    adj = undirected(n, k, nbr, sim)
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
                bw = dot(vec, dim, cur, v)
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
    args = sys.argv[1:]
    heap = args[:1] == ["--heap"]
    if heap:
        args = args[1:]
    if len(args) != 1:
        sys.exit(__doc__)
    n, k, nbr, sim, vec = read_graph(args[0])
    t0, c0 = time.perf_counter(), time.process_time()
    path, mean, jumps = (traverse_heap if heap else traverse)(n, k, nbr, sim,
                                                              vec)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    assert len(set(path)) == n
    name = "python-heap" if heap else "python"
    print(f"{name}\t{dt:.4f}\t{dc:.4f}\t{mean:.6f}\t{jumps}")


if __name__ == "__main__":
    main()
