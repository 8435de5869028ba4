#!/usr/bin/env python3
"""LLM-surface benchmark: the gateway against a ceiling measured in the same run.

    python3 bench/run.py [--rounds 3] [--duration 10] [--no-build]

Builds release binaries, then drives, with wrk at 64 connections (server pinned to core 0, wrk
to core 1, rounds interleaved): the ceiling (bench/src/main.rs: a minimal axum server that parses
the same request and returns the gateway's own bytes), the gateway in embedded mode, and the
gateway in shared mode (Redis). It prints requests/s, p50/p99 latency, server CPU per request
and RSS, each with its ratio to the ceiling, then start-up time and idle RSS with 1,000
scenarios. Needs wrk, taskset and redis-server (Debian packages wrk, util-linux, redis-server).
"""
import argparse, json, os, re, shutil, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")
ADMIN = "bench-admin-token-0123456789"
RESPONSE = "Here are your invoices for this month: INV-001, INV-002, INV-003 and INV-004 total."  # 80+ chars
TENANT = f"""apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {{name: bench}}
spec: {{tenantId: bench, settings: {{stream_chunk_chars: 4}}}}
---
apiVersion: understudy.dev/v1alpha1
kind: Scenario
metadata: {{name: invoices}}
spec: {{tenantRef: bench, keywords: [invoice], response: "{RESPONSE[:80]}"}}
"""
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "You are a billing assistant."},
                                             {"role": "user", "content": "Show me my invoices please"}]}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, limit=20.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return True
        except Exception:
            pass
        time.sleep(0.005)
    raise SystemExit(f"not ready: {url}")


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def rss_kib(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def to_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s)", s)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v if unit == "ms" else v * 1000


def wrk(url, lua, duration):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{duration}s", "--latency", "-s", lua, url],
                         capture_output=True, text=True, check=True).stdout
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        total = int(re.search(r"(\d+) requests in", out).group(1))
        p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
        p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    except (AttributeError, ValueError):
        raise SystemExit(f"cannot read wrk's output for {url}:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} non-2xx responses\n{out}")
    return rps, total, p50, p99


def lua_file(tmp, name, stream, tenant_header):
    body = dict(BODY, stream=stream)
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write(f"wrk.body = {json.dumps(json.dumps(body))}\n")
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        if tenant_header:
            f.write('wrk.headers["X-Tenant-ID"] = "bench"\n')
    return path


def fetch(url, stream):
    req = urllib.request.Request(url, data=json.dumps(dict(BODY, stream=stream)).encode(),
                                 headers={"Content-Type": "application/json", "X-Tenant-ID": "bench"})
    with urllib.request.urlopen(req) as r:
        return r.read()


def api(port, method, path, body=None, key=ADMIN):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"null")


def private_tenant(port):
    """A private tenant owned by a fresh editor key, answering like the bench tenant; returns the key."""
    key = api(port, "POST", "/api/v1/admin/keys", {"name": "bench-owner", "identity": "owner", "role": "editor"})["plaintext"]
    api(port, "POST", "/public/tenants", {"tenant_id": "bench_private", "settings": {"stream_chunk_chars": 4}}, key)
    api(port, "POST", "/public/tenants/bench_private/scenarios", {"keywords": ["invoice"], "response": RESPONSE[:80]}, key)
    return key


