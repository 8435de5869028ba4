"""The async execute API (docs/execute.md, SPEC §6) end to end, read with a real SSE client
(``httpx-sse``): ``GET /mcp/manifest``, ``POST /mcp/execute``, ``GET /mcp/stream/{id}``,
``POST /mcp/cancel/{id}``, ``POST /mcp/cancel_all``, ``GET /mcp/calls/{id}``.

Against ``gw`` (embedded and shared) and against three shared processes on one Redis addressed
directly (``trio``): a call started on A is streamed from B and cancelled from C. ``openai_chat``
runs on a tenant created through the public API whose mock model answers slowly (one character
per ``partial`` event, 50 ms apart), so that a call is still running while it is streamed and
cancelled. Nothing here asserts speed: waits are bounded by ``BOUND`` only.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Iterator

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from mcpkit import BOUND, WEATHER, Api

# About 40 characters: 40 partial events of one character each.
ANSWER = "Your invoices are under Billing > Lists."
SLOW = {"stream_chunk_chars": 1, "stream_chunk_delay_ms": 50}
CHAT_INPUT = {"messages": [{"role": "user", "content": "Where are my invoices?"}]}
TERMINAL = {"final", "error", "cancelled"}


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def slow_tenant(api: Api) -> tuple[str, int]:
    """A global tenant with slow streaming and a fixed answer; (its id, the config version)."""
    tenant = uid("exec")
    r = api.c.post("/public/tenants", json={
        "tenant_id": tenant, "visibility": "global", "settings": SLOW, "default_response": ANSWER})
    assert r.status_code == 201, r.text
    return tenant, r.json()["version"]


class Exec:
    """One caller of the execute API on one process: its key, tenant and config version."""

    def __init__(self, base: str, key: str, tenant: str, version: int | None = None):
        h = {"Authorization": f"Bearer {key}", "X-Tenant-ID": tenant}
        if version is not None:
            h["X-Understudy-Config-Version"] = str(version)
        self.c = httpx.Client(base_url=base, headers=h, timeout=httpx.Timeout(15, read=BOUND * 2))

    def close(self) -> None:
        self.c.close()

    def manifest(self) -> httpx.Response:
        return self.c.get("/mcp/manifest")

    def execute(self, tool: str = "openai_chat", input: Any = None, **extra: Any) -> httpx.Response:
        body: dict[str, Any] = {"tool": tool, "input": CHAT_INPUT if input is None else input, **extra}
        return self.c.post("/mcp/execute", json=body)

    def start(self, tool: str = "openai_chat", input: Any = None, **extra: Any) -> str:
        r = self.execute(tool, input, **extra)
        assert r.status_code == 200, (r.status_code, r.text)
        body = r.json()
        assert body["status"] == "started" and body["call_id"], body
        return body["call_id"]

    def call(self, call_id: str) -> httpx.Response:
        return self.c.get(f"/mcp/calls/{call_id}")

    def cancel(self, call_id: str) -> httpx.Response:
        return self.c.post(f"/mcp/cancel/{call_id}")

    def cancel_all(self) -> httpx.Response:
        return self.c.post("/mcp/cancel_all")

    def events(self, call_id: str) -> Iterator[ServerSentEvent]:
        """The call's SSE events through httpx-sse, until the server closes the stream."""
        with connect_sse(self.c, "GET", f"/mcp/stream/{call_id}") as es:
            assert es.response.status_code == 200, es.response.read()
            yield from es.iter_sse()


def collect(events: Iterator[ServerSentEvent]) -> list[ServerSentEvent]:
    return list(events)


def check_sequence(events: list[ServerSentEvent]) -> None:
    """Every event carries an id, the ids increase, the stream ends with one terminal event."""
    assert events, "the stream closed without any event"
    ids = [int(e.id) for e in events]
    assert ids == sorted(set(ids)), f"event ids do not increase: {ids}"
    assert [e.event for e in events[:-1] if e.event in TERMINAL] == [], [e.event for e in events]
    assert events[-1].event in TERMINAL, [e.event for e in events]
    for e in events:
        assert json.loads(e.data)["type"] == e.event, (e.event, e.data)


