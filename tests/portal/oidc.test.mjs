// OIDC login, the portal session cookie and OIDC bearer JWTs (SPEC §9.2, §9.4), against a real
// OpenID Provider (idp.mjs: oidc-provider in this process).
//
//   A, B   two gateway processes in shared mode on one redis-server, OIDC on (client
//          understudy-portal, secret portal-secret, extra audience `extra-aud`): login on A,
//          the session seen (and, after logout, refused) on B.
//   N      one embedded gateway without OIDC: the login route and the authorization-server
//          document are 404 there.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { generateKeyPair } from "jose";
import { CLIENT_ID, CLIENT_SECRET, loginFlow as rawLoginFlow, startIdp } from "./idp.mjs";
import {
  assertError, assertNoSecretInLogs, assertUnauthorized, findChromium, freePort, here, http, manifests, newAdminToken, poll,
  startGateway, startRedis, stopAll,
} from "./harness.mjs";

const ADMIN = newAdminToken("oidc-admin");
const XRW = { "X-Requested-With": "XMLHttpRequest" };
let idp;
let discovery;
let A;
let B;
let N;

before(async () => {
  const [pa, pb] = [await freePort(), await freePort()];
  idp = await startIdp({ redirectUris: [pa, pb].map((p) => `http://127.0.0.1:${p}/portal/auth/callback`) });
  discovery = await (await fetch(`${idp.issuer}/.well-known/openid-configuration`)).json();
  const redis = await startRedis();
  const shared = ["--redis-url", redis, "--manifests", manifests, "--admin-token", ADMIN,
    "--oidc-issuer", idp.issuer, "--oidc-client-id", CLIENT_ID, "--oidc-client-secret", CLIENT_SECRET,
    "--oidc-audience", "extra-aud"];
  [A, B, N] = await Promise.all([
    startGateway("oidc-A", shared, { port: pa }),
    startGateway("oidc-B", shared, { port: pb }),
    startGateway("oidc-none", ["--manifests", manifests, "--admin-token", ADMIN]),
  ]);
});

after(async () => {
  await stopAll();
  await idp?.stop();
});

// Every session cookie and bearer token the suite used: none may reach a gateway log.
const issued = [];

async function loginFlow(base, login, opts) {
  const flow = await rawLoginFlow(base, login, opts);
  if (flow.cookie) issued.push(flow.cookie);
  return flow;
}

async function loginViaHttp(base, login, opts) {
  const flow = await loginFlow(base, login, opts);
  assert.ok(flow.cookie, `the callback (${flow.callback.status}) set no understudy_session cookie: ${JSON.stringify(flow.setCookie)}; ` +
    `steps ${JSON.stringify(flow.steps)}`);
  return flow.cookie;
}

async function mint(claims, opts) {
  const jwt = await idp.mintJwt(claims, opts);
  issued.push(jwt);
  return jwt;
}

/** The Set-Cookie line that sets understudy_session, and its attributes by lower-case name. */
function sessionCookie(setCookie) {
  const line = setCookie.find((l) => l.startsWith("understudy_session="));
  assert.ok(line, `no Set-Cookie for understudy_session in ${JSON.stringify(setCookie)}`);
  const [pair, ...rest] = line.split(";");
  const attrs = {};
  for (const a of rest) {
    const [k, ...v] = a.trim().split("=");
    attrs[k.toLowerCase()] = v.length ? v.join("=") : true;
  }
  return { line, value: pair.slice("understudy_session=".length), attrs };
}

async function me(base, auth) {
  return http(base, "/api/v1/portal/me", auth);
}

async function assertMe(base, auth, want, what) {
  const r = await me(base, auth);
  assert.equal(r.status, 200, `${what}: ${r.describe()}`);
  for (const [k, v] of Object.entries(want)) {
    assert.deepEqual(r.json[k], v, `${what}: me.${k} in ${r.text}`);
  }
  return r.json;
}

