"""Helpers of the MCP end-to-end suite: SDK connections that work with both majors of the
official ``mcp`` package (1.x and 2.x), raw JSON-RPC over httpx, an SSE reader, and the public
tenant API.

The installed major decides which client APIs are used (``importlib.metadata.version("mcp")``):
mcp 2.x has ``mcp.Client`` and ``streamable_http_client(url, http_client=...)`` on ``httpx2``;
mcp 1.x has ``streamablehttp_client(url, headers=...)`` yielding ``(read, write, get_session_id)``.
"""

from __future__ import annotations

import json
import socket
import time
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, AsyncIterator, Iterator

import anyio
import httpx
import pytest
from mcp import ClientSession

MCP_VERSION = version("mcp")
MAJOR = int(MCP_VERSION.split(".")[0])

only_mcp2 = pytest.mark.skipif(MAJOR < 2, reason=f"needs mcp 2.x (installed: {MCP_VERSION})")
only_mcp1 = pytest.mark.skipif(MAJOR != 1, reason=f"needs mcp 1.x (installed: {MCP_VERSION})")

if MAJOR >= 2:
    from mcp.shared.exceptions import MCPError as McpError
else:  # pragma: no cover - depends on the venv
    from mcp.shared.exceptions import McpError  # type: ignore[no-redef]

ADMIN = "mcp-suite-admin-token-0123"
ACCEPT = "application/json, text/event-stream"
LIST_CHANGED = "notifications/tools/list_changed"
STATE_URI = "understudy://tenant/state"
# Versions negotiated by `initialize` (SPEC §4), oldest first.
HANDSHAKE_VERSIONS = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]
NEWEST = "2025-11-25"
MODERN = "2026-07-28"
# How long a test waits for something that should happen within milliseconds (a notification
# crossing processes, a stream event): generous, never a speed assertion.
BOUND = 15.0

SUPPORT_TOOLS = {"get_invoice_ledger", "get_weather"}
INVOICES = {"invoices": ["INV-001", "INV-002"]}
WEATHER = {"city": "Paris", "temperature_c": 21}


def error_code(exc: BaseException) -> int:
    return exc.error.code  # type: ignore[attr-defined]


def error_text(exc: BaseException) -> str:
    err = exc.error  # type: ignore[attr-defined]
    return f"{err.message} {json.dumps(err.data) if err.data is not None else ''}"


def structured(result: Any) -> Any:
    return result.structured_content if MAJOR >= 2 else result.structuredContent


def is_error(result: Any) -> bool:
    return bool(result.is_error if MAJOR >= 2 else result.isError)


def text_of(result: Any) -> str:
    return "".join(getattr(c, "text", "") for c in result.content)


def breaks_schema_as_error(negotiated: str) -> bool:
    """SPEC §4.4: before 2025-11-25 a schema violation is error -32602; from then on it is a tool
    result with isError true."""
    return negotiated < NEWEST


# ---------------------------------------------------------------- notifications


@dataclass
class Inbox:
    """Collects the server's notifications delivered to a ClientSession's message_handler."""

    methods: list[str] = field(default_factory=list)

    async def handler(self, message: Any) -> None:
        inner = getattr(message, "root", message)  # mcp 1.x wraps notifications in a RootModel
        method = getattr(inner, "method", None)
        if isinstance(method, str):
            self.methods.append(method)
        await anyio.lowlevel.checkpoint()

    async def wait_for(self, method: str, count: int = 1, bound: float = BOUND) -> None:
        with anyio.move_on_after(bound):
            while self.methods.count(method) < count:
                await anyio.sleep(0.02)
        assert self.methods.count(method) >= count, (
            f"{method} x{count} not received within {bound}s; got {self.methods}")


# ---------------------------------------------------------------- SDK connections


@dataclass
class Conn:
    session: Any  # ClientSession, or mcp 2.x Client
    version: str
    inbox: Inbox
    legacy_ping: bool = True  # ping exists before 2026-07-28 only


