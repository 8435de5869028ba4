"""The official OpenAI Python SDK against the gateway (SPEC §3), in embedded and shared mode."""

from __future__ import annotations

import json
import math

import openai
import pydantic
import pytest

from conftest import oai, user

GREETING = "Hello! How can I help you today?"
INVOICES = "Your invoices: INV-001 (42.00 EUR, paid) and INV-002 (17.50 EUR, open)."
WEATHER = "Sunny, 21 degrees in Paris."
STORY = "Once upon a time, a gateway answered every request exactly as scripted."
DEFAULT = "Sorry, I can only help with invoices, refunds, orders and the weather."

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
INVOICE_TOOL = {
    "type": "function",
    "function": {
        "name": "get_invoice_ledger",
        "description": "List a customer's invoices.",
        "parameters": {
            "type": "object",
            "properties": {"customer_id": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["customer_id"],
        },
    },
}


def text_of(completion) -> str:
    return completion.choices[0].message.content


# ------------------------------------------------------------------ chat completions


def test_chat_plain(openai_client):
    c = openai_client.chat.completions.create(model="gpt-4o-mini", messages=[user("hello there")])
    assert c.id.startswith("chatcmpl-")
    assert c.object == "chat.completion"
    assert c.model == "gpt-4o-mini"
    assert isinstance(c.created, int) and c.created > 1_600_000_000
    assert len(c.choices) == 1
    ch = c.choices[0]
    assert ch.index == 0
    assert ch.message.role == "assistant"
    assert ch.message.content == GREETING
    assert ch.finish_reason == "stop"
    assert c.usage is not None
    # ⌈chars/4⌉ (SPEC §11): "hello there" → 3, the greeting (32 chars) → 8
    assert c.usage.prompt_tokens == math.ceil(len("hello there") / 4)
    assert c.usage.completion_tokens == math.ceil(len(GREETING) / 4)
    assert c.usage.total_tokens == c.usage.prompt_tokens + c.usage.completion_tokens


def test_chat_model_is_echoed(openai_client):
    c = openai_client.chat.completions.create(model="some-future-model-9", messages=[user("hello")])
    assert c.model == "some-future-model-9"


def test_keyword_match_is_case_insensitive(openai_client):
    c = openai_client.chat.completions.create(model="gpt-4o", messages=[user("HeLLo, anybody HOME?")])
    assert text_of(c) == GREETING


def test_priority_and_match_all(openai_client):
    both = openai_client.chat.completions.create(model="gpt-4o", messages=[user("URGENT: I need a refund")])
    assert text_of(both) == "I have escalated your urgent refund."
    only_refund = openai_client.chat.completions.create(model="gpt-4o", messages=[user("a refund please")])
    assert text_of(only_refund) == "Refunds take 5 to 7 business days."
    # match: all needs every keyword: "urgent" alone does not match refund-urgent
    only_urgent = openai_client.chat.completions.create(model="gpt-4o", messages=[user("this is urgent")])
    assert text_of(only_urgent) == DEFAULT


def test_most_keywords_matched_wins(openai_client):
    two = openai_client.chat.completions.create(model="gpt-4o", messages=[user("alpha and beta")])
    assert text_of(two) == "Two keywords matched."
    one = openai_client.chat.completions.create(model="gpt-4o", messages=[user("just alpha")])
    # alpha-one and alpha-two both match one keyword: the earlier one wins
    assert text_of(one) == "One keyword matched."


def test_default_response_when_nothing_matches(openai_client):
    c = openai_client.chat.completions.create(model="gpt-4o", messages=[user("tell me about quantum gravity")])
    assert text_of(c) == DEFAULT
    assert c.choices[0].finish_reason == "stop"


def test_matching_uses_most_recent_user_text(openai_client):
    c = openai_client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "system", "content": "You are a support agent. hello"},
            user("I want a refund"),
            {"role": "assistant", "content": "Refunds take 5 to 7 business days."},
            user([{"type": "text", "text": "what is the weather"}]),
        ],
    )
    assert text_of(c) == WEATHER


