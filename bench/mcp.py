#!/usr/bin/env python3
"""MCP benchmark: the gateway against the ceiling measured in the same run.

    python3 bench/mcp.py [--rounds 3] [--duration 8] [--sessions 1000] [--no-build]

Builds release binaries, then drives with wrk at 64 connections (server pinned to core 0, wrk to
core 1, rounds interleaved):
  - `tools/call` over `POST /mcp/message` (no session): ceiling, embedded, shared (Redis);
  - `tools/call` over streamable HTTP `POST /mcp` inside a session: every request looks its
    session up (and refreshes it at most every tenth of its idle time) in the session store —
    memory in embedded mode, Redis in shared mode;
  - `tools/call` on the hosted endpoint `POST /api/v1/mcp` with an editor API key: every request
    is counted by the per-caller limiter (raised out of the way with --hosted-rate-limit, so its
    cost shows and it never refuses) — memory in embedded mode, a Redis script in shared mode;
and prints requests/s, latency, CPU per request and their ratios to the ceiling (the ceiling of
`bench/src/main.rs` parses the JSON-RPC request and answers the gateway's own bytes). Then it
opens N legacy SSE sessions (`GET /mcp/sse`) on one process and reports the resident memory
each costs. Needs wrk, taskset and redis-server.
"""

import argparse, asyncio, json, os, resource, statistics, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import ADMIN, TICKS, api, binaries, cpu_ticks, free_port, gateways, rss_kib, start, stop, wait_ready, wrk  # noqa: E402

TENANT = """apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {name: bench}
spec: {tenantId: bench}
---
apiVersion: understudy.dev/v1alpha1
kind: Scenario
metadata: {name: invoices}
spec:
  tenantRef: bench
  toolName: get_invoices
  toolDescription: "List a customer's invoices."
  toolInputSchema:
    type: object
    properties: {customer_id: {type: string}, limit: {type: integer, minimum: 1}}
    required: [customer_id]
  toolData: {invoices: [{id: INV-001, amount: 42.0}, {id: INV-002, amount: 17.5}]}
"""
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "get_invoices", "arguments": {"customer_id": "cus_123", "limit": 2}}}


def post(url, body, headers):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(req) as r:
        return r.read(), dict(r.headers)


def lua(tmp, name, path_headers):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write(f"wrk.body = {json.dumps(json.dumps(CALL))}\n")
        for k, v in path_headers.items():
            f.write(f'wrk.headers["{k}"] = "{v}"\n')
    return path


async def open_legacy(port, n):
    """Opens n legacy SSE sessions; returns the open connections once each has its endpoint."""
    conns = []
    request = (b"GET /mcp/sse HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Tenant-ID: bench\r\n"
               b"Accept: text/event-stream\r\n\r\n")

    async def one():
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(request)
        await w.drain()
        buf = b""
        while b"event: endpoint" not in buf:
            chunk = await asyncio.wait_for(r.read(4096), 10)
            if not chunk:
                raise SystemExit("a legacy stream closed before its endpoint event")
            buf += chunk
        conns.append((r, w))

    for i in range(0, n, 100):
        await asyncio.gather(*(one() for _ in range(min(100, n - i))))
    return conns


