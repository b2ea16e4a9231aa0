#!/usr/bin/python3
"""metrics.listen: /metrics parsed strictly as Prometheus text format 0.0.4
(every sample in a declared family, families contiguous, labels and values
well formed, histograms cumulative ending with +Inf equal to _count), the
values checked against what the test did (calls by method and code, an
unknown method under "unknown", a cancelled stream as CANCELLED, documents,
streams in flight, a running and a cancelled corpus job), /healthz 200 while serving and 503 while stopping, the
access log (log.access) and logfmt for every log line; metrics off by
default, a bad or taken address refused at start."""

import http.client
import math
import queue
import re
import signal
import subprocess
import threading
import time

import os

import grpc

from corpus_gen import make_corpus, write_jsonl
from ctxd_harness import CTXD_BIN, SLOW, Daemon, Report, pb, put_req, stats

T = 30 * SLOW
H = pb.health_pb2
METRICS_RE = re.compile(r"msg=metrics-listening addr=(\S+)")

# ---------------------------------------------------------------- the parser

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


class ParseError(Exception):
    pass


def parse_value(s):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", s):
        raise ParseError("bad value %r" % s)
    return float(s)


def parse_labels(s, lineno):
    """'{a="x",b="y"}' body (without braces) -> list of (name, value)."""
    out = []
    i = 0
    while i < len(s):
        m = re.match(LABEL, s[i:])
        if not m:
            raise ParseError("line %d: bad label name at %r" % (lineno, s[i:]))
        name = m.group(0)
        i += len(name)
        if s[i:i + 2] != '="':
            raise ParseError("line %d: expected =\" after %s" % (lineno, name))
        i += 2
        val = []
        while True:
            if i >= len(s):
                raise ParseError("line %d: unterminated label value" % lineno)
            c = s[i]
            if c == "\\":
                nxt = s[i + 1:i + 2]
                if nxt not in ("\\", '"', "n"):
                    raise ParseError("line %d: bad escape \\%s" % (lineno, nxt))
                val.append({"\\": "\\", '"': '"', "n": "\n"}[nxt])
                i += 2
            elif c == '"':
                i += 1
                break
            elif c == "\n":
                raise ParseError("line %d: raw newline in label value" % lineno)
            else:
                val.append(c)
                i += 1
        if any(n == name for n, _ in out):
            raise ParseError("line %d: label %s twice" % (lineno, name))
        out.append((name, "".join(val)))
        if i < len(s):
            if s[i] != ",":
                raise ParseError("line %d: expected , at %r" % (lineno, s[i:]))
            i += 1
            if i == len(s):
                break  # a trailing comma is allowed
    return out


def family_of(sample, families):
    """The declared family a sample name belongs to, or None."""
    if sample in families and families[sample]["type"] != "histogram":
        return sample
    for suf in ("_bucket", "_sum", "_count"):
        if sample.endswith(suf):
            base = sample[:-len(suf)]
            if base in families and families[base]["type"] in ("histogram", "summary"):
                if suf == "_bucket" and families[base]["type"] != "histogram":
                    return None
                return base
    return None