@asynccontextmanager
async def streamable(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[Conn]:
    """A ClientSession over the streamable HTTP transport, initialized."""
    inbox = Inbox()
    if MAJOR >= 2:
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        async with create_mcp_http_client(headers=headers) as http:
            async with streamable_http_client(url, http_client=http) as (r, w):
                async with ClientSession(r, w, message_handler=inbox.handler, read_timeout_seconds=30) as s:
                    init = await s.initialize()
                    yield Conn(s, init.protocol_version, inbox)
    else:
        from datetime import timedelta

        from mcp.client.streamable_http import streamablehttp_client

        async with streamablehttp_client(url, headers=headers) as (r, w, _sid):
            async with ClientSession(r, w, message_handler=inbox.handler,
                                     read_timeout_seconds=timedelta(seconds=30)) as s:
                init = await s.initialize()
                yield Conn(s, init.protocolVersion, inbox)


@asynccontextmanager
async def legacy_sse(url: str, headers: dict[str, str] | None = None) -> AsyncIterator[Conn]:
    """A ClientSession over the legacy HTTP+SSE transport (GET …/mcp/sse), initialized."""
    from mcp.client.sse import sse_client

    inbox = Inbox()
    async with sse_client(url, headers=headers, timeout=30) as (r, w):
        if MAJOR >= 2:
            async with ClientSession(r, w, message_handler=inbox.handler, read_timeout_seconds=30) as s:
                init = await s.initialize()
                yield Conn(s, init.protocol_version, inbox)
        else:
            from datetime import timedelta

            async with ClientSession(r, w, message_handler=inbox.handler,
                                     read_timeout_seconds=timedelta(seconds=30)) as s:
                init = await s.initialize()
                yield Conn(s, init.protocolVersion, inbox)


@asynccontextmanager
async def high_level(url: str, mode: str, headers: dict[str, str] | None = None) -> AsyncIterator[Conn]:
    """mcp 2.x ``Client`` in ``mode`` ("auto" or "legacy"); with headers through an httpx2 client,
    without them from the bare URL (``Client(url)``)."""
    from mcp import Client

    inbox = Inbox()
    if headers is None:
        async with Client(url, mode=mode, message_handler=inbox.handler, read_timeout_seconds=30) as c:
            yield Conn(c, c.protocol_version, inbox, legacy_ping=c.protocol_version != MODERN)
        return
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    async with create_mcp_http_client(headers=headers) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, message_handler=inbox.handler, read_timeout_seconds=30) as c:
            yield Conn(c, c.protocol_version, inbox, legacy_ping=c.protocol_version != MODERN)


async def exercise_support(conn: Conn) -> None:
    """Everything a client does with the `support` fixture tenant (SPEC §4), asserted."""
    s = conn.session
    tools = {t.name: t for t in (await s.list_tools()).tools}
    assert SUPPORT_TOOLS <= set(tools), tools
    schema = tools["get_invoice_ledger"].inputSchema if MAJOR < 2 else tools["get_invoice_ledger"].input_schema
    assert schema["required"] == ["customer_id"], schema
    assert tools["get_weather"].description == "Current weather for a city."

    r = await s.call_tool("get_invoice_ledger", {"customer_id": "cus_123", "limit": 2})
    assert not is_error(r), text_of(r)
    assert structured(r) == INVOICES
    assert json.loads(text_of(r)) == INVOICES
    r = await s.call_tool("get_weather", {"city": "Paris"})
    assert not is_error(r) and structured(r) == WEATHER and json.loads(text_of(r)) == WEATHER

    await check_schema_violation(conn)

    with pytest.raises(McpError) as e:
        await s.call_tool("no_such_tool", {})
    assert error_code(e.value) == -32602, error_text(e.value)

    resources = (await s.list_resources()).resources
    assert [str(x.uri) for x in resources] == [STATE_URI], resources
    read = await s.read_resource(STATE_URI)
    assert len(read.contents) == 1 and str(read.contents[0].uri) == STATE_URI
    assert isinstance(json.loads(read.contents[0].text), dict)

    assert (await s.list_prompts()).prompts == []
    if conn.legacy_ping:
        await s.send_ping()


async def check_schema_violation(conn: Conn) -> None:
    """limit must be an integer >= 1 and customer_id is required: -32602 before 2025-11-25, a tool
    result with isError true listing the violations from then on."""
    s = conn.session
    bad = {"limit": 0}
    if breaks_schema_as_error(conn.version):
        with pytest.raises(McpError) as e:
            await s.call_tool("get_invoice_ledger", bad)
        assert error_code(e.value) == -32602
        msg = error_text(e.value)
    else:
        r = await s.call_tool("get_invoice_ledger", bad)
        assert is_error(r), f"negotiated {conn.version}: expected isError, got {r}"
        msg = text_of(r)
    assert "customer_id" in msg and "limit" in msg, msg


