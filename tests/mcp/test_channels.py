"""Channels (SPEC §7) end to end, against real gateway processes: the REST routes and every bad
input they refuse (status and envelope code), the SSE stream read with a real SSE client
(``httpx-sse``) and as raw lines, TTLs, streams that end (delete, revoke, grant expiry), the
channel MCP server through the official ``mcp`` SDK (streamable HTTP at ``/channels/mcp``, the
legacy transport at ``/channels/sse``, a tenant with ``channel_tools: true``), a tenant's chaos on
its channels, and three shared processes on one Redis (``trio``): a channel created and published
on A, streamed from B and C, a subscriber resuming on the third process with ``Last-Event-ID``.

Single-process tests run on ``gw`` (embedded, and shared with its own Redis). Every subscriber is
read in a background thread into a queue, so every wait is bounded (``BOUND``, generous) and a
missing event fails with what was seen instead of hanging; nothing here asserts speed. A
subscriber is subscribed once its response headers have arrived (the gateway subscribes before it
answers), so messages published after that reach it.

"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent

from mcpkit import (
    ACCEPT, ADMIN, BOUND, Api, McpError, body_message, breaks_schema_as_error, error_code, init_params, is_error,
    legacy_sse, req, stream, streamable, structured, text_of,
)
from mcpkit import headers as rpc_headers

CHANNEL_TOOLS = ["create_channel", "delete_channel", "publish_message", "create_read_grant",
                 "revoke_read_grant", "get_channel", "read_channel_messages"]
REQUIRED = {
    "create_channel": ["name", "visibility"],
    "delete_channel": ["publish_token", "channel_id"],
    "publish_message": ["publish_token", "channel_id", "payload"],
    "create_read_grant": ["publish_token", "channel_id"],
    "revoke_read_grant": ["publish_token", "channel_id", "grant_id"],
    "get_channel": ["publish_token", "channel_id"],
    "read_channel_messages": ["channel_id"],
}
CHANNEL_KEYS = {"id", "name", "visibility", "description", "default_ttl_seconds", "created_at", "tenant_id"}
GRANT_KEYS = {"id", "channel_id", "label", "expires_at", "created_at", "revoked_at"}
MESSAGE_KEYS = ["id", "payload", "metadata", "published_at"]  # in the order the gateway writes them
MAX_PAYLOAD = 256 * 1024
UNRETAINED = ("Last-Event-ID {} is not a message this channel retains; "
              "replaying from the oldest retained message")
NIL_CHANNEL = "00000000-0000-4000-8000-000000000000"


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def rfc3339_in(seconds: float) -> str:
    t = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1] + "+00:00")


def check_error(r: httpx.Response, status: int, code: str) -> dict:
    """The §7.3 envelope with ``code``, and exactly that."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    return body


def sse_path(ch: dict) -> str:
    return f"/channel/v1/{ch['visibility']}/{ch['id']}"


def as_delivered(message: dict) -> dict:
    """A publish answer as subscribers and readers get it (no expires_at)."""
    return {k: message[k] for k in MESSAGE_KEYS}


# ---------------------------------------------------------------- REST client


class Channels:
    """The channel REST routes of one process."""

    def __init__(self, base: str):
        self.base = base
        self.c = httpx.Client(base_url=base, timeout=15)

    def close(self) -> None:
        self.c.close()

    def create_raw(self, body: Any = None, tenant: str | None = None, content: bytes | None = None,
                   **hdrs: str) -> httpx.Response:
        h = dict(hdrs)
        if tenant:
            h["X-Tenant-ID"] = tenant
        if content is not None:
            return self.c.post("/v1/channels", content=content, headers={"Content-Type": "application/json", **h})
        return self.c.post("/v1/channels", json=body, headers=h)

    def create(self, visibility: str = "public", tenant: str | None = None, **fields: Any) -> dict:
        body = {"name": uid("chan"), "visibility": visibility, **fields}
        r = self.create_raw(body, tenant)
        assert r.status_code == 201, (r.status_code, r.text)
        return r.json()

    @staticmethod
    def owner(ch: dict | str) -> dict[str, str]:
        return {"X-Publish-Token": ch if isinstance(ch, str) else ch["publish_token"]}

    def publish_raw(self, ch: dict, body: Any = None, content: bytes | None = None,
                    token: str | None = "owner") -> httpx.Response:
        h = self.owner(ch) if token == "owner" else ({"X-Publish-Token": token} if token else {})
        path = f"/v1/channels/{ch['id']}/publish"
        if content is not None:
            return self.c.post(path, content=content, headers={"Content-Type": "application/json", **h})
        return self.c.post(path, json=body, headers=h)

    def publish(self, ch: dict, payload: Any, **fields: Any) -> dict:
        r = self.publish_raw(ch, {"payload": payload, **fields})
        assert r.status_code == 201, (r.status_code, r.text)
        return r.json()

    def grant(self, ch: dict, **fields: Any) -> dict:
        r = self.c.post(f"/v1/channels/{ch['id']}/read-grants", json=fields, headers=self.owner(ch))
        assert r.status_code == 201, (r.status_code, r.text)
        return r.json()

    def revoke(self, ch: dict, grant_id: str) -> dict:
        r = self.c.post(f"/v1/channels/{ch['id']}/read-grants/{grant_id}/revoke", headers=self.owner(ch))
        assert r.status_code == 200, (r.status_code, r.text)
        return r.json()

    def messages(self, ch: dict, hdrs: dict[str, str] | None = None, **params: Any) -> httpx.Response:
        return self.c.get(f"/v1/channels/{ch['id']}/messages", params=params, headers=hdrs or {})

    def read_all(self, ch: dict, hdrs: dict[str, str] | None = None) -> list[dict]:
        r = self.messages(ch, hdrs, limit=1000)
        assert r.status_code == 200, (r.status_code, r.text)
        assert r.json()["has_more"] is False
        return r.json()["messages"]

    def delete(self, ch: dict) -> None:
        r = self.c.delete(f"/v1/channels/{ch['id']}", headers=self.owner(ch))
        assert r.status_code == 200, (r.status_code, r.text)
        assert r.json() == {"id": ch["id"], "deleted": True}


@pytest.fixture
def api_(gw, api_factory) -> Channels:
    ch = Channels(gw.url)
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def tuned_gw(session_launcher):
    """An embedded gateway with a 1 KiB payload limit that keeps 3 messages per channel."""
    return session_launcher.gateway(
        name="channels-tuned",
        extra_args=("--channel-max-payload-bytes", "1024", "--channel-retention", "3", "--admin-token", ADMIN))


# ---------------------------------------------------------------- SSE subscribers

END = object()