describe("login (authorization code + PKCE)", () => {
  it("/portal/auth/login redirects to the IdP's authorization endpoint with code, PKCE S256, state and nonce", async () => {
    const r = await http(A.base, "/portal/auth/login");
    assert.equal(r.status, 302, r.describe());
    const loc = new URL(r.headers.get("location"));
    assert.equal(`${loc.origin}${loc.pathname}`, discovery.authorization_endpoint, `redirect target ${loc}`);
    const q = loc.searchParams;
    assert.equal(q.get("response_type"), "code", `${loc}`);
    assert.equal(q.get("client_id"), CLIENT_ID, `${loc}`);
    assert.equal(q.get("redirect_uri"), `${A.base}/portal/auth/callback`, `${loc}`);
    assert.ok((q.get("scope") ?? "").split(" ").includes("openid"), `scope ${q.get("scope")}`);
    assert.ok(q.get("state")?.length >= 16, `state ${q.get("state")}`);
    assert.ok(q.get("nonce")?.length >= 16, `nonce ${q.get("nonce")}`);
    assert.match(q.get("code_challenge") ?? "", /^[A-Za-z0-9_-]{43}$/, "an S256 challenge is 43 base64url characters");
    assert.equal(q.get("code_challenge_method"), "S256");
    const again = new URL((await http(A.base, "/portal/auth/login")).headers.get("location"));
    assert.notEqual(again.searchParams.get("state"), q.get("state"), "a fresh state per login");
    assert.notEqual(again.searchParams.get("code_challenge"), q.get("code_challenge"), "a fresh verifier per login");
  });

  it("admin-ann logs in: HttpOnly SameSite=Lax cookie, 302 to /portal/, session identity with role admin", async () => {
    const flow = await loginFlow(A.base, "admin-ann");
    assert.equal(flow.callback.status, 302, `callback: ${flow.callback.status}; steps ${JSON.stringify(flow.steps)}`);
    const to = new URL(flow.callback.headers.get("location"), A.base);
    assert.equal(to.origin, new URL(A.base).origin, `redirect after login stays on the gateway: ${to}`);
    assert.equal(to.pathname, "/portal/", `default return_to: ${to}`);
    const c = sessionCookie(flow.setCookie);
    assert.ok(c.value.length >= 16, `cookie value ${c.value}`);
    assert.equal(c.attrs.httponly, true, `HttpOnly: ${c.line}`);
    assert.equal(String(c.attrs.samesite).toLowerCase(), "lax", `SameSite=Lax: ${c.line}`);
    assert.equal(c.attrs.path, "/", `Path=/: ${c.line}`);
    const maxAge = Number(c.attrs["max-age"]);
    assert.ok(maxAge > 0 && maxAge <= 12 * 3600, `Max-Age within the default 12 h session TTL: ${c.line}`);
    await assertMe(A.base, { cookie: c.value }, { subject: "admin-ann", auth_type: "session", role: "admin" },
      "me with the cookie on A");
    await assertMe(B.base, { cookie: c.value }, { subject: "admin-ann", auth_type: "session", role: "admin" },
      "me with the cookie on B (sessions live in the shared store)");
    // me lists name and email; a session has them from the id_token's claims.
    await assertMe(A.base, { cookie: c.value }, { name: "User admin-ann", email: "admin-ann@example.test" },
      "me with the cookie on A: the id_token's name and email");
  });

  it("the role comes from the role claim: vic (none) → viewer, editor-ed → editor", async () => {
    await assertMe(A.base, { cookie: await loginViaHttp(A.base, "vic") },
      { subject: "vic", auth_type: "session", role: "viewer" }, "vic");
    await assertMe(A.base, { cookie: await loginViaHttp(A.base, "editor-ed") },
      { subject: "editor-ed", auth_type: "session", role: "editor" }, "editor-ed");
  });

  it("return_to is where the callback redirects", async () => {
    const flow = await loginFlow(A.base, "vic-return", { returnTo: "/portal/audit?tool=get_weather" });
    assert.equal(flow.callback.status, 302);
    const to = new URL(flow.callback.headers.get("location"), A.base);
    assert.equal(`${to.pathname}${to.search}`, "/portal/audit?tool=get_weather", `${to}`);
  });

  it("logout: 204, the cookie cleared, and the session refused on the other process too", async () => {
    const cookie = await loginViaHttp(A.base, "editor-leaving");
    await assertMe(B.base, { cookie }, { subject: "editor-leaving" }, "before logout, on B");
    const out = await http(A.base, "/portal/auth/logout", { method: "POST", cookie, headers: XRW });
    assert.equal(out.status, 204, out.describe());
    const cleared = sessionCookie(out.headers.getSetCookie());
    assert.equal(cleared.attrs["max-age"], "0", `logout clears the cookie (Max-Age=0): ${cleared.line}`);
    // The session is deleted in the shared store: B refuses the old cookie (within a second).
    await poll("the old cookie refused on B", async () => (await me(B.base, { cookie })).status === 401, { ms: 1000 });
    assertUnauthorized(await me(B.base, { cookie }), B.base, "old cookie on B");
    assertUnauthorized(await me(A.base, { cookie }), A.base, "old cookie on A");
  });

  it("a forged or tampered cookie is 401", async () => {
    assertUnauthorized(await me(A.base, { cookie: "forged-0123456789abcdef0123456789abcdef" }), A.base, "forged cookie");
    const real = await loginViaHttp(A.base, "vic-tamper");
    const last = real.at(-1);
    const tampered = real.slice(0, -1) + (last === "A" ? "B" : "A");
    assertUnauthorized(await me(A.base, { cookie: tampered }), A.base, "tampered cookie");
    await assertMe(A.base, { cookie: real }, { subject: "vic-tamper" }, "the untampered cookie still works");
  });

  it("a replayed callback (state already used) is 400; an unknown state is 400; an IdP error is 400", async () => {
    const flow = await loginFlow(A.base, "vic-replay");
    assert.equal(flow.callback.status, 302, "the first callback succeeds");
    assertBadRequest(await http(A.base, flow.callbackUrl), "replayed callback");
    assertBadRequest(await http(A.base, "/portal/auth/callback?code=abc&state=never-issued"), "unknown state");
    const start = await http(A.base, "/portal/auth/login");
    const state = new URL(start.headers.get("location")).searchParams.get("state");
    const denied = await http(A.base, `/portal/auth/callback?error=access_denied&error_description=no&state=${state}`);
    assertBadRequest(denied, "IdP error=access_denied");
  });

  it("a callback opened in another browser (without the login cookie) is 400 and sets no session", async () => {
    const flow = await loginFlow(A.base, "mallory", { stopAtCallback: true });
    // Sent to a victim: their browser has no understudy_login cookie for this login.
    const elsewhere = await http(A.base, flow.callbackUrl);
    assertBadRequest(elsewhere, "callback without the login cookie");
    assert.ok(!elsewhere.headers.getSetCookie().some((c) => c.startsWith("understudy_session=") && !c.includes("Max-Age=0")),
      "no session cookie is set for the other browser");
  });

  it("CSRF: a cookie-authenticated POST needs X-Requested-With", async () => {
    const cookie = await loginViaHttp(A.base, "admin-csrf");
    const id = "0190f0f0-0000-7000-8000-000000000000";
    const bare = await http(A.base, `/api/v1/portal/audit/events/${id}/replay`, { method: "POST", cookie });
    assertError(bare, 403, "forbidden", "replay by cookie without X-Requested-With");
    const withHeader = await http(A.base, `/api/v1/portal/audit/events/${id}/replay`, { method: "POST", cookie, headers: XRW });
    assertError(withHeader, 404, "not_found", "replay of an unknown event by cookie with X-Requested-With");
    const tryit = await http(A.base, "/api/v1/admin/tryit/get_weather", {
      method: "POST", cookie, headers: { "X-Tenant-ID": "portal" }, body: { arguments: { city: "Paris" } },
    });
    assertError(tryit, 403, "forbidden", "tryit by cookie without X-Requested-With");
  });

  it("without OIDC configured: login 404, no authorization-server document, no authorization servers", async () => {
    assertError(await http(N.base, "/portal/auth/login"), 404, "not_found", "login without OIDC");
    assert.equal((await http(N.base, "/.well-known/oauth-authorization-server")).status, 404);
    const pr = await http(N.base, "/.well-known/oauth-protected-resource");
    assert.equal(pr.status, 200, pr.describe());
    assert.deepEqual(pr.json.authorization_servers, []);
    assert.deepEqual(pr.json.bearer_methods_supported, ["header"]);
    assert.equal(pr.json.resource_name, "Understudy");
    const server = await http(N.base, "/api/v1/portal/server", { key: ADMIN });
    assert.equal(server.status, 200, server.describe());
    assert.equal(server.json.oidc, null, `server.oidc without OIDC: ${server.text}`);
    assert.equal(pr.json.resource, N.base, "protected resource: resource = the gateway's base URL");
  });
});

