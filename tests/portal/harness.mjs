// Processes and helpers for the portal tests: free ports, a throwaway redis-server, gateway
// processes (each waited for on /readyz, its stdout and stderr written to
// artifacts/logs/<name>-<port>.log so a test can grep them), HTTP helpers for the JSON APIs and
// SSE, and an MCP client on the official TypeScript SDK.
//
// The gateway binary is $UNDERSTUDY_BIN (relative to the working directory), by default
// ../../target/debug/understudy-gateway from this folder. Chromium, for the browser test, is
// $CHROMIUM or the `chromium` on PATH.
import { spawn, execFileSync } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, connect } from "node:net";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { randomBytes } from "node:crypto";
import assert from "node:assert/strict";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

export const here = path.dirname(fileURLToPath(import.meta.url));
export const bin = process.env.UNDERSTUDY_BIN
  ? path.resolve(process.env.UNDERSTUDY_BIN)
  : path.resolve(here, "..", "..", "target", "debug", "understudy-gateway");
/** The suite's tenants: `portal` (get_weather, lookup, always_fails) and `other` (other_echo). */
export const manifests = path.join(here, "manifests");
export const logDir = path.join(here, "artifacts", "logs");

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** A UUID of version 7 (the version nibble) and the RFC 4122 variant. */
export const UUID_V7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
/** RFC 3339 UTC with milliseconds, as audit events carry it. */
export const TS_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** An admin token of the required length (>= 16), different on every run. */
export function newAdminToken(prefix = "portal-admin") {
  return `${prefix}-${randomBytes(12).toString("hex")}`;
}

/** Whether the binary has the portal flags (its --help mentions --oidc-issuer). */
export function binarySupportsPortal() {
  if (!existsSync(bin)) return false;
  try {
    return execFileSync(bin, ["--help"], { encoding: "utf8" }).includes("--oidc-issuer");
  } catch {
    return false;
  }
}

/** Chromium for the browser test: $CHROMIUM, else `chromium` (or chromium-browser) on PATH. */
export function findChromium() {
  if (process.env.CHROMIUM) return existsSync(process.env.CHROMIUM) ? process.env.CHROMIUM : null;
  for (const name of ["chromium", "chromium-browser"]) {
    try {
      const p = execFileSync("sh", ["-c", `command -v ${name}`], { encoding: "utf8" }).trim();
      if (p) return p;
    } catch {
      // not on PATH
    }
  }
  return null;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

const children = [];
process.on("exit", () => {
  for (const e of children) if (!e.exited) e.child.kill("SIGKILL");
});

function track(name, child, logFile) {
  let tail = "";
  const keep = (chunk) => {
    tail = (tail + chunk.toString()).slice(-6000);
    if (logFile) appendFileSync(logFile, chunk);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const entry = { name, child, exited: null, tail: () => tail, logFile };
  child.on("exit", (code, signal) => {
    entry.exited = { code, signal };
  });
  child.on("error", (e) => {
    entry.exited = { error: e.message };
  });
  children.push(entry);
  return entry;
}

async function until(what, entry, probe, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (entry.exited) {
      throw new Error(`${what} exited (${JSON.stringify(entry.exited)}):\n${entry.tail()}`);
    }
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`${what} not ready after ${ms} ms:\n${entry.tail()}`);
    await sleep(50);
  }
}

async function stopEntry(e) {
  if (e.exited) return;
  e.child.kill("SIGTERM");
  for (let i = 0; i < 100 && !e.exited; i++) await sleep(50);
  if (!e.exited) {
    e.child.kill("SIGKILL");
    for (let i = 0; i < 40 && !e.exited; i++) await sleep(50);
  }
}

