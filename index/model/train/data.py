#!/usr/bin/python3
"""data.py - the training text of ctxd's reference model, from Debian packages.

  data.py fetch  WORK             apt-get download + dpkg -x the packages below
  data.py render WORK             English documents -> WORK/docs.jsonl
  data.py tokens WORK VOCAB OUT   GPT-2 tokens: OUT/train.u16, OUT/heldout.u16
                                  (documents joined by <|endoftext|>; about 1
                                  document in 50, by a hash of its path, is
                                  held out), OUT/stats.json

Only English prose that Debian ships as documentation: HTML manuals (Python,
PostgreSQL, Django, Apache, Git, the Debian handbook/reference/policy),
Perl's pod pages, man pages and plain-text documents. Source code blocks are
dropped where the markup marks them (<pre>, pod verbatim paragraphs). No
Brown Corpus text (ctxd's needle-in-a-haystack haystack) is used.
"""
import gzip
import hashlib
import html
import html.parser
import json
import os
import re
import subprocess
import sys

import numpy as np

PACKAGES = [
    "python3.11-doc", "perl-doc", "postgresql-doc-15", "python-django-doc",
    "debian-reference-en", "debian-handbook", "debian-policy", "developers-reference",
    "maint-guide", "doc-debian", "git-doc", "bash-doc", "gnu-standards", "manpages",
    "manpages-dev", "glibc-doc", "fortunes", "apache2-doc", "postfix-doc", "docutils-doc",
    "wordnet-base",  # synonym sets for the paraphrased questions (tasks.py synsets)
]

MIN_CHARS = 400  # documents shorter than this are mostly navigation


def fetch(work):
    debs = os.path.join(work, "debs")
    root = os.path.join(work, "root")
    os.makedirs(debs, exist_ok=True)
    os.makedirs(root, exist_ok=True)
    subprocess.run(["apt-get", "download"] + PACKAGES, cwd=debs, check=True)
    for f in sorted(os.listdir(debs)):
        if f.endswith(".deb"):
            subprocess.run(["dpkg", "-x", os.path.join(debs, f), root], check=True)


