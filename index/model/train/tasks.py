"""tasks.py - synthetic long-context training sequences for ctxd's reference model.

A sequence is T+1 tokens of prose (the training split) with 1-4 "needles"
inserted at sentence boundaries at random depths, and 1-2 questions about
them at the end, each followed by its answer. Needle kinds:
  kv        "The value of key <k> is <v>."            (distractor keys too)
  passkey   "The pass key is <n>. Remember it. ..."
  copy      a sentence of the prose itself; the question quotes its start
  fact      a fact about a person or an object, asked literally (the same
            words) or paraphrased (other wording, synonyms: hand-written
            relation paraphrases plus WordNet synonyms of the object)
For each question the generator records its token rows and the span of the
needle it asks about: train.py's attention loss pulls the last layer's
attention of the question rows onto that span (what InfiniRetri reads).

  tasks.py synsets WORDNET_DIR DOCS_JSONL OUT.json
builds the synonym sets (WordNet synsets whose single-word lemmas are common
in the training prose).
"""
import collections
import json
import re
import sys

import numpy as np

NAMES = ("Alice Bob Carol David Emma Frank Grace Henry Irene Jack Karen Louis Maria Nathan "
         "Olivia Peter Quentin Rachel Samuel Tina Victor Wendy Xavier Yvonne Zachary Amelia "
         "Bruno Chloe Dmitri Elena Fiona George Hannah Igor Julia Kevin Laura Martin Nora Oscar "
         "Paula Robert Sofia Thomas Ursula Vera William Agnes Boris Clara Daniel Edith Felix "
         "Greta Hugo Ingrid Jonas Katrin Leon Mona Nils Otto Petra Rosa Simon Theo Uma Walter").split()
SURNAMES = ("Smith Jones Miller Brown Garcia Novak Weber Rossi Dubois Silva Kowalski Larsen "
            "Moreau Fischer Costa Nagy Horvat Jensen Meyer Berg Lindqvist Romano Schmidt Walsh "
            "Murphy Becker Keller Wagner Kaiser Vogel").split()
CITIES = ("Lisbon Oslo Vienna Prague Dublin Madrid Warsaw Athens Helsinki Zurich Munich Lyon "
          "Porto Seville Krakow Bergen Geneva Bruges Tallinn Riga Vilnius Sofia Bucharest Naples "
          "Turin Florence Marseille Hamburg Cologne Rotterdam Antwerp Glasgow Cardiff Belfast "
          "Toronto Denver Boston Chicago Seattle Austin Portland Phoenix Memphis Nashville Quebec "
          "Montreal Calgary Osaka Kyoto Seoul Manila Jakarta Lima Quito Bogota Santiago Havana").split()
COLORS = "red blue green yellow purple orange violet crimson teal brown grey silver golden black white pink".split()
JOBS = ("baker carpenter nurse pilot librarian plumber dentist farmer lawyer teacher chemist "
        "architect journalist surgeon electrician translator gardener firefighter veterinarian "
        "mechanic pharmacist tailor jeweler photographer").split()
ANIMALS = "parrot tortoise rabbit hamster ferret goldfish iguana cat dog pony goat canary lizard snake".split()
INSTRUMENTS = "violin cello trumpet piano flute clarinet harp banjo oboe saxophone accordion drums guitar".split()
FOODS = "peanuts shellfish strawberries wheat milk eggs sesame soy walnuts celery mustard kiwi".split()
SPICES = "cinnamon saffron nutmeg cardamom ginger paprika cumin clove turmeric vanilla fennel rosemary".split()
DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = ("January February March April May June July August September October November "
          "December").split()
