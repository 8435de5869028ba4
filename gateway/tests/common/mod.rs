//! Shared helpers for in-process HTTP tests: an app over a memory store with fixture tenants.

#![allow(dead_code)]

use axum::body::Body;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use understudy_core::Stores;
use understudy_crds::manifests::Parsed;
use understudy_crds::model::ConfigSource;
use understudy_gateway::app;
use understudy_gateway::server::{Wiring, wire};
use understudy_gateway::state::{App, Options};

/// Fixture manifests: a tenant with text, tool, turn and JSON scenarios.
pub const MANIFESTS: &str = r#"
apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {name: shop}
spec:
  tenantId: shop
  defaultResponse: "Default answer."
  settings: {models: [gpt-4o, claude-sonnet-5-5], max_tool_results: 3}
---
apiVersion: understudy.dev/v1alpha1
kind: Scenario
metadata: {name: invoices}
spec:
  tenantRef: shop
  keywords: [invoice]
  response: "Here are your invoices."
  toolName: get_invoices
  toolArguments: {customer_id: cus_1}
  toolData: {invoices: [INV-1]}
---
apiVersion: understudy.dev/v1alpha1
kind: Scenario
metadata: {name: summary}
spec:
  tenantRef: shop
  keywords: [summary]
  responseJson: {status: shipped, items: 3}
---
apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {name: down}
spec: {tenantId: down}
---
apiVersion: understudy.dev/v1alpha1
kind: ChaosProfile
metadata: {name: down}
spec: {tenantRef: down, profile: server_error, statusCode: 503}
---
apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {name: cut}
spec: {tenantId: cut, defaultResponse: "A long enough answer to make several stream events."}
---
apiVersion: understudy.dev/v1alpha1
kind: ChaosProfile
metadata: {name: cut}
spec: {tenantRef: cut, profile: stream_cut, afterChunks: 2}
"#;

/// The admin token of [`app`].
pub const ADMIN: &str = "test-admin-token-0123456789";

/// An app serving [`MANIFESTS`] from a memory store, with `max_body_bytes` of 64 KiB and the
/// admin token [`ADMIN`].
pub async fn app() -> App {
    app_with(|_| {}).await
}

/// [`app`] with its options changed by `change` (e.g. `allow_anonymous`, `cors_origins`).
pub async fn app_with(change: impl FnOnce(&mut Options)) -> App {
    let mut parsed = Parsed::default();
    parsed.add_file("fixture.yaml", MANIFESTS);
    let report = parsed.build(ConfigSource::Manifest);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let stores = Stores::memory();
    for t in &report.tenants {
        stores.config.put_tenant(t).await.unwrap();
    }
    let mut options = Options {
        max_body_bytes: 64 * 1024,
        admin_token: Some(ADMIN.into()),
        ..Options::default()
    };
    change(&mut options);
    // The binary's own wiring: sync (writes through the API reach the snapshot via notices),
    // stats flusher.
    let app = wire(Wiring::new(stores, options)).await.app;
    for _ in 0..500 {
        if snapshot_synced(&app) {
            return app;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    panic!("the test app's snapshot never synced");
}

fn snapshot_synced(app: &App) -> bool {
    app.snapshot.is_synced()
}

/// A response, collected.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request through the full service (prefix rewrite included).
pub async fn call(
    app: &App,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Reply {
    match try_call(app, method, path, headers, body).await {
        Ok(reply) => reply,
        Err(e) => panic!("{method} {path}: the body failed mid-way: {e}"),
    }
}

/// Like [`call`], but a body that fails mid-way (a cut stream) is an error, never an empty or
/// partial body that a test could mistake for an answer.
pub async fn try_call(
    app: &App,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Result<Reply, axum::Error> {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body.into()).unwrap();
    let resp = app::service(app.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes().to_vec();
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// POST JSON to `path` for tenant `shop`.
pub async fn post(app: &App, path: &str, body: serde_json::Value) -> Reply {
    call(
        app,
        "POST",
        path,
        &[
            ("x-tenant-id", "shop"),
            ("content-type", "application/json"),
        ],
        body.to_string(),
    )
    .await
}

/// A JSON request with optional credential.
pub async fn json(
    app: &App,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: serde_json::Value,
) -> Reply {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    call(app, method, path, &headers, body).await
}

/// Mints a key through the admin API and returns its plaintext.
pub async fn mint(
    app: &App,
    name: &str,
    identity: &str,
    role: &str,
    tenant: Option<&str>,
) -> String {
    let mut body = serde_json::json!({"name": name, "identity": identity, "role": role});
    if let Some(t) = tenant {
        body["tenant"] = t.into();
    }
    let r = json(app, "POST", "/api/v1/admin/keys", Some(ADMIN), body).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["plaintext"].as_str().unwrap().to_string()
}
