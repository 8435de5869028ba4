// Processes for the MCP end-to-end tests: a throwaway redis-server and gateway processes on free
// ports, each waited for (/readyz) and stopped at the end. Used by run.mjs; the test files read
// the gateways' base URLs from the environment it sets (see env()).
import { spawn } from "node:child_process";
import { createServer, connect } from "node:net";
import { fileURLToPath } from "node:url";
import path from "node:path";

export const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, "..", "..");
export const bin = process.env.UNDERSTUDY_BIN
  ? path.resolve(process.env.UNDERSTUDY_BIN)
  : path.join(root, "target", "debug", "understudy-gateway");
export const fixtures = path.join(root, "tests", "fixtures", "manifests");
export const examples = path.join(root, "examples");

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

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const children = [];

function track(name, child) {
  let tail = "";
  const keep = (chunk) => {
    tail = (tail + chunk.toString()).slice(-4000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const entry = { name, child, exited: null, tail: () => tail };
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

/** Starts redis-server without persistence on a free port; returns its URL. */
export async function startRedis() {
  const port = await freePort();
  const entry = track("redis-server", spawn("redis-server", ["--port", String(port),
    "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: ["ignore", "pipe", "pipe"] }));
  await until("redis-server", entry, () => new Promise((resolve) => {
    const s = connect(port, "127.0.0.1", () => { s.end(); resolve(true); });
    s.on("error", () => resolve(false));
  }));
  return `redis://127.0.0.1:${port}/0`;
}

/**
 * Starts a gateway with `args` (plus --listen; a function of the port when the arguments need
 * it) and waits until /readyz answers 200.
 */
export async function startGateway(name, args) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const extra = typeof args === "function" ? args(port) : args;
  const entry = track(name, spawn(bin, ["--listen", `127.0.0.1:${port}`, "--drain-grace", "0s", ...extra],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "warn" } }));
  await until(`gateway ${name}`, entry, async () => {
    try {
      return (await fetch(`${base}/readyz`)).status === 200;
    } catch {
      return false;
    }
  });
  return { base, port, tail: entry.tail };
}

/** Stops every process started here (SIGTERM, then SIGKILL after 5 s). */
export async function stopAll() {
  await Promise.all(children.map(async (e) => {
    if (e.exited) return;
    e.child.kill("SIGTERM");
    for (let i = 0; i < 100 && !e.exited; i++) await sleep(50);
    if (!e.exited) e.child.kill("SIGKILL");
  }));
}

/** The base URL of a gateway that run.mjs started, by the name it exported. */
export function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run the suite with \`npm test\` (run.mjs), which starts the gateways`);
  return v;
}

/**
 * A round-robin reverse proxy on a free port: each HTTP request (not each connection) goes to
 * the next of `upstreams` in turn, headers (Host included) and bodies streamed through both
 * ways, so an SSE response flows as the gateway writes it. Returns its base URL and its tally
 * of requests per upstream.
 */
export async function startRoundRobin(name, upstreams) {
  const { createServer: createHttpServer, request } = await import("node:http");
  const targets = upstreams.map((u) => new URL(u));
  const tally = targets.map(() => 0);
  let next = 0;
  const server = createHttpServer((req, res) => {
    const i = next;
    next = (next + 1) % targets.length;
    tally[i] += 1;
    const t = targets[i];
    const up = request({ host: t.hostname, port: t.port, method: req.method, path: req.url, headers: req.headers },
      (upRes) => {
        res.writeHead(upRes.statusCode ?? 502, upRes.headers);
        res.flushHeaders();
        upRes.pipe(res);
      });
    up.on("error", (e) => {
      if (!res.headersSent) res.writeHead(502, { "content-type": "text/plain" });
      res.end(`proxy ${name}: ${e.message}`);
    });
    res.on("close", () => up.destroy());
    req.pipe(up);
  });
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  const entry = { name, exited: null, tail: () => "" };
  entry.child = {
    kill: () => {
      server.closeAllConnections();
      server.close();
      entry.exited = { code: 0 };
    },
  };
  children.push(entry);
  return { base: `http://127.0.0.1:${port}`, tally };
}
