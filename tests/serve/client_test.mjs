#!/usr/bin/env node
// End-to-end test of `stem serve` through the official `openai` npm client
// (and raw HTTP where the client cannot say what is checked).
//
//   node client_test.mjs --url http://127.0.0.1:PORT --expect expected.json [--api-key KEY]
//
// expected.json (written by the C++ test that starts the server):
//   {"model": "base", "edited_model": "base+swap", "context": 64,
//    "cases": [{"prompt", "model", "max_tokens", "text", "finish_reason"}]}
// where each case's text is what `stem generate --greedy` gives.
//
// Output is node's test runner in TAP form, so its closing lines are the
// summary ("# pass N", "# fail N", ...); the exit status is non-zero when
// any test fails. Every test has a timeout; the whole run takes seconds.

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

// node:test picks its reporter at start-up (spec on a terminal, TAP on a pipe
// in Node 20, spec everywhere in later versions): run this file again with the
// TAP reporter so that the summary lines are always "# pass N" / "# fail N".
const reporterGiven = process.execArgv.some((a) => a.startsWith('--test-reporter') || a === '--test');
if (!reporterGiven && !process.env.STEM_SERVE_CLIENT_TEST_CHILD) {
  const child = spawn(
    process.execPath,
    ['--test-reporter=tap', fileURLToPath(import.meta.url), ...process.argv.slice(2)],
    { stdio: 'inherit', env: { ...process.env, STEM_SERVE_CLIENT_TEST_CHILD: '1' } },
  );
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
  child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
} else {
  await main();
}

