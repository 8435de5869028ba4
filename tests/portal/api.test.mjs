// The portal API and the audit log (SPEC §9.1–9.3), admin-token and API-key authentication.
//
//   E      embedded (manifests/), most tests: audit of MCP and LLM calls, redaction, the list
//          envelope, replay, try-it, tenant-scoped keys, 401s.
//   F      embedded with --allow-anonymous false (every call carries a key, so rows have a user):
//          a fixed set of seven calls, nothing else, so filters, export, timeseries, breakdown and
//          the dashboard can be checked against exact counts.
//   A, B   shared mode on one redis-server: the live tail across processes and the replay budget
//          shared by processes.
//   D      --audit false: nothing recorded.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import {
  TS_MS, UUID_V7, assertError, assertUnauthorized, callTool, chat, events, gatewayLogFiles, http, manifests,
  assertNoSecretInLogs, mcpClient, mintKey, mintedKeys, newAdminToken, openSse, poll, sleep, startGateway, startRedis, stopAll, waitForEvents,
} from "./harness.mjs";

const ADMIN = newAdminToken("api-admin");
const admin = { key: ADMIN };
const XRW = { "X-Requested-With": "XMLHttpRequest" };
const PARIS = { city: "Paris", temperature_c: 21 };
const OSLO = { city: "Oslo", temperature_c: 3 };
let E;
let F;
let A;
let B;
let D;

before(async () => {
  const redis = await startRedis();
  const embedded = ["--manifests", manifests, "--admin-token", ADMIN];
  const shared = ["--redis-url", redis, ...embedded];
  await Promise.all([
    (async () => { E = await startGateway("api-E", embedded); })(),
    (async () => { F = await startGateway("api-F", [...embedded, "--allow-anonymous", "false"]); })(),
    (async () => { D = await startGateway("api-noaudit", [...embedded, "--audit", "false"]); })(),
    (async () => {
      A = await startGateway("api-A", shared);
      B = await startGateway("api-B", shared);
    })(),
  ]);
});

after(stopAll);

/** A random UUIDv7-shaped id that no event has. */
function unknownV7() {
  const hex = randomBytes(16).toString("hex");
  return `${Date.now().toString(16).padStart(12, "0").slice(0, 8)}-${Date.now().toString(16).padStart(12, "0").slice(8, 12)}-7${hex.slice(0, 3)}-a${hex.slice(3, 6)}-${hex.slice(6, 18)}`;
}

async function detail(base, auth, id) {
  const r = await http(base, `/api/v1/portal/audit/events/${id}`, auth);
  assert.equal(r.status, 200, `event detail ${id}: ${r.describe()}`);
  return r.json;
}

/** Polls until the event detail answers 200 (events are written asynchronously). */
async function waitDetail(base, auth, id, ms = 5000) {
  return poll(`event ${id} on ${base}`, async () => {
    const r = await http(base, `/api/v1/portal/audit/events/${id}`, auth);
    return r.status === 200 ? r.json : false;
  }, { ms });
}

/** The request header of an event payload by name, case-insensitively: [name, value]. */
function header(payload, name) {
  const entry = Object.entries(payload?.request_headers ?? {}).find(([k]) => k.toLowerCase() === name.toLowerCase());
  assert.ok(entry, `no ${name} in request_headers: ${JSON.stringify(payload?.request_headers)}`);
  return entry;
}

function assertRedacted(payload, name) {
  const [, v] = header(payload, name);
  const values = Array.isArray(v) ? v : [v];
  assert.ok(values.length > 0 && values.every((x) => x === "[REDACTED]"), `${name} not redacted: ${JSON.stringify(v)}`);
}

/** The scenario id (`namespace/name`) of the portal tenant's scenario with this name. */
async function scenarioId(base, name) {
  const r = await http(base, "/public/tenants/portal/scenarios", admin);
  assert.equal(r.status, 200, r.describe());
  const s = r.json.scenarios.find((x) => x.id === name || x.id.endsWith(`/${name}`));
  assert.ok(s, `no scenario ${name} in ${r.text}`);
  return s.id;
}

/** The detail of the newest llm.chat event whose request holds `marker` (polled). */
function findLlmEvent(base, marker) {
  return poll(`the llm.chat event for ${JSON.stringify(marker)}`, async () => {
    for (const e of (await events(base, admin, { tool: "llm.chat", limit: 20 })).events) {
      const d = await detail(base, admin, e.id);
      if (JSON.stringify(d.payload?.request_params ?? null).includes(marker)) return d;
    }
    return false;
  });
}

/** Events newest first: ts non-increasing. */
function assertNewestFirst(list, what) {
  for (let i = 1; i < list.length; i++) {
    assert.ok(list[i - 1].ts >= list[i].ts, `${what}: not newest first at ${i}: ${list[i - 1].ts} then ${list[i].ts}`);
  }
}

