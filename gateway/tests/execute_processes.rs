//! The execute API across processes (SPEC §6, §12): three gateways on one `redis-server`. A call
//! executed on one process is streamed from a second and cancelled from a third; a call whose
//! worker process is killed mid-call ends with `WORKER_LOST`, seen from the others.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use understudy_e2e::{Gateway, RedisServer, Sse};

const ADMIN: &str = "admin-token-for-execute-tests";
const WAIT: Duration = Duration::from_secs(20);

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_understudy-gateway"))
}

async fn three() -> (RedisServer, Vec<Gateway>) {
    let redis = RedisServer::start().expect("redis-server starts");
    let url = redis.url();
    let mut gws = Vec::new();
    for _ in 0..3 {
        let gw = Gateway::start_bin(&bin(), &["--redis-url", &url, "--admin-token", ADMIN])
            .await
            .expect("gateway starts");
        gws.push(gw);
    }
    (redis, gws)
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A tenant whose model streams one character every 100 ms (about 6 s per answer).
async fn slow_tenant(gw: &Gateway) {
    let r = client()
        .post(format!("{}/public/tenants", gw.base))
        .bearer_auth(ADMIN)
        .json(&json!({"tenant_id": "slow", "visibility": "global",
            "settings": {"stream_chunk_chars": 1, "stream_chunk_delay_ms": 100},
            "default_response": "a slow answer, streamed one character at a time"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

async fn execute(gw: &Gateway) -> String {
    // The tenant reaches every process through the hub: retry briefly while it is unknown.
    let body =
        json!({"tool": "openai_chat", "input": {"messages": [{"role": "user", "content": "go"}]}});
    for _ in 0..100 {
        let r = client()
            .post(format!("{}/mcp/execute", gw.base))
            .bearer_auth(ADMIN)
            .header("x-tenant-id", "slow")
            .json(&body)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            return r.json::<Value>().await.unwrap()["call_id"]
                .as_str()
                .unwrap()
                .to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("execute never accepted");
}

async fn stream(gw: &Gateway, id: &str) -> Sse {
    let r = client()
        .get(format!("{}/mcp/stream/{id}", gw.base))
        .bearer_auth(ADMIN)
        .header("x-tenant-id", "slow")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    Sse::new(r)
}

async fn status(gw: &Gateway, id: &str) -> Value {
    client()
        .get(format!("{}/mcp/calls/{id}", gw.base))
        .bearer_auth(ADMIN)
        .header("x-tenant-id", "slow")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn executed_on_one_streamed_on_another_cancelled_from_a_third() {
    let (_redis, gws) = three().await;
    let (a, b, c) = (&gws[0], &gws[1], &gws[2]);
    slow_tenant(a).await;
    let id = execute(a).await;
    let mut s = stream(b, &id).await;
    let (_, event, data) = s.next(WAIT).await.expect("a partial event on B");
    assert_eq!(event, "partial");
    assert_eq!(
        serde_json::from_str::<Value>(&data).unwrap()["type"],
        "partial"
    );
    let r = client()
        .post(format!("{}/mcp/cancel/{id}", c.base))
        .bearer_auth(ADMIN)
        .header("x-tenant-id", "slow")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "cancelled");
    // B's stream ends with the cancellation, and nothing after it.
    let mut last = None;
    while let Some((_, event, _)) = s.next(WAIT).await {
        last = Some(event);
    }
    assert_eq!(last.as_deref(), Some("cancelled"));
    assert_eq!(status(c, &id).await["status"], "cancelled");
    // The worker on A stopped: no event is appended after the end (a later stream replays the
    // same events, ending with the cancellation).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut again = stream(c, &id).await;
    let mut kinds = Vec::new();
    while let Some((_, event, _)) = again.next(Duration::from_secs(5)).await {
        kinds.push(event);
    }
    assert_eq!(kinds.last().map(String::as_str), Some("cancelled"));
    assert_eq!(kinds.iter().filter(|k| *k == "cancelled").count(), 1);
}

#[tokio::test]
async fn a_call_whose_worker_process_dies_ends_as_worker_lost() {
    let (_redis, mut gws) = three().await;
    slow_tenant(&gws[0]).await;
    let id = execute(&gws[0]).await;
    let mut s = stream(&gws[1], &id).await;
    let (_, event, _) = s.next(WAIT).await.expect("a partial event on B");
    assert_eq!(event, "partial");
    // The worker's process is killed (SIGKILL: no goodbye).
    drop(gws.remove(0));
    let mut last = None;
    while let Some((_, event, data)) = s.next(WAIT).await {
        last = Some((event, data));
    }
    let (event, data) = last.expect("the stream ends with an event");
    assert_eq!(event, "error");
    assert_eq!(
        serde_json::from_str::<Value>(&data).unwrap()["code"],
        "WORKER_LOST"
    );
    let c = status(&gws[1], &id).await;
    assert_eq!(
        (c["status"].clone(), c["error"].clone()),
        (json!("error"), json!("WORKER_LOST"))
    );
}
