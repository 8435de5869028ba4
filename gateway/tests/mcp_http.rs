//! MCP over HTTP, in process: every documented refusal in JSON-RPC shape with its status, the
//! revision-specific answers, the sessionless 2026-07-28 envelope, Origin checks, credentials
//! and chaos. The official clients run against real processes in `tests/mcp`.

mod common;

use common::{ADMIN, Reply, app, app_with, call, mint, try_call};
use serde_json::{Value, json};

const JSON: (&str, &str) = ("content-type", "application/json");
const BOTH: (&str, &str) = ("accept", "application/json, text/event-stream");

async fn message(app: &understudy_gateway::state::App, tenant: &str, body: &str) -> Reply {
    call(
        app,
        "POST",
        "/mcp/message",
        &[("x-tenant-id", tenant), JSON],
        body.to_string(),
    )
    .await
}

fn code(r: &Reply) -> i64 {
    r.json()["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("no error: {}", r.text()))
}

async fn initialize(app: &understudy_gateway::state::App, version: &str) -> String {
    let r = call(
        app,
        "POST",
        "/mcp",
        &[("x-tenant-id", "shop"), JSON, BOTH],
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
               "params": {"protocolVersion": version, "capabilities": {}}})
        .to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.headers["mcp-session-id"].to_str().unwrap().to_string()
}

async fn in_session(
    app: &understudy_gateway::state::App,
    sid: &str,
    extra: &[(&str, &str)],
    body: Value,
) -> Reply {
    let mut headers = vec![("x-tenant-id", "shop"), JSON, BOTH, ("mcp-session-id", sid)];
    headers.extend_from_slice(extra);
    call(app, "POST", "/mcp", &headers, body.to_string()).await
}

#[tokio::test]
async fn malformed_messages_get_their_json_rpc_errors() {
    let app = app().await;
    for path in ["/mcp/message", "/mcp"] {
        let r = call(
            &app,
            "POST",
            path,
            &[("x-tenant-id", "shop"), JSON],
            "{not json",
        )
        .await;
        assert_eq!((r.status.as_u16(), code(&r)), (400, -32700), "{path}");
    }
    for bad in [
        r#"{"id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[1]}"#,
        r#"[]"#,
    ] {
        let r = message(&app, "shop", bad).await;
        assert_eq!((r.status.as_u16(), code(&r)), (400, -32600), "{bad}");
    }
    let r = message(
        &app,
        "shop",
        r#"{"jsonrpc":"2.0","id":1,"method":"nope/nope"}"#,
    )
    .await;
    assert_eq!((r.status.as_u16(), code(&r)), (200, -32601));
    let r = message(
        &app,
        "shop",
        r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"missing"}}"#,
    )
    .await;
    assert_eq!(code(&r), -32602);
    assert_eq!(r.json()["id"], "x");
    let r = message(
        &app,
        "shop",
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await;
    assert_eq!(r.status, 202);
    assert!(r.body.is_empty());
    // /mcp/message speaks 2025-03-26: batches are allowed, one reply per request.
    let r = message(
        &app,
        "shop",
        r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/x"},5]"#,
    )
    .await;
    let v = r.json();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["result"], json!({}));
    assert_eq!(v[1]["error"]["code"], -32600);
}

#[tokio::test]
async fn oversized_bodies_and_wrong_methods_are_refused_in_json_rpc_shape() {
    let app = app_with(|o| o.max_body_bytes = 2048).await;
    let big =
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"pad": "x".repeat(4096)}});
    for path in ["/mcp/message", "/mcp"] {
        let r = call(
            &app,
            "POST",
            path,
            &[("x-tenant-id", "shop"), JSON],
            big.to_string(),
        )
        .await;
        assert_eq!((r.status.as_u16(), code(&r)), (413, -32600), "{path}");
    }
    let r = call(&app, "PUT", "/mcp", &[("x-tenant-id", "shop")], "").await;
    assert_eq!(r.status, 405);
    assert!(r.json()["error"]["message"].is_string());
    let r = call(&app, "GET", "/mcp/nope", &[], "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["jsonrpc"], "2.0");
}

