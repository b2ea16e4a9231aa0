"""test_ctxctl - the ctxctl CLI against a real daemon, over the wire.

Starts $CTXD_BIN on a free port with a temp data dir (ctxd_harness.Daemon)
and runs $CTXCTL_BIN: status, put (directory, --jsonl, stdin, a file that is
not UTF-8, a binary file), ls, get, chunk, rm, stats, verify; collections
(create, ls, drop, -c on put/get/rm/ls), search (modes, filters, batch,
JSON), reindex and stats per collection; checks output and exit codes (0 ok,
1 failed/rejected, 2 usage, 3 unreachable).
"""

import json
import os
import re
import socket
import subprocess
import tempfile

from ctxd_harness import Daemon, Report

CTXCTL = os.environ.get("CTXCTL_BIN", "")
r = Report("test_ctxctl")


def ctl(addr, *args, stdin=None, env_addr=None, timeout=120):
    """Run ctxctl; returns (exit code, stdout str, stderr str)."""
    env = dict(os.environ)
    env.pop("CTXD_ADDR", None)
    cmd = [CTXCTL]
    if env_addr is not None:
        env["CTXD_ADDR"] = env_addr
    elif addr:
        cmd += ["--addr", addr]
    cmd += list(args)
    p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout,
                       env=env, cwd=WORK)
    err = p.stderr.decode("utf-8", "replace")
    if "Sanitizer" in err or "runtime error:" in err:
        r.check(False, "ctxctl %s: no sanitizer report" % " ".join(args[:3]), err[-3000:])
    return (p.returncode, p.stdout.decode("utf-8", "replace"), err)


def ctl_tty(addr, *args):
    """Run ctxctl with a terminal (a pty) as stderr: (exit code, stdout str,
    the bytes it wrote to the terminal)."""
    import pty
    import select
    master, slave = pty.openpty()
    p = subprocess.Popen([CTXCTL, "--addr", addr] + list(args),
                         stdout=subprocess.PIPE, stderr=slave, cwd=WORK)
    os.close(slave)
    tty = b""
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the pty
            break
        if not chunk:
            break
        tty += chunk
    out = p.stdout.read().decode()
    rc = p.wait()
    os.close(master)
    return rc, out, tty


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


WORK = tempfile.mkdtemp(prefix="ctxctl-it-")
TEXT_A = b"The quick brown fox jumps over the lazy dog. " * 40
TEXT_B = "Caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u2014 unicode text.\n".encode() * 5
write(os.path.join(WORK, "corpus", "a.txt"), TEXT_A)
write(os.path.join(WORK, "corpus", "sub", "b.md"), TEXT_B)
write(os.path.join(WORK, "corpus", "sub", "deeper", "c.txt"), b"third document")
# Not UTF-8: 0xff at byte offset 12. Sent as is; the server must refuse it.
write(os.path.join(WORK, "bad.txt"), b"hello world \xff\xfe more text")
write(os.path.join(WORK, "binary.bin"), b"ab\x00cd")
with open(os.path.join(WORK, "docs.jsonl"), "w") as f:
    f.write(json.dumps({"id": "j1", "text": "jsonl document one",
                        "metadata": {"lang": "en", "src": "test"}}) + "\n")
    f.write(json.dumps({"id": "j2", "text": "jsonl document two"}) + "\n")
    f.write("\n")
    f.write("{not json\n")
    f.write(json.dumps({"id": "j3", "text": 42}) + "\n")
with open(os.path.join(WORK, "many.jsonl"), "w") as f:
    for i in range(3000):
        f.write(json.dumps({"id": "many/%04d" % i, "text": "document %d " % i * 20}) + "\n")


def case_usage():
    rc, out, err = ctl(None, "--help")
    r.eq(rc, 0, "--help exits 0")
    r.check("Exit status" in out and "put" in out and "--addr" in out,
            "--help lists commands, options, exit codes", out[:300])
    rc, out, err = ctl(None, "help", "put")
    r.eq(rc, 0, "help put exits 0")
    r.check("--jsonl" in out and "--max-tokens" in out, "help put documents options")
    rc, out, err = ctl(None, "put", "--help")
    r.check(rc == 0 and "--jsonl" in out, "put --help is help put")
    rc, out, err = ctl(None)
    r.eq(rc, 2, "no command: exit 2")
    rc, out, err = ctl(None, "frobnicate")
    r.eq(rc, 2, "unknown command: exit 2")
    r.check("unknown command" in err, "unknown command is named", err)
    rc, out, err = ctl(None, "ls", "--bogus")
    r.eq(rc, 2, "unknown option: exit 2")
    rc, out, err = ctl(None, "ls", "--limit", "x")
    r.eq(rc, 2, "bad number: exit 2")
    rc, out, err = ctl(None, "put")
    r.eq(rc, 2, "put without inputs: exit 2")
    rc, out, err = ctl(None, "get")
    r.eq(rc, 2, "get without id: exit 2")
    rc, out, err = ctl(None, "--timeout", "0", "status")
    r.eq(rc, 2, "--timeout 0: exit 2")
    rc, out, err = ctl("127.0.0.1:99999", "status")
    r.eq(rc, 2, "bad --addr: exit 2")


def case_unreachable():
    addr = "127.0.0.1:%d" % free_port()
    rc, out, err = ctl(addr, "status")
    r.eq(rc, 3, "status with no server: exit 3")
    r.check("connect to %s: Connection refused" % addr in err and "UNAVAILABLE" in err,
            "says connection refused", err)
    rc, out, err = ctl(None, "stats", env_addr=addr)
    r.eq(rc, 3, "CTXD_ADDR is used (stats: exit 3)")
    r.check(addr in err, "error names CTXD_ADDR's address", err)
    rc, out, err = ctl(addr, "put", "corpus")
    r.eq(rc, 3, "put with no server: exit 3")
    rc, out, err = ctl(addr, "ls")
    r.eq(rc, 3, "ls with no server: exit 3")