class Subscriber:
    """One SSE subscriber of a channel, read in a background thread: ``httpx-sse`` events, or raw
    lines (``raw=True``). Subscribed once constructed (the response headers are in)."""

    def __init__(self, base: str, path: str, hdrs: dict[str, str] | None = None,
                 params: dict[str, str] | None = None, raw: bool = False):
        self.raw = raw
        self.client = httpx.Client(base_url=base, timeout=httpx.Timeout(15, read=120))
        request = self.client.build_request("GET", path, params=params,
                                            headers={"Accept": "text/event-stream", **(hdrs or {})})
        self.response = self.client.send(request, stream=True)
        if self.response.status_code != 200:
            self.response.read()
            status, text = self.response.status_code, self.response.text
            self.client.close()
            raise AssertionError(f"subscribe {path}: {status} {text}")
        self.q: queue.Queue = queue.Queue()
        self.closing = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            if self.raw:
                for line in self.response.iter_lines():
                    self.q.put(line)
            else:
                for ev in EventSource(self.response).iter_sse():
                    # httpx-sse 0.4.3 dispatches an empty event for a comment block (keep-alive,
                    # "stream ended") once an id was seen; the WHATWG algorithm dispatches nothing
                    # when the data buffer is empty, and the gateway never sends empty data.
                    if ev.data != "":
                        self.q.put(ev)
            self.q.put(END)
        except Exception as e:  # noqa: BLE001 - handed to the test
            self.q.put(END if self.closing else e)

    def _get(self, deadline: float, what: str) -> Any:
        try:
            item = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"{what}: nothing in time (bounded wait)") from None
        if isinstance(item, Exception):
            raise item
        return item

    # httpx-sse events

    def take(self, n: int, bound: float = BOUND) -> list[ServerSentEvent]:
        """The next ``n`` events; fails if the stream ends or stalls first."""
        deadline = time.monotonic() + bound
        got: list[ServerSentEvent] = []
        while len(got) < n:
            item = self._get(deadline, f"event {len(got) + 1} of {n} (got {[e.data for e in got]})")
            if item is END:
                raise AssertionError(f"the stream ended after {len(got)} of {n} events: {[e.data for e in got]}")
            got.append(item)
        return got

    def wait_end(self, bound: float = BOUND) -> list[Any]:
        """Everything until the server closes the stream (raw: the lines, less blank lines and
        keep-alive comments)."""
        deadline = time.monotonic() + bound
        got: list[Any] = []
        while True:
            item = self._get(deadline, f"the end of the stream (got {got})")
            if item is END:
                return got
            if not self.raw or item not in ("", ": keep-alive"):
                got.append(item)

    # raw lines

    def block(self, bound: float = BOUND, keep_alive: bool = False) -> list[str]:
        """The next block of lines up to a blank line (keep-alive comments skipped unless asked)."""
        assert self.raw
        deadline = time.monotonic() + bound
        lines: list[str] = []
        while True:
            item = self._get(deadline, f"a block (partial {lines})")
            if item is END:
                raise AssertionError(f"the stream ended; partial block {lines}")
            if item == "":
                if lines == [": keep-alive"] and not keep_alive:
                    lines = []
                    continue
                if lines:
                    return lines
                continue
            lines.append(item)

    def close(self) -> None:
        self.closing = True
        stream = self.response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.response.close()
        self.client.close()
        self.thread.join(5)


class Subs:
    """Closes every subscriber a test opened."""

    def __init__(self):
        self.items: list[Subscriber] = []

    def __call__(self, *a: Any, **kw: Any) -> Subscriber:
        s = Subscriber(*a, **kw)
        self.items.append(s)
        return s

    def close(self) -> None:
        for s in self.items:
            s.close()


@pytest.fixture
def subs():
    s = Subs()
    yield s
    s.close()


def check_event(ev: ServerSentEvent, message: dict) -> None:
    assert ev.event == "message", ev
    assert ev.id == message["id"], (ev.id, message)
    assert json.loads(ev.data) == as_delivered(message), (ev.data, message)


def check_block(block: list[str], message: dict) -> None:
    """Exactly `id:`, `event: message`, `data:` (the message's four fields, in order)."""
    assert len(block) == 3, block
    assert block[0] == f"id: {message['id']}", block
    assert block[1] == "event: message", block
    assert block[2].startswith("data: "), block
    data = json.loads(block[2][len("data: "):])
    assert list(data) == MESSAGE_KEYS, data
    assert data == as_delivered(message), (data, message)


# ================================================================ 1. REST


def test_create_returns_the_channel(api_, gw):
    r = api_.create_raw({"name": "orders", "visibility": "private", "description": "Order events",
                         "default_ttl_seconds": 3600})
    assert r.status_code == 201, r.text
    ch = r.json()
    assert set(ch) == CHANNEL_KEYS | {"publish_token", "channel_url"}, ch
    assert ch["name"] == "orders" and ch["visibility"] == "private"
    assert ch["description"] == "Order events" and ch["default_ttl_seconds"] == 3600
    assert ch["tenant_id"] is None
    assert abs((parse_time(ch["created_at"]) - datetime.now(timezone.utc)).total_seconds()) < 600
    assert isinstance(ch["publish_token"], str) and len(ch["publish_token"]) >= 16
    assert ch["channel_url"] == f"{gw.url}/channel/v1/private/{ch['id']}"

    pub = api_.create()
    assert pub["description"] is None and pub["default_ttl_seconds"] is None
    assert pub["channel_url"] == f"{gw.url}/channel/v1/public/{pub['id']}"
    assert pub["id"] != ch["id"] and pub["publish_token"] != ch["publish_token"]
    # A name of 128 characters is fine.
    assert api_.create(name="n" * 128)["name"] == "n" * 128

    r = api_.c.get(f"/v1/channels/{ch['id']}", headers=api_.owner(ch))
    assert r.status_code == 200, r.text
    got = r.json()
    assert set(got) == CHANNEL_KEYS | {"channel_url"}, got  # the token is shown once only
    assert {k: got[k] for k in CHANNEL_KEYS} == {k: ch[k] for k in CHANNEL_KEYS}
    assert got["channel_url"] == ch["channel_url"]


def test_create_with_a_tenant(api_):
    ch = api_.create(tenant="support")
    assert ch["tenant_id"] == "support"
    r = api_.c.get(f"/v1/channels/{ch['id']}", headers=api_.owner(ch))
    assert r.json()["tenant_id"] == "support"


@pytest.mark.parametrize("body, content, tenant, status, code", [
    pytest.param(None, b"{not json", None, 400, "invalid_json", id="not-json"),
    pytest.param(None, b"", None, 400, "invalid_json", id="empty-body"),
    pytest.param({"name": "a", "visibility": "public", "colour": "red"}, None, None, 400, "invalid_input",
                 id="unknown-field"),
    pytest.param({"name": "a", "visibility": "secret"}, None, None, 400, "invalid_input", id="bad-visibility"),
    pytest.param({"name": "a"}, None, None, 400, "invalid_input", id="no-visibility"),
    pytest.param({"visibility": "public"}, None, None, 400, "invalid_input", id="no-name"),
    pytest.param({"name": "", "visibility": "public"}, None, None, 400, "invalid_input", id="empty-name"),
    pytest.param({"name": "n" * 129, "visibility": "public"}, None, None, 400, "invalid_input", id="long-name"),
    pytest.param({"name": 7, "visibility": "public"}, None, None, 400, "invalid_input", id="name-not-string"),
    pytest.param({"name": "a", "visibility": "public", "default_ttl_seconds": 0}, None, None, 400,
                 "invalid_input", id="ttl-zero"),
    pytest.param({"name": "a", "visibility": "public", "default_ttl_seconds": -5}, None, None, 400,
                 "invalid_input", id="ttl-negative"),
    pytest.param({"name": "a", "visibility": "public"}, None, "no_such_tenant_x", 404, "not_found",
                 id="unknown-tenant"),
])
def test_create_refuses(api_, body, content, tenant, status, code):
    check_error(api_.create_raw(body, tenant, content=content), status, code)


def test_create_refuses_an_array_body(api_):
    check_error(api_.create_raw(["arr", "public"]), 400, "invalid_input")


def test_owner_routes_need_the_publish_token(api_):
    ch = api_.create("private")
    grant = api_.grant(ch)
    routes = [
        ("GET", f"/v1/channels/{ch['id']}", None),
        ("DELETE", f"/v1/channels/{ch['id']}", None),
        ("POST", f"/v1/channels/{ch['id']}/publish", {"payload": "x"}),
        ("POST", f"/v1/channels/{ch['id']}/read-grants", {"label": "x"}),
        ("POST", f"/v1/channels/{ch['id']}/read-grants/{grant['id']}/revoke", None),
    ]
    other = api_.create("private")
    for method, path, body in routes:
        check_error(api_.c.request(method, path, json=body), 401, "unauthorized")
        check_error(api_.c.request(method, path, json=body, headers={"X-Publish-Token": "pub_wrong"}),
                    403, "forbidden")
        # Another channel's token, and a read token, are not this channel's publish token.
        check_error(api_.c.request(method, path, json=body, headers=api_.owner(other)), 403, "forbidden")
        check_error(api_.c.request(method, path, json=body, headers={"X-Publish-Token": grant["raw_token"]}),
                    403, "forbidden")
        # Unknown and malformed channel ids are 404, token or not.
        for bad in (NIL_CHANNEL, "not-a-channel"):
            check_error(api_.c.request(method, path.replace(ch["id"], bad), json=body, headers=api_.owner(ch)),
                        404, "not_found")
    # Nothing of the refused requests happened.
    assert api_.read_all(ch, api_.owner(ch)) == []
    assert api_.c.get(f"/v1/channels/{ch['id']}", headers=api_.owner(ch)).status_code == 200