# object word -> words a paraphrase may use for it
OBJECTS = {
    "car": ["automobile", "vehicle"], "ring": ["band", "jewel"], "letter": ["note", "message"],
    "box": ["crate", "container"], "book": ["volume", "tome"], "money": ["cash", "funds"],
    "map": ["chart", "plan"], "diary": ["journal", "notebook"], "painting": ["picture", "artwork"],
    "necklace": ["pendant", "chain"], "documents": ["papers", "files"], "gift": ["present", "package"],
    "bicycle": ["bike", "cycle"], "sofa": ["couch", "settee"], "photograph": ["photo", "snapshot"],
    "wallet": ["purse", "billfold"], "hat": ["cap", "bonnet"], "jacket": ["coat", "blazer"],
    "key": ["spare key", "house key"], "watch": ["timepiece", "wristwatch"], "boat": ["vessel", "ship"],
    "house": ["home", "residence"], "shoes": ["boots", "footwear"], "medicine": ["pills", "medication"],
    "treasure": ["riches", "fortune"], "knife": ["blade", "dagger"], "lamp": ["light", "lantern"],
    "phone": ["telephone", "mobile"], "computer": ["laptop", "machine"], "dog": ["puppy", "hound"],
}
PLACES = {
    "attic": ["loft", "top floor"], "garage": ["carport", "shed"], "basement": ["cellar", "vault"],
    "garden": ["yard", "backyard"], "kitchen": ["cookhouse", "galley"], "drawer": ["dresser", "cabinet"],
    "library": ["reading room", "study"], "closet": ["wardrobe", "cupboard"], "barn": ["stable", "shed"],
    "office": ["workplace", "bureau"], "bedroom": ["sleeping room", "chamber"], "forest": ["woods", "woodland"],
    "church": ["chapel", "cathedral"], "station": ["depot", "terminal"], "harbor": ["port", "dock"],
    "school": ["academy", "college"], "hospital": ["clinic", "infirmary"], "market": ["bazaar", "shop"],
}


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def person(rng):
    return _pick(rng, NAMES) + (" " + _pick(rng, SURNAMES) if rng.random() < 0.5 else "")


def _syn(rng, word, table, paraphrase):
    if paraphrase and word in table:
        return _pick(rng, table[word])
    return word


def fact(rng, syn):
    """(statement, literal question, paraphrased question, answer)."""
    p = person(rng)
    k = int(rng.integers(14))
    if k == 0:
        x = _pick(rng, CITIES)
        return ("%s lives in %s." % (p, x), "Where does %s live?" % p,
                _pick(rng, ["Which town is home to %s?", "Where does %s reside?",
                            "In what place does %s dwell?", "Where is the residence of %s?"]) % p, x)
    if k == 1:
        x = _pick(rng, COLORS)
        return ("The favorite color of %s is %s." % (p, x), "What is the favorite color of %s?" % p,
                _pick(rng, ["Which hue does %s like best?", "What shade does %s prefer?",
                            "Which colour is %s fondest of?"]) % p, x)
    if k == 2:
        o, x = _pick(rng, list(OBJECTS)), _pick(rng, list(PLACES))
        o2 = _syn(rng, o, OBJECTS, True)
        return ("%s hid the %s in the %s." % (p, o, x), "Where did %s hide the %s?" % (p, o),
                _pick(rng, ["Where did %s conceal the %s?", "In which spot did %s stash the %s?"]) % (p, o2),
                "in the " + x)
    if k == 3:
        x = _pick(rng, JOBS)
        return ("%s works as a %s." % (p, x), "What does %s work as?" % p,
                _pick(rng, ["What is the occupation of %s?", "What profession does %s have?",
                            "What does %s do for a living?", "What is the trade of %s?"]) % p, x)
    if k == 4:
        o = _pick(rng, list(OBJECTS))
        c = _pick(rng, COLORS)
        return ("%s bought a %s %s." % (p, c, o), "What did %s buy?" % p,
                _pick(rng, ["What did %s purchase?", "Which item did %s acquire?",
                            "What was obtained by %s at the store?"]) % p, "a %s %s" % (c, o))
    if k == 5:
        x = _pick(rng, DAYS)
        return ("The meeting with %s is on %s." % (p, x), "When is the meeting with %s?" % p,
                _pick(rng, ["On which day is the appointment with %s?", "When will %s be met?",
                            "What day was the session with %s scheduled for?"]) % p, x)
    if k == 6:
        x = _pick(rng, CITIES)
        return ("%s was born in %s." % (p, x), "Where was %s born?" % p,
                _pick(rng, ["What is the birthplace of %s?", "In which city did %s come into the world?",
                            "What is the hometown of %s?"]) % p, x)
    if k == 7:
        x = _pick(rng, SPICES)
        return ("The secret ingredient in the soup of %s is %s." % (p, x),
                "What is the secret ingredient in the soup of %s?" % p,
                _pick(rng, ["Which hidden spice flavors the broth of %s?",
                            "What special component does %s add to the stew?"]) % p, x)
    if k == 8:
        x = _pick(rng, FOODS)
        return ("%s is allergic to %s." % (p, x), "What is %s allergic to?" % p,
                _pick(rng, ["Which food gives %s a bad reaction?", "What must %s avoid eating?"]) % p, x)
    if k == 9:
        o = _pick(rng, list(OBJECTS))
        return ("The %s belongs to %s." % (o, p), "Who does the %s belong to?" % o,
                _pick(rng, ["Who owns the %s?", "Whose %s is it?", "Who is the owner of the %s?"])
                % _syn(rng, o, OBJECTS, True), p)
    if k == 10:
        x = _pick(rng, ANIMALS)
        return ("%s keeps a pet %s." % (p, x), "What pet does %s keep?" % p,
                _pick(rng, ["What animal lives with %s?", "Which creature does %s own as a companion?"]) % p, x)
    if k == 11:
        x = _pick(rng, INSTRUMENTS)
        return ("%s plays the %s." % (p, x), "What does %s play?" % p,
                _pick(rng, ["Which instrument does %s perform on?", "What musical instrument can %s play?"]) % p, x)
    if k == 12:
        x = "%s %d" % (_pick(rng, MONTHS), int(rng.integers(1, 29)))
        return ("The birthday of %s is %s." % (p, x), "When is the birthday of %s?" % p,
                _pick(rng, ["On what date was %s born?", "When does %s celebrate another year of age?"]) % p, x)
    # WordNet: an object described by an adjective, kept in a place
    if syn and syn.get("n") and syn.get("a"):
        ns, as_ = _pick(rng, syn["n"]), _pick(rng, syn["a"])
        n1, a1 = _pick(rng, ns), _pick(rng, as_)
        n2 = _pick(rng, [w for w in ns if w != n1] or ns)
        a2 = _pick(rng, [w for w in as_ if w != a1] or as_)
        x = _pick(rng, list(PLACES))
        return ("The %s %s is kept in the %s." % (a1, n1, x), "Where is the %s %s kept?" % (a1, n1),
                _pick(rng, ["Where is the %s %s stored?", "In which place can the %s %s be found?"]) % (a2, n2),
                "in the " + x)
    return ("%s lives in %s." % (p, "Oslo"), "Where does %s live?" % p, "Where does %s reside?" % p, "Oslo")