def case_status(addr):
    rc, out, err = ctl(addr, "status")
    r.eq((rc, out.strip()), (0, "SERVING"), "status prints SERVING")
    rc, out, err = ctl(None, "status", env_addr=addr)
    r.eq(rc, 0, "status via CTXD_ADDR")
    rc, out, err = ctl(None, "status", "--addr", addr, "--timeout", "5")
    r.eq((rc, out.strip()), (0, "SERVING"), "global options after the command")
    host, port = addr.rsplit(":", 1)
    rc, out, err = ctl("localhost:" + port, "--timeout", "5", "status")
    r.eq(rc, 0, "hostname address (localhost) resolves")


def ids_of(addr):
    rc, out, err = ctl(addr, "ls", "--all", "--ids")
    r.eq(rc, 0, "ls --all --ids exits 0")
    return set(l for l in out.splitlines() if l)


def case_put(addr):
    rc, out, err = ctl(addr, "put", "corpus", "--jsonl", "docs.jsonl", "bad.txt",
                       "binary.bin", "--max-tokens", "16")
    r.eq(rc, 1, "put with rejected documents exits 1")
    r.check("document bad.txt:" in err and "UTF-8" in err and "12" in err,
            "the server's UTF-8 refusal is shown for bad.txt", err)
    r.check("ctxctl: put: " in err, "errors carry the ctxctl: put: prefix", err)
    r.check("binary.bin" in err and "NUL" in err, "binary file refused locally", err)
    r.check("docs.jsonl:4" in err, "bad JSON line reported with its line number", err)
    r.check("docs.jsonl:5" in err and "text" in err, "non-string text reported", err)
    r.check("stored 5 documents" in out, "summary counts 5 stored", out)
    r.check("4 rejected" in out, "summary counts 4 rejected", out)
    r.check("\r" not in err, "no progress bar when stderr is not a terminal", repr(err[:200]))
    ids = ids_of(addr)
    want = {"a.txt", "sub/b.md", "sub/deeper/c.txt", "j1", "j2"}
    r.check(want <= ids, "directory ids are relative paths; jsonl ids kept",
            sorted(ids))
    r.check("bad.txt" not in ids and "binary.bin" not in ids, "rejected ones not stored")

    # a clean put exits 0; re-putting replaces
    rc, out, err = ctl(addr, "put", "corpus/a.txt")
    r.eq(rc, 0, "put of one file exits 0")
    r.check("corpus/a.txt" in ids_of(addr), "single file id is the path as given")
    rc, out, err = ctl(addr, "put", "-", "--id", "from-stdin", "--meta", "k=v",
                       stdin="text from standard input".encode())
    r.eq(rc, 0, "put - exits 0")
    rc, out, err = ctl(addr, "get", "from-stdin", "--json")
    r.eq(rc, 0, "get from-stdin exits 0")
    try:
        g = json.loads(out)
        r.eq(g.get("metadata"), {"k": "v"}, "--meta stored")
    except ValueError:
        r.check(False, "get --json parses", out)

    # Without --id the server names the document: ctxctl says which id.
    rc, out, err = ctl(addr, "put", "-", stdin=b"unnamed text from standard input")
    r.eq(rc, 0, "put - without --id exits 0")
    m = re.search(r", id ([0-9a-f-]{36})$", out.strip())
    r.check(m is not None, "put - without --id prints the generated id", out)
    if m:
        rc, out, err = ctl(addr, "get", m.group(1), "--text")
        r.eq(out, "unnamed text from standard input", "the printed id is the stored document")

    rc, out, err = ctl(addr, "put", "--prefix", "pre/", "corpus/sub")
    r.eq(rc, 0, "put --prefix exits 0")
    r.check({"pre/b.md", "pre/deeper/c.txt"} <= ids_of(addr), "--prefix prepended to ids")
    rc, out, err = ctl(addr, "rm", "pre/b.md", "pre/deeper/c.txt")
    r.eq(rc, 0, "rm of the prefixed documents")

    rc, out, err = ctl(addr, "put", "--quiet", "--jsonl", "many.jsonl")
    r.eq(rc, 0, "put of 3000 jsonl documents exits 0")
    r.eq(out, "", "--quiet prints nothing")
    many = [i for i in ids_of(addr) if i.startswith("many/")]
    r.eq(len(many), 3000, "all 3000 stored")


def case_get(addr):
    rc, out, err = ctl(addr, "get", "a.txt")
    r.eq(rc, 0, "get exits 0")
    r.check("bytes       %d" % len(TEXT_A) in out, "get shows the byte count", out)
    p = subprocess.run([CTXCTL, "--addr", addr, "get", "sub/b.md", "--text"],
                       capture_output=True, cwd=WORK)
    r.eq(p.stdout, TEXT_B, "get --text prints the text byte for byte")
    rc, out, err = ctl(addr, "get", "j1", "--json", "--chunks", "--text")
    try:
        g = json.loads(out)
        r.eq(g["id"], "j1", "json id")
        r.eq(g["metadata"], {"lang": "en", "src": "test"}, "json metadata")
        r.eq(g["text"], "jsonl document one", "json text")
        r.check(len(g["chunks"]) >= 1 and g["chunks"][0]["byte_start"] == 0,
                "json chunks", g.get("chunks"))
    except (ValueError, KeyError) as e:
        r.check(False, "get --json parses", "%s: %s" % (e, out))
    rc, out, err = ctl(addr, "get", "a.txt", "--chunks")
    r.check(rc == 0 and "ORDINAL" in out, "get --chunks lists chunks", out)
    rc, out, err = ctl(addr, "get", "no-such-doc")
    r.eq(rc, 1, "get of a missing document exits 1")
    r.check("NOT_FOUND" in err and "no-such-doc" in err, "NOT_FOUND reported", err)


def case_ls(addr):
    rc, out, err = ctl(addr, "ls")
    r.eq(rc, 0, "ls exits 0")
    lines = out.splitlines()
    r.check(lines and lines[0].startswith("ID"), "ls prints a header", out[:200])
    r.eq(len(lines), 101, "ls shows 100 documents by default")
    r.check("--all" in err, "ls says there are more", err)
    rc, out, err = ctl(addr, "ls", "--limit", "3", "--ids")
    r.eq(len(out.splitlines()), 3, "ls --limit 3 --ids")
    rc, out, err = ctl(addr, "ls", "--all", "--json")
    rows = [json.loads(l) for l in out.splitlines()]
    r.check(len(rows) > 3000 and all("bytes" in x for x in rows), "ls --all --json rows",
            len(rows))
    a = [x for x in rows if x["id"] == "a.txt"]
    r.check(a and a[0]["bytes"] == len(TEXT_A), "ls --json byte count", a)
    return len(rows)


