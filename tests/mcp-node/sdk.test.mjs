// The official TypeScript MCP SDK (@modelcontextprotocol/sdk 1.x) against the gateway's tenant
// MCP (SPEC §4): streamable HTTP (/mcp) and legacy HTTP+SSE (/mcp/sse), tenant by X-Tenant-Id or
// the /t/{tenant} prefix, input validation by negotiated version, and sessions shared by two
// gateway processes on one redis-server. Started by run.mjs (MCP_GW_A, MCP_GW_B).
import { test } from "node:test";
import assert from "node:assert/strict";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { ErrorCode, McpError, ToolListChangedNotificationSchema } from "@modelcontextprotocol/sdk/types.js";
import { env } from "./harness.mjs";

const A = env("MCP_GW_A");
const B = env("MCP_GW_B");
const ADMIN = env("MCP_ADMIN_TOKEN");
const TENANT = { "X-Tenant-Id": "support" };
const WEATHER = { city: "Paris", temperature_c: 21 };
const INVOICES = { invoices: ["INV-001", "INV-002"] };
const EARLIER = ["2024-11-05", "2025-03-26", "2025-06-18"];

/**
 * Connects an SDK client. `version`: the protocolVersion the initialize request offers (the SDK
 * always offers its newest, 2025-11-25; an older one is written into the request, as an older
 * client would send it). Returns the client, its transport and the version the server answered.
 */
async function open(kind, url, { version, headers = TENANT, fetch, sessionId } = {}) {
  const opts = { requestInit: { headers } };
  if (fetch) opts.fetch = fetch;
  if (sessionId) opts.sessionId = sessionId;
  const transport = kind === "sse"
    ? new SSEClientTransport(new URL(url), opts)
    : new StreamableHTTPClientTransport(new URL(url), opts);
  const seen = { negotiated: undefined };
  // Protocol.connect() keeps a handler set before it and calls it first with every message.
  transport.onmessage = (m) => {
    if (m?.result?.serverInfo && m.result.protocolVersion) seen.negotiated = m.result.protocolVersion;
  };
  if (version) {
    const send = transport.send.bind(transport);
    transport.send = (msg, o) => send(msg.method === "initialize"
      ? { ...msg, params: { ...msg.params, protocolVersion: version } } : msg, o);
  }
  const client = new Client({ name: "understudy-mcp-node", version: "0.0.0" });
  await client.connect(transport);
  return { client, transport, negotiated: seen.negotiated };
}

async function withClient(kind, url, opts, fn) {
  const c = await open(kind, url, opts);
  try {
    return await fn(c);
  } finally {
    await c.client.close();
  }
}

/** A fetch that sends each request to the next of `bases` in turn (path and query kept). */
function roundRobin(bases, pick) {
  let n = 0;
  const log = [];
  const f = (input, init = {}) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const method = init.method ?? (input instanceof Request ? input.method : "GET");
    const target = new URL(pick ? pick(method) : bases[n++ % bases.length]);
    url.protocol = target.protocol;
    url.host = target.host;
    log.push({ method, base: target.origin, path: url.pathname + url.search });
    return fetch(url, init);
  };
  f.log = log;
  return f;
}

function assertTools(tools) {
  const byName = Object.fromEntries(tools.map((t) => [t.name, t]));
  for (const name of ["get_invoice_ledger", "get_weather"]) {
    assert.ok(byName[name], `tools/list lacks ${name}: ${tools.map((t) => t.name)}`);
    assert.equal(byName[name].inputSchema.type, "object");
  }
  assert.equal(byName.get_invoice_ledger.description, "List a customer's invoices.");
  assert.deepEqual(byName.get_invoice_ledger.inputSchema.required, ["customer_id"]);
  assert.deepEqual(byName.get_weather.inputSchema.properties, { city: { type: "string" } });
}

/** toolData as JSON text, and as structuredContent in every revision (SPEC §4; the field arrived
 * in 2025-06-18 and clients of earlier revisions keep or ignore it). */
function assertToolResult(result, data, negotiated) {
  assert.equal(result.isError, false);
  assert.equal(result.content.length, 1);
  assert.equal(result.content[0].type, "text");
  assert.deepEqual(JSON.parse(result.content[0].text), data);
  assert.deepEqual(result.structuredContent, data, `structuredContent in ${negotiated}`);
}

