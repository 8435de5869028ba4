"""Client errors through the SDKs and on the wire (SPEC §3, §3.5, §11): provider error shapes,
400 / 404 / 413, never a 500 for anything a client sent."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from conftest import ant, oai, user

OPENAI_ERROR_KEYS = {"message", "type", "param", "code"}


def assert_openai_shape(body: dict) -> dict:
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == OPENAI_ERROR_KEYS, err
    assert isinstance(err["message"], str) and err["message"]
    return err


def assert_anthropic_shape(body: dict, etype: str) -> dict:
    assert body["type"] == "error", body
    err = body["error"]
    assert err["type"] == etype, body
    assert isinstance(err["message"], str) and err["message"]
    return err


# ------------------------------------------------------------------ tenant


def test_missing_tenant_openai(gw):
    with oai(f"{gw.url}/v1", tenant=None) as client:
        with pytest.raises(openai.BadRequestError) as ei:
            client.chat.completions.create(model="gpt-4o", messages=[user("hello")])
    assert ei.value.status_code == 400
    err = assert_openai_shape(ei.value.response.json())
    assert err["type"] == "invalid_request_error"
    assert "X-Tenant-ID" in err["message"]


def test_missing_tenant_anthropic(gw):
    with ant(gw.url, tenant=None) as client:
        with pytest.raises(anthropic.BadRequestError) as ei:
            client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[user("hello")])
    assert ei.value.status_code == 400
    assert_anthropic_shape(ei.value.response.json(), "invalid_request_error")


@pytest.mark.parametrize("tenant", ["no_such_tenant", "bad tenant!"])
def test_unknown_tenant_openai(gw, tenant):
    with oai(f"{gw.url}/v1", tenant=tenant) as client:
        with pytest.raises(openai.NotFoundError) as ei:
            client.chat.completions.create(model="gpt-4o", messages=[user("hello")])
        assert ei.value.status_code == 404
        assert_openai_shape(ei.value.response.json())
        with pytest.raises(openai.NotFoundError):
            client.models.list()


def test_unknown_tenant_anthropic(gw):
    with ant(gw.url, tenant="no_such_tenant") as client:
        with pytest.raises(anthropic.NotFoundError) as ei:
            client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[user("hello")])
    assert ei.value.status_code == 404
    assert_anthropic_shape(ei.value.response.json(), "not_found_error")


def test_tenant_errors_on_anthropic_routes_use_anthropic_shape(gw):
    h = {"anthropic-version": "2023-06-01"}
    r = httpx.get(f"{gw.url}/v1/models", headers=h)
    assert r.status_code == 400
    assert_anthropic_shape(r.json(), "invalid_request_error")
    r = httpx.post(
        f"{gw.url}/v1/messages/count_tokens",
        headers={**h, "X-Tenant-ID": "no_such_tenant"},
        json={"model": "m", "messages": [user("hi")]},
    )
    assert r.status_code == 404
    assert_anthropic_shape(r.json(), "not_found_error")


def test_unknown_tenant_in_path_prefix(gw):
    with oai(f"{gw.url}/t/no_such_tenant/v1", tenant=None) as client:
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="gpt-4o", messages=[user("hello")])


# ------------------------------------------------------------------ required fields


def test_missing_model_openai(openai_client):
    with pytest.raises(openai.BadRequestError) as ei:
        openai_client.post("/chat/completions", body={"messages": [user("hello")]}, cast_to=object)
    err = assert_openai_shape(ei.value.response.json())
    assert err["type"] == "invalid_request_error"
    assert err["param"] == "model"
    assert "model" in err["message"]


def test_missing_messages_openai(openai_client):
    with pytest.raises(openai.BadRequestError) as ei:
        openai_client.post("/chat/completions", body={"model": "gpt-4o"}, cast_to=object)
    err = assert_openai_shape(ei.value.response.json())
    assert err["param"] == "messages"


def test_empty_messages_openai(openai_client):
    with pytest.raises(openai.BadRequestError) as ei:
        openai_client.chat.completions.create(model="gpt-4o", messages=[])
    err = assert_openai_shape(ei.value.response.json())
    assert err["param"] == "messages"


def test_missing_model_anthropic(anthropic_client):
    with pytest.raises(anthropic.BadRequestError) as ei:
        anthropic_client.post(
            "/v1/messages", body={"max_tokens": 10, "messages": [user("hello")]}, cast_to=object
        )
    err = assert_anthropic_shape(ei.value.response.json(), "invalid_request_error")
    assert "model" in err["message"]


def test_empty_messages_anthropic(anthropic_client):
    with pytest.raises(anthropic.BadRequestError) as ei:
        anthropic_client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[])
    err = assert_anthropic_shape(ei.value.response.json(), "invalid_request_error")
    assert "messages" in err["message"]


def test_anthropic_missing_max_tokens_raw(gw):
    r = httpx.post(
        f"{gw.url}/v1/messages",
        headers={"X-Tenant-ID": "support", "anthropic-version": "2023-06-01"},
        json={"model": "claude-haiku-4-5", "messages": [user("hello")]},
    )
    assert r.status_code == 400
    err = assert_anthropic_shape(r.json(), "invalid_request_error")
    assert "max_tokens" in err["message"]


def test_responses_missing_input(openai_client):
    with pytest.raises(openai.BadRequestError) as ei:
        openai_client.post("/responses", body={"model": "gpt-4o"}, cast_to=object)
    assert assert_openai_shape(ei.value.response.json())["param"] == "input"


def test_embeddings_missing_input(openai_client):
    with pytest.raises(openai.BadRequestError) as ei:
        openai_client.post("/embeddings", body={"model": "text-embedding-3-small"}, cast_to=object)
    assert assert_openai_shape(ei.value.response.json())["param"] == "input"


# ------------------------------------------------------------------ malformed bodies


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/chat/completions", "/v1/responses", "/v1/embeddings"])
def test_malformed_json_openai_shape(gw, path):
    r = httpx.post(
        f"{gw.url}{path}",
        headers={"X-Tenant-ID": "support", "Content-Type": "application/json"},
        content=b'{"model": "gpt-4o", "messages": [',
    )
    assert r.status_code == 400
    err = assert_openai_shape(r.json())
    assert err["type"] == "invalid_request_error"


def test_malformed_json_anthropic_shape(gw):
    r = httpx.post(
        f"{gw.url}/v1/messages",
        headers={"X-Tenant-ID": "support", "anthropic-version": "2023-06-01", "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert r.status_code == 400
    assert_anthropic_shape(r.json(), "invalid_request_error")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"null",
        b'{"model": 5, "messages": []}',
        b'{"model": "m", "messages": "hello"}',
        b'{"model": "m", "messages": [{"content": "no role"}]}',
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "n": 0}',
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "tool_choice": "sometimes"}',
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]} trailing',
    ],
)
def test_bad_bodies_are_400_never_500(gw, body):
    r = httpx.post(
        f"{gw.url}/v1/chat/completions",
        headers={"X-Tenant-ID": "support", "Content-Type": "application/json"},
        content=body,
    )
    assert r.status_code == 400, r.text
    assert_openai_shape(r.json())


@pytest.mark.parametrize("value", [0, -1, 1_000_001])
def test_max_tokens_out_of_range_openai(openai_client, value):
    with pytest.raises(openai.BadRequestError) as ei:
        openai_client.chat.completions.create(model="gpt-4o", messages=[user("hello")], max_tokens=value)
    assert assert_openai_shape(ei.value.response.json())["param"] == "max_tokens"


def test_max_tokens_upper_bound_accepted(openai_client):
    c = openai_client.chat.completions.create(model="gpt-4o", messages=[user("hello")], max_tokens=1_000_000)
    assert c.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("value", [0, 1_000_001])
def test_max_tokens_out_of_range_anthropic(anthropic_client, value):
    with pytest.raises(anthropic.BadRequestError) as ei:
        anthropic_client.messages.create(model="claude-haiku-4-5", max_tokens=value, messages=[user("hello")])
    err = assert_anthropic_shape(ei.value.response.json(), "invalid_request_error")
    assert "max_tokens" in err["message"]


def test_max_output_tokens_zero_responses(openai_client):
    with pytest.raises(openai.BadRequestError) as ei:
        openai_client.responses.create(model="gpt-4o", input="hello", max_output_tokens=0)
    assert assert_openai_shape(ei.value.response.json())["param"] == "max_output_tokens"


# ------------------------------------------------------------------ body limit


def test_body_over_limit_openai(small_body_gw):
    with oai(f"{small_body_gw.url}/v1") as client:
        with pytest.raises(openai.APIStatusError) as ei:
            client.chat.completions.create(model="gpt-4o", messages=[user("hello " + "x" * 4096)])
        assert ei.value.status_code == 413
        assert_openai_shape(ei.value.response.json())
        # under the limit the same gateway answers
        c = client.chat.completions.create(model="gpt-4o", messages=[user("hello")])
        assert c.choices[0].message.content == "Hello! How can I help you today?"


def test_body_over_limit_anthropic(small_body_gw):
    with ant(small_body_gw.url) as client:
        with pytest.raises(anthropic.APIStatusError) as ei:
            client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[user("x" * 4096)])
    assert ei.value.status_code == 413
    assert isinstance(ei.value, anthropic.ContentTooLargeError)
    assert_anthropic_shape(ei.value.response.json(), "request_too_large")


def test_body_over_limit_chunked(small_body_gw):
    """No Content-Length: the limit still applies while reading."""

    def chunks():
        yield b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "'
        for _ in range(8):
            yield b"y" * 512
        yield b'"}]}'

    r = httpx.post(
        f"{small_body_gw.url}/v1/chat/completions",
        headers={"X-Tenant-ID": "support", "Content-Type": "application/json"},
        content=chunks(),
    )
    assert r.status_code == 413
    assert_openai_shape(r.json())


# ------------------------------------------------------------------ private tenants


def test_private_tenant_refuses_other_credentials(gw):
    with oai(f"{gw.url}/v1", tenant="private_one") as client:
        with pytest.raises(openai.AuthenticationError) as ei:
            client.chat.completions.create(model="gpt-4o", messages=[user("hello")])
    assert ei.value.status_code == 401
    assert_openai_shape(ei.value.response.json())
    with ant(gw.url, tenant="private_one") as client:
        with pytest.raises(anthropic.AuthenticationError) as ei:
            client.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[user("hello")])
    assert_anthropic_shape(ei.value.response.json(), "authentication_error")