def case_chunk(addr):
    rc, out, err = ctl(addr, "chunk", "corpus/a.txt", "--max-tokens", "20", "--json")
    r.eq(rc, 0, "chunk exits 0")
    try:
        c = json.loads(out)
        ch = c["chunks"]
        r.check(len(ch) > 1, "long text gives several chunks", len(ch))
        r.check(all(x["tokens"] <= 20 for x in ch), "chunks within --max-tokens")
        r.eq(ch[0]["byte_start"], 0, "first chunk starts at 0")
        r.eq(ch[-1]["byte_end"], len(TEXT_A), "last chunk ends at the end")
        r.eq(ch[0]["text"].encode(), TEXT_A[ch[0]["byte_start"]:ch[0]["byte_end"]],
             "chunk text is its byte range")
    except (ValueError, KeyError) as e:
        r.check(False, "chunk --json parses", "%s: %s" % (e, out[:300]))
    rc, out, err = ctl(addr, "chunk", "--max-tokens", "4", stdin=b"one two three four five six")
    r.check(rc == 0 and "ORDINAL" in out and "tokens" in out.splitlines()[-1],
            "chunk from stdin prints a table and a total", out)
    rc, out, err = ctl(addr, "chunk", "bad.txt")
    r.eq(rc, 1, "chunk of non-UTF-8 text exits 1")
    r.check("INVALID_ARGUMENT" in err, "chunk shows INVALID_ARGUMENT", err)
    rc, out, err = ctl(addr, "chunk", "no-such-file")
    r.eq(rc, 1, "chunk of a missing file exits 1")


def case_rm(addr):
    rc, out, err = ctl(addr, "rm", "j2", "sub/deeper/c.txt")
    r.eq(rc, 0, "rm exits 0")
    r.check("deleted j2" in out and "deleted sub/deeper/c.txt" in out, "rm reports", out)
    rc, out, err = ctl(addr, "get", "j2")
    r.eq(rc, 1, "get after rm exits 1")
    rc, out, err = ctl(addr, "rm", "j2")
    r.eq(rc, 1, "rm of a missing document exits 1")
    r.check("no such document" in err, "rm says no such document", err)
    rc, out, err = ctl(addr, "rm", "-f", "j2")
    r.eq(rc, 0, "rm -f of a missing document exits 0")


def case_stats(addr, n_docs):
    rc, out, err = ctl(addr, "stats")
    r.eq(rc, 0, "stats exits 0")
    r.check("documents" in out and "tokens" in out and "uptime" in out, "stats table", out)
    rc, out, err = ctl(addr, "stats", "--json")
    try:
        s = json.loads(out)
        r.eq(s["documents"], n_docs, "stats --json document count matches ls")
        r.check(s["chunks"] >= n_docs and s["bytes"] > 0, "stats counts", s)
    except (ValueError, KeyError) as e:
        r.check(False, "stats --json parses", "%s: %s" % (e, out))


def case_verify(addr):
    rc, out, err = ctl(addr, "verify")
    r.eq(rc, 0, "verify exits 0")
    r.check(out.startswith("ok:"), "verify says ok", out)


COMMANDS = ["status", "stats", "put", "get", "rm", "ls", "chunk", "verify", "help",
            "search", "collection", "reindex"]


def case_help_all():
    for c in COMMANDS:
        rc, out, err = ctl(None, "help", c)
        r.check(rc == 0 and out.startswith("usage: ctxctl " + c), "help %s" % c, (rc, out[:80], err))
        rc2, out2, err2 = ctl(None, c, "--help")
        r.check(rc2 == 0 and out2 == out, "%s --help is help %s" % (c, c), (rc2, out2[:80], err2))
    rc, out, err = ctl(None, "help", "--help")
    r.check(rc == 0 and out.startswith("usage: ctxctl help"), "help --help", (rc, out, err))


# ---- collections, search, reindex (a daemon of their own) ----------------

FOX = "The quick brown fox jumps over the lazy dog near the river bank. " * 6
SHIPS = "Container ships carry steel boxes across the ocean between harbours. " * 6
BAKE = "Bread rises when yeast ferments the sugars in warm dough before baking. " * 6


def search_json(addr, *args, stdin=None):
    """ctxctl search --json: (exit code, [one dict per query], stderr)."""
    rc, out, err = ctl(addr, "search", "--json", *args, stdin=stdin)
    rows = []
    for line in out.splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            r.check(False, "search --json lines parse", line)
    return rc, rows, err


def case_search_usage():
    for args, what in ((["q", "-k", "0"], "-k 0"), (["q", "-k", "x"], "-k x"),
                       (["q", "--mode", "fuzzy"], "an unknown --mode"),
                       (["q", "--meta", "novalue"], "--meta without ="),
                       (["q", "--ef", "-1"], "--ef -1"), ([], "no QUERY")):
        rc, out, err = ctl(None, "search", *args)
        r.eq(rc, 2, "search with %s: exit 2" % what)
    rc, out, err = ctl(None, "search", "q", "--mode", "fuzzy")
    r.check("vector, lexical or hybrid" in err, "a bad --mode names the modes", err)
    for args, what in ((["collection"], "no subcommand"), (["collection", "frob"], "an unknown subcommand"),
                       (["collection", "create"], "create without NAME"),
                       (["collection", "create", "x", "--metric", "cos"], "a bad --metric"),
                       (["collection", "create", "x", "--chunk-tokens", "many"], "a bad --chunk-tokens"),
                       (["collection", "drop"], "drop without NAME"),
                       (["collection", "ls", "extra"], "ls with an argument"),
                       (["reindex", "extra"], "reindex with an argument")):
        rc, out, err = ctl(None, *args)
        r.eq(rc, 2, "%s: exit 2" % what)
    rc, out, err = ctl(None, "help", "collection")
    r.check(rc == 0 and "create NAME" in out and "drop NAME" in out and "--yes" in out,
            "help collection documents create, drop and ls", out[:200])
    rc, out, err = ctl(None, "collection", "create", "--help")
    r.check(rc == 0 and out.startswith("usage: ctxctl collection"), "collection create --help")


