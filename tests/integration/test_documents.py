#!/usr/bin/python3
"""Documents and Admin over the wire with stock grpcio stubs: Put/Get (text,
chunks, metadata), replace, List paging, Delete, the Chunk RPC (no store
write), generated ids, the 1024-byte id limit, Stats counters, Verify."""

import random

import grpc

from ctxd_harness import (Daemon, Report, SLOW, chunk_problems, list_all, make_text,
                          pb, put_req, stats, verify)

D = pb.documents_pb2
T = 30 * SLOW


def get(s, id, text=True, chunks=True):
    return s.docs.Get(D.GetRequest(id=id, with_text=text, with_chunks=chunks), timeout=T)


def case_put_get(r, s, rng):
    text = make_text(rng, words=900, paragraphs=6)
    meta = {"lang": "en", "source": "unit", "ключ": "значение", "empty": ""}
    before = stats(s)
    p = s.docs.Put(put_req("doc-1", text, meta), timeout=T)
    r.eq(p.id, "doc-1", "Put returns the client id")
    r.check(p.chunks >= 2, "a 900-word text makes several chunks", p.chunks)
    r.eq(p.replaced, False, "first Put is not a replacement")
    r.check(p.tokens > 0, "Put reports tokens", p.tokens)

    g = get(s, "doc-1")
    r.eq(g.document.id, "doc-1", "Get: id")
    r.eq(g.document.text, text, "Get with_text: text equal to what was sent")
    r.eq(dict(g.document.metadata), meta, "Get: metadata equal")
    r.eq(g.bytes, len(text.encode()), "Get: bytes = UTF-8 length")
    r.eq(g.tokens, p.tokens, "Get: tokens = Put's tokens")
    r.eq(len(g.chunks), p.chunks, "Get with_chunks: chunk count = Put's")
    r.eq(sum(c.tokens for c in g.chunks), g.tokens, "chunk tokens sum to the document's")
    r.eq(chunk_problems(text, g.chunks, doc_id="doc-1", with_text=True), [],
         "chunks cover the text in order, on char boundaries, with their text")

    g2 = get(s, "doc-1", text=False, chunks=True)
    r.eq(g2.document.text, "", "Get without with_text: no text")
    r.eq(len(g2.chunks), p.chunks, "Get with_chunks only: chunks present")
    r.check(all(c.text == "" for c in g2.chunks), "chunk text only with with_text")
    r.eq(g2.bytes, len(text.encode()), "Get without text still reports bytes")
    g3 = get(s, "doc-1", text=False, chunks=False)
    r.eq(len(g3.chunks), 0, "Get without with_chunks: no chunks")
    r.eq(dict(g3.document.metadata), meta, "metadata returned without text")

    after = stats(s)
    r.eq(after.documents - before.documents, 1, "Stats.documents +1")
    r.eq(after.chunks - before.chunks, p.chunks, "Stats.chunks + Put's chunks")
    r.eq(after.bytes - before.bytes, len(text.encode()), "Stats.bytes + text bytes")
    r.eq(after.tokens - before.tokens, p.tokens, "Stats.tokens + Put's tokens")
    r.check(after.last_seq > before.last_seq, "Stats.last_seq advances on Put",
            (before.last_seq, after.last_seq))

    r.raises(grpc.StatusCode.NOT_FOUND, lambda: get(s, "no-such-doc"),
             "Get of a missing id: NOT_FOUND")


def case_chunk_options(r, s, rng):
    text = make_text(rng, words=600, paragraphs=4)
    small = s.docs.Put(put_req("opts-small", text, max_tokens=40), timeout=T)
    big = s.docs.Put(put_req("opts-big", text, max_tokens=4000), timeout=T)
    r.check(small.chunks > big.chunks, "smaller max_tokens gives more chunks",
            (small.chunks, big.chunks))
    r.eq(big.chunks, 1, "a 600-word text fits one 4000-token chunk")
    g = get(s, "opts-small")
    r.check(all(c.tokens <= 40 for c in g.chunks), "every chunk <= max_tokens (40)",
            [c.tokens for c in g.chunks])
    r.eq(chunk_problems(text, g.chunks, with_text=True), [], "max_tokens=40 chunks cover the text")
    ov = s.docs.Put(put_req("opts-overlap", text, max_tokens=40, overlap_tokens=10), timeout=T)
    g = get(s, "opts-overlap")
    r.check(ov.chunks >= small.chunks, "overlap does not reduce the chunk count",
            (ov.chunks, small.chunks))
    overl = sum(1 for a, b in zip(g.chunks, g.chunks[1:]) if b.byte_start < a.byte_end)
    r.check(overl > 0, "overlap_tokens=10: chunks overlap their predecessor", overl)
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: s.docs.Put(put_req("opts-bad", text, max_tokens=10, overlap_tokens=10),
                                timeout=T),
             "overlap_tokens >= max_tokens: INVALID_ARGUMENT")