def test_publish_returns_the_message(api_):
    ch = api_.create()
    payloads = ["order.created", {"event": "order.created", "items": [1, 2]}, [1, "two", None], 42, 1.5,
                True, False, "", {}]
    out = []
    for p in payloads:
        m = api_.publish(ch, p)
        assert set(m) == set(MESSAGE_KEYS), m  # no expires_at without a TTL
        assert m["payload"] == p and m["metadata"] is None
        assert uuid.UUID(m["id"]).version == 7, m["id"]
        parse_time(m["published_at"])
        out.append(m)
    ids = [m["id"] for m in out]
    # UUIDv7 from the stream position: distinct, and in publish order to the millisecond (two
    # messages of one millisecond are ordered by their position, not by their id's text).
    stamps = [i[:13] for i in ids]
    assert len(set(ids)) == len(ids) and stamps == sorted(stamps), ids

    m = api_.publish(ch, "with meta", metadata={"source": "checkout", "n": 1}, ttl_seconds=900)
    assert m["metadata"] == {"source": "checkout", "n": 1}
    assert set(m) == set(MESSAGE_KEYS) | {"expires_at"}, m
    ttl = (parse_time(m["expires_at"]) - parse_time(m["published_at"])).total_seconds()
    assert 899 <= ttl <= 901, m
    assert api_.read_all(ch) == [as_delivered(x) for x in out + [m]]

    # A channel's default TTL applies to messages published without one; theirs wins.
    timed = api_.create(default_ttl_seconds=3600)
    m = api_.publish(timed, "x")
    assert 3599 <= (parse_time(m["expires_at"]) - parse_time(m["published_at"])).total_seconds() <= 3601
    m = api_.publish(timed, "y", ttl_seconds=60)
    assert 59 <= (parse_time(m["expires_at"]) - parse_time(m["published_at"])).total_seconds() <= 61


@pytest.mark.parametrize("body, content, code", [
    pytest.param({"payload": None}, None, "invalid_input", id="null-payload"),
    pytest.param({}, None, "invalid_input", id="no-payload"),
    pytest.param({"metadata": {"a": 1}}, None, "invalid_input", id="metadata-only"),
    pytest.param({"payload": "x", "metadata": [1]}, None, "invalid_input", id="metadata-array"),
    pytest.param({"payload": "x", "metadata": "m"}, None, "invalid_input", id="metadata-string"),
    pytest.param({"payload": "x", "ttl_seconds": 0}, None, "invalid_input", id="ttl-zero"),
    pytest.param({"payload": "x", "ttl_seconds": -1}, None, "invalid_input", id="ttl-negative"),
    pytest.param({"payload": "x", "ttl_seconds": "soon"}, None, "invalid_input", id="ttl-string"),
    pytest.param({"payload": "x", "priority": 1}, None, "invalid_input", id="unknown-field"),
    pytest.param(None, b"payload=x", "invalid_json", id="not-json"),
    pytest.param(None, b"", "invalid_json", id="empty-body"),
])
def test_publish_refuses(api_, body, content, code):
    ch = api_.create()
    check_error(api_.publish_raw(ch, body, content=content), 400, code)
    assert api_.read_all(ch) == []


def test_payload_limit_is_256_kib_serialised(api_):
    ch = api_.create()
    fits = "x" * (MAX_PAYLOAD - 2)  # the quotes make it 256 KiB serialised
    m = api_.publish(ch, fits)
    assert m["payload"] == fits
    body = check_error(api_.publish_raw(ch, {"payload": fits + "x"}), 413, "payload_too_large")
    assert str(MAX_PAYLOAD) in body["error"]["message"], body
    check_error(api_.publish_raw(ch, {"payload": {"k": "x" * MAX_PAYLOAD}}), 413, "payload_too_large")
    assert [x["id"] for x in api_.read_all(ch)] == [m["id"]]


def test_payload_limit_is_configurable(tuned_gw):
    c = Channels(tuned_gw.url)
    try:
        ch = c.create()
        c.publish(ch, "x" * 1022)  # 1024 bytes serialised
        check_error(c.publish_raw(ch, {"payload": "x" * 1023}), 413, "payload_too_large")
        check_error(c.publish_raw(ch, {"payload": list(range(400))}), 413, "payload_too_large")
    finally:
        c.close()


def test_read_grants(api_):
    ch = api_.create("private")
    expires = rfc3339_in(3600)
    g = api_.grant(ch, label="support-agent", expires_at=expires)
    assert set(g) == GRANT_KEYS | {"raw_token"}, g
    assert g["channel_id"] == ch["id"] and g["label"] == "support-agent" and g["revoked_at"] is None
    assert abs((parse_time(g["expires_at"]) - parse_time(expires)).total_seconds()) < 0.01, (g, expires)
    parse_time(g["created_at"])
    assert isinstance(g["raw_token"], str) and len(g["raw_token"]) >= 16
    assert g["raw_token"] != ch["publish_token"]

    # Both fields are optional: an empty object, or no body at all.
    plain = api_.grant(ch)
    assert plain["label"] is None and plain["expires_at"] is None
    r = api_.c.post(f"/v1/channels/{ch['id']}/read-grants", headers=api_.owner(ch))
    assert r.status_code == 201, r.text
    # ... also sent chunked, without Content-Length.
    r = api_.c.post(f"/v1/channels/{ch['id']}/read-grants", content=iter([b""]), headers=api_.owner(ch))
    assert r.status_code == 201, r.text
    # An offset is an RFC 3339 time too.
    offset = (datetime.now(timezone.utc) + timedelta(hours=2)).astimezone(timezone(timedelta(hours=2)))
    assert api_.grant(ch, expires_at=offset.isoformat(timespec="seconds"))["expires_at"].endswith("Z")

    api_.publish(ch, "secret")
    assert len(api_.read_all(ch, {"Authorization": f"Bearer {g['raw_token']}"})) == 1

    revoked = api_.revoke(ch, g["id"])
    assert set(revoked) == GRANT_KEYS, revoked
    assert revoked["id"] == g["id"] and revoked["label"] == "support-agent"
    assert revoked["revoked_at"] is not None
    parse_time(revoked["revoked_at"])
    # A revoked token is refused at once; the other grants still work.
    check_error(api_.messages(ch, {"Authorization": f"Bearer {g['raw_token']}"}), 403, "forbidden")
    assert len(api_.read_all(ch, {"Authorization": f"Bearer {plain['raw_token']}"})) == 1


@pytest.mark.parametrize("body, code", [
    pytest.param({"expires_at": "tomorrow"}, "invalid_input", id="not-a-time"),
    pytest.param({"expires_at": "2031-02-30T00:00:00Z"}, "invalid_input", id="no-such-day"),
    pytest.param({"expires_at": "2020-01-01T00:00:00Z"}, "invalid_input", id="past"),
    pytest.param({"expires_at": 1893456000}, "invalid_input", id="number"),
    pytest.param({"label": "x", "scope": "all"}, "invalid_input", id="unknown-field"),
    pytest.param({"label": ["x"]}, "invalid_input", id="label-not-string"),
])
def test_read_grant_refuses(api_, body, code):
    ch = api_.create("private")
    r = api_.c.post(f"/v1/channels/{ch['id']}/read-grants", json=body, headers=api_.owner(ch))
    check_error(r, 400, code)
    r = api_.c.post(f"/v1/channels/{ch['id']}/read-grants", content=b"{", headers={
        **api_.owner(ch), "Content-Type": "application/json"})
    check_error(r, 400, "invalid_json")


