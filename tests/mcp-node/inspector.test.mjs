// The MCP Inspector CLI (@modelcontextprotocol/inspector 2.x, `mcp-inspector --cli`) against
// the gateway's tenant `support`: tools/list and tools/call over streamable HTTP (/mcp) and
// legacy SSE (/mcp/sse), asserting on its JSON output, through run.mjs's round-robin proxy over
// gateways A and B (MCP_GW_AB): consecutive requests land on different processes.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { env } from "./harness.mjs";

const A = env("MCP_GW_AB");
const require = createRequire(import.meta.url);
const inspector = path.join(path.dirname(require.resolve("@modelcontextprotocol/inspector/package.json")),
  "clients", "launcher", "build", "index.js");
let home;

before(() => {
  // The inspector keeps a catalog and client config under $HOME/.mcp-inspector.
  home = mkdtempSync(path.join(tmpdir(), "mcp-inspector-home-"));
});
after(() => rmSync(home, { recursive: true, force: true }));

/** Runs `mcp-inspector --cli URL … --format json -q` and returns its parsed stdout. */
function cli(url, transport, ...args) {
  const argv = [inspector, "--cli", url, "--transport", transport, "--header", "X-Tenant-Id: support",
    "--format", "json", "-q", ...args];
  return new Promise((resolve, reject) => {
    execFile(process.execPath, argv, { env: { ...process.env, HOME: home }, timeout: 60_000 },
      (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`mcp-inspector ${args.join(" ")} failed (${err.code ?? err.signal}):\n${stdout}\n${stderr}`));
          return;
        }
        try {
          resolve(JSON.parse(stdout));
        } catch {
          reject(new Error(`mcp-inspector printed no JSON:\n${stdout}\n${stderr}`));
        }
      });
  });
}

for (const [transport, url] of [["http", `${A}/mcp`], ["sse", `${A}/mcp/sse`]]) {
  test(`inspector --transport ${transport}: tools/list`, async () => {
    const out = await cli(url, transport, "--method", "tools/list");
    const tools = Object.fromEntries(out.result.tools.map((t) => [t.name, t]));
    assert.deepEqual(Object.keys(tools).sort(), ["get_invoice_ledger", "get_weather"]);
    assert.equal(tools.get_weather.description, "Current weather for a city.");
    assert.deepEqual(tools.get_invoice_ledger.inputSchema.required, ["customer_id"]);
  });

  test(`inspector --transport ${transport}: tools/call`, async () => {
    const weather = await cli(url, transport, "--method", "tools/call", "--tool-name", "get_weather",
      "--tool-arg", "city=Paris");
    assert.equal(weather.result.isError, false);
    assert.deepEqual(JSON.parse(weather.result.content[0].text), { city: "Paris", temperature_c: 21 });
    assert.deepEqual(weather.result.structuredContent, { city: "Paris", temperature_c: 21 });
    const ledger = await cli(url, transport, "--method", "tools/call", "--tool-name", "get_invoice_ledger",
      "--tool-args-json", JSON.stringify({ customer_id: "cus_123", limit: 2 }));
    assert.deepEqual(ledger.result.structuredContent, { invoices: ["INV-001", "INV-002"] });
  });
}