def case_collections(addr):
    rc, out, err = ctl(addr, "collection", "ls")
    r.eq(rc, 0, "collection ls exits 0")
    lines = out.splitlines()
    r.check(lines and lines[0].split()[:4] == ["COLLECTION", "DOCUMENTS", "CHUNKS", "VECTORS"]
            and "TRAINED" in lines[0] and "MASKED" in lines[0], "collection ls header", out)
    r.check(any(l.split()[:1] == ["default"] for l in lines[1:]),
            "the default collection is listed", out)

    rc, out, err = ctl(addr, "collection", "create", "papers", "--index", "HNSW32",
                       "--metric", "ip", "--chunk-tokens", "24", "--overlap", "4")
    r.eq(rc, 0, "collection create exits 0")
    r.check("created collection papers" in out and "HNSW32" in out and "metric ip" in out
            and "chunks of 24 tokens with 4 overlap" in out, "create says what it made", out)
    rc, out, err = ctl(addr, "collection", "create", "papers")
    r.eq(rc, 1, "creating an existing collection: exit 1")
    r.check("ALREADY_EXISTS" in err and "papers" in err, "ALREADY_EXISTS named", err)
    rc, out, err = ctl(addr, "collection", "create", "bogus", "--index", "NoSuchIndex")
    r.eq(rc, 1, "a bad index spec: exit 1")
    r.check("INVALID_ARGUMENT" in err, "a bad index spec: INVALID_ARGUMENT", err)
    rc, out, err = ctl(addr, "collection", "create", "bad name!")
    r.check(rc == 1 and "INVALID_ARGUMENT" in err, "a bad collection name: exit 1", (rc, err))
    rc, out, err = ctl(addr, "collection", "create", "small", "--embedder", "hash:dim=64",
                       "--index", "Flat", "--metric", "l2", "--json")
    r.eq(rc, 0, "collection create --json exits 0")
    try:
        info = json.loads(out)
        c = info["config"]
        r.eq((c["name"], c["dim"], c["metric"], c["index_spec"]), ("small", 64, "l2", "Flat"),
             "create --json: the config with its dimension")
        r.check(c["embedder"].startswith("hash:") and "dim=64" in c["embedder"],
                "create --json: the embedder in its full form", c["embedder"])
        r.eq(info["documents"], 0, "create --json: no documents yet")
    except (ValueError, KeyError) as e:
        r.check(False, "collection create --json parses", "%s: %s" % (e, out))

    # documents in collections: -c on put, get, ls, rm; JSONL "collection"
    write(os.path.join(WORK, "coll", "fox.txt"), FOX.encode())
    write(os.path.join(WORK, "coll", "ships.txt"), SHIPS.encode())
    write(os.path.join(WORK, "coll", "bake.txt"), BAKE.encode())
    rc, out, err = ctl(addr, "put", "-c", "papers", "coll", "--meta", "src=files")
    r.check(rc == 0 and "stored 3 documents" in out, "put -c stores into the collection", (rc, out, err))
    with open(os.path.join(WORK, "coll.jsonl"), "w") as f:
        f.write(json.dumps({"id": "j-fox", "text": FOX, "metadata": {"kind": "animal"},
                            "collection": "papers"}) + "\n")
        f.write(json.dumps({"id": "j-small", "text": SHIPS}) + "\n")
        f.write(json.dumps({"id": "j-bad", "text": "x", "collection": 5}) + "\n")
    rc, out, err = ctl(addr, "put", "--collection", "small", "--jsonl", "coll.jsonl")
    r.eq(rc, 1, "put --jsonl with a non-string collection: exit 1")
    r.check('coll.jsonl:3: "collection" must be a string' in err, "a bad \"collection\" names its line", err)
    rc, out, err = ctl(addr, "ls", "-c", "papers", "--ids")
    r.eq(set(out.split()), {"fox.txt", "ships.txt", "bake.txt", "j-fox"},
         "ls -c: the collection's documents (the JSONL line's collection wins over -c)")
    rc, out, err = ctl(addr, "ls", "--collection", "small", "--ids")
    r.eq(out.split(), ["j-small"], "ls --collection: -c applies to JSONL lines without one")
    r.check("fox.txt" not in ids_of(addr), "the default collection does not hold them")
    rc, out, err = ctl(addr, "get", "-c", "papers", "fox.txt")
    r.check(rc == 0 and "collection  papers" in out and "src=files" in out,
            "get -c shows the document and its collection", out)
    rc, out, err = ctl(addr, "get", "fox.txt")
    r.check(rc == 1 and "NOT_FOUND" in err, "get without -c looks in default: exit 1", (rc, err))
    rc, out, err = ctl(addr, "get", "-c", "nosuch", "fox.txt")
    r.check(rc == 1 and "nosuch" in err and "NOT_FOUND" in err,
            "get -c of an unknown collection: exit 1, named", (rc, err))
    rc, out, err = ctl(addr, "ls", "-c", "nosuch")
    r.check(rc == 1 and "NOT_FOUND" in err, "ls -c of an unknown collection: exit 1", (rc, err))
    rc, out, err = ctl(addr, "get", "-c", "small", "j-small", "--vectors", "--json")
    try:
        g = json.loads(out)
        ch = g["chunks"]
        r.eq(g["collection"], "small", "get --json names the collection")
        r.check(ch and all(len(c["vector"]) == 64 for c in ch),
                "get --vectors --json: a 64-float vector per chunk", [len(c.get("vector", [])) for c in ch])
        norm = sum(x * x for x in ch[0]["vector"]) ** 0.5
        r.check(abs(norm - 1) < 1e-3, "hash vectors are L2-normalised", norm)
    except (ValueError, KeyError, IndexError) as e:
        r.check(False, "get --vectors --json parses", "%s: %s" % (e, out[:300]))
    rc, out, err = ctl(addr, "get", "-c", "small", "j-small", "--vectors")
    r.check(rc == 0 and "VECTOR" in out and "(64 floats)" in out, "get --vectors table", out[-300:])

    # collection ls and stats per collection
    rc, out, err = ctl(addr, "collection", "ls")
    row = [l.split() for l in out.splitlines() if l.split()[:1] == ["papers"]]
    r.check(len(row) == 1 and row[0][1] == "4" and int(row[0][2]) >= 4
            and row[0][3] == row[0][2] and row[0][4] == "HNSW32" and row[0][5] == "yes"
            and row[0][6] == "0", "collection ls row: 4 docs, a vector per chunk, HNSW32, trained", out)
    rc, out, err = ctl(addr, "collection", "ls", "--json")
    rows = [json.loads(l) for l in out.splitlines()]
    names = {x["config"]["name"]: x for x in rows}
    r.check({"default", "papers", "small"} <= set(names), "collection ls --json: a line each", sorted(names))
    r.check(names.get("small", {}).get("documents") == 1, "collection ls --json counts", names.get("small"))
    rc, out, err = ctl(addr, "stats")
    r.check(rc == 0 and "COLLECTION" in out and any(l.split()[:2] == ["papers", "4"] for l in out.splitlines()),
            "stats shows the collections table", out)
    rc, out, err = ctl(addr, "stats", "--json")
    try:
        sj = json.loads(out)
        pc = [x for x in sj["collections"] if x["config"]["name"] == "papers"]
        r.check(len(pc) == 1 and pc[0]["documents"] == 4 and pc[0]["vectors"] == pc[0]["chunks"]
                and pc[0]["trained"] is True and pc[0]["masked"] == 0,
                "stats --json: per-collection counts", pc)
    except (ValueError, KeyError) as e:
        r.check(False, "stats --json parses", "%s: %s" % (e, out[:300]))


