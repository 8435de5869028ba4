"""Chaos on the MCP surface (SPEC §5): tenant `chaos_mcp_only` has a server_error 500 profile on
the mcp surface only. Every MCP request gets HTTP 500 with a JSON-RPC error body (-32603); on the
legacy transport the message POST itself gets the 500 (never a 202): shown on an API-created
tenant whose chaos is switched on while its legacy stream is open. Embedded and shared."""

from __future__ import annotations

import uuid

import httpx
import pytest

from mcpkit import (
    MAJOR, McpError, assert_keeps_connection, body_message, headers, init_params, req, slow_body_twice, stream,
    streamable,
)

TENANT = "chaos_mcp_only"


@pytest.fixture
def c(gw):
    with httpx.Client(base_url=gw.url, timeout=15) as client:
        yield client


def assert_internal_error(r: httpx.Response, id_: int | None = None) -> None:
    assert r.status_code == 500, (r.status_code, r.text)
    msg = body_message(r)
    assert msg["jsonrpc"] == "2.0" and msg["error"]["code"] == -32603, msg
    if id_ is not None:
        assert msg.get("id") in (id_, None), msg


@pytest.mark.parametrize("path", ["/mcp", f"/t/{TENANT}/mcp", "/mcp/message", "/"])
def test_every_request_is_500_with_32603(c, path):
    hdrs = headers(None if path.startswith("/t/") else TENANT)
    r = c.post(path, json=req("initialize", init_params(), 1), headers=hdrs)
    assert_internal_error(r, 1)
    r = c.post(path, json=req("tools/list", id=2), headers=hdrs)
    assert_internal_error(r, 2)


def test_legacy_stream_request_is_500(c):
    with c.stream("GET", "/mcp/sse", headers={"X-Tenant-ID": TENANT, "Accept": "text/event-stream"}) as r:
        r.read()
        assert_internal_error(r)


def test_legacy_message_post_is_500_not_202(gw, c, api_factory):
    """A legacy stream opened before the chaos is switched on: the POSTs of that session then get
    the 500 themselves (never a 202 with the error on the stream)."""
    api = api_factory(gw.url)
    tenant = f"chaos_legacy_{uuid.uuid4().hex[:10]}"
    api.create_tenant(tenant)
    api.add_tool(tenant, "tool_one")
    with stream(c, "GET", "/mcp/sse", {"X-Tenant-ID": tenant, "Accept": "text/event-stream"}) as (r, sse):
        assert r.status_code == 200
        endpoint = sse.next_event()["data"]
        p = c.post(endpoint, json=req("initialize", init_params(), 1), headers=headers(tenant))
        assert p.status_code == 202, p.text
        sse.wait_message(lambda m: m.get("id") == 1)
        version = api.set_chaos(tenant, {"profile": "server_error", "status_code": 500, "surfaces": ["mcp"]})
        p = c.post(endpoint, json=req("tools/list", id=2),
                   headers={**headers(tenant), "X-Understudy-Config-Version": str(version)})
        assert_internal_error(p, 2)


def test_other_surfaces_of_the_tenant_are_unaffected(c):
    r = c.post("/v1/chat/completions", headers={"X-Tenant-ID": TENANT},
               json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "Hello from chaos_mcp_only."


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


@pytest.mark.anyio
async def test_sdk_client_sees_the_failure(gw):
    """mcp 2.x turns the 500's JSON-RPC body into an MCPError(-32603); mcp 1.x raises the HTTP
    status error for the 500."""
    with pytest.raises(BaseException) as e:  # noqa: PT011 - the SDKs wrap it in exception groups
        async with streamable(f"{gw.url}/mcp", {"X-Tenant-Id": TENANT}):
            pass
    found = leaves(e.value)
    if MAJOR >= 2:
        assert any(isinstance(x, McpError) and x.error.code == -32603 for x in found), found
    else:
        assert any(isinstance(x, httpx.HTTPStatusError) and x.response.status_code == 500 for x in found) or \
            any(isinstance(x, McpError) and x.error.code == -32603 for x in found), found


def test_chaos_answer_keeps_the_connection_usable(gw):
    """A client whose request body arrives after its headers (any slow or large POST) gets the
    500, and its keep-alive connection stays usable for the next request, unless the 500 said
    `Connection: close`."""
    first, second = slow_body_twice(gw.url, "/mcp/message", {"X-Tenant-ID": TENANT}, req("ping", id=1))
    assert first.startswith(b"HTTP/1.1 500"), first
    assert_keeps_connection(first, second, b"HTTP/1.1 500")