# ---------------------------------------------------------------- raw JSON-RPC over httpx


def headers(tenant: str | None = "support", session: str | None = None, version: str | None = None,
            **extra: str) -> dict[str, str]:
    h = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if tenant:
        h["X-Tenant-ID"] = tenant
    if session:
        h["Mcp-Session-Id"] = session
    if version:
        h["MCP-Protocol-Version"] = version
    h.update({k.replace("_", "-"): v for k, v in extra.items()})
    return h


def body_message(r: httpx.Response) -> Any:
    """The JSON-RPC message of a response: a JSON body, or the first SSE `message` event."""
    ctype = r.headers.get("content-type", "")
    if ctype.startswith("text/event-stream"):
        for ev in parse_sse(r.text):
            if ev.get("data") and ev.get("event", "message") == "message":
                return json.loads(ev["data"])
        raise AssertionError(f"no message event in {r.text!r}")
    return r.json()


def parse_sse(text: str) -> list[dict[str, Any]]:
    events, cur = [], {}
    for line in text.splitlines():
        if line == "":
            if cur:
                events.append(cur)
            cur = {}
        elif line.startswith(":"):
            cur.setdefault("comments", []).append(line[1:].strip())
        else:
            k, _, v = line.partition(":")
            v = v[1:] if v.startswith(" ") else v
            cur[k] = cur[k] + "\n" + v if k == "data" and k in cur else v
    if cur:
        events.append(cur)
    return events


def req(method: str, params: dict | None = None, id: int | str | None = 1) -> dict:
    m: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if id is not None:
        m["id"] = id
    if params is not None:
        m["params"] = params
    return m


def init_params(version: str = NEWEST) -> dict:
    return {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw-test", "version": "0"}}


def initialize(c: httpx.Client, path: str = "/mcp", tenant: str | None = "support",
               version: str = NEWEST) -> tuple[str, str]:
    """initialize + notifications/initialized over raw HTTP; returns (session id, negotiated)."""
    r = c.post(path, json=req("initialize", init_params(version)), headers=headers(tenant))
    assert r.status_code == 200, (r.status_code, r.text)
    sid = r.headers.get("mcp-session-id")
    assert sid, r.headers
    negotiated = body_message(r)["result"]["protocolVersion"]
    r = c.post(path, json=req("notifications/initialized", id=None),
               headers=headers(tenant, session=sid, version=negotiated))
    assert r.status_code == 202, (r.status_code, r.text)
    return sid, negotiated


class SSE:
    """Reads events from a streaming httpx response; each wait is bounded by the client's read
    timeout and by ``bound``."""

    def __init__(self, response: httpx.Response):
        self.response = response
        self._lines = response.iter_lines()
        self.comments: list[str] = []

    def next_event(self, bound: float = BOUND, comments: bool = False) -> dict[str, Any]:
        """The next event (a dict of its fields, and its ``comments``); with ``comments``, a block
        of comment lines alone counts as an event too."""
        deadline = time.monotonic() + bound
        cur: dict[str, Any] = {}
        for line in self._lines:
            if line == "":
                if "data" in cur or "event" in cur or "id" in cur or (comments and cur):
                    return cur
                cur = {}
            elif line.startswith(":"):
                self.comments.append(line[1:].strip())
                cur.setdefault("comments", []).append(line[1:].strip())
            else:
                k, _, v = line.partition(":")
                v = v[1:] if v.startswith(" ") else v
                cur[k] = cur[k] + "\n" + v if k == "data" and k in cur else v
            if time.monotonic() > deadline:
                break
        raise AssertionError(f"no SSE event within {bound}s (stream ended or too slow); partial {cur}")

    def next_message(self, bound: float = BOUND) -> tuple[dict[str, Any], Any]:
        """The next event that carries a JSON-RPC message: (event, parsed data)."""
        deadline = time.monotonic() + bound
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no SSE message within {bound}s")
            ev = self.next_event(left)
            if ev.get("data"):
                try:
                    return ev, json.loads(ev["data"])
                except json.JSONDecodeError:
                    if ev.get("event") == "endpoint":
                        return ev, ev["data"]
                    raise

    def wait_comment(self, pred, bound: float = BOUND) -> str:
        """The first comment line (seen so far or still to come) that satisfies ``pred``."""
        deadline = time.monotonic() + bound
        while True:
            for c in self.comments:
                if pred(c):
                    return c
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such SSE comment within {bound}s; comments: {self.comments}")
            self.next_event(left, comments=True)

    def wait_message(self, pred, bound: float = BOUND) -> tuple[dict[str, Any], Any]:
        deadline = time.monotonic() + bound
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"expected message not received within {bound}s; saw {seen}")
            ev, msg = self.next_message(left)
            if pred(msg):
                return ev, msg
            seen.append(msg)


