#!/usr/bin/env node
// Load test for `stem serve`: C concurrent clients share R streaming
// completions, read with raw fetch and a small SSE parser (no client library
// between the socket and the clock).
//
//   node load_test.mjs --url http://127.0.0.1:PORT --model ID --clients C --requests R --max-tokens M
//                      [--prompt TEXT] [--timeout-s S] [--api-key KEY] [--json]
//
// Per request: time to first token (first chunk with text), the gaps between
// successive chunks with text, completion tokens (from the usage of the last
// chunk) and failures (a status other than 200, an error event, a stream
// without usage or without `data: [DONE]`, an exception). The run stops by
// itself after --timeout-s (default 300). Then GET /metrics: stem_slots_busy
// must come back to 0 (no slot leaked); stem_queue_depth is reported.
//
// Prints a summary (or one JSON object with --json). Exit status 1 when any
// request failed, the run timed out, or a slot is still busy; 2 on bad usage.

import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';

const USAGE =
  'usage: node load_test.mjs --url URL --model ID --clients C --requests R --max-tokens M ' +
  '[--prompt TEXT] [--timeout-s S] [--api-key KEY] [--json]';

const PROMPTS = [
  'The capital of',
  'Once upon a time',
  'In the morning, the',
  'The people of',
  'My favourite book is',
  'The history of the',
  'Yesterday I went to',
  'The best way to',
];

function die(msg) {
  console.error(`${msg}\n${USAGE}`);
  process.exit(2);
}

let opts;
try {
  opts = parseArgs({
    options: {
      url: { type: 'string' },
      model: { type: 'string' },
      clients: { type: 'string', default: '4' },
      requests: { type: 'string', default: '32' },
      'max-tokens': { type: 'string', default: '32' },
      prompt: { type: 'string' },
      'timeout-s': { type: 'string', default: '300' },
      'api-key': { type: 'string' },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h' },
    },
  }).values;
} catch (e) {
  die(e.message);
}
if (opts.help) {
  console.log(USAGE);
  process.exit(0);
}
if (!opts.url || !opts.model) die('--url and --model are required');
const intArg = (name, min) => {
  const v = Number(opts[name]);
  if (!Number.isInteger(v) || v < min) die(`--${name} must be an integer >= ${min}`);
  return v;
};
const URL_BASE = opts.url.replace(/\/+$/, '');
const CLIENTS = intArg('clients', 1);
const REQUESTS = intArg('requests', 1);
const MAX_TOKENS = intArg('max-tokens', 1);
const TIMEOUT_S = Number(opts['timeout-s']);
if (!(TIMEOUT_S > 0)) die('--timeout-s must be > 0');
const API_KEY = opts['api-key'];

const authHeaders = API_KEY ? { authorization: `Bearer ${API_KEY}` } : {};

// ---- one streaming request ---------------------------------------------------

