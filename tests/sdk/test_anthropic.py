"""The official Anthropic Python SDK against the gateway (SPEC §3), in embedded and shared mode."""

from __future__ import annotations

import math

import anthropic
import httpx
import pytest

from conftest import ant, user

GREETING = "Hello! How can I help you today?"
WEATHER = "Sunny, 21 degrees in Paris."
STORY = "Once upon a time, a gateway answered every request exactly as scripted."
DEFAULT = "Sorry, I can only help with invoices, refunds, orders and the weather."

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
INVOICE_TOOL = {
    "name": "get_invoice_ledger",
    "description": "List a customer's invoices.",
    "input_schema": {"type": "object", "properties": {"customer_id": {"type": "string"}}},
}


def test_messages_plain(anthropic_client):
    m = anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=256, messages=[user("hello there")]
    )
    assert m.id.startswith("msg_")
    assert m.type == "message"
    assert m.role == "assistant"
    assert m.model == "claude-haiku-4-5"
    assert len(m.content) == 1
    assert m.content[0].type == "text"
    assert m.content[0].text == GREETING
    assert m.stop_reason == "end_turn"
    assert m.stop_sequence is None
    assert m.usage.input_tokens == math.ceil(len("hello there") / 4)
    assert m.usage.output_tokens == math.ceil(len(GREETING) / 4)


def test_messages_system_counts_and_matching(anthropic_client):
    m = anthropic_client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=256,
        system="You are helpful.",
        messages=[
            user("hello"),
            {"role": "assistant", "content": GREETING},
            user([{"type": "text", "text": "I need an URGENT refund"}]),
        ],
    )
    assert m.content[0].text == "I have escalated your urgent refund."
    chars = len("You are helpful.") + len("hello") + len(GREETING) + len("I need an URGENT refund")
    assert m.usage.input_tokens == math.ceil(chars / 4)


def test_messages_default_response(anthropic_client):
    m = anthropic_client.messages.create(model="claude-haiku-4-5", max_tokens=256, messages=[user("zzz")])
    assert m.content[0].text == DEFAULT


def test_messages_max_tokens_truncates(anthropic_client):
    m = anthropic_client.messages.create(model="claude-haiku-4-5", max_tokens=2, messages=[user("a story")])
    assert m.content[0].text == STORY[:8]
    assert m.stop_reason == "max_tokens"
    assert m.usage.output_tokens == 2


def test_messages_turn_two(anthropic_client):
    m = anthropic_client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=100,
        messages=[user("my order"), {"role": "assistant", "content": "Which?"}, user("order 1234")],
    )
    assert m.content[0].text == "Order 1234 shipped yesterday."


def test_messages_stream_text(anthropic_client):
    with anthropic_client.messages.stream(
        model="claude-haiku-4-5", max_tokens=512, messages=[user("tell me a story")]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == STORY
    assert final.content[0].type == "text"
    assert final.content[0].text == STORY
    assert final.stop_reason == "end_turn"
    assert final.model == "claude-haiku-4-5"
    assert final.id.startswith("msg_")
    assert final.usage.output_tokens == math.ceil(len(STORY) / 4)


def test_messages_stream_raw_events(anthropic_client):
    events = list(
        anthropic_client.messages.create(
            model="claude-haiku-4-5", max_tokens=3, messages=[user("story")], stream=True
        )
    )
    types = [e.type for e in events]
    assert types[0] == "message_start"
    assert types[-1] == "message_stop"
    assert types[-2] == "message_delta"
    assert "content_block_start" in types and "content_block_stop" in types
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text == STORY[:12]
    assert events[-2].delta.stop_reason == "max_tokens"


def test_tool_use_then_result(anthropic_client):
    messages = [user("What's the weather in Paris?")]
    m = anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=256, messages=messages, tools=[WEATHER_TOOL, INVOICE_TOOL]
    )
    assert m.stop_reason == "tool_use"
    uses = [b for b in m.content if b.type == "tool_use"]
    assert len(uses) == 1
    block = uses[0]
    assert block.name == "get_weather"
    assert block.input == {"city": "Paris"}
    assert block.id.startswith("toolu_")

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny, 21 C"}],
        },
    ]
    follow = anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=256, messages=messages, tools=[WEATHER_TOOL]
    )
    assert follow.stop_reason == "end_turn"
    assert [b.type for b in follow.content] == ["text"]
    assert follow.content[0].text == WEATHER