QFORMATS = [("\n\nQuestion: %s\nAnswer:", " %s."), ("\n%s", " %s."), ("\nQ: %s\nA:", " %s."),
            (" %s", " %s.")]


class Generator:
    """Draws training sequences; bpe: a bpe.BPE; prose: uint16 token array."""

    def __init__(self, bpe, prose, T, seed, syn=None, qmax=48):
        self.b, self.prose, self.T, self.qmax = bpe, prose, T, qmax
        self.rng = np.random.default_rng(seed)
        self.syn = syn
        toks = bpe.tokens
        # tokens after which a sentence may start: ".", "!", "?" or a newline at their end
        self.cut = np.zeros(len(toks), dtype=bool)
        for i, t in enumerate(toks):
            if t.endswith((".", "!", "?", "Ċ")):
                self.cut[i] = True

    def enc(self, s):
        return self.b.encode(s)

    def prose_span(self, n):
        o = int(self.rng.integers(0, len(self.prose) - n - 1))
        return self.prose[o:o + n].astype(np.int64)

    def episode(self, kind):
        """(needle ids, question ids, answer ids)."""
        r = self.rng
        if kind == "kv":
            key = "%s-%d" % (_pick(r, COLORS + ANIMALS + INSTRUMENTS), int(r.integers(10, 10000)))
            val = str(int(r.integers(1000, 10000000)))
            needle = _pick(r, ["The value of key %s is %s.", "Key %s has the value %s.",
                               "Remember: key %s maps to %s."]) % (key, val)
            q = _pick(r, ["What is the value of key %s?", "Which value does key %s have?",
                          "Key %s maps to which value?"]) % key
            return " " + needle, q, val
        if kind == "passkey":
            n = str(int(r.integers(10000, 1000000)))
            return (" The pass key is %s. Remember it. %s is the pass key." % (n, n),
                    _pick(r, ["What is the pass key?", "What is the passkey?", "Which number is the pass key?"]), n)
        if kind == "copy":
            # a sentence of the prose: 12-40 tokens ending at a sentence end
            for _ in range(20):
                span = self.prose_span(400)
                ends = np.nonzero(self.cut[span])[0]
                if len(ends) < 2:
                    continue
                s = ends[:-1][(ends[1:] - ends[:-1] >= 12) & (ends[1:] - ends[:-1] <= 40)]
                if len(s):
                    a = int(_pick(r, s))
                    b = int(ends[np.searchsorted(ends, a + 1)])
                    sent = span[a + 1:b + 1]
                    k = int(r.integers(4, max(5, len(sent) // 2)))
                    head = self.b.decode(sent[:k]).strip()
                    return sent, 'Which sentence began with "%s"? Complete it.' % head, self.b.decode(sent[k:])
            kind = "fact"
        stmt, lit, para, ans = fact(r, self.syn)
        return " " + stmt, (para if r.random() < 0.5 else lit), ans

    def sequence(self):
        """ids [T+1], answer mask over targets [T], question rows [qmax] (position,
        needle start, needle end, valid)."""
        r, T = self.rng, self.T
        n_needle = int(r.integers(1, 5))
        kinds = [_pick(r, ["kv", "passkey", "copy", "fact", "fact", "fact"]) for _ in range(n_needle)]
        if "passkey" in kinds:  # one pass key per sequence
            kinds = [k for k in kinds if k != "passkey"] + ["passkey"]
        n_needle = len(kinds)
        eps = [self.episode(k) for k in kinds]
        needles = [np.asarray(e[0], dtype=np.int64) if not isinstance(e[0], str) else
                   np.asarray(self.enc(e[0]), dtype=np.int64) for e in eps]
        n_q = 1 if n_needle == 1 or r.random() < 0.6 else 2
        asked = r.choice(n_needle, size=n_q, replace=False)
        qf, af = _pick(r, QFORMATS)
        tail, qrows, ans_ranges = [], [], []
        pos = 0
        for j in asked:
            q = self.enc(qf % eps[j][1])
            a = self.enc(af % eps[j][2].strip().rstrip("."))
            qrows.append((pos, pos + len(q), int(j)))
            ans_ranges.append((pos + len(q), pos + len(q) + len(a)))
            tail += q + a
            pos += len(q) + len(a)
        body_len = T + 1 - len(tail)
        fill_len = body_len - sum(len(n) for n in needles)
        filler = self.prose_span(fill_len)
        # needle positions: sentence ends of the filler at random depths, in order
        cuts = np.nonzero(self.cut[filler])[0] + 1
        if len(cuts) < n_needle:
            cuts = np.arange(1, fill_len)
        at = np.sort(r.choice(cuts, size=n_needle, replace=False))
        order = r.permutation(n_needle)  # which needle goes where
        parts, spans, prev, off = [], [None] * n_needle, 0, 0
        for slot, p in enumerate(at):
            parts.append(filler[prev:p])
            off += p - prev
            nd = needles[order[slot]]
            spans[order[slot]] = (off, off + len(nd))
            parts.append(nd)
            off += len(nd)
            prev = p
        parts.append(filler[prev:])
        body = np.concatenate(parts)
        ids = np.concatenate([body, np.asarray(tail, dtype=np.int64)])
        assert len(ids) == T + 1
        ans = np.zeros(T, dtype=bool)
        for a0, a1 in ans_ranges:
            ans[body_len + a0 - 1: body_len + a1 - 1] = True  # target index = token index - 1
        q = np.zeros((self.qmax, 4), dtype=np.int64)
        n = 0
        for q0, q1, j in qrows:
            for i in range(q0, q1):
                if n < self.qmax:
                    q[n] = (body_len + i, spans[j][0], spans[j][1], 1)
                    n += 1
        return ids, ans, q

    def prose_sequence(self):
        return self.prose_span(self.T + 1), np.zeros(self.T, dtype=bool), np.zeros((self.qmax, 4), dtype=np.int64)


def build_synsets(wordnet_dir, docs_jsonl, out):
    counts = collections.Counter()
    with open(docs_jsonl) as f:
        for line in f:
            counts.update(re.findall(r"[a-z]+", json.loads(line)["text"].lower()))
    res = {}
    for pos, fn in (("n", "data.noun"), ("a", "data.adj")):
        sets = []
        with open("%s/%s" % (wordnet_dir, fn), encoding="latin-1") as f:
            for line in f:
                if line.startswith(" "):
                    continue
                fields = line.split()
                n = int(fields[3], 16)
                words = [re.sub(r"\(.*\)$", "", w) for w in fields[4:4 + 2 * n:2]]
                words = sorted({w for w in words if w.isalpha() and w.islower() and counts[w] >= 30})
                if len(words) >= 2:
                    sets.append(words)
        res[pos] = sets
    with open(out, "w") as f:
        json.dump(res, f)
    print("synsets:", {k: len(v) for k, v in res.items()})


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "synsets":
        build_synsets(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
