//! The async execute API (SPEC §6), in process: credentials and their codes, the manifest,
//! scenario tools and `openai_chat` streamed to the end, request_id idempotency, cancel and
//! cancel_all, call records, chaos, bad input. Across processes (stream and cancel elsewhere,
//! a worker killed mid-call): `execute_processes.rs`.

mod common;

use common::{ADMIN, Reply, app, call, json, mint};
use serde_json::{Value, json};

async fn exec(app: &understudy_gateway::state::App, key: &str, tenant: &str, body: Value) -> Reply {
    let auth = format!("Bearer {key}");
    call(
        app,
        "POST",
        "/mcp/execute",
        &[
            ("authorization", auth.as_str()),
            ("x-tenant-id", tenant),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

async fn get(app: &understudy_gateway::state::App, key: &str, tenant: &str, path: &str) -> Reply {
    let auth = format!("Bearer {key}");
    call(
        app,
        "GET",
        path,
        &[("authorization", auth.as_str()), ("x-tenant-id", tenant)],
        "",
    )
    .await
}

/// The SSE events of a finished stream: (event, data).
fn events(r: &Reply) -> Vec<(String, Value)> {
    let text = r.text();
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event: ") {
                    event = Some(e.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).ok();
                }
            }
            Some((event?, data?))
        })
        .collect()
}

fn code(r: &Reply) -> String {
    r.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn credentials_and_tenants_get_their_codes() {
    let app = app().await;
    let viewer = mint(&app, "viewer", "vic", "viewer", None).await;
    let editor = mint(&app, "unscoped", "ed", "editor", None).await;
    let r = call(&app, "GET", "/mcp/manifest", &[("x-tenant-id", "shop")], "").await;
    assert_eq!((r.status.as_u16(), code(&r)), (401, "AUTH_ERROR".into()));
    let r = get(&app, "usk_nope", "shop", "/mcp/manifest").await;
    assert_eq!((r.status.as_u16(), code(&r)), (401, "AUTH_ERROR".into()));
    let r = get(&app, &viewer, "shop", "/mcp/manifest").await;
    assert_eq!((r.status.as_u16(), code(&r)), (403, "AUTHZ_ERROR".into()));
    // No X-Tenant-ID and no tenant scope on the key.
    let auth = format!("Bearer {editor}");
    let r = call(
        &app,
        "GET",
        "/mcp/manifest",
        &[("authorization", auth.as_str())],
        "",
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (422, "VALIDATION_ERROR".into())
    );
    // A tenant-scoped key names its tenant by itself.
    let scoped = mint(&app, "scoped", "sam", "editor", Some("shop")).await;
    let auth = format!("Bearer {scoped}");
    let r = call(
        &app,
        "GET",
        "/mcp/manifest",
        &[("authorization", auth.as_str())],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    let names: Vec<Value> = r.json()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("get_invoices"), json!("openai_chat")]);
}