def case_replace(r, s, rng):
    t1 = make_text(rng, words=800, paragraphs=5)
    t2 = make_text(rng, words=120, paragraphs=1)
    p1 = s.docs.Put(put_req("rep", t1, {"v": "1", "old": "x"}), timeout=T)
    before = stats(s)
    p2 = s.docs.Put(put_req("rep", t2, {"v": "2"}), timeout=T)
    r.eq(p2.replaced, True, "second Put of an id reports replaced")
    r.check(p2.chunks < p1.chunks, "replacement with a shorter text has fewer chunks",
            (p1.chunks, p2.chunks))
    g = get(s, "rep")
    r.eq(g.document.text, t2, "Get after replace returns the new text")
    r.eq(dict(g.document.metadata), {"v": "2"}, "metadata replaced, not merged")
    r.eq(len(g.chunks), p2.chunks, "old chunks are gone (count = new Put's)")
    r.eq(chunk_problems(t2, g.chunks, doc_id="rep", with_text=True), [],
         "new chunks cover the new text")
    after = stats(s)
    r.eq(after.documents, before.documents, "replace keeps Stats.documents")
    r.eq(after.chunks - before.chunks, p2.chunks - p1.chunks, "Stats.chunks drops the old chunks")
    r.eq(after.bytes - before.bytes, len(t2.encode()) - len(t1.encode()),
         "Stats.bytes counts only the new text")


def case_list_paging(r, s, rng):
    want = {}
    for i in range(257):
        id = "list-%03d" % i
        t = make_text(rng, words=rng.randint(5, 60), paragraphs=1)
        p = s.docs.Put(put_req(id, t, {"i": str(i)}), timeout=T)
        want[id] = (len(t.encode()), p.chunks, p.tokens)
    seen, token, pages = [], "", 0
    infos = {}
    while True:
        resp = s.docs.List(D.ListRequest(page_size=7, page_token=token), timeout=T)
        pages += 1
        if len(resp.documents) > 7:
            r.check(False, "page_size=7 pages hold at most 7", len(resp.documents))
            break
        for d in resp.documents:
            seen.append(d.id)
            infos[d.id] = d
        token = resp.next_page_token
        if not token or pages > 10000:
            break
    r.eq(len(seen), len(set(seen)), "List: no id repeated across pages")
    total = stats(s).documents
    r.eq(len(seen), total, "List: pages cover Stats.documents")
    r.check(set(want) <= set(seen), "List: every stored id seen",
            sorted(set(want) - set(seen))[:5])
    r.check(pages >= total // 7, "List paged (page_size respected)", pages)
    bad = [id for id, (b, c, t) in want.items()
           if id in infos and (infos[id].bytes, infos[id].chunks, infos[id].tokens) != (b, c, t)]
    r.eq(bad, [], "List: bytes/chunks/tokens match each Put")
    r.check(all(infos[id].metadata.get("i") == id[5:].lstrip("0") or
                infos[id].metadata.get("i") == str(int(id[5:])) for id in want if id in infos),
            "List: metadata returned")
    d = s.docs.List(D.ListRequest(page_size=0), timeout=T)
    r.check(0 < len(d.documents) <= 100 and d.next_page_token != "",
            "page_size 0: default page (<= 100) with a next token", len(d.documents))
    big = s.docs.List(D.ListRequest(page_size=10000), timeout=T)
    r.eq(len(big.documents), total, "page_size 10000 returns everything in one page")
    r.eq(big.next_page_token, "", "last page has an empty token")
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: s.docs.List(D.ListRequest(page_size=5, page_token="not-a-token!"), timeout=T),
             "List with a garbage page_token: INVALID_ARGUMENT")