describe("portal basics", () => {
  it("me: the admin token and an API key", async () => {
    const r = await http(E.base, "/api/v1/portal/me", admin);
    assert.equal(r.status, 200, r.describe());
    assert.equal(r.json.auth_type, "admin_token");
    assert.equal(r.json.role, "admin");
    assert.equal(r.json.subject, "@admin");
    const k = await mintKey(E.base, ADMIN, { name: "basics-viewer", role: "viewer", tenant: "other", identity: "basics-vi" });
    const m = await http(E.base, "/api/v1/portal/me", { key: k.plaintext });
    assert.equal(m.status, 200, m.describe());
    assert.equal(m.json.subject, "basics-vi");
    assert.equal(m.json.auth_type, "api_key");
    assert.equal(m.json.role, "viewer");
    assert.equal(m.json.tenant, "other");
    assert.equal(m.json.key_name, "basics-viewer");
    const bearer = await http(E.base, "/api/v1/portal/me", { bearer: k.plaintext });
    assert.equal(bearer.json?.subject, "basics-vi", `a key as Bearer: ${bearer.describe()}`);
  });

  it("server: mode and store, OIDC off, no secret in it", async () => {
    const e = await http(E.base, "/api/v1/portal/server", admin);
    assert.equal(e.status, 200, e.describe());
    assert.equal(e.json.name, "understudy");
    assert.equal(typeof e.json.version, "string");
    assert.equal(e.json.mode, "embedded");
    assert.equal(e.json.store, "memory");
    assert.equal(e.json.oidc, null);
    assert.equal(typeof e.json.config, "object");
    assert.ok(!e.text.includes(ADMIN), "the admin token is in /server");
    const a = await http(A.base, "/api/v1/portal/server", admin);
    assert.equal(a.json?.mode, "shared", a.describe());
    assert.equal(a.json.store, "redis");
    assert.ok(!a.text.includes(ADMIN), "the admin token is in /server (shared)");
  });

  it("instructions and tools of a tenant", async () => {
    const ins = await http(E.base, "/api/v1/portal/instructions?tenant=portal", admin);
    assert.equal(ins.status, 200, ins.describe());
    assert.deepEqual(ins.json, { tenant: "portal", instructions: "Portal test tenant: weather, lookups and a failing tool." });
    const t = await http(E.base, "/api/v1/portal/tools?tenant=portal", admin);
    assert.equal(t.status, 200, t.describe());
    assert.equal(t.json.tenant, "portal");
    const byName = Object.fromEntries(t.json.tools.map((x) => [x.name, x]));
    for (const name of ["get_weather", "lookup", "always_fails"]) {
      assert.ok(byName[name], `tools lack ${name}: ${t.text}`);
      assert.equal(byName[name].group, "tenant", `${name}.group`);
    }
    assert.equal(byName.get_weather.description, "Current weather for a city.");
    assert.deepEqual(byName.get_weather.input_schema.required, ["city"]);
    assert.ok(!byName.other_echo, "another tenant's tool is not listed");
    const byHeader = await http(E.base, "/api/v1/portal/tools", { ...admin, headers: { "X-Tenant-ID": "portal" } });
    assert.deepEqual(byHeader.json?.tools?.map((x) => x.name).sort(), t.json.tools.map((x) => x.name).sort(), byHeader.describe());
    const one = await http(E.base, "/api/v1/portal/tools/get_weather?tenant=portal", admin);
    assert.equal(one.status, 200, one.describe());
    assert.equal(one.json.name, "get_weather");
    assert.deepEqual(one.json.input_schema, byName.get_weather.input_schema);
    assertError(await http(E.base, "/api/v1/portal/tools/no_such_tool?tenant=portal", admin), 404, "not_found", "unknown tool");
  });

  it("audit/meta describes the filter surface", async () => {
    const r = await http(E.base, "/api/v1/portal/audit/meta", admin);
    assert.equal(r.status, 200, r.describe());
    assert.deepEqual([...r.json.has_keys].sort(),
      ["notifications", "replayed_from", "request_headers", "request_params", "response_error", "response_result"]);
    assert.deepEqual(r.json.json_sources, ["param", "response", "header"]);
    assert.deepEqual(r.json.replay, { burst: 5, refill_secs: 12, sustained_min: 5 });
    assert.deepEqual(r.json.export, { max_rows: 100000 });
    assert.deepEqual(r.json.breakdown_by, ["tool", "user", "success", "auth_type"]);
    assert.equal(r.json.max_limit, 1000);
    for (const s of ["mcp", "hosted", "execute", "llm", "portal-replay", "portal-tryit"]) {
      assert.ok(r.json.sources.includes(s), `sources lack ${s}: ${r.text}`);
    }
  });
});

describe("audit events of MCP and LLM calls", () => {
  it("an MCP tool call (official SDK) is an event: source mcp, tool, tenant, session, scenario, UUIDv7", async () => {
    const weather = await scenarioId(E.base, "weather");
    const before = new Date().toISOString();
    const { result, sessionId } = await callTool(E.base, "portal", "get_weather", { city: "Paris" });
    assert.deepEqual(result.structuredContent, PARIS);
    assert.ok(sessionId, "the streamable HTTP session has an id");
    const list = await waitForEvents(E.base, admin, { session: sessionId });
    assert.equal(list.total, 1, `one tools/call in that session: ${JSON.stringify(list)}`);
    const ev = list.events[0];
    assert.match(ev.id, UUID_V7, `id ${ev.id} is a UUIDv7`);
    assert.match(ev.ts, TS_MS, `ts ${ev.ts}`);
    assert.ok(ev.ts >= before.slice(0, 19), `ts ${ev.ts} is not before the call (${before})`);
    assert.equal(ev.tenant, "portal");
    assert.equal(ev.tool, "get_weather");
    assert.equal(ev.source, "mcp");
    assert.equal(ev.success, true);
    assert.equal(ev.session, sessionId);
    assert.equal(ev.user, null, "anonymous: user null");
    assert.equal(ev.auth_type, "anonymous");
    assert.equal(ev.transport, "streamable");
    assert.equal(ev.scenario, weather);
    assert.equal(ev.chaos, null);
    assert.equal(ev.error, null);
    assert.equal(typeof ev.duration_ms, "number");
    assert.ok(ev.duration_ms >= 0 && ev.duration_ms < 10_000, `duration_ms ${ev.duration_ms}`);
    assert.equal(ev.payload, undefined, "list rows are summaries (no payload)");

    const d = await detail(E.base, admin, ev.id);
    for (const k of Object.keys(ev)) assert.deepEqual(d[k], ev[k], `detail.${k} equals the summary's`);
    assert.ok(d.payload, `detail has a payload: ${JSON.stringify(d)}`);
    assert.deepEqual(d.payload.request_params, { city: "Paris" }, "request_params are the tool arguments");
    assert.deepEqual(d.payload.response_result.structuredContent, PARIS);
    assert.equal(d.payload.response_result.isError, false);
    assert.deepEqual(d.payload.response_result.content, result.content, "response_result is the CallToolResult the client got");
    const [uaName, ua] = header(d.payload, "user-agent");
    assert.equal(uaName, "User-Agent", "header names are canonical");
    assert.ok(Array.isArray(ua) && ua.every((v) => typeof v === "string"), `header values are string arrays: ${JSON.stringify(ua)}`);
    assert.equal(d.payload.replayed_from ?? null, null);
  });

  it("an LLM call is an event: tool llm.chat, source llm, payload with the request and the answer", async () => {
    const hello = await scenarioId(E.base, "hello");
    const marker = `hello audit ${randomBytes(4).toString("hex")}`;
    const r = await chat(E.base, "portal", marker);
    assert.equal(r.status, 200, r.describe());
    const ev = await findLlmEvent(E.base, marker);
    assert.match(ev.id, UUID_V7);
    assert.equal(ev.tool, "llm.chat");
    assert.equal(ev.source, "llm");
    assert.equal(ev.tenant, "portal");
    assert.equal(ev.success, true);
    assert.equal(ev.scenario, hello);
    assert.equal(ev.payload.request_params.model, "gpt-4o-mini");
    assert.ok(ev.payload.response_result, "response_result is set");
    assert.ok(JSON.stringify(ev.payload.response_result).includes("Hello from the portal tenant."),
      `response_result holds the answer: ${JSON.stringify(ev.payload.response_result)}`);
  });
});

