// The portal UI end to end, in headless Chromium (playwright-core driving the system's Chromium):
// login through a real OpenID Provider (idp.mjs), the live tail receiving an MCP tool call made
// from Node with the official SDK, the event page, and a replay from the browser.
//
//   G      one gateway in shared mode (redis-server from the harness), OIDC on (client
//          understudy-portal and its secret), the suite's manifests (tenant `portal`).
//   admin-ann  the IdP gives her role=admin (its role rule: logins starting with "admin").
//
// Chromium is $CHROMIUM or `chromium` on PATH. Without one the suite FAILS, unless
// UNDERSTUDY_SKIP_BROWSER=1 is set. Screenshots go to artifacts/ (gitignored; CI keeps it).
// Console errors and uncaught page errors are collected all along and must be none, but for a
// 404/401 for /favicon.ico and, before login only, the 401 of GET /api/v1/portal/me (how the UI
// learns nobody is logged in; Chromium logs any failed fetch as "Failed to load resource").
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import { CLIENT_ID, CLIENT_SECRET, startIdp } from "./idp.mjs";
import {
  UUID_V7, callTool, findChromium, freePort, here, manifests, newAdminToken, poll, startGateway, startRedis, stopAll,
} from "./harness.mjs";

const SKIP = process.env.UNDERSTUDY_SKIP_BROWSER === "1";
const chromiumPath = findChromium();
const artifacts = path.join(here, "artifacts");
const TAIL_PNG = path.join(artifacts, "portal-tail.png");
const REPLAY_PNG = path.join(artifacts, "portal-replay.png");
const ADMIN = newAdminToken("browser-admin");
const ARGS = { city: "Paris" }; // get_weather's weather scenario; no credential-like key, so replayable

const NO_CHROMIUM = "No Chromium found: set $CHROMIUM to a Chromium binary or put `chromium` on PATH " +
  "(or set UNDERSTUDY_SKIP_BROWSER=1 to skip the browser test).";

const sel = (testid, extra = "") => `[data-testid="${testid}"]${extra}`;