def case_delete(r, s, rng):
    t = make_text(rng, words=500, paragraphs=3)
    p = s.docs.Put(put_req("del-me", t), timeout=T)
    before = stats(s)
    d = s.docs.Delete(D.DeleteRequest(id="del-me"), timeout=T)
    r.eq(d.deleted, True, "Delete of a stored id: deleted=true")
    r.eq(d.chunks, p.chunks, "Delete reports the chunks removed")
    r.raises(grpc.StatusCode.NOT_FOUND, lambda: get(s, "del-me"), "Get after Delete: NOT_FOUND")
    after = stats(s)
    r.eq(before.documents - after.documents, 1, "Stats.documents -1")
    r.eq(before.chunks - after.chunks, p.chunks, "Stats.chunks - deleted chunks")
    r.eq(before.bytes - after.bytes, len(t.encode()), "Stats.bytes - deleted text")
    r.check(after.last_seq > before.last_seq, "Stats.last_seq advances on Delete")
    d2 = s.docs.Delete(D.DeleteRequest(id="del-me"), timeout=T)
    r.eq((d2.deleted, d2.chunks), (False, 0), "Delete again: deleted=false, not an error")
    d3 = s.docs.Delete(D.DeleteRequest(id="never-was"), timeout=T)
    r.eq(d3.deleted, False, "Delete of a never-stored id: deleted=false")
    r.check("del-me" not in {x.id for x in list_all(s)}, "List no longer shows it")
    p2 = s.docs.Put(put_req("del-me", "back again."), timeout=T)
    r.eq(p2.replaced, False, "Put after Delete is a fresh insert")


def case_chunk_rpc(r, s, rng):
    text = make_text(rng, words=700, paragraphs=5)
    before = stats(s)
    c = s.docs.Chunk(D.ChunkRequest(text=text, with_text=True,
                                    chunking=D.ChunkOptions(max_tokens=64)), timeout=T)
    r.check(len(c.chunks) >= 2, "Chunk RPC returns several chunks", len(c.chunks))
    r.eq(chunk_problems(text, c.chunks, with_text=True), [], "Chunk RPC chunks cover the text")
    r.check(all(x.tokens <= 64 for x in c.chunks), "Chunk RPC respects max_tokens")
    r.eq(c.tokens, sum(x.tokens for x in c.chunks), "Chunk RPC tokens = sum of chunks")
    r.check(c.tokenizer != "", "Chunk RPC names its tokenizer", c.tokenizer)
    c2 = s.docs.Chunk(D.ChunkRequest(text=text, chunking=D.ChunkOptions(max_tokens=64)), timeout=T)
    r.check(all(x.text == "" for x in c2.chunks), "Chunk without with_text: no chunk text")
    r.eq([(x.byte_start, x.byte_end) for x in c2.chunks],
         [(x.byte_start, x.byte_end) for x in c.chunks], "Chunk is deterministic")
    p = s.docs.Put(put_req("chunk-vs-put", text, max_tokens=64), timeout=T)
    g = get(s, "chunk-vs-put", text=False)
    r.eq([(x.byte_start, x.byte_end, x.tokens) for x in g.chunks],
         [(x.byte_start, x.byte_end, x.tokens) for x in c.chunks],
         "Chunk RPC and Put cut the same text the same way")
    s.docs.Delete(D.DeleteRequest(id="chunk-vs-put"), timeout=T)
    after = stats(s)
    r.eq((after.documents, after.chunks, after.bytes), (before.documents, before.chunks, before.bytes),
         "Chunk RPC writes nothing (Stats unchanged after put+delete of the control)")
    b0 = stats(s)
    s.docs.Chunk(D.ChunkRequest(text=text), timeout=T)
    b1 = stats(s)
    r.eq(b1.last_seq, b0.last_seq, "Chunk RPC does not append to the change log")
    _ = p


def case_generated_id(r, s, rng):
    p = s.docs.Put(put_req("", "A document without an id."), timeout=T)
    r.check(p.id != "", "empty id: the server generates one", p.id)
    g = get(s, p.id)
    r.eq(g.document.text, "A document without an id.", "generated id can be fetched")
    p2 = s.docs.Put(put_req("", "Another one."), timeout=T)
    r.check(p2.id != p.id, "generated ids differ", (p.id, p2.id))
    r.eq(p2.replaced, False, "generated id is a fresh insert")


