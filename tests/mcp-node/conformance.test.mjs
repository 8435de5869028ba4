// The official MCP conformance suite (@modelcontextprotocol/conformance), every server scenario,
// against tenant `conformance` (examples/conformance.yaml) on two gateway processes sharing
// Redis behind run.mjs's round-robin proxy (MCP_GW_CONFORMANCE), with the MCP Origin check on. The suite's own pass counts are not
// trusted (a scenario can "pass" with nothing checked): each scenario's checks.json is read, and
// every check that failed must be listed in EXPECTED_FAILURES below, and every check listed
// there must still fail, so that the list stays honest.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { env } from "./harness.mjs";

const url = `${env("MCP_GW_CONFORMANCE")}/t/conformance/mcp`;
const require = createRequire(import.meta.url);
const pkg = path.dirname(require.resolve("@modelcontextprotocol/conformance/package.json"));
const cliPath = path.join(pkg, "dist", "index.js");
const version = JSON.parse(readFileSync(path.join(pkg, "package.json"), "utf8")).version;

// Checks that fail against a scripted mock, by scenario and check id. Each entry says why.
const EXPECTED_FAILURES = {
  // Server-to-client traffic while a call runs: notifications/message (at the level set with
  // logging/setLevel, which the server accepts), notifications/progress, and the requests
  // sampling/createMessage and elicitation/create. A scenario's tool answers at once with fixed
  // content; a scripted mock makes none of these.
  "tools-call-with-logging": ["tools-call-with-logging"],
  "tools-call-with-progress": ["tools-call-with-progress"],
  "tools-call-sampling": ["tools-call-sampling"],
  "tools-call-elicitation": ["tools-call-elicitation"],
  "elicitation-sep1034-defaults": ["elicitation-sep1034-general"],
  "elicitation-sep1330-enums": ["elicitation-sep1330-general"],
  // Resources: a tenant exposes one resource, its state (understudy://tenant/state); the
  // fixture resources test://static-text, test://static-binary and the template
  // test://template/{id}/data do not exist, and resources/subscribe and resources/unsubscribe
  // are not tenant MCP methods (-32601).
  "resources-read-text": ["resources-read-text"],
  "resources-read-binary": ["resources-read-binary"],
  "resources-templates-read": ["resources-templates-read"],
  "resources-subscribe": ["resources-subscribe"],
  "resources-unsubscribe": ["resources-unsubscribe"],
  // Prompts: prompts/list is empty (SPEC §4), so prompts/get of the fixture prompts
  // test_simple_prompt, test_prompt_with_arguments, test_prompt_with_embedded_resource and
  // test_prompt_with_image fails.
  "prompts-get-simple": ["prompts-get-simple"],
  "prompts-get-with-args": ["prompts-get-with-args"],
  "prompts-get-embedded-resource": ["prompts-get-embedded-resource"],
  "prompts-get-with-image": ["prompts-get-with-image"],
  // dns-rebinding-protection is expected to pass: a loopback Host vouches for its own Origin,
  // any other Host does not (a rebinding page's Host is its own Origin).
};

function run(args, timeout) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [cliPath, ...args], { timeout, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        // `conformance server` exits 1 whenever a check failed: judged below, from checks.json.
        if (err && (err.killed || err.signal || typeof err.code !== "number")) {
          reject(new Error(`conformance ${args.join(" ")}: ${err.message}\n${stdout.slice(-4000)}\n${stderr.slice(-4000)}`));
          return;
        }
        resolve({ stdout, stderr });
      });
  });
}

/** The server scenarios this version of the suite knows, from `conformance list`. */
async function serverScenarios() {
  const { stdout } = await run(["list"], 60_000);
  const section = stdout.split(/^Server scenarios.*$/m)[1]?.split(/^\S.*scenarios.*$/m)[0] ?? "";
  const names = [...section.matchAll(/^\s+-\s+(\S+)/gm)].map((m) => m[1]);
  assert.ok(names.length > 0, `no server scenarios in \`conformance list\`:\n${stdout}`);
  return names;
}

function pad(s, n) {
  s = String(s);
  return s.length >= n ? s : s + " ".repeat(n - s.length);
}

test(`conformance ${version}: all server scenarios against tenant conformance`, async () => {
  const scenarios = await serverScenarios();
  const out = mkdtempSync(path.join(tmpdir(), "mcp-conformance-"));
  try {
    await run(["server", "--url", url, "--suite", "all", "-o", out], 15 * 60_000);
    const results = new Map();
    for (const dir of readdirSync(out)) {
      const m = dir.match(/^server-(.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$/);
      if (!m) continue;
      results.set(m[1], JSON.parse(readFileSync(path.join(out, dir, "checks.json"), "utf8")));
    }

    const rows = [];
    const problems = [];
    for (const scenario of scenarios) {
      const checks = results.get(scenario);
      const expected = new Set(EXPECTED_FAILURES[scenario] ?? []);
      if (!checks) {
        problems.push(`${scenario}: did not run (no checks.json)`);
        rows.push([scenario, "-", "NOT RUN", expected.size ? "expected" : "", "UNEXPECTED"]);
        continue;
      }
      const failed = new Set(checks.filter((c) => c.status === "FAILURE").map((c) => c.id));
      if (checks.every((c) => c.status === "INFO")) rows.push([scenario, "(information only)", "INFO", "", "ok"]);
      for (const c of checks) {
        if (c.status === "INFO") continue;
        let verdict = "ok";
        if (c.status === "FAILURE" && !expected.has(c.id)) {
          verdict = "UNEXPECTED";
          problems.push(`${scenario}/${c.id} failed: ${c.errorMessage ?? c.description}`);
        } else if (c.status === "FAILURE") {
          verdict = "expected failure";
        } else if (expected.has(c.id) && !failed.has(c.id)) {
          verdict = "NOW PASSES";
        }
        rows.push([scenario, c.id, c.status, expected.has(c.id) ? "expected to fail" : "", verdict]);
      }
      for (const id of expected) {
        if (!failed.has(id)) {
          problems.push(`${scenario}/${id} is listed in EXPECTED_FAILURES but did not fail: remove it from the list`);
          if (!checks.some((c) => c.id === id)) rows.push([scenario, id, "absent", "expected to fail", "NOW PASSES"]);
        }
      }
    }
    for (const scenario of Object.keys(EXPECTED_FAILURES)) {
      if (!scenarios.includes(scenario)) problems.push(`${scenario} is listed in EXPECTED_FAILURES but the suite has no such scenario`);
    }

    const widths = [0, 1, 2, 3, 4].map((i) => Math.max(...rows.map((r) => String(r[i]).length),
      ["scenario", "check", "status", "list", "verdict"][i].length));
    const line = (r) => r.map((v, i) => pad(v, widths[i])).join("  ");
    const count = (v) => rows.filter((r) => r[4] === v).length;
    console.log([
      `\nMCP conformance ${version}, server scenarios, against ${url}`,
      line(["scenario", "check", "status", "list", "verdict"]),
      line(widths.map((w) => "-".repeat(w))),
      ...rows.map(line),
      `\n${rows.filter((r) => r[2] === "SUCCESS").length} checks passed, ${count("expected failure")} failed as expected, ` +
        `${rows.filter((r) => r[2] === "WARNING").length} warnings, ${problems.length} problem(s)`,
    ].join("\n"));
    if (problems.length > 0) assert.fail(`conformance problems:\n  ${problems.join("\n  ")}`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
