'use strict';
// test_grpc_js.js - ctxd against the stock Node gRPC client (@grpc/grpc-js),
// with the protos loaded at run time by @grpc/proto-loader.
//
// ctest runs:  node tests/integration/node/test_grpc_js.js
// with CTXD_BIN (the ctxd executable) and CTXD_PROTO_DIR (the proto/ folder).
// Needs `npm ci` (or `npm install`) in this folder first; without
// node_modules the test fails with a hint rather than being skipped.
//
// It starts a real daemon on 127.0.0.1:0 with a temporary data directory,
// runs unary, client/bidi-streaming and server-streaming calls plus the error
// paths (UNIMPLEMENTED, DEADLINE_EXCEEDED, INVALID_ARGUMENT, NOT_FOUND), then
// stops the daemon with SIGTERM and expects exit code 0. One deadline check
// uses Node's built-in http2 client to send `grpc-timeout` by hand, so that it
// is the server (not the client library's own timer) that ends the call.
// Prints "node_grpc_js: N passed, N failed"; exits non-zero on any failure.

const fs = require('fs');
const os = require('os');
const path = require('path');
const http2 = require('http2');
const { spawn } = require('child_process');

let grpc, protoLoader;
try {
  grpc = require('@grpc/grpc-js');
  protoLoader = require('@grpc/proto-loader');
} catch (e) {
  console.error('node_grpc_js: cannot load @grpc/grpc-js / @grpc/proto-loader (' +
                e.message.split('\n')[0] + '); run `npm ci` in ' + __dirname);
  console.log('node_grpc_js: 0 passed, 1 failed');
  process.exit(1);
}

const CTXD_BIN = process.env.CTXD_BIN;
const PROTO_DIR = process.env.CTXD_PROTO_DIR ||
  path.join(__dirname, '..', '..', '..', 'proto');
const { status: Status } = grpc;

let passed = 0;
let failed = 0;

function ok(name) {
  passed++;
  console.log('ok - ' + name);
}

function fail(name, why) {
  failed++;
  console.log('FAIL - ' + name + ': ' + why);
}

async function check(name, fn) {
  try {
    await fn();
    ok(name);
  } catch (e) {
    fail(name, e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : String(e));
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

// JSON with object keys sorted: protobuf maps have no order.
function canon(v) {
  return JSON.stringify(v, (k, x) => (x && typeof x === 'object' && !Array.isArray(x) &&
    !Buffer.isBuffer(x)
    ? Object.keys(x).sort().reduce((o, key) => { o[key] = x[key]; return o; }, {})
    : x));
}

function eq(a, b, what) {
  const ja = canon(a);
  const jb = canon(b);
  if (ja !== jb) throw new Error(what + ': got ' + ja + ', want ' + jb);
}

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([
    p,
    new Promise((_, rej) => {
      t = setTimeout(() => rej(new Error(what + ': no answer in ' + ms + ' ms')), ms);
    }),
  ]).finally(() => clearTimeout(t));
}

// ------------------------------------------------------------------ daemon

function startDaemon() {
  return new Promise((resolve, reject) => {
    const data = fs.mkdtempSync(path.join(os.tmpdir(), 'ctxd-node-'));
    const child = spawn(CTXD_BIN, ['--listen', '127.0.0.1:0', '--data', data],
                        { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    let done = false;
    const timer = setTimeout(() => {
      if (!done) {
        done = true;
        child.kill('SIGKILL');
        reject(new Error('daemon did not log its address in 30 s; log:\n' + log));
      }
    }, 30000);
    child.stderr.on('data', (b) => {
      log += b.toString();
      if (log.length > 1 << 20) log = log.slice(-(1 << 19));
      const m = /listening addr=(\S+)/.exec(log);
      if (m && !done) {
        done = true;
        clearTimeout(timer);
        resolve({ child, addr: m[1], data, log: () => log });
      }
    });
    child.on('error', (e) => {
      if (!done) {
        done = true;
        clearTimeout(timer);
        reject(e);
      }
    });
    child.on('exit', (code, sig) => {
      if (!done) {
        done = true;
        clearTimeout(timer);
        reject(new Error('daemon exited early code=' + code + ' signal=' + sig + '; log:\n' + log));
      }
    });
  });
}

function stopDaemon(d, ms) {
  return new Promise((resolve) => {
    if (d.child.exitCode !== null || d.child.signalCode !== null) {
      resolve({ code: d.child.exitCode, signal: d.child.signalCode });
      return;
    }
    const t = setTimeout(() => d.child.kill('SIGKILL'), ms);
    d.child.once('exit', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal });
    });
    d.child.kill('SIGTERM');
  });
}