def test_revoke_unknown_grant_is_404(api_):
    ch = api_.create("private")
    other = api_.create("private")
    foreign = api_.grant(other)
    for gid in (str(uuid.uuid4()), "not-a-grant", foreign["id"]):
        r = api_.c.post(f"/v1/channels/{ch['id']}/read-grants/{gid}/revoke", headers=api_.owner(ch))
        check_error(r, 404, "not_found")
    # The other channel's grant was not touched.
    assert api_.messages(other, {"Authorization": f"Bearer {foreign['raw_token']}"}).status_code == 200


def test_messages_pages_oldest_first(api_):
    ch = api_.create()
    sent = [api_.publish(ch, {"n": i}) for i in range(5)]
    r = api_.messages(ch)
    assert r.status_code == 200, r.text
    assert r.json() == {"messages": [as_delivered(m) for m in sent], "has_more": False}

    r = api_.messages(ch, limit=2)
    assert r.json() == {"messages": [as_delivered(m) for m in sent[:2]], "has_more": True}
    r = api_.messages(ch, after_message_id=sent[1]["id"], limit=2)
    assert r.json() == {"messages": [as_delivered(m) for m in sent[2:4]], "has_more": True}
    r = api_.messages(ch, after_message_id=sent[3]["id"], limit=2)
    assert r.json() == {"messages": [as_delivered(sent[4])], "has_more": False}
    r = api_.messages(ch, after_message_id=sent[4]["id"])
    assert r.json() == {"messages": [], "has_more": False}
    assert api_.messages(ch, limit=1000).status_code == 200
    assert api_.messages(ch, limit=1).json()["has_more"] is True

    other = api_.create()
    foreign = api_.publish(other, "elsewhere")
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": -1}, {"limit": "ten"}, {"limit": 2.5},
                   {"after_message_id": "not-a-message"}, {"after_message_id": str(uuid.uuid4())},
                   {"after_message_id": foreign["id"]}):
        check_error(api_.messages(ch, **params), 400, "invalid_input")
    check_error(api_.c.get(f"/v1/channels/{NIL_CHANNEL}/messages"), 404, "not_found")


def test_messages_default_limit_is_100(api_):
    ch = api_.create()
    sent = [api_.publish(ch, i) for i in range(101)]
    r = api_.messages(ch)
    assert r.status_code == 200, r.text
    assert [m["id"] for m in r.json()["messages"]] == [m["id"] for m in sent[:100]]
    assert r.json()["has_more"] is True
    r = api_.messages(ch, after_message_id=sent[99]["id"])
    assert r.json() == {"messages": [as_delivered(sent[100])], "has_more": False}


def test_private_messages_need_a_read_token(api_):
    ch = api_.create("private")
    g = api_.grant(ch, label="reader")
    m = api_.publish(ch, "secret")
    expected = [as_delivered(m)]
    check_error(api_.messages(ch), 401, "unauthorized")
    check_error(api_.messages(ch, {"Authorization": "Bearer rdg_wrong"}), 403, "forbidden")
    check_error(api_.messages(ch, access_token="rdg_wrong"), 403, "forbidden")
    other = api_.create("private")
    check_error(api_.messages(other, {"Authorization": f"Bearer {g['raw_token']}"}), 403, "forbidden")
    assert api_.read_all(ch, {"Authorization": f"Bearer {g['raw_token']}"}) == expected
    r = api_.messages(ch, access_token=g["raw_token"])
    assert r.status_code == 200 and r.json()["messages"] == expected, r.text
    assert api_.read_all(ch, api_.owner(ch)) == expected
    # A public channel needs none.
    pub = api_.create()
    api_.publish(pub, "hello")
    assert len(api_.read_all(pub)) == 1


def test_delete_is_404_everywhere_afterwards(api_):
    for visibility in ("public", "private"):
        ch = api_.create(visibility)
        g = api_.grant(ch)
        api_.publish(ch, "before")
        api_.delete(ch)
        own = api_.owner(ch)
        base = f"/v1/channels/{ch['id']}"
        for method, path, body in [
            ("GET", base, None), ("DELETE", base, None), ("POST", f"{base}/publish", {"payload": "x"}),
            ("POST", f"{base}/read-grants", {}), ("POST", f"{base}/read-grants/{g['id']}/revoke", None),
            ("GET", f"{base}/messages", None),
        ]:
            check_error(api_.c.request(method, path, json=body, headers=own), 404, "not_found")
            # A token or none, the channel is gone.
            check_error(api_.c.request(method, path, json=body), 404, "not_found")
        for vis in ("public", "private"):
            check_error(api_.c.get(f"/channel/v1/{vis}/{ch['id']}",
                                   headers={"Authorization": f"Bearer {g['raw_token']}"}), 404, "not_found")


# ================================================================ 2. SSE


def test_sse_client_live_replay_and_resume(api_, gw, subs):
    """httpx-sse: live only by default, ?from=oldest replays everything, Last-Event-ID replays
    what came after it; then each follows live."""
    ch = api_.create()
    before = [api_.publish(ch, {"n": i}) for i in range(2)]
    live = subs(gw.url, sse_path(ch))
    after = [api_.publish(ch, {"n": i}, metadata={"i": i}) for i in range(2, 5)]
    got = live.take(3)
    for ev, m in zip(got, after):
        check_event(ev, m)  # nothing from before the subscription

    oldest = subs(gw.url, sse_path(ch), params={"from": "oldest"})
    resumed = subs(gw.url, sse_path(ch), {"Last-Event-ID": before[1]["id"]})
    everything = before + after
    for ev, m in zip(oldest.take(5), everything):
        check_event(ev, m)
    for ev, m in zip(resumed.take(3), after):
        check_event(ev, m)

    last = api_.publish(ch, "live again")
    for s in (live, oldest, resumed):
        check_event(s.take(1)[0], last)
    # Nothing came twice: the next event of each is the next message.
    final = api_.publish(ch, "final")
    for s in (live, oldest, resumed):
        check_event(s.take(1)[0], final)


def test_sse_raw_lines(api_, gw, subs):
    ch = api_.create()
    old = api_.publish(ch, "old")
    raw = subs(gw.url, sse_path(ch), raw=True)
    r = raw.response
    assert r.headers["content-type"].startswith("text/event-stream"), r.headers
    assert r.headers.get("cache-control") == "no-cache", r.headers
    sent = [api_.publish(ch, "order.created", metadata={"source": "checkout"}),
            api_.publish(ch, {"nested": {"list": [1, 2, 3]}, "text": "a\nb: c"}),
            api_.publish(ch, 7, ttl_seconds=3600)]
    for m in sent:
        check_block(raw.block(), m)
    replay = subs(gw.url, sse_path(ch), {"Last-Event-ID": old["id"]}, raw=True)
    for m in sent:
        check_block(replay.block(), m)


@pytest.mark.parametrize("last_id", ["not-a-message", "00000000-0000-7000-8000-000000000000", "other-channel"])
def test_sse_unknown_last_event_id_replays_from_oldest_with_a_comment(api_, gw, subs, last_id):
    ch = api_.create()
    if last_id == "other-channel":
        last_id = api_.publish(api_.create(), "elsewhere")["id"]
    sent = [api_.publish(ch, {"n": i}) for i in range(3)]
    raw = subs(gw.url, sse_path(ch), {"Last-Event-ID": last_id}, raw=True)
    assert raw.block() == [": " + UNRETAINED.format(last_id)]
    for m in sent:
        check_block(raw.block(), m)
    later = api_.publish(ch, "live")
    check_block(raw.block(), later)

    # The SSE client sees the same messages (it skips the comment).
    es = subs(gw.url, sse_path(ch), {"Last-Event-ID": last_id})
    for ev, m in zip(es.take(4), sent + [later]):
        check_event(ev, m)