describe("credentials never reach the audit log or the logs", () => {
  it("headers and credential-like arguments are redacted; no secret in any row, detail or log file", async () => {
    const key = await mintKey(E.base, ADMIN, { name: "redaction-editor" });
    const argSecret = `sk-arg-${randomBytes(12).toString("hex")}`;
    const customSecret = `custom-${randomBytes(12).toString("hex")}`;
    const pubSecret = `pub-${randomBytes(12).toString("hex")}`;
    const secrets = { "admin token": ADMIN, "API key": key.plaintext, "api_key argument": argSecret,
      "X-Custom-Token": customSecret, "X-Publish-Token": pubSecret };

    const { sessionId } = await callTool(E.base, "portal", "get_weather", { city: "Paris", api_key: argSecret },
      { headers: { Authorization: `Bearer ${ADMIN}`, "x-custom-token": customSecret } });
    const marker = `hello redaction ${randomBytes(4).toString("hex")}`;
    const llm = await chat(E.base, "portal", marker, { key: key.plaintext, headers: { "X-Publish-Token": pubSecret } });
    assert.equal(llm.status, 200, llm.describe());

    const mcpRow = (await waitForEvents(E.base, admin, { session: sessionId })).events[0];
    const mcp = await detail(E.base, admin, mcpRow.id);
    assertRedacted(mcp.payload, "Authorization");
    assertRedacted(mcp.payload, "X-Custom-Token");
    assert.equal(header(mcp.payload, "X-Custom-Token")[0], "X-Custom-Token", "canonical header name");
    assert.equal(mcp.payload.request_params.api_key, "[REDACTED]", JSON.stringify(mcp.payload.request_params));
    assert.equal(mcp.payload.request_params.city, "Paris", "other arguments are kept");
    const llmRow = await findLlmEvent(E.base, marker);
    assertRedacted(llmRow.payload, "X-API-Key");
    assertRedacted(llmRow.payload, "X-Publish-Token");

    const exp = await http(E.base, "/api/v1/portal/audit/export?format=jsonl", admin);
    assert.equal(exp.status, 200, exp.describe());
    const rows = exp.text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
    assert.ok(rows.some((r) => r.id === mcpRow.id) && rows.some((r) => r.id === llmRow.id), "the export holds both rows");
    let everything = exp.text;
    for (const r of rows) everything += (await http(E.base, `/api/v1/portal/audit/events/${r.id}`, admin)).text;
    await sleep(300); // the gateways' output reaches the log files
    const logs = gatewayLogFiles().map((f) => [f, readFileSync(f, "utf8")]);
    for (const [what, secret] of Object.entries(secrets)) {
      assert.ok(!everything.includes(secret), `the ${what} is in the audit log (export or a detail)`);
      for (const [f, text] of logs) assert.ok(!text.includes(secret), `the ${what} is in the gateway log ${f}`);
    }
  });
});

describe("the list envelope and ids", () => {
  it("{events,total,limit,offset}, newest first, limit default 50, clamp 1000, bad limit 400, offset", async () => {
    for (let i = 0; i < 3; i++) await callTool(E.base, "portal", "lookup", { n: i });
    await waitForEvents(E.base, admin, { tool: "lookup" }, 3);
    const r = await http(E.base, "/api/v1/portal/audit/events", admin);
    assert.equal(r.status, 200, r.describe());
    assert.deepEqual(Object.keys(r.json).sort(), ["events", "limit", "offset", "total"]);
    assert.equal(r.json.limit, 50);
    assert.equal(r.json.offset, 0);
    assert.ok(r.json.total >= r.json.events.length && r.json.events.length >= 3, r.text.slice(0, 500));
    assertNewestFirst(r.json.events, "audit/events");
    const clamped = await events(E.base, admin, { limit: 5000 });
    assert.equal(clamped.limit, 1000, "limit > 1000 clamps to 1000");
    assertError(await http(E.base, "/api/v1/portal/audit/events?limit=abc", admin), 400, "invalid_input", "limit=abc");
    const all = await events(E.base, admin, { tool: "lookup" });
    const second = await events(E.base, admin, { tool: "lookup", limit: 1, offset: 1 });
    assert.equal(second.limit, 1);
    assert.equal(second.offset, 1);
    assert.equal(second.total, all.total, "total counts every match, not the page");
    assert.deepEqual(second.events.map((e) => e.id), [all.events[1].id]);
  });

  it("detail: a non-UUID id is 400, an unknown UUID 404", async () => {
    assertError(await http(E.base, "/api/v1/portal/audit/events/not-a-uuid", admin), 400, "invalid_input", "non-UUID");
    assertError(await http(E.base, `/api/v1/portal/audit/events/${unknownV7()}`, admin), 404, "not_found", "unknown UUID");
    assertError(await http(E.base, `/api/v1/portal/audit/events/${randomUUID()}`, admin), 404, "not_found", "unknown UUIDv4");
  });
});