def parse_exposition(text):
    """Strict 0.0.4 parse. Returns {family: {"type", "help", "samples":
    [(name, labels dict, value)]}}; raises ParseError."""
    if text and not text.endswith("\n"):
        raise ParseError("body does not end with a newline")
    families = {}
    seen_series = set()
    done = set()        # families whose samples are over (must not reappear)
    current = None      # the family whose samples come now
    for lineno, line in enumerate(text.split("\n")[:-1], 1):
        if line == "":
            continue
        if line.startswith("#"):
            m = re.fullmatch(r"# (HELP|TYPE) (%s) (.*)" % NAME, line)
            if not m:
                if re.match(r"# (HELP|TYPE)", line):
                    raise ParseError("line %d: malformed %r" % (lineno, line))
                continue  # a plain comment
            kind, name, rest = m.groups()
            f = families.setdefault(name, {"type": None, "help": None, "samples": []})
            if name in done or (f["samples"]):
                raise ParseError("line %d: %s %s after its samples" % (lineno, kind, name))
            if kind == "HELP":
                if f["help"] is not None:
                    raise ParseError("line %d: second HELP for %s" % (lineno, name))
                if re.search(r"\\[^\\n]", rest.replace("\\\\", "")):
                    raise ParseError("line %d: bad escape in HELP" % lineno)
                f["help"] = rest
            else:
                if f["type"] is not None:
                    raise ParseError("line %d: second TYPE for %s" % (lineno, name))
                if rest not in TYPES:
                    raise ParseError("line %d: unknown type %r" % (lineno, rest))
                f["type"] = rest
            if current and current != name:
                done.add(current)
            current = name
            continue
        m = re.fullmatch(r"(%s)(?:\{(.*)\})? (\S+)(?: (-?\d+))?" % NAME, line)
        if not m:
            raise ParseError("line %d: malformed sample %r" % (lineno, line))
        sname, lbody, sval, _ts = m.groups()
        fam = family_of(sname, families)
        if fam is None or families[fam]["type"] is None:
            raise ParseError("line %d: sample %s of no declared family" % (lineno, sname))
        if fam != current:
            raise ParseError("line %d: %s not contiguous with its family %s" % (
                lineno, sname, fam))
        labels = parse_labels(lbody, lineno) if lbody else []
        key = (sname, tuple(sorted(labels)))
        if key in seen_series:
            raise ParseError("line %d: duplicate series %r" % (lineno, key))
        seen_series.add(key)
        families[fam]["samples"].append((sname, dict(labels), parse_value(sval)))
    for name, f in families.items():
        if f["type"] is None:
            raise ParseError("family %s has HELP but no TYPE" % name)
        if f["type"] == "counter" and not name.endswith("_total"):
            raise ParseError("counter %s does not end in _total" % name)
        if f["type"] == "histogram":
            check_histogram(name, f["samples"])
    return families


def check_histogram(name, samples):
    groups = {}
    for sname, labels, v in samples:
        rest = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
        g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if sname == name + "_bucket":
            if "le" not in labels:
                raise ParseError("%s bucket without le" % name)
            g["buckets"].append((parse_value(labels["le"]), v))
        elif sname == name + "_sum":
            g["sum"] = v
        elif sname == name + "_count":
            g["count"] = v
    for rest, g in groups.items():
        b = g["buckets"]
        if not b or g["sum"] is None or g["count"] is None:
            raise ParseError("%s%r: buckets, _sum and _count all needed" % (name, rest))
        les = [le for le, _ in b]
        if les != sorted(les) or len(set(les)) != len(les):
            raise ParseError("%s%r: le not strictly increasing" % (name, rest))
        if les[-1] != math.inf:
            raise ParseError("%s%r: last bucket is not +Inf" % (name, rest))
        counts = [c for _, c in b]
        if any(x > y for x, y in zip(counts, counts[1:])):
            raise ParseError("%s%r: buckets not cumulative %r" % (name, rest, counts))
        if counts[-1] != g["count"]:
            raise ParseError("%s%r: +Inf bucket %r != _count %r" % (
                name, rest, counts[-1], g["count"]))
        if g["sum"] < 0 or math.isnan(g["sum"]):
            raise ParseError("%s%r: bad _sum" % (name, rest))


def value(fams, family, sample=None, **labels):
    """The value of one series, 0 when absent."""
    f = fams.get(family)
    if not f:
        return 0
    for sname, lb, v in f["samples"]:
        if sname == (sample or family) and lb == labels:
            return v
    return 0


# ---------------------------------------------------------------- HTTP

def http_get(addr, path, method="GET"):
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=T)
    try:
        c.request(method, path)
        resp = c.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode("utf-8")
    finally:
        c.close()