class HTMLText(html.parser.HTMLParser):
    """Text of the block elements of a page; <pre>, scripts, styles and
    navigation are skipped."""
    SKIP = {"script", "style", "pre", "head", "nav", "code", "table"}
    BLOCK = {"p", "li", "dd", "dt", "h1", "h2", "h3", "h4", "h5", "h6", "div", "blockquote",
             "br", "tr", "section", "ul", "ol", "dl", "td", "th", "title"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.skip = 0
        self.paras = []
        self.cur = []

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag in self.BLOCK:
            self.flush()

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.flush()

    def handle_data(self, data):
        if not self.skip:
            self.cur.append(data)

    def flush(self):
        t = " ".join("".join(self.cur).split())
        self.cur = []
        if t:
            self.paras.append(t)


def prose_paragraphs(paras):
    """Keep paragraphs that read as sentences: some words, mostly letters."""
    out = []
    for p in paras:
        words = p.split()
        if len(words) < 6:
            continue
        letters = sum(c.isalpha() for c in p)
        if letters < 0.6 * len(p) or "¶" in p:
            p = p.replace("¶", "").strip()
            if letters < 0.6 * len(p):
                continue
        out.append(p)
    return out


def render_html(path):
    with open(path, "rb") as f:
        raw = f.read()
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    p = HTMLText()
    p.feed(raw.decode("utf-8", errors="replace"))
    p.flush()
    return "\n\n".join(prose_paragraphs(p.paras))


def reflow(text):
    """Join the wrapped lines of each blank-line separated paragraph."""
    paras = [" ".join(b.split()) for b in re.split(r"\n\s*\n", text)]
    return "\n\n".join(prose_paragraphs(paras))


def render_man(path):
    r = subprocess.run("zcat -f '%s' | groff -t -man -Tutf8 -P-cbou 2>/dev/null" % path,
                       shell=True, capture_output=True, env=dict(os.environ, MANWIDTH="1000"))
    text = r.stdout.decode("utf-8", errors="replace")
    # Indented lines of man output are wrapped paragraph text; headers are
    # short lines of capitals, dropped by prose_paragraphs.
    return reflow(text)


def render_pod(path):
    r = subprocess.run(["pod2text", "-w", "1000", path], capture_output=True)
    text = r.stdout.decode("utf-8", errors="replace")
    # pod2text indents verbatim (code) paragraphs by 4 more spaces than prose.
    keep = [b for b in re.split(r"\n\s*\n", text) if not b.startswith("        ")]
    return reflow("\n\n".join(keep))


def render_fortunes(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        items = f.read().split("\n%\n")
    return "\n\n".join(" ".join(i.split()) for i in items if len(i.split()) >= 6)


def english_html(rel):
    # debian-handbook ships every translation; keep en-US.
    if "/debian-handbook/" in rel and "/en-US/" not in rel:
        return False
    if "/debian-reference/" in rel and not re.search(r"\.en\.html$", rel):
        return False
    return True


def render(work):
    root = os.path.join(work, "root")
    out = open(os.path.join(work, "docs.jsonl"), "w")
    n = 0
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        for fn in sorted(files):
            p = os.path.join(dirpath, fn)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                continue
            text = ""
            try:
                if re.search(r"\.html?(\.gz)?$", fn):
                    if english_html("/" + rel):
                        text = render_html(p)
                elif rel.startswith("usr/share/man/man") and fn.endswith(".gz"):
                    text = render_man(p)
                elif fn.endswith(".pod") and "/pod/" in rel:
                    text = render_pod(p)
                elif rel.startswith("usr/share/games/fortunes/") and "." not in fn:
                    text = render_fortunes(p)
                elif re.search(r"\.txt(\.gz)?$", fn) and "/usr/share/doc/" in "/" + rel:
                    with open(p, "rb") as f:
                        raw = f.read()
                    if fn.endswith(".gz"):
                        raw = gzip.decompress(raw)
                    text = reflow(raw.decode("utf-8", errors="replace"))
            except (OSError, UnicodeError, EOFError) as e:
                print("skip %s: %s" % (rel, e), file=sys.stderr)
                continue
            text = html.unescape(text).strip()
            if len(text) >= MIN_CHARS:
                out.write(json.dumps({"path": rel, "text": text}) + "\n")
                n += 1
    out.close()
    print("render: %d documents" % n)


def _tok_worker(args):
    vocab, lines = args
    import bpe
    b = _tok_worker.bpe = getattr(_tok_worker, "bpe", None) or bpe.BPE(vocab)
    res = []
    for line in lines:
        d = json.loads(line)
        held = int(hashlib.sha256(d["path"].encode()).hexdigest(), 16) % 50 == 0
        res.append((held, b.encode(d["text"])))
    return res


def tokens(work, vocab, outdir):
    import multiprocessing
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(work, "docs.jsonl")) as f:
        lines = f.readlines()
    chunks = [(vocab, lines[i:i + 200]) for i in range(0, len(lines), 200)]
    import bpe
    eot = bpe.BPE(vocab).eot
    parts = {False: [], True: []}
    docs = {False: 0, True: 0}
    with multiprocessing.Pool(os.cpu_count()) as pool:
        for res in pool.imap(_tok_worker, chunks):
            for held, ids in res:
                parts[held].append(np.asarray(ids + [eot], dtype=np.uint16))
                docs[held] += 1
    stats = {}
    for held, name in ((False, "train"), (True, "heldout")):
        arr = np.concatenate(parts[held])
        arr.tofile(os.path.join(outdir, name + ".u16"))
        stats[name] = {"documents": docs[held], "tokens": int(arr.size)}
    with open(os.path.join(outdir, "stats.json"), "w") as f:
        json.dump(stats, f, indent=1)
    print("tokens:", stats)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd, work = sys.argv[1], sys.argv[2]
    if cmd == "fetch":
        fetch(work)
    elif cmd == "render":
        render(work)
    elif cmd == "tokens" and len(sys.argv) == 5:
        tokens(work, sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