def test_turn_based_scenario(openai_client):
    first = openai_client.chat.completions.create(model="gpt-4o", messages=[user("where is my order?")])
    assert text_of(first) == "Which order do you mean?"
    second = openai_client.chat.completions.create(
        model="gpt-4o",
        messages=[
            user("where is my order?"),
            {"role": "assistant", "content": text_of(first)},
            user("order 1234"),
        ],
    )
    assert text_of(second) == "Order 1234 shipped yesterday."
    third = openai_client.chat.completions.create(
        model="gpt-4o",
        messages=[
            user("where is my order?"),
            {"role": "assistant", "content": "x"},
            user("order 1234"),
            {"role": "assistant", "content": "y"},
            user("and my other order?"),
        ],
    )
    assert text_of(third) == "Which order do you mean?"


def test_n_gives_identical_choices(openai_client):
    c = openai_client.chat.completions.create(model="gpt-4o", messages=[user("hello")], n=3)
    assert [ch.index for ch in c.choices] == [0, 1, 2]
    assert [ch.message.content for ch in c.choices] == [GREETING] * 3
    assert all(ch.finish_reason == "stop" for ch in c.choices)


@pytest.mark.parametrize("param", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_truncates(openai_client, param):
    c = openai_client.chat.completions.create(model="gpt-4o", messages=[user("tell me a story")], **{param: 2})
    assert text_of(c) == STORY[:8]
    assert c.choices[0].finish_reason == "length"
    assert c.usage.completion_tokens == 2


def test_stream_text(openai_client):
    stream = openai_client.chat.completions.create(model="gpt-4o-mini", messages=[user("tell me a story")], stream=True)
    chunks = list(stream)
    assert len(chunks) > 2
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    assert len({ch.id for ch in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert all(ch.model == "gpt-4o-mini" for ch in chunks)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == STORY
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(ch.choices[0].finish_reason is None for ch in chunks[:-1])
    assert all(ch.usage is None for ch in chunks)


def test_stream_include_usage(openai_client):
    stream = openai_client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[user("hello")],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == math.ceil(len(GREETING) / 4)
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == GREETING


def test_stream_truncated(openai_client):
    chunks = list(
        openai_client.chat.completions.create(
            model="gpt-4o", messages=[user("a story")], stream=True, max_tokens=3
        )
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == STORY[:12]
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stream_helper_text(openai_client):
    with openai_client.chat.completions.stream(model="gpt-4o", messages=[user("hello")]) as stream:
        deltas = [ev.delta for ev in stream if ev.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(deltas) == GREETING
    assert final.choices[0].message.content == GREETING
    assert final.choices[0].finish_reason == "stop"


# ------------------------------------------------------------------ tool calls


def test_tool_call_then_result(openai_client):
    messages = [user("What's the weather in Paris?")]
    c = openai_client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL, INVOICE_TOOL])
    ch = c.choices[0]
    assert ch.finish_reason == "tool_calls"
    assert ch.message.content is None
    assert ch.message.tool_calls is not None and len(ch.message.tool_calls) == 1
    call = ch.message.tool_calls[0]
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    messages += [
        ch.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"city": "Paris", "temperature_c": 21})},
    ]
    follow = openai_client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    assert follow.choices[0].finish_reason == "stop"
    assert follow.choices[0].message.content == WEATHER
    assert follow.choices[0].message.tool_calls is None


def test_tool_arguments_match_manifest(openai_client):
    c = openai_client.chat.completions.create(
        model="gpt-4o", messages=[user("show my invoices")], tools=[WEATHER_TOOL, INVOICE_TOOL]
    )
    call = c.choices[0].message.tool_calls[0]
    assert call.function.name == "get_invoice_ledger"
    assert json.loads(call.function.arguments) == {"customer_id": "cus_123", "limit": 2}


def test_tool_not_offered_gives_text(openai_client):
    c = openai_client.chat.completions.create(model="gpt-4o", messages=[user("weather?")], tools=[INVOICE_TOOL])
    assert c.choices[0].finish_reason == "stop"
    assert text_of(c) == WEATHER