def scrape(r, addr, what):
    st, hdrs, body = http_get(addr, "/metrics")
    r.eq(st, 200, "%s: /metrics 200" % what)
    ctype = hdrs.get("Content-Type", "")
    r.check(ctype.startswith("text/plain; version=0.0.4"),
            "%s: Content-Type text/plain; version=0.0.4" % what, ctype)
    try:
        fams = parse_exposition(body)
    except ParseError as e:
        r.check(False, "%s: exposition parses strictly" % what, "%s\n%s" % (e, body[:3000]))
        raise
    r.check(True, "%s: exposition parses strictly (%d families)" % (what, len(fams)))
    return fams


def metrics_addr(d):
    with d._log_lock:
        for l in d.log_lines:
            m = METRICS_RE.search(l)
            if m:
                return m.group(1)
    return None


# ---------------------------------------------------------------- cases

LOGFMT = re.compile(r'level=(error|warn|info|debug) ts=\S+Z msg=[A-Za-z0-9_.:-]+'
                    r'( [A-Za-z_][A-Za-z0-9_.]*=("([^"\\]|\\.)*"|[^\s"]*))*')


def calls(fams, method, code):
    return value(fams, "ctxd_grpc_calls_total", method=method, code=code)


def case_parser_rejects(r):
    """The parser itself: it must refuse what the format forbids."""
    good = ('# HELP a_total x\n# TYPE a_total counter\na_total{m="x"} 1\n'
            '# HELP h y\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_bucket{le="+Inf"} 2\n'
            'h_sum 3\nh_count 2\n')
    r.check(parse_exposition(good) is not None, "parser accepts a well-formed text")
    bad = {
        "undeclared": "x 1\n",
        "not cumulative": good.replace('h_bucket{le="+Inf"} 2', 'h_bucket{le="+Inf"} 0')
                              .replace("h_count 2", "h_count 0"),
        "+Inf != count": good.replace("h_count 2", "h_count 3"),
        "bad escape": good.replace('m="x"', 'm="\\q"'),
        "no newline": good[:-1],
        "interleaved": good + 'a_total{m="y"} 1\n',
        "duplicate": good.replace('a_total{m="x"} 1\n', 'a_total{m="x"} 1\na_total{m="x"} 2\n'),
    }
    for what, text in bad.items():
        try:
            parse_exposition(text)
            r.check(False, "parser refuses: %s" % what)
        except ParseError:
            r.check(True, "parser refuses: %s" % what)