async function main() {
  const { test, before } = await import('node:test');
  const { default: assert } = await import('node:assert/strict');
  const { default: OpenAI } = await import('openai');

  const usage = 'usage: node client_test.mjs --url http://127.0.0.1:PORT --expect expected.json [--api-key KEY]';
  let args;
  try {
    args = parseArgs({
      options: {
        url: { type: 'string' },
        expect: { type: 'string' },
        'api-key': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    console.error(`${e.message}\n${usage}`);
    process.exit(2);
  }
  if (args.help) {
    console.log(usage);
    process.exit(0);
  }
  if (!args.url || !args.expect) {
    console.error(usage);
    process.exit(2);
  }

  const URL_BASE = args.url.replace(/\/+$/, '');
  const API_KEY = args['api-key'];
  const expected = JSON.parse(readFileSync(args.expect, 'utf8'));
  const MODEL = expected.model;
  const EDITED = expected.edited_model;
  const CONTEXT = expected.context;
  const CASES = expected.cases ?? [];

  const client = new OpenAI({
    baseURL: `${URL_BASE}/v1`,
    apiKey: API_KEY ?? 'none',
    maxRetries: 0,
    timeout: 20_000,
  });

  const T = 20_000; // per-test timeout, ms
  const TOL = 1e-4;

  // ---- helpers --------------------------------------------------------------

  // One HTTP request on a fresh connection (node:http rather than fetch: an
  // early answer such as 413, sent before the whole body is written, is read
  // instead of surfacing as a write error). Resolves {status, headers, text}.
  function raw(method, path, { body, headers = {}, auth = true, timeoutMs = 10_000 } = {}) {
    return new Promise((resolve, reject) => {
      const u = new URL(URL_BASE + path);
      const h = { ...headers };
      if (auth && API_KEY) h.authorization = `Bearer ${API_KEY}`;
      let payload;
      if (body !== undefined) {
        payload = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
        h['content-type'] ??= 'application/json';
        h['content-length'] = payload.length;
      }
      let answered = false;
      const req = http.request(
        { host: u.hostname, port: u.port, path: u.pathname + u.search, method, headers: h, agent: false },
        (res) => {
          answered = true;
          const parts = [];
          res.on('data', (d) => parts.push(d));
          res.on('end', () =>
            resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(parts).toString('utf8') }),
          );
          res.on('error', reject);
        },
      );
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${path}: no answer in ${timeoutMs} ms`)));
      req.on('error', (e) => {
        // A server may answer and close before reading the whole body; the
        // write then fails, which is not an error once the answer is in.
        if (!answered) reject(e);
      });
      if (payload) req.write(payload);
      req.end();
    });
  }

  function parseJson(r, what) {
    try {
      return JSON.parse(r.text);
    } catch {
      assert.fail(`${what}: body is not JSON (status ${r.status}): ${r.text.slice(0, 300)}`);
    }
  }

  // A metric's value from Prometheus text (first sample of that name).
  function metricValue(text, name) {
    const re = new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+(\\S+)`, 'm');
    const m = re.exec(text);
    return m ? Number(m[1]) : undefined;
  }

  function checkUsage(usage, what, { completionPositive = true } = {}) {
    assert.ok(usage && typeof usage === 'object', `${what}: usage missing`);
    assert.ok(Number.isInteger(usage.prompt_tokens) && usage.prompt_tokens > 0, `${what}: prompt_tokens ${usage.prompt_tokens}`);
    assert.ok(Number.isInteger(usage.completion_tokens), `${what}: completion_tokens ${usage.completion_tokens}`);
    if (completionPositive) assert.ok(usage.completion_tokens > 0, `${what}: completion_tokens ${usage.completion_tokens}`);
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, `${what}: total_tokens`);
  }

  const label = (c) => `[${c.model}] ${JSON.stringify(c.prompt)}`;

  async function greedy(c) {
    return client.completions.create({ model: c.model, prompt: c.prompt, max_tokens: c.max_tokens, temperature: 0 });
  }

  function checkGreedy(c, r) {
    assert.equal(r.object, 'text_completion', `${label(c)}: object`);
    assert.equal(r.choices.length, 1, `${label(c)}: choices`);
    assert.equal(r.choices[0].index, 0, `${label(c)}: index`);
    assert.equal(r.choices[0].text, c.text, `${label(c)}: text differs from stem generate --greedy`);
    assert.equal(r.choices[0].finish_reason, c.finish_reason, `${label(c)}: finish_reason`);
    checkUsage(r.usage, label(c), { completionPositive: c.text !== '' });
    assert.ok(r.usage.completion_tokens <= c.max_tokens, `${label(c)}: completion_tokens > max_tokens`);
  }

  // ---- tests ----------------------------------------------------------------

  before(async () => {
    assert.ok(typeof MODEL === 'string' && MODEL, 'expected.json: model');
    assert.ok(typeof EDITED === 'string' && EDITED, 'expected.json: edited_model');
    assert.ok(Number.isInteger(CONTEXT) && CONTEXT > 0, 'expected.json: context');
    assert.ok(CASES.length > 0, 'expected.json: no cases');
    // The server may still be loading: wait for /health (at most 20 s).
    const until = Date.now() + 20_000;
    for (;;) {
      const r = await raw('GET', '/health', { auth: false }).catch((e) => ({ status: 0, text: String(e) }));
      if (r.status === 200) break;
      if (Date.now() > until) assert.fail(`GET /health: ${r.status} ${r.text}`);
      await new Promise((res) => setTimeout(res, 200));
    }
  }, { timeout: 25_000 });

  test('GET /health is 200 {"status":"ok"}', { timeout: T }, async () => {
    const r = await raw('GET', '/health', { auth: false });
    assert.equal(r.status, 200);
    assert.equal(parseJson(r, 'health').status, 'ok');
  });

  test('models.list() has the model and the edited model', { timeout: T }, async () => {
    const r = await raw('GET', '/v1/models');
    assert.equal(r.status, 200, r.text.slice(0, 300));
    assert.match(String(r.headers['content-type']), /^application\/json/, 'GET /v1/models content-type');
    assert.equal(parseJson(r, '/v1/models').object, 'list');
    const page = await client.models.list();
    const ids = page.data.map((m) => m.id);
    assert.ok(ids.includes(MODEL), `${MODEL} not in ${JSON.stringify(ids)}`);
    assert.ok(ids.includes(EDITED), `${EDITED} not in ${JSON.stringify(ids)}`);
    for (const m of page.data) {
      assert.equal(m.object, 'model', `${m.id}: object`);
      assert.equal(m.owned_by, 'stem', `${m.id}: owned_by`);
      assert.ok(Number.isInteger(m.created), `${m.id}: created`);
    }
  });

  const greedyResults = new Map();

  test('greedy completions equal stem generate --greedy (with and without the edit)', { timeout: T }, async () => {
    for (const c of CASES) {
      const r = await greedy(c);
      checkGreedy(c, r);
      greedyResults.set(c, r);
    }
  });

  test('greedy completions, all cases at once, still equal', { timeout: T }, async () => {
    // Twice over, so that the base and the edited model share the batch.
    const all = [...CASES, ...CASES];
    const rs = await Promise.all(all.map((c) => greedy(c)));
    all.forEach((c, i) => checkGreedy(c, rs[i]));
  });

  test('greedy streamed completions equal stem generate --greedy', { timeout: T }, async () => {
    for (const c of CASES) {
      const stream = await client.completions.create({
        model: c.model, prompt: c.prompt, max_tokens: c.max_tokens, temperature: 0, stream: true,
      });
      const chunks = [];
      for await (const ch of stream) chunks.push(ch);
      assert.ok(chunks.length > 0, `${label(c)}: no chunks`);
      for (const ch of chunks) assert.equal(ch.object, 'text_completion', `${label(c)}: chunk object`);
      const text = chunks.map((ch) => ch.choices?.[0]?.text ?? '').join('');
      assert.equal(text, c.text, `${label(c)}: streamed text differs from stem generate --greedy`);
      const finished = chunks.filter((ch) => ch.choices?.[0]?.finish_reason);
      assert.equal(finished.length, 1, `${label(c)}: chunks with a finish_reason`);
      const last = finished[finished.length - 1];
      assert.equal(last.choices[0].finish_reason, c.finish_reason, `${label(c)}: finish_reason`);
      checkUsage(last.usage, `${label(c)} stream`, { completionPositive: c.text !== '' });
      const whole = greedyResults.get(c);
      if (whole) assert.deepEqual(last.usage, whole.usage, `${label(c)}: stream usage differs from non-stream usage`);
    }
  });

  test('streaming framing: text/event-stream, data: lines, ends with data: [DONE]', { timeout: T }, async () => {
    const c = CASES[0];
    const r = await raw('POST', '/v1/completions', {
      body: { model: c.model, prompt: c.prompt, max_tokens: c.max_tokens, temperature: 0, stream: true },
    });
    assert.equal(r.status, 200, r.text.slice(0, 300));
    assert.match(String(r.headers['content-type']), /^text\/event-stream/);
    const events = r.text.split(/\r?\n\r?\n/).filter((e) => e.trim() !== '');
    assert.ok(events.length >= 2, `events: ${events.length}`);
    for (const e of events) assert.match(e, /^data: /, `event not a data: line: ${JSON.stringify(e.slice(0, 100))}`);
    assert.equal(events[events.length - 1].trim(), 'data: [DONE]');
    for (const e of events.slice(0, -1)) JSON.parse(e.slice('data: '.length));
  });

  test('chat completions, non-stream and stream, agree at temperature 0', { timeout: T }, async () => {
    const c = CASES[0];
    const params = {
      model: MODEL,
      messages: [{ role: 'user', content: c.prompt }],
      max_tokens: 8,
      temperature: 0,
    };
    const r = await client.chat.completions.create(params);
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].index, 0);
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(typeof r.choices[0].message.content, 'string');
    assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason), `finish_reason ${r.choices[0].finish_reason}`);
    checkUsage(r.usage, 'chat', { completionPositive: false });
    assert.ok(r.usage.completion_tokens <= 8, `completion_tokens ${r.usage.completion_tokens} > max_tokens 8`);

    const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const ch of stream) chunks.push(ch);
    assert.ok(chunks.length > 0, 'no chunks');
    for (const ch of chunks) {
      assert.equal(ch.object, 'chat.completion.chunk');
      assert.ok(ch.choices?.[0]?.delta && typeof ch.choices[0].delta === 'object', `chunk without choices[0].delta: ${JSON.stringify(ch)}`);
    }
    assert.equal(chunks[0].choices[0].delta.role, 'assistant', 'first delta role');
    const finished = chunks.filter((ch) => ch.choices[0].finish_reason);
    assert.equal(finished.length, 1, 'chunks with a finish_reason');
    assert.equal(finished[0].choices[0].finish_reason, r.choices[0].finish_reason, 'finish_reason');
    const last = chunks[chunks.length - 1];
    checkUsage(last.usage, 'chat stream (last chunk)', { completionPositive: false });
    assert.deepEqual(last.usage, r.usage, 'stream usage differs from non-stream usage');
    const content = chunks.map((ch) => ch.choices[0].delta.content ?? '').join('');
    assert.equal(content, r.choices[0].message.content, 'streamed content differs from non-stream content');
  });

  test('stop string cuts the greedy text before its first occurrence', { timeout: T }, async () => {
    const c = [...CASES].sort((a, b) => b.text.length - a.text.length)[0];
    const stop = c.text.slice(4, 7);
    assert.ok(stop.length > 0, `no case text long enough for a stop string (longest: ${JSON.stringify(c.text)})`);
    const want = c.text.slice(0, c.text.indexOf(stop));
    for (const s of [stop, [stop, '\u0001never-there\u0001']]) {
      const r = await client.completions.create({
        model: c.model, prompt: c.prompt, max_tokens: c.max_tokens, temperature: 0, stop: s,
      });
      assert.equal(r.choices[0].text, want, `${label(c)} stop ${JSON.stringify(s)}`);
      assert.equal(r.choices[0].finish_reason, 'stop', `${label(c)} stop ${JSON.stringify(s)}: finish_reason`);
    }
  });

  test('n = 3 with a seed: 3 choices, indexes 0..2, repeatable', { timeout: T }, async () => {
    const params = { model: MODEL, prompt: CASES[0].prompt, max_tokens: 8, temperature: 1.0, seed: 7, n: 3 };
    const a = await client.completions.create(params);
    const b = await client.completions.create(params);
    for (const r of [a, b]) {
      assert.equal(r.choices.length, 3);
      assert.deepEqual(r.choices.map((ch) => ch.index).sort(), [0, 1, 2]);
      for (const ch of r.choices) assert.equal(typeof ch.text, 'string');
      checkUsage(r.usage, 'n=3', { completionPositive: false });
    }
    const texts = (r) => [...r.choices].sort((x, y) => x.index - y.index).map((ch) => ch.text);
    assert.deepEqual(texts(b), texts(a), 'same seed, different texts');
  });

  test('completion logprobs (legacy format)', { timeout: T }, async () => {
    const c = CASES.find((x) => x.text !== '') ?? CASES[0];
    const r = await client.completions.create({
      model: c.model, prompt: c.prompt, max_tokens: c.max_tokens, temperature: 0, logprobs: 3,
    });
    const lp = r.choices[0].logprobs;
    assert.ok(lp && typeof lp === 'object', 'choices[0].logprobs missing');
    assert.ok(Array.isArray(lp.tokens) && Array.isArray(lp.token_logprobs) && Array.isArray(lp.top_logprobs));
    assert.ok(lp.tokens.length > 0, 'no tokens');
    assert.equal(lp.token_logprobs.length, lp.tokens.length);
    assert.equal(lp.top_logprobs.length, lp.tokens.length);
    assert.equal(lp.tokens.join(''), r.choices[0].text, 'tokens do not spell the text');
    lp.tokens.forEach((tok, i) => {
      assert.equal(typeof tok, 'string', `tokens[${i}]`);
      const l = lp.token_logprobs[i];
      assert.ok(typeof l === 'number' && l <= 0, `token_logprobs[${i}] = ${l}`);
      const top = lp.top_logprobs[i];
      assert.ok(top && typeof top === 'object' && !Array.isArray(top), `top_logprobs[${i}] not an object`);
      const vals = Object.values(top);
      assert.ok(vals.length >= 1 && vals.length <= 3, `top_logprobs[${i}] has ${vals.length} entries`);
      for (const v of vals) assert.ok(typeof v === 'number' && v <= 0, `top_logprobs[${i}] value ${v}`);
      assert.ok(Math.abs(Math.max(...vals) - l) <= TOL, `greedy token ${i}: logprob ${l} is not the top ${Math.max(...vals)}`);
    });
  });

  test('chat logprobs with top_logprobs: 2', { timeout: T }, async () => {
    const r = await client.chat.completions.create({
      model: MODEL, messages: [{ role: 'user', content: CASES[0].prompt }], max_tokens: 6, temperature: 0,
      logprobs: true, top_logprobs: 2,
    });
    const content = r.choices[0].logprobs?.content;
    assert.ok(Array.isArray(content), `choices[0].logprobs.content: ${JSON.stringify(r.choices[0].logprobs)}`);
    if (r.choices[0].message.content) assert.ok(content.length > 0, 'reply has text but no logprobs');
    content.forEach((e, i) => {
      assert.equal(typeof e.token, 'string', `content[${i}].token`);
      assert.ok(typeof e.logprob === 'number' && e.logprob <= 0, `content[${i}].logprob = ${e.logprob}`);
      assert.ok(Array.isArray(e.top_logprobs) && e.top_logprobs.length === 2, `content[${i}].top_logprobs: ${JSON.stringify(e.top_logprobs)}`);
      for (const t of e.top_logprobs) {
        assert.equal(typeof t.token, 'string');
        assert.ok(typeof t.logprob === 'number' && t.logprob <= 0);
      }
      const best = Math.max(...e.top_logprobs.map((t) => t.logprob));
      assert.ok(Math.abs(best - e.logprob) <= TOL, `greedy token ${i}: logprob ${e.logprob} is not the top ${best}`);
    });
  });

  test('max_tokens is respected', { timeout: T }, async () => {
    for (const max of [1, 2, 5]) {
      const r = await client.completions.create({ model: MODEL, prompt: 'The', max_tokens: max, temperature: 1.0, seed: max, n: 2 });
      assert.ok(r.usage.completion_tokens <= 2 * max, `n=2 max_tokens ${max}: completion_tokens ${r.usage.completion_tokens}`);
      const one = await client.completions.create({ model: MODEL, prompt: 'The', max_tokens: max, temperature: 1.0, seed: max });
      assert.ok(one.usage.completion_tokens <= max, `max_tokens ${max}: completion_tokens ${one.usage.completion_tokens}`);
      if (one.choices[0].finish_reason === 'length') assert.equal(one.usage.completion_tokens, max, `finish "length" at max_tokens ${max}`);
      const chat = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hello' }], max_tokens: max, temperature: 1.0, seed: max });
      assert.ok(chat.usage.completion_tokens <= max, `chat max_tokens ${max}: completion_tokens ${chat.usage.completion_tokens}`);
    }
  });

  test('errors through the client', { timeout: T }, async (t) => {
    await t.test('unknown model -> NotFoundError 404 (model_not_found)', { timeout: 10_000 }, async () => {
      await assert.rejects(client.completions.create({ model: 'no-such-model', prompt: 'x', max_tokens: 1 }), (e) => {
        assert.ok(e instanceof OpenAI.NotFoundError, `${e.constructor.name}: ${e.message}`);
        assert.equal(e.status, 404);
        assert.equal(e.code, 'model_not_found');
        return true;
      });
      await assert.rejects(
        client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }], max_tokens: 1 }),
        (e) => e instanceof OpenAI.NotFoundError && e.status === 404,
      );
    });
    await t.test('max_tokens: -1 -> BadRequestError 400', { timeout: 10_000 }, async () => {
      await assert.rejects(client.completions.create({ model: MODEL, prompt: 'x', max_tokens: -1 }), (e) => {
        assert.ok(e instanceof OpenAI.BadRequestError, `${e.constructor.name}: ${e.message}`);
        assert.equal(e.status, 400);
        return true;
      });
    });
    await t.test('prompt longer than the context -> 400 context_length_exceeded', { timeout: 10_000 }, async () => {
      const prompt = ' the'.repeat(4 * CONTEXT);
      await assert.rejects(client.completions.create({ model: MODEL, prompt, max_tokens: 4 }), (e) => {
        assert.ok(e instanceof OpenAI.BadRequestError, `${e.constructor.name}: ${e.message}`);
        assert.equal(e.status, 400);
        assert.match(e.error?.message ?? e.message, /context|long/i);
        assert.equal(e.code, 'context_length_exceeded');
        return true;
      });
    });
  });

  test('bad raw requests get the right status and an OpenAI error body; the server lives on', { timeout: 30_000 }, async (t) => {
    const cases = [
      ['bad JSON', 400, 'POST', '/v1/completions', { body: '{"model":' }],
      ['a number too large for a double', 400, 'POST', '/v1/completions', { body: '{"model": "x", "max_tokens": 1e999}' }],
      ['prompt is a number', 400, 'POST', '/v1/completions', { body: { model: MODEL, prompt: 42 } }],
      ['max_tokens is a string', 400, 'POST', '/v1/completions', { body: { model: MODEL, prompt: 'x', max_tokens: 'ten' } }],
      ['temperature -1', 400, 'POST', '/v1/completions', { body: { model: MODEL, prompt: 'x', temperature: -1 } }],
      ['chat without messages', 400, 'POST', '/v1/chat/completions', { body: { model: MODEL } }],
      ['unknown model', 404, 'POST', '/v1/completions', { body: { model: 'no-such-model', prompt: 'x' } }],
      ['2 MiB body', 413, 'POST', '/v1/completions', { body: { model: MODEL, prompt: 'a'.repeat(2 * 1024 * 1024) } }],
      ['invalid UTF-8 in a JSON string', 400, 'POST', '/v1/completions', {
        body: Buffer.concat([Buffer.from(`{"model":${JSON.stringify(MODEL)},"prompt":"`), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]),
      }],
      ['unknown route', 404, 'GET', '/v1/nope', {}],
    ];
    if (API_KEY) {
      const body = { model: MODEL, prompt: 'x', max_tokens: 1 };
      cases.push(
        ['no API key', 401, 'POST', '/v1/completions', { body, auth: false }],
        ['wrong API key', 401, 'POST', '/v1/completions', { body, auth: false, headers: { authorization: `Bearer ${API_KEY}-wrong` } }],
        ['GET /v1/models without a key', 401, 'GET', '/v1/models', { auth: false }],
      );
    }
    for (const [name, status, method, path, opts] of cases) {
      await t.test(`${name}: ${method} ${path} -> ${status}`, { timeout: 10_000 }, async () => {
        const r = await raw(method, path, opts);
        assert.equal(r.status, status, `body: ${r.text.slice(0, 300)}`);
        const j = parseJson(r, name);
        assert.ok(j.error && typeof j.error === 'object', `no error object: ${r.text.slice(0, 300)}`);
        assert.ok(typeof j.error.message === 'string' && j.error.message.length > 0, 'error.message');
        assert.equal(typeof j.error.type, 'string', 'error.type');
        const h = await raw('GET', '/health', { auth: false });
        assert.equal(h.status, 200, `GET /health after ${name}: ${h.status}`);
      });
    }
    if (API_KEY) {
      await t.test('GET /health without a key -> 200', { timeout: 10_000 }, async () => {
        const h = await raw('GET', '/health', { auth: false });
        assert.equal(h.status, 200);
      });
    }
  });

  test('a client that disconnects mid-stream frees its slot', { timeout: T }, async (t) => {
    const maxTokens = Math.max(1, Math.floor(CONTEXT / 2));
    const starts = ['The', 'Once upon a time', 'In the', 'Visitors to'];
    const finishedEarly = await Promise.all(starts.map((prompt, i) => new Promise((resolve, reject) => {
      const u = new URL(`${URL_BASE}/v1/completions`);
      const body = Buffer.from(JSON.stringify({
        model: MODEL, prompt, max_tokens: maxTokens, temperature: 1.0, seed: 100 + i, stream: true,
      }));
      const headers = { 'content-type': 'application/json', 'content-length': body.length };
      if (API_KEY) headers.authorization = `Bearer ${API_KEY}`;
      const req = http.request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers, agent: false }, (res) => {
        if (res.statusCode !== 200) {
          reject(new Error(`stream request: status ${res.statusCode}`));
          res.resume();
          return;
        }
        res.once('data', (d) => {
          const sawDone = d.toString('utf8').includes('[DONE]');
          req.destroy(); // hang up after the first data chunk
          resolve(sawDone);
        });
        res.on('error', () => {});
      });
      req.on('error', () => {}); // our own destroy
      req.setTimeout(10_000, () => { req.destroy(); reject(new Error('stream request: no data in 10 s')); });
      req.end(body);
    })));
    const early = finishedEarly.filter(Boolean).length;
    if (early) t.diagnostic(`${early} of ${starts.length} streams had finished before the hang-up`);

    const until = Date.now() + 10_000;
    let busy;
    for (;;) {
      const m = await raw('GET', '/metrics');
      assert.equal(m.status, 200, 'GET /metrics');
      busy = metricValue(m.text, 'stem_slots_busy');
      assert.notEqual(busy, undefined, 'no stem_slots_busy in /metrics');
      if (busy === 0) break;
      if (Date.now() > until) assert.fail(`stem_slots_busy is still ${busy} 10 s after the clients hung up`);
      await new Promise((res) => setTimeout(res, 100));
    }
    const r = await client.completions.create({ model: MODEL, prompt: 'The', max_tokens: 4, temperature: 0 });
    assert.equal(r.choices.length, 1);
  });

  test('/tokenize then /detokenize round trip', { timeout: T }, async () => {
    const tk = await raw('POST', '/tokenize', { body: { content: 'The capital of' } });
    assert.equal(tk.status, 200, tk.text.slice(0, 300));
    const { tokens } = parseJson(tk, '/tokenize');
    assert.ok(Array.isArray(tokens) && tokens.length > 0 && tokens.every(Number.isInteger), `tokens: ${JSON.stringify(tokens)}`);
    const dt = await raw('POST', '/detokenize', { body: { tokens } });
    assert.equal(dt.status, 200, dt.text.slice(0, 300));
    assert.equal(parseJson(dt, '/detokenize').content, 'The capital of');
  });

  test('GET /metrics has the stem_* metrics', { timeout: T }, async () => {
    const m = await raw('GET', '/metrics');
    assert.equal(m.status, 200);
    for (const name of [
      'stem_requests_total', 'stem_prompt_tokens_total', 'stem_completion_tokens_total', 'stem_queue_depth',
      'stem_slots_busy', 'stem_table_bytes_read_total', 'stem_row_cache_hit_ratio',
    ]) {
      const v = metricValue(m.text, name);
      assert.ok(v !== undefined, `${name} missing from /metrics`);
    }
    assert.ok(metricValue(m.text, 'stem_requests_total') > 0, 'stem_requests_total is 0 after this test\'s requests');
    assert.ok(metricValue(m.text, 'stem_completion_tokens_total') > 0, 'stem_completion_tokens_total is 0');
  });
}