/** A 400 in the envelope shape (the code is not pinned by the contract for the callback). */
function assertBadRequest(r, what) {
  assert.equal(r.status, 400, `${what}: ${r.describe()}`);
  assert.equal(typeof r.json?.error?.code, "string", `${what}: envelope: ${r.describe()}`);
  assert.equal(typeof r.json?.error?.message, "string", `${what}: envelope: ${r.describe()}`);
  assert.equal(r.headers.getSetCookie().some((l) => /^understudy_session=[^;]+/.test(l) && !/max-age=0/i.test(l)), false,
    `${what}: no session cookie on a failed callback`);
}

describe("well-known documents", () => {
  it("oauth-protected-resource names the issuer; oauth-authorization-server mirrors the issuer's metadata", async () => {
    const pr = await http(A.base, "/.well-known/oauth-protected-resource");
    assert.equal(pr.status, 200, pr.describe());
    assert.deepEqual(pr.json.authorization_servers, [idp.issuer]);
    assert.deepEqual(pr.json.bearer_methods_supported, ["header"]);
    assert.equal(pr.json.resource_name, "Understudy");
    const as = await http(A.base, "/.well-known/oauth-authorization-server");
    assert.equal(as.status, 200, as.describe());
    assert.equal(as.json.issuer, idp.issuer);
    assert.equal(as.json.metadata_url, `${idp.issuer}/.well-known/openid-configuration`);
    assert.equal(as.json.authorization_endpoint, discovery.authorization_endpoint);
    assert.equal(as.json.token_endpoint, discovery.token_endpoint);
    assert.equal(as.json.jwks_uri, discovery.jwks_uri);
    const wk = await http(A.base, "/api/v1/portal/wellknown", { key: ADMIN });
    assert.equal(wk.status, 200, wk.describe());
    assert.deepEqual(wk.json.protected_resource, pr.json);
    assert.deepEqual(wk.json.authorization_server, as.json);
    assert.equal(pr.json.resource, A.base, "protected resource: resource = the gateway's base URL");
  });

  it("portal server shows the OIDC issuer and client id, never the client secret or the admin token", async () => {
    const r = await http(A.base, "/api/v1/portal/server", { key: ADMIN });
    assert.equal(r.status, 200, r.describe());
    assert.equal(r.json.oidc?.issuer, idp.issuer, `server.oidc: ${r.text}`);
    assert.equal(r.json.oidc.client_id, CLIENT_ID, `server.oidc: ${r.text}`);
    if ("client_secret" in r.json.oidc) assert.equal(r.json.oidc.client_secret, "[REDACTED]");
    assert.equal(r.json.mode, "shared");
    assert.equal(r.json.store, "redis");
    assert.ok(!r.text.includes(CLIENT_SECRET), `the client secret is in server: ${r.text}`);
    assert.ok(!r.text.includes(ADMIN), `the admin token is in server: ${r.text}`);
  });
});

