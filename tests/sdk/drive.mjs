// drive: runs the official Anthropic and OpenAI SDKs against llmuxd (base URL from argv) and
// prints one JSON object of what they saw, for tests/integration/test_sdk.py to check.
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';

const base = `http://127.0.0.1:${process.argv[2]}`;
const claude = new Anthropic({ baseURL: base, apiKey: 'sk-client', maxRetries: 0 });
const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'sk-client', maxRetries: 0 });
const out = {};
const user = (content) => [{ role: 'user', content }];

async function failure(run) {
  try {
    await run();
    return null;
  } catch (e) {
    return { cls: e.constructor.name, status: e.status ?? null, error: e.error ?? null };
  }
}

async function messages() {
  for (const model of ['m', 'claude']) {
    out[`create_${model}`] = await claude.messages.create({
      model, max_tokens: 64, system: 'be brief', messages: user('Hello SDK') });
    const s = claude.messages.stream({ model, max_tokens: 64,
                                       messages: user('streamed hi @mock:stream=4') });
    let text = '';
    s.on('text', (t) => { text += t; });
    const final = await s.finalMessage();
    out[`stream_${model}`] = { text, stop_reason: final.stop_reason, usage: final.usage };
  }
}

async function tools() {
  const tool = { name: 'lookup', description: 'find',
                 input_schema: { type: 'object', properties: { text: { type: 'string' } } } };
  const s = claude.messages.stream({ model: 'm', max_tokens: 64, tools: [tool],
                                     messages: user('weather @mock:tool,stream=5') });
  const first = await s.finalMessage();
  out.tool_stream = first;
  out.tool_round_trip = await claude.messages.create({
    model: 'm', max_tokens: 64, tools: [tool],
    messages: [...user('weather'), { role: 'assistant', content: first.content },
               { role: 'user', content: [{ type: 'tool_result', tool_use_id: first.content[0].id,
                                           content: 'sunny' }] }] });
}

async function errors() {
  out.count_claude = await claude.messages.countTokens({ model: 'claude',
                                                         messages: user('count') });
  out.count_m = await failure(() => claude.messages.countTokens({ model: 'm',
                                                                   messages: user('c') }));
  out.not_found = await failure(() => claude.messages.create({
    model: 'nope', max_tokens: 5, messages: user('x') }));
  out.upstream_500 = await failure(() => claude.messages.create({
    model: 'm', max_tokens: 5, messages: user('x @mock:status=500') }));
  out.mid_stream = await failure(() => claude.messages.stream({
    model: 'm', max_tokens: 64, messages: user('x @mock:stream=3,reset_after=1') })
    .finalMessage());
}

async function responses() {
  const r = await openai.responses.create({ model: 'm', input: 'responses hi' });
  out.responses = { text: r.output_text, usage: r.usage };
  const types = [];
  let text = '';
  const s = await openai.responses.create({ model: 'm', input: 'rs @mock:stream=3', stream: true });
  for await (const ev of s) {
    types.push(ev.type);
    if (ev.type === 'response.output_text.delta')
      text += ev.delta;
  }
  out.responses_stream = { types, text };
}

await messages();
await tools();
await errors();
await responses();
console.log(JSON.stringify(out));
