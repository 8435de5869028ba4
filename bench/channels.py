#!/usr/bin/env python3
"""Channels benchmark (SPEC §7): delivery across processes, memory per idle subscriber, publish
throughput, each against its target in TARGETS.

    python3 bench/channels.py [--duration 30] [--rate 20] [--subscribers 2000] [--idle 10000]
                              [--publish-seconds 8] [--no-build]

Builds release binaries, starts a redis-server (core 1) and the gateway in embedded and shared
mode (core 0; a trivial tenant manifest, no credential: channels need none, and
--max-connections above the subscriber counts), then, in this order (memory first, on fresh
processes):
  - memory: N idle SSE subscribers (`GET /channel/v1/public/{id}`) spread over 10 public
    channels on one process, each counted once its 200 response head arrived (the server
    subscribes before it answers); the process's RSS before and 2 s after, per subscriber
    (target ≤ 16 KiB); embedded, then shared;
  - delivery: a second shared-mode process on the same Redis; S subscribers to one public channel,
    half on each process, held by two client processes (one per gateway, raw sockets on epoll,
    core 1: Python's asyncio streams cost too much per event for 40,000 events/s); once every
    subscriber has its head, R messages/s for D s are published through the first process (A)
    over one keep-alive connection, each payload `{"seq": n, "sent_ns": <wall clock at send>}`.
    Every subscriber must see every sequence exactly once and in order: prints deliveries
    expected and received, lost, duplicated, out of order, publish → delivery latency p50, p99
    (target ≤ 100 ms) and max, for subscribers on A (local) and on B (through Redis), and the
    CPU each process used;
  - publish: wrk -t1 -c64 POSTing a short string payload to one channel
    (`POST /v1/channels/{id}/publish`, `X-Publish-Token`) for P s on one process, embedded and
    shared: messages/s (target ≥ 5,000/s), latency, CPU per message, RSS after (the retention
    cap keeps it bounded).
Then a markdown summary to paste into a note. Needs wrk and redis-server, and taskset to pin
(without it everything runs unpinned).
"""

import argparse, array, asyncio, http.client, json, multiprocessing, os, re, resource, select, shutil, signal, socket
import sys, tempfile, time, urllib.error, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import TICKS, binaries, cpu_ticks, free_port, gateways, rss_kib, start, stop, wait_ready, wrk  # noqa: E402

TENANT = """apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {name: bench}
spec: {tenantId: bench}
"""
P99_TARGET_MS = 100
KIB_TARGET = 16
PUBLISH_TARGET = 5000
IDLE_CHANNELS = 10
DRAIN_S = 10  # after the last publish, how long subscribers may take to receive everything
READY_S = 30  # how long the subscribers may take to get their response heads
SEQ = re.compile(rb'"seq":\s*(\d+)')
SENT = re.compile(rb'"sent_ns":\s*(\d+)')


def pin(core):
    """Pins this process to `core` when the machine has it (what taskset does); never fails."""
    try:
        allowed = os.sched_getaffinity(0)
        if core in allowed and len(allowed) > 1:
            os.sched_setaffinity(0, {core})
    except (AttributeError, OSError):
        pass


def taskset_stand_in(tmp):
    """run.py's helpers pin with `taskset -c N` and refuse to start without it: where it is
    missing, a stand-in on PATH runs the command unpinned."""
    if shutil.which("taskset"):
        return
    bin_dir = os.path.join(tmp, "bin")
    os.makedirs(bin_dir)
    path = os.path.join(bin_dir, "taskset")
    with open(path, "w") as f:
        f.write('#!/bin/sh\n# stand-in for `taskset -c N command...`: runs the command unpinned\nshift 2\nexec "$@"\n')
    os.chmod(path, 0o755)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    print("taskset not found: gateways, Redis and wrk run unpinned", file=sys.stderr)


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        raise SystemExit(f"this run needs {need} open files, the hard limit is {hard}: raise it "
                         f"(ulimit -Hn) or lower --idle / --subscribers")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def ms(us, p):
    """Percentile p of sorted µs figures, in ms (1.0: the largest)."""
    return pct(us, p) / 1000


