#!/usr/bin/env python3
"""Execute-API benchmark (SPEC §6): calls started and streamed to completion per second, and the
time from a cancel on one process to `cancelled` on a stream held by another.

    python3 bench/execute.py [--duration 10] [--clients 16] [--cancels 100] [--no-build]

Builds release binaries, starts a redis-server and two gateways in shared mode on it, then:
  - throughput: N client threads (Python http.client, keep-alive) each run `POST /mcp/execute`
    (`openai_chat`, a one-event answer, no pacing) then `GET /mcp/stream/{id}` to the `final`
    event, on alternating processes; the baseline, measured in the same run with the same
    client, is the same model answer through `POST /v1/chat/completions` (one request, no call
    record): the ratio is what the call record, its events and the stream cost;
  - cancel latency: a slow call executed on process A and streamed from process B; the clock
    runs from sending `POST /mcp/cancel/{id}` to process A until B's stream delivers
    `cancelled`; the baseline is a `GET /healthz` round trip to A with the same client.
Needs redis-server.
"""

import argparse, concurrent.futures, http.client, json, os, statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import ADMIN, binaries, free_port, stop, wait_ready  # noqa: E402

TENANT = """apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {name: bench}
spec:
  tenantId: bench
  defaultResponse: "Your invoices: INV-001 and INV-002."
  settings: {stream_chunk_chars: 1000}
---
apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {name: slow}
spec:
  tenantId: slow
  defaultResponse: "a slow answer, streamed one character at a time, that runs for a while"
  settings: {stream_chunk_chars: 1, stream_chunk_delay_ms: 100}
"""
HEADERS = {"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "invoices?"}]}


def request(conn, method, path, tenant, body=None):
    conn.request(method, path, body=None if body is None else json.dumps(body),
                 headers={**HEADERS, "X-Tenant-ID": tenant})
    r = conn.getresponse()
    return r.status, r.read()


def read_events(resp, until):
    """Reads SSE events from `resp` until one named in `until`; returns its name."""
    event = None
    while True:
        line = resp.readline()
        if not line:
            return None
        line = line.strip()
        if line.startswith(b"event: "):
            event = line[7:].decode()
        elif not line and event:
            if event in until:
                return event
            event = None


def one_call(conn, tenant):
    status, body = request(conn, "POST", "/mcp/execute", tenant, {"tool": "openai_chat", "input": CHAT})
    assert status == 200, body
    call_id = json.loads(body)["call_id"]
    conn.request("GET", f"/mcp/stream/{call_id}", headers={**HEADERS, "X-Tenant-ID": tenant})
    resp = conn.getresponse()
    end = read_events(resp, ("final", "error", "cancelled"))
    resp.read()
    assert end == "final", end


def one_chat(conn, tenant):
    status, body = request(conn, "POST", "/v1/chat/completions", tenant, CHAT)
    assert status == 200, body


def throughput(ports, clients, duration, work):
    stop_at = time.time() + duration
    done = [0] * clients

    def client(i):
        conn = http.client.HTTPConnection("127.0.0.1", ports[i % len(ports)], timeout=30)
        while time.time() < stop_at:
            work(conn, "bench")
            done[i] += 1
        conn.close()

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return sum(done) / duration


def cancel_latency(port_a, port_b, samples):
    times, base = [], []
    ca = http.client.HTTPConnection("127.0.0.1", port_a, timeout=30)
    for _ in range(samples):
        status, body = request(ca, "POST", "/mcp/execute", "slow", {"tool": "openai_chat", "input": CHAT})
        assert status == 200, body
        call_id = json.loads(body)["call_id"]
        cb = http.client.HTTPConnection("127.0.0.1", port_b, timeout=30)
        cb.request("GET", f"/mcp/stream/{call_id}", headers={**HEADERS, "X-Tenant-ID": "slow"})
        resp = cb.getresponse()
        assert read_events(resp, ("partial",)) == "partial"
        got = {}
        reader = threading.Thread(target=lambda: got.update(end=read_events(resp, ("cancelled", "final", "error")),
                                                            at=time.perf_counter()))
        reader.start()
        t0 = time.perf_counter()
        status, _ = request(ca, "POST", f"/mcp/cancel/{call_id}", "slow")
        assert status == 200
        reader.join(10)
        assert got.get("end") == "cancelled", got
        times.append((got["at"] - t0) * 1000)
        cb.close()
        t0 = time.perf_counter()
        ca.request("GET", "/healthz")
        ca.getresponse().read()
        base.append((time.perf_counter() - t0) * 1000)
    ca.close()
    return sorted(times), sorted(base)


def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--cancels", type=int, default=100)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    gw_bin, _ = binaries(args.no_build)
    procs = []
    tmp = tempfile.mkdtemp(prefix="understudy-execute-bench-")
    try:
        manifests = os.path.join(tmp, "manifests")
        os.makedirs(manifests)
        with open(os.path.join(manifests, "bench.yaml"), "w") as f:
            f.write(TENANT)
        redis_port = free_port()
        procs.append(subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                       "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL))
        ports = []
        for _ in range(2):
            port = free_port()
            procs.append(subprocess.Popen([gw_bin, "--listen", f"127.0.0.1:{port}", "--manifests", manifests,
                                           "--redis-url", f"redis://127.0.0.1:{redis_port}/0", "--admin-token", ADMIN],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          env=dict(os.environ, RUST_LOG="warn")))
            wait_ready(f"http://127.0.0.1:{port}/readyz")
            ports.append(port)
        rows = []
        for name, work in (("chat completions (baseline)", one_chat), ("execute + stream to final", one_call)):
            rate = throughput(ports, args.clients, args.duration, work)
            rows.append((name, rate))
            print(f"{name}: {rate:.0f}/s", file=sys.stderr)
        times, base = cancel_latency(ports[0], ports[1], args.cancels)
        print(f"\nExecute API, 2 processes in shared mode, {args.clients} client threads (Python http.client, "
              f"keep-alive), {args.duration} s each\n")
        print("| workload | per second | × baseline |")
        print("|---|---:|---:|")
        for name, rate in rows:
            print(f"| {name} | {rate:,.0f} | {rate / rows[0][1]:.2f} |")
        print(f"\ncancel on process A → `cancelled` on a stream held by process B, {args.cancels} calls:\n")
        print("| measure | p50 ms | p99 ms | max ms |")
        print("|---|---:|---:|---:|")
        print(f"| cancel → cancelled on the other process | {pct(times, 0.5):.2f} | {pct(times, 0.99):.2f} | {times[-1]:.2f} |")
        print(f"| baseline: GET /healthz round trip | {pct(base, 0.5):.2f} | {pct(base, 0.99):.2f} | {base[-1]:.2f} |")
    finally:
        stop(procs, tmp)


if __name__ == "__main__":
    main()