describe("bearer JWTs", () => {
  it("a valid JWT authenticates with auth_type oidc, subject = sub, role from the claim", async () => {
    await assertMe(A.base, { bearer: await mint({ sub: "jwt-alice", role: "editor" }) },
      { subject: "jwt-alice", auth_type: "oidc", role: "editor" }, "editor JWT");
    await assertMe(A.base, { bearer: await mint({ sub: "jwt-bob" }) },
      { subject: "jwt-bob", auth_type: "oidc", role: "viewer" }, "no role claim → viewer");
    await assertMe(A.base, { bearer: await mint({ sub: "jwt-carl", role: "superuser" }) },
      { role: "viewer" }, "unknown role → viewer");
    await assertMe(A.base, { bearer: await mint({ sub: "jwt-dora", role: ["viewer", "admin", "nonsense"] }) },
      { role: "admin" }, "an array: the highest known role wins");
    await assertMe(B.base, { key: await mint({ sub: "jwt-erin", role: "admin" }) },
      { subject: "jwt-erin", auth_type: "oidc", role: "admin" }, "a JWT as X-API-Key, on B");
  });

  it("audiences: the client id among several, or an --oidc-audience value, is accepted", async () => {
    await assertMe(A.base, { bearer: await mint({ sub: "jwt-aud1", aud: ["some-api", CLIENT_ID] }) },
      { subject: "jwt-aud1" }, "aud array containing the client id");
    await assertMe(A.base, { bearer: await mint({ sub: "jwt-aud2", aud: "extra-aud" }) },
      { subject: "jwt-aud2" }, "aud = --oidc-audience");
  });

  it("exp and nbf have 60 s of leeway", async () => {
    await assertMe(A.base, { bearer: await mint({ sub: "jwt-late" }, { expiresIn: -20 }) },
      { subject: "jwt-late" }, "expired 20 s ago (within the leeway)");
    const now = Math.floor(Date.now() / 1000);
    await assertMe(A.base, { bearer: await mint({ sub: "jwt-early", nbf: now + 20 }) },
      { subject: "jwt-early" }, "nbf 20 s ahead (within the leeway)");
  });

  it("bad JWTs are 401 with WWW-Authenticate resource_metadata", async () => {
    const foreign = (await generateKeyPair("RS256")).privateKey;
    const now = Math.floor(Date.now() / 1000);
    const good = await mint({ sub: "jwt-tampered" });
    const [h, , s] = good.split(".");
    const forgedPayload = Buffer.from(JSON.stringify({
      iss: idp.issuer, aud: CLIENT_ID, sub: "jwt-tampered", role: "admin", exp: now + 300,
    })).toString("base64url");
    const cases = {
      "wrong aud": await mint({ sub: "x", aud: "someone-else" }),
      "wrong iss": await mint({ sub: "x", iss: `${idp.issuer}/other` }),
      "expired beyond the leeway": await mint({ sub: "x" }, { expiresIn: -300 }),
      "nbf beyond the leeway": await mint({ sub: "x", nbf: now + 600 }),
      "foreign key, same kid": await mint({ sub: "x" }, { key: foreign }),
      "alg none": await mint({ sub: "x", role: "admin" }, { alg: "none" }),
      "payload changed after signing": `${h}.${forgedPayload}.${s}`,
      "not a JWT at all": "a.b.c",
    };
    for (const [what, token] of Object.entries(cases)) {
      assertUnauthorized(await me(A.base, { bearer: token }), A.base, what);
    }
    assertUnauthorized(await me(A.base, {}), A.base, "no credential");
  });

  it("a JWT identity owns the private tenant it creates", async () => {
    const eve = await mint({ sub: "editor-eve", role: "editor" });
    const frank = await mint({ sub: "editor-frank", role: "editor" });
    const viewer = await mint({ sub: "vic-viewer" });
    const body = { tenant_id: "jwt-owned", state: {}, visibility: "private" };
    assertError(await http(A.base, "/public/tenants", { method: "POST", bearer: viewer, body }), 403, "forbidden",
      "a viewer JWT creates a tenant");
    const created = await http(A.base, "/public/tenants", { method: "POST", bearer: eve, body });
    assert.equal(created.status, 201, created.describe());
    assert.equal(created.json.tenant.owner, "editor-eve", created.text);
    assert.equal(created.json.tenant.visibility, "private", created.text);
    const mine = await http(A.base, "/public/tenants/jwt-owned", { bearer: eve });
    assert.equal(mine.status, 200, mine.describe());
    assert.equal(mine.json.owner, "editor-eve");
    assertError(await http(A.base, "/public/tenants/jwt-owned", { bearer: frank }), 403, "forbidden", "another user's JWT");
    assert.equal((await http(A.base, "/public/tenants/jwt-owned")).status, 401, "anonymous");
    // The same identity through a login session (sub is the identity either way), on B.
    const cookie = await loginViaHttp(A.base, "editor-eve");
    const bySession = await http(B.base, "/public/tenants/jwt-owned", { cookie });
    assert.equal(bySession.status, 200, `the owner's session cookie on B: ${bySession.describe()}`);
  });
});