#[tokio::test]
async fn sessions_are_required_checked_and_ended() {
    let app = app().await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let r = call(
        &app,
        "POST",
        "/mcp",
        &[("x-tenant-id", "shop"), JSON],
        ping.to_string(),
    )
    .await;
    assert_eq!((r.status.as_u16(), code(&r)), (400, -32600));
    let r = in_session(&app, "not-a-session", &[], ping.clone()).await;
    assert_eq!(r.status, 404);
    let r = in_session(&app, "bad id with spaces", &[], ping.clone()).await;
    assert_eq!(r.status, 404);
    let sid = initialize(&app, "2025-06-18").await;
    let r = in_session(
        &app,
        &sid,
        &[("mcp-protocol-version", "2025-06-18")],
        ping.clone(),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["result"].clone()),
        (200, json!({}))
    );
    // Any supported revision in the header is accepted; an unknown one is refused.
    let r = in_session(
        &app,
        &sid,
        &[("mcp-protocol-version", "2025-03-26")],
        ping.clone(),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = in_session(
        &app,
        &sid,
        &[("mcp-protocol-version", "1999-01-01")],
        ping.clone(),
    )
    .await;
    assert_eq!((r.status.as_u16(), code(&r)), (400, -32022));
    assert_eq!(r.json()["error"]["data"]["requested"], "1999-01-01");
    // 2025-06-18 has no batches.
    let r = in_session(&app, &sid, &[], json!([ping])).await;
    assert_eq!((r.status.as_u16(), code(&r)), (400, -32600));
    // Another tenant does not know the session.
    let r = call(
        &app,
        "POST",
        "/mcp",
        &[("x-tenant-id", "down"), JSON, ("mcp-session-id", &sid)],
        ping.to_string(),
    )
    .await;
    assert_ne!(r.status, 200);
    let del = |sid: String| {
        let app = app.clone();
        async move {
            call(
                &app,
                "DELETE",
                "/mcp",
                &[("x-tenant-id", "shop"), ("mcp-session-id", &sid)],
                "",
            )
            .await
            .status
            .as_u16()
        }
    };
    assert_eq!(del(sid.clone()).await, 204);
    assert_eq!(del(sid.clone()).await, 404);
    let r = in_session(&app, &sid, &[], ping).await;
    assert_eq!(r.status, 404);
    // A 2025-03-26 session takes batches.
    let old = initialize(&app, "2025-03-26").await;
    let r = in_session(
        &app,
        &old,
        &[],
        json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}]),
    )
    .await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn validation_errors_follow_the_negotiated_revision() {
    let app = app().await;
    // A tool with a schema, added through the API to an API tenant.
    let r = common::json(
        &app,
        "POST",
        "/public/tenants",
        Some(ADMIN),
        json!({"tenant_id": "schemas", "visibility": "global"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = common::json(
        &app,
        "POST",
        "/public/tenants/schemas/scenarios",
        Some(ADMIN),
        json!({"tool_name": "weather", "tool_description": "w",
               "tool_input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
               "tool_output_schema": {"type": "object"},
               "tool_data": {"t": 21}}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let call_tool = |version: &'static str, args: Value| {
        let app = app.clone();
        async move {
            let init = call(
                &app,
                "POST",
                "/mcp",
                &[("x-tenant-id", "schemas"), JSON],
                json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": version}}).to_string(),
            )
            .await;
            let sid = init.headers["mcp-session-id"].to_str().unwrap().to_string();
            let list = call(
                &app,
                "POST",
                "/mcp",
                &[("x-tenant-id", "schemas"), JSON, ("mcp-session-id", &sid)],
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string(),
            )
            .await
            .json();
            let res = call(
                &app,
                "POST",
                "/mcp",
                &[("x-tenant-id", "schemas"), JSON, ("mcp-session-id", &sid)],
                json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "weather", "arguments": args}}).to_string(),
            )
            .await
            .json();
            (list["result"]["tools"][0].clone(), res)
        }
    };
    let (tool, res) = call_tool("2025-06-18", json!({"city": 5})).await;
    assert_eq!(res["error"]["code"], -32602);
    assert!(
        res["error"]["data"]["violations"][0]
            .as_str()
            .unwrap()
            .contains("/city")
    );
    assert_eq!(tool["outputSchema"], json!({"type": "object"}));
    let (_, res) = call_tool("2025-11-25", json!({"city": 5})).await;
    assert_eq!(res["result"]["isError"], true);
    assert!(
        res["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("/city")
    );
    let (_, res) = call_tool("2025-11-25", json!({"city": "Oslo"})).await;
    assert_eq!(res["result"]["structuredContent"], json!({"t": 21}));
    // Before 2025-06-18: no outputSchema listed; structuredContent is sent anyway (SPEC §4).
    let (tool, res) = call_tool("2025-03-26", json!({"city": "Oslo"})).await;
    assert!(tool.get("outputSchema").is_none());
    assert_eq!(res["result"]["structuredContent"], json!({"t": 21}));
    assert_eq!(res["result"]["content"][0]["text"], r#"{"t":21}"#);
}

fn modern(method: &str, name: Option<&str>) -> Vec<(String, String)> {
    let mut h = vec![
        ("x-tenant-id".to_string(), "shop".to_string()),
        ("content-type".into(), "application/json".into()),
        ("mcp-protocol-version".into(), "2026-07-28".into()),
        ("mcp-method".into(), method.into()),
    ];
    if let Some(n) = name {
        h.push(("mcp-name".into(), n.into()));
    }
    h
}

async fn post_modern(
    app: &understudy_gateway::state::App,
    headers: &[(String, String)],
    body: Value,
) -> Reply {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    call(app, "POST", "/mcp", &h, body.to_string()).await
}

#[tokio::test]
async fn the_sessionless_revision_checks_its_envelope() {
    let app = app().await;
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {}});
    let r = post_modern(
        &app,
        &modern("server/discover", None),
        json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}}),
    )
    .await;
    let d = r.json()["result"].clone();
    assert!(
        d["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-07-28"))
    );
    assert_eq!(
        (d["resultType"].clone(), d["ttlMs"].clone()),
        (json!("complete"), json!(0))
    );
    assert_eq!(
        d["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "understudy"
    );
    assert!(r.headers.get("mcp-session-id").is_none());

    let r = post_modern(
        &app,
        &modern("tools/call", Some("get_invoices")),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "get_invoices", "arguments": {}, "_meta": meta}}),
    )
    .await;
    assert_eq!(r.json()["result"]["resultType"], "complete");
    assert_eq!(
        r.json()["result"]["structuredContent"],
        json!({"invoices": ["INV-1"]})
    );
    // No _meta → 400 -32602; a header that does not match the body → 400 -32020.
    let r = post_modern(
        &app,
        &modern("tools/list", None),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list"}),
    )
    .await;
    assert_eq!((r.status.as_u16(), code(&r)), (400, -32602));
    let r = post_modern(
        &app,
        &modern("tools/call", Some("other")),
        json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
               "params": {"name": "get_invoices", "_meta": meta}}),
    )
    .await;
    assert_eq!((r.status.as_u16(), code(&r)), (400, -32020));
    // Removed methods and unknown ones → 404 -32601.
    for m in ["initialize", "ping", "nope"] {
        let r = post_modern(
            &app,
            &modern(m, None),
            json!({"jsonrpc": "2.0", "id": 5, "method": m, "params": {"_meta": meta}}),
        )
        .await;
        assert_eq!((r.status.as_u16(), code(&r)), (404, -32601), "{m}");
    }
    // No GET or DELETE in this revision.
    let r = call(
        &app,
        "GET",
        "/mcp",
        &[
            ("x-tenant-id", "shop"),
            ("mcp-protocol-version", "2026-07-28"),
            ("accept", "text/event-stream"),
        ],
        "",
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.headers["allow"], "POST");
}