def case_search(addr):
    rc, out, err = ctl(addr, "search", "quick brown fox", "-c", "papers")
    r.eq(rc, 0, "search exits 0")
    lines = out.splitlines()
    r.check(lines and lines[0].split() == ["RANK", "SCORE", "ORDINAL", "START", "END", "DOCUMENT"],
            "search prints a header", out[:200])
    top = lines[1].split() if len(lines) > 1 else []
    r.check(top[:1] == ["1"] and top[-1] in ("fox.txt", "j-fox"), "the fox documents rank first", out)
    r.check(len(lines) - 1 <= 10, "default k is 10", len(lines))

    for mode in ("vector", "lexical", "hybrid"):
        rc, rows, err = search_json(addr, "ocean ships harbours", "-c", "papers", "--mode", mode, "-k", "3")
        hits = rows[0]["hits"] if rows else []
        r.check(rc == 0 and 1 <= len(hits) <= 3 and hits[0]["doc_id"] == "ships.txt",
                "--mode %s -k 3: the ships document first" % mode, (rc, hits[:1], err))
        r.check([h["rank"] for h in hits] == list(range(1, len(hits) + 1))
                and all(hits[i]["score"] >= hits[i + 1]["score"] for i in range(len(hits) - 1)),
                "--mode %s: ranks in order, scores not increasing" % mode, hits)

    # --text: snippets; --json --text: each chunk's text is its byte range
    rc, out, err = ctl(addr, "search", "yeast dough", "-c", "papers", "-k", "2", "--text")
    r.check(rc == 0 and "yeast" in out.lower() and "\n      " in out, "--text prints snippets", out)
    rc, rows, err = search_json(addr, "yeast dough", "-c", "papers", "-k", "5", "--text")
    ok = bool(rows and rows[0]["hits"])
    for h in (rows[0]["hits"] if rows else []):
        src = {"fox.txt": FOX, "ships.txt": SHIPS, "bake.txt": BAKE, "j-fox": FOX}[h["doc_id"]].encode()
        ok = ok and h["text"].encode() == src[h["byte_start"]:h["byte_end"]]
        ok = ok and set(h) >= {"rank", "score", "doc_id", "ordinal", "byte_start", "byte_end", "tokens"}
    r.check(ok, "--json --text: fields, and each text is its document's byte range", rows)

    # filters
    rc, rows, err = search_json(addr, "quick brown fox", "-c", "papers", "--doc", "bake.txt",
                                "--doc", "ships.txt")
    docs = {h["doc_id"] for h in rows[0]["hits"]} if rows else set()
    r.check(rc == 0 and docs and docs <= {"bake.txt", "ships.txt"}, "--doc filters by document", docs)
    rc, rows, err = search_json(addr, "quick brown fox", "-c", "papers", "--meta", "kind=animal")
    docs = {h["doc_id"] for h in rows[0]["hits"]} if rows else set()
    r.eq(docs, {"j-fox"}, "--meta filters by metadata")
    rc, rows, err = search_json(addr, "quick brown fox", "-c", "papers", "--meta", "kind=animal",
                                "--meta", "src=files")
    r.check(rc == 0 and rows and rows[0]["hits"] == [], "--meta twice: all must hold (no hits)", rows)
    rc, out, err = ctl(addr, "search", "quick brown fox", "-c", "papers", "--meta", "kind=plant")
    r.check(rc == 0 and "no hits" in out, "no hits: exit 0, says so", (rc, out))
    rc, rows, err = search_json(addr, "fox", "-c", "papers", "--mode", "vector", "--ef", "200")
    r.check(rc == 0 and rows and rows[0]["hits"], "--ef is accepted", (rc, err))
    rc, rows, err = search_json(addr, "fox", "-c", "papers", "--mode", "vector", "--nprobe", "4")
    r.check(rc == 0 and rows and rows[0]["hits"], "--nprobe is accepted", (rc, err))

    # several queries: SearchBatch, a block (or a JSON line) each, in order
    rc, out, err = ctl(addr, "search", "fox", "ships", "yeast", "-c", "papers", "-k", "1")
    r.check(rc == 0 and "query 1: fox" in out and "query 3: yeast" in out
            and out.count("RANK") == 3, "several queries: a block each", out)
    rc, rows, err = search_json(addr, "fox", "ocean ships", "yeast bread", "-c", "papers", "-k", "1")
    r.eq([x["query"] for x in rows], ["fox", "ocean ships", "yeast bread"], "batch --json: a line per query, in order")
    r.check([x["hits"][0]["doc_id"] if x["hits"] else None for x in rows][1:] == ["ships.txt", "bake.txt"],
            "batch: each query answered by its own document", rows)
    rc, rows, err = search_json(addr, "-", "-c", "papers", "-k", "1", stdin=b"container ships ocean")
    r.check(rc == 0 and rows and rows[0]["query"] == "container ships ocean"
            and rows[0]["hits"][0]["doc_id"] == "ships.txt", "search - reads the query from stdin", rows)

    # errors the server judges: exit 1 with its status
    rc, out, err = ctl(addr, "search", "fox", "-c", "nosuch")
    r.check(rc == 1 and "NOT_FOUND" in err and "nosuch" in err, "search of an unknown collection: exit 1",
            (rc, err))
    rc, out, err = ctl(addr, "search", "fox", "-c", "papers", "-k", "5000")
    r.check(rc == 1 and "RESOURCE_EXHAUSTED" in err, "search -k 5000: exit 1, RESOURCE_EXHAUSTED",
            (rc, err))
    rc, out, err = ctl(addr, "search", "fox", "ships", "-c", "nosuch")
    r.check(rc == 1 and "NOT_FOUND" in err, "batch search of an unknown collection: exit 1", (rc, err))
    # the default collection needs no -c
    rc, out, err = ctl(addr, "put", "--id", "default-fox", "coll/fox.txt")
    r.eq(rc, 0, "put without -c")
    rc, rows, err = search_json(addr, "quick brown fox", "-k", "3")
    r.check(rc == 0 and rows and rows[0]["hits"]
            and {h["doc_id"] for h in rows[0]["hits"]} == {"default-fox"},
            "search without -c searches the default collection", rows)

    # a deleted document leaves the results at once
    rc, out, err = ctl(addr, "rm", "-c", "papers", "j-fox")
    r.check(rc == 0 and "deleted j-fox" in out, "rm -c deletes from the collection", (rc, out, err))
    rc, rows, err = search_json(addr, "quick brown fox", "-c", "papers", "-k", "20")
    r.check(rc == 0 and rows and "j-fox" not in {h["doc_id"] for h in rows[0]["hits"]},
            "a deleted document is not found", rows)
    rc, out, err = ctl(addr, "rm", "-c", "nosuch", "-f", "x")
    r.check(rc == 1 and "NOT_FOUND" in err, "rm -f in an unknown collection: exit 1", (rc, err))