def check_streamed_answer(events: list[ServerSentEvent], text: str) -> None:
    check_sequence(events)
    assert [e.event for e in events] == ["partial"] * (len(events) - 1) + ["final"], [e.event for e in events]
    partials = [json.loads(e.data)["text"] for e in events[:-1]]
    assert all(len(p) == 1 for p in partials), partials  # stream_chunk_chars 1
    assert "".join(partials) == text
    assert json.loads(events[-1].data) == {"type": "final", "text": text}


def check_error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.json()["error"]["code"] == code, r.text


def wait_ready(execs: list[Exec], status: int = 200) -> None:
    """Waits (bounded) until every process knows a freshly minted key, then expects ``status``
    from ``GET /mcp/manifest``: a new key reaches the other processes through the configuration
    change notices, so it may be unknown (401) there for a moment."""
    deadline = time.monotonic() + BOUND
    for ex in execs:
        while True:
            r = ex.manifest()
            if r.status_code != 401 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert r.status_code == status, (str(ex.c.base_url), r.status_code, r.text)


# ---------------------------------------------------------------- one process (embedded, shared)


@pytest.fixture
def setup(gw, api_factory):
    """(api, editor Exec on `support`, editor Exec on a slow tenant) on ``gw``."""
    api = api_factory(gw.url)
    key = api.mint(uid("editor"), uid("ed"), "editor")
    tenant, version = slow_tenant(api)
    support, slow = Exec(gw.url, key, "support"), Exec(gw.url, key, tenant, version)
    wait_ready([support, slow])
    yield api, support, slow
    support.close()
    slow.close()


def test_manifest_lists_tenant_tools_and_openai_chat(setup):
    _, support, slow = setup
    r = support.manifest()
    assert r.status_code == 200, r.text
    tools = {t["name"]: t for t in r.json()["tools"]}
    assert {"get_invoice_ledger", "get_weather", "openai_chat"} <= set(tools), tools
    assert tools["get_weather"]["description"] == "Current weather for a city."
    assert tools["get_invoice_ledger"]["input_schema"]["required"] == ["customer_id"]
    assert "messages" in tools["openai_chat"]["input_schema"]["properties"]
    assert [t["name"] for t in slow.manifest().json()["tools"]] == ["openai_chat"]


def test_openai_chat_streams_partials_then_final(setup):
    _, _, slow = setup
    call_id = slow.start()
    events = collect(slow.events(call_id))
    check_streamed_answer(events, ANSWER)
    r = slow.call(call_id)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["call_id"] == call_id and doc["tool"] == "openai_chat" and doc["status"] == "finished", doc
    assert doc["result"] == ANSWER and doc["error"] is None and doc["request_id"] is None, doc
    assert doc["created_at"] and doc["updated_at"], doc
    # After the end the stream still replays every event from the first.
    assert [(e.id, e.event, e.data) for e in collect(slow.events(call_id))] == \
        [(e.id, e.event, e.data) for e in events]


def test_scenario_tool_ends_with_its_content(setup):
    _, support, _ = setup
    call_id = support.start("get_weather", {"city": "Paris"})
    events = collect(support.events(call_id))
    check_sequence(events)
    assert events[-1].event == "final", [(e.event, e.data) for e in events]
    assert json.loads(json.loads(events[-1].data)["text"]) == WEATHER
    doc = support.call(call_id).json()
    assert doc["status"] == "finished" and doc["tool"] == "get_weather", doc


def test_scenario_tool_input_is_checked(setup):
    _, support, _ = setup
    r = support.execute("get_invoice_ledger", {"limit": 0})
    check_error(r, 422, "VALIDATION_ERROR")
    assert "customer_id" in r.text and "limit" in r.text, r.text
    check_error(support.execute("no_such_tool", {}), 404, "TOOL_NOT_FOUND")
    check_error(support.c.post("/mcp/execute", json={"tool": "get_weather", "input": {}, "nope": 1}),
                422, "VALIDATION_ERROR")