describe("portal UI in headless Chromium", { skip: SKIP && !chromiumPath ? "no Chromium and UNDERSTUDY_SKIP_BROWSER=1" : false, timeout: 180_000 }, () => {
  let idp;
  let G;
  let browser;
  let context;
  let page;
  const problems = []; // console errors and page errors, with where they happened
  const state = {}; // what one step hands to the next: originalId, replayId
  let failedStep = null;
  let loggedIn = false; // false until the login step has seen whoami

  /** Runs a step unless an earlier one failed (then it fails at once, naming that step). */
  const step = (name, fn) => it(name, { timeout: 90_000 }, async () => {
    if (!chromiumPath) throw new Error(NO_CHROMIUM);
    if (failedStep) throw new Error(`not run: the earlier step "${failedStep}" failed`);
    try {
      await fn();
    } catch (e) {
      failedStep = name;
      throw e;
    }
  });

  before(async () => {
    if (!chromiumPath) return; // every step fails with NO_CHROMIUM
    const port = await freePort();
    idp = await startIdp({ redirectUris: [`http://127.0.0.1:${port}/portal/auth/callback`] });
    const redis = await startRedis();
    G = await startGateway("browser", ["--redis-url", redis, "--manifests", manifests, "--admin-token", ADMIN,
      "--oidc-issuer", idp.issuer, "--oidc-client-id", CLIENT_ID, "--oidc-client-secret", CLIENT_SECRET], { port });
    mkdirSync(artifacts, { recursive: true });
    for (const f of [TAIL_PNG, REPLAY_PNG]) rmSync(f, { force: true });

    const { chromium } = await import("playwright-core");
    browser = await chromium.launch({ executablePath: chromiumPath, headless: true, args: ["--no-sandbox"] }); // headless: --headless
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    // Nothing leaves the machine: the IdP's dev login page links a web font (Google Fonts); it is
    // answered here with an empty stylesheet rather than aborted, so that it logs no error.
    await context.route("**/*", (route) => (new URL(route.request().url()).hostname === "127.0.0.1"
      ? route.continue() : route.fulfill({ status: 200, contentType: "text/css", body: "" })));
    page = await context.newPage();
    page.setDefaultTimeout(15_000);
    page.on("console", (msg) => {
      if (msg.type() !== "error") return;
      const where = msg.location()?.url || page.url();
      problems.push({ kind: "console", text: msg.text(), where, loggedIn });
    });
    page.on("pageerror", (err) => problems.push({ kind: "pageerror", text: err.stack || String(err), where: page.url(), loggedIn }));
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await stopAll();
    await idp?.stop();
  });

  step("logs in as admin-ann through the IdP's form", async () => {
    await page.goto(`${G.base}/portal/`);
    await page.locator(sel("login-panel")).waitFor({ state: "visible" });
    await Promise.all([
      page.waitForURL((u) => u.origin === idp.issuer, { timeout: 15_000 }),
      page.locator(sel("login")).click(),
    ]);
    await page.fill("input[name=login]", "admin-ann");
    await page.fill("input[name=password]", "any-password");
    await Promise.all([
      page.waitForURL((u) => u.origin === G.base && u.pathname.startsWith("/portal/"), { timeout: 15_000 }),
      page.click("button[type=submit]"),
    ]);
    const who = page.locator(sel("whoami"));
    await who.waitFor({ state: "visible" });
    await poll("whoami shows admin-ann", async () => (await who.textContent())?.includes("admin-ann"), { ms: 10_000 });
    const text = await who.textContent();
    assert.match(text, /\badmin-ann\b/, `whoami: ${text}`);
    assert.match(text, /\badmin\b/, `whoami shows the role admin: ${text}`);
    assert.equal(await page.locator(sel("login-panel")).count(), 0, "the login panel is gone after login");
    loggedIn = true;
  });

  step("the live tail goes live and shows an MCP tool call made from Node", async () => {
    await page.locator(sel("nav-tail")).click();
    await page.waitForFunction(() => location.hash === "#/tail");
    const status = page.locator(sel("tail-status"));
    await poll("tail-status reads live", async () => (await status.textContent())?.trim() === "live", { ms: 15_000, every: 100 });

    const { result } = await callTool(G.base, "portal", "get_weather", ARGS);
    assert.notEqual(result.isError, true, `the tool call failed: ${JSON.stringify(result)}`);

    const row = page.locator(sel("tail-row", '[data-tool="get_weather"]')).first();
    await row.waitFor({ state: "visible", timeout: 15_000 });
    state.originalId = await row.getAttribute("data-event-id");
    assert.match(state.originalId ?? "", UUID_V7, `the tail row's data-event-id: ${state.originalId}`);
    assert.equal(await row.getAttribute("data-tenant"), "portal");
    assert.equal(await row.getAttribute("data-success"), "true");
    assert.match(await row.locator("td.col-source").textContent(), /\bmcp\b/);

    await page.evaluate(() => window.scrollTo(0, 0)); // else the sticky top bar lands mid-page in the full-page shot
    await page.screenshot({ path: TAIL_PNG, fullPage: true });
  });

  step("the event page shows the tool and its arguments; Replay runs it again", async () => {
    const row = page.locator(sel("tail-row", `[data-event-id="${state.originalId}"]`));
    await row.locator("td.col-tool").click();
    const detail = page.locator(sel("event-detail"));
    await detail.waitFor({ state: "visible" });
    assert.equal(await detail.getAttribute("data-event-id"), state.originalId);
    assert.equal(new URL(page.url()).hash, `#/events/${state.originalId}`);
    const detailText = await detail.textContent();
    assert.ok(detailText.includes("get_weather"), `the event page names the tool: ${detailText.slice(0, 1500)}`);
    const params = await page.locator(sel("payload-request-params")).textContent();
    assert.deepEqual(JSON.parse(params), ARGS, `the request params shown: ${params}`);

    await page.locator(sel("replay-button")).click();
    const out = page.locator(sel("replay-result"));
    await out.waitFor({ state: "visible", timeout: 15_000 });
    const outText = await out.textContent();
    let replay;
    try {
      replay = JSON.parse(outText);
    } catch {
      assert.fail(`replay-result is not the JSON answer (an error?): ${outText}`);
    }
    assert.equal(replay.replayed_from, state.originalId, outText);
    assert.match(replay.event_id ?? "", UUID_V7, outText);
    assert.notEqual(replay.event_id, state.originalId, "the replay is a new event");
    assert.notEqual(replay.result?.isError, true, `the replayed call failed: ${outText}`);
    assert.ok(JSON.stringify(replay.result).includes("Paris"), `the replay's tool result: ${outText}`);
    const link = page.locator(sel("replay-event-link"));
    assert.equal((await link.textContent()).trim(), replay.event_id, "the link to the new event");
    state.replayId = replay.event_id;

    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: REPLAY_PNG, fullPage: true });
  });

  step("the API lists the portal-replay row, replayed_from the original (the browser's session cookie)", async () => {
    const row = await poll("a portal-replay row in audit/events", async () => {
      const r = await page.request.get(`${G.base}/api/v1/portal/audit/events?source=portal-replay`);
      if (r.status() !== 200) throw new Error(`audit/events → ${r.status()} ${await r.text()}`);
      return (await r.json()).events.find((e) => e.id === state.replayId);
    }, { ms: 10_000, every: 200 });
    assert.equal(row.source, "portal-replay");
    assert.equal(row.tool, "get_weather");
    assert.equal(row.tenant, "portal");
    assert.equal(row.success, true, JSON.stringify(row));
    const r = await page.request.get(`${G.base}/api/v1/portal/audit/events/${state.replayId}`);
    assert.equal(r.status(), 200, await r.text());
    const d = await r.json();
    assert.equal(d.payload?.replayed_from, state.originalId, `detail payload: ${JSON.stringify(d.payload)}`);
    assert.deepEqual(d.payload.request_params, ARGS);
  });

  step("screenshots were written", async () => {
    for (const f of [TAIL_PNG, REPLAY_PNG]) {
      const size = statSync(f, { throwIfNoEntry: false })?.size ?? 0;
      assert.ok(size > 0, `${path.relative(here, f)} missing or empty`);
    }
  });

  it("no console errors and no page errors during the run", () => {
    if (!chromiumPath) throw new Error(NO_CHROMIUM);
    const status = (p) => /status of (\d{3})/.exec(p.text)?.[1];
    const pathOf = (p) => { try { return new URL(p.where).pathname; } catch { return ""; } };
    const real = problems.filter((p) => !(
      // the browser's own favicon request
      (p.kind === "console" && pathOf(p) === "/favicon.ico" && ["401", "404"].includes(status(p)))
      // how the UI learns that nobody is logged in yet: GET /api/v1/portal/me → 401, which
      // Chromium logs as "Failed to load resource"; expected before login, an error after it
      || (p.kind === "console" && !p.loggedIn && pathOf(p) === "/api/v1/portal/me" && status(p) === "401")));
    assert.deepEqual(real, [], `browser errors:\n${real.map((p) => `  [${p.kind}] ${p.where}: ${p.text}`).join("\n")}`);
  });
});
