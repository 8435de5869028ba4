//! MCP across processes: two gateways on one `redis-server`, raw HTTP and SSE reads. The legacy
//! stream held by one process and its POSTs on the other; a streamable session opened on one
//! and used, resumed (`Last-Event-ID`) and ended on the other; `list_changed` reaching a stream
//! when the tenant's tools change through the other process; sessions never crossing tenants.
//! (The official clients run the same paths in `tests/mcp`.)

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use understudy_e2e::{Gateway, RedisServer, Sse};

const ADMIN: &str = "admin-token-for-mcp-tests";

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_understudy-gateway"))
}

fn fixtures() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/manifests")
        .display()
        .to_string()
}

async fn pair() -> (RedisServer, Gateway, Gateway) {
    let redis = RedisServer::start().expect("redis-server starts");
    let url = redis.url();
    let m = fixtures();
    let args = [
        "--redis-url",
        url.as_str(),
        "--manifests",
        m.as_str(),
        "--admin-token",
        ADMIN,
    ];
    let a = Gateway::start_bin(&bin(), &args).await.expect("gateway a");
    let b = Gateway::start_bin(&bin(), &args).await.expect("gateway b");
    (redis, a, b)
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn rpc(
    gw: &Gateway,
    path: &str,
    tenant: &str,
    session: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut r = client()
        .post(format!("{}{path}", gw.base))
        .header("x-tenant-id", tenant)
        .header("accept", "application/json, text/event-stream")
        .json(&body);
    if let Some(s) = session {
        r = r.header("mcp-session-id", s);
    }
    r.send().await.expect("gateway answers")
}

async fn initialize(gw: &Gateway, tenant: &str) -> String {
    let r = rpc(
        gw,
        "/mcp",
        tenant,
        None,
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["result"]["protocolVersion"], "2025-06-18");
    sid
}

async fn open_stream(gw: &Gateway, tenant: &str, sid: &str, last: Option<&str>) -> Sse {
    let mut r = client()
        .get(format!("{}/mcp", gw.base))
        .header("x-tenant-id", tenant)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", sid);
    if let Some(l) = last {
        r = r.header("last-event-id", l);
    }
    let resp = r.send().await.expect("stream opens");
    assert_eq!(resp.status(), 200);
    Sse::new(resp)
}

/// Creates a global tenant through the public API of `gw` with one tool.
async fn api_tenant(gw: &Gateway, id: &str) {
    let r = client()
        .post(format!("{}/public/tenants", gw.base))
        .bearer_auth(ADMIN)
        .json(&json!({"tenant_id": id, "visibility": "global"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    add_tool(gw, id, "first").await;
}

async fn add_tool(gw: &Gateway, tenant: &str, name: &str) {
    let r = client()
        .post(format!("{}/public/tenants/{tenant}/scenarios", gw.base))
        .bearer_auth(ADMIN)
        .json(&json!({"tool_name": name, "tool_description": "a tool", "tool_data": {"n": name}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_legacy_stream_on_one_process_gets_the_replies_to_posts_on_the_other() {
    let (_redis, a, b) = pair().await;
    let resp = client()
        .get(format!("{}/t/support/mcp/sse", a.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut sse = Sse::new(resp);
    let (_, event, endpoint) = sse.next(WAIT).await.expect("endpoint event");
    assert_eq!(event, "endpoint");
    assert!(
        endpoint.starts_with("/t/support/mcp/message?sessionId="),
        "{endpoint}"
    );
    let post = |body: Value| {
        let url = format!("{}{endpoint}", b.base);
        async move {
            client()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        post(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2024-11-05"}})).await,
        202
    );
    assert_eq!(
        post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await,
        202
    );
    assert_eq!(
        post(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "get_weather", "arguments": {"city": "Paris"}}})).await,
        202
    );
    // Negotiated 2024-11-05: a schema violation is error -32602.
    assert_eq!(
        post(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "get_weather", "arguments": {}}})).await,
        202
    );
    let (_, _, init) = sse.next(WAIT).await.expect("initialize reply");
    let init: Value = serde_json::from_str(&init).unwrap();
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["protocolVersion"], "2024-11-05");
    let (_, _, call) = sse.next(WAIT).await.expect("tools/call reply");
    let call: Value = serde_json::from_str(&call).unwrap();
    assert_eq!(call["id"], 2);
    assert_eq!(
        call["result"]["content"][0]["text"],
        r#"{"city":"Paris","temperature_c":21}"#
    );
    assert_eq!(
        call["result"]["structuredContent"],
        json!({"city": "Paris", "temperature_c": 21})
    );
    let (_, _, bad) = sse.next(WAIT).await.expect("invalid call reply");
    let bad: Value = serde_json::from_str(&bad).unwrap();
    assert_eq!(bad["error"]["code"], -32602);
    // The session is the tenant's: another tenant's POST to it is a 404.
    let other = client()
        .post(format!(
            "{}{}",
            b.base,
            endpoint.replacen("/t/support/", "/t/plain/", 1)
        ))
        .json(&json!({"jsonrpc": "2.0", "id": 9, "method": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    // Its stream closed, the session ends: POSTs get 404.
    drop(sse);
    let gone = understudy_e2e::eventually(WAIT, || async {
        (post(json!({"jsonrpc": "2.0", "id": 4, "method": "ping"})).await == 404).then_some(())
    })
    .await;
    assert!(gone.is_some(), "a closed legacy stream's session ends");
}

#[tokio::test]
async fn a_streamable_session_lives_on_every_process_and_resumes_anywhere() {
    let (_redis, a, b) = pair().await;
    api_tenant(&a, "mcp_shared").await;
    let sid = initialize(&a, "mcp_shared").await;
    // Used on the other process.
    let r = rpc(
        &b,
        "/mcp",
        "mcp_shared",
        Some(&sid),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["result"]["tools"][0]["name"], "first");
    // Another tenant never sees it.
    let r = rpc(
        &b,
        "/mcp",
        "support",
        Some(&sid),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
    )
    .await;
    assert_eq!(r.status(), 404);

    // A stream held by A is told when the tools change through B.
    let mut on_a = open_stream(&a, "mcp_shared", &sid, None).await;
    add_tool(&b, "mcp_shared", "second").await;
    let (id, _, data) = on_a.next(WAIT).await.expect("list_changed on A");
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["method"], "notifications/tools/list_changed");
    let first_id = id.expect("events carry ids");

    // A goes away; the tools change again while no stream is open; the client resumes on B.
    drop(on_a);
    add_tool(&a, "mcp_shared", "third").await;
    let mut on_b = open_stream(&b, "mcp_shared", &sid, Some(&first_id)).await;
    let (id, _, data) = on_b.next(WAIT).await.expect("the missed change, on B");
    let data: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(data["method"], "notifications/tools/list_changed");
    assert_ne!(id.as_deref(), Some(first_id.as_str()));

    // A session has one stream: a newer one (here resuming from the start, on A) takes over,
    // and the one on B ends.
    let mut replay = open_stream(&a, "mcp_shared", &sid, Some("0")).await;
    let (id0, _, _) = replay.next(WAIT).await.expect("replayed first event");
    assert_eq!(id0.as_deref(), Some(first_id.as_str()));
    assert!(on_b.ends(WAIT).await, "the older stream on B ends");
    drop(replay);
    // An unknown id replays what the log keeps, and says so.
    let mut unknown = open_stream(&a, "mcp_shared", &sid, Some("999999")).await;
    let (id1, _, _) = unknown
        .next(WAIT)
        .await
        .expect("replay after an unknown id");
    assert_eq!(id1.as_deref(), Some(first_id.as_str()));
    assert!(
        unknown.comments.iter().any(|c| c.contains("Last-Event-ID")),
        "{:?}",
        unknown.comments
    );
    drop(unknown);
    let mut unreadable = open_stream(&a, "mcp_shared", &sid, Some(&"9".repeat(300))).await;
    let (id2, _, _) = unreadable
        .next(WAIT)
        .await
        .expect("replay after an unreadable id");
    assert_eq!(id2.as_deref(), Some(first_id.as_str()));
    assert!(
        unreadable
            .comments
            .iter()
            .any(|c| c.contains("Last-Event-ID")),
        "{:?}",
        unreadable.comments
    );
    drop(unreadable);

    // DELETE on A ends the stream held by B, and the session everywhere.
    let mut on_b = open_stream(&b, "mcp_shared", &sid, None).await;
    // (Opened: a change now reaches it, so it is live before the DELETE.)
    add_tool(&a, "mcp_shared", "fourth").await;
    let (_, _, data) = on_b
        .next(WAIT)
        .await
        .expect("list_changed on the new stream");
    assert!(data.contains("list_changed"));
    let r = client()
        .delete(format!("{}/mcp", a.base))
        .header("x-tenant-id", "mcp_shared")
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(on_b.ends(WAIT).await, "the stream on B ends");
    for gw in [&a, &b] {
        let r = rpc(
            gw,
            "/mcp",
            "mcp_shared",
            Some(&sid),
            json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}),
        )
        .await;
        assert_eq!(r.status(), 404);
    }
}

#[tokio::test]
async fn stateless_listeners_on_each_process_hear_a_change_made_through_the_other() {
    let (_redis, a, b) = pair().await;
    api_tenant(&a, "mcp_listen").await;
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}});
    let resp = client()
        .post(format!("{}/mcp", a.base))
        .header("x-tenant-id", "mcp_listen")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "subscriptions/listen")
        .json(
            &json!({"jsonrpc": "2.0", "id": 7, "method": "subscriptions/listen",
            "params": {"_meta": meta, "notifications": {"toolsListChanged": true}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut sse = Sse::new(resp);
    let (_, _, ack) = sse.next(WAIT).await.expect("acknowledgement");
    let ack: Value = serde_json::from_str(&ack).unwrap();
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(ack["params"]["notifications"]["toolsListChanged"], true);
    add_tool(&b, "mcp_listen", "later").await;
    let (_, _, n) = sse.next(WAIT).await.expect("list_changed");
    let n: Value = serde_json::from_str(&n).unwrap();
    assert_eq!(n["method"], "notifications/tools/list_changed");
    assert_eq!(
        n["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        7
    );
}

/// The hosted endpoint's limiter is one count across processes, and refuses (429) rather than
/// let requests through when Redis cannot count.
#[tokio::test]
async fn the_hosted_limiter_counts_across_processes_and_fails_closed() {
    let (redis, a, b) = pair().await;
    // Mint an editor key scoped to `support` through the admin API.
    let r = client()
        .post(format!("{}/api/v1/admin/keys", a.base))
        .bearer_auth(ADMIN)
        .json(&json!({"name": "hosted-caller", "identity": "agent", "role": "editor", "tenant": "support"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let key = r.json::<Value>().await.unwrap()["plaintext"]
        .as_str()
        .unwrap()
        .to_string();
    // The key reaches B's snapshot through the hub.
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});
    let send = |gw: &Gateway| {
        client()
            .post(format!("{}/api/v1/mcp", gw.base))
            .header("x-api-key", &key)
            .header("x-tenant-id", "support")
            .json(&ping)
            .send()
    };
    let ready = understudy_e2e::eventually(WAIT, || async {
        (send(&b).await.ok()?.status() == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "B knows the key");
    let ready_window = understudy_core::now_secs() / 60;
    // Start early in a window, so the requests below fall in one.
    while understudy_core::now_secs() % 60 > 45 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let window = understudy_core::now_secs() / 60;
    // The request that found B ready counted in its window (the 403s before it did not).
    let spent = u64::from(ready_window == window);
    let mut ok = spent;
    let mut statuses = Vec::new();
    for i in 0..(61 - spent) as usize {
        let gw = if i % 2 == 0 { &a } else { &b };
        let s = send(gw).await.unwrap().status().as_u16();
        statuses.push(s);
        if s == 200 {
            ok += 1;
        }
    }
    if understudy_core::now_secs() / 60 == window {
        // At most 60 in the window, counted across both processes; the rest refused.
        assert!(ok <= 60, "{ok} passed: {statuses:?}");
        assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
    }
    // Redis paused: the limiter cannot count, so requests are refused, on both processes.
    redis.pause().unwrap();
    for gw in [&a, &b] {
        let r = send(gw).await.unwrap();
        assert_eq!(r.status(), 429);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");
    }
    redis.resume().unwrap();
}