def test_sse_last_event_id_no_longer_retained(tuned_gw, subs):
    """--channel-retention 3: a Last-Event-ID that was trimmed replays from the oldest retained
    message, and says so."""
    c = Channels(tuned_gw.url)
    try:
        ch = c.create()
        sent = [c.publish(ch, {"n": i}) for i in range(6)]
        assert c.read_all(ch) == [as_delivered(m) for m in sent[3:]]
        raw = subs(tuned_gw.url, sse_path(ch), {"Last-Event-ID": sent[1]["id"]}, raw=True)
        assert raw.block() == [": " + UNRETAINED.format(sent[1]["id"])]
        for m in sent[3:]:
            check_block(raw.block(), m)
        # A retained one replays what came after it, without a comment.
        raw = subs(tuned_gw.url, sse_path(ch), {"Last-Event-ID": sent[4]["id"]}, raw=True)
        check_block(raw.block(), sent[5])
        es = subs(tuned_gw.url, sse_path(ch), params={"from": "oldest"})
        for ev, m in zip(es.take(3), sent[3:]):
            check_event(ev, m)
    finally:
        c.close()


def test_sse_private_channel_access(api_, gw, subs):
    ch = api_.create("private")
    g = api_.grant(ch)
    path = sse_path(ch)
    check_error(api_.c.get(path), 401, "unauthorized")
    check_error(api_.c.get(path, headers={"Authorization": "Bearer rdg_wrong"}), 403, "forbidden")
    check_error(api_.c.get(path, params={"access_token": "rdg_wrong"}), 403, "forbidden")
    # Wrong visibility in the URL, either way, and unknown channels: 404.
    check_error(api_.c.get(f"/channel/v1/public/{ch['id']}", headers={"Authorization": f"Bearer {g['raw_token']}"}),
                404, "not_found")
    pub = api_.create()
    check_error(api_.c.get(f"/channel/v1/private/{pub['id']}"), 404, "not_found")
    check_error(api_.c.get(f"/channel/v1/public/{NIL_CHANNEL}"), 404, "not_found")
    check_error(api_.c.get(f"/channel/v1/shared/{pub['id']}"), 404, "not_found")

    by_header = subs(gw.url, path, {"Authorization": f"Bearer {g['raw_token']}"})
    by_query = subs(gw.url, path, params={"access_token": g["raw_token"]})
    by_owner = subs(gw.url, path, api_.owner(ch))
    m = api_.publish(ch, "secret")
    for s in (by_header, by_query, by_owner):
        check_event(s.take(1)[0], m)


def test_sse_heartbeat(embedded_gw, subs):
    """An idle stream carries a keep-alive comment (every 15 s)."""
    c = Channels(embedded_gw.url)
    try:
        ch = c.create()
        raw = subs(embedded_gw.url, sse_path(ch), raw=True)
        assert raw.block(bound=BOUND * 2, keep_alive=True) == [": keep-alive"]
        m = c.publish(ch, "after the heartbeat")
        check_block(raw.block(), m)
    finally:
        c.close()


# ================================================================ 3. three processes, one Redis


@pytest.fixture
def trio_channels(trio):
    clients = [Channels(g.url) for g in trio.all]
    yield clients
    for c in clients:
        c.close()


def test_published_on_a_streamed_from_b_and_c(trio, trio_channels, subs):
    a, b, c = trio_channels
    ch = a.create()
    for proc in (b, c):  # the channel is known everywhere at once
        r = proc.c.get(f"/v1/channels/{ch['id']}", headers=proc.owner(ch))
        assert r.status_code == 200, r.text
    on_b = subs(trio.b.url, sse_path(ch))
    on_c = subs(trio.c.url, sse_path(ch))
    raw_a = subs(trio.a.url, sse_path(ch), raw=True)
    n = 25
    sent = [a.publish(ch, {"n": i}) for i in range(n)]
    for s in (on_b, on_c):
        got = s.take(n)
        assert [e.id for e in got] == [m["id"] for m in sent]
        for ev, m in zip(got, sent):
            check_event(ev, m)
    for m in sent:
        check_block(raw_a.block(), m)
    # Publishing from every process keeps one order; nothing arrives twice.
    more = [proc.publish(ch, {"from": i}) for i, proc in enumerate((b, c, a, c, b))]
    for s in (on_b, on_c):
        assert [e.id for e in s.take(len(more))] == [m["id"] for m in more]
    for m in more:
        check_block(raw_a.block(), m)
    for proc in (a, b, c):
        assert proc.read_all(ch) == [as_delivered(m) for m in sent + more]


def test_resume_on_the_third_process_while_publishing(trio, trio_channels, subs):
    """A subscriber on B reads k messages and disconnects; it reconnects to C with Last-Event-ID
    while A keeps publishing, and gets exactly the rest: nothing lost, nothing twice."""
    a, _, c = trio_channels
    ch = a.create()
    n, k = 40, 12
    published: list[dict] = []
    paused, resume = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def publisher() -> None:
        try:
            with httpx.Client(base_url=trio.a.url, timeout=15) as pc:
                for i in range(n):
                    r = pc.post(f"/v1/channels/{ch['id']}/publish", json={"payload": {"n": i}},
                                headers=Channels.owner(ch))
                    assert r.status_code == 201, r.text
                    published.append(r.json())
                    if i == k + 4:  # some messages wait for the resumed subscriber's replay
                        paused.set()
                        assert resume.wait(BOUND), "the test did not resume the publisher"
                    time.sleep(0.01)  # pacing only: the reconnect interleaves with publishing
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    first_sub = subs(trio.b.url, sse_path(ch))
    thread = threading.Thread(target=publisher, daemon=True)
    thread.start()
    try:
        first = first_sub.take(k)
        first_sub.close()
        assert paused.wait(BOUND), f"publisher stalled: {errors}"
        resume.set()  # publishing goes on while the subscriber reconnects
        second = subs(trio.c.url, sse_path(ch), {"Last-Event-ID": first[-1].id})
        rest = second.take(n - k)
    finally:
        resume.set()
        thread.join(BOUND)
    assert not thread.is_alive() and not errors, errors
    got = first + rest
    assert [e.id for e in got] == [m["id"] for m in published], "lost, repeated or out of order"
    for ev, m in zip(got, published):
        check_event(ev, m)
    sentinel = a.publish(ch, "sentinel")
    check_event(second.take(1)[0], sentinel)  # nothing more came in between


def test_private_channel_across_processes(trio, trio_channels, subs):
    """Grant on B, stream on C with it and on A with another; revoke on A ends C's stream only;
    delete on C ends A's; every process answers 404 afterwards."""
    a, b, c = trio_channels
    ch = a.create("private")
    g1, g2 = b.grant(ch, label="one"), b.grant(ch, label="two")
    s1 = subs(trio.c.url, sse_path(ch), {"Authorization": f"Bearer {g1['raw_token']}"}, raw=True)
    s2 = subs(trio.a.url, sse_path(ch), params={"access_token": g2["raw_token"]}, raw=True)
    m1 = b.publish(ch, "first")
    check_block(s1.block(), m1)
    check_block(s2.block(), m1)
    a.revoke(ch, g1["id"])
    assert s1.wait_end() == [": stream ended: the read grant was revoked"]
    for proc in (a, b, c):
        check_error(proc.messages(ch, {"Authorization": f"Bearer {g1['raw_token']}"}), 403, "forbidden")
    m2 = c.publish(ch, "second")
    check_block(s2.block(), m2)
    c.delete(ch)
    assert s2.wait_end() == [": stream ended: the channel was deleted"]
    for proc in (a, b, c):
        check_error(proc.messages(ch, proc.owner(ch)), 404, "not_found")
        check_error(proc.c.get(sse_path(ch), params={"access_token": g2["raw_token"]}), 404, "not_found")


# ================================================================ 4. TTL


