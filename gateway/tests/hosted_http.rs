//! The hosted MCP endpoint, `POST /api/v1/mcp` (SPEC §4.5), in process: every credential
//! failure a plain 403 envelope before dispatch, the error-to-HTTP mapping, tenant pinning, the
//! per-caller limit. Across processes and with Redis paused: `mcp_processes.rs`.

mod common;

use common::{ADMIN, Reply, app, call, json, mint};
use serde_json::{Value, json};

async fn hosted(
    app: &understudy_gateway::state::App,
    key: Option<&str>,
    tenant: Option<&str>,
    body: &str,
) -> Reply {
    let mut h = vec![("content-type", "application/json")];
    if let Some(k) = key {
        h.push(("x-api-key", k));
    }
    if let Some(t) = tenant {
        h.push(("x-tenant-id", t));
    }
    call(app, "POST", "/api/v1/mcp", &h, body.to_string()).await
}

fn rpc(method: &str, params: Value) -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
}

#[tokio::test]
async fn credential_failures_are_plain_403s_before_dispatch() {
    let app = app().await;
    let viewer = mint(&app, "viewer-key", "vic", "viewer", None).await;
    let other = mint(&app, "other-scope", "oscar", "editor", Some("down")).await;
    let list = rpc("tools/list", json!({}));
    for (key, tenant, why) in [
        (None, Some("shop"), "no credential"),
        (Some("usk_not_a_key"), Some("shop"), "unknown key"),
        (Some(viewer.as_str()), Some("shop"), "viewer"),
        (
            Some(other.as_str()),
            Some("shop"),
            "key scoped to another tenant",
        ),
        (Some(ADMIN), None, "no X-Tenant-Id"),
        (Some(ADMIN), Some(" "), "a blank X-Tenant-Id"),
        // Scoped to `down`: refused whether or not the named tenant exists.
        (
            Some(other.as_str()),
            Some("no_such_tenant"),
            "scoped key, unknown tenant",
        ),
    ] {
        let r = hosted(&app, key, tenant, &list).await;
        assert_eq!(r.status, 403, "{why}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "forbidden", "{why}");
        assert!(r.json().get("jsonrpc").is_none(), "{why}: not JSON-RPC");
    }
    // A session cookie alone is no credential here.
    let r = call(
        &app,
        "POST",
        "/api/v1/mcp",
        &[
            ("x-tenant-id", "shop"),
            ("cookie", "understudy_session=abc"),
        ],
        list.clone(),
    )
    .await;
    assert_eq!(r.status, 403);
    // Unknown tenant with a good key: the envelope's 404.
    let r = hosted(&app, Some(ADMIN), Some("nope"), &list).await;
    assert_eq!(
        (r.status.as_u16(), r.json()["error"]["code"].clone()),
        (404, json!("not_found"))
    );
}

#[tokio::test]
async fn json_rpc_answers_map_to_their_http_statuses() {
    let app = app().await;
    let editor = mint(&app, "ed", "eddie", "editor", Some("shop")).await;
    let k = Some(editor.as_str());
    let t = Some("shop");
    let r = hosted(
        &app,
        k,
        t,
        &rpc("initialize", json!({"protocolVersion": "2025-11-25"})),
    )
    .await;
    assert_eq!(r.status, 200);
    let init = r.json()["result"].clone();
    assert_eq!(init["protocolVersion"], "2025-03-26");
    assert_eq!(
        init["capabilities"],
        json!({"tools": {"listChanged": false}})
    );
    assert!(r.headers.get("mcp-session-id").is_none());
    let r = hosted(
        &app,
        k,
        t,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await;
    assert_eq!(r.status, 202);
    assert!(r.body.is_empty());
    let r = hosted(&app, k, t, &rpc("ping", json!({}))).await;
    assert_eq!(r.json()["result"], json!({}));
    let r = hosted(&app, k, t, &rpc("tools/list", json!({}))).await;
    assert_eq!(r.json()["result"]["tools"][0]["name"], "get_invoices");
    let r = hosted(
        &app,
        k,
        t,
        &rpc(
            "tools/call",
            json!({"name": "get_invoices", "arguments": {}}),
        ),
    )
    .await;
    assert_eq!(
        r.json()["result"]["structuredContent"],
        json!({"invoices": ["INV-1"]})
    );
    for (body, status, code) in [
        ("{nope".to_string(), 400, -32700),
        (r#"{"jsonrpc":"2.0","id":1}"#.to_string(), 400, -32600),
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#.to_string(),
            400,
            -32600,
        ),
        (rpc("resources/list", json!({})), 200, -32601),
        (rpc("tools/call", json!({"name": "missing"})), 200, -32602),
    ] {
        let r = hosted(&app, k, t, &body).await;
        assert_eq!(r.status, status, "{body}");
        assert_eq!(r.json()["error"]["code"], code, "{body}");
    }
}

#[tokio::test]
async fn the_authenticated_tenant_overwrites_a_tenant_id_argument() {
    let app = app().await;
    let r = json(
        &app,
        "POST",
        "/public/tenants",
        Some(ADMIN),
        json!({"tenant_id": "pinned", "visibility": "global"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    for (when, data) in [
        (json!({"tenantId": "pinned"}), json!({"seen": "pinned"})),
        (json!({}), json!({"seen": "someone else"})),
    ] {
        let mut body = json!({"tool_name": "whoami", "tool_description": "d", "tool_data": data});
        if when.as_object().is_some_and(|o| !o.is_empty()) {
            body["tool_when"] = when;
            body["priority"] = json!(1);
        }
        let r = json(
            &app,
            "POST",
            "/public/tenants/pinned/scenarios",
            Some(ADMIN),
            body,
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let key = mint(&app, "pin-key", "pat", "editor", Some("pinned")).await;
    let r = hosted(
        &app,
        Some(&key),
        Some("pinned"),
        &rpc(
            "tools/call",
            json!({"name": "whoami", "arguments": {"tenantId": "shop"}}),
        ),
    )
    .await;
    assert_eq!(
        r.json()["result"]["structuredContent"],
        json!({"seen": "pinned"}),
        "{}",
        r.text()
    );
}

#[tokio::test]
async fn each_caller_gets_sixty_requests_a_minute() {
    let app = app().await;
    let a = mint(&app, "caller-a", "amy", "editor", None).await;
    let b = mint(&app, "caller-b", "bob", "editor", None).await;
    let ping = rpc("ping", json!({}));
    // Requests until the first 429: at least 60 pass in its window (a window may end mid-way,
    // so at most two windows' worth are needed).
    let mut passed_in_window = 0;
    let mut refused = None;
    let mut window = understudy_core::now_secs() / 60;
    for _ in 0..130 {
        let r = hosted(&app, Some(&a), Some("shop"), &ping).await;
        let now = understudy_core::now_secs() / 60;
        if now != window {
            window = now;
            passed_in_window = 0;
        }
        if r.status == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, 200);
        passed_in_window += 1;
    }
    let r = refused.expect("a 429 within two windows");
    assert_eq!(passed_in_window, 60);
    assert_eq!(r.json()["error"]["code"], "rate_limited");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    // Another identity has its own budget; another key of the same identity shares amy's.
    assert_eq!(
        hosted(&app, Some(&b), Some("shop"), &ping).await.status,
        200
    );
    let a2 = mint(&app, "caller-a-2", "amy", "editor", None).await;
    let r = hosted(&app, Some(&a2), Some("shop"), &ping).await;
    if understudy_core::now_secs() / 60 == window {
        assert_eq!(r.status, 429, "per identity, not per key");
    }
}