def call(port, method, path, body=None, headers=None):
    """(status, JSON answer or its text) of one request; an HTTP error status is returned, not raised."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except OSError as e:
        raise SystemExit(f"{method} {path} on port {port}: {e}")
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")


def create_channel(port, name):
    status, ch = call(port, "POST", "/v1/channels", {"name": name, "visibility": "public"})
    if not 200 <= status < 300 or not isinstance(ch, dict) or not ch.get("id") or not ch.get("publish_token"):
        raise SystemExit(f"POST /v1/channels on port {port}: wanted 201 with id and publish_token, got {status}: {ch}")
    if not str(ch.get("channel_url", "")).endswith(sse_path(ch)):
        print(f"note: channel_url {ch.get('channel_url')!r} does not end with {sse_path(ch)}", file=sys.stderr)
    return ch


def sse_path(ch):
    return f"/channel/v1/public/{ch['id']}"


def publish_path(ch):
    return f"/v1/channels/{ch['id']}/publish"


def sse_request(path, port):
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
            f"Cache-Control: no-cache\r\n\r\n").encode()


# --- memory: idle subscribers ---------------------------------------------------------------

async def open_idle(port, paths, n):
    """Opens n SSE subscribers over `paths` (round robin); returns their writers once each has its 200 head."""
    conns = []

    async def one(path):
        try:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(sse_request(path, port))
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError) as e:
            raise RuntimeError(f"GET {path} on port {port}: no response head after {len(conns)} subscribers "
                               f"({type(e).__name__}: {e}); is the gateway's --max-connections or open-file "
                               f"limit below {n}?") from None
        if not head.startswith(b"HTTP/1.1 200"):
            try:
                body = await asyncio.wait_for(r.read(1000), 1)
            except (OSError, asyncio.TimeoutError):
                body = b""
            raise RuntimeError(f"GET {path} on port {port}: {head.decode(errors='replace').strip()}\n"
                               f"{body.decode(errors='replace')}")
        conns.append(w)

    for i in range(0, n, 100):
        await asyncio.gather(*(one(paths[j % len(paths)]) for j in range(i, min(n, i + 100))))
    return conns


def idle_memory(port, pid, n):
    """(RSS before, RSS with n idle subscribers) of process `pid`, KiB."""
    paths = [sse_path(create_channel(port, f"idle-{k}")) for k in range(IDLE_CHANNELS)]
    time.sleep(0.5)
    before = rss_kib(pid)

    async def run():
        conns = await open_idle(port, paths, n)
        await asyncio.sleep(2)
        after = rss_kib(pid)
        for w in conns:
            w.close()
        return after

    try:
        after = asyncio.run(run())
    except RuntimeError as e:
        raise SystemExit(str(e))
    return before, after


# --- delivery: subscribers in client processes ------------------------------------------------

def dechunk(buf, left):
    """Decodes HTTP/1.1 chunked bytes: (data, undecoded rest, new `left`, whether the last chunk
    came); `left` is the data bytes still due in the current chunk, -1 when its CRLF is next."""
    out = []
    pos, size = 0, len(buf)
    while pos < size:
        if left > 0:
            take = min(left, size - pos)
            out.append(buf[pos:pos + take])
            pos += take
            left -= take
            if left == 0:
                left = -1
        elif left == -1:
            if size - pos < 2:
                break
            pos += 2
            left = 0
        else:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            length = int(buf[pos:eol].split(b";", 1)[0], 16)
            pos = eol + 2
            if length == 0:
                return b"".join(out), b"", 0, True
            left = length
    return b"".join(out), buf[pos:], left, False


def deliveries(port, path, n, planned, pipe):
    """Holds n subscribers to `path`; sends ("ready", n) once all have their 200 head, then counts
    and times every event until the parent's ("stop", total) and every subscriber has `total`
    sequences (or DRAIN_S passed). Returns the tallies."""
    request = sse_request(path, port)
    ep = select.epoll()
    socks, index = [], {}
    for i in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(request)
        except OSError as e:
            raise RuntimeError(f"connection {i} of {n} to port {port}: {e}") from None
        s.setblocking(False)
        socks.append(s)
        index[s.fileno()] = i
        ep.register(s.fileno(), select.EPOLLIN)
    pfd = pipe.fileno()
    ep.register(pfd, select.EPOLLIN)
    head = [b""] * n          # response head so far; None once it is complete
    chunked = [False] * n
    raw = [b""] * n           # chunked bytes not decoded yet
    left = [0] * n            # see dechunk
    pend = [b""] * n          # decoded bytes after the last complete event
    seen = [bytearray(planned) for _ in range(n)]
    top = [-1] * n            # highest sequence seen
    got = [0] * n             # distinct sequences seen
    lat = array.array("q")    # publish → delivery, µs, first deliveries only
    received = dups = disorder = unparsed = foreign = ended = live = 0
    total = remaining = drain_until = None
    ready_by = time.monotonic() + READY_S
    cpu0 = wall0 = None
    while True:
        for fd, _ in ep.poll(0.2):
            if fd == pfd:
                total = pipe.recv()[1]
                remaining = sum(1 for g in got if g < total)
                drain_until = time.monotonic() + DRAIN_S
                continue
            i = index[fd]
            try:
                data = socks[i].recv(262144)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            now = time.time_ns()
            if not data:
                ep.unregister(fd)
                if head[i] is not None:
                    raise RuntimeError(f"GET {path} on port {port}: subscriber {i} closed before its response "
                                       f"head ({live} of {n} had theirs; connection cap?): {head[i][:300]!r}")
                ended += 1
                continue
            if head[i] is not None:
                buf = head[i] + data
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    head[i] = buf
                    continue
                status = buf[:buf.find(b"\r\n")]
                if status.split(b" ")[1:2] != [b"200"]:
                    raise RuntimeError(f"GET {path} on port {port}: {status.decode(errors='replace')}\n"
                                       f"{buf[end + 4:end + 1000].decode(errors='replace')}")
                chunked[i] = b"transfer-encoding: chunked" in buf[:end].lower()
                head[i] = None
                live += 1
                if live == n:
                    pipe.send(("ready", n))
                    cpu0, wall0 = time.process_time(), time.monotonic()
                data = buf[end + 4:]
                if not data:
                    continue
            if chunked[i]:
                data, raw[i], left[i], last = dechunk(raw[i] + data if raw[i] else data, left[i])
                if last:
                    ep.unregister(fd)
                    ended += 1
            buf = pend[i] + data if pend[i] else data
            if b"\r" in buf:
                buf = buf.replace(b"\r\n", b"\n")
            if b"\n\n" not in buf:
                pend[i] = buf
                continue
            events = buf.split(b"\n\n")
            pend[i] = events.pop()
            for ev in events:
                m = SEQ.search(ev)
                if m is None:
                    if b"data:" in ev:
                        unparsed += 1
                    continue
                received += 1
                seq = int(m.group(1))
                if seq >= planned:
                    foreign += 1
                    continue
                mine = seen[i]
                if mine[seq]:
                    dups += 1
                    continue
                mine[seq] = 1
                t = SENT.search(ev)
                if t is None:
                    unparsed += 1
                else:
                    lat.append((now - int(t.group(1))) // 1000)
                if seq < top[i]:
                    disorder += 1
                else:
                    top[i] = seq
                got[i] += 1
                if total is not None and got[i] == total:
                    remaining -= 1
        clock = time.monotonic()
        if live < n and clock > ready_by:
            raise RuntimeError(f"GET {path} on port {port}: only {live} of {n} subscribers got their response "
                               f"head within {READY_S} s")
        if total is not None and (remaining <= 0 or clock > drain_until):
            break
    return {"n": n, "total": total, "received": received, "distinct": sum(got),
            "lost": sum(max(0, total - g) for g in got), "dups": dups, "disorder": disorder,
            "unparsed": unparsed, "foreign": foreign, "ended": ended,
            "complete": sum(1 for g in got if g >= total), "lat": lat,
            "cpu": time.process_time() - cpu0, "wall": time.monotonic() - wall0}


def subscriber_worker(port, path, n, planned, core, pipe):
    """A client process (see deliveries); reports ("result", tallies) or ("error", text)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C and ends us
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        pin(core)
        raise_nofile(n + 256)
        pipe.send(("result", deliveries(port, path, n, planned, pipe)))
    except BaseException as e:  # noqa: B902 — whatever it is, the parent must hear of it
        try:
            pipe.send(("error", f"{type(e).__name__}: {e}"))
        except OSError:
            pass