def test_cancel_while_streaming(setup):
    _, _, slow = setup
    call_id = slow.start()
    events = slow.events(call_id)
    seen = [next(events)]
    assert seen[0].event == "partial", seen[0]
    r = slow.cancel(call_id)
    assert r.status_code == 200, r.text
    assert r.json() == {"call_id": call_id, "status": "cancelled"}
    seen += collect(events)
    check_sequence(seen)
    assert seen[-1].event == "cancelled", [(e.event, e.data) for e in seen]
    assert slow.call(call_id).json()["status"] == "cancelled"
    # Cancelling an ended call says how it ended.
    assert slow.cancel(call_id).json() == {"call_id": call_id, "status": "cancelled"}


def test_cancel_all_cancels_the_callers_running_calls(setup):
    _, _, slow = setup
    ids = [slow.start() for _ in range(2)]
    r = slow.cancel_all()
    assert r.status_code == 200, r.text
    assert r.json() == {"cancelled": 2}
    for call_id in ids:
        assert slow.call(call_id).json()["status"] == "cancelled"
        assert collect(slow.events(call_id))[-1].event == "cancelled"
    assert slow.cancel_all().json() == {"cancelled": 0}


def test_request_id_is_idempotent(setup):
    _, _, slow = setup
    rid = uid("req")
    first = slow.start(request_id=rid)
    r = slow.execute(request_id=rid)
    assert r.status_code == 200, r.text
    assert r.json()["call_id"] == first, r.json()
    other = {"messages": [{"role": "user", "content": "Something else"}]}
    check_error(slow.execute(input=other, request_id=rid), 422, "VALIDATION_ERROR")
    assert slow.call(first).json()["request_id"] == rid


def test_viewer_key_is_403(gw, api_factory):
    api = api_factory(gw.url)
    viewer = Exec(gw.url, api.mint(uid("viewer"), uid("vw"), "viewer"), "support")
    try:
        wait_ready([viewer], 403)
        check_error(viewer.manifest(), 403, "AUTHZ_ERROR")
        check_error(viewer.execute(), 403, "AUTHZ_ERROR")
        check_error(viewer.call("call_unknown"), 403, "AUTHZ_ERROR")
    finally:
        viewer.close()


def test_no_or_unknown_key_is_401(gw):
    with httpx.Client(base_url=gw.url, timeout=15) as c:
        check_error(c.get("/mcp/manifest", headers={"X-Tenant-ID": "support"}), 401, "AUTH_ERROR")
        check_error(c.post("/mcp/execute", json={"tool": "openai_chat", "input": CHAT_INPUT},
                           headers={"X-Tenant-ID": "support", "Authorization": "Bearer usk_" + "0" * 64}),
                    401, "AUTH_ERROR")


def test_unknown_call_is_404(setup):
    _, support, _ = setup
    unknown = uuid.uuid4().hex
    check_error(support.call(unknown), 404, "CALL_NOT_FOUND")
    check_error(support.cancel(unknown), 404, "CALL_NOT_FOUND")
    check_error(support.c.get(f"/mcp/stream/{unknown}"), 404, "CALL_NOT_FOUND")


def test_call_of_another_tenant_is_not_found(setup):
    _, support, slow = setup
    call_id = slow.start()
    check_error(support.call(call_id), 404, "CALL_NOT_FOUND")
    assert slow.cancel(call_id).status_code == 200


def test_oversized_body_is_413(small_body_gw, api_factory):
    api = api_factory(small_body_gw.url)
    ex = Exec(small_body_gw.url, api.mint(uid("editor"), uid("ed"), "editor"), "support")
    try:
        wait_ready([ex])
        big = {"messages": [{"role": "user", "content": "x" * 4096}]}
        r = ex.execute(input=big)
        assert r.status_code == 413, (r.status_code, r.text)
        assert ex.execute().status_code == 200  # a small body on the same gateway is fine
    finally:
        ex.close()


# ---------------------------------------------------------------- three processes, one Redis


@pytest.fixture
def trio_setup(trio, api_factory):
    """Editor Execs on a fresh slow tenant on processes A, B and C (key minted on A)."""
    api = api_factory(trio.a.url)
    key = api.mint(uid("editor"), uid("ed"), "editor")
    tenant, version = slow_tenant(api)
    execs = [Exec(g.url, key, tenant, version) for g in trio.all]
    wait_ready(execs)
    yield api, tenant, version, execs
    for ex in execs:
        ex.close()