def case_scrape(r, d, maddr):
    s = d.stubs()
    st, _, body = http_get(maddr, "/healthz")
    r.eq((st, body), (200, "ok\n"), "/healthz: 200 ok while serving")
    st, _, _ = http_get(maddr, "/nope")
    r.eq(st, 404, "/nope: 404")
    st, _, _ = http_get(maddr, "/metrics", method="POST")
    r.eq(st, 501, "POST /metrics: refused (evhttp answers 501)")

    before = scrape(r, maddr, "first scrape")
    # What the test does, by method and code.
    for i in range(5):
        s.docs.Put(put_req("m-%d" % i, "Document %d about metrics and scrapes." % i), timeout=T)
    other = put_req("o-1", "A document of another collection.")
    other.document.collection = "other"  # created on first use (a log line)
    s.docs.Put(other, timeout=T)
    for _ in range(2):
        r.raises(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: s.docs.Put(put_req("m-bad", "text", max_tokens=10, overlap_tokens=10),
                                    timeout=T), "bad Put: INVALID_ARGUMENT")
    r.raises(grpc.StatusCode.NOT_FOUND,
             lambda: s.docs.Get(pb.documents_pb2.GetRequest(id="no-such"), timeout=T),
             "Get of a missing id: NOT_FOUND")
    unknown = s.channel.unary_unary("/no.such.Service/Method\"quoted",
                                    request_serializer=lambda b: b,
                                    response_deserializer=lambda b: b)
    for _ in range(3):
        r.raises(grpc.StatusCode.UNIMPLEMENTED, lambda: unknown(b"", timeout=T),
                 "unknown method: UNIMPLEMENTED")
    st_ = stats(s)
    r.eq(st_.documents, 6, "Stats: 6 documents")
    # A server stream held open, then cancelled by the client.
    w = s.health.Watch(H.HealthCheckRequest(), timeout=T)
    next(w)
    during = scrape(r, maddr, "scrape with a Watch open")
    r.check(value(during, "ctxd_grpc_streams_in_flight") >= 1,
            "streams_in_flight >= 1 while a Watch is open",
            value(during, "ctxd_grpc_streams_in_flight"))
    r.check(value(during, "ctxd_grpc_connections") >= 1, "connections >= 1")
    w.cancel()

    # The cancel reaches the daemon asynchronously: poll.
    end = time.monotonic() + 10 * SLOW
    while time.monotonic() < end:
        f = parse_exposition(http_get(maddr, "/metrics")[2])
        if calls(f, "grpc.health.v1.Health/Watch", "CANCELLED") > \
                calls(before, "grpc.health.v1.Health/Watch", "CANCELLED"):
            break
        time.sleep(0.05)
    after = scrape(r, maddr, "scrape after the calls")

    def delta(method, code):
        return calls(after, method, code) - calls(before, method, code)

    r.eq(delta("ctxd.v1.Documents/Put", "OK"), 6, "calls_total Put OK +6")
    r.eq(delta("ctxd.v1.Documents/Put", "INVALID_ARGUMENT"), 2,
         "calls_total Put INVALID_ARGUMENT +2")
    r.eq(delta("ctxd.v1.Documents/Get", "NOT_FOUND"), 1, "calls_total Get NOT_FOUND +1")
    r.eq(delta("ctxd.v1.Admin/Stats", "OK"), 1, "calls_total Stats OK +1")
    r.eq(delta("unknown", "UNIMPLEMENTED"), 3,
         "calls_total unknown UNIMPLEMENTED +3 (the path is not a label)")
    r.eq(delta("grpc.health.v1.Health/Watch", "CANCELLED"), 1,
         "calls_total Health/Watch CANCELLED +1")
    methods = {lb["method"] for _, lb, _ in after["ctxd_grpc_calls_total"]["samples"]}
    r.check(all(m == "unknown" or re.fullmatch(r"[\w.]+/\w+", m) for m in methods),
            "method labels are Service/Method or unknown", methods)
    r.check(not any("no.such" in m for m in methods), "no label from the client's path")
    # The histogram agrees with the counters.
    put_count = value(after, "ctxd_grpc_call_duration_seconds",
                      "ctxd_grpc_call_duration_seconds_count",
                      method="ctxd.v1.Documents/Put")
    put_calls = sum(v for _, lb, v in after["ctxd_grpc_calls_total"]["samples"]
                    if lb["method"] == "ctxd.v1.Documents/Put")
    r.eq(put_count, put_calls, "Put histogram _count = Put calls_total summed over codes")
    put_sum = value(after, "ctxd_grpc_call_duration_seconds",
                    "ctxd_grpc_call_duration_seconds_sum", method="ctxd.v1.Documents/Put")
    r.check(0 < put_sum < 60 * SLOW * 7, "Put latency _sum is positive and sane", put_sum)
    r.check(value(after, "ctxd_grpc_received_bytes_total", method="ctxd.v1.Documents/Put") >
            value(before, "ctxd_grpc_received_bytes_total", method="ctxd.v1.Documents/Put"),
            "received bytes of Put grew")
    # Store and collections.
    r.eq(value(after, "ctxd_store_documents"), 6, "ctxd_store_documents 6")
    r.eq(value(after, "ctxd_collection_documents", collection="default"), 5,
         "ctxd_collection_documents{collection=default} 5")
    r.eq(value(after, "ctxd_collection_documents", collection="other"), 1,
         "ctxd_collection_documents{collection=other} 1")
    r.eq(value(after, "ctxd_store_chunks"), st_.chunks, "ctxd_store_chunks = Stats.chunks")
    r.eq(sum(v for _, _, v in after["ctxd_collection_vectors"]["samples"]), st_.chunks,
         "ctxd_collection_vectors summed = chunks (hash embedder)")
    r.eq(value(after, "ctxd_store_map_bytes"), st_.map_bytes, "map bytes = Stats.map_bytes")
    r.check(0 < value(after, "ctxd_store_map_used_bytes") <= value(after, "ctxd_store_map_bytes"),
            "0 < map used <= map size")
    r.check(value(after, "ctxd_store_file_bytes") > 0, "store file bytes > 0")
    r.eq(value(after, "ctxd_jobs", state="running"), 0, "no job running")
    r.eq(value(after, "ctxd_serving"), 1, "ctxd_serving 1")
    r.eq(value(after, "ctxd_model_selections_running"), 0, "no selection running")
    r.check(value(after, "process_resident_memory_bytes") > 1 << 20, "RSS > 1 MiB")
    r.check(value(after, "process_open_fds") > 3, "open fds > 3")
    r.check(abs(value(after, "process_start_time_seconds") - time.time()) < 3600,
            "process start time is recent")
    r.check(value(after, "ctxd_grpc_connections_accepted_total") >= 1, "a connection accepted")


