"""MCP sessions spread over two gateway processes sharing one Redis (SPEC §4.2, §4.3): a
round-robin proxy sends every HTTP request to the next process, so consecutive requests of one
session land on different processes. Raw httpx where the order of requests must be known (the
proxy is aligned so that a given request reaches a given process), the SDK clients elsewhere.
"""

from __future__ import annotations

import json
import uuid

import anyio
import httpx
import pytest

from mcpkit import (
    LIST_CHANGED, NEWEST, STATE_URI, Api, exercise_support, headers, initialize, init_params, is_list_changed,
    MODERN, body_message, high_level, legacy_sse, only_mcp2, req, stream, streamable,
)

A, B = 0, 1


def fresh_tenant(api: Api, prefix: str) -> str:
    tenant = f"{prefix}_{uuid.uuid4().hex[:10]}"
    api.create_tenant(tenant, state={"tenant": tenant})
    api.add_tool(tenant, "tool_one", schema={"type": "object"})
    return tenant


def upstreams_since(pair, n: int) -> list[int]:
    return [entry[0] for entry in pair.proxy.log[n:]]


# ---------------------------------------------------------------- streamable HTTP


def test_initialize_on_one_process_call_on_the_other(pair):
    with httpx.Client(base_url=pair.url, timeout=15) as c:
        pair.proxy.align(A)
        n = len(pair.proxy.log)
        sid, version = initialize(c)  # initialize -> A, notifications/initialized -> B
        h = headers(session=sid, version=version)
        r = c.post("/mcp", json=req("tools/call", {"name": "get_weather", "arguments": {"city": "Paris"}}, 2),
                   headers=h)  # -> A
        assert r.status_code == 200, r.text
        assert body_message(r)["result"]["structuredContent"] == {"city": "Paris", "temperature_c": 21}
        r = c.post("/mcp", json=req("tools/list", id=3), headers=h)  # -> B
        assert r.status_code == 200, r.text
        assert {t["name"] for t in body_message(r)["result"]["tools"]} >= {"get_weather", "get_invoice_ledger"}
        assert upstreams_since(pair, n) == [A, B, A, B]


@pytest.mark.anyio
async def test_sdk_streamable_session_alternates_processes(pair):
    n = len(pair.proxy.log)
    async with streamable(f"{pair.url}/mcp", {"X-Tenant-Id": "support"}) as conn:
        await exercise_support(conn)
    posts = [e[0] for e in pair.proxy.log[n:] if e[1] == "POST"]
    assert set(posts) == {A, B}, pair.proxy.log[n:]


@only_mcp2
@pytest.mark.anyio
async def test_sdk_client_auto_mode_through_proxy(pair):
    """The stateless 2026-07-28 revision: every request stands alone, whichever process takes it."""
    n = len(pair.proxy.log)
    async with high_level(f"{pair.url}/mcp", "auto", {"X-Tenant-Id": "support"}) as conn:
        assert conn.version == MODERN
        await exercise_support(conn)
    assert {e[0] for e in pair.proxy.log[n:]} == {A, B}


def test_delete_on_one_process_ends_the_session_on_the_other(pair):
    with httpx.Client(base_url=pair.url, timeout=15) as c:
        pair.proxy.align(A)
        sid, version = initialize(c)  # A, B
        h = headers(session=sid, version=version)
        n = len(pair.proxy.log)
        r = c.delete("/mcp", headers=h)  # -> A
        assert r.status_code == 204, r.text
        for upstream in (B, A):
            r = c.post("/mcp", json=req("tools/list", id=7), headers=h)
            assert r.status_code == 404, (upstream, r.status_code, r.text)
            assert r.json()["jsonrpc"] == "2.0" and "error" in r.json(), r.text
        assert upstreams_since(pair, n) == [A, B, A]


