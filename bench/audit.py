#!/usr/bin/env python3
"""Audit benchmark: what recording costs the request path, and how the log answers at size.

    python3 bench/audit.py [--rounds 3] [--duration 8] [--events 1000000] [--no-build]

Builds release binaries, then:
  1. CPU per request with audit on against audit off, measured in the same run (wrk -t1 -c64,
     servers pinned to core 0, wrk and Redis to core 1, rounds interleaved): non-streamed chat
     and `tools/call` on `/mcp/message`, embedded and shared (Redis) gateways, plus the ceiling
     (bench/src/main.rs) for chat, so the audit-on throughput is also read against it.
  2. Queries over N events (default 1,000,000) written into Redis by `audit-fill` (the audit
     store itself, as the writer writes): the portal API's `audit/events` for several filters,
     end to end over HTTP, median of 5. Baseline: the unfiltered first page.
  3. Export of 100,000 rows (NDJSON, streamed), read by a slow and by a fast client: the
     gateway's peak RSS growth against a 10,000-row export (flat memory: both stay the same).
Needs wrk, taskset and redis-server.
"""
import argparse, json, os, statistics, subprocess, sys, tempfile, threading, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import (ADMIN, BODY, RESPONSE, TICKS, binaries, cpu_ticks, fetch, free_port, lua_file,  # noqa: E402
                 rss_kib, start, stop, wait_ready, wrk)

TENANT = f"""apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {{name: bench}}
spec: {{tenantId: bench, settings: {{stream_chunk_chars: 4}}}}
---
apiVersion: understudy.dev/v1alpha1
kind: Scenario
metadata: {{name: invoices}}
spec: {{tenantRef: bench, keywords: [invoice], response: "{RESPONSE[:80]}"}}
---
apiVersion: understudy.dev/v1alpha1
kind: Scenario
metadata: {{name: invoice-tool}}
spec:
  tenantRef: bench
  toolName: get_invoices
  toolDescription: "List a customer's invoices."
  toolInputSchema:
    type: object
    properties: {{customer_id: {{type: string}}, limit: {{type: integer, minimum: 1}}}}
    required: [customer_id]
  toolData: {{invoices: [{{id: INV-001, amount: 42.0}}, {{id: INV-002, amount: 17.5}}]}}
"""
CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "get_invoices", "arguments": {"customer_id": "cus_123", "limit": 2}}}


def get(port, path, timeout=60):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"X-API-Key": ADMIN})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def tool_lua(tmp):
    path = os.path.join(tmp, "tool.lua")
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write(f"wrk.body = {json.dumps(json.dumps(CALL))}\n")
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        f.write('wrk.headers["X-Tenant-ID"] = "bench"\n')
    return path


def launch(gw_bin, manifests, extra):
    port = free_port()
    p = start([gw_bin, "--listen", f"127.0.0.1:{port}", "--manifests", manifests, "--admin-token", ADMIN,
               "--log-format", "json"] + extra, env=dict(os.environ, RUST_LOG="warn"))
    wait_ready(f"http://127.0.0.1:{port}/readyz")
    return p, port


