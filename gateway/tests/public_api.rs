//! The public tenant API and the admin keys API (SPEC §8, §9.3), in process on the memory store:
//! visibility, ownership, roles, scopes, read-only tenants, validation, limits, and that a
//! refused request changes nothing.

mod common;

use common::{ADMIN, json, mint};
use serde_json::{Value, json};

const CHAT: &str = "/v1/chat/completions";

async fn chat(
    app: &understudy_gateway::state::App,
    tenant: &str,
    key: Option<&str>,
    text: &str,
) -> common::Reply {
    let mut h = vec![
        ("x-tenant-id", tenant),
        ("content-type", "application/json"),
    ];
    let auth = key.map(|k| format!("Bearer {k}"));
    if let Some(a) = &auth {
        h.push(("authorization", a.as_str()));
    }
    let body = json!({"model": "m", "messages": [{"role": "user", "content": text}]}).to_string();
    common::call(app, "POST", CHAT, &h, body).await
}

fn code(r: &common::Reply) -> String {
    r.json()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn keys_are_minted_once_listed_without_secrets_and_revoked() {
    let app = common::app().await;
    let r = json(
        &app,
        "POST",
        "/api/v1/admin/keys",
        Some(ADMIN),
        json!({"name": "ci", "role": "editor"}),
    )
    .await;
    assert_eq!(r.status, 201);
    let plaintext = r.json()["plaintext"].as_str().unwrap().to_string();
    assert!(plaintext.starts_with("usk_") && plaintext.len() > 60);
    assert_eq!(
        r.json()["key"]["identity"],
        "ci",
        "identity defaults to the name"
    );
    let again = json(
        &app,
        "POST",
        "/api/v1/admin/keys",
        Some(ADMIN),
        json!({"name": "ci"}),
    )
    .await;
    assert_eq!(
        (again.status.as_u16(), code(&again)),
        (409, "conflict".into())
    );
    let list = json(&app, "GET", "/api/v1/admin/keys", Some(ADMIN), Value::Null).await;
    assert_eq!(list.json()["keys"][0]["name"], "ci");
    assert!(
        !list.text().contains(&plaintext) && !list.text().contains("hash"),
        "{}",
        list.text()
    );
    // The key works, then is revoked and refused, and its name can be reused.
    assert_eq!(
        json(
            &app,
            "GET",
            "/public/tenants",
            Some(&plaintext),
            Value::Null
        )
        .await
        .status,
        200
    );
    assert_eq!(
        json(
            &app,
            "DELETE",
            "/api/v1/admin/keys/ci",
            Some(ADMIN),
            Value::Null
        )
        .await
        .status,
        204
    );
    let r = json(
        &app,
        "GET",
        "/public/tenants",
        Some(&plaintext),
        Value::Null,
    )
    .await;
    assert_eq!((r.status.as_u16(), code(&r)), (401, "unauthorized".into()));
    assert!(r.headers.contains_key("www-authenticate"));
    assert_eq!(
        json(
            &app,
            "DELETE",
            "/api/v1/admin/keys/ci",
            Some(ADMIN),
            Value::Null
        )
        .await
        .status,
        404
    );
    mint(&app, "ci", "ci", "viewer", None).await;
}

#[tokio::test]
async fn only_admins_mint_and_never_above_their_role_or_scope() {
    let app = common::app().await;
    let editor = mint(&app, "ed", "ed", "editor", None).await;
    let r = json(
        &app,
        "POST",
        "/api/v1/admin/keys",
        Some(&editor),
        json!({"name": "x"}),
    )
    .await;
    assert_eq!((r.status.as_u16(), code(&r)), (403, "forbidden".into()));
    let r = json(&app, "GET", "/api/v1/admin/keys", None, Value::Null).await;
    assert_eq!(r.status, 401);
    let scoped = mint(&app, "shop-admin", "sa", "admin", Some("shop")).await;
    let r = json(
        &app,
        "POST",
        "/api/v1/admin/keys",
        Some(&scoped),
        json!({"name": "y", "tenant": "other"}),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = json(
        &app,
        "POST",
        "/api/v1/admin/keys",
        Some(&scoped),
        json!({"name": "y", "role": "editor"}),
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        r.json()["key"]["tenant"],
        "shop",
        "a scoped admin's keys inherit its scope"
    );
    let list = json(
        &app,
        "GET",
        "/api/v1/admin/keys",
        Some(&scoped),
        Value::Null,
    )
    .await;
    let names: Vec<String> = list.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["shop-admin", "y"]);
    for bad in [
        json!({"name": "bad name"}),
        json!({"name": "z", "role": "root"}),
        json!({"name": "z", "extra": 1}),
        json!({"name": "z", "expires_at": "tomorrow"}),
    ] {
        let r = json(&app, "POST", "/api/v1/admin/keys", Some(ADMIN), bad.clone()).await;
        assert_eq!(
            (r.status.as_u16(), code(&r)),
            (400, "invalid_input".into()),
            "{bad}"
        );
    }
    let r = json(
        &app,
        "POST",
        "/api/v1/admin/keys",
        Some(ADMIN),
        json!({"name": "old", "expires_at": "2001-01-01T00:00:00Z"}),
    )
    .await;
    let old = r.json()["plaintext"].as_str().unwrap().to_string();
    let r = json(&app, "GET", "/public/tenants", Some(&old), Value::Null).await;
    assert_eq!(r.status, 401, "an expired key is refused");
    assert!(r.text().contains("expired"));
}

#[tokio::test]
async fn tenants_visibility_ownership_and_roles() {
    let app = common::app().await;
    let alice = mint(&app, "alice", "alice", "editor", None).await;
    let bob = mint(&app, "bob", "bob", "editor", None).await;
    let viewer = mint(&app, "vera", "alice", "viewer", None).await;
    // Anonymous and viewers cannot create.
    let body = json!({"tenant_id": "alice_t", "state": {"n": 1}});
    assert_eq!(
        json(&app, "POST", "/public/tenants", None, body.clone())
            .await
            .status,
        401
    );
    assert_eq!(
        json(&app, "POST", "/public/tenants", Some(&viewer), body.clone())
            .await
            .status,
        403
    );
    let r = json(&app, "POST", "/public/tenants", Some(&alice), body.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["tenant"]["visibility"], "private");
    assert_eq!(r.json()["tenant"]["owner"], "alice");
    assert!(r.json()["version"].as_u64().unwrap() > 0);
    assert_eq!(
        json(&app, "POST", "/public/tenants", Some(&bob), body)
            .await
            .status,
        409,
        "taken id"
    );
    let r = json(
        &app,
        "POST",
        "/public/tenants",
        Some(&alice),
        json!({"tenant_id": "g", "visibility": "global"}),
    )
    .await;
    assert_eq!(r.status, 403, "only admins create global tenants");
    // Listing: anonymous sees global ones, alice also hers, bob not hers.
    let ids = |r: &common::Reply| -> Vec<String> {
        r.json()["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tenant_id"].as_str().unwrap().to_string())
            .collect()
    };
    let anon = ids(&json(&app, "GET", "/public/tenants", None, Value::Null).await);
    assert_eq!(anon, ["cut", "down", "shop"]);
    assert!(
        ids(&json(&app, "GET", "/public/tenants", Some(&alice), Value::Null).await)
            .contains(&"alice_t".into())
    );
    assert!(
        ids(&json(&app, "GET", "/public/tenants", Some(&viewer), Value::Null).await)
            .contains(&"alice_t".into()),
        "same identity, viewer key"
    );
    assert!(
        !ids(&json(&app, "GET", "/public/tenants", Some(&bob), Value::Null).await)
            .contains(&"alice_t".into())
    );
    assert!(
        ids(&json(&app, "GET", "/public/tenants", Some(ADMIN), Value::Null).await)
            .contains(&"alice_t".into())
    );
    // Reads and writes of the private tenant.
    assert_eq!(
        json(&app, "GET", "/public/tenants/alice_t", None, Value::Null)
            .await
            .status,
        401
    );
    assert_eq!(
        json(
            &app,
            "GET",
            "/public/tenants/alice_t",
            Some(&bob),
            Value::Null
        )
        .await
        .status,
        403
    );
    assert_eq!(
        json(
            &app,
            "GET",
            "/public/tenants/alice_t",
            Some(&viewer),
            Value::Null
        )
        .await
        .json()["state"]["n"],
        1
    );
    let state = json!({"state": {"n": 2}});
    let path = "/public/tenants/alice_t/state";
    assert_eq!(
        json(&app, "PUT", path, Some(&bob), state.clone())
            .await
            .status,
        403
    );
    assert_eq!(
        json(&app, "PUT", path, Some(&viewer), state.clone())
            .await
            .status,
        403
    );
    let r = json(&app, "PUT", path, Some(&alice), state.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["tenant"]["state"]["n"], 2);
    assert_eq!(
        json(&app, "PUT", path, Some(ADMIN), state).await.status,
        200,
        "admins may write anything"
    );
    // Data plane: 401 without a key, 403 with someone else's, served with the owner's.
    let r = json(
        &app,
        "POST",
        "/public/tenants/alice_t/scenarios",
        Some(&alice),
        json!({"keywords": ["hi"], "response": "Hi Alice"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        r.json()["scenario"]["id"]
            .as_str()
            .unwrap()
            .starts_with("sc_")
    );
    let r = chat(&app, "alice_t", None, "hi").await;
    assert_eq!(r.status, 401);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("alice_t")
    );
    assert_eq!(chat(&app, "alice_t", Some(&bob), "hi").await.status, 403);
    assert_eq!(
        chat(&app, "alice_t", Some("usk_unknown"), "hi")
            .await
            .status,
        401
    );
    let r = chat(&app, "alice_t", Some(&alice), "hi").await;
    assert_eq!(r.json()["choices"][0]["message"]["content"], "Hi Alice");
    assert_eq!(
        chat(&app, "shop", Some("sk-placeholder"), "invoice")
            .await
            .status,
        200,
        "global tenants ignore credentials"
    );
    // Delete: not bob's; alice's works; then 404.
    assert_eq!(
        json(
            &app,
            "DELETE",
            "/public/tenants/alice_t",
            Some(&bob),
            Value::Null
        )
        .await
        .status,
        403
    );
    let r = json(
        &app,
        "DELETE",
        "/public/tenants/alice_t",
        Some(&alice),
        Value::Null,
    )
    .await;
    assert_eq!(r.json()["result"], "deleted");
    assert_eq!(
        json(
            &app,
            "DELETE",
            "/public/tenants/alice_t",
            Some(&alice),
            Value::Null
        )
        .await
        .status,
        404
    );
    assert_eq!(chat(&app, "alice_t", Some(&alice), "hi").await.status, 404);
}

#[tokio::test]
async fn manifest_tenants_are_read_only_but_can_be_reset() {
    let app = common::app().await;
    let ed = mint(&app, "ed", "ed", "editor", None).await;
    for (method, path, body) in [
        ("PUT", "/public/tenants/shop/state", json!({"state": {}})),
        ("PATCH", "/public/tenants/shop/settings", json!({"a": 1})),
        (
            "POST",
            "/public/tenants/shop/scenarios",
            json!({"keywords": ["x"]}),
        ),
        (
            "PUT",
            "/public/tenants/shop/chaos",
            json!({"profile": "latency"}),
        ),
        ("DELETE", "/public/tenants/shop", Value::Null),
        (
            "DELETE",
            "/public/tenants/shop/scenarios/default/invoices",
            Value::Null,
        ),
    ] {
        let r = json(&app, method, path, Some(ADMIN), body).await;
        assert_eq!(
            (r.status.as_u16(), code(&r)),
            (409, "conflict".into()),
            "{method} {path}: {}",
            r.text()
        );
        assert!(r.text().contains("managed by"));
    }
    let r = json(
        &app,
        "GET",
        "/public/tenants/shop/scenarios",
        None,
        Value::Null,
    )
    .await;
    assert_eq!(r.json()["scenarios"][0]["id"], "default/invoices");
    let r = json(
        &app,
        "POST",
        "/public/tenants/shop/reset",
        Some(&ed),
        Value::Null,
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.json()["result"].clone()),
        (200, json!("reset"))
    );
}