def case_access_log(r, d):
    # The harness reads the log on a thread of its own: wait for the line of
    # the last call the scrape case made (the cancelled Watch).
    end = time.monotonic() + 10 * SLOW
    while time.monotonic() < end:
        with d._log_lock:
            lines = list(d.log_lines)
        if any("method=grpc.health.v1.Health/Watch" in l and "code=CANCELLED" in l
               for l in lines):
            break
        time.sleep(0.05)
    acc = [l for l in lines if " msg=access " in l]
    puts = [l for l in acc if "method=ctxd.v1.Documents/Put " in l and " code=OK " in l]
    r.check(len(puts) >= 5, "access log: a line per Put OK", len(puts))
    if puts:
        l = puts[0]
        for k in ("status=0", "duration_ms=", "bytes_in=", "bytes_out=", "peer=127.0.0.1:",
                  'path="/ctxd.v1.Documents/Put"'):
            r.check(k in l, "access line has %s" % k, l)
    bad = [l for l in acc if "code=INVALID_ARGUMENT status=3" in l]
    r.check(len(bad) >= 2, "access log: the failed Puts", len(bad))
    unk = [l for l in acc if "method=unknown" in l and "code=UNIMPLEMENTED" in l]
    r.check(len(unk) >= 3 and '\\x22quoted' in unk[0],
            "access log: unknown method, its path quoted (\" as \\x22)", unk[:1])
    canc = [l for l in acc if "method=grpc.health.v1.Health/Watch" in l and "code=CANCELLED" in l]
    r.check(len(canc) >= 1, "access log: the cancelled Watch", len(canc))


def case_logfmt(r, d):
    with d._log_lock:
        lines = list(d.log_lines)
    bad = [l for l in lines if not LOGFMT.fullmatch(l)]
    r.check(not bad, "every log line is level= ts= msg= key=value", bad[:5])
    r.check(any("msg=collection-created-on-first-use name=other" in l for l in lines),
            "the collections' messages get one-word event names")


