//! Golden files pin every wire format: JSON bodies and SSE event sequences, with random ids and
//! timestamps normalised. `UPDATE_GOLDEN=1 cargo test --test golden` rewrites them after an
//! intended change (review the diff).

mod common;

use serde_json::json;

fn normalise(text: &str) -> String {
    let ids = regex::Regex::new(r"\b(chatcmpl-|msg_|resp_|call_|fc_|toolu_|req_)[A-Za-z0-9]{8,}")
        .unwrap();
    let times = regex::Regex::new(r#""(created|created_at)":\s?\d+"#).unwrap();
    let text = ids.replace_all(text, "${1}ID");
    times.replace_all(&text, "\"$1\":0").into_owned()
}

fn check(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    let actual = normalise(actual);
    // Only `1` rewrites: `UPDATE_GOLDEN=0` (or any other value) must still compare.
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("missing golden file {name}: run with UPDATE_GOLDEN=1"));
    assert!(
        expected == actual,
        "{name} differs from its golden file:\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

fn pretty(r: &common::Reply) -> String {
    serde_json::to_string_pretty(&r.json()).unwrap() + "\n"
}

const TOOLS_OPENAI: &str =
    r#"[{"type":"function","function":{"name":"get_invoices","parameters":{"type":"object"}}}]"#;

#[tokio::test]
async fn chat_completions() {
    let app = common::app().await;
    let user = json!([{"role": "user", "content": "Show my invoice"}]);
    let r = common::post(
        &app,
        "/v1/chat/completions",
        json!({"model": "gpt-4o", "messages": user}),
    )
    .await;
    check("chat_text.json", &pretty(&r));
    let r = common::post(
        &app,
        "/v1/chat/completions",
        json!({"model": "gpt-4o", "messages": user, "stream": true, "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(
        r.headers["content-type"],
        "text/event-stream; charset=utf-8"
    );
    check("chat_text_usage.sse", &r.text());
    let tools: serde_json::Value = serde_json::from_str(TOOLS_OPENAI).unwrap();
    let r = common::post(
        &app,
        "/v1/chat/completions",
        json!({"model": "gpt-4o", "messages": user, "tools": tools}),
    )
    .await;
    check("chat_tool.json", &pretty(&r));
    let r = common::post(
        &app,
        "/v1/chat/completions",
        json!({"model": "gpt-4o", "messages": user, "tools": tools, "stream": true}),
    )
    .await;
    check("chat_tool.sse", &r.text());
    let r = common::post(
        &app,
        "/v1/chat/completions",
        json!({"model": "gpt-4o", "messages": user, "max_tokens": 2, "n": 2}),
    )
    .await;
    check("chat_length_n2.json", &pretty(&r));
}

#[tokio::test]
async fn anthropic_messages() {
    let app = common::app().await;
    let user = json!([{"role": "user", "content": [{"type": "text", "text": "Show my invoice"}]}]);
    let base = json!({"model": "claude-sonnet-5-5", "max_tokens": 1024, "messages": user, "system": "Be brief."});
    let r = common::post(&app, "/v1/messages", base.clone()).await;
    check("messages_text.json", &pretty(&r));
    let mut s = base.clone();
    s["stream"] = json!(true);
    check(
        "messages_text.sse",
        &common::post(&app, "/v1/messages", s.clone()).await.text(),
    );
    let tools = json!([{"name": "get_invoices", "input_schema": {"type": "object"}}]);
    let mut t = base.clone();
    t["tools"] = tools.clone();
    check(
        "messages_tool.json",
        &pretty(&common::post(&app, "/v1/messages", t.clone()).await),
    );
    t["stream"] = json!(true);
    check(
        "messages_tool.sse",
        &common::post(&app, "/v1/messages", t).await.text(),
    );
    let r = common::post(
        &app,
        "/v1/messages/count_tokens",
        json!({"model": "m", "messages": user}),
    )
    .await;
    check("messages_count_tokens.json", &pretty(&r));
}

#[tokio::test]
async fn responses_api() {
    let app = common::app().await;
    let base = json!({"model": "gpt-4o", "input": "Show my invoice", "instructions": "Be brief."});
    check(
        "responses_text.json",
        &pretty(&common::post(&app, "/v1/responses", base.clone()).await),
    );
    let mut s = base.clone();
    s["stream"] = json!(true);
    check(
        "responses_text.sse",
        &common::post(&app, "/v1/responses", s).await.text(),
    );
    let mut t = base.clone();
    t["tools"] =
        json!([{"type": "function", "name": "get_invoices", "parameters": {"type": "object"}}]);
    check(
        "responses_tool.json",
        &pretty(&common::post(&app, "/v1/responses", t.clone()).await),
    );
    t["stream"] = json!(true);
    check(
        "responses_tool.sse",
        &common::post(&app, "/v1/responses", t).await.text(),
    );
}

#[tokio::test]
async fn embeddings_models_and_errors() {
    let app = common::app().await;
    let r = common::post(
        &app,
        "/v1/embeddings",
        json!({"model": "e", "input": ["a", "b"], "dimensions": 3}),
    )
    .await;
    check("embeddings_float.json", &pretty(&r));
    let r = common::post(
        &app,
        "/v1/embeddings",
        json!({"model": "e", "input": "a", "dimensions": 3, "encoding_format": "base64"}),
    )
    .await;
    check("embeddings_base64.json", &pretty(&r));
    let r = common::call(&app, "GET", "/v1/models", &[("x-tenant-id", "shop")], "").await;
    check("models_openai.json", &pretty(&r));
    let r = common::call(
        &app,
        "GET",
        "/v1/models",
        &[("x-tenant-id", "shop"), ("anthropic-version", "2023-06-01")],
        "",
    )
    .await;
    check("models_anthropic.json", &pretty(&r));
    let r = common::post(&app, "/v1/chat/completions", json!({"messages": []})).await;
    check("error_openai_missing_model.json", &pretty(&r));
    let r = common::post(&app, "/v1/messages", json!({"model": "m", "messages": []})).await;
    check("error_anthropic_missing_max_tokens.json", &pretty(&r));
    let r = common::call(
        &app,
        "POST",
        "/v1/chat/completions",
        &[("x-tenant-id", "down")],
        r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
    )
    .await;
    check("error_openai_injected_503.json", &pretty(&r));
}