def wait_past(expires_at: str, margin: float = 0.5) -> None:
    """Sleeps until ``expires_at`` (the gateway's clock is this machine's) is ``margin`` s past."""
    left = (parse_time(expires_at) - datetime.now(timezone.utc)).total_seconds() + margin
    assert left < 30, expires_at
    if left > 0:
        time.sleep(left)


def test_expired_message_is_never_delivered(api_, gw, subs):
    ch = api_.create()
    first = api_.publish(ch, "kept")
    short = api_.publish(ch, "short-lived", ttl_seconds=1)
    assert "expires_at" in short
    wait_past(short["expires_at"])
    later = api_.publish(ch, "later")

    oldest = subs(gw.url, sse_path(ch), params={"from": "oldest"}, raw=True)
    check_block(oldest.block(), first)
    check_block(oldest.block(), later)  # short-lived is skipped
    resumed = subs(gw.url, sse_path(ch), {"Last-Event-ID": first["id"]})
    check_event(resumed.take(1)[0], later)
    assert api_.read_all(ch) == [as_delivered(first), as_delivered(later)]
    # The next live message still comes, to both.
    last = api_.publish(ch, "last")
    check_block(oldest.block(), last)
    check_event(resumed.take(1)[0], last)


def test_paging_passes_over_expired_messages(api_):
    """A page is filled with live messages: expired ones are passed over, never returned, and
    never leave a page empty while more follow."""
    ch = api_.create()
    first = api_.publish(ch, "kept")
    shorts = [api_.publish(ch, f"short-lived {i}", ttl_seconds=1) for i in range(3)]
    wait_past(shorts[-1]["expires_at"])
    later = [api_.publish(ch, f"later {i}") for i in range(2)]
    r = api_.messages(ch, after_message_id=first["id"], limit=1)
    assert r.status_code == 200, r.text
    assert r.json() == {"messages": [as_delivered(later[0])], "has_more": True}, r.text
    r = api_.messages(ch, after_message_id=later[0]["id"], limit=1)
    assert r.json() == {"messages": [as_delivered(later[1])], "has_more": False}, r.text
    r = api_.messages(ch, limit=2)
    assert r.json() == {"messages": [as_delivered(first), as_delivered(later[0])], "has_more": True}, r.text
    # An expired message's id is still a position to read after.
    r = api_.messages(ch, after_message_id=shorts[0]["id"])
    assert r.json() == {"messages": [as_delivered(m) for m in later], "has_more": False}, r.text


def test_channel_default_ttl_expires_messages(api_, gw, subs):
    ch = api_.create(default_ttl_seconds=1)
    gone = api_.publish(ch, "default ttl")
    kept = api_.publish(ch, "own ttl", ttl_seconds=3600)
    wait_past(gone["expires_at"])
    es = subs(gw.url, sse_path(ch), params={"from": "oldest"})
    check_event(es.take(1)[0], kept)
    assert api_.read_all(ch) == [as_delivered(kept)]


# ================================================================ 5. stream endings


def test_delete_ends_streams(api_, gw, subs):
    ch = api_.create()
    private = api_.create("private")
    g = api_.grant(private)
    es = subs(gw.url, sse_path(ch))
    raw = subs(gw.url, sse_path(ch), raw=True)
    priv = subs(gw.url, sse_path(private), {"Authorization": f"Bearer {g['raw_token']}"}, raw=True)
    m = api_.publish(ch, "one")
    check_event(es.take(1)[0], m)
    check_block(raw.block(), m)
    api_.delete(ch)
    assert es.wait_end() == []  # the SSE client sees a clean end
    assert raw.wait_end() == [": stream ended: the channel was deleted"]
    # Another channel's stream is untouched.
    pm = api_.publish(private, "still here")
    check_block(priv.block(), pm)
    api_.delete(private)
    assert priv.wait_end() == [": stream ended: the channel was deleted"]


def test_revoke_ends_only_the_stream_of_that_grant(api_, gw, subs):
    ch = api_.create("private")
    g1, g2 = api_.grant(ch, label="one"), api_.grant(ch, label="two")
    s1 = subs(gw.url, sse_path(ch), {"Authorization": f"Bearer {g1['raw_token']}"}, raw=True)
    s1_client = subs(gw.url, sse_path(ch), params={"access_token": g1["raw_token"]})
    s2 = subs(gw.url, sse_path(ch), {"Authorization": f"Bearer {g2['raw_token']}"}, raw=True)
    owner = subs(gw.url, sse_path(ch), api_.owner(ch))
    m1 = api_.publish(ch, "before")
    check_block(s1.block(), m1)
    check_event(s1_client.take(1)[0], m1)
    check_block(s2.block(), m1)
    check_event(owner.take(1)[0], m1)

    api_.revoke(ch, g1["id"])
    assert s1.wait_end() == [": stream ended: the read grant was revoked"]
    assert s1_client.wait_end() == []
    m2 = api_.publish(ch, "after")
    check_block(s2.block(), m2)
    check_event(owner.take(1)[0], m2)
    check_error(api_.c.get(sse_path(ch), headers={"Authorization": f"Bearer {g1['raw_token']}"}), 403, "forbidden")


def test_grant_expiry_ends_its_stream(api_, gw, subs):
    ch = api_.create("private")
    short = api_.grant(ch, label="short", expires_at=rfc3339_in(4))
    lasting = api_.grant(ch, label="lasting")
    s_short = subs(gw.url, sse_path(ch), {"Authorization": f"Bearer {short['raw_token']}"}, raw=True)
    s_lasting = subs(gw.url, sse_path(ch), {"Authorization": f"Bearer {lasting['raw_token']}"}, raw=True)
    m = api_.publish(ch, "within the grant")
    check_block(s_short.block(), m)
    check_block(s_lasting.block(), m)
    # It ends at the expiry (4 s from creation), with no publishing to wake it.
    assert s_short.wait_end(bound=BOUND + 4) == [": stream ended: the read grant expired"]
    assert datetime.now(timezone.utc) >= parse_time(short["expires_at"]) - timedelta(milliseconds=50)
    check_error(api_.messages(ch, {"Authorization": f"Bearer {short['raw_token']}"}), 403, "forbidden")
    check_error(api_.c.get(sse_path(ch), params={"access_token": short["raw_token"]}), 403, "forbidden")
    m2 = api_.publish(ch, "after")
    check_block(s_lasting.block(), m2)


# ================================================================ 6. channel MCP server


def test_well_known_describes_the_channel_server(gw):
    r = httpx.get(f"{gw.url}/.well-known/mcp-server", timeout=15)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["name"] and doc["version"], doc
    assert doc["endpoints"]["mcp"] == f"{gw.url}/channels/mcp", doc
    assert doc["endpoints"]["sse"] == f"{gw.url}/channels/sse", doc
    assert "streamable-http" in doc["transports"] and "sse" in doc["transports"], doc
    tools = {t["name"]: t for t in doc["tools"]}
    assert list(tools) == CHANNEL_TOOLS, list(tools)
    for name, required in REQUIRED.items():
        assert sorted(tools[name]["inputSchema"]["required"]) == sorted(required), (name, tools[name])


def tool_schema(tool: Any) -> dict:
    return getattr(tool, "input_schema", None) or tool.inputSchema


async def check_listing(session: Any, extra: set[str] = frozenset()) -> None:
    tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(CHANNEL_TOOLS) | set(extra) == set(tools), list(tools)
    for name, required in REQUIRED.items():
        assert sorted(tool_schema(tools[name])["required"]) == sorted(required), name


async def call_ok(session: Any, name: str, args: dict) -> Any:
    r = await session.call_tool(name, args)
    assert not is_error(r), (name, text_of(r))
    body = structured(r)
    assert json.loads(text_of(r)) == body
    return body


async def call_refused(session: Any, name: str, args: dict, code: str) -> None:
    r = await session.call_tool(name, args)
    assert is_error(r), (name, args, text_of(r))
    assert text_of(r).startswith(f"{code}: "), text_of(r)
    env = structured(r)
    assert set(env) == {"error"} and env["error"]["code"] == code, env
    assert text_of(r) == f"{code}: {env['error']['message']}"