#[tokio::test]
async fn origins_credentials_and_browsers() {
    let app = app_with(|o| o.mcp_allowed_origins = vec!["https://inspector.example".into()]).await;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let with_origin = |origin: &'static str, host: &'static str| {
        let app = app.clone();
        let ping = ping.clone();
        async move {
            call(
                &app,
                "POST",
                "/mcp/message",
                &[
                    ("x-tenant-id", "shop"),
                    JSON,
                    ("origin", origin),
                    ("host", host),
                ],
                ping,
            )
            .await
            .status
            .as_u16()
        }
    };
    assert_eq!(
        with_origin("http://evil.example", "127.0.0.1:8080").await,
        403
    );
    assert_eq!(
        with_origin("http://127.0.0.1:8080", "127.0.0.1:8080").await,
        200
    );
    assert_eq!(
        with_origin("https://inspector.example", "127.0.0.1:8080").await,
        200
    );

    // A private tenant: 401 with the protected-resource metadata, 403 for another identity.
    let alice = mint(&app, "alice-key", "alice", "editor", None).await;
    let bob = mint(&app, "bob-key", "bob", "editor", None).await;
    let r = common::json(
        &app,
        "POST",
        "/public/tenants",
        Some(&alice),
        json!({"tenant_id": "alices"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = call(
        &app,
        "POST",
        "/mcp/message",
        &[("x-tenant-id", "alices"), JSON, ("host", "gw.test")],
        ping.clone(),
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.headers["www-authenticate"],
        "Bearer realm=\"understudy\", resource_metadata=\"http://gw.test/.well-known/oauth-protected-resource\""
    );
    assert_eq!(r.json()["jsonrpc"], "2.0");
    let bearer = |k: &str| format!("Bearer {k}");
    let b = bearer(&bob);
    let r = call(
        &app,
        "POST",
        "/mcp/message",
        &[("x-tenant-id", "alices"), JSON, ("authorization", &b)],
        ping.clone(),
    )
    .await;
    assert_eq!(r.status, 403);
    let a = bearer(&alice);
    let r = call(
        &app,
        "POST",
        "/mcp/message",
        &[("x-tenant-id", "alices"), JSON, ("authorization", &a)],
        ping.clone(),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = call(
        &app,
        "GET",
        "/.well-known/oauth-protected-resource",
        &[("host", "gw.test")],
        "",
    )
    .await;
    assert_eq!(r.json()["resource"], "http://gw.test");
    let r = call(
        &app,
        "GET",
        "/.well-known/oauth-protected-resource/t/shop/mcp",
        &[("host", "gw.test")],
        "",
    )
    .await;
    assert_eq!(r.json()["resource"], "http://gw.test/t/shop/mcp");

    // A browser at / goes to the portal; an MCP client's POST / is the MCP endpoint.
    let r = call(&app, "GET", "/", &[("accept", "text/html")], "").await;
    assert_eq!(
        (r.status.as_u16(), r.headers["location"].to_str().unwrap()),
        (302, "/portal/")
    );
    let r = call(
        &app,
        "POST",
        "/",
        &[("x-tenant-id", "shop"), JSON],
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.headers.contains_key("mcp-session-id"));
}

#[tokio::test]
async fn chaos_answers_with_the_status_and_a_json_rpc_body() {
    let app = app().await;
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let r = message(&app, "down", ping).await;
    assert_eq!((r.status.as_u16(), code(&r)), (503, -32603));
    let r = call(&app, "GET", "/mcp/sse", &[("x-tenant-id", "down")], "").await;
    assert_eq!(r.status, 503);
    // stream_cut: the connection closes before a response.
    let cut = try_call(
        &app,
        "POST",
        "/mcp/message",
        &[("x-tenant-id", "cut"), JSON],
        ping,
    )
    .await;
    assert!(cut.is_err(), "a cut answer never completes");
    // One SSE event when the client accepts event streams on /mcp/message.
    let r = call(
        &app,
        "POST",
        "/mcp/message",
        &[
            ("x-tenant-id", "shop"),
            JSON,
            ("accept", "text/event-stream"),
        ],
        ping,
    )
    .await;
    assert_eq!(
        r.headers["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(
        r.text(),
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"
    );
}

#[tokio::test]
async fn a_key_of_one_tenant_never_reaches_another_tenants_tools_or_sessions() {
    let app = app().await;
    let alice = mint(&app, "alice-scoped", "alice", "editor", None).await;
    let bob = mint(&app, "bob-key", "bob", "editor", None).await;
    for (key, tenant, tool) in [(&alice, "alices", "alice_tool"), (&bob, "bobs", "bob_tool")] {
        let r = common::json(
            &app,
            "POST",
            "/public/tenants",
            Some(key),
            json!({"tenant_id": tenant}),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text());
        let r = common::json(
            &app,
            "POST",
            &format!("/public/tenants/{tenant}/scenarios"),
            Some(key),
            json!({"tool_name": tool, "tool_description": "secret", "tool_data": {"owner": tenant}}),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let a = format!("Bearer {alice}");
    let b = format!("Bearer {bob}");
    let post = |tenant: &'static str, auth: String, sid: Option<String>, body: Value| {
        let app = app.clone();
        async move {
            let mut h = vec![
                ("x-tenant-id", tenant),
                JSON,
                ("authorization", auth.as_str()),
            ];
            if let Some(s) = &sid {
                h.push(("mcp-session-id", s.as_str()));
            }
            call(&app, "POST", "/mcp", &h, body.to_string()).await
        }
    };
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}});
    let r = post("alices", a.clone(), None, init.clone()).await;
    let alice_sid = r.headers["mcp-session-id"].to_str().unwrap().to_string();
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    let steal =
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "bob_tool"}});
    // Alice's key on Bob's tenant: refused before anything is dispatched.
    let r = post("bobs", a.clone(), None, init.clone()).await;
    assert_eq!(r.status, 403);
    // Bob's own session cannot reach Alice's session or tools, whatever ids it sends.
    let r = post("bobs", b.clone(), Some(alice_sid.clone()), list.clone()).await;
    assert_eq!(r.status, 404);
    let r = post("alices", b.clone(), Some(alice_sid.clone()), list.clone()).await;
    assert_eq!(r.status, 403);
    // In Alice's session, Bob's tool does not exist.
    let r = post("alices", a.clone(), Some(alice_sid.clone()), steal).await;
    assert_eq!(code(&r), -32602);
    let r = post("alices", a.clone(), Some(alice_sid.clone()), list).await;
    let names: Vec<Value> = r.json()["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("alice_tool")]);
    // The legacy transport: Alice's session id posted for Bob's tenant is unknown there.
    let r = call(
        &app,
        "POST",
        &format!("/mcp/message?sessionId={alice_sid}"),
        &[("x-tenant-id", "bobs"), JSON, ("authorization", b.as_str())],
        json!({"jsonrpc": "2.0", "id": 3, "method": "ping"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn an_answer_sent_before_the_body_was_read_closes_the_connection() {
    let app = app().await;
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    // Refused before the body is read (unknown tenant, chaos): the client is told the
    // connection closes, so it does not send its next request on it.
    for tenant in ["no_such_tenant", "down"] {
        let r = message(&app, tenant, ping).await;
        assert!(r.status.is_client_error() || r.status.is_server_error());
        assert_eq!(r.headers["connection"], "close", "{tenant}");
    }
    // Answered after reading the body: the connection stays open.
    let r = message(&app, "shop", ping).await;
    assert_eq!(r.status, 200);
    assert!(r.headers.get("connection").is_none());
}

#[tokio::test]
async fn what_a_client_sends_never_grows_what_is_kept_or_echoed() {
    let app = app().await;
    // An unknown tool or method named with 100 KB is echoed in a line, not copied.
    let long = "x".repeat(100_000);
    for body in [
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": long}}),
        json!({"jsonrpc": "2.0", "id": 1, "method": long}),
        json!({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": long}}),
    ] {
        let r = message(&app, "shop", &body.to_string()).await;
        assert!(r.body.len() < 1_000, "{} bytes", r.body.len());
    }
    // A tenant holds at most MAX_SESSIONS_PER_TENANT live sessions; an ended one frees a place.
    let max = understudy_core::sessions::MAX_SESSIONS_PER_TENANT;
    let mut last = String::new();
    for _ in 0..max {
        last = initialize(&app, "2025-11-25").await;
    }
    let r = call(
        &app,
        "POST",
        "/mcp",
        &[("x-tenant-id", "shop"), JSON],
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}).to_string(),
    )
    .await;
    assert_eq!((r.status.as_u16(), code(&r)), (429, -32000));
    let r = call(&app, "GET", "/mcp/sse", &[("x-tenant-id", "shop")], "").await;
    assert_eq!(r.status, 429, "legacy sessions count too");
    let r = call(
        &app,
        "DELETE",
        "/mcp",
        &[("x-tenant-id", "shop"), ("mcp-session-id", &last)],
        "",
    )
    .await;
    assert_eq!(r.status, 204);
    initialize(&app, "2025-11-25").await;
}

#[tokio::test]
async fn unsupported_versions_on_get_and_delete_are_400_and_change_nothing() {
    let app = app().await;
    let sid = initialize(&app, "2025-11-25").await;
    for method in ["GET", "DELETE"] {
        let r = call(
            &app,
            method,
            "/mcp",
            &[
                ("x-tenant-id", "shop"),
                ("accept", "text/event-stream"),
                ("mcp-session-id", &sid),
                ("mcp-protocol-version", "2099-01-01"),
            ],
            "",
        )
        .await;
        assert_eq!((r.status.as_u16(), code(&r)), (400, -32022), "{method}");
    }
    // The session is still there.
    let r = in_session(
        &app,
        &sid,
        &[],
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    )
    .await;
    assert_eq!(r.status, 200);
}