describe("a real browser", () => {
  const chromium = findChromium();
  it("logs in through the IdP's form in Chromium; the cookie is HttpOnly and SameSite=Lax", { skip: chromium ? false : "no Chromium ($CHROMIUM or chromium on PATH)" }, async () => {
    const { chromium: pw } = await import("playwright-core");
    const browser = await pw.launch({ executablePath: chromium, args: ["--no-sandbox"] });
    try {
      const context = await browser.newContext();
      // Nothing leaves the machine (the IdP's page links a web font).
      await context.route("**/*", (route) => (new URL(route.request().url()).hostname === "127.0.0.1"
        ? route.continue() : route.abort()));
      const page = await context.newPage();
      page.setDefaultTimeout(10_000);
      await page.goto(`${A.base}/portal/auth/login?return_to=/portal/`);
      await page.fill("input[name=login]", "admin-browser");
      await page.fill("input[name=password]", "whatever");
      await Promise.all([
        page.waitForURL((u) => u.origin === new URL(A.base).origin, { timeout: 15_000 }),
        page.click("button[type=submit]"),
      ]);
      assert.equal(new URL(page.url()).pathname, "/portal/", `landed on ${page.url()}`);
      const dir = path.join(here, "artifacts");
      mkdirSync(dir, { recursive: true });
      await page.screenshot({ path: path.join(dir, "portal-after-login.png") });
      const cookie = (await context.cookies(A.base)).find((c) => c.name === "understudy_session");
      assert.ok(cookie, `no understudy_session cookie in the browser: ${JSON.stringify(await context.cookies())}`);
      assert.equal(cookie.httpOnly, true);
      assert.equal(cookie.sameSite, "Lax");
      assert.equal(cookie.path, "/");
      const r = await context.request.get(`${A.base}/api/v1/portal/me`);
      assert.equal(r.status(), 200, await r.text());
      const body = await r.json();
      assert.equal(body.subject, "admin-browser");
      assert.equal(body.auth_type, "session");
      assert.equal(body.role, "admin");
      // document.cookie cannot read it (HttpOnly).
      assert.equal(await page.evaluate(() => document.cookie.includes("understudy_session")), false);
    } finally {
      await browser.close();
    }
  });
});