def test_execute_on_a_stream_on_b(trio_setup):
    _, _, _, (a, b, c) = trio_setup
    call_id = a.start()
    events = collect(b.events(call_id))
    check_streamed_answer(events, ANSWER)
    for ex in (a, b, c):
        doc = ex.call(call_id).json()
        assert doc["status"] == "finished" and doc["result"] == ANSWER, doc


def test_cancel_on_c_ends_the_stream_on_b(trio_setup):
    _, _, _, (a, b, c) = trio_setup
    done = a.start()  # a first call, run to its end
    check_streamed_answer(collect(b.events(done)), ANSWER)

    call_id = a.start()
    events = b.events(call_id)
    seen = [next(events)]
    assert seen[0].event == "partial", seen[0]
    r = c.cancel(call_id)
    assert r.status_code == 200, r.text
    assert r.json() == {"call_id": call_id, "status": "cancelled"}
    seen += collect(events)
    check_sequence(seen)
    assert seen[-1].event == "cancelled", [(e.event, e.data) for e in seen]
    assert all(e.event == "partial" for e in seen[:-1])
    assert len(seen) - 1 < len(ANSWER), "the call was not cut short"
    doc = a.call(call_id).json()
    assert doc["status"] == "cancelled" and doc["result"] is None, doc
    # The first call, already finished, stays finished.
    assert c.cancel(done).json() == {"call_id": done, "status": "finished"}
    assert a.call(done).json()["status"] == "finished"


def test_cancel_all_from_another_process(trio_setup):
    _, _, _, (a, b, c) = trio_setup
    ids = [a.start(), b.start()]
    assert c.cancel_all().json() == {"cancelled": 2}
    for call_id, ex in zip(ids, (b, c)):
        assert ex.call(call_id).json()["status"] == "cancelled"


def test_request_id_across_processes(trio_setup):
    api, tenant, version, (a, b, c) = trio_setup
    rid = uid("req")
    first = a.start(request_id=rid)
    r = b.execute(request_id=rid)
    assert r.status_code == 200, r.text
    assert r.json()["call_id"] == first, r.json()
    assert r.json()["status"] in {"started", "running", "finished"}, r.json()
    other = {"messages": [{"role": "user", "content": "Something else"}]}
    check_error(c.execute(input=other, request_id=rid), 422, "VALIDATION_ERROR")
    # The refused request changed nothing: the call runs to its end.
    check_streamed_answer(collect(c.events(first)), ANSWER)
    assert b.execute(request_id=rid).json() == {"call_id": first, "status": "finished"}

    # Another caller's request_id names its own call.
    other_key = api.mint(uid("editor"), uid("ed2"), "editor")
    someone = Exec(str(b.c.base_url), other_key, tenant, version)
    try:
        wait_ready([someone])
        assert someone.start(request_id=rid) != first
    finally:
        someone.close()


def test_errors_on_every_process(trio, trio_setup, api_factory):
    _, tenant, version, execs = trio_setup
    api = api_factory(trio.b.url)
    viewer_key = api.mint(uid("viewer"), uid("vw"), "viewer")
    call_id = execs[0].start()
    for g, ex in zip(trio.all, execs):
        viewer = Exec(g.url, viewer_key, tenant, version)
        try:
            wait_ready([viewer], 403)
            check_error(viewer.execute(), 403, "AUTHZ_ERROR")
            check_error(viewer.call(call_id), 403, "AUTHZ_ERROR")
            check_error(viewer.cancel(call_id), 403, "AUTHZ_ERROR")
        finally:
            viewer.close()
        unknown = uuid.uuid4().hex
        check_error(ex.call(unknown), 404, "CALL_NOT_FOUND")
        check_error(ex.cancel(unknown), 404, "CALL_NOT_FOUND")
        check_error(ex.c.get(f"/mcp/stream/{unknown}"), 404, "CALL_NOT_FOUND")
    assert execs[2].cancel(call_id).json()["status"] == "cancelled"