@contextmanager
def stream(c: httpx.Client, method: str, path: str, hdrs: dict[str, str], **kw) -> Iterator[tuple[httpx.Response, SSE]]:
    with c.stream(method, path, headers=hdrs, timeout=httpx.Timeout(10, read=30), **kw) as r:
        yield r, SSE(r)


def is_list_changed(msg: Any) -> bool:
    return isinstance(msg, dict) and msg.get("method") == LIST_CHANGED


# ---------------------------------------------------------------- HTTP/1.1 keep-alive, raw


def slow_body_twice(base: str, path: str, hdrs: dict[str, str], message: dict) -> tuple[bytes, bytes]:
    """POST ``message`` twice on one keep-alive connection, the first time with the body sent a
    moment after the headers (as a slow client or a large body does). Returns both raw answers;
    the second is the error text when the connection was gone."""
    host, port = base.removeprefix("http://").split(":")
    body = json.dumps(message).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Accept: {ACCEPT}", *(f"{k}: {v}" for k, v in hdrs.items()), f"Content-Length: {len(body)}"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode()
    with socket.create_connection((host, int(port)), timeout=15) as s:
        s.sendall(head)
        time.sleep(0.3)  # not a speed assertion: this makes the body arrive after the headers
        s.sendall(body)
        first = _read_response(s)
        try:
            s.sendall(head + body)
            second = _read_response(s) or b"<connection closed>"
        except OSError as e:
            second = repr(e).encode()
    return first, second


def assert_keeps_connection(first: bytes, second: bytes, status_line: bytes) -> None:
    if b"\r\nconnection: close" in first.lower().split(b"\r\n\r\n")[0]:
        return  # announced: the client opens a new connection
    assert second.startswith(status_line), (
        "the server dropped the keep-alive connection after answering without reading the request "
        f"body, and without 'Connection: close'; the second request on it got {second[:120]!r}")


def _read_response(s: socket.socket) -> bytes:
    """One HTTP/1.1 response with a Content-Length body (b'' when the peer closed first)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


# ---------------------------------------------------------------- public tenant API


class Api:
    """The public tenant API with the gateways' admin token."""

    def __init__(self, base: str):
        self.c = httpx.Client(base_url=base, timeout=15, headers={"Authorization": f"Bearer {ADMIN}"})

    def close(self) -> None:
        self.c.close()

    def create_tenant(self, tenant_id: str, state: dict | None = None) -> int:
        body: dict[str, Any] = {"tenant_id": tenant_id, "visibility": "global"}
        if state is not None:
            body["state"] = state
        r = self.c.post("/public/tenants", json=body)
        assert r.status_code == 201, r.text
        return r.json()["version"]

    def add_tool(self, tenant_id: str, name: str, data: dict | None = None, schema: dict | None = None) -> tuple[str, int]:
        body: dict[str, Any] = {"keywords": [name], "response": f"{name} answer", "tool_name": name,
                                "tool_data": data if data is not None else {"tool": name}}
        if schema is not None:
            body["tool_input_schema"] = schema
        r = self.c.post(f"/public/tenants/{tenant_id}/scenarios", json=body)
        assert r.status_code == 201, r.text
        return r.json()["scenario"]["id"], r.json()["version"]

    def delete_scenario(self, tenant_id: str, sid: str) -> int:
        r = self.c.delete(f"/public/tenants/{tenant_id}/scenarios/{sid}")
        assert r.status_code == 200, r.text
        return r.json()["version"]

    def set_chaos(self, tenant_id: str, chaos: dict) -> int:
        r = self.c.put(f"/public/tenants/{tenant_id}/chaos", json=chaos)
        assert r.status_code == 200, r.text
        return r.json()["version"]

    def mint(self, name: str, identity: str, role: str = "editor") -> str:
        r = self.c.post("/api/v1/admin/keys", json={"name": name, "identity": identity, "role": role})
        assert r.status_code == 201, r.text
        return r.json()["plaintext"]