// ------------------------------------------------------------------ calls

function unary(client, method, req, opts) {
  return new Promise((resolve, reject) => {
    client[method](req, new grpc.Metadata(), opts || {}, (err, resp) => {
      if (err) reject(err);
      else resolve(resp);
    });
  });
}

async function expectCode(p, code, what) {
  try {
    const r = await p;
    throw new Error(what + ': succeeded (' + JSON.stringify(r) + '), want code ' + code);
  } catch (e) {
    if (e.code === undefined) throw e;
    if (e.code !== code) {
      throw new Error(what + ': code ' + e.code + ' (' + e.details + '), want ' + code);
    }
    return e;
  }
}

function deadline(ms) {
  return new Date(Date.now() + ms);
}

// Raw HTTP/2 request with hand-written gRPC headers (no client-side timer):
// returns {headers, trailers, data} once the server ends the stream.
function rawGrpc(addr, pathName, extraHeaders, body, endStream, ms) {
  let session = null;
  return withTimeout(new Promise((resolve, reject) => {
    session = http2.connect('http://' + addr);
    session.on('error', reject);
    const req = session.request(Object.assign({
      ':method': 'POST',
      ':path': pathName,
      'content-type': 'application/grpc',
      te: 'trailers',
    }, extraHeaders), { endStream: false });
    let headers = null;
    let trailers = null;
    const chunks = [];
    req.on('response', (h) => { headers = h; });
    req.on('trailers', (t) => { trailers = t; });
    req.on('data', (c) => chunks.push(c));
    req.on('error', (e) => { session.close(); reject(e); });
    req.on('close', () => {
      session.close();
      resolve({ headers, trailers, data: Buffer.concat(chunks), rstCode: req.rstCode });
    });
    if (body) req.write(body);
    if (endStream) req.end();
  }), ms, 'raw ' + pathName).finally(() => {
    if (session && !session.destroyed) session.destroy();
  });
}

function frame(buf) {
  const out = Buffer.alloc(5 + buf.length);
  out.writeUInt8(0, 0);
  out.writeUInt32BE(buf.length, 1);
  buf.copy(out, 5);
  return out;
}

// grpc-status from a Trailers-Only response (in the HEADERS) or trailers.
function grpcStatusOf(r) {
  const t = (r.trailers && r.trailers['grpc-status']) ||
            (r.headers && r.headers['grpc-status']);
  return t === undefined ? undefined : Number(t);
}

// ------------------------------------------------------------------ tests

function proseDoc(i) {
  const words = ['retrieval', 'context', 'segment', 'window', 'budget', 'corpus',
                 'ordering', 'document', 'chunk', 'token', 'the', 'of', 'and'];
  const parts = [];
  let x = (i * 2654435761) >>> 0;
  for (let k = 0; k < 60 + (i % 40); k++) {
    x = (x * 1103515245 + 12345) >>> 0;
    parts.push(words[x % words.length]);
  }
  return 'Document ' + i + ': ' + parts.join(' ') + '.';
}