describe("filters, export and aggregates on a fixed set of calls", () => {
  // F: allow-anonymous off, only these seven calls, 30 ms apart.
  const seed = {};
  let K1;
  let K2;
  let all;
  const ids = (list) => list.events.map((e) => e.id).sort();
  const want = (...names) => names.map((n) => seed[n].id).sort();
  async function expect(query, names, what = new URLSearchParams(query).toString()) {
    const list = await events(F.base, admin, query);
    assert.deepEqual(ids(list), want(...names), `${what}: got ${JSON.stringify(list.events.map((e) => [e.tool, e.user, e.session]))}`);
    assert.equal(list.total, names.length, `${what}: total`);
    return list;
  }

  before(async () => {
    K1 = await mintKey(F.base, ADMIN, { name: "filter-ed-key", identity: "filter-ed" });
    K2 = await mintKey(F.base, ADMIN, { name: "filter-zed-key", identity: "filter-zed" });
    const s1 = await mcpClient(F.base, "portal", { headers: { "X-API-Key": K1.plaintext } });
    const calls = [
      ["e1", "get_weather", { city: "Paris" }],
      ["e2", "lookup", { n: 2, flag: true, code: "200", nested: { a: { b: 1 } } }],
      ["e3", "lookup", { n: "2", flag: false }],
      ["e4", "always_fails", {}],
    ];
    for (const [, name, args] of calls) {
      await s1.client.callTool({ name, arguments: args });
      await sleep(30);
    }
    const session1 = s1.sessionId;
    await s1.close();
    const s2 = await mcpClient(F.base, "portal",
      // Lower-case on the wire: the recorded names must be canonical all the same.
      { headers: { "X-API-Key": K2.plaintext, "user-agent": "portal-tests/1.0", "x-foo": "bar" } });
    assert.deepEqual((await s2.client.callTool({ name: "get_weather", arguments: { city: "Oslo" } })).structuredContent, OSLO);
    const session2 = s2.sessionId;
    await s2.close();
    await sleep(30);
    const { sessionId: session3 } = await callTool(F.base, "other", "other_echo", { ping: 1 },
      { headers: { "X-API-Key": K1.plaintext } });
    await sleep(30);
    const llm = await chat(F.base, "portal", "hello filters", { key: K2.plaintext });
    assert.equal(llm.status, 200, llm.describe());
    all = await waitForEvents(F.base, admin, { limit: 100 }, 7);
    await sleep(300);
    all = await events(F.base, admin, { limit: 100 });
    assert.equal(all.total, 7, `F holds exactly the seven seeded calls: ${JSON.stringify(all.events.map((e) => [e.tool, e.source]))}`);
    const s1rows = all.events.filter((e) => e.session === session1).sort((x, y) => (x.ts < y.ts ? -1 : 1));
    assert.deepEqual(s1rows.map((e) => e.tool), calls.map((c) => c[1]), "session 1's four calls in order");
    s1rows.forEach((e, i) => { seed[calls[i][0]] = e; });
    seed.e5 = all.events.find((e) => e.session === session2);
    seed.e6 = all.events.find((e) => e.session === session3);
    seed.e7 = all.events.find((e) => e.tool === "llm.chat");
    for (const n of ["e5", "e6", "e7"]) assert.ok(seed[n], `${n} not found in ${JSON.stringify(all.events)}`);
    seed.sessions = { session1, session2, session3 };
  });

  it("the seeded rows: users, auth types, sources, newest first", () => {
    assertNewestFirst(all.events, "F");
    assert.equal(all.events[0].id, seed.e7.id, "the LLM call was last");
    assert.equal(all.events.at(-1).id, seed.e1.id, "the first weather call was first");
    for (const n of ["e1", "e2", "e3", "e4", "e6"]) assert.equal(seed[n].user, "filter-ed", `${n}.user`);
    for (const n of ["e5", "e7"]) assert.equal(seed[n].user, "filter-zed", `${n}.user`);
    for (const e of all.events) assert.equal(e.auth_type, "api_key", `${e.tool}.auth_type`);
    assert.equal(seed.e4.success, false, "a toolError result is a failure");
    assert.equal(seed.e7.source, "llm");
    assert.equal(seed.e6.tenant, "other");
  });

  it("a failing tool's row carries its error text", () => {
    assert.equal(typeof seed.e4.error, "string", JSON.stringify(seed.e4));
    assert.ok(seed.e4.error.includes("the backend is down"), JSON.stringify(seed.e4));
  });

  it("tool, user, session, success, source, tenant, q — and combined (AND)", async () => {
    await expect({ tool: "lookup" }, ["e2", "e3"]);
    await expect({ user: "filter-zed" }, ["e5", "e7"]);
    await expect({ session: seed.sessions.session1 }, ["e1", "e2", "e3", "e4"]);
    await expect({ success: "false" }, ["e4"]);
    await expect({ success: "true" }, ["e1", "e2", "e3", "e5", "e6", "e7"]);
    assertError(await http(F.base, "/api/v1/portal/audit/events?success=maybe", admin), 400, "invalid_input", "success=maybe");
    await expect({ source: "llm" }, ["e7"]);
    await expect({ source: "mcp" }, ["e1", "e2", "e3", "e4", "e5", "e6"]);
    await expect({ tenant: "other" }, ["e6"]);
    await expect({ q: "LOOK" }, ["e2", "e3"], "q=LOOK (case-insensitive, tool)");
    await expect({ q: "Filter-Zed" }, ["e5", "e7"], "q=Filter-Zed (user)");
    await expect({ q: "backend is DOWN" }, ["e4"], "q on the error text");
    await expect({ tool: "get_weather", user: "filter-zed" }, ["e5"]);
    await expect({ tool: "get_weather", user: "nobody" }, []);
  });

  it("from/to bound the window; bad times and from > to are 400", async () => {
    const mid = (a, b) => new Date((Date.parse(a.ts) + Date.parse(b.ts)) / 2).toISOString();
    assert.ok(seed.e4.ts < seed.e5.ts && seed.e2.ts < seed.e3.ts, "the seeded calls have distinct times");
    await expect({ from: mid(seed.e4, seed.e5) }, ["e5", "e6", "e7"], "from between e4 and e5");
    await expect({ to: mid(seed.e2, seed.e3) }, ["e1", "e2"], "to between e2 and e3");
    await expect({ from: mid(seed.e2, seed.e3), to: mid(seed.e4, seed.e5) }, ["e3", "e4"], "from and to");
    await expect({ from: new Date(Date.now() + 3600_000).toISOString() }, [], "from in the future");
    for (const [q, what] of [["from=yesterday", "bad from"], ["to=2026-13-45T00:00:00Z", "bad to"],
      [`from=${new Date().toISOString()}&to=${new Date(Date.now() - 3600_000).toISOString()}`, "from > to"]]) {
      assertError(await http(F.base, `/api/v1/portal/audit/events?${q}`, admin), 400, "invalid_input", what);
    }
  });

  it("param.*: bare values are typed, quoted values are strings, nested paths", async () => {
    await expect({ "param.n": "2" }, ["e2"], "param.n=2 (number)");
    await expect({ "param.n": "\"2\"" }, ["e3"], "param.n=\"2\" (string)");
    await expect({ "param.flag": "true" }, ["e2"], "param.flag=true");
    await expect({ "param.flag": "false" }, ["e3"], "param.flag=false");
    await expect({ "param.code": "\"200\"" }, ["e2"], "param.code=\"200\"");
    await expect({ "param.code": "200" }, [], "param.code=200 (a number: no match)");
    await expect({ "param.nested.a.b": "1" }, ["e2"], "param.nested.a.b=1");
    await expect({ "param.city": "Oslo" }, ["e5"], "param.city=Oslo");
    await expect({ "param.n": "2", "param.flag": "true" }, ["e2"], "two param filters");
    await expect({ "param.n": "2", "param.flag": "false" }, [], "two param filters, no row has both");
  });

  it("response.*: the CallToolResult", async () => {
    await expect({ "response.isError": "true" }, ["e4"], "response.isError=true");
    await expect({ "response.structuredContent.temperature_c": "3" }, ["e5"], "response.structuredContent.temperature_c=3");
    await expect({ "response.structuredContent.city": "Paris" }, ["e1"], "response.structuredContent.city=Paris");
  });

  it("header.*: names canonicalised, values strings", async () => {
    const d = await detail(F.base, admin, seed.e5.id);
    assert.ok(Object.keys(d.payload.request_headers).includes("X-Foo"), `sent as x-foo, recorded as X-Foo: ${JSON.stringify(d.payload.request_headers)}`);
    assert.deepEqual(d.payload.request_headers["User-Agent"], ["portal-tests/1.0"]);
    const upper = await expect({ "header.User-Agent": "portal-tests/1.0" }, ["e5"], "header.User-Agent");
    const lower = await expect({ "header.user-agent": "portal-tests/1.0" }, ["e5"], "header.user-agent");
    assert.deepEqual(ids(lower), ids(upper));
    await expect({ "header.x-foo": "bar" }, ["e5"], "header.x-foo=bar");
  });

  it("dropped filters: header paths with a dot, empty path segments, unknown has= columns", async () => {
    const every = ["e1", "e2", "e3", "e4", "e5", "e6", "e7"];
    await expect({ "header.X-Foo.bar": "bar" }, every, "header.X-Foo.bar (dropped)");
    await expect({ "param.a..b": "1" }, every, "param.a..b (dropped)");
    await expect({ has: "bogus" }, every, "has=bogus (dropped)");
    await expect({ "param.a..b": "1", tool: "lookup" }, ["e2", "e3"], "a dropped filter leaves the others");
  });

  it("has=<column>", async () => {
    await expect({ has: "request_params" }, ["e1", "e2", "e3", "e4", "e5", "e6", "e7"].filter((n) => n !== "e4"),
      "has=request_params (always_fails was called with {}, an empty object)");
    await expect({ has: "replayed_from" }, [], "has=replayed_from");
    const errs = await events(F.base, admin, { has: "response_error" });
    assert.ok(!errs.events.some((e) => e.success), `has=response_error lists only failures: ${JSON.stringify(errs.events)}`);
    for (const e of errs.events) {
      const d = await detail(F.base, admin, e.id);
      assert.ok(d.payload?.response_error, `row ${e.id} listed by has=response_error has none: ${JSON.stringify(d.payload)}`);
    }
  });

  it("export: NDJSON, one summary row per line, the same filters; format=csv is 400", async () => {
    const r = await http(F.base, "/api/v1/portal/audit/export", admin);
    assert.equal(r.status, 200, r.describe());
    assert.match(r.headers.get("content-type") ?? "", /^application\/x-ndjson/);
    assert.ok(r.text.endsWith("\n"), "every line ends with a newline");
    const lines = r.text.split("\n").filter(Boolean);
    assert.equal(lines.length, 7, r.text);
    const rows = lines.map((l, i) => {
      try {
        return JSON.parse(l);
      } catch {
        assert.fail(`line ${i + 1} is not JSON: ${l}`);
      }
    });
    assert.deepEqual(rows.map((x) => x.id).sort(), ids(all));
    for (const row of rows) assert.equal(row.payload, undefined, "export rows are summaries");
    const lookups = await http(F.base, "/api/v1/portal/audit/export?format=jsonl&tool=lookup&param.n=2", admin);
    assert.equal(lookups.status, 200, lookups.describe());
    assert.deepEqual(lookups.text.split("\n").filter(Boolean).map((l) => JSON.parse(l).id), [seed.e2.id]);
    assertError(await http(F.base, "/api/v1/portal/audit/export?format=csv", admin), 400, "invalid_input", "format=csv");
  });

  it("timeseries: every bucket, oldest first, counts and errors add up; bad buckets are 400", async () => {
    const from = new Date(Date.now() - 10 * 60_000).toISOString();
    const to = new Date(Date.now() + 60_000).toISOString();
    const r = await http(F.base, `/api/v1/portal/audit/timeseries?from=${from}&to=${to}&bucket=1m`, admin);
    assert.equal(r.status, 200, r.describe());
    assert.equal(r.json.bucket_seconds, 60);
    assert.ok(r.json.buckets.length >= 11 && r.json.buckets.length <= 12, `11 minutes in 1m buckets: ${r.json.buckets.length}`);
    for (let i = 1; i < r.json.buckets.length; i++) {
      assert.equal(Date.parse(r.json.buckets[i].ts) - Date.parse(r.json.buckets[i - 1].ts), 60_000, `bucket ${i} follows ${i - 1}`);
    }
    assert.equal(r.json.buckets.reduce((n, b) => n + b.count, 0), 7, "counts add up to the seven events");
    assert.equal(r.json.buckets.reduce((n, b) => n + b.errors, 0), 1, "one failure");
    assert.ok(r.json.buckets.some((b) => b.count === 0), "empty buckets are listed");
    const dflt = await http(F.base, "/api/v1/portal/audit/timeseries", admin);
    assert.equal(dflt.status, 200, dflt.describe());
    assert.equal(dflt.json.bucket_seconds, 60, "default bucket 1m");
    assert.ok(dflt.json.buckets.length >= 60 && dflt.json.buckets.length <= 61, `default window 1 h: ${dflt.json.buckets.length}`);
    assert.equal(dflt.json.buckets.reduce((n, b) => n + b.count, 0), 7);
    const twoDays = new Date(Date.now() - 2 * 86400_000).toISOString();
    for (const [q, what] of [["bucket=5x", "unparsable bucket"], ["bucket=1ms", "bucket < 1s"], ["bucket=500ms", "bucket < 1s"],
      [`from=${twoDays}&bucket=1m`, "more than 1000 buckets"], ["bucket=1s", "3600 buckets in the default hour"]]) {
      assertError(await http(F.base, `/api/v1/portal/audit/timeseries?${q}`, admin), 400, "invalid_input", what);
    }
  });

  it("breakdown by tool, success, user, auth_type; by=bogus is 400", async () => {
    const rows = async (by) => {
      const r = await http(F.base, `/api/v1/portal/audit/breakdown?by=${by}`, admin);
      assert.equal(r.status, 200, r.describe());
      assert.equal(r.json.by, by);
      for (let i = 1; i < r.json.rows.length; i++) {
        assert.ok(r.json.rows[i - 1].count >= r.json.rows[i].count, `by=${by}: count desc: ${r.text}`);
      }
      return Object.fromEntries(r.json.rows.map((x) => [String(x.key), [x.count, x.errors]]));
    };
    assert.deepEqual(await rows("tool"), {
      get_weather: [2, 0], lookup: [2, 0], always_fails: [1, 1], other_echo: [1, 0], "llm.chat": [1, 0],
    });
    assert.deepEqual(await rows("success"), { true: [6, 0], false: [1, 1] });
    assert.deepEqual(await rows("user"), { "filter-ed": [5, 1], "filter-zed": [2, 0] });
    assert.deepEqual(await rows("auth_type"), { api_key: [7, 1] });
    assertError(await http(F.base, "/api/v1/portal/audit/breakdown?by=bogus", admin), 400, "invalid_input", "by=bogus");
  });

  it("dashboard: the last hour", async () => {
    const r = await http(F.base, "/api/v1/portal/dashboard", admin);
    assert.equal(r.status, 200, r.describe());
    const d = r.json;
    assert.equal(d.window_seconds, 3600);
    assert.equal(d.total, 7);
    assert.equal(d.errors, 1);
    assert.ok(Math.abs(d.error_rate - 1 / 7) < 1e-6, `error_rate ${d.error_rate}`);
    assert.ok(typeof d.p50_ms === "number" && typeof d.p95_ms === "number" && d.p50_ms >= 0 && d.p50_ms <= d.p95_ms,
      `p50 ${d.p50_ms} ≤ p95 ${d.p95_ms}`);
    const n = (v) => (typeof v === "number" ? v : v?.count);
    assert.equal(n(d.by_source.mcp), 6, `by_source: ${JSON.stringify(d.by_source)}`);
    assert.equal(n(d.by_source.llm), 1, `by_source: ${JSON.stringify(d.by_source)}`);
    const top = Object.fromEntries(d.top_tools.map((t) => [t.key, t]));
    assert.equal(top.get_weather?.count, 2, JSON.stringify(d.top_tools));
    assert.equal(top.always_fails?.errors, 1, JSON.stringify(d.top_tools));
    assert.deepEqual(d.recent.map((e) => e.id), all.events.map((e) => e.id), "recent: the newest (≤ 20), newest first");
    assert.ok(Number.isInteger(d.tenants) && d.tenants >= 2, `tenants ${d.tenants}`);
  });
});