/** A schema violation: from 2025-11-25 a tool result with isError; before it, error -32602. */
async function assertViolation(client, negotiated) {
  const call = () => client.callTool({ name: "get_invoice_ledger", arguments: { limit: 0 } });
  if (negotiated >= "2025-11-25") {
    const r = await call();
    assert.equal(r.isError, true, JSON.stringify(r));
    assert.equal(r.content[0].type, "text");
    assert.match(r.content[0].text, /customer_id/, "the violations are listed");
  } else {
    await assert.rejects(call, (e) => {
      assert.ok(e instanceof McpError, String(e));
      assert.equal(e.code, ErrorCode.InvalidParams);
      assert.match(e.message, /customer_id/, "the violations are listed");
      return true;
    });
  }
}

async function basics(c) {
  assertTools((await c.client.listTools()).tools);
  assertToolResult(await c.client.callTool({ name: "get_weather", arguments: { city: "Paris" } }),
    WEATHER, c.negotiated);
  assertToolResult(await c.client.callTool({ name: "get_invoice_ledger",
    arguments: { customer_id: "cus_123", limit: 2 } }), INVOICES, c.negotiated);
  await assertViolation(c.client, c.negotiated);
}

test("streamable HTTP: initialize negotiates 2025-11-25, capabilities, tools, calls", async () => {
  await withClient("http", `${A}/mcp`, {}, async (c) => {
    assert.equal(c.negotiated, "2025-11-25");
    assert.equal(c.transport.protocolVersion, "2025-11-25");
    assert.ok(c.transport.sessionId, "initialize returned Mcp-Session-Id");
    assert.equal(c.client.getServerCapabilities()?.tools?.listChanged, true);
    assert.ok(c.client.getServerVersion()?.name, "serverInfo.name");
    await c.client.ping();
    await basics(c);
  });
});

for (const version of EARLIER.filter((v) => v >= "2025-03-26")) {
  test(`streamable HTTP: a ${version} client gets ${version} and -32602 for a schema violation`, async () => {
    await withClient("http", `${A}/mcp`, { version }, async (c) => {
      assert.equal(c.negotiated, version);
      await basics(c);
    });
  });
}

test("resources/list has the tenant state, prompts/list is empty", async () => {
  await withClient("http", `${A}/mcp`, {}, async (c) => {
    const { resources } = await c.client.listResources();
    assert.ok(resources.some((r) => r.uri === "understudy://tenant/state"), JSON.stringify(resources));
    const read = await c.client.readResource({ uri: "understudy://tenant/state" });
    assert.equal(read.contents[0].uri, "understudy://tenant/state");
    assert.deepEqual((await c.client.listPrompts()).prompts, []);
  });
});

test("streamable HTTP: tenant by /t/support/mcp path prefix, no header", async () => {
  await withClient("http", `${A}/t/support/mcp`, { headers: {} }, basics);
});

test("streamable HTTP: POST / is the same endpoint", async () => {
  await withClient("http", `${A}/`, {}, basics);
});

test("legacy SSE: connect, list, call, schema violation by negotiated version", async () => {
  await withClient("sse", `${A}/mcp/sse`, {}, async (c) => {
    assert.ok(c.negotiated, "initialize answered on the stream");
    await basics(c);
  });
});

test("legacy SSE: a 2024-11-05 client gets 2024-11-05 and -32602 for a schema violation", async () => {
  await withClient("sse", `${A}/mcp/sse`, { version: "2024-11-05" }, async (c) => {
    assert.equal(c.negotiated, "2024-11-05");
    await basics(c);
  });
});

test("legacy SSE: tenant by /t/support/mcp/sse prefix, endpoint event keeps the prefix", async () => {
  const f = roundRobin([A]);
  await withClient("sse", `${A}/t/support/mcp/sse`, { headers: {}, fetch: f }, async (c) => {
    await basics(c);
    const posts = f.log.filter((r) => r.method === "POST").map((r) => r.path);
    assert.ok(posts.length > 0);
    for (const p of posts) assert.match(p, /^\/t\/support\/mcp\/message\?sessionId=./);
  });
});

test("session rules: missing Mcp-Session-Id → 400, unknown → 404", async () => {
  const body = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/list" });
  const headers = { ...TENANT, "Content-Type": "application/json", Accept: "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-11-25" };
  const missing = await fetch(`${A}/mcp`, { method: "POST", headers, body });
  assert.equal(missing.status, 400);
  const unknown = await fetch(`${A}/mcp`, { method: "POST", body,
    headers: { ...headers, "Mcp-Session-Id": "no-such-session" } });
  assert.equal(unknown.status, 404);
});

