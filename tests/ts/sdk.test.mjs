// The official OpenAI and Anthropic JavaScript SDKs against an embedded gateway on the test
// fixtures: plain and streamed text, tool calls through the streaming helpers, Responses,
// embeddings, models and errors. Run by scripts/test.sh (npm ci && npm test).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import path from "node:path";
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const bin = process.env.UNDERSTUDY_BIN ?? path.join(root, "target", "debug", "understudy-gateway");
let gateway;
let base;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

before(async () => {
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  gateway = spawn(bin, ["--listen", `127.0.0.1:${port}`, "--drain-grace", "0s",
    "--manifests", path.join(root, "tests", "fixtures", "manifests")], { stdio: "ignore" });
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`${base}/readyz`)).ok) return;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) throw new Error(`gateway not ready at ${base}`);
    await new Promise((r) => setTimeout(r, 50));
  }
});

after(() => gateway?.kill("SIGTERM"));

const openai = () => new OpenAI({ baseURL: `${base}/v1`, apiKey: "sk-test", maxRetries: 0,
  defaultHeaders: { "X-Tenant-ID": "support" } });
const anthropic = () => new Anthropic({ baseURL: base, apiKey: "sk-ant-test", maxRetries: 0,
  defaultHeaders: { "X-Tenant-ID": "support" } });
const INVOICES = "Your invoices: INV-001 (42.00 EUR, paid) and INV-002 (17.50 EUR, open).";
const invoiceTool = { type: "function", function: { name: "get_invoice_ledger", parameters: { type: "object" } } };

test("openai: chat completion and stream", async () => {
  const c = openai();
  const done = await c.chat.completions.create({ model: "gpt-4o", messages: [{ role: "user", content: "an invoice?" }] });
  assert.equal(done.choices[0].message.content, INVOICES);
  assert.ok(done.id.startsWith("chatcmpl-") && done.usage.total_tokens > 0);
  const stream = await c.chat.completions.create({ model: "gpt-4o", stream: true,
    stream_options: { include_usage: true }, messages: [{ role: "user", content: "hello" }] });
  let text = "";
  let usage;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? "";
    usage = chunk.usage ?? usage;
  }
  assert.equal(text, "Hello! How can I help you today?");
  assert.ok(usage.completion_tokens > 0);
});

test("openai: streamed tool call through the stream helper, then the result gives text", async () => {
  const c = openai();
  const runner = c.chat.completions.stream({ model: "gpt-4o", tools: [invoiceTool],
    messages: [{ role: "user", content: "my invoices" }] });
  const final = await runner.finalChatCompletion();
  const call = final.choices[0].message.tool_calls[0];
  assert.equal(final.choices[0].finish_reason, "tool_calls");
  assert.deepEqual(JSON.parse(call.function.arguments), { customer_id: "cus_123", limit: 2 });
  const answer = await c.chat.completions.create({ model: "gpt-4o", tools: [invoiceTool], messages: [
    { role: "user", content: "my invoices" },
    final.choices[0].message,
    { role: "tool", tool_call_id: call.id, content: "{\"invoices\":[]}" },
  ] });
  assert.equal(answer.choices[0].message.content, INVOICES);
});

test("openai: responses, embeddings, models, errors", async () => {
  const c = openai();
  const r = await c.responses.create({ model: "gpt-4o", input: "hello" });
  assert.equal(r.output_text, "Hello! How can I help you today?");
  const s = c.responses.stream({ model: "gpt-4o", input: "an invoice" });
  const fin = await s.finalResponse();
  assert.equal(fin.status, "completed");
  assert.equal(fin.output[0].content[0].text, INVOICES);
  const e = await c.embeddings.create({ model: "text-embedding-3-small", input: ["a", "b"] });
  assert.equal(e.data.length, 2);
  assert.equal(e.data[0].embedding.length, 1536);
  const models = [];
  for await (const m of c.models.list()) models.push(m.id);
  assert.deepEqual(models, ["gpt-4o-mini", "gpt-4o", "claude-haiku-4-5", "text-embedding-3-small"]);
  await assert.rejects(c.models.retrieve("nope"), (err) => err instanceof OpenAI.NotFoundError);
  const noTenant = new OpenAI({ baseURL: `${base}/v1`, apiKey: "x", maxRetries: 0 });
  await assert.rejects(noTenant.chat.completions.create({ model: "m", messages: [{ role: "user", content: "x" }] }),
    (err) => err instanceof OpenAI.BadRequestError);
});

test("anthropic: message, stream, tool use, count_tokens", async () => {
  const c = anthropic();
  const msg = await c.messages.create({ model: "claude-haiku-4-5", max_tokens: 256,
    messages: [{ role: "user", content: "hello" }] });
  assert.equal(msg.content[0].text, "Hello! How can I help you today?");
  assert.equal(msg.stop_reason, "end_turn");
  const stream = c.messages.stream({ model: "claude-haiku-4-5", max_tokens: 256,
    messages: [{ role: "user", content: "an invoice" }] });
  let text = "";
  stream.on("text", (t) => { text += t; });
  const final = await stream.finalMessage();
  assert.equal(text, INVOICES);
  assert.equal(final.content[0].text, INVOICES);
  const tools = [{ name: "get_invoice_ledger", input_schema: { type: "object" } }];
  const toolStream = c.messages.stream({ model: "claude-haiku-4-5", max_tokens: 256, tools,
    messages: [{ role: "user", content: "an invoice" }] });
  const toolMsg = await toolStream.finalMessage();
  assert.equal(toolMsg.stop_reason, "tool_use");
  assert.deepEqual(toolMsg.content[0].input, { customer_id: "cus_123", limit: 2 });
  const count = await c.messages.countTokens({ model: "claude-haiku-4-5", messages: [{ role: "user", content: "hello" }] });
  assert.ok(count.input_tokens > 0);
  await assert.rejects(c.messages.create({ model: "m", max_tokens: 0, messages: [{ role: "user", content: "x" }] }),
    (err) => err instanceof Anthropic.BadRequestError);
});