def test_streamed_tool_call(openai_client):
    with openai_client.chat.completions.stream(
        model="gpt-4o", messages=[user("weather in Paris?")], tools=[WEATHER_TOOL]
    ) as stream:
        events = [ev.type for ev in stream]
        final = stream.get_final_completion()
    assert "tool_calls.function.arguments.done" in events
    ch = final.choices[0]
    assert ch.finish_reason == "tool_calls"
    assert len(ch.message.tool_calls) == 1
    call = ch.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert call.id.startswith("call_")


def test_streamed_tool_call_raw_chunks(openai_client):
    chunks = list(
        openai_client.chat.completions.create(
            model="gpt-4o", messages=[user("invoice please")], tools=[INVOICE_TOOL], stream=True
        )
    )
    first = chunks[0].choices[0].delta.tool_calls[0]
    assert first.index == 0 and first.id.startswith("call_") and first.function.name == "get_invoice_ledger"
    args = "".join(
        tc.function.arguments or ""
        for ch in chunks
        if ch.choices and ch.choices[0].delta.tool_calls
        for tc in ch.choices[0].delta.tool_calls
    )
    assert json.loads(args) == {"customer_id": "cus_123", "limit": 2}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_choice_none_gives_text(openai_client):
    c = openai_client.chat.completions.create(
        model="gpt-4o", messages=[user("weather in Paris?")], tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert c.choices[0].finish_reason == "stop"
    assert text_of(c) == WEATHER
    assert c.choices[0].message.tool_calls is None


def test_tool_choice_named_forces_call(openai_client):
    c = openai_client.chat.completions.create(
        model="gpt-4o",
        messages=[user("hello")],  # matches the greeting, which has no tool
        tools=[WEATHER_TOOL, INVOICE_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_invoice_ledger"}},
    )
    assert c.choices[0].finish_reason == "tool_calls"
    call = c.choices[0].message.tool_calls[0]
    assert call.function.name == "get_invoice_ledger"
    assert json.loads(call.function.arguments) == {"customer_id": "cus_123", "limit": 2}


def test_tool_choice_required_forces_call(openai_client):
    """The tool was already answered, so `auto` gives text; `required` calls it again."""
    messages = [
        user("weather in Paris?"),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_x", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_x", "content": "sunny"},
    ]
    auto = openai_client.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL])
    assert auto.choices[0].finish_reason == "stop"
    assert text_of(auto) == WEATHER
    forced = openai_client.chat.completions.create(
        model="gpt-4o", messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
    )
    assert forced.choices[0].finish_reason == "tool_calls"
    assert forced.choices[0].message.tool_calls[0].function.name == "get_weather"


def _tool_round(call_id: str, name: str, args: dict, result: str) -> list[dict]:
    return [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": result},
    ]


def test_loop_guard(openai_client):
    """The support tenant sets max_tool_results: 2."""
    tools = [WEATHER_TOOL, INVOICE_TOOL]
    one_result = [
        user("weather?"),
        *_tool_round("call_a", "get_weather", {"city": "Paris"}, "sunny"),
        user("now my invoices"),
    ]
    c = openai_client.chat.completions.create(model="gpt-4o", messages=one_result, tools=tools)
    assert c.choices[0].finish_reason == "tool_calls", "below the guard a new user turn calls the tool"

    two_results = [
        user("weather?"),
        *_tool_round("call_a", "get_weather", {"city": "Paris"}, "sunny"),
        user("and again the weather"),
        *_tool_round("call_b", "get_weather", {"city": "Paris"}, "still sunny"),
        user("now my invoices"),
    ]
    c = openai_client.chat.completions.create(model="gpt-4o", messages=two_results, tools=tools)
    assert c.choices[0].finish_reason == "stop"
    assert c.choices[0].message.tool_calls is None
    assert text_of(c) == INVOICES


class OrderSummary(pydantic.BaseModel):
    order_id: str
    status: str
    items: int


def test_parse_structured_output(openai_client):
    c = openai_client.chat.completions.parse(
        model="gpt-4o", messages=[user("the summary, please")], response_format=OrderSummary
    )
    msg = c.choices[0].message
    assert isinstance(msg.parsed, OrderSummary)
    assert msg.parsed == OrderSummary(order_id="1234", status="shipped", items=3)
    assert json.loads(msg.content) == {"order_id": "1234", "status": "shipped", "items": 3}