def cpu_section(args, gw_bin, ceiling_bin, tmp, procs, redis_url):
    manifests = os.path.join(tmp, "manifests")
    os.makedirs(manifests)
    with open(os.path.join(manifests, "bench.yaml"), "w") as f:
        f.write(TENANT)
    servers = {}
    for mode, extra in (("embedded", []), ("shared", ["--redis-url", redis_url])):
        for audit, flags in (("off", ["--audit", "false"]), ("on", ["--audit", "true"]),
                             ("summaries", ["--audit", "true", "--audit-payloads", "false"])):
            p, port = launch(gw_bin, manifests, extra + flags)
            procs.append(p)
            servers[f"{mode} audit {audit}"] = (p, port)
    emb = servers["embedded audit off"][1]
    plain = fetch(f"http://127.0.0.1:{emb}/v1/chat/completions", False)
    for fname, data in (("plain.json", plain), ("stream.sse", b"")):
        with open(os.path.join(tmp, fname), "wb") as f:
            f.write(data)
    port = free_port()
    p = start([ceiling_bin, f"127.0.0.1:{port}", os.path.join(tmp, "plain.json"), os.path.join(tmp, "stream.sse")])
    procs.append(p)
    wait_ready(f"http://127.0.0.1:{port}/healthz")
    servers["ceiling"] = (p, port)
    chat = lua_file(tmp, "chat.lua", False, True)
    tool = tool_lua(tmp)
    results = {}
    for r in range(args.rounds):
        for kind, path, script in (("chat", "/v1/chat/completions", chat), ("tools/call", "/mcp/message", tool)):
            for name in servers:
                if name == "ceiling" and kind != "chat":
                    continue
                p, port = servers[name]
                t0 = cpu_ticks(p.pid)
                rps, total, p50, p99 = wrk(f"http://127.0.0.1:{port}{path}", script, args.duration)
                cpu_us = (cpu_ticks(p.pid) - t0) / TICKS * 1e6 / max(total, 1)
                results.setdefault((name, kind), []).append((rps, p50, p99, cpu_us))
                print(f"round {r + 1} {kind:10} {name:18} {rps:10.0f} req/s  p99 {p99:.2f} ms  {cpu_us:.1f} µs CPU/req",
                      file=sys.stderr)
    # Every recorded request must have reached the store: the audit-on gateways' written counters.
    time.sleep(1.5)
    written = {}
    for name, (_, port) in servers.items():
        if "audit on" in name:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            w = sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("understudy_audit_events_written_total"))
            d = sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith("understudy_audit_events_dropped_total"))
            written[name] = (w, d)

    def med(name, kind, i):
        return statistics.median(v[i] for v in results[(name, kind)])

    print(f"\n1. Audit on against audit off, wrk -t1 -c64 -d{args.duration}s, {args.rounds} interleaved round(s), "
          "medians; servers on core 0, wrk and Redis on core 1\n")
    print("| workload | mode | audit | req/s | × audit off | CPU µs/req | CPU × audit off | req/s × ceiling |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for kind in ("chat", "tools/call"):
        for mode in ("embedded", "shared"):
            off = f"{mode} audit off"
            for audit in ("off", "on", "summaries"):
                name = f"{mode} audit {audit}"
                ceiling = f"{med(name, kind, 0) / med('ceiling', 'chat', 0):.3f}" if kind == "chat" else ""
                label = {"off": "off", "on": "on (payloads)", "summaries": "on, summaries only"}[audit]
                print(f"| {kind} | {mode} | {label} | {med(name, kind, 0):,.0f} | {med(name, kind, 0) / med(off, kind, 0):.3f} | "
                      f"{med(name, kind, 3):.1f} | {med(name, kind, 3) / med(off, kind, 3):.3f} | {ceiling} |")
    print(f"| chat | ceiling | {med('ceiling', 'chat', 0):,.0f} | | | {med('ceiling', 'chat', 3):.1f} | | | |")
    for name, (w, d) in written.items():
        print(f"\n{name}: {w:,.0f} events written, {d:,.0f} dropped")
    for p, _ in servers.values():
        p.terminate()


def query_section(args, gw_bin, fill_bin, tmp, procs, redis_url):
    t0 = time.time()
    out = subprocess.run(["taskset", "-c", "0", fill_bin, redis_url, str(args.events)], capture_output=True, text=True,
                         check=True).stdout
    fill = json.loads(out)
    print(f"\n2. {args.events:,} events written by audit-fill in {fill['seconds']:.1f} s "
          f"({fill['per_second']:,.0f}/s through the audit store, batches of 1,000)", file=sys.stderr)
    manifests = os.path.join(tmp, "empty")
    os.makedirs(manifests, exist_ok=True)
    p, port = launch(gw_bin, manifests, ["--redis-url", redis_url, "--audit-max-events", str(args.events * 2),
                                         "--audit-retention", "30d"])
    procs.append(p)
    now = time.time()
    hour_ago = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 3600))
    queries = [
        ("first page, no filter (baseline)", "/api/v1/portal/audit/events"),
        ("tool (one index)", "/api/v1/portal/audit/events?tool=tool7"),
        ("tool + user + success (index intersection)",
         "/api/v1/portal/audit/events?tool=tool7&user=user17&success=true"),
        ("tenant + source, page 100", "/api/v1/portal/audit/events?tenant=tenant3&source=mcp&offset=5000&limit=50"),
        ("q text over the last hour", f"/api/v1/portal/audit/events?q=upstream&from={hour_ago}"),
        ("param.city=Paris over the last hour (JSON path)",
         f"/api/v1/portal/audit/events?param.city=Paris&from={hour_ago}"),
        ("tool + param.n=7 over 24 h (index + JSON path)", "/api/v1/portal/audit/events?tool=tool7&param.n=7"),
        ("timeseries, last hour by 1m", "/api/v1/portal/audit/timeseries?bucket=1m"),
        ("breakdown by tool, last hour", "/api/v1/portal/audit/breakdown?by=tool"),
    ]
    rows = []
    for label, path in queries:
        times, total = [], None
        for _ in range(5):
            t = time.perf_counter()
            body = json.loads(get(port, path))
            times.append((time.perf_counter() - t) * 1000)
            total = body.get("total", len(body.get("buckets", body.get("rows", []))))
        rows.append((label, statistics.median(times), max(times), total))
    base = rows[0][1]
    print(f"\n2. Queries over {args.events:,} events in Redis (portal API over HTTP, median of 5; target ≤ 1,000 ms)\n")
    print("| query | matches | median ms | max ms | × baseline | ≤ 1 s |")
    print("|---|---:|---:|---:|---:|---|")
    for label, m, mx, total in rows:
        print(f"| {label} | {total:,} | {m:.1f} | {mx:.1f} | {m / base:.1f} | {'yes' if mx <= 1000 else 'NO'} |")
    return p, port


