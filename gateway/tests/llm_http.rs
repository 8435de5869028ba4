//! The LLM surface through the full service, in process: tenant addressing, bad input in each
//! provider's shape, limits, chaos headers, and random bodies that must never cause a 5xx.

mod common;

use proptest::prelude::*;
use serde_json::json;

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";

#[tokio::test]
async fn tenant_by_header_prefix_and_unversioned_routes() {
    let app = common::app().await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"invoice"}]}"#;
    for (path, headers) in [
        (CHAT, vec![("x-tenant-id", "shop")]),
        ("/chat/completions", vec![("x-tenant-id", "shop")]),
        ("/t/shop/v1/chat/completions", vec![]),
        ("/t/shop/chat/completions", vec![]),
    ] {
        let r = common::call(&app, "POST", path, &headers, body).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(
            r.json()["choices"][0]["message"]["content"],
            "Here are your invoices."
        );
    }
    let r = common::call(&app, "GET", "/t/shop/v1/models?limit=5", &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"][0]["id"], "gpt-4o");
}

#[tokio::test]
async fn missing_and_unknown_tenants_in_each_providers_shape() {
    let app = common::app().await;
    let chat = r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#;
    let r = common::call(&app, "POST", CHAT, &[], chat).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("X-Tenant-ID")
    );
    let r = common::call(&app, "POST", CHAT, &[("x-tenant-id", "ghost")], chat).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "tenant_not_found");
    let msg = r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#;
    let r = common::call(&app, "POST", MESSAGES, &[("x-tenant-id", "ghost")], msg).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let r = common::call(&app, "POST", "/t/bad%20id/v1/messages", &[], msg).await;
    assert_eq!(r.status, 404);
    let r = common::call(&app, "POST", "/t//v1/chat/completions", &[], chat).await;
    assert_eq!(r.status, 400, "an empty path prefix names no tenant");
}

static EMBED_FLOOD: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    serde_json::json!({"model": "m", "input": vec!["a"; 2048], "dimensions": 8192}).to_string()
});

