"""Chaos profiles seen through the official SDKs (SPEC §5), in embedded and shared mode.

Each behaviour has its own tenant (tests/fixtures/manifests/10-chaos.yaml): counters are per
tenant, so tests never disturb one another. In shared mode the counters live in Redis.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

import anthropic
import httpx
import openai
import pytest

from conftest import ant, oai, user


def chat(client, text="hello", **kw):
    return client.chat.completions.create(model="gpt-4o", messages=[user(text)], **kw)


def message(client, text="hello", **kw):
    return client.messages.create(model="claude-haiku-4-5", max_tokens=256, messages=[user(text)], **kw)


# ------------------------------------------------------------------ server_error


def test_server_error_500_openai(gw):
    with oai(f"{gw.url}/v1", tenant="chaos_500") as client:
        with pytest.raises(openai.InternalServerError) as ei:
            chat(client)
        assert ei.value.status_code == 500
        body = ei.value.response.json()
        assert body["error"]["type"] == "server_error"
        with pytest.raises(openai.InternalServerError):
            client.responses.create(model="gpt-4o", input="hello")
        with pytest.raises(openai.InternalServerError):
            chat(client, stream=True)


def test_server_error_500_anthropic(gw):
    with ant(gw.url, tenant="chaos_500") as client:
        with pytest.raises(anthropic.InternalServerError) as ei:
            message(client)
    assert ei.value.status_code == 500
    assert ei.value.body["error"]["type"] == "api_error"


def test_overloaded_529_anthropic(gw):
    with ant(gw.url, tenant="chaos_529") as client:
        with pytest.raises(anthropic.APIStatusError) as ei:
            message(client)
        assert ei.value.status_code == 529
        assert isinstance(ei.value, anthropic.OverloadedError)
        assert ei.value.body["type"] == "error"
        assert ei.value.body["error"]["type"] == "overloaded_error"
        with pytest.raises(anthropic.OverloadedError):
            with client.messages.stream(model="claude-haiku-4-5", max_tokens=10, messages=[user("hi")]) as s:
                s.get_final_message()


def test_529_openai(gw):
    with oai(f"{gw.url}/v1", tenant="chaos_529") as client:
        with pytest.raises(openai.APIStatusError) as ei:
            chat(client)
    assert ei.value.status_code == 529


def test_chaos_only_on_listed_surfaces(gw):
    """chaos_mcp_only fails the MCP surface only: LLM requests are untouched."""
    with oai(f"{gw.url}/v1", tenant="chaos_mcp_only") as client:
        for _ in range(3):
            assert chat(client).choices[0].message.content == "Hello from chaos_mcp_only."
    with ant(gw.url, tenant="chaos_mcp_only") as client:
        assert message(client).content[0].text == "Hello from chaos_mcp_only."


# ------------------------------------------------------------------ rate_limit


def test_rate_limit_openai(gw):
    """rl_openai: limit 3 per window; the 4th request is refused with the provider's headers."""
    with oai(f"{gw.url}/v1", tenant="rl_openai") as client:
        remaining = []
        for stream in (False, False, True):  # streamed answers carry the headers too
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[user("hello")], stream=stream
            )
            assert raw.headers["x-ratelimit-limit-requests"] == "3"
            remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
            reset = raw.headers["x-ratelimit-reset-requests"]
            assert reset.endswith("s") and int(reset[:-1]) >= 1
            parsed = raw.parse()
            last = list(parsed)[-1] if stream else parsed
            assert last.choices[0].finish_reason == "stop"
        assert remaining == [2, 1, 0]
        with pytest.raises(openai.RateLimitError) as ei:
            chat(client)
        err = ei.value
        assert err.status_code == 429
        assert err.body["code"] == "rate_limit_exceeded"
        retry_after = err.response.headers["retry-after"]
        assert retry_after.isdigit() and int(retry_after) >= 1
        assert err.response.headers["x-ratelimit-limit-requests"] == "3"
        assert err.response.headers["x-ratelimit-remaining-requests"] == "0"
        # still refused, on every OpenAI route that serves answers
        with pytest.raises(openai.RateLimitError):
            client.responses.create(model="gpt-4o", input="hello")
        with pytest.raises(openai.RateLimitError):
            client.embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float")


def test_rate_limit_anthropic(gw):
    with ant(gw.url, tenant="rl_anthropic") as client:
        for expected_remaining in (2, 1, 0):
            raw = client.messages.with_raw_response.create(
                model="claude-haiku-4-5", max_tokens=10, messages=[user("hello")]
            )
            assert raw.headers["anthropic-ratelimit-requests-limit"] == "3"
            assert raw.headers["anthropic-ratelimit-requests-remaining"] == str(expected_remaining)
            reset = datetime.fromisoformat(raw.headers["anthropic-ratelimit-requests-reset"].replace("Z", "+00:00"))
            assert reset.tzinfo is not None
            assert reset.timestamp() > time.time() - 2  # RFC 3339, the end of the current window
            raw.parse()
        with pytest.raises(anthropic.RateLimitError) as ei:
            message(client)
    err = ei.value
    assert err.status_code == 429
    assert err.body["error"]["type"] == "rate_limit_error"
    assert int(err.response.headers["retry-after"]) >= 1
    assert err.response.headers["anthropic-ratelimit-requests-remaining"] == "0"


