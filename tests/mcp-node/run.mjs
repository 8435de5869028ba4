// The MCP end-to-end suite with the official Node tooling (SPEC §4). Starts two redis-servers,
// four gateways and two round-robin proxies on free ports, then runs the node:test files against them:
//   A, B         shared mode on that redis-server, tests/fixtures/manifests (tenant `support`):
//                sdk.test.mjs (TypeScript SDK, both transports, across the two processes) and
//                inspector.test.mjs (the MCP Inspector CLI);
//                The Inspector goes through a round-robin proxy over A and B (each request to
//                the next process);
//   conformance  two processes in shared mode on a second redis-server, examples/ (tenant
//                `conformance`), behind another round-robin proxy, with the MCP Origin check on:
//                conformance.test.mjs (the official conformance suite, server scenarios).
// Usage, from the repository root after `npm ci` in tests/mcp-node:
//   npm --prefix tests/mcp-node test            (or: tests/mcp-node/node_modules/.bin/node tests/mcp-node/run.mjs)
// Extra arguments name test files to run instead of all three. UNDERSTUDY_BIN overrides the
// gateway binary (default target/debug/understudy-gateway).
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import path from "node:path";
import { bin, examples, fixtures, here, startGateway, startRedis, startRoundRobin, stopAll } from "./harness.mjs";

const major = Number(process.versions.node.split(".")[0]);
if (major < 22) {
  console.error(`node ${process.versions.node}: the Inspector 2.x and the conformance suite need Node >= 22; ` +
    "run `npm test` in tests/mcp-node (it uses the node@22 from node_modules/.bin)");
  process.exit(2);
}
if (!existsSync(bin)) {
  console.error(`no gateway binary at ${bin}: build it (cargo build -p understudy-gateway) or set UNDERSTUDY_BIN`);
  process.exit(2);
}

const files = (process.argv.slice(2).length > 0 ? process.argv.slice(2)
  : ["sdk.test.mjs", "inspector.test.mjs", "conformance.test.mjs"])
  .map((f) => (existsSync(path.resolve(f)) ? path.resolve(f) : path.resolve(here, f)));

let code = 1;
try {
  const redis = await startRedis();
  // The admin token lets sdk.test.mjs create a tenant through the public API (tools/list_changed).
  const admin = `mcp-node-${randomBytes(8).toString("hex")}`;
  const shared = ["--redis-url", redis, "--manifests", fixtures, "--admin-token", admin];
  const a = await startGateway("A", shared);
  const b = await startGateway("B", shared);
  // Every request through a proxy alternates between two processes: the Inspector on A and B,
  // and the conformance suite on two processes sharing a second redis-server (examples/).
  const ab = await startRoundRobin("A|B", [a.base, b.base]);
  const redis2 = await startRedis();
  const c1 = await startGateway("conformance-1", ["--redis-url", redis2, "--manifests", examples]);
  const c2 = await startGateway("conformance-2", ["--redis-url", redis2, "--manifests", examples]);
  const c = await startRoundRobin("conformance-1|conformance-2", [c1.base, c2.base]);
  console.log(`gateways: A ${a.base}, B ${b.base} (shared, ${redis}), behind ${ab.base}; ` +
    `conformance ${c1.base}, ${c2.base} (shared, ${redis2}), behind ${c.base}`);
  const proxies = [ab, c];
  code = await new Promise((resolve) => {
    const child = spawn(process.execPath, ["--test", "--test-concurrency=1", "--test-timeout=300000", "--test-reporter=spec",
      ...files], {
      cwd: here,
      stdio: "inherit",
      env: { ...process.env, MCP_GW_A: a.base, MCP_GW_B: b.base, MCP_GW_AB: ab.base, MCP_GW_CONFORMANCE: c.base,
        MCP_ADMIN_TOKEN: admin },
    });
    const forward = (sig) => child.kill(sig);
    process.on("SIGINT", forward);
    process.on("SIGTERM", forward);
    child.on("exit", (c, sig) => resolve(c ?? (sig ? 1 : 0)));
  });
  // The alternation is real only if each process behind a proxy served requests.
  for (const p of proxies) {
    console.log(`proxy ${p.base}: requests per process ${JSON.stringify(p.tally)}`);
    if (p.tally.reduce((x, y) => x + y, 0) > 0 && p.tally.some((n) => n === 0)) {
      console.error(`proxy ${p.base}: a process behind it served no request`);
      code = code || 1;
    }
  }
} catch (e) {
  console.error(e.message ?? e);
} finally {
  await stopAll();
}
process.exit(code);