def test_tool_use_streamed(anthropic_client):
    with anthropic_client.messages.stream(
        model="claude-haiku-4-5", max_tokens=256, messages=[user("invoice please")], tools=[INVOICE_TOOL]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert any(e.type == "input_json" for e in events)
    assert final.stop_reason == "tool_use"
    uses = [b for b in final.content if b.type == "tool_use"]
    assert len(uses) == 1
    assert uses[0].name == "get_invoice_ledger"
    assert uses[0].input == {"customer_id": "cus_123", "limit": 2}


def test_tool_choice_none_and_tool(anthropic_client):
    m = anthropic_client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=256,
        messages=[user("weather?")],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "none"},
    )
    assert m.stop_reason == "end_turn"
    assert m.content[0].text == WEATHER
    m = anthropic_client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=256,
        messages=[user("hello")],
        tools=[WEATHER_TOOL, INVOICE_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    assert m.stop_reason == "tool_use"
    assert m.content[0].type == "tool_use" and m.content[0].input == {"city": "Paris"}


def test_count_tokens(anthropic_client):
    r = anthropic_client.messages.count_tokens(
        model="claude-haiku-4-5", system="Be brief.", messages=[user("hello there, how are you?")]
    )
    assert r.input_tokens == math.ceil((len("Be brief.") + len("hello there, how are you?")) / 4)
    # the same estimate as usage.input_tokens of the real call
    m = anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=50, system="Be brief.", messages=[user("hello there, how are you?")]
    )
    assert m.usage.input_tokens == r.input_tokens


def test_models_list_anthropic_shape(anthropic_client):
    page = anthropic_client.models.list()
    ids = [m.id for m in page]
    assert ids == ["gpt-4o-mini", "gpt-4o", "claude-haiku-4-5", "text-embedding-3-small"]
    assert all(m.type == "model" for m in page.data)
    assert page.has_more is False
    assert page.first_id == "gpt-4o-mini" and page.last_id == "text-embedding-3-small"


def test_models_list_anthropic_wire(gw):
    """The anthropic-version header selects Anthropic's shape (checked on the wire)."""
    r = httpx.get(f"{gw.url}/v1/models", headers={"X-Tenant-ID": "support", "anthropic-version": "2023-06-01"})
    assert r.status_code == 200
    body = r.json()
    assert [m["id"] for m in body["data"]] == ["gpt-4o-mini", "gpt-4o", "claude-haiku-4-5", "text-embedding-3-small"]
    assert body["has_more"] is False
    assert all(m["type"] == "model" and m["display_name"] and m["created_at"] for m in body["data"])
    assert "object" not in body


def test_models_retrieve_anthropic(anthropic_client):
    m = anthropic_client.models.retrieve("claude-haiku-4-5")
    assert m.id == "claude-haiku-4-5" and m.type == "model" and m.display_name


def test_models_retrieve_unknown_anthropic(anthropic_client):
    with pytest.raises(anthropic.NotFoundError) as ei:
        anthropic_client.models.retrieve("claude-nonexistent")
    assert ei.value.status_code == 404
    assert ei.value.body["type"] == "error"
    assert ei.value.body["error"]["type"] == "not_found_error"


def test_path_prefix_tenant(gw):
    with ant(f"{gw.url}/t/support", tenant=None) as client:
        m = client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=[user("hello")])
    assert m.content[0].text == GREETING


def test_x_api_key_auth_is_accepted(gw):
    """Older SDK configurations send x-api-key instead of Bearer; both are ignored for global tenants."""
    with anthropic.Anthropic(
        base_url=gw.url,
        api_key=None,
        auth_token=None,
        default_headers={"X-Tenant-ID": "support", "x-api-key": "sk-ant-other"},
        max_retries=0,
        _strict_response_validation=True,
    ) as client:
        m = client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=[user("hello")])
    assert m.content[0].text == GREETING
