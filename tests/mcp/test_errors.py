"""Bad input, sessions, protocol versions, limits, tenant isolation and private tenants on the MCP
endpoints, with raw httpx (SPEC §4, §4.1, §4.3, §4.4). Embedded and shared with Redis."""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest

from mcpkit import (
    HANDSHAKE_VERSIONS, NEWEST, assert_keeps_connection, body_message, headers, init_params, initialize,
    is_list_changed, req, slow_body_twice, stream,
)

INVOICES = {"invoices": ["INV-001", "INV-002"]}
BAD_ARGS = {"name": "get_invoice_ledger", "arguments": {"limit": 0}}


@pytest.fixture
def c(gw):
    with httpx.Client(base_url=gw.url, timeout=15) as client:
        yield client


def rpc_error(r: httpx.Response, code: int) -> dict:
    msg = body_message(r)
    assert msg.get("jsonrpc") == "2.0", msg
    assert "error" in msg and msg["error"]["code"] == code, msg
    return msg["error"]


# ---------------------------------------------------------------- JSON-RPC envelope


@pytest.mark.parametrize("path", ["/mcp/message", "/mcp"])
def test_unparsable_json_is_32700_and_400(c, path):
    r = c.post(path, content=b'{"jsonrpc": "2.0", "id": 1, "method": ', headers=headers())
    assert r.status_code == 400, r.text
    err = rpc_error(r, -32700)
    assert body_message(r).get("id") is None
    assert err["message"]


@pytest.mark.parametrize("body", [
    {"jsonrpc": "1.0", "id": 1, "method": "ping"},
    {"jsonrpc": "2.0", "id": 1},
    {"jsonrpc": "2.0", "id": 1, "method": 42},
    "ping",
])
def test_invalid_envelope_is_32600_and_400(c, body):
    r = c.post("/mcp/message", content=json.dumps(body).encode(), headers=headers())
    assert r.status_code == 400, r.text
    rpc_error(r, -32600)


def test_unknown_method_is_32601(c):
    r = c.post("/mcp/message", json=req("tools/frobnicate", {}, 5), headers=headers())
    assert r.status_code == 200, r.text
    rpc_error(r, -32601)
    assert body_message(r)["id"] == 5


def test_unknown_tool_is_32602(c):
    r = c.post("/mcp/message", json=req("tools/call", {"name": "no_such_tool", "arguments": {}}), headers=headers())
    assert r.status_code == 200, r.text
    rpc_error(r, -32602)


def test_schema_violation_without_session_is_32602_with_violations(c):
    r = c.post("/mcp/message", json=req("tools/call", BAD_ARGS), headers=headers())
    assert r.status_code == 200, r.text
    err = rpc_error(r, -32602)
    text = json.dumps(err)
    assert "customer_id" in text and "limit" in text, err