def case_id_limits(r, s, rng):
    a1024 = "a" * 1024
    p = s.docs.Put(put_req(a1024, "long id text one."), timeout=T)
    r.eq(p.id, a1024, "1024-byte id accepted")
    r.eq(get(s, a1024).document.text, "long id text one.", "1024-byte id can be fetched")
    mb = "é" * 512  # 1024 bytes, 512 characters
    p = s.docs.Put(put_req(mb, "multibyte id."), timeout=T)
    r.eq(p.id, mb, "1024-byte multi-byte id accepted")
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: s.docs.Put(put_req("a" * 1025, "too long"), timeout=T),
             "1025-byte id: INVALID_ARGUMENT", contains="1024")
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: s.docs.Put(put_req("é" * 512 + "b", "too long"), timeout=T),
             "1025-byte multi-byte id: INVALID_ARGUMENT")
    # Ids past the LMDB key limit that share a long prefix must stay distinct.
    pre = "p" * 900
    s.docs.Put(put_req(pre + "-x", "first of the twins."), timeout=T)
    s.docs.Put(put_req(pre + "-y", "second of the twins."), timeout=T)
    r.eq(get(s, pre + "-x").document.text, "first of the twins.", "long ids with a shared prefix: first")
    r.eq(get(s, pre + "-y").document.text, "second of the twins.", "long ids with a shared prefix: second")
    r.raises(grpc.StatusCode.NOT_FOUND, lambda: get(s, pre + "-z"),
             "long id sharing the prefix but not stored: NOT_FOUND")
    d = s.docs.Delete(D.DeleteRequest(id=pre + "-x"), timeout=T)
    r.eq(d.deleted, True, "delete one long twin")
    r.eq(get(s, pre + "-y").document.text, "second of the twins.", "the other twin survives")


def case_metadata_limits(r, s, rng):
    """At most 1024 entries, keys of at most 256 bytes, 64 KiB of keys and
    values together; each limit is inclusive and named when exceeded."""
    ok = {"k%04d" % i: "v" for i in range(1024)}
    s.docs.Put(put_req("meta-max-entries", "Text.", ok), timeout=T)
    r.eq(len(get(s, "meta-max-entries").document.metadata), 1024, "1024 metadata entries accepted")
    too_many = dict(ok, extra="v")
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: s.docs.Put(put_req("meta-1025", "Text.", too_many), timeout=T),
             "1025 metadata entries: INVALID_ARGUMENT", contains=["1025", "1024", "meta-1025"])
    s.docs.Put(put_req("meta-key-256", "Text.", {"k" * 256: "v"}), timeout=T)
    r.eq(list(get(s, "meta-key-256").document.metadata), ["k" * 256], "256-byte key accepted")
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: s.docs.Put(put_req("meta-key-257", "Text.", {"k" * 257: "v"}), timeout=T),
             "257-byte metadata key: INVALID_ARGUMENT", contains=["257", "256", "key"])
    big = {"a": "x" * (65536 - 2), "b": ""}  # keys + values = 65536 bytes
    s.docs.Put(put_req("meta-64k", "Text.", big), timeout=T)
    r.eq(len(get(s, "meta-64k").document.metadata["a"]), 65534, "64 KiB of metadata accepted")
    over = {"a": "x" * (65536 - 2), "b": "y"}  # 65537 bytes
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: s.docs.Put(put_req("meta-64k+1", "Text.", over), timeout=T),
             "64 KiB + 1 of metadata: INVALID_ARGUMENT", contains=["65537", "65536"])
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: s.docs.Put(put_req("", "Text.", over), timeout=T),
             "a document without id is named as such", contains="(no id)")
    r.raises(grpc.StatusCode.NOT_FOUND, lambda: get(s, "meta-1025"),
             "a refused document is not stored")


def case_page_tokens(r, s, rng):
    for i in range(3):
        s.docs.Put(put_req("tok-%d" % i, "Token test %d." % i), timeout=T)
    total = stats(s).documents
    first = s.docs.List(D.ListRequest(page_size=10000, page_token=""), timeout=T)
    r.eq(len(first.documents), total, "page_token \"\": from the start")
    zero = s.docs.List(D.ListRequest(page_size=10000, page_token="0"), timeout=T)
    r.eq([d.id for d in zero.documents], [d.id for d in first.documents],
         "page_token \"0\": from the start")
    end = s.docs.List(D.ListRequest(page_size=10, page_token="18446744073709551615"),
                      timeout=T)
    r.eq((len(end.documents), end.next_page_token), (0, ""),
         "page_token 2^64-1: an empty last page")
    for bad in ("-1", "18446744073709551616", "99999999999999999999999", "12abc", " 1",
                "+1", "1 ", "0x10", "１"):
        r.raises(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda bad=bad: s.docs.List(D.ListRequest(page_token=bad), timeout=T),
                 "page_token %r: INVALID_ARGUMENT" % bad, contains="page_token")
    # A token taken from a page, reused after the document it names is
    # deleted, still continues right after it.
    p1 = s.docs.List(D.ListRequest(page_size=1), timeout=T)
    s.docs.Delete(D.DeleteRequest(id=p1.documents[0].id), timeout=T)
    p2 = s.docs.List(D.ListRequest(page_size=10000, page_token=p1.next_page_token), timeout=T)
    r.eq([d.id for d in p2.documents], [d.id for d in first.documents][1:],
         "a token stays valid after its document is deleted")