def legacy_memory(port, pid, n):
    before = rss_kib(pid)

    async def run():
        conns = await open_legacy(port, n)
        await asyncio.sleep(2)
        after = rss_kib(pid)
        for _, w in conns:
            w.close()
        return after

    after = asyncio.run(run())
    return before, after


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.sessions + 512)), hard))
    gw_bin, ceiling_bin = binaries(args.no_build)
    procs = []
    tmp = tempfile.mkdtemp(prefix="understudy-mcp-bench-")
    try:
        servers, _ = gateways(gw_bin, tmp, TENANT, procs,
                              ["--admin-token", ADMIN, "--hosted-rate-limit", "1000000000"])
        emb = servers["embedded"][1]
        answer, _ = post(f"http://127.0.0.1:{emb}/mcp/message", CALL, {"X-Tenant-ID": "bench"})
        assert b'"isError":false' in answer, answer
        for f_name, data in (("plain.json", b"{}"), ("stream.sse", b""), ("mcp.json", answer)):
            with open(os.path.join(tmp, f_name), "wb") as f:
                f.write(data)
        port = free_port()
        p = start([ceiling_bin, f"127.0.0.1:{port}", os.path.join(tmp, "plain.json"), os.path.join(tmp, "stream.sse"),
                   os.path.join(tmp, "mcp.json")])
        procs.append(p)
        wait_ready(f"http://127.0.0.1:{port}/healthz")
        servers["ceiling"] = (p, port)

        message_lua = lua(tmp, "message.lua", {"Content-Type": "application/json", "X-Tenant-ID": "bench"})
        session_luas = {}
        for name in ("embedded", "shared"):
            init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                    "params": {"protocolVersion": "2025-11-25", "capabilities": {}}}
            _, headers = post(f"http://127.0.0.1:{servers[name][1]}/mcp", init,
                              {"X-Tenant-ID": "bench", "Accept": "application/json, text/event-stream"})
            sid = {k.lower(): v for k, v in headers.items()}["mcp-session-id"]
            session_luas[name] = lua(tmp, f"session-{name}.lua", {
                "Content-Type": "application/json", "X-Tenant-ID": "bench", "Mcp-Session-Id": sid,
                "MCP-Protocol-Version": "2025-11-25", "Accept": "application/json, text/event-stream"})
        session_luas["ceiling"] = message_lua
        hosted_luas = {"ceiling": message_lua}
        for name in ("embedded", "shared"):
            key = api(servers[name][1], "POST", "/api/v1/admin/keys",
                      {"name": "bench-hosted", "identity": "agent", "role": "editor"})["plaintext"]
            hosted_luas[name] = lua(tmp, f"hosted-{name}.lua", {
                "Content-Type": "application/json", "X-Tenant-ID": "bench", "X-API-Key": key})
            answer, _ = post(f"http://127.0.0.1:{servers[name][1]}/api/v1/mcp", CALL,
                             {"X-Tenant-ID": "bench", "X-API-Key": key})
            assert b'"isError":false' in answer, answer

        results = {}
        for r in range(args.rounds):
            for kind, path in (("message", "/mcp/message"), ("session", "/mcp"), ("hosted", "/api/v1/mcp")):
                for name in ("ceiling", "embedded", "shared"):
                    p, port = servers[name]
                    script = {"message": message_lua, "session": session_luas[name], "hosted": hosted_luas[name]}[kind]
                    t0 = cpu_ticks(p.pid)
                    rps, total, p50, p99 = wrk(f"http://127.0.0.1:{port}{path}", script, args.duration)
                    cpu_us = (cpu_ticks(p.pid) - t0) / TICKS * 1e6 / max(total, 1)
                    results.setdefault((name, kind), []).append((rps, p50, p99, cpu_us))
                    print(f"round {r + 1} {kind:8} {name:9} {rps:10.0f} req/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
                          f"{cpu_us:.1f} µs CPU/req", file=sys.stderr)

        def med(name, kind, i):
            return statistics.median(v[i] for v in results[(name, kind)])

        print(f"\nMCP tools/call, wrk -t1 -c64 -d{args.duration}s, {args.rounds} interleaved round(s), medians; "
              f"server on core 0, wrk on core 1\n")
        print("| workload | server | req/s | × ceiling | p50 ms | p99 ms | CPU µs/req | × ceiling CPU |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        labels = {"message": "tools/call on /mcp/message (no session)",
                  "session": "tools/call on /mcp in a session (memory / Redis store)",
                  "hosted": "tools/call on /api/v1/mcp, API key, limiter counted (memory / Redis)"}
        for kind in ("message", "session", "hosted"):
            base_rps, base_cpu = med("ceiling", kind, 0), med("ceiling", kind, 3)
            for name in ("ceiling", "embedded", "shared"):
                rps, cpu = med(name, kind, 0), med(name, kind, 3)
                print(f"| {labels[kind]} | {name} | {rps:,.0f} | {rps / base_rps:.3f} | {med(name, kind, 1):.2f} | "
                      f"{med(name, kind, 2):.2f} | {cpu:.1f} | {cpu / base_cpu:.2f} |")

        print(f"\nlegacy SSE sessions (GET /mcp/sse), {args.sessions} open on one process, RSS after 2 s:\n")
        print("| server | RSS before MiB | RSS with sessions MiB | KiB per session |")
        print("|---|---:|---:|---:|")
        for name in ("embedded", "shared"):
            p, port = servers[name]
            before, after = legacy_memory(port, p.pid, args.sessions)
            print(f"| {name} | {before / 1024:.1f} | {after / 1024:.1f} | {(after - before) / args.sessions:.1f} |")
            time.sleep(1)
    finally:
        stop(procs, tmp)


if __name__ == "__main__":
    main()