def test_stateless_answers_json_or_one_sse_event_and_202_for_notifications(c):
    call = req("tools/call", {"name": "get_weather", "arguments": {"city": "Paris"}}, 11)
    r = c.post("/mcp/message", json=call, headers={**headers(), "Accept": "application/json"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.headers
    msg = r.json()
    assert msg["jsonrpc"] == "2.0" and msg["id"] == 11, msg
    result = msg["result"]
    assert [x["type"] for x in result["content"]] == ["text"], result
    assert json.loads(result["content"][0]["text"]) == {"city": "Paris", "temperature_c": 21}
    # structuredContent in every revision (SPEC §4), 2025-03-26 spoken here included
    assert result["structuredContent"] == {"city": "Paris", "temperature_c": 21}
    assert result["isError"] is False
    r = c.post("/mcp/message", json=call, headers={**headers(), "Accept": "text/event-stream"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.headers
    assert body_message(r)["result"]["structuredContent"] == {"city": "Paris", "temperature_c": 21}
    r = c.post("/mcp/message", json=req("notifications/initialized", id=None), headers=headers())
    assert r.status_code == 202 and r.content == b"", r.text


def test_stateless_initialize_speaks_2025_03_26(c):
    r = c.post("/mcp/message", json=req("initialize", init_params("2025-03-26")), headers=headers())
    assert r.status_code == 200, r.text
    result = body_message(r)["result"]
    assert result["protocolVersion"] == "2025-03-26"
    # no stream to push on without a session: tools.listChanged only where the transport can push
    assert result["capabilities"]["tools"].get("listChanged", False) is False
    assert result["serverInfo"]["name"]


# ---------------------------------------------------------------- versions


@pytest.mark.parametrize("offered,negotiated", [(v, v) for v in HANDSHAKE_VERSIONS] + [("2099-01-01", NEWEST)])
def test_negotiation_and_schema_violation_per_version(c, offered, negotiated):
    sid, got = initialize(c, version=offered)
    assert got == negotiated
    r = c.post("/mcp", json=req("tools/call", BAD_ARGS, 3), headers=headers(session=sid, version=got))
    assert r.status_code == 200, r.text
    msg = body_message(r)
    if negotiated < "2025-11-25":
        text = json.dumps(rpc_error(r, -32602))
    else:
        assert msg["result"]["isError"] is True, msg
        text = msg["result"]["content"][0]["text"]
    assert "customer_id" in text and "limit" in text, msg
    r = c.post("/mcp", json=req("tools/call", {"name": "get_invoice_ledger", "arguments": {"customer_id": "c"}}, 4),
               headers=headers(session=sid, version=got))
    result = body_message(r)["result"]
    assert result["isError"] is False and json.loads(result["content"][0]["text"]) == INVOICES
    assert result["structuredContent"] == INVOICES  # in every revision (SPEC §4)


def test_unsupported_protocol_version_header_is_400(c):
    sid, _ = initialize(c)
    r = c.post("/mcp", json=req("tools/list", id=2), headers=headers(session=sid, version="1999-01-01"))
    assert r.status_code == 400, r.text
    assert "error" in r.json(), r.text


# ---------------------------------------------------------------- sessions


def test_missing_session_is_400_with_jsonrpc_error(c):
    r = c.post("/mcp", json=req("tools/list", id=2), headers=headers(version=NEWEST))
    assert r.status_code == 400, r.text
    assert r.json()["jsonrpc"] == "2.0" and "error" in r.json()


def test_unknown_session_is_404_with_jsonrpc_error(c):
    r = c.post("/mcp", json=req("tools/list", id=2), headers=headers(session="no-such-session", version=NEWEST))
    assert r.status_code == 404, r.text
    assert r.json()["jsonrpc"] == "2.0" and "error" in r.json()
    r = c.get("/mcp", headers=headers(session="no-such-session", version=NEWEST, Accept="text/event-stream"))
    assert r.status_code == 404, r.text


def test_delete_ends_the_session(c):
    sid, v = initialize(c)
    r = c.delete("/mcp", headers=headers(session=sid, version=v))
    assert r.status_code == 204, r.text
    r = c.post("/mcp", json=req("ping", id=2), headers=headers(session=sid, version=v))
    assert r.status_code == 404, r.text


def test_unknown_last_event_id_replays_with_comment(gw, c, api_factory):
    api = api_factory(gw.url)
    tenant = f"replay_{uuid.uuid4().hex[:10]}"
    api.create_tenant(tenant)
    api.add_tool(tenant, "tool_one")
    sid, v = initialize(c, tenant=tenant)
    h = headers(tenant, session=sid, version=v, Accept="text/event-stream")
    with stream(c, "GET", "/mcp", h) as (r, sse):
        assert r.status_code == 200, r.read()
        api.add_tool(tenant, "tool_two")
        first, _ = sse.wait_message(is_list_changed)
    with stream(c, "GET", "/mcp", {**h, "Last-Event-ID": "no-such-event-id"}) as (r, sse):
        assert r.status_code == 200, r.read()
        replayed, msg = sse.wait_message(is_list_changed)
        assert replayed.get("id") == first.get("id"), (first, replayed)
        comment = sse.wait_comment(lambda text: text.lower() not in ("", "ping", "keepalive", "keep-alive"))
        assert comment


# ---------------------------------------------------------------- limits


@pytest.mark.parametrize("path", ["/mcp/message", "/mcp"])
def test_oversized_body_is_413(small_body_gw, path):
    big = req("initialize", {**init_params(), "padding": "x" * 4096})
    r = httpx.post(f"{small_body_gw.url}{path}", json=big, headers=headers(), timeout=15)
    assert r.status_code == 413, r.text


# ---------------------------------------------------------------- tenant isolation


def test_session_of_one_tenant_is_unknown_to_another(gw, c, api_factory):
    api = api_factory(gw.url)
    other = f"iso_{uuid.uuid4().hex[:10]}"
    api.create_tenant(other)
    api.add_tool(other, "only_in_other_tenant")
    sid, v = initialize(c, tenant="support")
    for kw in ({"path": "/mcp", "hdrs": headers(other, session=sid, version=v)},
               {"path": f"/t/{other}/mcp", "hdrs": headers(None, session=sid, version=v)}):
        r = c.post(kw["path"], json=req("tools/list", id=2), headers=kw["hdrs"])
        assert r.status_code == 404, r.text
        assert "only_in_other_tenant" not in r.text
    # the session is still fine on its own tenant
    r = c.post("/mcp", json=req("tools/list", id=3), headers=headers("support", session=sid, version=v))
    assert r.status_code == 200
    assert "only_in_other_tenant" not in r.text


def test_private_tenant_needs_its_owners_credential(gw, c, api_factory):
    api = api_factory(gw.url)
    suffix = uuid.uuid4().hex[:8]
    alice = api.mint(f"alice-mcp-{suffix}", "alice")
    bob = api.mint(f"bob-mcp-{suffix}", "bob")
    ping = req("ping", id=1)
    for path in ("/mcp/message", "/mcp"):
        body = req("initialize", init_params()) if path == "/mcp" else ping
        r = c.post(path, json=body, headers=headers("private_one"))
        assert r.status_code == 401, r.text
        www = r.headers.get("www-authenticate", "")
        m = re.fullmatch(r'Bearer realm="understudy", resource_metadata="(.+)"', www)
        assert m and m.group(1).endswith("/.well-known/oauth-protected-resource"), www
        r = c.post(path, json=body, headers={**headers("private_one"), "Authorization": f"Bearer {bob}"})
        assert r.status_code == 403, r.text
        r = c.post(path, json=body, headers={**headers("private_one"), "X-API-Key": bob})
        assert r.status_code == 403, r.text
        r = c.post(path, json=body, headers={**headers("private_one"), "Authorization": f"Bearer {alice}"})
        assert r.status_code == 200, r.text
    r = c.get("/.well-known/oauth-protected-resource")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
    assert isinstance(r.json(), dict) and r.json()


def test_private_tenant_refuses_legacy_stream_without_credential(c):
    with c.stream("GET", "/mcp/sse", headers={"X-Tenant-ID": "private_one", "Accept": "text/event-stream"}) as r:
        assert r.status_code == 401, r.headers
        assert r.headers.get("www-authenticate", "").startswith('Bearer realm="understudy"')



# ---------------------------------------------------------------- the stateless 2026-07-28 revision

MODERN_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
               "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "0"},
               "io.modelcontextprotocol/clientCapabilities": {}}


def modern(c: httpx.Client, method: str, params: dict, name: str | None = None) -> httpx.Response:
    h = headers(version="2026-07-28", Mcp_Method=method)
    if name is not None:
        h["Mcp-Name"] = name
    return c.post("/mcp", json=req(method, {"_meta": MODERN_META, **params}), headers=h)


def test_stateless_revision_without_session(c):
    r = modern(c, "server/discover", {})
    assert r.status_code == 200, r.text
    assert "mcp-session-id" not in r.headers
    assert {"2026-07-28", *HANDSHAKE_VERSIONS} <= set(body_message(r)["result"]["supportedVersions"])
    r = modern(c, "tools/call", {"name": "get_weather", "arguments": {"city": "Paris"}}, "get_weather")
    assert r.status_code == 200, r.text
    assert body_message(r)["result"]["structuredContent"] == {"city": "Paris", "temperature_c": 21}
    r = modern(c, "tools/call", {"name": "get_invoice_ledger", "arguments": {"limit": 0}}, "get_invoice_ledger")
    result = body_message(r)["result"]
    assert result["isError"] is True and "customer_id" in result["content"][0]["text"], result
    r = modern(c, "tools/call", {"name": "get_weather", "arguments": {"city": "Paris"}}, "get_invoice_ledger")
    assert r.status_code == 400, r.text
    assert "error" in body_message(r)


def test_stateless_revision_needs_its_meta(c):
    r = c.post("/mcp", json=req("server/discover", {}),
               headers=headers(version="2026-07-28", Mcp_Method="server/discover"))
    assert r.status_code == 400, r.text
    rpc_error(r, -32602)


# ---------------------------------------------------------------- HTTP keep-alive after early answers


@pytest.mark.parametrize("tenant,status", [
    ("private_one", b"HTTP/1.1 401"),
    ("no_such_tenant", b"HTTP/1.1 404"),
    ("support", b"HTTP/1.1 200"),
])
def test_early_answers_keep_the_connection_usable(gw, tenant, status):
    """Answers given before the body is read (no credential, unknown tenant) must not drop the
    client's keep-alive connection silently."""
    first, second = slow_body_twice(gw.url, "/mcp/message", {"X-Tenant-ID": tenant}, req("ping", id=1))
    assert first.startswith(status), first
    assert_keeps_connection(first, second, status)


# ---------------------------------------------------------------- legacy stream keep-alive


def test_legacy_stream_pings_while_idle(embedded_gw):
    """An idle legacy stream gets a ping (an SSE comment) every 15 s; waited for generously."""
    with httpx.Client(base_url=embedded_gw.url, timeout=15) as c:
        with stream(c, "GET", "/mcp/sse", {"X-Tenant-ID": "support", "Accept": "text/event-stream"}) as (r, sse):
            assert r.status_code == 200
            assert sse.next_event().get("event") == "endpoint"
            assert sse.wait_comment(lambda text: True, bound=45)