#[tokio::test]
async fn settings_merge_patch_chaos_and_reset_through_the_api() {
    let app = common::app().await;
    let ed = mint(&app, "ed", "ed", "editor", None).await;
    let r = json(
        &app,
        "POST",
        "/public/tenants",
        Some(&ed),
        json!({"tenant_id": "t1", "settings": {"a": 1, "b": {"c": 2, "d": 3}}}),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = json(
        &app,
        "PATCH",
        "/public/tenants/t1/settings",
        Some(&ed),
        json!({"a": null, "b": {"c": 9}, "models": ["only-one", "org/m"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["settings"],
        json!({"b": {"c": 9, "d": 3}, "models": ["only-one", "org/m"]})
    );
    let r = json(&app, "GET", "/t/t1/v1/models", Some(&ed), Value::Null).await;
    assert_eq!(
        r.json()["data"][0]["id"],
        "only-one",
        "settings reach the data plane"
    );
    let r = json(&app, "GET", "/t/t1/v1/models/org/m", Some(&ed), Value::Null).await;
    assert_eq!(r.json()["id"], "org/m", "model ids may contain '/'");
    for bad in [json!([1]), json!("x"), json!(5)] {
        let r = json(&app, "PATCH", "/public/tenants/t1/settings", Some(&ed), bad).await;
        assert_eq!((r.status.as_u16(), code(&r)), (400, "invalid_input".into()));
    }
    // Chaos through the API, then a reset clears the window.
    let r = json(
        &app,
        "PUT",
        "/public/tenants/t1/chaos",
        Some(&ed),
        json!({"profile": "rate_limit", "limit": 1, "window_seconds": 3600}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["chaos"]["limit"], 1);
    assert_eq!(chat(&app, "t1", Some(&ed), "x").await.status, 200);
    assert_eq!(chat(&app, "t1", Some(&ed), "x").await.status, 429);
    assert_eq!(
        json(
            &app,
            "POST",
            "/public/tenants/t1/reset",
            Some(&ed),
            Value::Null
        )
        .await
        .status,
        200
    );
    assert_eq!(
        chat(&app, "t1", Some(&ed), "x").await.status,
        200,
        "reset gave a clean slate"
    );
    let r = json(
        &app,
        "PUT",
        "/public/tenants/t1/chaos",
        Some(&ed),
        json!({"profile": "server_error", "probability": 2}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("probability")
    );
    let r = json(
        &app,
        "PUT",
        "/public/tenants/t1/chaos",
        Some(&ed),
        json!({"profile": "none"}),
    )
    .await;
    assert_eq!(r.json()["chaos"]["profile"], "none");
    assert_eq!(chat(&app, "t1", Some(&ed), "x").await.status, 200);
}

#[tokio::test]
async fn bad_input_is_refused_and_nothing_stored_changes() {
    let app = common::app().await;
    let ed = mint(&app, "ed", "ed", "editor", None).await;
    json(
        &app,
        "POST",
        "/public/tenants",
        Some(&ed),
        json!({"tenant_id": "keep", "state": {"v": 1}}),
    )
    .await;
    let before = json(&app, "GET", "/public/tenants/keep", Some(&ed), Value::Null)
        .await
        .json();
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        (
            "POST",
            "/public/tenants",
            json!({"tenant_id": "bad id!"}),
            400,
            "invalid_input",
        ),
        (
            "POST",
            "/public/tenants",
            json!({"tenant_id": "x", "unknown": 1}),
            400,
            "invalid_input",
        ),
        (
            "POST",
            "/public/tenants",
            json!({"tenant_id": 5}),
            400,
            "invalid_input",
        ),
        (
            "POST",
            "/public/tenants",
            json!({"tenant_id": "x", "state": []}),
            400,
            "invalid_input",
        ),
        (
            "POST",
            "/public/tenants",
            json!({"tenant_id": "keep"}),
            409,
            "conflict",
        ),
        (
            "PUT",
            "/public/tenants/keep/state",
            json!({"state": 3}),
            400,
            "invalid_input",
        ),
        (
            "PUT",
            "/public/tenants/keep/state",
            json!({"nope": {}}),
            400,
            "invalid_input",
        ),
        (
            "PUT",
            "/public/tenants/keep/state",
            json!({"state": {"big": "x".repeat(1024 * 1024)}}),
            413,
            "payload_too_large",
        ),
        (
            "POST",
            "/public/tenants/keep/scenarios",
            json!({"keywords": ["k"], "tool_name": "t", "tool_input_schema": {"type": "nonsense"}}),
            400,
            "invalid_input",
        ),
        (
            "POST",
            "/public/tenants/keep/scenarios",
            json!({"keywords": ["k"], "toolName": "camel"}),
            400,
            "invalid_input",
        ),
        (
            "POST",
            "/public/tenants/keep/scenarios",
            json!({"keywords": [""]}),
            400,
            "invalid_input",
        ),
        (
            "DELETE",
            "/public/tenants/keep/scenarios/sc_missing",
            Value::Null,
            404,
            "not_found",
        ),
        (
            "PUT",
            "/public/tenants/keep/chaos",
            json!({"profile": "explode"}),
            400,
            "invalid_input",
        ),
        (
            "PUT",
            "/public/tenants/keep/chaos",
            json!({"profile": "server_error", "status_code": 418}),
            400,
            "invalid_input",
        ),
        (
            "PUT",
            "/public/tenants/nope/state",
            json!({"state": {}}),
            404,
            "not_found",
        ),
        (
            "DELETE",
            "/public/tenants/nope",
            Value::Null,
            404,
            "not_found",
        ),
        (
            "GET",
            "/public/tenants/bad%20id",
            Value::Null,
            400,
            "invalid_input",
        ),
    ];
    for (method, path, body, status, want) in cases {
        let r = json(&app, method, path, Some(&ed), body.clone()).await;
        assert_eq!(
            (r.status.as_u16(), code(&r).as_str()),
            (status, want),
            "{method} {path} {}: {}",
            body.to_string().chars().take(120).collect::<String>(),
            r.text().chars().take(300).collect::<String>()
        );
    }
    let r = common::call(
        &app,
        "PUT",
        "/public/tenants/keep/state",
        &[("authorization", &format!("Bearer {ed}"))],
        "{not json",
    )
    .await;
    assert_eq!(code(&r), "invalid_json");
    let r = json(
        &app,
        "POST",
        "/public/tenants/keep/scenarios",
        Some(&ed),
        json!({"keywords": ["k"], "tool_name": "t", "tool_input_schema": {"type": 12}}),
    )
    .await;
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("tool_input_schema: not a valid JSON Schema"),
        "{}",
        r.text()
    );
    let after = json(&app, "GET", "/public/tenants/keep", Some(&ed), Value::Null)
        .await
        .json();
    assert_eq!(before, after, "refused requests changed nothing");
}

#[tokio::test]
async fn scoped_keys_stay_in_their_tenant() {
    let app = common::app().await;
    let scoped = mint(&app, "only-a", "sam", "editor", Some("a_t")).await;
    assert_eq!(
        json(
            &app,
            "POST",
            "/public/tenants",
            Some(&scoped),
            json!({"tenant_id": "b_t"})
        )
        .await
        .status,
        403
    );
    assert_eq!(
        json(
            &app,
            "POST",
            "/public/tenants",
            Some(&scoped),
            json!({"tenant_id": "a_t"})
        )
        .await
        .status,
        201
    );
    let ids: Vec<Value> = json(&app, "GET", "/public/tenants", Some(&scoped), Value::Null)
        .await
        .json()["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant_id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("a_t")], "a scoped key sees its tenant only");
    assert_eq!(
        chat(&app, "shop", Some(&scoped), "invoice").await.status,
        200,
        "credentials are ignored on global data planes"
    );
}

#[tokio::test]
async fn openapi_document_describes_every_route() {
    let app = common::app().await;
    let doc = common::call(&app, "GET", "/openapi.json", &[], "")
        .await
        .json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/public/tenants",
        "/public/tenants/{id}",
        "/public/tenants/{id}/state",
        "/public/tenants/{id}/settings",
        "/public/tenants/{id}/reset",
        "/public/tenants/{id}/scenarios",
        "/public/tenants/{id}/scenarios/{sid}",
        "/public/tenants/{id}/chaos",
        "/api/v1/admin/keys",
        "/api/v1/admin/keys/{name}",
    ] {
        assert!(paths.contains_key(p), "{p} missing from /openapi.json");
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}

#[tokio::test]
async fn a_stale_key_snapshot_refuses_authenticated_writes() {
    use std::sync::Arc;
    use understudy_core::Stores;
    use understudy_gateway::snapshot::SnapshotHandle;
    use understudy_gateway::state::{AppState, Options};
    // A shared-mode process whose snapshot stopped hearing from the store (no sync task runs).
    let snapshot = Arc::new(SnapshotHandle::new());
    snapshot.replace(1, Some("e".into()), vec![], vec![]);
    let options = Options {
        shared: true,
        admin_token: Some(ADMIN.into()),
        ..Options::default()
    };
    let app = AppState::new(
        Stores::memory(),
        snapshot,
        Arc::new(understudy_gateway::metrics::Metrics::new()),
        options,
    );
    let body = json!({"tenant_id": "fresh"});
    assert_eq!(
        json(&app, "POST", "/public/tenants", Some(ADMIN), body.clone())
            .await
            .status,
        201,
        "fresh: writes pass"
    );
    tokio::time::sleep(std::time::Duration::from_millis(10_500)).await;
    let r = json(
        &app,
        "POST",
        "/public/tenants",
        Some(ADMIN),
        json!({"tenant_id": "late"}),
    )
    .await;
    assert_eq!((r.status.as_u16(), code(&r)), (503, "unavailable".into()));
    assert_eq!(
        json(&app, "GET", "/public/tenants", Some(ADMIN), Value::Null)
            .await
            .status,
        200,
        "reads still work"
    );
}

#[tokio::test]
async fn a_tenant_scoped_key_names_its_tenant_without_a_header() {
    let app = common::app().await;
    let key = mint(&app, "scoped", "carol", "editor", Some("shop")).await;
    let r = common::call(
        &app,
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &format!("Bearer {key}")),
            ("content-type", "application/json"),
        ],
        json!({"model": "m", "messages": [{"role": "user", "content": "invoice"}]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["content"],
        "Here are your invoices."
    );
    // Without a header, a prefix, or a scoped key: the tenant is still missing (400).
    let r = common::call(
        &app,
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}).to_string(),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "missing_tenant");
}

#[tokio::test]
async fn a_deleted_tenant_leaves_the_metrics() {
    let app = common::app().await;
    let key = mint(&app, "dave-ci", "dave", "editor", None).await;
    let r = json(
        &app,
        "POST",
        "/public/tenants",
        Some(&key),
        json!({"tenant_id": "short_lived"}),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        chat(&app, "short_lived", Some(&key), "hi").await.status,
        200
    );
    let metrics = || async { common::call(&app, "GET", "/metrics", &[], "").await.text() };
    assert!(metrics().await.contains(r#"tenant="short_lived""#));
    let r = json(
        &app,
        "DELETE",
        "/public/tenants/short_lived",
        Some(&key),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let m = metrics().await;
    assert!(
        !m.contains(r#"tenant="short_lived""#),
        "its series are gone and its label slot is free:\n{m}"
    );
}

#[tokio::test]
async fn dot_tenant_ids_and_scenario_ids_are_refused() {
    let app = common::app().await;
    let key = mint(&app, "erin-ci", "erin", "editor", None).await;
    for bad in [".", ".."] {
        let r = json(
            &app,
            "POST",
            "/public/tenants",
            Some(&key),
            json!({"tenant_id": bad}),
        )
        .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(code(&r), "invalid_input");
    }
    let r = json(
        &app,
        "POST",
        "/public/tenants",
        Some(&key),
        json!({"tenant_id": "erin_t"}),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = json(
        &app,
        "POST",
        "/public/tenants/erin_t/scenarios",
        Some(&key),
        json!({"id": "mine", "keywords": ["x"], "response": "y"}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"id\"")
    );
}

async fn chat_with(app: &understudy_gateway::state::App, key: Option<&str>) -> u16 {
    let mut headers = vec![
        ("x-tenant-id", "shop"),
        ("content-type", "application/json"),
    ];
    let auth = key.map(|k| format!("Bearer {k}"));
    if let Some(a) = &auth {
        headers.push(("authorization", a));
    }
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    common::call(
        app,
        "POST",
        "/v1/chat/completions",
        &headers,
        body.to_string(),
    )
    .await
    .status
    .as_u16()
}

#[tokio::test]
async fn global_tenants_ignore_any_credential_unless_anonymous_access_is_off() {
    // Anonymous access on (the default): nothing, a placeholder, an unknown, a revoked key all
    // reach a global tenant.
    let app = common::app().await;
    let revoked = mint(&app, "gone", "gone", "viewer", None).await;
    let r = json(
        &app,
        "DELETE",
        "/api/v1/admin/keys/gone",
        Some(ADMIN),
        Value::Null,
    )
    .await;
    assert_eq!(r.status, 204);
    let unknown = format!("usk_{}", "0".repeat(64));
    for key in [
        None,
        Some("sk-placeholder"),
        Some(unknown.as_str()),
        Some(revoked.as_str()),
    ] {
        assert_eq!(chat_with(&app, key).await, 200, "{key:?}");
    }

    // --allow-anonymous false: a valid key of any role is required, a bad one refused.
    let app = common::app_with(|o| o.allow_anonymous = false).await;
    let viewer = mint(&app, "viewer", "viewer", "viewer", None).await;
    assert_eq!(chat_with(&app, None).await, 401);
    assert_eq!(chat_with(&app, Some(&unknown)).await, 401);
    assert_eq!(chat_with(&app, Some("sk-placeholder")).await, 401);
    assert_eq!(chat_with(&app, Some(&viewer)).await, 200);
    assert_eq!(chat_with(&app, Some(ADMIN)).await, 200);
}

#[tokio::test]
async fn cors_origins_are_the_configured_list() {
    async fn allowed(app: &understudy_gateway::state::App, origin: &str) -> Option<String> {
        let headers = [
            ("origin", origin),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type,x-tenant-id"),
        ];
        let r = common::call(app, "OPTIONS", CHAT, &headers, "").await;
        r.headers
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string())
    }
    // Default `*`: any origin.
    let app = common::app().await;
    assert_eq!(
        allowed(&app, "https://anywhere.example").await.as_deref(),
        Some("*")
    );
    // A list: those origins only.
    let app = common::app_with(|o| {
        o.cors_origins = vec!["https://a.example".into(), "https://b.example".into()]
    })
    .await;
    assert_eq!(
        allowed(&app, "https://b.example").await.as_deref(),
        Some("https://b.example")
    );
    assert_eq!(allowed(&app, "https://evil.example").await, None);
}