def case_reindex(addr):
    rc, out, err = ctl(addr, "reindex", "-c", "papers")
    r.eq(rc, 0, "reindex exits 0")
    r.check(re.search(r"rebuilt the index of collection papers: \d+ vectors in [0-9.]+ s", out),
            "reindex says what it rebuilt", out)
    rc, out, err = ctl(addr, "reindex", "-c", "papers", "-q")
    r.check(rc == 0 and out == "", "reindex -q prints nothing", (rc, out))
    rc, out, err = ctl(addr, "reindex")
    r.eq(rc, 0, "reindex of the default collection exits 0")
    rc, out, err = ctl(addr, "reindex", "-c", "nosuch")
    r.check(rc == 1 and "NOT_FOUND" in err and "nosuch" in err, "reindex of an unknown collection: exit 1",
            (rc, err))
    rc, rows, err = search_json(addr, "ocean ships", "-c", "papers", "-k", "1")
    r.check(rc == 0 and rows and rows[0]["hits"][0]["doc_id"] == "ships.txt", "search after reindex", rows)
    rc, out, err = ctl(addr, "collection", "ls")
    row = [l.split() for l in out.splitlines() if l.split()[:1] == ["papers"]]
    r.check(row and row[0][6] == "0", "no masked vectors after the rebuild", out)

    # the progress line on a terminal: drawn and erased
    rc, out, tty = ctl_tty(addr, "reindex", "-c", "papers")
    r.eq(rc, 0, "reindex with a terminal exits 0")
    r.check(b" vectors" in tty and tty.endswith(b"\r\x1b[K"), "a progress line drawn and erased", tty[-200:])
    r.check("rebuilt the index" in out, "the summary goes to stdout", out)


def case_drop(addr):
    rc, out, err = ctl(addr, "collection", "drop", "papers")
    r.eq(rc, 2, "drop without --yes and no terminal: exit 2")
    r.check("--yes" in err, "says to confirm with --yes", err)
    rc, out, err = ctl(addr, "collection", "drop", "papers", "--yes")
    r.eq(rc, 0, "drop --yes exits 0")
    r.check("dropped collection papers (3 documents)" in out, "drop says how many documents went", out)
    rc, out, err = ctl(addr, "collection", "drop", "papers", "-y")
    r.check(rc == 1 and "NOT_FOUND" in err, "dropping it again: exit 1, NOT_FOUND", (rc, err))
    rc, out, err = ctl(addr, "search", "fox", "-c", "papers")
    r.check(rc == 1 and "NOT_FOUND" in err, "search of a dropped collection: exit 1", (rc, err))
    rc, out, err = ctl(addr, "collection", "ls")
    r.check("papers" not in out and "small" in out, "collection ls no longer lists it", out)
    rc, out, err = ctl(addr, "collection", "ls", "--json")
    r.check(rc == 0 and "papers" not in out, "nor collection ls --json", out)
    # with a terminal on stdin, drop asks first
    import pty
    for answer, want_rc in ((b"n\n", 1), (b"y\n", 0)):
        master, slave = pty.openpty()
        p = subprocess.Popen([CTXCTL, "--addr", addr, "collection", "drop", "small"],
                             stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=WORK)
        os.close(slave)
        os.write(master, answer)
        out, err = p.communicate(timeout=60)
        os.close(master)
        out, err = out.decode(), err.decode()
        r.eq(p.returncode, want_rc, "drop on a terminal answered %r: exit %d" % (answer, want_rc))
        r.check("Drop collection small and its 1 document? [y/N]" in err,
                "the question names the collection and its document count", err)
        if want_rc:
            r.check("not dropped" in err, "answer n: not dropped", err)
        else:
            r.check("dropped collection small (1 document)" in out, "answer y: dropped", out)
    rc, out, err = ctl(addr, "collection", "ls")
    r.check("small" not in out, "the collection answered y is gone", out)
    # a put re-creates it with the server's defaults, empty but for the put
    rc, out, err = ctl(addr, "put", "-c", "papers", "--id", "again", "coll/fox.txt")
    r.eq(rc, 0, "put -c into a dropped collection re-creates it")
    rc, out, err = ctl(addr, "ls", "-c", "papers", "--ids")
    r.eq(out.split(), ["again"], "the re-created collection holds only the new document")


