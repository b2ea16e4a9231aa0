// bench_js.mjs - the JavaScript chunkers people use, on the same text as
// bench_chunk.c: @chonkiejs/core FastChunker and RecursiveChunker, and
// @langchain/textsplitters RecursiveCharacterTextSplitter, at 2048
// characters/bytes per chunk (about 512 tokens of English). Prints rows of
// chunker, MB/s (best of RUNS, one thread), chunks, utf8-boundaries-ok.
//
// UTF-8 check: JS chunkers cut UTF-16 strings (or, for FastChunker, UTF-8
// bytes decoded back to strings). A chunk is sound when its text is well
// formed (no lone surrogate, no U+FFFD that the source lacks there) and it
// is found verbatim in the source at or after the previous chunk's start,
// so that its start and end map to character boundaries of the UTF-8 text.
// It runs on the English corpus and on corpus-mixed.txt (long CJK and
// emoji runs), where a cut inside a character can actually happen.
import { readFileSync } from 'node:fs';
import { FastChunker, RecursiveChunker } from '@chonkiejs/core';
import { RecursiveCharacterTextSplitter } from '@langchain/textsplitters';

const [, , corpusPath, mixedPath] = process.argv;
const RUNS = Number(process.env.RUNS || 3);
const text = readFileSync(corpusPath, 'utf8');
const mixed = readFileSync(mixedPath, 'utf8');
const bytes = Buffer.byteLength(text);

function soundChunks(src, chunks) {
  let from = 0;
  for (const c of chunks) {
    if (!c.isWellFormed()) return false;
    const at = src.indexOf(c, from);
    if (at < 0) return false;
    const end = at + c.length;
    const broken = (k) => k > 0 && k < src.length &&
      src.charCodeAt(k - 1) >= 0xd800 && src.charCodeAt(k - 1) <= 0xdbff;
    if (broken(at) || broken(end)) return false;
    from = at + 1;
  }
  return true;
}

const chunkers = [
  ['@chonkiejs/core FastChunker (2048 bytes)', async () => {
    const ch = await FastChunker.create({ chunkSize: 2048 });
    return async (s) => ch.chunk(s).map((c) => c.text);
  }],
  ['@chonkiejs/core RecursiveChunker (2048 chars)', async () => {
    const ch = await RecursiveChunker.create({ chunkSize: 2048 });
    return async (s) => (await ch.chunk(s)).map((c) => c.text);
  }],
  ['@langchain/textsplitters RecursiveCharacterTextSplitter (2048 chars)', async () => {
    const sp = new RecursiveCharacterTextSplitter({ chunkSize: 2048, chunkOverlap: 0 });
    return (s) => sp.splitText(s);
  }],
];

for (const [name, make] of chunkers) {
  try {
    const run = await make();
    let best = Infinity;
    let out = [];
    for (let r = 0; r < RUNS; r++) {
      const t0 = process.hrtime.bigint();
      out = await run(text);
      const dt = Number(process.hrtime.bigint() - t0) / 1e9;
      if (dt < best) best = dt;
    }
    const okEn = soundChunks(text, out), okMixed = soundChunks(mixed, await run(mixed));
    const ok = okEn && okMixed;
    if (process.env.VERBOSE) console.error(name, 'english', okEn, 'mixed', okMixed);
    console.log(`${name}\t${(bytes / best / 1e6).toFixed(1)}\t${out.length}\t${ok ? 'yes' : 'NO'}`);
  } catch (e) {
    console.log(`${name}\tfailed: ${e.message}\t-\t-`);
  }
}