// Last: it changes the IdP's keys.
describe("key rotation", () => {
  it("after a rotation the new kid is accepted (JWKS refetched) and the removed key is refused", async () => {
    await assertMe(A.base, { bearer: await mint({ sub: "jwt-before" }) }, { subject: "jwt-before" }, "before rotation");
    const { kid, previous } = await idp.rotateKeys({ keepOld: false });
    const served = (await (await fetch(discovery.jwks_uri)).json()).keys.map((k) => k.kid);
    assert.deepEqual(served, [kid], "the IdP serves only the new key");
    const fresh = await mint({ sub: "jwt-after" });
    // The gateway refetches the JWKS on an unknown kid at most once per 10 s.
    await poll("a token with the new kid accepted", async () => (await me(A.base, { bearer: fresh })).status === 200,
      { ms: 15_000, every: 500 });
    await assertMe(A.base, { bearer: fresh }, { subject: "jwt-after", auth_type: "oidc" }, "new kid");
    const old = await mint({ sub: "jwt-old-key" }, { key: previous.privateKey, kid: previous.kid });
    assertUnauthorized(await me(A.base, { bearer: old }), A.base, "signed with the removed key");
    // B learns the new key the same way.
    await poll("the new kid accepted on B", async () => (await me(B.base, { bearer: fresh })).status === 200,
      { ms: 15_000, every: 500 });
  });
});

describe("no credential in the logs", () => {
  it("no gateway log holds the admin token, the client secret, a session cookie or a bearer JWT", async () => {
    assert.ok(issued.length > 0, "no credential was issued: the check would be vacuous");
    const secrets = { "admin token": ADMIN, "client secret": CLIENT_SECRET };
    issued.forEach((c, i) => { secrets[`session cookie or JWT #${i + 1}`] = c; });
    await assertNoSecretInLogs(secrets);
  });
});