#[tokio::test]
async fn bad_bodies_name_the_problem() {
    let app = common::app().await;
    let h = [("x-tenant-id", "shop")];
    let cases: Vec<(&str, &str, &str)> = vec![
        (CHAT, "{not json", "parse the JSON"),
        (CHAT, "", "empty"),
        (
            CHAT,
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            "'model'",
        ),
        (CHAT, r#"{"model":"m"}"#, "'messages'"),
        (CHAT, r#"{"model":"m","messages":[]}"#, "'messages'"),
        (
            CHAT,
            r#"{"model":7,"messages":[{"role":"user","content":"x"}]}"#,
            "model",
        ),
        (
            CHAT,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
            "max_tokens",
        ),
        (
            CHAT,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1000001}"#,
            "max_tokens",
        ),
        (
            CHAT,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":0}"#,
            "'n'",
        ),
        (
            CHAT,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tool_choice":"sometimes"}"#,
            "tool_choice",
        ),
        (CHAT, r#"[1,2]"#, "Invalid request body"),
        (
            MESSAGES,
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens",
        ),
        (
            MESSAGES,
            r#"{"model":"m","max_tokens":10,"messages":[]}"#,
            "messages",
        ),
        (
            MESSAGES,
            r#"{"model":"m","max_tokens":10,"messages":[{"role":"robot","content":"x"}]}"#,
            "role",
        ),
        (
            MESSAGES,
            r#"{"model":"m","max_tokens":-1,"messages":[{"role":"user","content":"x"}]}"#,
            "max_tokens",
        ),
        (
            MESSAGES,
            r#"{"model":"m","max_tokens":10,"system":5,"messages":[{"role":"user","content":"x"}]}"#,
            "system",
        ),
        ("/v1/responses", r#"{"model":"m"}"#, "'input'"),
        ("/v1/responses", r#"{"model":"m","input":5}"#, "input"),
        ("/v1/embeddings", r#"{"model":"m","input":""}"#, "input"),
        (
            "/v1/embeddings",
            r#"{"model":"m","input":"x","encoding_format":"hex"}"#,
            "encoding_format",
        ),
        (
            "/v1/embeddings",
            r#"{"model":"m","input":"x","dimensions":0}"#,
            "dimensions",
        ),
        ("/v1/embeddings", EMBED_FLOOD.as_str(), "Too much output"),
    ];
    for (path, body, needle) in cases {
        let r = common::call(&app, "POST", path, &h, body.to_string()).await;
        assert_eq!(r.status, 400, "{path} {body}: {}", r.text());
        let msg = if path == MESSAGES {
            assert_eq!(r.json()["error"]["type"], "invalid_request_error");
            r.json()["error"]["message"].as_str().unwrap().to_string()
        } else {
            assert_eq!(r.json()["error"]["type"], "invalid_request_error", "{body}");
            r.json()["error"]["message"].as_str().unwrap().to_string()
        };
        assert!(
            msg.contains(needle),
            "{path} {body}: {msg:?} should mention {needle:?}"
        );
    }
}

#[tokio::test]
async fn invalid_utf8_and_oversized_bodies() {
    let app = common::app().await;
    let h = [("x-tenant-id", "shop")];
    let mut bytes = br#"{"model":"m","messages":[{"role":"user","content":""#.to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(br#""}]}"#);
    let r = common::call(&app, "POST", CHAT, &h, bytes).await;
    assert_eq!(r.status, 400, "{}", r.text());
    let big = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(70 * 1024)
    );
    let r = common::call(&app, "POST", CHAT, &h, big.clone()).await;
    assert_eq!(r.status, 413);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("65536")
    );
    let r = common::call(&app, "POST", MESSAGES, &h, big).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["type"], "request_too_large");
    // The tenant still answers afterwards.
    let r = common::post(
        &app,
        CHAT,
        json!({"model": "m", "messages": [{"role": "user", "content": "invoice"}]}),
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn unknown_model_is_404_in_both_shapes() {
    let app = common::app().await;
    let r = common::call(
        &app,
        "GET",
        "/v1/models/nope",
        &[("x-tenant-id", "shop")],
        "",
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    let r = common::call(
        &app,
        "GET",
        "/v1/models/nope",
        &[("x-tenant-id", "shop"), ("anthropic-version", "2023-06-01")],
        "",
    )
    .await;
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let r = common::call(
        &app,
        "GET",
        "/v1/models/gpt-4o",
        &[("x-tenant-id", "shop")],
        "",
    )
    .await;
    assert_eq!(r.json()["id"], "gpt-4o");
}

#[tokio::test]
async fn tool_result_then_text_and_tool_choice_in_all_three_apis() {
    let app = common::app().await;
    // OpenAI: a call, then the result gives the scenario's text.
    let tools = json!([{"type": "function", "function": {"name": "get_invoices"}}]);
    let r = common::post(&app, CHAT, json!({"model": "m", "tools": tools, "messages": [{"role": "user", "content": "invoice?"}]})).await;
    let call = &r.json()["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["arguments"], "{\"customer_id\":\"cus_1\"}");
    let id = call["id"].as_str().unwrap().to_string();
    let follow = json!({"model": "m", "tools": tools, "messages": [
        {"role": "user", "content": "invoice?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function", "function": {"name": "get_invoices", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": id, "content": "{\"invoices\":[]}"}
    ]});
    let r = common::post(&app, CHAT, follow).await;
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Here are your invoices."
    );
    assert_eq!(r.json()["choices"][0]["finish_reason"], "stop");
    // tool_choice none → text even though the tool is offered.
    let r = common::post(&app, CHAT, json!({"model": "m", "tools": tools, "tool_choice": "none", "messages": [{"role": "user", "content": "invoice"}]})).await;
    assert_eq!(r.json()["choices"][0]["finish_reason"], "stop");
    // Anthropic: tool_use then tool_result.
    let atools = json!([{"name": "get_invoices", "input_schema": {"type": "object"}}]);
    let r = common::post(&app, MESSAGES, json!({"model": "m", "max_tokens": 100, "tools": atools, "messages": [{"role": "user", "content": "invoice"}]})).await;
    assert_eq!(r.json()["stop_reason"], "tool_use");
    let block = r.json()["content"][0].clone();
    assert_eq!(block["input"], json!({"customer_id": "cus_1"}));
    let r = common::post(&app, MESSAGES, json!({"model": "m", "max_tokens": 100, "tools": atools, "messages": [
        {"role": "user", "content": "invoice"},
        {"role": "assistant", "content": [block]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": r.json()["content"][0]["id"], "content": "ok"}]}
    ]})).await;
    assert_eq!(r.json()["content"][0]["text"], "Here are your invoices.");
    // Responses: function_call then function_call_output.
    let rtools =
        json!([{"type": "function", "name": "get_invoices", "parameters": {"type": "object"}}]);
    let r = common::post(
        &app,
        "/v1/responses",
        json!({"model": "m", "tools": rtools, "input": "invoice"}),
    )
    .await;
    let item = r.json()["output"][0].clone();
    assert_eq!(item["type"], "function_call");
    let r = common::post(
        &app,
        "/v1/responses",
        json!({"model": "m", "tools": rtools, "input": [
            {"role": "user", "content": "invoice"},
            item.clone(),
            {"type": "function_call_output", "call_id": item["call_id"], "output": "{}"}
        ]}),
    )
    .await;
    assert_eq!(
        r.json()["output"][0]["content"][0]["text"],
        "Here are your invoices."
    );
}

#[tokio::test]
async fn injected_errors_and_metrics() {
    let app = common::app().await;
    let r = common::call(
        &app,
        "POST",
        MESSAGES,
        &[("x-tenant-id", "down")],
        r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["type"], "api_error");
    let m = common::call(&app, "GET", "/metrics", &[], "").await.text();
    assert!(m.contains(r#"understudy_chaos_injections_total{profile="server_error",surface="llm",tenant="down"} 1"#), "{m}");
    assert!(
        m.contains(r#"route="/v1/messages",status="503",surface="llm",tenant="down""#),
        "{m}"
    );
}

/// A global tenant `id` created through the admin API, with the chaos profile `chaos`.
async fn chaos_tenant(app: &understudy_gateway::state::App, id: &str, chaos: serde_json::Value) {
    let r = common::json(
        app,
        "POST",
        "/public/tenants",
        Some(common::ADMIN),
        json!({"tenant_id": id, "visibility": "global", "default_response": "All fine."}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = common::json(
        app,
        "PUT",
        &format!("/public/tenants/{id}/chaos"),
        Some(common::ADMIN),
        chaos,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The `understudy_chaos_injections_total` of `tenant` (0 when absent).
async fn injections(app: &understudy_gateway::state::App, tenant: &str) -> u64 {
    let m = common::call(app, "GET", "/metrics", &[], "").await.text();
    let prefix = format!(
        r#"understudy_chaos_injections_total{{profile="server_error",surface="llm",tenant="{tenant}"}} "#
    );
    m.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// `probability` is drawn per request: 0 never injects, 1 always does, 0.5 does for some and not
/// others (bounds ±8 standard deviations wide over 400 requests: never flaky, yet a draw that
/// ignored the probability would fail one of the three).
#[tokio::test]
async fn random_chaos_follows_its_probability() {
    let app = common::app().await;
    let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}"#;
    for (id, probability) in [("never", 0.0), ("half", 0.5), ("always", 1.0)] {
        chaos_tenant(
            &app,
            id,
            json!({"profile": "server_error", "status_code": 502, "probability": probability}),
        )
        .await;
        let (mut ok, mut failed) = (0u64, 0u64);
        for _ in 0..400 {
            let r = common::call(&app, "POST", CHAT, &[("x-tenant-id", id)], body).await;
            match r.status.as_u16() {
                200 => {
                    assert_eq!(r.json()["choices"][0]["message"]["content"], "All fine.");
                    ok += 1;
                }
                502 => {
                    assert_eq!(r.json()["error"]["type"], "server_error", "{}", r.text());
                    failed += 1;
                }
                s => panic!("{id}: unexpected {s}: {}", r.text()),
            }
        }
        match id {
            "never" => assert_eq!((ok, failed), (400, 0), "probability 0 injects nothing"),
            "always" => assert_eq!((ok, failed), (0, 400), "probability 1 injects every time"),
            _ => assert!(
                (120..=280).contains(&failed),
                "probability 0.5: {failed} of 400 failed"
            ),
        }
        assert_eq!(
            injections(&app, id).await,
            failed,
            "{id}: each fault is counted"
        );
    }
}

/// The 502 profile answers 502 in each provider's error shape, streamed requests included
/// (the error comes before any event).
#[tokio::test]
async fn the_502_profile_answers_in_each_providers_shape() {
    let app = common::app().await;
    chaos_tenant(
        &app,
        "bad-gateway",
        json!({"profile": "server_error", "status_code": 502}),
    )
    .await;
    let h = [
        ("x-tenant-id", "bad-gateway"),
        ("content-type", "application/json"),
    ];
    for stream in [false, true] {
        let chat = json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
        let responses = json!({"model": "gpt-4o", "stream": stream, "input": "hi"});
        for (path, body) in [(CHAT, chat), ("/v1/responses", responses)] {
            let r = common::call(&app, "POST", path, &h, body.to_string()).await;
            assert_eq!(r.status, 502, "{path} stream={stream}: {}", r.text());
            let e = &r.json()["error"];
            assert_eq!(e["type"], "server_error", "{path}: {}", r.text());
            assert!(e["code"].is_null(), "{path}: {}", r.text());
            assert!(
                e["message"].as_str().unwrap().contains("chaos profile"),
                "{path}: {}",
                r.text()
            );
        }
        let msg = json!({"model": "claude-sonnet-5-5", "max_tokens": 16, "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
        let r = common::call(&app, "POST", MESSAGES, &h, msg.to_string()).await;
        assert_eq!(r.status, 502, "messages stream={stream}: {}", r.text());
        let v = r.json();
        assert_eq!(v["type"], "error", "{v}");
        assert_eq!(v["error"]["type"], "api_error", "{v}");
        assert!(
            v["request_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{v}"
        );
    }
    assert_eq!(injections(&app, "bad-gateway").await, 6);
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        "[a-z ]{0,12}".prop_map(serde_json::Value::from),
        prop_oneof![
            Just("user"),
            Just("assistant"),
            Just("tool"),
            Just("text"),
            Just("function")
        ]
        .prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("model".to_string()),
                        Just("messages".to_string()),
                        Just("role".to_string()),
                        Just("content".to_string()),
                        Just("max_tokens".to_string()),
                        Just("stream".to_string()),
                        Just("tools".to_string()),
                        Just("tool_choice".to_string()),
                        Just("type".to_string()),
                        Just("input".to_string()),
                        Just("n".to_string()),
                        Just("system".to_string()),
                        "[a-z_]{1,8}"
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]

    /// Random JSON (shaped like the real requests) to every LLM route: never a 5xx.
    #[test]
    fn random_json_bodies_never_cause_a_server_error(body in arb_json(), route in 0usize..5) {
        let rt = runtime();
        let path = ["/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/embeddings", "/v1/messages/count_tokens"][route];
        let r = rt.block_on(async {
            let app = common::app().await;
            common::call(&app, "POST", path, &[("x-tenant-id", "shop")], body.to_string()).await
        });
        prop_assert!(r.status.as_u16() < 500, "{} {} → {} {}", path, body, r.status, r.text());
        prop_assert!(r.status == 200 || r.status == 400, "{} {} → {}", path, body, r.status);
    }

    /// Random bytes: a clear 4xx, never a panic.
    #[test]
    fn random_bytes_never_cause_a_server_error(bytes in prop::collection::vec(any::<u8>(), 0..512), route in 0usize..2) {
        let rt = runtime();
        let path = ["/v1/chat/completions", "/v1/messages"][route];
        let r = rt.block_on(async {
            let app = common::app().await;
            common::call(&app, "POST", path, &[("x-tenant-id", "shop")], bytes.clone()).await
        });
        prop_assert!(r.status.is_client_error() || r.status == 200, "{:?} → {}", bytes, r.status);
    }
}

#[tokio::test]
async fn unknown_routes_are_404_in_the_surfaces_shape() {
    let app = common::app().await;
    let r = common::call(
        &app,
        "POST",
        "/v1/completionz",
        &[("x-tenant-id", "shop")],
        "{}",
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "unknown_url");
    let r = common::call(&app, "GET", "/v1/messages/batches", &[], "").await;
    assert_eq!(r.json()["error"]["type"], "not_found_error");
    let r = common::call(&app, "GET", "/nothing/here", &[], "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    // A known route with the wrong method: 405 in the surface's shape, with `Allow`.
    let r = common::call(&app, "GET", "/v1/chat/completions", &[], "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
    assert_eq!(r.headers["allow"], "POST");
    let r = common::call(&app, "GET", "/v1/messages", &[], "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = common::call(&app, "PUT", "/public/tenants", &[], "").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["code"], "invalid_input");
    assert!(r.headers["allow"].to_str().unwrap().contains("POST"));
    // The public API's own prefix: its envelope, whatever follows.
    let r = common::call(&app, "GET", "/public/nothing", &[], "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    // Each 404 is counted under the surface that owns the path, not guessed from `/v1/`.
    let m = common::call(&app, "GET", "/metrics", &[], "").await.text();
    for (surface, count) in [("llm", 2), ("public", 1), ("other", 1)] {
        let line = format!(
            r#"understudy_http_requests_total{{route="unmatched",status="404",surface="{surface}",tenant=""}} {count}"#
        );
        assert!(m.contains(&line), "{line} in\n{m}");
    }
}

#[tokio::test]
async fn count_tokens_agrees_with_usage_tools_included() {
    let app = common::app().await;
    let tools = json!([{"name": "get_invoices", "description": "List a customer's invoices.", "input_schema": {"type": "object"}}]);
    let messages = json!([{"role": "user", "content": "What is the weather like?"}]);
    let counted = common::post(
        &app,
        "/v1/messages/count_tokens",
        json!({"model": "m", "messages": messages, "tools": tools, "system": "Be brief."}),
    )
    .await;
    let used = common::post(&app, MESSAGES, json!({"model": "m", "max_tokens": 50, "messages": messages, "tools": tools, "system": "Be brief."})).await;
    assert_eq!(
        counted.json()["input_tokens"],
        used.json()["usage"]["input_tokens"]
    );
    let r = common::post(
        &app,
        MESSAGES,
        json!({"model": "m", "max_tokens": 50, "messages": messages, "tools": [5]}),
    )
    .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn a_stream_cut_mid_body_is_an_error_for_the_test_client() {
    // The test client must not turn a failed body into an empty or partial answer.
    let app = common::app().await;
    let body =
        json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = common::try_call(
        &app,
        "POST",
        "/v1/chat/completions",
        &[("x-tenant-id", "cut"), ("content-type", "application/json")],
        body.to_string(),
    )
    .await;
    assert!(r.is_err(), "a cut stream surfaces as an error");
    // The same request to a healthy tenant collects in full.
    let r = common::try_call(
        &app,
        "POST",
        "/v1/chat/completions",
        &[
            ("x-tenant-id", "shop"),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
    .expect("a whole stream");
    assert!(
        r.text().trim_end().ends_with("data: [DONE]"),
        "{}",
        r.text()
    );
}

/// The value of the first sample of `name` whose labels contain every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.split_once("} ")?;
        labels
            .iter()
            .all(|want| set.split(',').any(|l| l == *want))
            .then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn a_stream_is_timed_to_its_end() {
    let app = common::app().await;
    let admin = format!("Bearer {}", common::ADMIN);
    // 16 characters in 4-character events with 60 ms between them: at least 180 ms of body.
    let r = common::call(
        &app,
        "POST",
        "/public/tenants",
        &[
            ("authorization", &admin),
            ("content-type", "application/json"),
        ],
        json!({"tenant_id": "slow", "state": {}, "visibility": "global",
               "settings": {"stream_chunk_chars": 4, "stream_chunk_delay_ms": 60},
               "default_response": "0123456789abcdef"})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let body =
        json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let headers = [
        ("x-tenant-id", "slow"),
        ("content-type", "application/json"),
    ];
    let r = common::call(
        &app,
        "POST",
        "/v1/chat/completions",
        &headers,
        body.to_string(),
    )
    .await;
    assert!(r.text().contains("data: [DONE]"));
    // A plain answer is not a stream: it is only in the request histogram.
    let plain = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let r = common::call(
        &app,
        "POST",
        "/v1/chat/completions",
        &headers,
        plain.to_string(),
    )
    .await;
    assert_eq!(r.status, 200);

    let m = common::call(&app, "GET", "/metrics", &[], "").await.text();
    let labels = [
        r#"route="/v1/chat/completions""#,
        r#"surface="llm""#,
        r#"tenant="slow""#,
    ];
    let stream_count = sample(&m, "understudy_http_stream_duration_seconds_count", &labels);
    let stream_sum = sample(&m, "understudy_http_stream_duration_seconds_sum", &labels);
    let headers_count = sample(
        &m,
        "understudy_http_request_duration_seconds_count",
        &labels,
    );
    let headers_sum = sample(&m, "understudy_http_request_duration_seconds_sum", &labels);
    assert_eq!(stream_count, Some(1.0), "{m}");
    assert_eq!(headers_count, Some(2.0), "{m}");
    let (stream_sum, headers_sum) = (stream_sum.unwrap(), headers_sum.unwrap());
    assert!(
        stream_sum >= 0.18,
        "the stream histogram covers the body's three 60 ms gaps: {stream_sum}"
    );
    assert!(
        stream_sum > headers_sum,
        "the headers of both requests came before the stream's body ended: {headers_sum} vs {stream_sum}"
    );
}

/// A request of a valid shape with random contents, for one of the three generation routes.
#[derive(Debug, Clone)]
struct ShapedRequest {
    path: &'static str,
    stream: bool,
    n: u32,
    body: serde_json::Value,
}

/// Message text: free text (any printable characters) with, at times, a fixture keyword in it so
/// that scenarios (text, tool, JSON) match as well as the default answer.
fn arb_text() -> impl Strategy<Value = String> {
    (
        "\\PC{0,60}",
        prop::option::of(prop::sample::select(vec![
            "invoice", "INVOICE", "summary", "invoices", "refund",
        ])),
        "\\PC{0,20}",
    )
        .prop_map(|(a, k, b)| format!("{a}{}{b}", k.map(|k| format!(" {k} ")).unwrap_or_default()))
}

/// Prior turns, ending on a user turn (every provider's last turn before an answer).
fn arb_turns(roles: &'static [&'static str]) -> impl Strategy<Value = Vec<(String, String)>> {
    (
        prop::collection::vec((prop::sample::select(roles), arb_text()), 0..4),
        arb_text(),
    )
        .prop_map(|(before, last)| {
            let mut turns: Vec<(String, String)> = before
                .into_iter()
                .map(|(r, t)| (r.to_string(), t))
                .collect();
            turns.push(("user".into(), last));
            turns
        })
}

fn arb_shaped_request() -> impl Strategy<Value = ShapedRequest> {
    let chat = (
        arb_turns(&["system", "developer", "user", "assistant"]),
        1u32..=3,
        prop::option::of(1i64..=4096),
        any::<bool>(),
        any::<bool>(),
        prop::sample::select(vec!["gpt-4o", "gpt-4o-mini", "anything"]),
    )
        .prop_map(|(turns, n, max_tokens, stream, tools, model)| {
            let messages: Vec<_> = turns
                .iter()
                .map(|(role, text)| json!({"role": role, "content": text}))
                .collect();
            let mut body = json!({"model": model, "messages": messages, "n": n, "stream": stream});
            if let Some(m) = max_tokens {
                body["max_tokens"] = m.into();
            }
            if tools {
                body["tools"] = json!([{"type": "function", "function": {"name": "get_invoices", "description": "List invoices.", "parameters": {"type": "object", "properties": {"customer_id": {"type": "string"}}}}}]);
            }
            ShapedRequest { path: CHAT, stream, n, body }
        });
    let messages = (
        arb_turns(&["user", "assistant"]),
        prop::option::of(arb_text()),
        1i64..=4096,
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(turns, system, max_tokens, stream, tools)| {
            let messages: Vec<_> = turns
                .iter()
                .map(|(role, text)| json!({"role": role, "content": text}))
                .collect();
            let mut body = json!({"model": "claude-sonnet-5-5", "max_tokens": max_tokens, "messages": messages, "stream": stream});
            if let Some(s) = system {
                body["system"] = s.into();
            }
            if tools {
                body["tools"] = json!([{"name": "get_invoices", "description": "List invoices.", "input_schema": {"type": "object", "properties": {"customer_id": {"type": "string"}}}}]);
            }
            ShapedRequest { path: MESSAGES, stream, n: 1, body }
        });
    let responses = (
        arb_turns(&["system", "developer", "user", "assistant"]),
        any::<bool>(),
        prop::option::of(16i64..=4096),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(turns, as_string, max_tokens, stream, tools)| {
            let input = if as_string {
                json!(turns.last().unwrap().1)
            } else {
                turns
                    .iter()
                    .map(|(role, text)| json!({"type": "message", "role": role, "content": text}))
                    .collect()
            };
            let mut body = json!({"model": "gpt-4o", "input": input, "stream": stream});
            if let Some(m) = max_tokens {
                body["max_output_tokens"] = m.into();
            }
            if tools {
                body["tools"] = json!([{"type": "function", "name": "get_invoices", "description": "List invoices.", "parameters": {"type": "object", "properties": {"customer_id": {"type": "string"}}}}]);
            }
            ShapedRequest { path: "/v1/responses", stream, n: 1, body }
        });
    prop_oneof![chat, messages, responses]
}

/// The events of an SSE body: `(event name, data)` pairs.
fn sse_events(body: &str) -> Vec<(Option<String>, String)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut event = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push(d);
                }
            }
            (event, data.join("\n"))
        })
        .collect()
}

/// What must hold for any answer to a valid-shaped request: 200 (these answers are small, far
/// under every limit), the provider's shape, and a stream that ends with its terminal event with
/// every event's data parseable.
fn check_shaped_answer(req: &ShapedRequest, r: &common::Reply) -> Result<(), TestCaseError> {
    let ctx = format!("{} {} → {} {}", req.path, req.body, r.status, r.text());
    prop_assert_eq!(r.status.as_u16(), 200, "{}", ctx);
    if req.stream {
        let ct = r
            .headers
            .get("content-type")
            .map(|v| v.to_str().unwrap_or(""));
        prop_assert!(
            ct.is_some_and(|c| c.starts_with("text/event-stream")),
            "{}",
            ctx
        );
        let events = sse_events(&r.text());
        prop_assert!(!events.is_empty(), "{}", ctx);
        let (last_event, last_data) = events.last().unwrap().clone();
        for (_, data) in &events[..events.len() - 1] {
            prop_assert!(
                serde_json::from_str::<serde_json::Value>(data).is_ok(),
                "event data {} in {}",
                data,
                ctx
            );
        }
        match req.path {
            CHAT => prop_assert_eq!(last_data.as_str(), "[DONE]", "{}", ctx),
            MESSAGES => prop_assert_eq!(last_event.as_deref(), Some("message_stop"), "{}", ctx),
            _ => prop_assert!(
                matches!(
                    last_event.as_deref(),
                    Some("response.completed" | "response.incomplete")
                ),
                "{}",
                ctx
            ),
        }
        return Ok(());
    }
    let v = r.json();
    match req.path {
        CHAT => {
            prop_assert_eq!(&v["object"], "chat.completion", "{}", ctx);
            let choices = v["choices"].as_array().cloned().unwrap_or_default();
            prop_assert_eq!(choices.len(), req.n as usize, "{}", ctx);
            for c in &choices {
                prop_assert_eq!(&c["message"]["role"], "assistant", "{}", ctx);
                prop_assert!(c["finish_reason"].is_string(), "{}", ctx);
                let m = &c["message"];
                prop_assert!(
                    m["content"].is_string() || m["tool_calls"].is_array(),
                    "{}",
                    ctx
                );
            }
            prop_assert!(v["usage"]["total_tokens"].is_u64(), "{}", ctx);
        }
        MESSAGES => {
            prop_assert_eq!(&v["type"], "message", "{}", ctx);
            prop_assert_eq!(&v["role"], "assistant", "{}", ctx);
            prop_assert!(v["content"].is_array(), "{}", ctx);
            prop_assert!(v["stop_reason"].is_string(), "{}", ctx);
            prop_assert!(v["usage"]["output_tokens"].is_u64(), "{}", ctx);
        }
        _ => {
            prop_assert_eq!(&v["object"], "response", "{}", ctx);
            prop_assert!(
                matches!(v["status"].as_str(), Some("completed" | "incomplete")),
                "{}",
                ctx
            );
            prop_assert!(
                v["output"].as_array().is_some_and(|o| !o.is_empty()),
                "{}",
                ctx
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    /// Valid-shaped requests with random contents (text, roles, n, max_tokens, stream, tools):
    /// generation, matching and rendering run on every case, and each answer holds its shape.
    #[test]
    fn valid_shaped_requests_get_well_formed_answers(req in arb_shaped_request()) {
        let rt = runtime();
        let r = rt.block_on(async {
            let app = common::app().await;
            common::call(&app, "POST", req.path, &[("x-tenant-id", "shop"), ("content-type", "application/json")], req.body.to_string()).await
        });
        check_shaped_answer(&req, &r)?;
    }
}
