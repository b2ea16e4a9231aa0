"""corpus_gen - small corpora with well-separated topic clusters for the
corpus job tests (test_reorder*.py, test_ctxctl_reorder.py), and checks of
a job's output files.

    from corpus_gen import make_corpus, write_jsonl, read_jsonl, check_iclm
    docs, dups = make_corpus(clusters=5, per_cluster=40, seed=7)
    # docs: [{"id", "text", "cluster"}], in input order; dups: {copy: original}

Each cluster has a vocabulary of its own (made-up words built from
syllables only that cluster uses) plus a few function words every cluster
shares, so the texts read like (nonsense) prose and the hash embedder puts
a document far closer to its own cluster than to any other. A few
near-duplicates (a copy of an earlier document with one word changed) are
appended; the job must report them.
"""

import json
import random

_SYLLABLES = [
    ["ka", "lo", "mi", "ru", "te"], ["bra", "qui", "sol", "fen", "dap"],
    ["zor", "vix", "hul", "pem", "gaw"], ["tri", "olm", "nax", "ceb", "yud"],
    ["spa", "ker", "wob", "lin", "fru"], ["dro", "mev", "sik", "ula", "bon"],
    ["gle", "tup", "rha", "ivo", "cas"], ["pho", "nid", "zeb", "orf", "ame"],
]
_SHARED = ["the", "of", "and", "a", "in", "to", "is", "that", "with", "as"]


def _vocab(rng, c, n=80):
    sy = _SYLLABLES[c % len(_SYLLABLES)]
    words = set()
    while len(words) < n:
        words.add("".join(rng.choice(sy) for _ in range(rng.randint(2, 3))))
    return sorted(words)


def _text(rng, vocab, n_words):
    sents, n = [], 0
    while n < n_words:
        k = rng.randint(6, 14)
        w = [rng.choice(vocab) if rng.random() < 0.75 else rng.choice(_SHARED)
             for _ in range(k)]
        w[0] = w[0].capitalize()
        sents.append(" ".join(w) + ".")
        n += k
    return " ".join(sents)


def make_corpus(clusters=5, per_cluster=40, seed=7, words=(60, 140), dups=3,
                shuffle=True):
    """(docs, dups): docs in input order (clusters interleaved when
    `shuffle`), each {"id", "text", "cluster"}; the last `dups` documents
    are near-copies of earlier ones, dups maps their id to the original."""
    rng = random.Random(seed)
    vocabs = [_vocab(rng, c) for c in range(clusters)]
    docs = []
    for c in range(clusters):
        for i in range(per_cluster):
            docs.append({"id": "c%d-doc%03d" % (c, i),
                         "text": _text(rng, vocabs[c], rng.randint(*words)),
                         "cluster": c})
    if shuffle:
        rng.shuffle(docs)
    copies = {}
    for j in range(dups):
        orig = docs[j * 7 % len(docs)]
        w = orig["text"].split(" ")
        w[-1] = rng.choice(vocabs[orig["cluster"]]) + "."
        d = {"id": "dup%d-of-%s" % (j, orig["id"]), "text": " ".join(w),
             "cluster": orig["cluster"]}
        docs.append(d)
        copies[d["id"]] = orig["id"]
    return docs, copies


def write_jsonl(path, docs, vectors=None):
    """One {"id", "text"[, "vector"]} line per document."""
    with open(path, "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            o = {"id": d["id"], "text": d["text"]}
            if vectors is not None:
                o["vector"] = vectors[i]
            f.write(json.dumps(o) + "\n")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def same_cluster_ratio(order_ids, cluster_of):
    pairs = list(zip(order_ids, order_ids[1:]))
    if not pairs:
        return 1.0
    same = sum(1 for a, b in pairs if cluster_of[a] == cluster_of[b])
    return same / len(pairs)


def check_iclm(out_dir, docs, window):
    """Problems with an iclm job's files (empty list: none): every document
    exactly once in order.jsonl except the reported duplicates, positions
    0..n-1, windows of at most `window` tokens that hold the documents in
    the order's order, window numbers that match."""
    probs = []
    order = read_jsonl(out_dir + "/order.jsonl")
    dup = read_jsonl(out_dir + "/duplicates.jsonl")
    wins = read_jsonl(out_dir + "/windows.jsonl")
    ids = [o["id"] for o in order]
    dup_ids = {d["id"] for d in dup}
    want = {d["id"] for d in docs}
    if len(ids) != len(set(ids)):
        probs.append("a document appears twice in order.jsonl")
    if set(ids) | dup_ids != want or set(ids) & dup_ids:
        probs.append("order + duplicates != input: missing %s, extra %s" % (
            sorted(want - set(ids) - dup_ids)[:5],
            sorted((set(ids) | dup_ids) - want)[:5]))
    if [o["position"] for o in order] != list(range(len(order))):
        probs.append("positions are not 0..n-1")
    seq = []
    for i, w in enumerate(wins):
        if w["window"] != i:
            probs.append("window %d numbered %d" % (i, w["window"]))
        if w["tokens"] > window:
            probs.append("window %d has %d tokens > %d" % (i, w["tokens"], window))
        for p in w["documents"]:
            if not seq or seq[-1] != p["id"] or p["start"] == 0:
                seq.append(p["id"])
    if seq != ids:
        probs.append("the windows do not hold the documents in order")
    first_window = {}
    for w in wins:
        for p in w["documents"]:
            first_window.setdefault(p["id"], w["window"])
    for o in order:
        if first_window.get(o["id"]) != o.get("window"):
            probs.append("%s: window %s in order.jsonl, first in window %s" % (
                o["id"], o.get("window"), first_window.get(o["id"])))
            break
    return probs
