//! The audit log across processes (SPEC §9.1, §10): gateways on one `redis-server`. An event
//! recorded by one process is listed and tailed by another; while Redis is frozen requests are
//! answered as usual, their events are dropped and counted (never waited for), and recording
//! resumes by itself once Redis is back.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use understudy_e2e::{Gateway, RedisServer, Sse, eventually};

const WAIT: Duration = Duration::from_secs(20);
const ADMIN: &str = "audit-admin-token-0123456789";

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_understudy-gateway"))
}

fn manifests() -> PathBuf {
    understudy_e2e::workspace_root().join("tests/fixtures/manifests")
}

async fn gateway(redis: &RedisServer) -> Gateway {
    let dir = manifests();
    Gateway::start_bin(
        &bin(),
        &[
            "--redis-url",
            &redis.url(),
            "--manifests",
            dir.to_str().unwrap(),
            "--admin-token",
            ADMIN,
        ],
    )
    .await
    .expect("gateway starts")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(WAIT).build().unwrap()
}

/// GET `url` as the admin, as JSON.
async fn admin_get(url: String) -> Value {
    client()
        .get(url)
        .header("x-api-key", ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A tenant of the fixtures and one of its tools.
async fn tenant_and_tool(gw: &Gateway) -> (String, String) {
    let tenants = admin_get(format!("{}/public/tenants", gw.base)).await;
    for t in tenants["tenants"].as_array().unwrap() {
        let id = t["tenant_id"].as_str().unwrap().to_string();
        let tools = admin_get(format!("{}/api/v1/portal/tools?tenant={id}", gw.base)).await;
        if let Some(name) = tools["tools"]
            .as_array()
            .and_then(|a| a.iter().find(|t| t["group"] == "tenant"))
            .and_then(|t| t["name"].as_str())
        {
            return (id, name.to_string());
        }
    }
    panic!("the fixtures hold a tenant with a tool");
}

/// The live tail of `gw`, opened with `key`.
async fn open_tail(gw: &Gateway, key: &str) -> Sse {
    let resp = client()
        .get(format!("{}/api/v1/portal/audit/stream", gw.base))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    Sse::new(resp)
}

async fn call_tool(gw: &Gateway, tenant: &str, tool: &str, marker: &str) -> reqwest::StatusCode {
    client()
        .post(format!("{}/mcp/message", gw.base))
        .header("x-tenant-id", tenant)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": tool, "arguments": {"marker": marker}}}))
        .send()
        .await
        .unwrap()
        .status()
}

async fn events(gw: &Gateway, query: &str) -> Value {
    admin_get(format!("{}/api/v1/portal/audit/events?{query}", gw.base)).await
}

async fn metric(gw: &Gateway, name: &str) -> f64 {
    let text = client()
        .get(format!("{}/metrics", gw.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn an_event_recorded_on_one_process_is_listed_and_tailed_on_another() {
    let redis = RedisServer::start().unwrap();
    let a = gateway(&redis).await;
    let b = gateway(&redis).await;
    let (tenant, tool) = tenant_and_tool(&a).await;
    let mut tail = open_tail(&b, ADMIN).await;
    assert_eq!(call_tool(&a, &tenant, &tool, "m-one").await, 200);
    // The tail on B shows the call made on A.
    let mut seen = None;
    while let Some((_, event, data)) = tail.next(WAIT).await {
        if event == "audit" {
            let e: Value = serde_json::from_str(&data).unwrap();
            if e["tool"] == tool.as_str() && e["source"] == "mcp" {
                seen = Some(e);
                break;
            }
        }
    }
    let e = seen.expect("the tail on B shows the call made on A");
    assert_eq!(e["tenant"], tenant.as_str());
    // B lists it with its payload.
    let id = e["id"].as_str().unwrap().to_string();
    let detail = admin_get(format!("{}/api/v1/portal/audit/events/{id}", b.base)).await;
    assert_eq!(detail["payload"]["request_params"]["marker"], "m-one");
    let found = events(&b, "param.marker=m-one").await;
    assert_eq!(found["total"], 1, "{found}");
}

#[tokio::test]
async fn a_frozen_redis_drops_and_counts_events_and_never_holds_a_request() {
    let redis = RedisServer::start().unwrap();
    let a = gateway(&redis).await;
    let (tenant, tool) = tenant_and_tool(&a).await;
    assert_eq!(call_tool(&a, &tenant, &tool, "before").await, 200);
    eventually(WAIT, || async {
        (events(&a, "param.marker=before").await["total"] == 1).then_some(())
    })
    .await
    .expect("recorded while Redis is up");

    redis.pause().unwrap();
    // Tool calls are answered from the snapshot while the store is frozen.
    for i in 0..20 {
        assert_eq!(
            call_tool(&a, &tenant, &tool, &format!("frozen-{i}")).await,
            200
        );
    }
    // The writer's batch waits for Redis's timeout, then is dropped and counted.
    let dropped = eventually(WAIT, || async {
        let n = metric(&a, "understudy_audit_events_dropped_total").await;
        (n >= 1.0).then_some(n)
    })
    .await;
    redis.resume().unwrap();
    assert!(
        dropped.is_some(),
        "events that could not be stored are counted as dropped"
    );
    // Recording carries on by itself once Redis is back.
    assert_eq!(call_tool(&a, &tenant, &tool, "after").await, 200);
    eventually(WAIT, || async {
        (events(&a, "param.marker=after").await["total"] == 1).then_some(())
    })
    .await
    .expect("recorded again after Redis came back");
}

#[tokio::test]
async fn a_tail_ends_when_its_key_is_revoked() {
    let redis = RedisServer::start().unwrap();
    let a = gateway(&redis).await;
    let b = gateway(&redis).await;
    let minted: Value = client()
        .post(format!("{}/api/v1/admin/keys", a.base))
        .header("x-api-key", ADMIN)
        .json(&json!({"name": "tail-viewer", "role": "viewer"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = minted["plaintext"].as_str().unwrap().to_string();
    let mut tail = open_tail(&b, &key).await;
    let r = client()
        .delete(format!("{}/api/v1/admin/keys/tail-viewer", a.base))
        .header("x-api-key", ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(
        tail.ends(WAIT).await,
        "the tail on B ends once the key is revoked on A"
    );
}