def test_get_stream_resumes_on_the_other_process(pair, api_factory):
    """A GET /mcp stream on A receives a list_changed, is closed; a tool change is made meanwhile;
    the stream resumed with Last-Event-ID on B receives that change."""
    api_b = api_factory(pair.b.url)
    tenant = fresh_tenant(api_b, "resume")
    with httpx.Client(base_url=pair.url, timeout=15) as c:
        pair.proxy.align(A)
        sid, version = initialize(c, tenant=tenant)  # A, B
        get_headers = headers(tenant, session=sid, version=version, Accept="text/event-stream")
        pair.proxy.align(A)
        with stream(c, "GET", "/mcp", get_headers) as (r, sse):
            assert r.status_code == 200, r.read()
            assert pair.proxy.log[-1][0] == A
            api_b.add_tool(tenant, "tool_two")
            first, msg = sse.wait_message(is_list_changed)
            assert first.get("id"), f"event without id: {first}"

        api_b.add_tool(tenant, "tool_three")  # while no stream is open

        pair.proxy.align(B)
        with stream(c, "GET", "/mcp", {**get_headers, "Last-Event-ID": first["id"]}) as (r, sse):
            assert r.status_code == 200, r.read()
            assert pair.proxy.log[-1][0] == B
            again, msg = sse.wait_message(is_list_changed)
            assert again.get("id") and again["id"] != first["id"], (first, again)
        # and the session still works on either process afterwards
        r = c.post("/mcp", json=req("tools/list", id=9), headers=headers(tenant, session=sid, version=version))
        assert r.status_code == 200
        assert {t["name"] for t in body_message(r)["result"]["tools"]} == {"tool_one", "tool_two", "tool_three"}


def test_list_changed_reaches_get_stream_held_by_the_other_process(pair, api_factory):
    api_b = api_factory(pair.b.url)
    tenant = fresh_tenant(api_b, "lc_raw")
    with httpx.Client(base_url=pair.url, timeout=15) as c:
        pair.proxy.align(A)
        sid, version = initialize(c, tenant=tenant)
        pair.proxy.align(A)
        with stream(c, "GET", "/mcp", headers(tenant, session=sid, version=version, Accept="text/event-stream")) as (r, sse):
            assert r.status_code == 200 and pair.proxy.log[-1][0] == A
            assert r.headers["content-type"].startswith("text/event-stream")
            sc_two, _ = api_b.add_tool(tenant, "tool_two")
            ev, msg = sse.wait_message(is_list_changed)
            assert msg["jsonrpc"] == "2.0" and msg["method"] == LIST_CHANGED and "id" not in msg, msg
            api_b.delete_scenario(tenant, sc_two)  # a tool going away is a change too
            ev2, _ = sse.wait_message(is_list_changed)
            assert ev2["id"] != ev["id"]


@pytest.mark.anyio
async def test_sdk_list_changed_handler_fires_for_change_through_other_process(pair, api_factory):
    """The SDK's own GET stream lands on one process; the tenant's tools are changed through the
    other one's public API; the client's message handler receives tools/list_changed."""
    api = {A: api_factory(pair.a.url), B: api_factory(pair.b.url)}
    tenant = fresh_tenant(api[A], "lc_sdk")
    mark = pair.mark()
    async with streamable(f"{pair.url}/mcp", {"X-Tenant-Id": tenant}) as conn:
        held_by, *_rest, status = await anyio.to_thread.run_sync(pair.wait_answer, "GET", "/mcp", mark)
        assert status == 200
        other = B if held_by == A else A
        await anyio.to_thread.run_sync(api[other].add_tool, tenant, "tool_two")
        await conn.inbox.wait_for(LIST_CHANGED)
        names = {t.name for t in (await conn.session.list_tools()).tools}
        assert names == {"tool_one", "tool_two"}


def test_state_written_through_one_process_is_read_through_the_other(pair, api_factory):
    """resources/read serves the tenant's state; a write through B is seen by a read on A that
    carries the written configuration version (SPEC §8.2)."""
    api_b = api_factory(pair.b.url)
    tenant = fresh_tenant(api_b, "state")
    with httpx.Client(base_url=pair.url, timeout=15) as c:
        pair.proxy.align(A)
        sid, version = initialize(c, tenant=tenant)  # A, B
        h = headers(tenant, session=sid, version=version)
        r = api_b.c.put(f"/public/tenants/{tenant}/state", json={"state": {"orders": [1, 2, 3]}})
        assert r.status_code == 200, r.text
        pair.proxy.align(A)
        r = c.post("/mcp", json=req("resources/read", {"uri": STATE_URI}, 5),
                   headers={**h, "X-Understudy-Config-Version": str(r.json()["version"])})
        assert pair.proxy.log[-1][0] == A
        contents = body_message(r)["result"]["contents"]
        assert contents[0]["uri"] == STATE_URI and contents[0]["mimeType"] == "application/json"
        assert json.loads(contents[0]["text"]) == {"orders": [1, 2, 3]}


# ---------------------------------------------------------------- legacy HTTP+SSE


