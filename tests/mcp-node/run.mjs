// The MCP end-to-end suite with the official Node tooling (SPEC §4). Starts a redis-server and
// three gateways on free ports, then runs the node:test files against them:
//   A, B         shared mode on that redis-server, tests/fixtures/manifests (tenant `support`):
//                sdk.test.mjs (TypeScript SDK, both transports, across the two processes) and
//                inspector.test.mjs (the MCP Inspector CLI);
//   conformance  embedded mode on examples/ (tenant `conformance`), with the MCP Origin check on:
//                conformance.test.mjs (the official conformance suite, server scenarios).
// Usage, from the repository root after `npm ci` in tests/mcp-node:
//   npm --prefix tests/mcp-node test            (or: tests/mcp-node/node_modules/.bin/node tests/mcp-node/run.mjs)
// Extra arguments name test files to run instead of all three. UNDERSTUDY_BIN overrides the
// gateway binary (default target/debug/understudy-gateway).
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import path from "node:path";
import { bin, examples, fixtures, here, startGateway, startRedis, stopAll } from "./harness.mjs";

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
  const c = await startGateway("conformance", (port) => ["--manifests", examples,
    "--mcp-allowed-origins", `http://127.0.0.1:${port},http://localhost:${port}`]);
  console.log(`gateways: A ${a.base}, B ${b.base} (shared, ${redis}); conformance ${c.base}`);
  code = await new Promise((resolve) => {
    const child = spawn(process.execPath, ["--test", "--test-concurrency=1", "--test-timeout=300000", "--test-reporter=spec",
      ...files], {
      cwd: here,
      stdio: "inherit",
      env: { ...process.env, MCP_GW_A: a.base, MCP_GW_B: b.base, MCP_GW_CONFORMANCE: c.base, MCP_ADMIN_TOKEN: admin },
    });
    const forward = (sig) => child.kill(sig);
    process.on("SIGINT", forward);
    process.on("SIGTERM", forward);
    child.on("exit", (c, sig) => resolve(c ?? (sig ? 1 : 0)));
  });
} catch (e) {
  console.error(e.message ?? e);
} finally {
  await stopAll();
}
process.exit(code);