// ------------------------------------------------------------ two gateways, one redis-server

test("two gateways: streamable HTTP requests alternate between A and B in one session", async () => {
  const f = roundRobin([A, B]);
  const c = await open("http", `${A}/mcp`, { fetch: f });
  try {
    assert.equal(c.negotiated, "2025-11-25");
    for (let i = 0; i < 2; i++) await basics(c);
    const hits = new Set(f.log.filter((r) => r.method === "POST").map((r) => r.base));
    assert.deepEqual([...hits].sort(), [A, B].sort(), "POSTs reached both gateways");
    const sid = c.transport.sessionId;
    await c.transport.terminateSession(); // DELETE, through whichever gateway is next
    for (const base of [A, B]) {
      const r = await fetch(`${base}/mcp`, { method: "POST", body: JSON.stringify({ jsonrpc: "2.0", id: 9, method: "ping" }),
        headers: { ...TENANT, "Content-Type": "application/json", Accept: "application/json, text/event-stream",
          "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25" } });
      assert.equal(r.status, 404, `ended session on ${base}`);
    }
  } finally {
    await c.client.close();
  }
});

test("two gateways: a session opened on A is used by a new transport on B", async () => {
  for (const version of [undefined, "2025-06-18"]) {
    const first = await open("http", `${A}/mcp`, { version });
    try {
      const sessionId = first.transport.sessionId;
      assert.ok(sessionId);
      const transport = new StreamableHTTPClientTransport(new URL(`${B}/mcp`),
        { requestInit: { headers: TENANT }, sessionId });
      const second = new Client({ name: "understudy-mcp-node-b", version: "0.0.0" });
      await second.connect(transport); // a transport with a session id skips initialize
      transport.setProtocolVersion(first.negotiated);
      try {
        assert.equal(transport.sessionId, sessionId);
        await basics({ client: second, transport, negotiated: first.negotiated });
      } finally {
        await second.close();
      }
    } finally {
      await first.client.close();
    }
  }
});

test("two gateways: legacy SSE stream on A, its POSTs to B", async () => {
  const f = roundRobin([A, B], (method) => (method === "GET" ? A : B));
  await withClient("sse", `${A}/mcp/sse`, { fetch: f }, async (c) => {
    await basics(c);
    assert.ok(f.log.some((r) => r.method === "GET" && r.base === A));
    assert.ok(f.log.filter((r) => r.method === "POST").every((r) => r.base === B));
  });
});

test("two gateways: a tool added through B reaches a session streaming from A as tools/list_changed", async () => {
  const tenant = `mcp_node_${Date.now()}`;
  const api = async (method, p, body) => {
    const r = await fetch(`${B}/public${p}`, { method, body: JSON.stringify(body),
      headers: { Authorization: `Bearer ${ADMIN}`, "Content-Type": "application/json" } });
    const text = await r.text();
    assert.ok(r.ok, `${method} ${p}: ${r.status} ${text}`);
    return JSON.parse(text);
  };
  await api("POST", "/tenants", { tenant_id: tenant, visibility: "global" });
  try {
    // The SDK opens the session's GET stream after notifications/initialized; the change below
    // is made once the gateway has answered that GET, so that someone is listening.
    let streaming;
    const streamOpen = new Promise((resolve) => { streaming = resolve; });
    const watch = async (input, init = {}) => {
      const r = await fetch(input, init);
      if ((init.method ?? "GET") === "GET" && r.ok) streaming();
      return r;
    };
    const c = await open("http", `${A}/mcp`, { headers: { "X-Tenant-Id": tenant }, fetch: watch });
    try {
      assert.deepEqual((await c.client.listTools()).tools, []);
      const changed = new Promise((resolve) => {
        c.client.setNotificationHandler(ToolListChangedNotificationSchema, () => resolve(true));
      });
      await streamOpen;
      await api("POST", `/tenants/${tenant}/scenarios`, { keywords: [], response: "",
        tool_name: "lookup_order", tool_description: "Find an order.", tool_data: { order: "1234" } });
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error("no notifications/tools/list_changed within 30 s")), 30_000);
      });
      await Promise.race([changed, timeout]).finally(() => clearTimeout(timer));
      const names = (await c.client.listTools()).tools.map((t) => t.name);
      assert.deepEqual(names, ["lookup_order"]);
    } finally {
      await c.client.close();
    }
  } finally {
    await fetch(`${B}/public/tenants/${tenant}`, { method: "DELETE", headers: { Authorization: `Bearer ${ADMIN}` } });
  }
});