def case_stopping(r, d, maddr):
    """SIGTERM while a PutStream is open: the grace period, /healthz 503."""
    s = d.stubs()
    q = queue.Queue()

    def reqs():
        while True:
            item = q.get()
            if item is None:
                return
            yield item

    call = s.docs.PutStream(reqs(), timeout=T)
    q.put(put_req("stream-1", "streamed text"))
    acks = []
    th = threading.Thread(target=lambda: acks.extend(list(call)))
    th.daemon = True
    th.start()
    time.sleep(0.3 * SLOW)
    d.proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + 10 * SLOW
    got = None
    while time.monotonic() < end:
        try:
            got = http_get(maddr, "/healthz")
        except OSError:
            break
        if got[0] == 503:
            break
        time.sleep(0.02)
    r.eq(got and got[:1] + got[2:], (503, "stopping\n"), "/healthz: 503 stopping in the grace period")
    try:
        fams = parse_exposition(http_get(maddr, "/metrics")[2])
        r.eq(value(fams, "ctxd_serving"), 0, "ctxd_serving 0 while stopping")
    except OSError as e:
        r.check(False, "metrics answer while stopping", e)
    q.put(None)
    th.join(T)
    r.eq(len(acks), 1, "the PutStream finished in the grace period")
    try:
        d.proc.wait(T)  # stop() would signal again: the first one is enough
    except subprocess.TimeoutExpired:
        pass
    d.stop()


def case_job(r, d, maddr):
    """A running corpus job: counted by state, its phase progress exported;
    cancelled: counted so, its progress series gone."""
    C = pb.corpus_pb2
    s = d.stubs()
    path = os.path.join(d.tmp, "corpus.jsonl")
    docs, _ = make_corpus(clusters=3, per_cluster=30, seed=5, dups=0)
    write_jsonl(path, docs)
    it = s.corpus.Reorder(C.ReorderRequest(output_dir=os.path.join(d.tmp, "out"),
                                           input_jsonl=path, window_tokens=512), timeout=T)
    jid = None
    for ev in it:
        if ev.state == "running" and ev.phase:
            jid = ev.job_id
            break
    r.check(jid is not None, "the job runs", jid)
    fams = scrape(r, maddr, "scrape with a job running")
    r.eq(value(fams, "ctxd_jobs", state="running"), 1, "ctxd_jobs{state=running} 1")
    prog = [lb for _, lb, _ in fams["ctxd_job_phase_done"]["samples"]]
    r.check(len(prog) == 1 and prog[0]["job"] == jid and prog[0]["phase"] and prog[0]["unit"],
            "ctxd_job_phase_done has the job with its phase and unit", prog)
    tot = [v for _, lb, v in fams["ctxd_job_phase_total"]["samples"] if lb.get("job") == jid]
    r.eq(len(tot), 1, "ctxd_job_phase_total has the job")
    s.corpus.CancelJob(C.CancelJobRequest(job_id=jid), timeout=T)
    it.cancel()
    fams = scrape(r, maddr, "scrape after the cancel")
    r.eq((value(fams, "ctxd_jobs", state="running"), value(fams, "ctxd_jobs", state="cancelled")),
         (0, 1), "ctxd_jobs: running 0, cancelled 1")
    r.eq(fams["ctxd_job_phase_done"]["samples"], [], "no progress series once it ended")


def case_auth(r):
    """With bearer tokens: refused calls count as UNAUTHENTICATED, the
    access log names the token, the metrics port needs no token."""
    tok = "metrics-writer-token-0123456789"
    d = Daemon(r, name="ctxd-auth")  # not started yet: its temp dir holds the file
    tokens = os.path.join(d.tmp, "tokens")
    with open(tokens, "w") as f:
        f.write("%s write scraper-test\n" % tok)
    os.chmod(tokens, 0o600)
    d.args = ["--metrics.listen", "127.0.0.1:0", "--log.access", "on",
              "--auth.tokens_file", tokens]
    with d:
        maddr = metrics_addr(d)
        s = d.stubs()
        r.raises(grpc.StatusCode.UNAUTHENTICATED,
                 lambda: s.docs.Put(put_req("a1", "text"), timeout=T), "no token: UNAUTHENTICATED")
        s.docs.Put(put_req("a1", "text"), timeout=T,
                   metadata=(("authorization", "Bearer " + tok),))
        fams = scrape(r, maddr, "scrape with auth on (no token)")
        r.eq(calls(fams, "ctxd.v1.Documents/Put", "UNAUTHENTICATED"), 1,
             "calls_total Put UNAUTHENTICATED 1")
        r.eq(calls(fams, "ctxd.v1.Documents/Put", "OK"), 1, "calls_total Put OK 1")
        end = time.monotonic() + 10 * SLOW
        while time.monotonic() < end and "user=scraper-test" not in d.log_tail(200):
            time.sleep(0.05)
        lines = d.log_tail(200).split("\n")
        r.check(any("msg=access method=ctxd.v1.Documents/Put" in l and "code=OK" in l
                    and l.endswith(" user=scraper-test") for l in lines),
                "access log: user= the token's NAME", lines[-5:])
        r.check(any("code=UNAUTHENTICATED" in l and l.endswith(" user=-") for l in lines),
                "access log: user=- without a token")