# ------------------------------------------------------------------ base URL and tenant forms


@pytest.mark.parametrize("suffix", ["/v1", ""])
def test_header_tenant_with_and_without_v1(gw, suffix):
    with oai(f"{gw.url}{suffix}") as client:
        c = client.chat.completions.create(model="gpt-4o", messages=[user("hello")])
        assert text_of(c) == GREETING
        assert [m.id for m in client.models.list()] == [
            "gpt-4o-mini",
            "gpt-4o",
            "claude-haiku-4-5",
            "text-embedding-3-small",
        ]


@pytest.mark.parametrize("suffix", ["/v1", ""])
def test_path_prefix_tenant(gw, suffix):
    with oai(f"{gw.url}/t/support{suffix}", tenant=None) as client:
        c = client.chat.completions.create(model="gpt-4o", messages=[user("hello")])
        assert text_of(c) == GREETING
        r = client.responses.create(model="gpt-4o", input="hello")
        assert r.output_text == GREETING
        e = client.embeddings.create(model="text-embedding-3-small", input="x", encoding_format="float")
        assert len(e.data[0].embedding) == 1536


# ------------------------------------------------------------------ responses API


def test_responses_plain(openai_client):
    r = openai_client.responses.create(model="gpt-4o-mini", input="hello")
    assert r.id.startswith("resp_")
    assert r.object == "response"
    assert r.status == "completed"
    assert r.model == "gpt-4o-mini"
    assert r.output_text == GREETING
    assert len(r.output) == 1 and r.output[0].type == "message"
    assert r.usage.output_tokens == math.ceil(len(GREETING) / 4)
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


def test_responses_input_items(openai_client):
    r = openai_client.responses.create(
        model="gpt-4o",
        instructions="be nice",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "a refund, URGENT"}]}],
    )
    assert r.output_text == "I have escalated your urgent refund."


def test_responses_max_output_tokens(openai_client):
    r = openai_client.responses.create(model="gpt-4o", input="story time", max_output_tokens=2)
    assert r.output_text == STORY[:8]
    assert r.status == "incomplete"
    assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"


def test_responses_stream_helper(openai_client):
    with openai_client.responses.stream(model="gpt-4o", input="tell me a story") as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == STORY
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == STORY
    assert final.status == "completed"


def test_responses_create_stream(openai_client):
    events = list(openai_client.responses.create(model="gpt-4o", input="hello", stream=True))
    done = [e for e in events if e.type == "response.output_text.done"]
    assert len(done) == 1 and done[0].text == GREETING
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == GREETING


FN_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}


def test_responses_function_call_then_output(openai_client):
    r = openai_client.responses.create(model="gpt-4o", input="weather in Paris?", tools=[FN_TOOL])
    assert len(r.output) == 1
    item = r.output[0]
    assert item.type == "function_call"
    assert item.name == "get_weather"
    assert json.loads(item.arguments) == {"city": "Paris"}
    assert item.call_id.startswith("call_")
    assert r.output_text == ""

    follow = openai_client.responses.create(
        model="gpt-4o",
        tools=[FN_TOOL],
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {"type": "function_call", "call_id": item.call_id, "name": item.name, "arguments": item.arguments},
            {"type": "function_call_output", "call_id": item.call_id, "output": "sunny"},
        ],
    )
    assert follow.output_text == WEATHER
    assert follow.output[0].type == "message"