describe("live tail (SSE) across processes", () => {
  it("`: connected` first, X-Accel-Buffering: no, and a call on B arrives on a stream opened on A", async () => {
    const stream = await openSse(`${A.base}/api/v1/portal/audit/stream?tool=get_weather`, { "X-API-Key": ADMIN });
    try {
      assert.equal(stream.status, 200);
      assert.match(stream.headers.get("content-type") ?? "", /^text\/event-stream/);
      assert.equal(stream.headers.get("x-accel-buffering"), "no");
      const first = await stream.next(() => true, 5000);
      assert.ok(first.comment.includes("connected") && !first.event, `first frame: ${JSON.stringify(first.raw)}`);
      await callTool(B.base, "portal", "lookup", { n: 1 }); // filtered out
      const { sessionId } = await callTool(B.base, "portal", "get_weather", { city: "Oslo" });
      const frame = await stream.next((f) => f.event === "audit" && JSON.parse(f.data).session === sessionId, 10_000);
      const ev = JSON.parse(frame.data);
      assert.match(ev.id, UUID_V7);
      assert.equal(ev.tool, "get_weather");
      assert.equal(ev.tenant, "portal");
      assert.equal(ev.source, "mcp");
      const seen = stream.frames.filter((f) => f.event === "audit").map((f) => JSON.parse(f.data).tool);
      assert.ok(seen.every((t) => t === "get_weather"), `the stream's filter holds: ${seen}`);
    } finally {
      await stream.close();
    }
  });
});