def receive(conn, timeout, what, servers):
    if not conn.poll(timeout):
        raise SystemExit(f"{what}: no word within {timeout} s{exited(servers)}")
    try:
        msg = conn.recv()
    except EOFError:
        raise SystemExit(f"{what}: the client process died{exited(servers)}") from None
    if msg[0] == "error":
        raise SystemExit(f"{what}: {msg[1]}{exited(servers)}")
    return msg


def exited(servers):
    gone = [f"{name} (exit {p.poll()})" for name, (p, _) in servers.items() if p.poll() is not None]
    return f"; gateway process exited: {', '.join(gone)}" if gone else ""


def publish_run(port, ch, rate, duration):
    """Publishes rate × duration messages on schedule over one keep-alive connection; returns
    (count, sorted round trips ms, seconds taken, sends more than one interval late)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/json", "X-Publish-Token": ch["publish_token"]}
    path, count = publish_path(ch), rate * duration
    rtts, late = [], 0
    t0 = time.perf_counter()
    for seq in range(count):
        wait = t0 + seq / rate - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        elif wait < -1 / rate:
            late += 1
        body = json.dumps({"payload": {"seq": seq, "sent_ns": time.time_ns()}}).encode()
        sent = time.perf_counter()
        try:
            conn.request("POST", path, body, headers)
            r = conn.getresponse()
            answer = r.read()
        except (OSError, http.client.HTTPException) as e:
            raise SystemExit(f"publish {seq} to port {port}: {type(e).__name__}: {e}")
        rtts.append((time.perf_counter() - sent) * 1000)
        if not 200 <= r.status < 300:
            raise SystemExit(f"POST {path} on port {port} (message {seq}): {r.status}\n{answer[:1000].decode(errors='replace')}")
        if seq == 0:
            try:
                msg = json.loads(answer)
                ok = bool(msg.get("id")) and msg["payload"]["seq"] == 0
            except (ValueError, KeyError, TypeError, AttributeError):
                ok = False
            if not ok:
                raise SystemExit(f"POST {path}: the answer is not the message: {answer[:1000]!r}")
    elapsed = time.perf_counter() - t0
    conn.close()
    return count, sorted(rtts), elapsed, late


def delivery(servers, subscribers, rate, duration):
    """The delivery run on servers {"A": (proc, port), "B": (proc, port)}; returns its figures."""
    ch = create_channel(servers["A"][1], "bench")
    path, planned = sse_path(ch), rate * duration
    split = {"A": subscribers // 2, "B": subscribers - subscribers // 2}
    workers = []
    try:
        for name in ("A", "B"):
            mine, theirs = multiprocessing.Pipe()
            w = multiprocessing.Process(target=subscriber_worker, daemon=True,
                                        args=(servers[name][1], path, split[name], planned, 1, theirs))
            w.start()
            theirs.close()
            workers.append((name, w, mine))
        for name, _, conn in workers:
            receive(conn, READY_S + 30, f"subscribers on {name}", servers)
        print(f"{subscribers} subscribers live; publishing {rate}/s for {duration} s through A", file=sys.stderr)
        ticks = {name: cpu_ticks(p.pid) for name, (p, _) in servers.items()}
        count, rtts, elapsed, late = publish_run(servers["A"][1], ch, rate, duration)
        cpu = {name: (cpu_ticks(p.pid) - ticks[name]) / TICKS for name, (p, _) in servers.items()}
        for _, _, conn in workers:
            conn.send(("stop", count))
        results = {name: receive(conn, DRAIN_S + 60, f"subscribers on {name}", servers)[1] for name, _, conn in workers}
        for _, w, _ in workers:
            w.join(10)
    finally:
        for _, w, conn in workers:
            if w.is_alive():
                w.terminate()
                w.join(5)
                if w.is_alive():
                    w.kill()
            conn.close()
    lat = {name: sorted(r["lat"]) for name, r in results.items()}
    lat["all"] = sorted(lat["A"] + lat["B"])
    total = {k: sum(r[k] for r in results.values()) for k in
             ("n", "received", "distinct", "lost", "dups", "disorder", "unparsed", "foreign", "ended", "complete")}
    return {"count": count, "rtts": rtts, "elapsed": elapsed, "late": late, "cpu": cpu, "split": split,
            "results": results, "lat": lat, "total": total}


def print_delivery(d, args):
    t, lat = d["total"], d["lat"]
    expected = d["count"] * t["n"]
    p99 = ms(lat["all"], 0.99)
    met = t["lost"] == 0 and t["dups"] == 0 and t["disorder"] == 0 and t["distinct"] == expected and p99 <= P99_TARGET_MS
    print(f"\nchannels: delivery — 2 gateway processes in shared mode on one Redis (core 0), "
          f"{t['n']:,} SSE subscribers to one public channel ({d['split']['A']:,} on A, {d['split']['B']:,} on B; "
          f"2 client processes on core 1), {d['count']} messages published through A at {args.rate}/s "
          f"({d['elapsed']:.1f} s, {d['late']} sent late; publish round trip p50 {pct(d['rtts'], 0.5):.2f} ms, "
          f"p99 {pct(d['rtts'], 0.99):.2f} ms)\n")
    print("| measure | all | on A (publisher's process) | on B (through Redis) | target |")
    print("|---|---:|---:|---:|---|")
    r = d["results"]

    def row(label, key, target=""):
        print(f"| {label} | {t[key]:,} | {r['A'][key]:,} | {r['B'][key]:,} | {target} |")

    print(f"| deliveries expected | {expected:,} | {d['count'] * r['A']['n']:,} | {d['count'] * r['B']['n']:,} | |")
    row("deliveries received (distinct)", "distinct", "= expected")
    row("lost", "lost", "0")
    row("duplicated", "dups", "0")
    row("out of order", "disorder", "0")
    row("subscribers that saw every message", "complete", "all")
    row("streams ended early", "ended", "0")
    row("events not readable (no seq or sent_ns)", "unparsed", "0")
    for label, q in (("latency p50 ms", 0.5), ("latency p99 ms", 0.99)):
        target = f"≤ {P99_TARGET_MS}" if q == 0.99 else ""
        print(f"| publish → delivery {label} | {ms(lat['all'], q):.1f} | {ms(lat['A'], q):.1f} | "
              f"{ms(lat['B'], q):.1f} | {target} |")
    mx = {k: ms(v, 1.0) for k, v in lat.items()}
    print(f"| publish → delivery max ms | {mx['all']:.1f} | {mx['A']:.1f} | {mx['B']:.1f} | |")
    rate = {k: v["distinct"] / d["elapsed"] for k, v in r.items()}
    print(f"| deliveries/s | {sum(rate.values()):,.0f} | {rate['A']:,.0f} | {rate['B']:,.0f} | "
          f"{args.subscribers * args.rate:,} |")
    cpu = d["cpu"]
    print(f"| gateway CPU, % of a core (µs per delivery) | {(cpu['A'] + cpu['B']) / d['elapsed'] * 100:.0f} "
          f"({(cpu['A'] + cpu['B']) * 1e6 / max(t['distinct'], 1):.1f}) | "
          f"{cpu['A'] / d['elapsed'] * 100:.0f} ({cpu['A'] * 1e6 / max(r['A']['distinct'], 1):.1f}) | "
          f"{cpu['B'] / d['elapsed'] * 100:.0f} ({cpu['B'] * 1e6 / max(r['B']['distinct'], 1):.1f}) | |")
    print(f"| client process CPU, % of a core | {sum(v['cpu'] / v['wall'] for v in r.values()) * 100:.0f} | "
          f"{r['A']['cpu'] / r['A']['wall'] * 100:.0f} | {r['B']['cpu'] / r['B']['wall'] * 100:.0f} | |")
    if t["foreign"]:
        print(f"\n{t['foreign']} events carried a sequence number that was never published")
    return (f"{t['distinct']:,} / {expected:,} delivered, {t['lost']:,} lost, {t['dups']:,} twice, "
            f"{t['disorder']:,} out of order; p50 {ms(lat['all'], 0.5):.1f} ms, p99 {p99:.1f} ms "
            f"(A {ms(lat['A'], 0.99):.1f}, B {ms(lat['B'], 0.99):.1f}), max {mx['all']:.1f} ms", met)


# --- publish throughput -----------------------------------------------------------------------

def publish_lua(tmp, name, ch):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write(f"wrk.body = {json.dumps(json.dumps({'payload': 'channels bench: a short string payload'}))}\n")
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
        f.write(f'wrk.headers["X-Publish-Token"] = {json.dumps(ch["publish_token"])}\n')
    return path


def publish_throughput(tmp, name, proc, port, seconds):
    ch = create_channel(port, f"publish-{name}")
    status, answer = call(port, "POST", publish_path(ch), {"payload": "first"}, {"X-Publish-Token": ch["publish_token"]})
    if not 200 <= status < 300:
        raise SystemExit(f"POST {publish_path(ch)} on port {port} ({name}): {status}\n{answer}")
    lua = publish_lua(tmp, f"publish-{name}.lua", ch)
    before, t0 = rss_kib(proc.pid), cpu_ticks(proc.pid)
    rps, count, p50, p99 = wrk(f"http://127.0.0.1:{port}{publish_path(ch)}", lua, seconds)
    cpu_us = (cpu_ticks(proc.pid) - t0) / TICKS * 1e6 / max(count, 1)
    print(f"publish {name}: {rps:,.0f}/s p50 {p50:.2f} ms p99 {p99:.2f} ms {cpu_us:.1f} µs CPU/message",
          file=sys.stderr)
    return {"rps": rps, "count": count, "p50": p50, "p99": p99, "cpu_us": cpu_us, "rss_before": before,
            "rss_after": rss_kib(proc.pid)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=30, help="seconds of publishing in the delivery run")
    ap.add_argument("--rate", type=int, default=20, help="messages per second in the delivery run")
    ap.add_argument("--subscribers", type=int, default=2000, help="subscribers in the delivery run (half per process)")
    ap.add_argument("--idle", type=int, default=10000, help="idle subscribers in the memory run")
    ap.add_argument("--publish-seconds", type=int, default=8, help="seconds of wrk in the publish run")
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if min(args.duration, args.rate, args.subscribers, args.idle, args.publish_seconds) < 1 or args.subscribers < 2:
        ap.error("every figure must be positive, and --subscribers at least 2")
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))  # so `finally` cleans up
    raise_nofile(max(args.idle, args.subscribers) + 512)
    conn_cap = ["--max-connections", str(max(args.idle, args.subscribers) + 1000)]
    procs = []
    tmp = tempfile.mkdtemp(prefix="understudy-channels-bench-")
    try:
        taskset_stand_in(tmp)
        gw_bin, _ = binaries(args.no_build)
        servers, redis_port = gateways(gw_bin, tmp, TENANT, procs, conn_cap)
        port_b = free_port()
        pb = start([gw_bin, "--listen", f"127.0.0.1:{port_b}", "--manifests", os.path.join(tmp, "manifests"),
                    "--log-format", "json", "--redis-url", f"redis://127.0.0.1:{redis_port}/0"] + conn_cap,
                   env=dict(os.environ, RUST_LOG="warn"))
        procs.append(pb)
        wait_ready(f"http://127.0.0.1:{port_b}/readyz")
        pin(1)  # this process is a client too

        memory = {}
        for name in ("embedded", "shared"):
            p, port = servers[name]
            memory[name] = idle_memory(port, p.pid, args.idle)
            print(f"memory {name}: {memory[name][0] / 1024:.1f} → {memory[name][1] / 1024:.1f} MiB", file=sys.stderr)
            time.sleep(1)
        per = {k: (after - before) / args.idle for k, (before, after) in memory.items()}
        print(f"\nchannels: memory — {args.idle:,} idle SSE subscribers over {IDLE_CHANNELS} public channels on one "
              f"process, RSS 2 s after the last response head\n")
        print("| server | RSS before MiB | RSS with subscribers MiB | KiB per subscriber | × embedded | target |")
        print("|---|---:|---:|---:|---:|---|")
        for name, (before, after) in memory.items():
            print(f"| {name} | {before / 1024:.1f} | {after / 1024:.1f} | {per[name]:.1f} | "
                  f"{per[name] / per['embedded'] if per['embedded'] > 0 else float('nan'):.2f} | ≤ {KIB_TARGET} KiB |")

        d = delivery({"A": servers["shared"], "B": (pb, port_b)}, args.subscribers, args.rate, args.duration)
        delivery_line, delivery_met = print_delivery(d, args)

        pub = {name: publish_throughput(tmp, name, *servers[name], args.publish_seconds) for name in ("embedded", "shared")}
        print(f"\nchannels: publish — wrk -t1 -c64 -d{args.publish_seconds}s on `POST /v1/channels/{{id}}/publish` "
              f"(one channel, short string payload), one process on core 0, wrk on core 1\n")
        print("| server | messages/s | × embedded | p50 ms | p99 ms | CPU µs/message | RSS before / after MiB | target |")
        print("|---|---:|---:|---:|---:|---:|---|---|")
        for name, r in pub.items():
            print(f"| {name} | {r['rps']:,.0f} | {r['rps'] / pub['embedded']['rps']:.2f} | {r['p50']:.2f} | "
                  f"{r['p99']:.2f} | {r['cpu_us']:.1f} | {r['rss_before'] / 1024:.1f} / {r['rss_after'] / 1024:.1f} | "
                  f"≥ {PUBLISH_TARGET:,}/s |")

        command = " ".join(["python3 bench/channels.py"] + sys.argv[1:])
        print(f"\nSummary ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, `{command}`):\n")
        print("| what | result | target | met |")
        print("|---|---|---|---|")
        print(f"| delivery: {args.subscribers:,} subscribers on 2 shared-mode processes, {args.rate} publishes/s "
              f"for {args.duration} s through one | {delivery_line} | none lost, none twice, in order; "
              f"p99 ≤ {P99_TARGET_MS} ms | {'yes' if delivery_met else '**no**'} |")
        for name in ("embedded", "shared"):
            print(f"| memory: {args.idle:,} idle subscribers on one {name} process | {per[name]:.1f} KiB each | "
                  f"≤ {KIB_TARGET} KiB | {'yes' if per[name] <= KIB_TARGET else '**no**'} |")
        for name, r in pub.items():
            ratio = f", {r['rps'] / pub['embedded']['rps']:.2f} × embedded" if name != "embedded" else ""
            print(f"| publish: one {name} process, 64 connections | {r['rps']:,.0f} messages/s, p99 {r['p99']:.2f} ms"
                  f"{ratio} | ≥ {PUBLISH_TARGET:,}/s | {'yes' if r['rps'] >= PUBLISH_TARGET else '**no**'} |")
    finally:
        stop(procs, tmp)


if __name__ == "__main__":
    main()