def test_legacy_stream_on_one_process_posts_on_the_other(pair):
    with httpx.Client(base_url=pair.url, timeout=15) as c:
        pair.proxy.align(A)
        with stream(c, "GET", "/mcp/sse", {"X-Tenant-ID": "support", "Accept": "text/event-stream"}) as (r, sse):
            assert r.status_code == 200, r.read()
            endpoint = sse.next_event()
            assert endpoint.get("event") == "endpoint", endpoint
            url = endpoint["data"]
            assert url.startswith("/mcp/message?sessionId="), url
            h = headers()
            for i, (method, params) in enumerate([
                ("initialize", init_params()),
                ("tools/list", None),
                ("tools/call", {"name": "get_invoice_ledger", "arguments": {"customer_id": "c1"}}),
                ("ping", None),
            ]):
                target = B if i % 2 == 0 else A  # the stream is on A
                pair.proxy.align(target)
                p = c.post(url, json=req(method, params, id=i + 1), headers=h)
                assert p.status_code == 202, (method, p.status_code, p.text)
                assert pair.proxy.log[-1][0] == target
                ev, msg = sse.wait_message(lambda m, i=i: m.get("id") == i + 1)
                assert ev.get("event", "message") == "message"
                assert "result" in msg, msg
                if method == "initialize":
                    assert msg["result"]["protocolVersion"] == NEWEST
                    p = c.post(url, json=req("notifications/initialized", id=None), headers=h)
                    assert p.status_code == 202
                if method == "tools/call":
                    assert msg["result"]["structuredContent"] == {"invoices": ["INV-001", "INV-002"]}


def test_legacy_stream_under_tenant_prefix_names_prefixed_endpoint(pair):
    with httpx.Client(base_url=pair.url, timeout=15) as c:
        with stream(c, "GET", "/t/support/mcp/sse", {"Accept": "text/event-stream"}) as (r, sse):
            assert r.status_code == 200
            endpoint = sse.next_event()
            assert endpoint.get("event") == "endpoint"
            assert endpoint["data"].startswith("/t/support/mcp/message?sessionId="), endpoint
            p = c.post(endpoint["data"], json=req("initialize", init_params()), headers=headers(None))
            assert p.status_code == 202, p.text
            _, msg = sse.wait_message(lambda m: m.get("id") == 1)
            assert msg["result"]["protocolVersion"] == NEWEST


@pytest.mark.anyio
async def test_sdk_legacy_sse_through_proxy(pair):
    n = len(pair.proxy.log)
    async with legacy_sse(f"{pair.url}/mcp/sse", {"X-Tenant-Id": "support"}) as conn:
        await exercise_support(conn)
    log = pair.proxy.log[n:]
    get = [e[0] for e in log if e[1] == "GET"]
    posts = [e[0] for e in log if e[1] == "POST"]
    assert len(get) == 1 and set(posts) == {A, B}, log


def test_legacy_list_changed_reaches_stream_held_by_the_other_process(pair, api_factory):
    api_b = api_factory(pair.b.url)
    tenant = fresh_tenant(api_b, "lc_legacy")
    with httpx.Client(base_url=pair.url, timeout=15) as c:
        pair.proxy.align(A)
        with stream(c, "GET", "/mcp/sse", {"X-Tenant-ID": tenant, "Accept": "text/event-stream"}) as (r, sse):
            assert r.status_code == 200
            url = sse.next_event()["data"]
            assert c.post(url, json=req("initialize", init_params()), headers=headers(tenant)).status_code == 202
            sse.wait_message(lambda m: m.get("id") == 1)
            assert c.post(url, json=req("notifications/initialized", id=None), headers=headers(tenant)).status_code == 202
            api_b.add_tool(tenant, "tool_two")
            ev, msg = sse.wait_message(is_list_changed)
            assert ev.get("event", "message") == "message"


@pytest.mark.anyio
async def test_sdk_legacy_list_changed_handler_fires(pair, api_factory):
    api = {A: api_factory(pair.a.url), B: api_factory(pair.b.url)}
    tenant = fresh_tenant(api[A], "lc_sdk_legacy")
    mark = pair.mark()
    async with legacy_sse(f"{pair.url}/mcp/sse", {"X-Tenant-Id": tenant}) as conn:
        held_by, *_rest, status = await anyio.to_thread.run_sync(pair.wait_answer, "GET", "/mcp/sse", mark)
        assert status == 200
        other = B if held_by == A else A
        await anyio.to_thread.run_sync(api[other].add_tool, tenant, "tool_two")
        await conn.inbox.wait_for(LIST_CHANGED)