describe("replay", () => {
  it("needs X-Requested-With and the editor role; LLM rows 400; a tool call replays as a portal-replay row", async () => {
    const editor = await mintKey(E.base, ADMIN, { name: "replay-editor", role: "editor" });
    const viewer = await mintKey(E.base, ADMIN, { name: "replay-viewer", role: "viewer" });
    const { sessionId } = await callTool(E.base, "portal", "get_weather", { city: "Oslo" });
    const orig = (await waitForEvents(E.base, admin, { session: sessionId })).events[0];
    const replay = (id, auth, headers = XRW) => http(E.base, `/api/v1/portal/audit/events/${id}/replay`,
      { method: "POST", ...auth, headers });

    assertError(await replay(orig.id, { key: editor.plaintext }, {}), 403, "forbidden", "without X-Requested-With");
    assertError(await replay(orig.id, { key: viewer.plaintext }), 403, "forbidden", "a viewer");
    assertError(await replay("not-a-uuid", { key: editor.plaintext }), 400, "invalid_input", "non-UUID");
    assertError(await replay(unknownV7(), { key: editor.plaintext }), 404, "not_found", "unknown event");
    const marker = `hello replay ${randomBytes(4).toString("hex")}`;
    assert.equal((await chat(E.base, "portal", marker)).status, 200);
    const llm = await findLlmEvent(E.base, marker);
    const no = await replay(llm.id, { key: editor.plaintext });
    assert.equal(no.status, 400, `an LLM row is not replayable: ${no.describe()}`);

    const r = await replay(orig.id, { key: editor.plaintext });
    assert.equal(r.status, 200, r.describe());
    assert.match(r.json.event_id, UUID_V7);
    assert.notEqual(r.json.event_id, orig.id);
    assert.equal(r.json.replayed_from, orig.id);
    assert.deepEqual(r.json.result.structuredContent, OSLO);
    assert.equal(r.json.result.isError, false);
    const row = await waitDetail(E.base, admin, r.json.event_id);
    assert.equal(row.source, "portal-replay");
    assert.equal(row.tool, "get_weather");
    assert.equal(row.tenant, "portal");
    assert.equal(row.user, editor.identity);
    assert.equal(row.auth_type, "api_key");
    assert.equal(row.success, true);
    assert.equal(row.payload.replayed_from, orig.id);
    assert.deepEqual(row.payload.request_params, { city: "Oslo" });
    await expectListed(E.base, { has: "replayed_from", source: "portal-replay" }, r.json.event_id);
  });

  it("budget: 400s spend nothing, 5 replays, then 429 with Retry-After — on the other process too", async () => {
    const key = await mintKey(A.base, ADMIN, { name: `budget-${randomBytes(3).toString("hex")}`, role: "editor" });
    await poll("the new key known on B", async () => (await http(B.base, "/api/v1/portal/me", { key: key.plaintext })).status === 200,
      { ms: 2000 });
    const replay = (base, id) => http(base, `/api/v1/portal/audit/events/${id}/replay`,
      { method: "POST", key: key.plaintext, headers: XRW });

    const { sessionId } = await callTool(A.base, "portal", "get_weather", { city: "Paris" });
    const orig = (await waitForEvents(A.base, admin, { session: sessionId })).events[0];
    const secret = await callTool(A.base, "portal", "get_weather", { city: "Paris", api_key: "sk-not-replayable" });
    const redacted = (await waitForEvents(A.base, admin, { session: secret.sessionId })).events[0];
    const marker = `hello budget ${randomBytes(4).toString("hex")}`;
    assert.equal((await chat(A.base, "portal", marker)).status, 200);
    const llm = await findLlmEvent(A.base, marker);
    for (const id of [orig.id, redacted.id, llm.id]) await waitDetail(B.base, admin, id);

    for (let i = 0; i < 3; i++) {
      const a = await replay(A.base, llm.id);
      assert.equal(a.status, 400, `LLM row, try ${i + 1} on A: ${a.describe()}`);
      const b = await replay(B.base, redacted.id);
      assert.equal(b.status, 400, `redacted row, try ${i + 1} on B: ${b.describe()}`);
    }
    for (let i = 1; i <= 5; i++) {
      const r = await replay(A.base, orig.id);
      assert.equal(r.status, 200, `replay ${i} of 5 on A (the 400s must not have spent budget): ${r.describe()}`);
      assert.equal(r.json.replayed_from, orig.id);
    }
    for (const [base, what] of [[B.base, "6th, on B"], [A.base, "7th, on A"]]) {
      const r = await replay(base, orig.id);
      assertError(r, 429, "rate_limited", what);
      const after = Number(r.headers.get("retry-after"));
      assert.ok(Number.isInteger(after) && after >= 1 && after <= 12, `${what}: Retry-After ${r.headers.get("retry-after")}`);
    }
  });
});