async function main() {
  if (!CTXD_BIN) {
    fail('setup', 'CTXD_BIN is not set');
    return;
  }
  const pkgDef = protoLoader.loadSync(
    ['ctxd/v1/documents.proto', 'grpc/health/v1/health.proto'],
    { includeDirs: [PROTO_DIR], keepCase: true, longs: String, enums: String,
      defaults: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(pkgDef);

  const d = await startDaemon();
  const creds = grpc.credentials.createInsecure();
  const health = new pkg.grpc.health.v1.Health(d.addr, creds);
  const docs = new pkg.ctxd.v1.Documents(d.addr, creds);
  const generic = new grpc.Client(d.addr, creds);
  const T = 10000;  // per-call deadline for calls that should succeed

  try {
    await check('Health.Check SERVING', async () => {
      const r = await unary(health, 'Check', { service: '' }, { deadline: deadline(T) });
      eq(r.status, 'SERVING', 'status');
    });

    await check('Health.Check unknown service -> NOT_FOUND', async () => {
      await expectCode(unary(health, 'Check', { service: 'no.such.Service' }, { deadline: deadline(T) }),
                       Status.NOT_FOUND, 'Check');
    });

    await check('Health.Watch unknown service -> SERVICE_UNKNOWN', async () => {
      const call = health.Watch({ service: 'no.such.Service' }, new grpc.Metadata(),
                                { deadline: deadline(T) });
      call.on('error', () => {});
      const first = await withTimeout(new Promise((resolve, reject) => {
        call.once('data', resolve);
        call.once('error', reject);
      }), T, 'Watch');
      call.cancel();
      eq(first.status, 'SERVICE_UNKNOWN', 'first status');
    });

    const text = 'ctxd stores long documents.\n\nThis one was written by the ' +
      'Node interop test. Ünïcödé survives the round trip: 長い文書.';
    await check('Documents.Put', async () => {
      const r = await unary(docs, 'Put', {
        document: { id: 'node-doc-1', text, metadata: { source: 'node', lang: 'en' } },
      }, { deadline: deadline(T) });
      eq(r.id, 'node-doc-1', 'id');
      assert(r.chunks >= 1, 'chunks ' + r.chunks + ' < 1');
      eq(r.replaced, false, 'replaced');
    });

    await check('Documents.Put replaces', async () => {
      const r = await unary(docs, 'Put', {
        document: { id: 'node-doc-1', text, metadata: { source: 'node', lang: 'en' } },
      }, { deadline: deadline(T) });
      eq(r.replaced, true, 'replaced');
    });

    await check('Documents.Put generates an id', async () => {
      const r = await unary(docs, 'Put', { document: { text: 'no id given' } },
                            { deadline: deadline(T) });
      assert(r.id.length > 0, 'empty generated id');
      const g = await unary(docs, 'Get', { id: r.id, with_text: true }, { deadline: deadline(T) });
      eq(g.document.text, 'no id given', 'text');
      await unary(docs, 'Delete', { id: r.id }, { deadline: deadline(T) });
    });

    await check('Documents.Get', async () => {
      const r = await unary(docs, 'Get', { id: 'node-doc-1', with_text: true, with_chunks: true },
                            { deadline: deadline(T) });
      eq(r.document.id, 'node-doc-1', 'id');
      eq(r.document.text, text, 'text');
      eq(r.document.metadata, { source: 'node', lang: 'en' }, 'metadata');
      eq(Number(r.bytes), Buffer.byteLength(text), 'bytes');
      assert(r.chunks.length >= 1, 'no chunks');
      const last = r.chunks[r.chunks.length - 1];
      eq(Number(last.byte_end), Buffer.byteLength(text), 'last chunk byte_end');
    });

    await check('Documents.Get unknown id -> NOT_FOUND', async () => {
      await expectCode(unary(docs, 'Get', { id: 'no-such-doc' }, { deadline: deadline(T) }),
                       Status.NOT_FOUND, 'Get');
    });

    await check('Documents.List', async () => {
      const r = await unary(docs, 'List', { page_size: 10 }, { deadline: deadline(T) });
      const ids = r.documents.map((x) => x.id);
      assert(ids.includes('node-doc-1'), 'node-doc-1 not listed: ' + JSON.stringify(ids));
      eq(r.next_page_token, '', 'next_page_token');
    });

    await check('Documents.Delete', async () => {
      const r = await unary(docs, 'Delete', { id: 'node-doc-1' }, { deadline: deadline(T) });
      eq(r.deleted, true, 'deleted');
      const r2 = await unary(docs, 'Delete', { id: 'node-doc-1' }, { deadline: deadline(T) });
      eq(r2.deleted, false, 'second delete');
      await expectCode(unary(docs, 'Get', { id: 'node-doc-1' }, { deadline: deadline(T) }),
                       Status.NOT_FOUND, 'Get after Delete');
    });

    const N = 500;
    await check('Documents.PutStream of ' + N + ' docs with acks', async () => {
      const acked = new Set();
      const errors = [];
      let acks = 0;
      const call = docs.PutStream(new grpc.Metadata(), { deadline: deadline(60000) });
      const done = new Promise((resolve, reject) => {
        call.on('data', (ack) => {
          acks++;
          for (const id of ack.ids) acked.add(id);
          for (const e of ack.errors) errors.push(e);
        });
        call.on('error', reject);
        call.on('status', (s) => {
          if (s.code === Status.OK) resolve();
          else reject(new Error('status ' + s.code + ' ' + s.details));
        });
      });
      for (let i = 0; i < N; i++) {
        const more = call.write({ document: { id: 'stream-' + i, text: proseDoc(i),
                                              metadata: { n: String(i) } } });
        if (!more) await new Promise((r) => call.once('drain', r));
      }
      call.end();
      await withTimeout(done, 60000, 'PutStream');
      eq(errors, [], 'ack errors');
      assert(acks >= 1, 'no PutAck received');
      eq(acked.size, N, 'distinct acked ids');
      for (let i = 0; i < N; i += 97) assert(acked.has('stream-' + i), 'stream-' + i + ' not acked');
    });

    await check('Documents.List pages through the streamed docs', async () => {
      const seen = new Set();
      let token = '';
      let pages = 0;
      do {
        const r = await unary(docs, 'List', { page_size: 128, page_token: token },
                              { deadline: deadline(T) });
        for (const x of r.documents) {
          assert(!seen.has(x.id), 'id listed twice: ' + x.id);
          seen.add(x.id);
        }
        token = r.next_page_token;
        pages++;
        assert(pages < 100, 'too many pages');
      } while (token);
      eq(seen.size, N, 'listed documents');
      const g = await unary(docs, 'Get', { id: 'stream-123', with_text: true },
                            { deadline: deadline(T) });
      eq(g.document.text, proseDoc(123), 'stream-123 text');
      eq(g.document.metadata, { n: '123' }, 'stream-123 metadata');
    });

    await check('Health.Watch first message then cancel', async () => {
      const call = health.Watch({ service: '' }, new grpc.Metadata(), { deadline: deadline(T) });
      const first = await withTimeout(new Promise((resolve, reject) => {
        call.once('data', resolve);
        call.once('error', reject);
      }), T, 'Watch');
      eq(first.status, 'SERVING', 'first status');
      const end = new Promise((resolve) => {
        call.on('error', (e) => resolve(e.code));
        call.on('status', (s) => resolve(s.code));
      });
      call.cancel();
      eq(await withTimeout(end, T, 'Watch cancel'), Status.CANCELLED, 'code after cancel');
      // The server must still serve after the cancelled stream.
      const r = await unary(health, 'Check', { service: '' }, { deadline: deadline(T) });
      eq(r.status, 'SERVING', 'status after cancel');
    });

    await check('unknown method -> UNIMPLEMENTED', async () => {
      const id = (b) => b;
      for (const p of ['/ctxd.v1.Documents/NoSuchMethod', '/no.such.Service/Call']) {
        await expectCode(new Promise((resolve, reject) => {
          generic.makeUnaryRequest(p, id, id, Buffer.alloc(0), new grpc.Metadata(),
                                   { deadline: deadline(T) },
                                   (err, r) => (err ? reject(err) : resolve(r)));
        }), Status.UNIMPLEMENTED, p);
      }
    });

    await check('expired deadline -> DEADLINE_EXCEEDED', async () => {
      await expectCode(unary(docs, 'Get', { id: 'stream-1' }, { deadline: new Date(Date.now() - 1) }),
                       Status.DEADLINE_EXCEEDED, 'Get with past deadline');
      // A stream the client never half-closes, with a short deadline.
      const call = docs.PutStream(new grpc.Metadata(), { deadline: deadline(300) });
      const code = await withTimeout(new Promise((resolve) => {
        call.on('data', () => {});
        call.on('error', (e) => resolve(e.code));
        call.on('status', (s) => resolve(s.code));
      }), T, 'PutStream deadline');
      eq(code, Status.DEADLINE_EXCEEDED, 'PutStream code');
    });

    await check('server enforces grpc-timeout (raw http2)', async () => {
      const t0 = Date.now();
      const r = await rawGrpc(d.addr, '/ctxd.v1.Documents/PutStream', { 'grpc-timeout': '200m' },
                              null, false, T);
      const ms = Date.now() - t0;
      eq(grpcStatusOf(r), Status.DEADLINE_EXCEEDED, 'grpc-status');
      assert(ms >= 150, 'ended after only ' + ms + ' ms');
    });

    await check('raw http2 Health.Check has grpc-status 0 in trailers', async () => {
      const r = await rawGrpc(d.addr, '/grpc.health.v1.Health/Check', {}, frame(Buffer.alloc(0)),
                              true, T);
      eq(r.headers[':status'], 200, ':status');
      eq(r.trailers && r.trailers['grpc-status'], '0', 'trailer grpc-status');
      // HealthCheckResponse{status: SERVING} = 08 01
      eq(r.data.toString('hex'), '000000000208' + '01', 'response bytes');
    });

    await check('Put with missing document -> INVALID_ARGUMENT', async () => {
      const e = await expectCode(unary(docs, 'Put', {}, { deadline: deadline(T) }),
                                 Status.INVALID_ARGUMENT, 'Put {}');
      assert(e.details && e.details.length > 0, 'no grpc-message');
    });

    await check('undecodable request -> INVALID_ARGUMENT', async () => {
      const id = (b) => b;
      await expectCode(new Promise((resolve, reject) => {
        generic.makeUnaryRequest('/ctxd.v1.Documents/Get', id, id,
                                 Buffer.from([0x0a, 0x7f, 0x41]), new grpc.Metadata(),
                                 { deadline: deadline(T) },
                                 (err, r) => (err ? reject(err) : resolve(r)));
      }), Status.INVALID_ARGUMENT, 'truncated GetRequest');
    });

    await check('Health.Check after error paths', async () => {
      const r = await unary(health, 'Check', { service: '' }, { deadline: deadline(T) });
      eq(r.status, 'SERVING', 'status');
    });
  } finally {
    health.close();
    docs.close();
    generic.close();
    const { code, signal } = await stopDaemon(d, 20000);
    if (code === 0) ok('daemon exits 0 on SIGTERM');
    else fail('daemon exits 0 on SIGTERM', 'code=' + code + ' signal=' + signal +
              '; log tail:\n' + d.log().slice(-2000));
    fs.rmSync(d.data, { recursive: true, force: true });
  }
}

const hardStop = setTimeout(() => {
  fail('overall', 'test did not finish in 240 s');
  console.log('node_grpc_js: ' + passed + ' passed, ' + failed + ' failed');
  process.exit(1);
}, 240000);

main().catch((e) => fail('main', e && e.stack ? e.stack : String(e))).finally(() => {
  clearTimeout(hardStop);
  console.log('node_grpc_js: ' + passed + ' passed, ' + failed + ' failed');
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
});
