"""test_request_limits - per-request work limits (the [limits] options and
the fixed ones; test_limits covers the server's), each answered
RESOURCE_EXHAUSTED with a message naming the limit and its value, changing
nothing, the daemon serving on:

- limits.max_docs_per_stream: a PutStream past it ends after the documents
  before were acknowledged (and stored); the rest are not stored;
- limits.max_select_tokens: SelectContext and SelectContextStream of a text
  or a stored document over it;
- limits.max_job_docs: a Reorder job whose JSONL file or collection holds
  more documents fails RESOURCE_EXHAUSTED (GetJob says so);
- k, SearchBatch size and Reorder k and doc_ids over their fixed limits;
- repeated fields counted before unpacking: a PutRequest of millions of
  empty metadata entries or chunks and a ReorderRequest of millions of empty
  doc_ids are refused without the daemon's peak memory growing by the
  hundreds of megabytes protobuf-c would have allocated for them.

Each daemon runs with small limits, so every case takes well under a second.
"""

import os

import grpc

from corpus_gen import make_corpus, write_jsonl
from ctxd_harness import SLOW, Daemon, Report, health_ok, pb, put_req

D = pb.documents_pb2
R = pb.retrieval_pb2
C = pb.corpus_pb2
T = 30 * SLOW
RE = grpc.StatusCode.RESOURCE_EXHAUSTED
IA = grpc.StatusCode.INVALID_ARGUMENT
NF = grpc.StatusCode.NOT_FOUND
SENTENCE = "The lighthouse keeper walked along the rocky shore at dawn. "


def get(s, id, collection=""):
    return s.docs.Get(D.GetRequest(id=id, collection=collection), timeout=T)


def serves(r, s, what):
    r.check(health_ok(s), what + ": the daemon still serves")
    r.eq(s.docs.Put(put_req("after-" + what.replace(" ", "-"), "Still here."),
                    timeout=T).id, "after-" + what.replace(" ", "-"),
         what + ": and stores documents")


def case_stream(r, s):
    acked = []

    def run(ids):
        it = s.docs.PutStream(iter([put_req(i, "Text of %s." % i) for i in ids]), timeout=T)
        for ack in it:
            acked.extend(ack.ids)

    ids = ["s%d" % i for i in range(8)]
    r.raises(RE, lambda: run(ids), "the 6th document of a stream limited to 5",
             contains=["limits.max_docs_per_stream", "(5)"])
    r.eq(sorted(acked), ids[:5], "the first 5 were acknowledged")
    r.eq([get(s, i).document.id for i in ids[:5]], ids[:5], "... and stored")
    for i in ids[5:]:
        r.raises(NF, lambda i=i: get(s, i), "%s was not stored" % i)
    acked.clear()
    run(["t%d" % i for i in range(5)])
    r.eq(len(acked), 5, "a new stream of 5 goes through")
    serves(r, s, "stream")


def case_select(r, s):
    long_text = SENTENCE * 40   # about 400 tokens
    short = SENTENCE * 3

    def sel(**kw):
        return s.retrieval.SelectContext(R.SelectContextRequest(
            question="Who walked along the shore?", method="bm25", token_budget=16, **kw),
            timeout=T)

    res = sel(text=short)
    r.check(res.tokens > 0, "a text under the limit is selected from")
    r.raises(RE, lambda: sel(text=long_text), "an inline text over the limit",
             contains=["limits.max_select_tokens", "(100)"])
    s.docs.Put(put_req("long", long_text), timeout=T)
    r.raises(RE, lambda: sel(doc_id="long"), "a stored document over the limit",
             contains="limits.max_select_tokens")

    def stream():
        return list(s.retrieval.SelectContextStream(R.SelectContextRequest(
            question="Who?", method="bm25", text=long_text), timeout=T))

    r.raises(RE, stream, "SelectContextStream over the limit",
             contains="limits.max_select_tokens")
    serves(r, s, "select")


