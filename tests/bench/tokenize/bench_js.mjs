// bench_js.mjs - js-tiktoken's `gpt2` encoding on the benchmark prose: the
// baseline for ctxd's GPT-2 GGUF tokenizer (bench_tokenize.c). Prints one
// row: tokenizer, tokens/s and MB/s (best of RUNS, one thread), tokens.
// The input is cut into pieces of PIECE bytes at newlines (as the C side
// does), so both encode the same strings.
import { readFileSync } from 'node:fs';
import { getEncoding } from 'js-tiktoken';

const [, , corpusPath] = process.argv;
const RUNS = Number(process.env.RUNS || 5);
const PIECE = Number(process.env.PIECE || 65536);
const buf = readFileSync(corpusPath);
const pieces = [];
for (let at = 0; at < buf.length;) {
  let end = Math.min(at + PIECE, buf.length);
  if (end < buf.length) {
    const nl = buf.lastIndexOf(0x0a, end - 1);
    if (nl > at) end = nl + 1;
  }
  pieces.push(buf.subarray(at, end).toString('utf8'));
  at = end;
}
const enc = getEncoding('gpt2');
let best = Infinity, tokens = 0;
for (let r = 0; r < RUNS; r++) {
  const t0 = process.cpuUsage();
  let n = 0;
  for (const p of pieces) n += enc.encode(p).length;
  const d = process.cpuUsage(t0);
  const s = (d.user + d.system) / 1e6;
  tokens = n;
  if (s < best) best = s;
}
console.log(`js-tiktoken 1.0.21 gpt2 (node ${process.version})\t${Math.round(tokens / best)}\t${(buf.length / best / 1e6).toFixed(2)}\t${tokens}`);