/** Asserts the event `id` is among those `query` lists on `base`. */
async function expectListed(base, query, id) {
  const list = await events(base, admin, query);
  assert.ok(list.events.some((e) => e.id === id), `${id} not listed by ${new URLSearchParams(query)}: ${JSON.stringify(list.events)}`);
}

describe("try-it", () => {
  it("POST /api/v1/admin/tryit/{tool} answers the CallToolResult and is audited as portal-tryit", async () => {
    const editor = await mintKey(E.base, ADMIN, { name: "tryit-editor", role: "editor", identity: "tryit-ed" });
    const viewer = await mintKey(E.base, ADMIN, { name: "tryit-viewer", role: "viewer" });
    const tryit = (name, auth, args) => http(E.base, `/api/v1/admin/tryit/${name}`, {
      method: "POST", ...auth, headers: { ...XRW, "X-Tenant-ID": "portal" }, body: { arguments: args },
    });
    const r = await tryit("get_weather", { key: editor.plaintext }, { city: "Oslo" });
    assert.equal(r.status, 200, r.describe());
    assert.equal(r.json.isError, false);
    assert.deepEqual(r.json.structuredContent, OSLO);
    assert.equal(r.json.content[0].type, "text");
    assert.deepEqual(JSON.parse(r.json.content[0].text), OSLO);
    const row = (await waitForEvents(E.base, admin, { source: "portal-tryit", user: "tryit-ed" })).events[0];
    assert.equal(row.tool, "get_weather");
    assert.equal(row.tenant, "portal");
    assert.equal(row.success, true);
    assert.equal(row.auth_type, "api_key");
    assert.match(row.id, UUID_V7);
    assertError(await tryit("no_such_tool", { key: editor.plaintext }, {}), 404, "not_found", "unknown tool");
    assertError(await tryit("get_weather", { key: viewer.plaintext }, { city: "Oslo" }), 403, "forbidden", "a viewer");
    assertUnauthorized(await tryit("get_weather", {}, { city: "Oslo" }), E.base, "no credential");
  });
});

