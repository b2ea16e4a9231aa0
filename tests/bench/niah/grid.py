#!/usr/bin/python3
"""grid.py - accuracy grids of the needle-in-a-haystack harness.

Reads the trial rows niah prints (TSV with a header; several files may be
given, header lines after the first are skipped) and writes
  <prefix>.tsv  method, variant, length, depth, trials, hits, accuracy
  <prefix>.md   one table per method and variant: haystack lengths down,
                needle depths across, accuracy in percent (hits/trials where
                a cell is not unanimous), then mean select wall time per
                length and, for model methods, the mean ratio to plain
                llama.cpp where niah measured it.
  grid.py PREFIX trials.tsv [more.tsv ...]
"""
import sys
from collections import OrderedDict, defaultdict


def length_key(s):
    m = {"k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6}
    return float(s[:-1]) * m[s[-1]] if s and s[-1] in m else float(s)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    prefix, files = sys.argv[1], sys.argv[2:]
    rows = []
    header = None
    for path in files:
        with open(path) as f:
            for line in f:
                cols = line.rstrip("\n").split("\t")
                if cols[0] == "method":
                    header = cols
                    continue
                if header and len(cols) == len(header):
                    rows.append(dict(zip(header, cols)))
    if not rows:
        sys.exit("grid.py: no trial rows in " + " ".join(files))
    cells = OrderedDict()
    wall = defaultdict(list)
    ratio = defaultdict(list)
    for r in rows:
        key = (r["method"], r["variant"], r["length"], float(r["depth"]))
        c = cells.setdefault(key, [0, 0])
        c[0] += 1
        c[1] += int(r["ok"])
        wall[(r["method"], r["variant"], r["length"])].append(float(r["wall_ms"]))
        if float(r.get("ratio", 0) or 0) > 0:
            ratio[(r["method"], r["variant"], r["length"])].append(float(r["ratio"]))
    with open(prefix + ".tsv", "w") as out:
        out.write("method\tvariant\tlength\tdepth\ttrials\thits\taccuracy\n")
        for (m, v, ln, d), (n, h) in cells.items():
            out.write("%s\t%s\t%s\t%g\t%d\t%d\t%.3f\n" % (m, v, ln, d, n, h, h / n))
    groups = OrderedDict()
    for (m, v, ln, d) in cells:
        g = groups.setdefault((m, v), {"lengths": [], "depths": []})
        if ln not in g["lengths"]:
            g["lengths"].append(ln)
        if d not in g["depths"]:
            g["depths"].append(d)
    md = []
    for (m, v), g in groups.items():
        lengths = sorted(g["lengths"], key=length_key)
        depths = sorted(g["depths"])
        n_all = sum(cells[(m, v, ln, d)][0] for ln in lengths for d in depths if (m, v, ln, d) in cells)
        h_all = sum(cells[(m, v, ln, d)][1] for ln in lengths for d in depths if (m, v, ln, d) in cells)
        md.append("**%s, %s question** (%d/%d = %.0f%% overall)\n" % (m, v, h_all, n_all, 100.0 * h_all / n_all))
        has_ratio = any(ratio[(m, v, ln)] for ln in lengths)
        head = ["tokens"] + ["%g%%" % d for d in depths] + ["select ms (mean)"]
        if has_ratio:
            head.append("wall / plain llama.cpp")
        md.append("| " + " | ".join(head) + " |")
        md.append("| " + " | ".join(["---"] + ["---:"] * (len(head) - 1)) + " |")
        for ln in lengths:
            row = [ln]
            for d in depths:
                n, h = cells.get((m, v, ln, d), (0, 0))
                if n == 0:
                    row.append("")
                elif h in (0, n):
                    row.append("%.0f" % (100.0 * h / n))
                else:
                    row.append("%.0f (%d/%d)" % (100.0 * h / n, h, n))
            w = wall[(m, v, ln)]
            row.append("%.1f" % (sum(w) / len(w)))
            if has_ratio:
                rr = ratio[(m, v, ln)]
                row.append("%.3f" % (sum(rr) / len(rr)) if rr else "")
            md.append("| " + " | ".join(row) + " |")
        md.append("")
    with open(prefix + ".md", "w") as out:
        out.write("\n".join(md))
    sys.stdout.write("\n".join(md))


if __name__ == "__main__":
    main()