def test_responses_streamed_function_call(openai_client):
    with openai_client.responses.stream(model="gpt-4o", input="weather?", tools=[FN_TOOL]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Paris"}
    calls = [o for o in final.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}


# ------------------------------------------------------------------ embeddings


def _norm(v) -> float:
    return math.sqrt(sum(x * x for x in v))


def test_embeddings_default_base64(gw):
    """The SDK asks for base64 unless told otherwise and decodes it itself.

    openai 3.54.0 validates the raw body *before* decoding base64, so a client with
    `_strict_response_validation=True` rejects a base64 answer from any server (the real API
    included): `data.0.embedding: Input should be a valid list`. This one test therefore uses a
    lenient client; every other test is strict.
    """
    with openai.OpenAI(
        base_url=f"{gw.url}/v1", api_key="sk-test", default_headers={"X-Tenant-ID": "support"}, max_retries=0
    ) as client:
        raw = client.embeddings.with_raw_response.create(model="text-embedding-3-small", input="the quick brown fox")
        assert json.loads(raw.http_request.content)["encoding_format"] == "base64"
        assert isinstance(raw.http_response.json()["data"][0]["embedding"], str)
        e = raw.parse()
        assert e.object == "list"
        assert e.model == "text-embedding-3-small"
        assert len(e.data) == 1
        v = e.data[0].embedding
        assert isinstance(v, list) and all(isinstance(x, float) for x in v)
        assert len(v) == 1536
        assert abs(_norm(v) - 1.0) < 1e-4
        again = client.embeddings.create(model="text-embedding-3-small", input="the quick brown fox")
        assert again.data[0].embedding == v
        other = client.embeddings.create(model="text-embedding-3-small", input="a lazy dog")
        assert other.data[0].embedding != v
        assert e.usage.prompt_tokens == math.ceil(len("the quick brown fox") / 4)
        f = client.embeddings.create(model="text-embedding-3-small", input="the quick brown fox", encoding_format="float")
        assert all(abs(x - y) < 1e-6 for x, y in zip(v, f.data[0].embedding))


def test_embeddings_float_strict(openai_client):
    e = openai_client.embeddings.create(model="text-embedding-3-small", input="same text", encoding_format="float")
    v = e.data[0].embedding
    assert len(v) == 1536
    assert abs(_norm(v) - 1.0) < 1e-4
    again = openai_client.embeddings.create(model="text-embedding-3-small", input="same text", encoding_format="float")
    assert again.data[0].embedding == v
    assert e.usage.prompt_tokens == e.usage.total_tokens == math.ceil(len("same text") / 4)


def test_embeddings_dimensions_and_list_input(openai_client):
    e = openai_client.embeddings.create(
        model="text-embedding-3-small", input=["one", "two", "one"], dimensions=64, encoding_format="float"
    )
    assert [d.index for d in e.data] == [0, 1, 2]
    assert all(len(d.embedding) == 64 for d in e.data)
    assert all(abs(_norm(d.embedding) - 1.0) < 1e-4 for d in e.data)
    assert e.data[0].embedding == e.data[2].embedding
    assert e.data[0].embedding != e.data[1].embedding


def test_embeddings_dimensions_from_settings(gw):
    with oai(f"{gw.url}/v1", tenant="embed_32") as client:
        e = client.embeddings.create(model="text-embedding-3-small", input="abc", encoding_format="float")
        assert len(e.data[0].embedding) == 32
        e = client.embeddings.create(model="text-embedding-3-small", input="abc", encoding_format="float", dimensions=8)
        assert len(e.data[0].embedding) == 8


# ------------------------------------------------------------------ models


def test_models_list_and_retrieve(openai_client):
    models = list(openai_client.models.list())
    assert [m.id for m in models] == ["gpt-4o-mini", "gpt-4o", "claude-haiku-4-5", "text-embedding-3-small"]
    assert all(m.object == "model" for m in models)
    m = openai_client.models.retrieve("gpt-4o")
    assert m.id == "gpt-4o" and m.object == "model" and isinstance(m.created, int)
    with pytest.raises(openai.NotFoundError) as ei:
        openai_client.models.retrieve("no-such-model")
    assert ei.value.status_code == 404
    assert ei.value.body["code"] == "model_not_found"


def test_default_models_for_tenant_without_setting(gw):
    with oai(f"{gw.url}/v1", tenant="plain") as client:
        ids = [m.id for m in client.models.list()]
    assert "gpt-4o" in ids and "claude-sonnet-5-5" in ids


def test_fallback_sentence_names_tenant(gw):
    """No scenario matches and no defaultResponse: a fixed sentence naming the tenant."""
    with oai(f"{gw.url}/v1", tenant="plain") as client:
        c = client.chat.completions.create(model="gpt-4o", messages=[user("anything at all")])
    assert "plain" in text_of(c)
    assert c.choices[0].finish_reason == "stop"