/** Starts redis-server without persistence on a free port; returns its URL. */
export async function startRedis() {
  const port = await freePort();
  const entry = track("redis-server", spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1",
    "--save", "", "--appendonly", "no"], { stdio: ["ignore", "pipe", "pipe"] }));
  await until("redis-server", entry, () => new Promise((resolve) => {
    const s = connect(port, "127.0.0.1", () => { s.end(); resolve(true); });
    s.on("error", () => resolve(false));
  }));
  return `redis://127.0.0.1:${port}/0`;
}

/**
 * Starts a gateway: `--listen 127.0.0.1:<port> --public-url http://127.0.0.1:<port>` plus
 * `args`, and waits until GET /readyz answers 200. `port` may be chosen beforehand (the IdP
 * must know the callback URL before the gateway starts). Returns { name, base, port, logFile,
 * log(), tail(), stop() }.
 */
export async function startGateway(name, args, { port, env = {} } = {}) {
  if (!existsSync(bin)) throw new Error(`no gateway binary at ${bin}: set UNDERSTUDY_BIN`);
  port ??= await freePort();
  const base = `http://127.0.0.1:${port}`;
  mkdirSync(logDir, { recursive: true });
  const logFile = path.join(logDir, `${name}-${port}.log`);
  const argv = ["--listen", `127.0.0.1:${port}`, "--public-url", base, "--drain-grace", "0s", ...args];
  // The command line, for whoever reads the log; secrets left out, so a grep of the log for a
  // secret finds only what the gateway itself wrote.
  const shown = argv.map((a, i) => (/^--.*(secret|token)/.test(argv[i - 1] ?? "") ? "[hidden]" : a));
  writeFileSync(logFile, `# ${path.basename(bin)} ${shown.join(" ")}\n`);
  const entry = track(name, spawn(bin, argv, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info", NO_COLOR: "1", ...env },
  }), logFile);
  await until(`gateway ${name}`, entry, async () => {
    try {
      return (await fetch(`${base}/readyz`)).status === 200;
    } catch {
      return false;
    }
  });
  return {
    name,
    base,
    port,
    logFile,
    /** Everything the process wrote so far (without the command line written first). */
    log: () => readFileSync(logFile, "utf8").split("\n").slice(1).join("\n"),
    tail: entry.tail,
    stop: () => stopEntry(entry),
  };
}

/** The log files of every gateway started by this test process. */
export function gatewayLogFiles() {
  return children.filter((e) => e.logFile).map((e) => e.logFile);
}

/** Stops every process started here (SIGTERM, then SIGKILL after 5 s). */
export async function stopAll() {
  await Promise.all(children.map(stopEntry));
}

// ---- HTTP ----------------------------------------------------------------------------------

/**
 * One request. opts: method, headers, body (an object is sent as JSON), key (X-API-Key),
 * bearer (Authorization: Bearer), cookie (the understudy_session value), timeoutMs (for the
 * whole answer, default 30 s). Returns { status,
 * headers, text, json (parsed when the body is JSON, else undefined), describe() }.
 */
export async function http(base, pathAndQuery, { method = "GET", headers = {}, body, key, bearer, cookie, timeoutMs = 30_000 } = {}) {
  const h = new Headers(headers);
  if (key) h.set("x-api-key", key);
  if (bearer) h.set("authorization", `Bearer ${bearer}`);
  if (cookie) h.set("cookie", `understudy_session=${cookie}`);
  let payload = body;
  if (body !== undefined && typeof body !== "string") {
    payload = JSON.stringify(body);
    if (!h.has("content-type")) h.set("content-type", "application/json");
  }
  const url = new URL(pathAndQuery, base).href;
  // Bounded: a route that wrongly answers with an endless stream fails the test instead of hanging it.
  const signal = AbortSignal.timeout(timeoutMs);
  const res = await fetch(url, { method, headers: h, body: payload, redirect: "manual", signal });
  let text;
  try {
    text = await res.text();
  } catch (e) {
    throw new Error(`${method} ${url} → ${res.status}: the body did not end within ${timeoutMs} ms (${e.message})`);
  }
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return {
    status: res.status,
    headers: res.headers,
    text,
    json,
    describe: () => `${method} ${url} → ${res.status} ${text.slice(0, 800)}`,
  };
}

