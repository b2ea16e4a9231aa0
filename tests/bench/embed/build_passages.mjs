// build_passages.mjs - the labelled corpus of the embedder evaluation: every
// Brown Corpus sample cut into passages of about 100-150 words at sentence
// boundaries. usage: node build_passages.mjs [MIN_WORDS [OUT]] (default 100,
// passages.tsv); OUT holds one passage a line, "sample<TAB>genre<TAB>text".
//
// A passage takes whole sentences (a paragraph break is a sentence break)
// until it holds at least MIN words (100; a word is a space-separated
// token); a last piece shorter than MIN/2 words joins the passage before it.
// With MIN = 100 the passages hold 100-130 words (median 109); MIN = 380
// gives passages near the daemon's default chunk (512 estimated tokens).
import { writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { brownSamples } from '../chunk/brown.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const MIN = Number(process.argv[2] || 100);
const OUT = process.argv[3] || 'passages.tsv';
const words = (s) => s.split(/\s+/).filter(Boolean).length;

const rows = [];
const sizes = [];
for (const s of brownSamples()) {
  const passages = [];
  let cur = [], n = 0;
  for (const sent of s.paragraphs.flat()) {
    const w = words(sent);
    if (w === 0) continue;
    if (n >= MIN) {
      passages.push({ text: cur.join(' '), n });
      cur = [];
      n = 0;
    }
    cur.push(sent);
    n += w;
  }
  if (n > 0) {
    if (n < MIN / 2 && passages.length) {
      const last = passages[passages.length - 1];
      last.text += ' ' + cur.join(' ');
      last.n += n;
    } else {
      passages.push({ text: cur.join(' '), n });
    }
  }
  for (const p of passages) {
    rows.push(`${s.id}\t${s.genre}\t${p.text.replace(/\s+/g, ' ')}`);
    sizes.push(p.n);
  }
}
writeFileSync(join(here, OUT), rows.join('\n') + '\n');
sizes.sort((a, b) => a - b);
const q = (f) => sizes[Math.floor(f * (sizes.length - 1))];
console.error(`${OUT}: ${rows.length} passages from 500 samples; words per passage ` +
  `min ${sizes[0]}, median ${q(0.5)}, p90 ${q(0.9)}, max ${sizes[sizes.length - 1]}`);
