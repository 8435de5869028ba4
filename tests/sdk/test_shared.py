"""Two gateway processes on one Redis (SPEC §1 shared mode, §5 "counted across all pods").

Each test starts its own redis-server, so counters never leak between tests or into the
parametrised SDK tests.
"""

from __future__ import annotations

import time

import anthropic
import openai
import pytest

from conftest import MANIFESTS, OLD, ant, copy_manifests, oai, probe, replace_in, user, wait_for


@pytest.fixture
def pair(launcher):
    redis = launcher.redis()
    a = launcher.gateway(redis_url=redis.url, name="pod-a")
    b = launcher.gateway(redis_url=redis.url, name="pod-b")
    return a, b


def test_both_pods_serve_the_same_tenants(pair):
    for g in pair:
        with oai(f"{g.url}/v1") as client:
            c = client.chat.completions.create(model="gpt-4o", messages=[user("hello")])
            assert c.choices[0].message.content == "Hello! How can I help you today?"
        with ant(g.url) as client:
            m = client.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=[user("hello")])
            assert m.content[0].text == "Hello! How can I help you today?"


def test_rate_limit_counted_across_pods(pair):
    """rl_shared: limit 4 per window, requests alternating between the two processes."""
    clients = [oai(f"{g.url}/v1", tenant="rl_shared") for g in pair]
    try:
        outcomes, remaining = [], []
        for i in range(8):
            client = clients[i % 2]
            try:
                raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=[user("hi")])
                raw.parse()
                outcomes.append("ok")
                remaining.append(int(raw.headers["x-ratelimit-remaining-requests"]))
            except openai.RateLimitError as e:
                outcomes.append("429")
                assert int(e.response.headers["retry-after"]) >= 1
        assert outcomes == ["ok"] * 4 + ["429"] * 4
        assert remaining == [3, 2, 1, 0]
        # both processes refuse now, on Anthropic too
        for g in pair:
            with ant(g.url, tenant="rl_shared") as client:
                with pytest.raises(anthropic.RateLimitError):
                    client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[user("hi")])
    finally:
        for c in clients:
            c.close()


def test_every_counted_across_pods(pair):
    clients = [oai(f"{g.url}/v1", tenant="every_2") for g in pair]
    try:
        outcomes = []
        for i in range(4):
            try:
                clients[i % 2].chat.completions.create(model="gpt-4o", messages=[user("hi")])
                outcomes.append("ok")
            except openai.InternalServerError as e:
                outcomes.append(str(e.status_code))
        assert outcomes == ["ok", "503", "ok", "503"]
    finally:
        for c in clients:
            c.close()


def test_manifest_edit_reaches_both_pods(launcher, tmp_path):
    d = copy_manifests(tmp_path)
    redis = launcher.redis()
    a = launcher.gateway(manifests=d, redis_url=redis.url, name="reload-a")
    b = launcher.gateway(manifests=d, redis_url=redis.url, name="reload-b")
    assert probe(a.url) == OLD and probe(b.url) == OLD

    replace_in(d / "00-support.yaml", OLD, "probe answer after the edit")
    wait_for(a.url, "probe answer after the edit")
    wait_for(b.url, "probe answer after the edit")

    # a broken edit keeps both on the last good configuration
    support = d / "00-support.yaml"
    support.write_text(support.read_text() + "\n---\nkind: [\n")
    time.sleep(1.5)
    assert probe(a.url) == "probe answer after the edit"
    assert probe(b.url) == "probe answer after the edit"


def test_pod_without_manifests_reads_shared_config(launcher):
    """A pod started with only --redis-url serves what another pod seeded."""
    redis = launcher.redis()
    launcher.gateway(manifests=MANIFESTS, redis_url=redis.url, name="seeder")
    reader = launcher.gateway(manifests=None, redis_url=redis.url, name="reader")
    with oai(f"{reader.url}/v1") as client:
        c = client.chat.completions.create(model="gpt-4o", messages=[user("hello")])
    assert c.choices[0].message.content == "Hello! How can I help you today?"