#[tokio::test]
async fn tools_run_stream_and_are_kept() {
    let app = app().await;
    let r = exec(
        &app,
        ADMIN,
        "shop",
        json!({"tool": "get_invoices", "input": {}}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["status"], "started");
    let id = r.json()["call_id"].as_str().unwrap().to_string();
    let s = get(&app, ADMIN, "shop", &format!("/mcp/stream/{id}")).await;
    assert_eq!(
        s.headers["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let ev = events(&s);
    assert_eq!(ev.last().unwrap().0, "final");
    assert_eq!(ev.last().unwrap().1["text"], r#"{"invoices":["INV-1"]}"#);
    let c = get(&app, ADMIN, "shop", &format!("/mcp/calls/{id}"))
        .await
        .json();
    assert_eq!(
        (c["status"].clone(), c["tool"].clone()),
        (json!("finished"), json!("get_invoices"))
    );
    assert_eq!(c["result"], r#"{"invoices":["INV-1"]}"#);
    // The model: partial events that add up to the final text.
    let r = exec(&app, ADMIN, "shop", json!({"tool": "openai_chat", "input": {"messages": [{"role": "user", "content": "invoice please"}]}})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["call_id"].as_str().unwrap().to_string();
    let ev = events(&get(&app, ADMIN, "shop", &format!("/mcp/stream/{id}")).await);
    let partial: String = ev
        .iter()
        .filter(|(e, _)| e == "partial")
        .map(|(_, d)| d["text"].as_str().unwrap().to_string())
        .collect();
    let (last, data) = ev.last().unwrap();
    assert_eq!(last, "final");
    assert_eq!(data["text"], "Here are your invoices.");
    assert_eq!(partial, "Here are your invoices.");
    assert!(ev.len() > 2, "streamed in pieces: {ev:?}");
    // Streams replay from the start after the end too.
    let again = events(&get(&app, ADMIN, "shop", &format!("/mcp/stream/{id}")).await);
    assert_eq!(again, ev);
}

#[tokio::test]
async fn a_request_id_is_one_call_and_bad_input_is_refused() {
    let app = app().await;
    let body = json!({"tool": "get_invoices", "input": {"x": 1}, "request_id": "req-123"});
    let a = exec(&app, ADMIN, "shop", body.clone()).await.json();
    let b = exec(&app, ADMIN, "shop", body).await.json();
    assert_eq!(a["call_id"], b["call_id"]);
    let r = exec(
        &app,
        ADMIN,
        "shop",
        json!({"tool": "get_invoices", "input": {"x": 2}, "request_id": "req-123"}),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), code(&r)),
        (422, "VALIDATION_ERROR".into())
    );
    for (body, status, want) in [
        (json!({"tool": "nope"}), 404, "TOOL_NOT_FOUND"),
        (
            json!({"tool": "get_invoices", "surprise": 1}),
            422,
            "VALIDATION_ERROR",
        ),
        (
            json!({"tool": "get_invoices", "input": [1]}),
            422,
            "VALIDATION_ERROR",
        ),
        (json!({"input": {}}), 422, "VALIDATION_ERROR"),
        (
            json!({"tool": "get_invoices", "request_id": "a\nb"}),
            422,
            "VALIDATION_ERROR",
        ),
        (
            json!({"tool": "openai_chat", "input": {"messages": "hi"}}),
            422,
            "VALIDATION_ERROR",
        ),
    ] {
        let r = exec(&app, ADMIN, "shop", body.clone()).await;
        assert_eq!(
            (r.status.as_u16(), code(&r)),
            (status, want.to_string()),
            "{body}"
        );
    }
    for path in [
        "/mcp/calls/not-a-call",
        "/mcp/calls/a:b",
        "/mcp/stream/not-a-call",
    ] {
        let r = get(&app, ADMIN, "shop", path).await;
        assert_eq!(
            (r.status.as_u16(), code(&r)),
            (404, "CALL_NOT_FOUND".into()),
            "{path}"
        );
    }
    // A call is its tenant's: another tenant does not see it.
    let id = a["call_id"].as_str().unwrap();
    let r = get(&app, ADMIN, "down", &format!("/mcp/calls/{id}")).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn cancel_ends_a_running_call_and_cancel_all_the_callers() {
    let app = app().await;
    let r = json(
        &app,
        "POST",
        "/public/tenants",
        Some(ADMIN),
        json!({
        "tenant_id": "slow", "visibility": "global",
        "settings": {"stream_chunk_chars": 1, "stream_chunk_delay_ms": 200},
        "default_response": "a slow answer that takes a while to stream"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let key = mint(&app, "canceller", "cara", "editor", None).await;
    let chat =
        json!({"tool": "openai_chat", "input": {"messages": [{"role": "user", "content": "go"}]}});
    let id = exec(&app, &key, "slow", chat.clone()).await.json()["call_id"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = format!("Bearer {key}");
    let r = call(
        &app,
        "POST",
        &format!("/mcp/cancel/{id}"),
        &[("authorization", auth.as_str()), ("x-tenant-id", "slow")],
        "",
    )
    .await;
    assert_eq!(r.json(), json!({"call_id": id, "status": "cancelled"}));
    let ev = events(&get(&app, &key, "slow", &format!("/mcp/stream/{id}")).await);
    assert_eq!(ev.last().unwrap().0, "cancelled");
    // Cancelling again reports the call's end; an ended call stays as it ended.
    let r = call(
        &app,
        "POST",
        &format!("/mcp/cancel/{id}"),
        &[("authorization", auth.as_str()), ("x-tenant-id", "slow")],
        "",
    )
    .await;
    assert_eq!(r.json()["status"], "cancelled");
    let done = exec(&app, &key, "shop", json!({"tool": "get_invoices"}))
        .await
        .json()["call_id"]
        .as_str()
        .unwrap()
        .to_string();
    let _ = get(&app, &key, "shop", &format!("/mcp/stream/{done}")).await;
    for _ in 0..2 {
        exec(&app, &key, "slow", chat.clone()).await;
    }
    let r = call(
        &app,
        "POST",
        "/mcp/cancel_all",
        &[("authorization", auth.as_str()), ("x-tenant-id", "slow")],
        "",
    )
    .await;
    assert_eq!(r.json(), json!({"cancelled": 2}));
    let c = get(&app, &key, "shop", &format!("/mcp/calls/{done}"))
        .await
        .json();
    assert_eq!(c["status"], "finished");
}

#[tokio::test]
async fn chaos_refuses_the_model_and_fails_tools() {
    let app = app().await;
    let r = exec(
        &app,
        ADMIN,
        "down",
        json!({"tool": "openai_chat", "input": {"messages": [{"role": "user", "content": "hi"}]}}),
    )
    .await;
    assert_eq!((r.status.as_u16(), code(&r)), (502, "OPENAI_ERROR".into()));
}

#[tokio::test]
async fn a_caller_runs_at_most_a_hundred_calls_at_once() {
    let app = app().await;
    let r = json(
        &app,
        "POST",
        "/public/tenants",
        Some(ADMIN),
        json!({
        "tenant_id": "busy", "visibility": "global",
        "settings": {"stream_chunk_chars": 1, "stream_chunk_delay_ms": 1000},
        "default_response": "a long, slow answer"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let key = mint(&app, "busy-key", "bea", "editor", None).await;
    let chat =
        json!({"tool": "openai_chat", "input": {"messages": [{"role": "user", "content": "go"}]}});
    for i in 0..100 {
        let r = exec(&app, &key, "busy", chat.clone()).await;
        assert_eq!(r.status, 200, "call {i}: {}", r.text());
    }
    let r = exec(&app, &key, "busy", chat.clone()).await;
    assert_eq!((r.status.as_u16(), code(&r)), (429, "RATE_LIMITED".into()));
    // Another caller is not affected; ended calls free their places.
    let other = mint(&app, "other-key", "otto", "editor", None).await;
    assert_eq!(exec(&app, &other, "busy", chat.clone()).await.status, 200);
    let auth = format!("Bearer {key}");
    let r = call(
        &app,
        "POST",
        "/mcp/cancel_all",
        &[("authorization", auth.as_str()), ("x-tenant-id", "busy")],
        "",
    )
    .await;
    assert_eq!(r.json(), json!({"cancelled": 100}));
    assert_eq!(exec(&app, &key, "busy", chat).await.status, 200);
}