def case_job_docs(r, s, work):
    docs, _ = make_corpus(clusters=2, per_cluster=10, dups=0)   # 20 documents
    big = os.path.join(work, "big.jsonl")
    write_jsonl(big, docs)
    small = os.path.join(work, "small.jsonl")
    write_jsonl(small, docs[:10])

    def run(out, **kw):
        return list(s.corpus.Reorder(C.ReorderRequest(output_dir=os.path.join(work, out),
                                                      window_tokens=512, **kw), timeout=T))

    r.eq(run("ok", input_jsonl=small)[-1].state, "done", "a job of 10 documents runs")
    jid = []

    def big_job():
        for ev in s.corpus.Reorder(C.ReorderRequest(output_dir=os.path.join(work, "big"),
                                                    input_jsonl=big, window_tokens=512),
                                   timeout=T):
            jid.append(ev.job_id)

    r.raises(RE, big_job, "a JSONL file of 20 documents over limits.max_job_docs = 10",
             contains=["limits.max_job_docs", "(10)"])
    j = s.corpus.GetJob(C.GetJobRequest(job_id=jid[0]), timeout=T)
    r.eq((j.state, j.error_status), ("failed", "RESOURCE_EXHAUSTED"),
         "GetJob: failed RESOURCE_EXHAUSTED")
    for d in docs:
        s.docs.Put(D.PutRequest(document=D.Document(id=d["id"], text=d["text"],
                                                    collection="many")), timeout=T)
    r.raises(RE, lambda: run("coll", collection="many"),
             "a collection of 20 documents over the limit", contains="limits.max_job_docs")
    r.raises(RE, lambda: run("k", input_jsonl=small, k=1001), "Reorder k 1001",
             contains="1000")
    r.raises(RE, lambda: run("ids", collection="many",
                             doc_ids=["d%d" % i for i in range(100001)]),
             "Reorder with 100,001 doc_ids", contains="100000")
    serves(r, s, "jobs")


def case_search(r, s):
    r.raises(RE, lambda: s.retrieval.Search(R.SearchRequest(text="shore", k=1001), timeout=T),
             "Search k 1001", contains=["k 1001", "1000"])
    big = [R.SearchRequest(text="x")] * 1025
    r.raises(RE, lambda: s.retrieval.SearchBatch(R.SearchBatchRequest(queries=big), timeout=T),
             "SearchBatch of 1025 queries", contains=["1025", "1024"])
    r.raises(RE, lambda: s.retrieval.Search(
        R.SearchRequest(text="x", doc_ids=["a"] * 10001), timeout=T),
        "a filter of 10,001 doc_ids", contains="10000")
    r.raises(RE, lambda: s.retrieval.Search(R.SearchRequest(
        text=" ".join("w%d" % i for i in range(1100)), mode="lexical"), timeout=T),
        "a lexical query of 1100 distinct terms", contains="1024")
    serves(r, s, "search")


# -- repeated fields counted on the wire --------------------------------------

def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7f) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def peak_rss_kib(d):
    with open("/proc/%d/status" % d.proc.pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def raw(s, method):
    return s.channel.unary_unary(method, request_serializer=lambda b: b,
                                 response_deserializer=lambda b: b)


def case_wire_counts(r, d, s):
    n = 3000000   # 6 MB of two-byte elements
    empty_meta = field(3, b"") * n
    put = field(1, field(1, b"wide") + field(2, b"Text.") + empty_meta)
    before = peak_rss_kib(d)
    r.raises(IA, lambda: raw(s, "/ctxd.v1.Documents/Put")(put, timeout=T),
             "a Put of 3M empty metadata entries", contains=["wide", "3000000", "1024"])
    chunks = field(1, field(1, b"chunky") + field(2, b"Text.") + field(5, b"") * n)
    r.raises(IA, lambda: raw(s, "/ctxd.v1.Documents/Put")(chunks, timeout=T),
             "a Put of 3M empty chunks", contains=["3000000", "1048576"])
    reorder = field(1, b"/tmp/x") + field(8, b"") * n
    r.raises(RE, lambda: raw(s, "/ctxd.v1.Corpus/Reorder")(reorder, timeout=T),
             "a Reorder of 3M empty doc_ids", contains=["3000000", "100000"])
    fetch = field(1, b"job-000000000001") + field(2, b"") * n
    r.raises(RE, lambda: raw(s, "/ctxd.v1.Corpus/FetchResult")(fetch, timeout=T),
             "a FetchResult naming 3M files", contains=["3000000", "64"])
    grew = peak_rss_kib(d) - before
    # protobuf-c would hold about 100 bytes per element: 300 MB for one of
    # these; the messages themselves are 6 MB each
    r.check(grew < 100 * 1024, "peak memory grew by less than 100 MiB", "%d KiB" % grew)
    r.raises(NF, lambda: get(s, "wide"), "nothing stored")
    serves(r, d.stubs(), "wire counts")


def main():
    r = Report("test_request_limits")
    with Daemon(r, args=["--limits.max_docs_per_stream", "5",
                         "--limits.max_select_tokens", "100",
                         "--limits.max_job_docs", "10",
                         "--putstream.batch_docs", "2"]) as d:
        s = d.stubs()
        r.case("PutStream: limits.max_docs_per_stream", case_stream, r, s)
        r.case("SelectContext: limits.max_select_tokens", case_select, r, s)
        r.case("Reorder: limits.max_job_docs, k, doc_ids", case_job_docs, r, s, d.tmp)
        r.case("Search: k, batch, filters, terms", case_search, r, s)
        r.case("repeated fields counted before unpacking", case_wire_counts, r, d, s)
    r.finish()


if __name__ == "__main__":
    main()