def case_list_byte_budget(r, s, rng):
    """A page stops early at about 3 MiB of encoded documents, so 10,000
    documents with large metadata still fit a default 4 MiB client limit;
    following next_page_token yields each of them once."""
    ids = ["bigmeta-%03d" % i for i in range(120)]
    for i in ids:
        s.docs.Put(put_req(i, "Text.", {"m": "x" * 60000}), timeout=T)
    seen, token, pages = [], "", 0
    while True:
        page = s.docs.List(D.ListRequest(page_size=10000, page_token=token), timeout=T)
        pages += 1
        seen += [d.id for d in page.documents if d.id.startswith("bigmeta-")]
        token = page.next_page_token
        if not token:
            break
    r.eq(seen, ids, "every large-metadata document listed once, in order")
    r.check(pages >= 3, "the 7 MB listing came in several pages (%d)" % pages)
    for i in ids:
        s.docs.Delete(D.DeleteRequest(id=i), timeout=T)


def case_chunk_count_limit(r, s, rng):
    """One document may make at most 2^20 chunks: a tiny max_tokens on a big
    text is RESOURCE_EXHAUSTED naming the limit, and nothing is written. A
    document's vectors may take at most 256 MiB: 1M chunks need a small
    embedding dimension."""
    before = stats(s).documents
    text = "a " * 1100000   # 1.1M one-token words
    req = D.PutRequest(document=D.Document(id="too-many-chunks", text=text),
                       chunking=D.ChunkOptions(max_tokens=1))
    r.raises(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: s.docs.Put(req, timeout=T),
             "1.1M chunks: RESOURCE_EXHAUSTED", contains=["too-many-chunks", "1048576", "max_tokens"])
    r.eq(stats(s).documents, before, "nothing written")
    ok = D.PutRequest(document=D.Document(id="many-chunks", text="a " * 1000000),
                      chunking=D.ChunkOptions(max_tokens=1))
    r.raises(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: s.docs.Put(ok, timeout=T),
             "1M chunks of the default dimension's vectors: RESOURCE_EXHAUSTED",
             contains=["many-chunks", "256 MiB"])
    r.eq(stats(s).documents, before, "nothing written")
    s.admin.CreateCollection(pb.admin_pb2.CreateCollectionRequest(config=pb.admin_pb2.CollectionConfig(
        name="dim16", embedder="hash:dim=16")), timeout=T)
    ok.document.collection = "dim16"
    r.eq(s.docs.Put(ok, timeout=T).chunks, 1000000, "1M chunks of 16-dimension vectors accepted")
    s.admin.DropCollection(pb.admin_pb2.DropCollectionRequest(name="dim16"), timeout=T)


def case_id_hash_boundaries(r, s, rng):
    """Ids around the LMDB key limit (511 bytes: shorter ids are the key,
    longer ones a 503-byte prefix plus a hash), all sharing that prefix, one
    with a multi-byte character cut by the prefix: put, get, replace,
    delete, with exact counters."""
    before = stats(s)
    pre = "h" * 502
    ids = [pre[:n] for n in (502,)] + [pre + "x" * (n - 502) for n in (503, 504, 510, 511, 512, 600, 1023, 1024)]
    ids += [pre + "é" + "z" * 100, pre + "é" + "z" * 101, "ü" * 512]
    for i, id in enumerate(ids):
        p = s.docs.Put(put_req(id, "text %d." % i), timeout=T)
        r.eq((p.id, p.replaced), (id, False), "%d-byte id stored fresh" % len(id.encode()))
    for i, id in enumerate(ids):
        r.eq(get(s, id).document.text, "text %d." % i, "%d-byte id reads its own text" % len(id.encode()))
    for i, id in enumerate(ids[::2]):
        p = s.docs.Put(put_req(id, "again %d." % i), timeout=T)
        r.eq(p.replaced, True, "%d-byte id replaced" % len(id.encode()))
    st = stats(s)
    r.eq(st.documents - before.documents, len(ids), "replacements keep the count")
    for id in ids[1::2]:
        r.eq(s.docs.Delete(D.DeleteRequest(id=id), timeout=T).deleted, True,
             "%d-byte id deleted" % len(id.encode()))
    for id in ids[1::2]:
        r.raises(grpc.StatusCode.NOT_FOUND, lambda id=id: get(s, id),
                 "%d-byte id gone" % len(id.encode()))
    for i, id in enumerate(ids[::2]):
        r.eq(get(s, id).document.text, "again %d." % i, "%d-byte neighbour intact" % len(id.encode()))
    r.eq(stats(s).documents - before.documents, len(ids[::2]), "counters exact after deletes")
    v = verify(s)
    r.eq((v.ok, list(v.problems)[:3]), (True, []), "Verify ok with ids around the key limit")


