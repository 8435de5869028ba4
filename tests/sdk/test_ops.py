"""Operations endpoints and shutdown (SPEC §10)."""

from __future__ import annotations

import re
import time

import httpx
import openai
import pytest

from conftest import metric_lines, oai, user

LABELS = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(text: str, name: str) -> list[tuple[dict, float]]:
    out = []
    for line in metric_lines(text, name):
        labels = dict(LABELS.findall(line[line.find("{") : line.rfind("}") + 1])) if "{" in line else {}
        out.append((labels, float(line.rsplit(" ", 1)[1])))
    return out


def test_healthz(gw):
    r = httpx.get(f"{gw.url}/healthz")
    assert r.status_code == 200


def test_readyz(gw):
    r = httpx.get(f"{gw.url}/readyz")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body, dict)
    assert body.get("ready") is True


def test_metrics_request_counts(gw):
    with oai(f"{gw.url}/v1") as client:
        client.chat.completions.create(model="gpt-4o", messages=[user("hello")])
    text = httpx.get(f"{gw.url}/metrics").text
    hits = [
        (labels, v)
        for labels, v in samples(text, "understudy_http_requests_total")
        if labels.get("route") == "/v1/chat/completions" and labels.get("tenant") == "support"
    ]
    assert hits, text[:2000]
    assert any(labels.get("status") == "200" and v >= 1 for labels, v in hits)


def test_metrics_chaos_injections(gw):
    with oai(f"{gw.url}/v1", tenant="chaos_500") as client:
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="gpt-4o", messages=[user("hello")])
    text = httpx.get(f"{gw.url}/metrics").text
    hits = [
        (labels, v)
        for labels, v in samples(text, "understudy_chaos_injections_total")
        if labels.get("tenant") == "chaos_500"
    ]
    assert hits, text[:2000]
    assert any(labels.get("profile") == "server_error" and v >= 1 for labels, v in hits)
    errors = [
        v
        for labels, v in samples(text, "understudy_http_requests_total")
        if labels.get("tenant") == "chaos_500" and labels.get("status") == "500"
    ]
    assert errors and errors[0] >= 1


def test_metrics_latency_histogram(gw):
    with oai(f"{gw.url}/v1") as client:
        client.chat.completions.create(model="gpt-4o", messages=[user("hello")])
    text = httpx.get(f"{gw.url}/metrics").text
    assert metric_lines(text, "understudy_http_request_duration_seconds_bucket")


@pytest.mark.parametrize("mode", ["embedded", "shared"])
def test_sigterm_drains_and_exits_zero(launcher, mode):
    redis_url = launcher.redis().url if mode == "shared" else None
    g = launcher.gateway(redis_url=redis_url, drain_grace="3s", name="sigterm")
    with oai(f"{g.url}/v1") as client:
        assert client.chat.completions.create(model="gpt-4o", messages=[user("hello")]).choices
    g.terminate()
    # readiness goes 503 while draining (the grace period keeps the listener open)
    deadline = time.monotonic() + 3
    status = None
    while time.monotonic() < deadline:
        try:
            status = httpx.get(f"{g.url}/readyz", timeout=1).status_code
        except httpx.HTTPError:
            break
        if status == 503:
            break
        time.sleep(0.05)
    assert status == 503, "readiness must report 503 during the drain"
    assert g.proc.wait(30) == 0


def test_sigterm_immediate_exit_zero(launcher):
    g = launcher.gateway(drain_grace="0s", name="sigterm0")
    g.terminate()
    assert g.proc.wait(30) == 0


def test_sigterm_closes_open_stream_cleanly(launcher):
    """An open SSE stream ends (the body terminates properly) and the process exits 0."""
    g = launcher.gateway(drain_grace="0s", name="sigterm-stream")
    with oai(f"{g.url}/v1", tenant="drip", timeout=30) as client:
        stream = client.chat.completions.create(model="gpt-4o", messages=[user("anything")], stream=True)
        it = iter(stream)
        first = next(it)
        assert first.choices[0].delta.role == "assistant"
        g.terminate()
        rest = list(it)  # must end, without a transport error
    text = "".join(ch.choices[0].delta.content or "" for ch in rest if ch.choices)
    assert len(text) < len("drip " * 32), "the stream was ended by the shutdown, not run to completion"
    assert g.proc.wait(30) == 0