describe("tenant-scoped keys", () => {
  it("see their tenant's events only", async () => {
    const scoped = await mintKey(E.base, ADMIN, { name: "scoped-other", role: "viewer", tenant: "other" });
    const auth = { key: scoped.plaintext };
    const mine = await callTool(E.base, "other", "other_echo", { ping: 2 });
    const theirs = await callTool(E.base, "portal", "get_weather", { city: "Paris" });
    const mineRow = (await waitForEvents(E.base, admin, { session: mine.sessionId })).events[0];
    const theirRow = (await waitForEvents(E.base, admin, { session: theirs.sessionId })).events[0];

    const list = await events(E.base, auth, { limit: 1000 });
    assert.ok(list.events.length > 0 && list.events.every((e) => e.tenant === "other"),
      `a key scoped to other sees other only: ${JSON.stringify(list.events.map((e) => e.tenant))}`);
    assert.ok(list.events.some((e) => e.id === mineRow.id), "its tenant's row is listed");
    assert.equal(list.total, (await events(E.base, admin, { tenant: "other", limit: 1000 })).total, "the same as the admin's tenant=other");
    const asked = await http(E.base, "/api/v1/portal/audit/events?tenant=portal", auth);
    assert.ok(asked.status === 403 || (asked.status === 200 && asked.json.total === 0),
      `asking for another tenant shows nothing: ${asked.describe()}`);
    const d = await http(E.base, `/api/v1/portal/audit/events/${theirRow.id}`, auth);
    assert.ok(d.status === 403 || d.status === 404, `another tenant's event detail: ${d.describe()}`);
    const exp = await http(E.base, "/api/v1/portal/audit/export", auth);
    assert.equal(exp.status, 200, exp.describe());
    const tenants = new Set(exp.text.split("\n").filter(Boolean).map((l) => JSON.parse(l).tenant));
    assert.deepEqual([...tenants], ["other"], "the export too");
  });
});

describe("authentication", () => {
  const id = "0190f0f0-0000-7000-8000-000000000000";
  const routes = [
    ["GET", "/api/v1/portal/me"], ["GET", "/api/v1/portal/server"], ["GET", "/api/v1/portal/instructions?tenant=portal"],
    ["GET", "/api/v1/portal/tools?tenant=portal"], ["GET", "/api/v1/portal/tools/get_weather?tenant=portal"],
    ["GET", "/api/v1/portal/audit/meta"], ["GET", "/api/v1/portal/audit/events"], ["GET", `/api/v1/portal/audit/events/${id}`],
    ["POST", `/api/v1/portal/audit/events/${id}/replay`], ["GET", "/api/v1/portal/audit/export"],
    ["GET", "/api/v1/portal/audit/stream"], ["GET", "/api/v1/portal/audit/timeseries"],
    ["GET", "/api/v1/portal/audit/breakdown?by=tool"], ["GET", "/api/v1/portal/dashboard"], ["GET", "/api/v1/portal/wellknown"],
  ];

  it("every portal route is 401 without credentials, with WWW-Authenticate", async () => {
    for (const [method, p] of routes) {
      assertUnauthorized(await http(E.base, p, { method, headers: XRW, timeoutMs: 5000 }), E.base, `${method} ${p}`);
    }
  });

  it("a bad key, a revoked key and a bad bearer are 401", async () => {
    const k = await mintKey(E.base, ADMIN, { name: "to-revoke", role: "viewer" });
    assert.equal((await http(E.base, "/api/v1/portal/me", { key: k.plaintext })).status, 200);
    assert.equal((await http(E.base, "/api/v1/admin/keys/to-revoke", { method: "DELETE", ...admin })).status, 204);
    for (const [what, auth] of [["unknown usk_ key", { key: `usk_${"0".repeat(64)}` }], ["revoked key", { key: k.plaintext }],
      ["bad bearer", { bearer: "not-a-key" }], ["a JWT without OIDC configured", { bearer: "eyJhbGciOiJSUzI1NiJ9.e30.c2ln" }]]) {
      for (const p of ["/api/v1/portal/me", "/api/v1/portal/audit/events"]) {
        assertUnauthorized(await http(E.base, p, auth), E.base, `${what} on ${p}`);
      }
    }
  });
});

describe("--audit false", () => {
  it("records nothing", async () => {
    await callTool(D.base, "portal", "get_weather", { city: "Paris" });
    assert.equal((await chat(D.base, "portal", "hello")).status, 200);
    const tryit = await http(D.base, "/api/v1/admin/tryit/get_weather", {
      method: "POST", ...admin, headers: { ...XRW, "X-Tenant-ID": "portal" }, body: { arguments: { city: "Paris" } },
    });
    assert.equal(tryit.status, 200, tryit.describe());
    await sleep(1500); // audit writes are asynchronous: give them time to (not) land
    const list = await events(D.base, admin);
    assert.equal(list.total, 0, JSON.stringify(list));
    assert.deepEqual(list.events, []);
    const dash = await http(D.base, "/api/v1/portal/dashboard", admin);
    assert.equal(dash.json?.total, 0, dash.describe());
  });
});

// Last: everything the suite sent is in the logs and the audit logs by now.
describe("channel tokens a tool returns", () => {
  it("never reach an audit row, not even inside the result's text copy", async () => {
    // The channel MCP server's create_channel answers the publish token twice: in
    // structuredContent and as JSON text in content[0].text.
    const body = { jsonrpc: "2.0", id: 1, method: "tools/call",
      params: { name: "create_channel", arguments: { name: "audit-redaction", visibility: "private" } } };
    const r = await http(E.base, "/channels/mcp", { method: "POST", body,
      headers: { accept: "application/json, text/event-stream" } });
    assert.equal(r.status, 200, r.describe());
    const token = /pub_[A-Za-z0-9_-]+/.exec(r.text)?.[0];
    assert.ok(token, `create_channel answered a publish token: ${r.text}`);
    mintedKeys.push(token);
    const rows = await waitForEvents(E.base, admin, { tool: "create_channel" }, 1);
    const detail = await http(E.base, `/api/v1/portal/audit/events/${rows.events[0].id}`, admin);
    assert.equal(detail.status, 200, detail.describe());
    assert.ok(!detail.text.includes(token), `the publish token is in the audit row: ${detail.text}`);
    assert.ok(detail.text.includes("[REDACTED]"), "the token's place says [REDACTED]");
  });
});

describe("no credential anywhere, at the end", () => {
  it("no gateway log and no audit export holds the admin token or any minted key", async () => {
    assert.ok(mintedKeys.length > 0, "no key was minted: the check would be vacuous");
    const secrets = { "admin token": ADMIN };
    mintedKeys.forEach((k, i) => { secrets[`minted key #${i + 1}`] = k; });
    for (const g of [E, F, A, B]) {
      const exp = await http(g.base, "/api/v1/portal/audit/export", admin);
      assert.equal(exp.status, 200, exp.describe());
      for (const [what, secret] of Object.entries(secrets)) {
        assert.ok(!exp.text.includes(secret), `the ${what} is in the audit export of ${g.name}`);
      }
    }
    await assertNoSecretInLogs(secrets);
  });
});