def peer(data=b"", accept=True):
    """A TCP listener that is not a gRPC server: it never accepts (the
    kernel still completes the handshake), or accepts, sends `data` and
    reads until the client goes. Returns (addr, close function)."""
    import threading
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    addr = "127.0.0.1:%d" % s.getsockname()[1]

    def serve():
        try:
            c, _ = s.accept()
        except OSError:
            return
        c.sendall(data)
        c.settimeout(10)
        try:
            while c.recv(65536):
                pass
        except OSError:
            pass
        c.close()

    if accept:
        threading.Thread(target=serve, daemon=True).start()
    return addr, s.close


def case_not_grpc():
    import time
    addr, stop = peer(accept=False)
    for args in (["status"], ["put", "corpus/a.txt"], ["ls"]):
        t0 = time.monotonic()
        rc, out, err = ctl(addr, "--timeout", "1", *args)
        took = time.monotonic() - t0
        r.eq(rc, 3, "a server that never speaks: %s exits 3" % args[0])
        r.check("sent no HTTP/2 within 1000 ms" in err and "(UNAVAILABLE)" in err,
                "%s: says the server sent no HTTP/2" % args[0], err)
        r.check(took < 6, "%s: gives up within --timeout" % args[0], took)
    stop()
    # SETTINGS, then DATA on stream 0: a protocol error, named as one
    addr, stop = peer(b"\0\0\0\x04\0\0\0\0\0" + b"\0\0\x01\0\0\0\0\0\0x")
    rc, out, err = ctl(addr, "--timeout", "5", "status")
    r.eq(rc, 3, "a server breaking HTTP/2: exit 3")
    r.check("HTTP/2 protocol error from %s" % addr in err, "the protocol error is named", err)
    stop()