def case_unicode(r, s, rng):
    text = ("Ein langer Satz über Straßen. " * 40 + "\n\n" + "東京は大きい都市です。" * 60 +
            "\n\n" + "Emoji 😀🎉 test 🚀. " * 50)
    p = s.docs.Put(put_req("uni", text, {"emoji": "🚀"}, max_tokens=32), timeout=T)
    g = get(s, "uni")
    r.eq(g.document.text, text, "multi-byte text round-trips")
    r.eq(len(g.chunks), p.chunks, "multi-byte text chunk count")
    r.eq(chunk_problems(text, g.chunks, with_text=True), [],
         "multi-byte chunks fall on character boundaries")
    r.eq(dict(g.document.metadata), {"emoji": "🚀"}, "4-byte metadata value round-trips")


def case_stats_verify(r, s, rng):
    st = stats(s)
    r.eq(st.schema_version, 2, "Stats.schema_version = 2")
    r.check(st.version != "", "Stats.version set", st.version)
    r.check(st.tokenizer != "", "Stats.tokenizer set", st.tokenizer)
    r.check(st.map_bytes > 0 and st.map_used_bytes > 0, "Stats map sizes set",
            (st.map_bytes, st.map_used_bytes))
    r.check(st.store_bytes > 0, "Stats.store_bytes set", st.store_bytes)
    r.check(st.map_used_bytes <= st.map_bytes, "map_used_bytes <= map_bytes")
    infos = list_all(s)
    r.eq(st.documents, len(infos), "Stats.documents = number listed")
    r.eq(st.chunks, sum(d.chunks for d in infos), "Stats.chunks = sum over List")
    r.eq(st.bytes, sum(d.bytes for d in infos), "Stats.bytes = sum over List")
    r.eq(st.tokens, sum(d.tokens for d in infos), "Stats.tokens = sum over List")
    v = verify(s)
    r.eq(v.ok, True, "Verify ok")
    r.eq(list(v.problems), [], "Verify: no problems")
    r.eq(v.documents_checked, st.documents, "Verify checked every document")
    r.eq(v.chunks_checked, st.chunks, "Verify checked every chunk")


def main():
    r = Report("test_documents")
    rng = random.Random(1234)
    with Daemon(r) as d:
        s = d.stubs()
        r.case("put and get", case_put_get, r, s, rng)
        r.case("chunk options", case_chunk_options, r, s, rng)
        r.case("replace", case_replace, r, s, rng)
        r.case("list paging", case_list_paging, r, s, rng)
        r.case("delete", case_delete, r, s, rng)
        r.case("Chunk RPC", case_chunk_rpc, r, s, rng)
        r.case("generated id", case_generated_id, r, s, rng)
        r.case("id limits", case_id_limits, r, s, rng)
        r.case("unicode", case_unicode, r, s, rng)
        r.case("metadata limits", case_metadata_limits, r, s, rng)
        r.case("page tokens", case_page_tokens, r, s, rng)
        r.case("ids around the key limit", case_id_hash_boundaries, r, s, rng)
        r.case("list byte budget", case_list_byte_budget, r, s, rng)
        r.case("chunk count limit", case_chunk_count_limit, r, s, rng)
        r.case("stats and verify", case_stats_verify, r, s, rng)
        # The same numbers after a clean restart.
        before = stats(s)
        d.restart()
        s = d.stubs()
        after = stats(s)
        r.eq((after.documents, after.chunks, after.bytes, after.tokens),
             (before.documents, before.chunks, before.bytes, before.tokens),
             "Stats identical after a clean restart")
        r.case("stats and verify after restart", case_stats_verify, r, s, rng)
    r.finish()


if __name__ == "__main__":
    main()