async def call_bad_arguments(conn: Any, name: str, args: dict) -> None:
    """Arguments that do not fit the schema: -32602 before 2025-11-25, a tool error from then on."""
    if breaks_schema_as_error(conn.version):
        with pytest.raises(McpError) as e:
            await conn.session.call_tool(name, args)
        assert error_code(e.value) == -32602
    else:
        await call_refused(conn.session, name, args, "invalid_input")


async def exercise_channel_tools(conn: Any, base: str, tenant: str | None) -> None:
    """The seven tools through an SDK session, checked against REST and SSE."""
    s = conn.session
    await check_listing(s)
    ch = await call_ok(s, "create_channel", {"name": "orders", "visibility": "private",
                                            "description": "Order events for agents",
                                            "default_ttl_seconds": 3600})
    assert set(ch) == CHANNEL_KEYS | {"publish_token", "channel_url"}, ch
    assert ch["tenant_id"] == tenant and ch["visibility"] == "private"
    assert ch["channel_url"] == f"{base}/channel/v1/private/{ch['id']}"
    own = {"publish_token": ch["publish_token"], "channel_id": ch["id"]}

    got = await call_ok(s, "get_channel", own)
    assert {k: got[k] for k in CHANNEL_KEYS} == {k: ch[k] for k in CHANNEL_KEYS} and "publish_token" not in got

    m1 = await call_ok(s, "publish_message", {**own, "payload": "{\"event\":\"order.created\"}",
                                              "metadata": {"source": "checkout-service"}, "ttl_seconds": 900})
    assert m1["payload"] == "{\"event\":\"order.created\"}" and m1["metadata"] == {"source": "checkout-service"}
    assert uuid.UUID(m1["id"]).version == 7 and "expires_at" in m1
    m2 = await call_ok(s, "publish_message", {**own, "payload": {"n": 2}})

    grant = await call_ok(s, "create_read_grant", {**own, "label": "support-agent", "expires_at": rfc3339_in(3600)})
    assert set(grant) == GRANT_KEYS | {"raw_token"} and grant["channel_id"] == ch["id"], grant
    token = grant["raw_token"]

    read = await call_ok(s, "read_channel_messages", {"channel_id": ch["id"], "read_token": token})
    assert read == {"messages": [as_delivered(m1), as_delivered(m2)], "has_more": False}
    read = await call_ok(s, "read_channel_messages", {"channel_id": ch["id"], "read_token": token,
                                                      "after_message_id": m1["id"], "limit": 1})
    assert read == {"messages": [as_delivered(m2)], "has_more": False}

    # The same channel over REST and SSE.
    with httpx.Client(base_url=base, timeout=15) as c:
        r = c.get(f"/v1/channels/{ch['id']}/messages", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["messages"] == [as_delivered(m1), as_delivered(m2)], r.text
        sub = Subscriber(base, sse_path(ch), {"Last-Event-ID": m1["id"], "Authorization": f"Bearer {token}"})
        try:
            check_event(sub.take(1)[0], m2)
        finally:
            sub.close()

    # Refusals are tool errors with the envelope.
    await call_refused(s, "read_channel_messages", {"channel_id": ch["id"]}, "unauthorized")
    await call_refused(s, "read_channel_messages", {"channel_id": ch["id"], "read_token": "rdg_wrong"}, "forbidden")
    await call_refused(s, "publish_message", {**own, "publish_token": "pub_wrong", "payload": "x"}, "forbidden")
    await call_refused(s, "get_channel", {**own, "publish_token": token}, "forbidden")
    await call_refused(s, "get_channel", {**own, "channel_id": NIL_CHANNEL}, "not_found")
    await call_refused(s, "publish_message", {**own, "payload": None}, "invalid_input")
    await call_refused(s, "publish_message", {**own, "payload": "x" * MAX_PAYLOAD}, "payload_too_large")
    await call_refused(s, "create_read_grant", {**own, "expires_at": "yesterday"}, "invalid_input")
    await call_refused(s, "read_channel_messages", {"channel_id": ch["id"], "read_token": token, "limit": 0},
                       "invalid_input")
    await call_bad_arguments(conn, "get_channel", {"channel_id": ch["id"]})  # no publish token
    await call_bad_arguments(conn, "create_channel", {"name": "x", "visibility": "hidden"})
    await call_bad_arguments(conn, "publish_message", {**own, "payload": "x", "colour": "red"})

    revoked = await call_ok(s, "revoke_read_grant", {**own, "grant_id": grant["id"]})
    assert revoked["id"] == grant["id"] and revoked["revoked_at"] is not None, revoked
    await call_refused(s, "read_channel_messages", {"channel_id": ch["id"], "read_token": token}, "forbidden")
    await call_refused(s, "revoke_read_grant", {**own, "grant_id": str(uuid.uuid4())}, "not_found")

    assert await call_ok(s, "delete_channel", own) == {"id": ch["id"], "deleted": True}
    await call_refused(s, "get_channel", own, "not_found")
    await call_refused(s, "read_channel_messages", {"channel_id": ch["id"]}, "not_found")


def fresh_tenant(api: Api, settings: dict | None = None) -> tuple[str, int]:
    tenant = uid("chan_t")
    body: dict[str, Any] = {"tenant_id": tenant, "visibility": "global"}
    if settings is not None:
        body["settings"] = settings
    r = api.c.post("/public/tenants", json=body)
    assert r.status_code == 201, r.text
    return tenant, r.json()["version"]


@pytest.mark.anyio
async def test_sdk_streamable_http_at_channels_mcp(gw):
    async with streamable(f"{gw.url}/channels/mcp") as conn:
        await exercise_channel_tools(conn, gw.url, None)


@pytest.mark.anyio
async def test_sdk_streamable_http_with_a_tenant(gw, api_factory):
    """X-Tenant-ID on /channels/mcp: the channels created there belong to that tenant."""
    api = api_factory(gw.url)
    tenant, version = fresh_tenant(api)
    hdrs = {"X-Tenant-Id": tenant, "X-Understudy-Config-Version": str(version)}
    async with streamable(f"{gw.url}/channels/mcp", hdrs) as conn:
        await exercise_channel_tools(conn, gw.url, tenant)


@pytest.mark.anyio
async def test_sdk_legacy_sse_at_channels_sse(gw, api_factory):
    """The legacy HTTP+SSE transport (POSTs to /channels/message?sessionId=). Run with a tenant
    (the test without one follows)."""
    api = api_factory(gw.url)
    tenant, version = fresh_tenant(api)
    hdrs = {"X-Tenant-Id": tenant, "X-Understudy-Config-Version": str(version)}
    async with legacy_sse(f"{gw.url}/channels/sse", hdrs) as conn:
        await exercise_channel_tools(conn, gw.url, tenant)


def open_legacy(c: httpx.Client, hdrs: dict[str, str]):
    return stream(c, "GET", "/channels/sse", {"Accept": "text/event-stream", **hdrs})


def test_legacy_sse_without_a_tenant_keeps_its_session(gw):
    with httpx.Client(base_url=gw.url, timeout=15) as c, open_legacy(c, {}) as (r, sse):
        assert r.status_code == 200
        endpoint = sse.next_event()["data"]
        assert endpoint.startswith("/channels/message?sessionId="), endpoint
        p = c.post(endpoint, json=req("initialize", init_params("2024-11-05"), 1), headers=rpc_headers(None))
        assert p.status_code == 202, (p.status_code, p.text)
        _, msg = sse.wait_message(lambda m: m.get("id") == 1)
        assert msg["result"]["serverInfo"]["name"], msg


def test_channel_server_stream_sends_no_spurious_list_changed(gw):
    hdrs = {"X-Tenant-ID": "support"}
    with httpx.Client(base_url=gw.url, timeout=15) as c, open_legacy(c, hdrs) as (r, sse):
        assert r.status_code == 200
        endpoint = sse.next_event()["data"]
        seen = []
        p = c.post(endpoint, json=req("initialize", init_params("2024-11-05"), 1), headers=rpc_headers("support"))
        assert p.status_code == 202, p.text
        _, init = sse.wait_message(lambda m: seen.append(m) or m.get("id") == 1)
        assert init["result"]["capabilities"]["tools"]["listChanged"] is False, init
        p = c.post(endpoint, json=req("tools/list", id=2), headers=rpc_headers("support"))
        assert p.status_code == 202, p.text
        sse.wait_message(lambda m: seen.append(m) or m.get("id") == 2)
        assert [m.get("method") for m in seen if "method" in m] == [], seen


def rpc_call(c: httpx.Client, path: str, method: str, params: Any = None, id_: int = 1,
             hdrs: dict[str, str] | None = None) -> httpx.Response:
    return c.post(path, json=req(method, params, id_), headers={"Accept": "application/json", **(hdrs or {})})


@pytest.mark.parametrize("path", ["/channels/mcp", "/channels/message"])
def test_plain_json_rpc_without_a_session(gw, api_factory, path):
    """POST /channels/mcp without Mcp-Session-Id, and /channels/message without sessionId: one
    JSON-RPC answer each (revision 2025-03-26: bad arguments are -32602)."""
    with httpx.Client(base_url=gw.url, timeout=15) as c:
        r = rpc_call(c, path, "tools/list")
        assert r.status_code == 200, r.text
        assert [t["name"] for t in r.json()["result"]["tools"]] == CHANNEL_TOOLS
        r = rpc_call(c, path, "tools/call", {"name": "create_channel", "arguments": {
            "name": "rpc", "visibility": "public"}}, 2)
        assert r.status_code == 200, r.text
        result = r.json()["result"]
        assert result.get("isError") in (None, False), result
        ch = result["structuredContent"]
        assert ch["visibility"] == "public" and ch["tenant_id"] is None, ch
        assert json.loads(result["content"][0]["text"]) == ch
        r = rpc_call(c, path, "tools/call", {"name": "get_channel", "arguments": {
            "publish_token": "pub_wrong", "channel_id": ch["id"]}}, 3)
        result = r.json()["result"]
        assert result["isError"] is True, result
        env = result["structuredContent"]
        assert set(env) == {"error"} and env["error"]["code"] == "forbidden" and env["error"]["message"], result
        assert result["content"][0]["text"].startswith("forbidden: "), result
        r = rpc_call(c, path, "tools/call", {"name": "get_channel", "arguments": {"channel_id": ch["id"]}}, 4)
        assert r.json()["error"]["code"] == -32602, r.text

        # A tenant named by the /t/{id}/ prefix owns what is created there.
        tenant, version = fresh_tenant(api_factory(gw.url))
        r = rpc_call(c, f"/t/{tenant}{path}", "tools/call", {"name": "create_channel", "arguments": {
            "name": "prefixed", "visibility": "private"}}, 5, {"X-Understudy-Config-Version": str(version)})
        assert r.status_code == 200, r.text
        assert r.json()["result"]["structuredContent"]["tenant_id"] == tenant, r.text


@pytest.mark.anyio
async def test_tenant_with_channel_tools_lists_them_on_its_own_mcp(gw, api_factory):
    api = api_factory(gw.url)
    tenant, _ = fresh_tenant(api, {"channel_tools": True})
    _, version = api.add_tool(tenant, "own_tool", {"own": True})
    hdrs = {"X-Tenant-Id": tenant, "X-Understudy-Config-Version": str(version)}
    async with streamable(f"{gw.url}/mcp", hdrs) as conn:
        s = conn.session
        await check_listing(s, {"own_tool"})
        r = await s.call_tool("own_tool", {})
        assert not is_error(r) and structured(r) == {"own": True}
        ch = await call_ok(s, "create_channel", {"name": "tenant-owned", "visibility": "public"})
        assert ch["tenant_id"] == tenant, ch
        m = await call_ok(s, "publish_message", {"publish_token": ch["publish_token"], "channel_id": ch["id"],
                                                 "payload": "from the tenant's MCP"})
        await call_refused(s, "get_channel", {"publish_token": "pub_wrong", "channel_id": ch["id"]}, "forbidden")
    c = Channels(gw.url)
    try:
        assert c.read_all(ch) == [as_delivered(m)]
        got = c.c.get(f"/v1/channels/{ch['id']}", headers=c.owner(ch)).json()
        assert got["tenant_id"] == tenant
    finally:
        c.close()
    # The hosted endpoint serves the tenant's own tools only (seed 002).
    key = api.mint(uid("hosted"), uid("agent"), "editor")
    r = httpx.post(f"{gw.url}/api/v1/mcp", json=req("tools/list", id=1), timeout=15, headers={
        "X-API-Key": key, "X-Tenant-Id": tenant, "Accept": ACCEPT})
    assert r.status_code == 200, r.text
    assert [t["name"] for t in body_message(r)["result"]["tools"]] == ["own_tool"], r.text
    # A tenant without the setting does not offer them.
    async with streamable(f"{gw.url}/mcp", {"X-Tenant-Id": "support"}) as conn:
        names = {t.name for t in (await conn.session.list_tools()).tools}
        assert not names & set(CHANNEL_TOOLS), names


# ================================================================ 7. chaos


def test_rate_limit_chaos_on_a_tenants_channel(gw, api_factory):
    api = api_factory(gw.url)
    tenant, _ = fresh_tenant(api)
    c = Channels(gw.url)
    try:
        ch = c.create(tenant=tenant)
        assert ch["tenant_id"] == tenant
        free = c.create()  # a channel of no tenant
        version = api.set_chaos(tenant, {"profile": "rate_limit", "limit": 1, "window_seconds": 60,
                                         "surfaces": ["channels"]})
        # Wait (bounded by the gateway, 1 s) until the serving process has that configuration; the
        # LLM surface is not rate limited, so this costs none of the channel budget.
        r = c.c.get("/v1/models", headers={"X-Tenant-ID": tenant, "X-Understudy-Config-Version": str(version)})
        assert r.status_code == 200, r.text
        # Windows are aligned on the clock: keep both publishes in one window.
        into_window = time.time() % 60
        if into_window > 55:
            time.sleep(60.5 - into_window)
        first = c.publish_raw(ch, {"payload": "one"})
        assert first.status_code == 201, first.text
        second = c.publish_raw(ch, {"payload": "two"})
        body = check_error(second, 429, "rate_limited")
        assert tenant in body["error"]["message"], body
        retry = second.headers.get("retry-after")
        assert retry is not None and retry.isdigit() and 1 <= int(retry) <= 61, second.headers
        # Every channel route of the tenant is limited; its LLM surface and other channels are not.
        check_error(c.c.get(f"/v1/channels/{ch['id']}", headers=c.owner(ch)), 429, "rate_limited")
        check_error(c.messages(ch), 429, "rate_limited")
        assert c.c.get("/v1/models", headers={"X-Tenant-ID": tenant}).status_code == 200
        c.publish(free, "unaffected")
        c.publish(free, "unaffected again")
        # The channel MCP server of the tenant answers in MCP's shape.
        r = rpc_call(c.c, "/channels/mcp", "tools/list", hdrs={"X-Tenant-ID": tenant})
        assert r.status_code == 429, (r.status_code, r.text)
        assert r.json()["error"]["code"] == -32000, r.text
        assert r.headers.get("retry-after", "").isdigit(), r.headers
        assert rpc_call(c.c, "/channels/mcp", "tools/list").status_code == 200  # no tenant, no chaos
        # The refused publish stored nothing (read after the window, through the tenant's reset).
        r = api.c.post(f"/public/tenants/{tenant}/reset")
        assert r.status_code in (200, 204), r.text
        assert [m["payload"] for m in c.read_all(ch)] == ["one"]
    finally:
        c.close()