/**
 * Asserts a 401 in the portal's shape: the envelope with code `unauthorized` and
 * `WWW-Authenticate: Bearer realm="understudy", resource_metadata="<base>/.well-known/oauth-protected-resource"`.
 */
export function assertUnauthorized(r, base, what = "") {
  const ctx = `${what ? `${what}: ` : ""}${r.describe()}`;
  assert.equal(r.status, 401, ctx);
  assert.equal(r.json?.error?.code, "unauthorized", `envelope code: ${ctx}`);
  assert.equal(typeof r.json?.error?.message, "string", `envelope message: ${ctx}`);
  const www = r.headers.get("www-authenticate");
  assert.ok(www, `no WWW-Authenticate header: ${ctx}`);
  assert.match(www, /^Bearer\s/i, `WWW-Authenticate scheme: ${www}`);
  assert.ok(www.includes('realm="understudy"'), `WWW-Authenticate lacks realm="understudy": ${www}`);
  assert.ok(www.includes(`resource_metadata="${base}/.well-known/oauth-protected-resource"`),
    `WWW-Authenticate lacks resource_metadata="${base}/.well-known/oauth-protected-resource": ${www}`);
}

/** Asserts an error envelope with this status and code. */
export function assertError(r, status, code, what = "") {
  const ctx = `${what ? `${what}: ` : ""}${r.describe()}`;
  assert.equal(r.status, status, ctx);
  assert.equal(r.json?.error?.code, code, `envelope code: ${ctx}`);
  assert.equal(typeof r.json?.error?.message, "string", `envelope message: ${ctx}`);
}

/** Asserts-free helper: the request, then throws with the answer unless the status is `want`. */
export async function expectStatus(want, base, pathAndQuery, opts) {
  const r = await http(base, pathAndQuery, opts);
  if (r.status !== want) throw new Error(`expected ${want}: ${r.describe()}`);
  return r;
}