async function oneRequest(i, signal) {
  const prompt = opts.prompt ?? PROMPTS[i % PROMPTS.length];
  const rec = { ok: false, ttft: null, itl: [], tokens: 0, error: null };
  const t0 = performance.now();
  try {
    const res = await fetch(`${URL_BASE}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...authHeaders },
      body: JSON.stringify({
        model: opts.model,
        prompt,
        max_tokens: MAX_TOKENS,
        temperature: 0.8,
        stream: true,
        stream_options: { include_usage: true },
      }),
      signal,
    });
    if (res.status !== 200) {
      const text = await res.text().catch(() => '');
      let msg = text.slice(0, 200);
      try {
        msg = JSON.parse(text).error.message;
      } catch {}
      rec.error = `HTTP ${res.status}: ${msg}`;
      return rec;
    }
    const decoder = new TextDecoder();
    let buf = '';
    let done = false;
    let usage = null;
    let last = null;
    const onEvent = (data) => {
      if (data === '[DONE]') {
        done = true;
        return;
      }
      if (done) throw new Error('data after [DONE]');
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(`error event: ${chunk.error.message ?? JSON.stringify(chunk.error)}`);
      const text = chunk.choices?.[0]?.text;
      if (text) {
        const now = performance.now();
        if (last === null) rec.ttft = now - t0;
        else rec.itl.push(now - last);
        last = now;
      }
      if (chunk.usage) usage = chunk.usage;
    };
    for await (const piece of res.body) {
      buf += decoder.decode(piece, { stream: true });
      let m;
      while ((m = /\r?\n\r?\n/.exec(buf))) {
        const event = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        const data = event
          .split(/\r?\n/)
          .filter((l) => l.startsWith('data:'))
          .map((l) => l.slice(5).replace(/^ /, ''))
          .join('\n');
        if (data) onEvent(data);
      }
    }
    buf += decoder.decode();
    if (buf.trim()) throw new Error(`stream ends inside an event: ${JSON.stringify(buf.slice(0, 80))}`);
    if (!done) throw new Error('stream without data: [DONE]');
    if (!usage || !Number.isInteger(usage.completion_tokens)) throw new Error('stream without usage');
    rec.tokens = usage.completion_tokens;
    rec.ok = true;
  } catch (e) {
    rec.error = signal.aborted ? 'aborted at --timeout-s' : `${e.name}: ${e.message}${e.cause ? ` (${e.cause.code ?? e.cause.message})` : ''}`;
  }
  return rec;
}

// ---- the run -----------------------------------------------------------------

const controller = new AbortController();
const timer = setTimeout(() => controller.abort(), TIMEOUT_S * 1000);
let next = 0;
const records = [];
const start = performance.now();
await Promise.all(
  Array.from({ length: CLIENTS }, async () => {
    while (!controller.signal.aborted && next < REQUESTS) {
      const i = next++;
      records.push(await oneRequest(i, controller.signal));
    }
  }),
);
const wall = (performance.now() - start) / 1000;
const timedOut = controller.signal.aborted;
clearTimeout(timer);

// ---- leaks: stem_slots_busy must come back to 0 ------------------------------

function metricValue(text, name) {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+(\\S+)`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

// A slot is freed just after its last event: allow a short grace before
// calling it leaked.
let slotsBusy;
let queueDepth;
let metricsError = null;
const graceUntil = performance.now() + 5000;
for (;;) {
  try {
    const res = await fetch(`${URL_BASE}/metrics`, { headers: authHeaders, signal: AbortSignal.timeout(5000) });
    const text = await res.text();
    if (res.status !== 200) throw new Error(`GET /metrics: HTTP ${res.status}`);
    slotsBusy = metricValue(text, 'stem_slots_busy');
    queueDepth = metricValue(text, 'stem_queue_depth');
    if (slotsBusy === undefined) throw new Error('GET /metrics: no stem_slots_busy');
    metricsError = null;
  } catch (e) {
    metricsError = e.message;
  }
  if ((slotsBusy === 0 && !metricsError) || performance.now() > graceUntil) break;
  await new Promise((r) => setTimeout(r, 100));
}

// ---- summary -----------------------------------------------------------------

function percentile(xs, p) {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}
const round = (x, d = 2) => (x === null || x === undefined || Number.isNaN(x) ? x : Number(x.toFixed(d)));

const ok = records.filter((r) => r.ok);
const failed = records.filter((r) => !r.ok);
const tokens = records.reduce((s, r) => s + r.tokens, 0);
const ttfts = ok.map((r) => r.ttft).filter((x) => x !== null);
const itls = ok.flatMap((r) => r.itl);
const failures = {};
for (const r of failed) failures[r.error] = (failures[r.error] ?? 0) + 1;

const summary = {
  url: URL_BASE,
  model: opts.model,
  clients: CLIENTS,
  requests: REQUESTS,
  max_tokens: MAX_TOKENS,
  ok: ok.length,
  failed: failed.length,
  not_run: REQUESTS - records.length,
  timed_out: timedOut,
  wall_s: round(wall, 3),
  completion_tokens: tokens,
  tokens_per_s: round(tokens / wall, 1),
  ttft_ms: { p50: round(percentile(ttfts, 50)), p99: round(percentile(ttfts, 99)) },
  inter_token_ms: { p50: round(percentile(itls, 50), 3), p99: round(percentile(itls, 99), 3) },
  stem_slots_busy: slotsBusy ?? null,
  stem_queue_depth: queueDepth ?? null,
  metrics_error: metricsError,
  failures,
};

const pass = failed.length === 0 && !timedOut && summary.not_run === 0 && !metricsError && slotsBusy === 0;

if (opts.json) {
  console.log(JSON.stringify({ ...summary, pass }));
} else {
  const ms = (x) => (x === null ? '-' : `${x} ms`);
  console.log(`stem serve load test: ${URL_BASE}, model ${opts.model}`);
  console.log(`  clients ${CLIENTS}, requests ${REQUESTS}, max_tokens ${MAX_TOKENS}`);
  console.log(`  requests ok ${ok.length}, failed ${failed.length}, not run ${summary.not_run}${timedOut ? ` (stopped at --timeout-s ${TIMEOUT_S})` : ''}`);
  console.log(`  wall ${summary.wall_s} s, ${tokens} completion tokens, ${summary.tokens_per_s} tokens/s`);
  console.log(`  TTFT p50 ${ms(summary.ttft_ms.p50)}, p99 ${ms(summary.ttft_ms.p99)}`);
  console.log(`  inter-token p50 ${ms(summary.inter_token_ms.p50)}, p99 ${ms(summary.inter_token_ms.p99)}`);
  console.log(`  after the run: stem_slots_busy ${slotsBusy ?? '?'}, stem_queue_depth ${queueDepth ?? '?'}${metricsError ? ` (${metricsError})` : ''}`);
  for (const [why, count] of Object.entries(failures)) console.log(`  failed x${count}: ${why}`);
  console.log(pass ? 'PASS' : 'FAIL');
}
if (queueDepth !== undefined && queueDepth !== 0) console.error(`warning: stem_queue_depth is ${queueDepth} after the run`);
process.exit(pass ? 0 : 1);