def propagation(port_a, port_b, writes):
    """Milliseconds from sending a scenario write to process A until process B answers with it."""
    import http.client
    key = api(port_a, "POST", "/api/v1/admin/keys", {"name": "prop", "identity": "prop", "role": "editor"})["plaintext"]
    api(port_a, "POST", "/public/tenants", {"tenant_id": "prop"}, key)
    conn = http.client.HTTPConnection("127.0.0.1", port_b)
    times = []
    for i in range(writes):
        word = f"kw{i}x"
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": word}]})
        t0 = time.perf_counter()
        api(port_a, "POST", "/public/tenants/prop/scenarios", {"keywords": [word], "response": f"answer {i}"}, key)
        while True:
            conn.request("POST", "/v1/chat/completions", body, {"X-Tenant-ID": "prop", "Authorization": f"Bearer {key}",
                                                                 "Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status == 200 and f"answer {i}".encode() in data:
                break
            if time.perf_counter() - t0 > 5:
                raise SystemExit(f"write {i} not served by the second process within 5 s")
        times.append((time.perf_counter() - t0) * 1000)
    return times


def start(cmd, **kw):
    return subprocess.Popen(["taskset", "-c", "0"] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)


def binaries(no_build):
    """Checks the tools, builds the release binaries (unless told not to); returns (gateway, ceiling)."""
    for tool in ("wrk", "taskset", "redis-server"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is required (apt-get install wrk util-linux redis-server)")
    if not no_build:
        subprocess.run(["cargo", "build", "--release", "-q", "-p", "understudy-gateway", "-p", "understudy-bench"],
                       cwd=ROOT, check=True)
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "understudy-gateway"), os.path.join(target, "release", "ceiling")


def gateways(gw_bin, tmp, tenant_yaml, procs, extra_args=()):
    """A redis-server (on core 1) and the gateway in embedded and shared mode on `tenant_yaml`
    (on core 0); returns {"embedded": (proc, port), "shared": (proc, port)} and Redis's port."""
    manifests = os.path.join(tmp, "manifests")
    os.makedirs(manifests)
    with open(os.path.join(manifests, "bench.yaml"), "w") as f:
        f.write(tenant_yaml)
    redis_port = free_port()
    procs.append(subprocess.Popen(["taskset", "-c", "1", "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL))
    servers = {}
    for name, extra in (("embedded", []), ("shared", ["--redis-url", f"redis://127.0.0.1:{redis_port}/0"])):
        port = free_port()
        p = start([gw_bin, "--listen", f"127.0.0.1:{port}", "--manifests", manifests, "--log-format", "json"]
                  + list(extra_args) + extra, env=dict(os.environ, RUST_LOG="warn"))
        procs.append(p)
        wait_ready(f"http://127.0.0.1:{port}/readyz")
        servers[name] = (p, port)
    return servers, redis_port


def stop(procs, tmp):
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    gw_bin, ceiling_bin = binaries(args.no_build)
    procs = []
    tmp = tempfile.mkdtemp(prefix="understudy-bench-")
    try:
        servers, redis_port = gateways(gw_bin, tmp, TENANT, procs, ["--admin-token", ADMIN])
        emb_port = servers["embedded"][1]
        plain = fetch(f"http://127.0.0.1:{emb_port}/v1/chat/completions", False)
        stream = fetch(f"http://127.0.0.1:{emb_port}/v1/chat/completions", True)
        chunks = stream.count(b"data: ") - 1
        for fname, data in (("plain.json", plain), ("stream.sse", stream)):
            with open(os.path.join(tmp, fname), "wb") as f:
                f.write(data)
        port = free_port()
        p = start([ceiling_bin, f"127.0.0.1:{port}", os.path.join(tmp, "plain.json"), os.path.join(tmp, "stream.sse")])
        procs.append(p)
        wait_ready(f"http://127.0.0.1:{port}/healthz")
        servers["ceiling"] = (p, port)
        idle = {k: rss_kib(p.pid) for k, (p, _) in servers.items()}
        luas = {s: lua_file(tmp, f"{s}.lua", s == "stream", True) for s in ("plain", "stream")}
        owner_key = private_tenant(emb_port)
        auth_lua = os.path.join(tmp, "auth.lua")
        with open(auth_lua, "w") as f:
            f.write('wrk.method = "POST"\n')
            f.write(f"wrk.body = {json.dumps(json.dumps(BODY))}\n")
            f.write('wrk.headers["Content-Type"] = "application/json"\n')
            f.write('wrk.headers["X-Tenant-ID"] = "bench_private"\n')
            f.write(f'wrk.headers["Authorization"] = "Bearer {owner_key}"\n')
        results = {}
        for r in range(args.rounds):
            for kind in ("plain", "stream"):
                names = ["ceiling", "embedded", "embedded+key", "shared"] if kind == "plain" else ["ceiling", "embedded", "shared"]
                for name in names:
                    p, port = servers["embedded" if name == "embedded+key" else name]
                    lua = auth_lua if name == "embedded+key" else luas[kind]
                    t0 = cpu_ticks(p.pid)
                    rps, total, p50, p99 = wrk(f"http://127.0.0.1:{port}/v1/chat/completions", lua, args.duration)
                    cpu_us = (cpu_ticks(p.pid) - t0) / TICKS * 1e6 / max(total, 1)
                    results.setdefault((name, kind), []).append((rps, p50, p99, cpu_us))
                    print(f"round {r + 1} {kind:6} {name:12} {rps:10.0f} req/s  p50 {p50:.2f} ms  p99 {p99:.2f} ms  "
                          f"{cpu_us:.1f} µs CPU/req", file=sys.stderr)
        peak = {k: rss_kib(p.pid, "VmHWM") for k, (p, _) in servers.items()}

        def med(name, kind, i):
            return statistics.median(v[i] for v in results[(name, kind)])

        print(f"\nLLM surface, wrk -t1 -c64 -d{args.duration}s, {args.rounds} interleaved round(s), medians; "
              f"server on core 0, wrk on core 1; stream = {chunks} SSE events incl. [DONE]\n")
        print("| workload | server | req/s | × ceiling | p50 ms | p99 ms | CPU µs/req | × ceiling CPU | idle / peak RSS MiB |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---|")
        for kind in ("plain", "stream"):
            base_rps, base_cpu = med("ceiling", kind, 0), med("ceiling", kind, 3)
            for name in ("ceiling", "embedded", "shared"):
                rps, cpu = med(name, kind, 0), med(name, kind, 3)
                label = "non-streamed chat" if kind == "plain" else "streamed chat"
                print(f"| {label} | {name} | {rps:,.0f} | {rps / base_rps:.3f} | {med(name, kind, 1):.2f} | "
                      f"{med(name, kind, 2):.2f} | {cpu:.1f} | {cpu / base_cpu:.2f} | {idle[name] / 1024:.1f} / {peak[name] / 1024:.1f} |")
        rps, cpu = med("embedded+key", "plain", 0), med("embedded+key", "plain", 3)
        base_rps, base_cpu = med("ceiling", "plain", 0), med("ceiling", "plain", 3)
        print(f"| non-streamed chat, private tenant, API key | embedded | {rps:,.0f} | {rps / base_rps:.3f} | "
              f"{med('embedded+key', 'plain', 1):.2f} | {med('embedded+key', 'plain', 2):.2f} | {cpu:.1f} | {cpu / base_cpu:.2f} | |")
        for kind in ("plain", "stream"):
            print(f"\nshared / embedded ({kind}): {med('shared', kind, 0) / med('embedded', kind, 0):.3f}")
        paired = statistics.median(k[0] / e[0] for k, e in zip(results[("embedded+key", "plain")], results[("embedded", "plain")]))
        print(f"\nauthenticated (API key, private tenant) / anonymous (global tenant), embedded: "
              f"{med('embedded+key', 'plain', 0) / med('embedded', 'plain', 0):.3f} (ratio of medians), "
              f"{paired:.3f} (median of per-round ratios, runs back to back)")

        # Config propagation: write through one shared process, served by another.
        port_b = free_port()
        pb = subprocess.Popen([gw_bin, "--listen", f"127.0.0.1:{port_b}", "--redis-url", f"redis://127.0.0.1:{redis_port}/0",
                               "--admin-token", ADMIN], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=dict(os.environ, RUST_LOG="warn"))
        procs.append(pb)
        wait_ready(f"http://127.0.0.1:{port_b}/readyz")
        times = sorted(propagation(servers["shared"][1], port_b, 200))
        p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99) - 1]
        print(f"\nconfig propagation (scenario POSTed to process A until process B answers with it), 200 writes: "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {times[-1]:.1f} ms")

        # Start-up with 1,000 scenarios.
        big = os.path.join(tmp, "big")
        os.makedirs(big)
        with open(os.path.join(big, "big.yaml"), "w") as f:
            f.write(TENANT.replace("name: invoices", "name: s0"))
            for i in range(1, 1000):
                f.write(f"---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {{name: s{i}}}\n"
                        f"spec: {{tenantRef: bench, keywords: [kw{i}, other{i}], priority: {i % 7}, "
                        f"response: \"answer {i}\", toolName: tool_{i}, toolInputSchema: {{type: object}}}}\n")
        times, rss = [], []
        for _ in range(3):
            port = free_port()
            t0 = time.time()
            p = subprocess.Popen([gw_bin, "--listen", f"127.0.0.1:{port}", "--manifests", big],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn"))
            wait_ready(f"http://127.0.0.1:{port}/readyz")
            times.append((time.time() - t0) * 1000)
            time.sleep(1)
            rss.append(rss_kib(p.pid) / 1024)
            p.terminate()
            p.wait()
        print(f"\nstart-up to ready with 1,000 scenarios (embedded): {statistics.median(times):.0f} ms (median of 3); "
              f"idle RSS {statistics.median(rss):.1f} MiB")
    finally:
        stop(procs, tmp)


if __name__ == "__main__":
    main()
