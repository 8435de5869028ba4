"""A round-robin reverse proxy for the multi-process MCP tests.

Every HTTP request (not every connection: keep-alive connections from the client are reused, but
each request on them goes to the next upstream in turn) is forwarded to the next upstream of the
list. Request and response headers pass through unchanged (Mcp-Session-Id, MCP-Protocol-Version,
Last-Event-ID, X-Tenant-ID, Accept, Authorization, ...) but for the hop-by-hop ones, and response
bodies are streamed through chunk by chunk as they arrive, so SSE streams are not buffered. When
the client goes away, the upstream request is cancelled too (the upstream sees the disconnect).

In-process use (what tests/mcp/conftest.py does):

    proxy = RoundRobinProxy([gw_a.url, gw_b.url]).start()
    ... proxy.url ...; proxy.log  ->  [(upstream index, method, path), ...]
    proxy.responses  ->  [(upstream index, method, path, status), ...] as answers begin
    proxy.close()

Stand-alone:  python tests/mcp/proxy.py --listen 127.0.0.1:9000 http://127.0.0.1:8001 http://127.0.0.1:8002
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading

import aiohttp
from aiohttp import web
from yarl import URL

# Hop-by-hop headers (RFC 9110 §7.6.1) and those the proxy recomputes itself.
HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "content-length",
}


class RoundRobinProxy:
    def __init__(self, upstreams: list[str], host: str = "127.0.0.1", port: int = 0):
        assert upstreams, "at least one upstream"
        self.upstreams = [u.rstrip("/") for u in upstreams]
        self.host = host
        self.port = port
        self._turn = 0
        self._lock = threading.Lock()
        # (upstream index, method, path) per request, when it arrives ...
        self.log: list[tuple[int, str, str]] = []
        # ... and (upstream index, method, path, status) once the upstream's answer has begun.
        self.responses: list[tuple[int, str, str, int]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def next_upstream(self) -> int:
        with self._lock:
            idx = self._turn % len(self.upstreams)
            self._turn += 1
            return idx

    def align(self, index: int) -> None:
        """Make the next request go to upstream ``index`` (for tests that need a known order)."""
        with self._lock:
            self._turn = index

    # ------------------------------------------------------------------ the handler

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        idx = self.next_upstream()
        self.log.append((idx, request.method, request.path_qs))
        target = URL(self.upstreams[idx] + request.raw_path, encoded=True)
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP]
        peer = request.remote or ""
        headers.append(("X-Forwarded-For", peer))
        body = await request.read()
        assert self._client is not None
        try:
            upstream = await self._client.request(
                request.method, target, headers=headers, data=body if body else None,
                allow_redirects=False, auto_decompress=False,
            )
        except aiohttp.ClientError as e:
            return web.Response(status=502, text=f"proxy: upstream {idx} failed: {e}")
        self.responses.append((idx, request.method, request.path_qs, upstream.status))
        try:
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for k, v in upstream.headers.items():
                if k.lower() not in HOP:
                    resp.headers.add(k, v)
            no_body = upstream.status in (204, 304) or request.method == "HEAD"
            if not no_body and "Content-Length" in upstream.headers:
                resp.content_length = int(upstream.headers["Content-Length"])
            await resp.prepare(request)
            if not no_body:
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
            await resp.write_eof()
            return resp
        finally:
            upstream.release()
            upstream.close()

    # ------------------------------------------------------------------ lifecycle

    async def _start(self) -> None:
        # No pooling limits and no total timeout: SSE streams stay open as long as the client wants.
        self._client = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            auto_decompress=False,
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # handler_cancellation: a client that disconnects cancels the handler, so the upstream
        # request (e.g. an SSE stream) is closed as well.
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        if self.port == 0:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((self.host, 0))
                self.port = s.getsockname()[1]
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start())
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._shutdown())
        loop.close()

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    def start(self) -> "RoundRobinProxy":
        self._thread = threading.Thread(target=self._run, name="rr-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            raise RuntimeError("proxy did not start")
        if self._error is not None:
            raise RuntimeError(f"proxy did not start: {self._error!r}")
        return self

    def close(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(15)

    def __enter__(self) -> "RoundRobinProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", default="127.0.0.1:0", help="host:port (port 0: a free one)")
    p.add_argument("upstreams", nargs="+", help="base URLs, e.g. http://127.0.0.1:8001")
    a = p.parse_args()
    host, _, port = a.listen.rpartition(":")
    proxy = RoundRobinProxy(a.upstreams, host=host or "127.0.0.1", port=int(port)).start()
    print(f"listening on {proxy.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        proxy.close()


if __name__ == "__main__":
    main()