def case_put_edges(addr):
    e = os.path.join(WORK, "edge")
    # JSONL: a byte order mark, CRLF line ends, blank and whitespace lines,
    # a bad line (its number), a non-string metadata value (its key)
    write(os.path.join(e, "in.jsonl"),
          b"\xef\xbb\xbf" + json.dumps({"id": "edge/bom", "text": "first line"}).encode() + b"\r\n"
          + json.dumps({"id": "edge/crlf", "text": "crlf line"}).encode() + b"\r\n"
          + b"\r\n   \t \n"
          + b'{"id": "edge/bad", "text": \r\n'
          + json.dumps({"id": "edge/meta", "text": "x", "metadata": {"n": 5}}).encode() + b"\n")
    rc, out, err = ctl(addr, "put", "--jsonl", os.path.join(e, "in.jsonl"))
    r.eq(rc, 1, "jsonl with bad lines exits 1")
    r.check("in.jsonl:1" not in err, "a UTF-8 BOM before line 1 is skipped", err)
    r.check("in.jsonl:5: invalid JSON" in err, "invalid JSON on line 5 (CRLF counted once)", err)
    r.check('in.jsonl:6: "metadata" values must be strings ("n" is a number)' in err,
            "a non-string metadata value names its key and type", err)
    r.check("stored 2 documents" in out and "2 rejected" in out, "2 stored, 2 rejected", out)
    ids = ids_of(addr)
    r.check({"edge/bom", "edge/crlf"} <= ids, "BOM and CRLF lines stored", sorted(i for i in ids if i.startswith("edge")))
    rc, out, err = ctl(addr, "get", "edge/crlf", "--text")
    r.eq(out, "crlf line", "CRLF line's text has no CR")

    # an empty directory and an empty file
    os.makedirs(os.path.join(e, "empty-dir"), exist_ok=True)
    rc, out, err = ctl(addr, "put", os.path.join(e, "empty-dir"))
    r.check(rc == 0 and "stored 0 documents" in out, "put of an empty directory: exit 0", (rc, out, err))
    write(os.path.join(e, "empty.txt"), b"")
    rc, out, err = ctl(addr, "put", "--id", "edge/empty", os.path.join(e, "empty.txt"))
    r.eq(rc, 0, "put of an empty file: exit 0")
    rc, out, err = ctl(addr, "get", "edge/empty")
    r.check(rc == 0 and "bytes       0" in out, "the empty document is stored", out)

    # symlinks: to a file (followed), to a directory and loops (not
    # followed), dangling (skipped)
    t = os.path.join(e, "links")
    write(os.path.join(t, "real.txt"), b"real file")
    for name, target in (("to-file.txt", "real.txt"), ("to-dir", "."), ("self", "self"),
                         ("dangling", "nowhere")):
        if not os.path.lexists(os.path.join(t, name)):
            os.symlink(target, os.path.join(t, name))
    rc, out, err = ctl(addr, "put", "--prefix", "links/", t)
    r.check(rc == 0 and "stored 2 documents" in out, "symlinks: the file link followed, loops not", (rc, out, err))
    r.check("skipping symbolic link" in err and "dangling" in err and "self" in err,
            "dangling and looping links are named on stderr", err)

    # a tree deeper than PATH_MAX: its file is reported, not skipped silently
    d = os.path.join(e, "deep")
    os.makedirs(d, exist_ok=True)
    write(os.path.join(d, "top.txt"), b"shallow file")
    fd = os.open(d, os.O_RDONLY)
    for _ in range(40):
        try:
            os.mkdir("d" * 120, dir_fd=fd)
        except FileExistsError:
            pass
        nfd = os.open("d" * 120, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    f = os.open("deep.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(f, b"deep file")
    os.close(f)
    os.close(fd)
    rc, out, err = ctl(addr, "put", "--prefix", "deep/", d)
    r.eq(rc, 1, "a path over PATH_MAX makes put exit 1")
    r.check("File name too long" in err, "the too-long path is reported", err[:300])
    r.check("deep/top.txt" in ids_of(addr), "the rest of the tree is stored")

    # ids over 1024 bytes: the server refuses; the message stays readable
    lp = os.path.join(e, "long", *(["p" * 150] * 8), "file.txt")
    write(lp, b"long path")
    rc, out, err = ctl(addr, "put", os.path.join(e, "long"))
    r.eq(rc, 1, "put of a 1,200-byte id exits 1")
    line = [l for l in err.splitlines() if "limit of 1024 bytes" in l]
    r.check(len(line) == 1 and len(line[0]) < 300 and "ppp..." in line[0],
            "the refusal is one short line with the id shortened", err[:400])
    rc, out, err = ctl(addr, "get", "x" * 1500)
    r.check(rc == 1 and "(INVALID_ARGUMENT)" in err and len(err) < 300 and "xxx..." in err,
            "get of a 1,500-byte id: one short line", err[:400])


def case_progress(addr):
    """The progress bar is drawn when stderr is a terminal (a pty here)."""
    write(os.path.join(WORK, "prog", "x.txt"), b"some text " * 10)
    for i in range(40):
        write(os.path.join(WORK, "prog", "f%02d.txt" % i), b"file %d " % i * 20)
    rc, out, tty = ctl_tty(addr, "put", "--prefix", "prog/", "prog")
    r.eq(rc, 0, "put with a terminal on stderr exits 0")
    r.check(b"\r\x1b[K" in tty and b"/41 docs" in tty, "a progress line is drawn", tty[:200])
    r.check(tty.endswith(b"\r\x1b[K"), "and erased at the end", tty[-60:])
    r.check("stored 41 documents" in out, "the summary goes to stdout", out)


def case_large(addr):
    """A 60 MB document: put, get --text byte for byte, get --text --chunks
    (about twice the text in one response), memory of get --text."""
    unit = "Lorem ipsum dolor sit amet, caf\u00e9 na\u00efve \u2014 consectetur. ".encode()
    big = unit * (60_000_000 // len(unit))
    path = os.path.join(WORK, "big60.txt")
    write(path, big)
    rc, out, err = ctl(addr, "put", "--id", "big60", path)
    r.eq(rc, 0, "put of a 60 MB file")
    with open(os.path.join(WORK, "got.txt"), "wb") as f:
        p = subprocess.Popen([CTXCTL, "--addr", addr, "get", "big60", "--text"],
                             stdout=f, stderr=subprocess.PIPE, cwd=WORK)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        err = p.stderr.read().decode()
    r.eq(p.returncode, 0, "get --text of 60 MB exits 0", )
    with open(os.path.join(WORK, "got.txt"), "rb") as f:
        r.check(f.read() == big, "get --text of 60 MB is byte-exact")
    if not (os.environ.get("ASAN_OPTIONS") or os.environ.get("UBSAN_OPTIONS")):
        r.check(ru.ru_maxrss < 3 * 60_000, "get --text peak RSS under 3x the text",
                "%d KiB" % ru.ru_maxrss)
    p = subprocess.run([CTXCTL, "--addr", addr, "get", "big60", "--text", "--chunks"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=WORK)
    r.check(p.returncode == 0 and len(p.stdout) > len(big),
            "get --text --chunks of 60 MB (a response over 64 MiB) works",
            (p.returncode, len(p.stdout), p.stderr[-300:]))
    rc, out, err = ctl(addr, "rm", "big60")
    r.eq(rc, 0, "rm of the large document")
    os.unlink(path)
    os.unlink(os.path.join(WORK, "got.txt"))


if not CTXCTL or not os.path.exists(CTXCTL):
    r.check(False, "CTXCTL_BIN is set", CTXCTL)
    r.finish()

r.case("usage", case_usage)
r.case("help for every command", case_help_all)
r.case("unreachable", case_unreachable)
r.case("not a gRPC server", case_not_grpc)
with Daemon(r) as d:
    r.case("status", case_status, d.addr)
    r.case("put", case_put, d.addr)
    r.case("get", case_get, d.addr)
    n = r.case("ls", case_ls, d.addr)
    r.case("chunk", case_chunk, d.addr)
    r.case("rm", case_rm, d.addr)
    r.case("stats", case_stats, d.addr, (n or 0) - 2)
    r.case("verify", case_verify, d.addr)
    r.case("put edge inputs", case_put_edges, d.addr)
    r.case("put progress on a terminal", case_progress, d.addr)
    r.case("large document", case_large, d.addr)
    addr = d.addr


def case_too_big(addr):
    write(os.path.join(WORK, "big", "huge.txt"), b"word " * 400000)  # 2 MB
    write(os.path.join(WORK, "big", "small.txt"), b"small")
    rc, out, err = ctl(addr, "put", "big/small.txt", "big/huge.txt")
    r.eq(rc, 1, "put of a document above the server's message limit exits 1")
    r.check("document big/huge.txt:" in err and "RESOURCE_EXHAUSTED" in err,
            "the oversized document and the status are named", err)
    r.check("not stored" in err, "says unacknowledged documents were not stored", err)


with Daemon(r, args=["--server.max_message_bytes", "1048576"], name="ctxd-small") as d:
    r.case("too big", case_too_big, d.addr)

r.case("search and collection usage", case_search_usage)
with Daemon(r, name="ctxd-search") as d:
    r.case("collections", case_collections, d.addr)
    r.case("search", case_search, d.addr)
    r.case("reindex", case_reindex, d.addr)
    r.case("collection drop", case_drop, d.addr)

# The daemon is gone now: the same address is unreachable.
rc, out, err = ctl(addr, "status")
r.eq(rc, 3, "status after the daemon stopped: exit 3")
import shutil  # noqa: E402

shutil.rmtree(WORK, ignore_errors=True)
r.finish()