def test_rate_limit_zero_refuses_everything(gw):
    with oai(f"{gw.url}/v1", tenant="rl_zero") as client:
        with pytest.raises(openai.RateLimitError):
            chat(client)


# ------------------------------------------------------------------ deterministic faults


def _outcomes(client, n: int) -> list[str]:
    out = []
    for _ in range(n):
        try:
            chat(client)
            out.append("ok")
        except openai.InternalServerError as e:
            out.append(str(e.status_code))
    return out


def test_every_2(gw):
    with oai(f"{gw.url}/v1", tenant="every_2") as client:
        assert _outcomes(client, 4) == ["ok", "503", "ok", "503"]


def test_fail_first_2(gw):
    with oai(f"{gw.url}/v1", tenant="fail_first_2") as client:
        assert _outcomes(client, 4) == ["500", "500", "ok", "ok"]


# ------------------------------------------------------------------ stream faults


def _drain_openai(stream) -> tuple[list, BaseException | None]:
    chunks, err = [], None
    try:
        for ch in stream:
            chunks.append(ch)
    except Exception as e:  # noqa: BLE001 - any break of the stream is the point
        err = e
    return chunks, err


def test_stream_cut_openai_never_completes(gw):
    with oai(f"{gw.url}/v1", tenant="stream_cut") as client:
        chunks, err = [], None
        try:
            stream = chat(client, "tell me a story", stream=True)
            chunks, err = _drain_openai(stream)
        except (openai.APIConnectionError, openai.APIError) as e:
            err = e
    finished = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert not finished, "a cut stream must not carry a terminal chunk"
    assert len(chunks) <= 2
    assert err is not None or len(chunks) < 3


def test_stream_cut_delivers_after_chunks_events(gw):
    """SPEC §5: the stream stops *after* afterChunks (2) events: the client gets exactly those."""
    with oai(f"{gw.url}/v1", tenant="stream_cut") as client:
        stream = chat(client, "tell me a story", stream=True)  # the 200 and its headers arrive
        chunks, err = _drain_openai(stream)
    assert err is not None, "the connection must break (no [DONE])"
    assert len(chunks) == 2
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[1].choices[0].delta.content == "This"


def test_stream_cut_anthropic_never_completes(gw):
    with ant(gw.url, tenant="stream_cut") as client:
        events, err = [], None
        try:
            with client.messages.stream(model="claude-haiku-4-5", max_tokens=256, messages=[user("story")]) as s:
                for ev in s:
                    events.append(ev)
                s.get_final_message()
        except Exception as e:  # noqa: BLE001
            err = e
    assert err is not None
    assert "message_stop" not in [e.type for e in events]


def test_stream_cut_non_streamed_closes_connection(gw):
    with oai(f"{gw.url}/v1", tenant="stream_cut") as client:
        with pytest.raises(openai.APIConnectionError):
            chat(client, "tell me a story")


def test_malformed_stream_openai(gw):
    with oai(f"{gw.url}/v1", tenant="malformed") as client:
        stream = chat(client, "tell me a story", stream=True)
        chunks, err = _drain_openai(stream)
    assert err is not None, "an event with invalid JSON must make the SDK raise"
    assert len(chunks) == 2  # the two events before the corrupted one parse


def test_malformed_stream_anthropic(gw):
    """malformed_3 corrupts event 3, the first content_block_delta: the SDK must raise."""
    with ant(gw.url, tenant="malformed_3") as client:
        with pytest.raises(Exception):  # noqa: B017 - JSON decode error or APIError, SDK's choice
            with client.messages.stream(model="claude-haiku-4-5", max_tokens=256, messages=[user("story")]) as s:
                s.get_final_message()


def test_malformed_stream_anthropic_wire(gw):
    """afterChunks 2: events 0 and 1 are intact, event 2 is not JSON, and the stream goes on."""
    with httpx.stream(
        "POST",
        f"{gw.url}/v1/messages",
        headers={"X-Tenant-ID": "malformed", "anthropic-version": "2023-06-01"},
        json={"model": "m", "max_tokens": 100, "stream": True, "messages": [user("story")]},
    ) as r:
        assert r.status_code == 200
        text = r.read().decode()
    datas = [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]
    bad = []
    for i, d in enumerate(datas):
        try:
            json.loads(d)
        except ValueError:
            bad.append(i)
    assert bad == [2]
    assert json.loads(datas[-1])["type"] == "message_stop"


def test_latency_openai(gw):
    with oai(f"{gw.url}/v1", tenant="slow") as client:
        t0 = time.monotonic()
        c = chat(client)
        assert time.monotonic() - t0 >= 0.3
        assert c.choices[0].message.content == "Hello, slowly."
        t0 = time.monotonic()
        chunks = list(chat(client, stream=True))
        assert time.monotonic() - t0 >= 0.3
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == "Hello, slowly."


def test_latency_anthropic_stream(gw):
    with ant(gw.url, tenant="slow") as client:
        t0 = time.monotonic()
        with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=[user("hello")]) as s:
            text = "".join(s.text_stream)
        assert time.monotonic() - t0 >= 0.3
    assert text == "Hello, slowly."
