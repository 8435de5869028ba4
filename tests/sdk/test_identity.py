"""Private tenants through the official SDKs (SPEC §3, §8): the owner's API key, sent as the SDK's
own api key (Bearer for both current SDKs), is required: 401 without a valid credential, 403 for
someone else's. Keys are minted and revoked through the admin API; tenants and scenarios are
created through the public API. Both modes."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from conftest import MODES, user

ADMIN = "sdk-suite-admin-token-0123"


@pytest.fixture(scope="module", params=MODES)
def world(request, tmp_path_factory):
    from conftest import Launcher

    launcher = Launcher(tmp_path_factory.mktemp("identity-logs"))
    redis_url = launcher.redis().url if request.param == "shared" else None
    gw = launcher.gateway(redis_url=redis_url, extra_args=("--admin-token", ADMIN))
    api = httpx.Client(base_url=gw.url, timeout=10)

    def mint(name: str, identity: str, role: str = "editor") -> str:
        r = api.post("/api/v1/admin/keys", json={"name": name, "identity": identity, "role": role},
                     headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 201, r.text
        return r.json()["plaintext"]

    alice, bob = mint("alice-key", "alice"), mint("bob-key", "bob")
    r = api.post("/public/tenants", json={"tenant_id": "alice_private"}, headers={"X-API-Key": alice})
    assert r.status_code == 201, r.text
    r = api.post("/public/tenants/alice_private/scenarios", headers={"X-API-Key": alice}, json={
        "keywords": ["secret"], "response": "Only for Alice.",
        "tool_name": "open_vault", "tool_arguments": {"door": 1}})
    assert r.status_code == 201, r.text
    yield {"gw": gw, "alice": alice, "bob": bob, "api": api, "mint": mint}
    api.close()
    launcher.close()


def oai_key(world, key):
    return openai.OpenAI(base_url=f"{world['gw'].url}/v1", api_key=key, max_retries=0,
                         default_headers={"X-Tenant-ID": "alice_private"}, _strict_response_validation=True)


def ant_key(world, key):
    return anthropic.Anthropic(base_url=world["gw"].url, api_key=key, max_retries=0,
                               default_headers={"X-Tenant-ID": "alice_private"}, _strict_response_validation=True)


def test_owner_key_is_served_by_both_sdks(world):
    with oai_key(world, world["alice"]) as c:
        assert c.chat.completions.create(model="gpt-4o", messages=[user("the secret?")]).choices[0].message.content \
            == "Only for Alice."
        call = c.chat.completions.create(model="gpt-4o", messages=[user("secret")], tools=[
            {"type": "function", "function": {"name": "open_vault", "parameters": {"type": "object"}}}])
        assert call.choices[0].message.tool_calls[0].function.arguments == '{"door":1}'
    with ant_key(world, world["alice"]) as c:
        msg = c.messages.create(model="claude-haiku-4-5", max_tokens=100, messages=[user("secret")])
        assert msg.content[0].text == "Only for Alice."


def test_anthropic_x_api_key_header_works_too(world):
    r = httpx.post(f"{world['gw'].url}/v1/messages", headers={"x-api-key": world["alice"], "X-Tenant-ID": "alice_private"},
                   json={"model": "m", "max_tokens": 10, "messages": [user("secret")]})
    assert r.status_code == 200, r.text


def test_someone_elses_key_is_403(world):
    with oai_key(world, world["bob"]) as c, pytest.raises(openai.PermissionDeniedError) as e:
        c.chat.completions.create(model="gpt-4o", messages=[user("secret")])
    assert "alice_private" in e.value.message
    with ant_key(world, world["bob"]) as c, pytest.raises(anthropic.PermissionDeniedError) as e:
        c.messages.create(model="m", max_tokens=10, messages=[user("secret")])
    assert e.value.body["error"]["type"] == "permission_error"


def test_placeholder_key_is_401_naming_what_to_send(world):
    with oai_key(world, "sk-placeholder") as c, pytest.raises(openai.AuthenticationError) as e:
        c.chat.completions.create(model="gpt-4o", messages=[user("secret")])
    assert "alice_private" in e.value.message and "Bearer" in e.value.message
    with ant_key(world, "sk-ant-placeholder") as c, pytest.raises(anthropic.AuthenticationError) as e:
        c.messages.create(model="m", max_tokens=10, messages=[user("secret")])
    assert e.value.body["error"]["type"] == "authentication_error"


def test_a_revoked_key_stops_working(world):
    temp = world["mint"]("alice-temp", "alice")
    with oai_key(world, temp) as c:
        assert c.chat.completions.create(model="m", messages=[user("secret")]).choices[0].message.content
        r = world["api"].delete("/api/v1/admin/keys/alice-temp", headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 204
        with pytest.raises(openai.AuthenticationError):
            c.chat.completions.create(model="m", messages=[user("secret")])


def test_global_tenants_ignore_whatever_key_the_sdk_sends(world):
    r = world["api"].post("/public/tenants", headers={"Authorization": f"Bearer {ADMIN}"},
                          json={"tenant_id": "open_house", "visibility": "global", "default_response": "Welcome."})
    assert r.status_code == 201, r.text
    c = openai.OpenAI(base_url=f"{world['gw'].url}/v1", api_key="sk-whatever", max_retries=0,
                      default_headers={"X-Tenant-ID": "open_house"}, _strict_response_validation=True)
    assert c.chat.completions.create(model="m", messages=[user("hi")]).choices[0].message.content == "Welcome."