def case_starting(r):
    """The metrics port opens before the model loads (ctxd-mini: about a
    second): /healthz says 503 starting, /metrics has no store families."""
    mini = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                        "index", "model", "ctxd-mini.gguf")
    d = Daemon(r, name="ctxd-starting",
               args=["--metrics.listen", "127.0.0.1:0", "--model.builtin", mini])
    with d.start(wait=False):
        end = time.monotonic() + 15 * SLOW
        while time.monotonic() < end and not metrics_addr(d):
            time.sleep(0.005)
        maddr = metrics_addr(d)
        got = http_get(maddr, "/healthz")
        fams = parse_exposition(http_get(maddr, "/metrics")[2])
        with d._log_lock:
            up = any(" msg=listening " in l for l in d.log_lines)
        r.check(not up, "the answers came before the gRPC listener was up "
                "(the model load takes about a second)")
        r.eq((got[0], got[2]), (503, "starting\n"), "/healthz: 503 starting")
        r.eq(value(fams, "ctxd_serving"), 0, "ctxd_serving 0 while starting")
        r.check("ctxd_store_documents" not in fams and "ctxd_grpc_calls_total" in fams,
                "while starting: gRPC and process families, no store ones")
        d.wait_listening()
        d.wait_serving()
        r.eq(http_get(maddr, "/healthz")[0], 200, "/healthz: 200 once serving")


def start_fails(r, args, want, what):
    p = subprocess.run([CTXD_BIN, "--listen", "127.0.0.1:0", "--data", "/nonexistent/x",
                        "--model.builtin=none"] + args,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=T)
    err = p.stderr.decode("utf-8", "replace")
    r.check(p.returncode == 2 and want in err, what, "rc %s: %s" % (p.returncode, err[-500:]))


def main():
    r = Report("test_metrics")
    r.case("parser", case_parser_rejects, r)
    with Daemon(r, name="ctxd-plain") as d0:
        r.check(metrics_addr(d0) is None, "metrics are off by default (no metrics-listening)")
    d = Daemon(r, args=["--metrics.listen", "127.0.0.1:0", "--log.access", "true",
                        "--jobs.test_delay_ms", "100"])
    with d:
        maddr = metrics_addr(d)
        r.check(maddr is not None and not maddr.endswith(":0"),
                "metrics-listening addr= logged with the real port", maddr)
        if maddr:
            r.case("scrape", case_scrape, r, d, maddr)
            r.case("access log", case_access_log, r, d)
            port = maddr.rsplit(":", 1)[1]
            r.case("taken port", start_fails, r, ["--metrics.listen", "127.0.0.1:" + port],
                   "cannot listen", "a taken metrics port stops the start (exit 2)")
            r.case("bad address", start_fails, r, ["--metrics.listen", "nonsense"],
                   "metrics.listen", "a bad metrics.listen stops the start (exit 2)")
            r.case("job", case_job, r, d, maddr)
            r.case("stopping", case_stopping, r, d, maddr)
            r.case("logfmt", case_logfmt, r, d)  # the whole life, shutdown included
    r.case("auth", case_auth, r)
    r.case("starting", case_starting, r)
    r.finish()


if __name__ == "__main__":
    main()