/** Calls `probe` until it returns a truthy value (which is returned) or `ms` pass. */
export async function poll(what, probe, { ms = 5000, every = 100 } = {}) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${ms} ms (last: ${last instanceof Error ? last.message : JSON.stringify(last)?.slice(0, 800)})`);
    }
    await sleep(every);
  }
}

/** GET /api/v1/portal/audit/events with `query` (an object or URLSearchParams); expects 200. */
export async function events(base, auth, query = {}) {
  const q = new URLSearchParams(query);
  const r = await http(base, `/api/v1/portal/audit/events?${q}`, auth);
  if (r.status !== 200) throw new Error(`audit/events: ${r.describe()}`);
  return r.json;
}

/** Polls audit/events with `query` until at least `count` events match; returns the list. */
export async function waitForEvents(base, auth, query, count = 1, ms = 5000) {
  return poll(`${count} audit event(s) for ${new URLSearchParams(query)}`, async () => {
    const list = await events(base, auth, query);
    return list.events.length >= count ? list : false;
  }, { ms });
}

/** Every API key plaintext minted by this test process (for the no-secret-in-the-logs checks). */
export const mintedKeys = [];

/** Asserts that no gateway log file of this test process contains any of `secrets` ({what: value}). */
export async function assertNoSecretInLogs(secrets) {
  await sleep(300); // the gateways' last output reaches the files
  for (const f of gatewayLogFiles()) {
    const text = readFileSync(f, "utf8");
    for (const [what, secret] of Object.entries(secrets)) {
      assert.ok(!text.includes(secret), `the ${what} is in the gateway log ${f}`);
    }
  }
}

/** Mints an API key with the admin token; returns { name, identity, plaintext }. */
export async function mintKey(base, adminToken, { name, role = "editor", tenant, identity } = {}) {
  name ??= `k-${randomBytes(5).toString("hex")}`;
  const body = { name, role };
  if (tenant) body.tenant = tenant;
  if (identity) body.identity = identity;
  const r = await http(base, "/api/v1/admin/keys", { method: "POST", key: adminToken, body });
  if (r.status !== 201) throw new Error(`minting key ${name}: ${r.describe()}`);
  mintedKeys.push(r.json.plaintext);
  return { name, identity: r.json.key.identity, plaintext: r.json.plaintext };
}

/**
 * Opens an SSE stream (fetch). Returns { status, headers, frames, next(pred, ms), close() }:
 * next() resolves with the first frame (from the start of the stream, not yet taken) for which
 * pred(frame) is true; a frame is { comment: [..], event, data, raw }.
 */
export async function openSse(url, headers = {}) {
  const ac = new AbortController();
  const res = await fetch(url, { headers: { accept: "text/event-stream", ...headers }, signal: ac.signal });
  const frames = [];
  const waiters = [];
  let ended = false;
  let buf = "";
  const wake = () => {
    for (const w of [...waiters]) w();
  };
  const pump = (async () => {
    if (!res.body) return;
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const raw = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const f = { comment: [], event: undefined, data: undefined, raw };
          const data = [];
          for (const line of raw.split("\n")) {
            if (line.startsWith(":")) f.comment.push(line.slice(1).trim());
            else if (line.startsWith("event:")) f.event = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (data.length) f.data = data.join("\n");
          frames.push(f);
        }
        wake();
      }
    } catch {
      // aborted
    } finally {
      ended = true;
      wake();
    }
  })();
  let taken = 0;
  return {
    status: res.status,
    headers: res.headers,
    frames,
    async next(pred, ms = 5000) {
      const deadline = Date.now() + ms;
      for (;;) {
        while (taken < frames.length) {
          const f = frames[taken++];
          if (pred(f)) return f;
        }
        if (ended) throw new Error(`the stream ended; frames: ${JSON.stringify(frames.map((f) => f.raw)).slice(0, 1500)}`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no matching SSE frame within ${ms} ms; frames: ${JSON.stringify(frames.map((f) => f.raw)).slice(0, 1500)}`);
        await new Promise((resolve) => {
          const t = setTimeout(done, left);
          function done() {
            clearTimeout(t);
            const k = waiters.indexOf(done);
            if (k >= 0) waiters.splice(k, 1);
            resolve();
          }
          waiters.push(done);
        });
      }
    },
    async close() {
      ac.abort();
      await pump;
    },
  };
}

// ---- MCP -----------------------------------------------------------------------------------

/**
 * An MCP client (official SDK, streamable HTTP) on `${base}/t/${tenant}/mcp`, `headers` sent on
 * every request. Returns { client, transport, sessionId, close() }.
 */
export async function mcpClient(base, tenant, { headers = {} } = {}) {
  const transport = new StreamableHTTPClientTransport(new URL(`${base}/t/${tenant}/mcp`), { requestInit: { headers } });
  const client = new Client({ name: "understudy-portal-tests", version: "0.0.0" });
  await client.connect(transport);
  return {
    client,
    transport,
    get sessionId() { return transport.sessionId; },
    close: () => client.close(),
  };
}

/** One tool call on a fresh MCP session; returns { result, sessionId }. */
export async function callTool(base, tenant, name, args = {}, { headers } = {}) {
  const c = await mcpClient(base, tenant, { headers });
  try {
    const result = await c.client.callTool({ name, arguments: args });
    return { result, sessionId: c.sessionId };
  } finally {
    await c.close();
  }
}

/** An OpenAI chat completion on the tenant's LLM surface; returns the http() answer. */
export function chat(base, tenant, text, { headers = {}, key, bearer } = {}) {
  return http(base, `/t/${tenant}/v1/chat/completions`, {
    method: "POST",
    headers,
    key,
    bearer,
    body: { model: "gpt-4o-mini", messages: [{ role: "user", content: text }] },
  });
}