def export_section(p, port):
    def run(rows, slow):
        base = rss_kib(p.pid)
        peak = [base]
        done = threading.Event()

        def sample():
            while not done.is_set():
                peak[0] = max(peak[0], rss_kib(p.pid))
                time.sleep(0.005)

        th = threading.Thread(target=sample)
        th.start()
        t = time.perf_counter()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/portal/audit/export?limit={rows}",
                                     headers={"X-API-Key": ADMIN})
        n = 0
        with urllib.request.urlopen(req, timeout=600) as r:
            while True:
                chunk = r.read(64 * 1024 if not slow else 8 * 1024)
                if not chunk:
                    break
                n += chunk.count(b"\n")
                if slow:
                    time.sleep(0.002)
        took = time.perf_counter() - t
        done.set()
        th.join()
        return n, took, (peak[0] - base) / 1024

    print("\n3. Export (NDJSON, streamed in pages of 1,000): the gateway's peak RSS growth while it runs\n")
    print("| rows | reader | rows read | seconds | peak RSS growth MiB |")
    print("|---:|---|---:|---:|---:|")
    out = {}
    for rows in (10_000, 100_000):
        for slow in (False, True):
            n, took, grow = run(rows, slow)
            out[(rows, slow)] = grow
            print(f"| {rows:,} | {'slow (8 KiB, 2 ms pauses)' if slow else 'fast'} | {n:,} | {took:.2f} | {grow:.1f} |")
    print(f"\n100,000 / 10,000 rows, peak RSS growth (fast reader): "
          f"{out[(100_000, False)]:.1f} / {out[(10_000, False)]:.1f} MiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--skip-cpu", action="store_true", help="skip section 1")
    ap.add_argument("--skip-query", action="store_true", help="skip sections 2 and 3")
    args = ap.parse_args()
    gw_bin, ceiling_bin = binaries(args.no_build)
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "understudy-bench", "--bin", "audit-fill"],
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), check=True)
    fill_bin = os.path.join(os.path.dirname(gw_bin), "audit-fill")
    procs = []
    tmp = tempfile.mkdtemp(prefix="understudy-audit-bench-")
    try:
        redis_port = free_port()
        procs.append(subprocess.Popen(["taskset", "-c", "1", "redis-server", "--port", str(redis_port), "--bind",
                                       "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL))
        time.sleep(0.3)
        if not args.skip_cpu:
            cpu_section(args, gw_bin, ceiling_bin, tmp, procs, f"redis://127.0.0.1:{redis_port}/0")
        if args.skip_query:
            return
        qredis = free_port()
        procs.append(subprocess.Popen(["taskset", "-c", "1", "redis-server", "--port", str(qredis), "--bind",
                                       "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL))
        time.sleep(0.3)
        p, port = query_section(args, gw_bin, fill_bin, tmp, procs, f"redis://127.0.0.1:{qredis}/0")
        export_section(p, port)
    finally:
        stop(procs, tmp)


if __name__ == "__main__":
    main()
