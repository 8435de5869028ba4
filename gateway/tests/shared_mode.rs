//! Shared mode with real processes: two gateways on one `redis-server`.
//! Propagation, an emptied Redis, Redis going away and coming back, the cross-process rate limit.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use understudy_core::ConfigStore;
use understudy_core::redis::RedisStore;
use understudy_crds::manifests::Parsed;
use understudy_crds::model::ConfigSource;
use understudy_e2e::{Gateway, RedisServer, eventually};

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_understudy-gateway"))
}

fn examples() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .display()
        .to_string()
}

async fn ask(gw: &Gateway, tenant: &str, text: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.base))
        .header("x-tenant-id", tenant)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .expect("gateway answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Whether `gw` comes to answer `tenant` with `expected` (or to 404 it, for `None`) within 5 s.
async fn comes_to_answer(gw: &Gateway, tenant: &str, expected: Option<&str>) -> bool {
    eventually(Duration::from_secs(5), || async {
        let (status, body) = ask(gw, tenant, "hi").await;
        let ok = match expected {
            Some(text) => status == 200 && content(&body) == text,
            None => status == 404,
        };
        ok.then_some(())
    })
    .await
    .is_some()
}

fn content(v: &Value) -> &str {
    v["choices"][0]["message"]["content"].as_str().unwrap_or("")
}

const WRITTEN: &str = r#"
apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {name: written}
spec: {tenantId: written, defaultResponse: "version one"}
"#;

fn tenant_doc(yaml: &str) -> understudy_crds::model::TenantConfig {
    let mut p = Parsed::default();
    p.add_file("t.yaml", yaml);
    p.build(ConfigSource::Api).tenants.remove(0)
}

#[tokio::test]
async fn a_write_reaches_both_processes_and_an_emptied_redis_is_not_read_as_deleted() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let seeder = Gateway::start_bin(&bin(), &["--redis-url", &url, "--manifests", &examples()])
        .await
        .unwrap();
    let plain = Gateway::start_bin(&bin(), &["--redis-url", &url])
        .await
        .unwrap();
    for gw in [&seeder, &plain] {
        let (s, v) = ask(gw, "tenant_ecommerce", "invoice").await;
        assert_eq!(s, 200);
        assert!(content(&v).starts_with("Here are your recent invoices"));
    }

    // A write through the store is served by both processes, and a delete removes it.
    let store = RedisStore::connect(&url).unwrap();
    store.put_tenant(&tenant_doc(WRITTEN)).await.unwrap();
    for gw in [&seeder, &plain] {
        assert!(
            comes_to_answer(gw, "written", Some("version one")).await,
            "{} serves the new tenant",
            gw.base
        );
    }
    store
        .put_tenant(&tenant_doc(&WRITTEN.replace("version one", "version two")))
        .await
        .unwrap();
    for gw in [&seeder, &plain] {
        assert!(
            comes_to_answer(gw, "written", Some("version two")).await,
            "{} serves the update",
            gw.base
        );
    }
    store.delete_tenant("written").await.unwrap();
    for gw in [&seeder, &plain] {
        assert!(
            comes_to_answer(gw, "written", None).await,
            "{} forgets the deleted tenant",
            gw.base
        );
    }

    // Emptied Redis: both keep serving; the seeder writes the manifests back by itself.
    assert_eq!(redis.cli(&["FLUSHALL"]).unwrap(), "OK");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for gw in [&seeder, &plain] {
        let (s, _) = ask(gw, "tenant_ecommerce", "invoice").await;
        assert_eq!(s, 200, "{} still serves after FLUSHALL", gw.base);
    }
    let back = eventually(Duration::from_secs(10), || async {
        (redis
            .cli(&["EXISTS", "us:cfg:tenant:tenant_ecommerce"])
            .ok()?
            == "1")
            .then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "the seeder rewrote the manifests into the emptied Redis"
    );
    // Writes after the flush still propagate (versions restarted from a lower counter).
    store
        .put_tenant(&tenant_doc(&WRITTEN.replace("version one", "after flush")))
        .await
        .unwrap();
    for gw in [&seeder, &plain] {
        assert!(
            comes_to_answer(gw, "written", Some("after flush")).await,
            "{} serves writes made after the flush",
            gw.base
        );
    }
}

#[tokio::test]
async fn redis_outage_keeps_answering_and_reconnects() {
    let redis = RedisServer::start().unwrap();
    let port = redis.port;
    let url = redis.url();
    let gw = Gateway::start_bin(&bin(), &["--redis-url", &url, "--manifests", &examples()])
        .await
        .unwrap();
    assert_eq!(ask(&gw, "tenant_ecommerce", "refund").await.0, 200);
    drop(redis);
    // LLM traffic is answered from the snapshot, chaos counters fall back to the process.
    for _ in 0..3 {
        let (s, v) = ask(&gw, "tenant_ecommerce", "refund").await;
        assert_eq!(s, 200);
        assert_eq!(content(&v), "Refunds take 5 to 7 business days.");
    }
    let r = reqwest::get(format!("{}/readyz", gw.base)).await.unwrap();
    assert_eq!(r.status(), 200, "stays ready while Redis is away");
    // Redis comes back empty on the same port: the gateway reconnects, reseeds, and new writes
    // propagate again.
    let redis = RedisServer::start_on(port).unwrap();
    let store = Arc::new(RedisStore::connect(&url).unwrap());
    let back = eventually(Duration::from_secs(15), || async {
        (redis
            .cli(&["EXISTS", "us:cfg:tenant:tenant_ecommerce"])
            .ok()?
            == "1")
            .then_some(())
    })
    .await;
    assert!(back.is_some(), "manifests rewritten after Redis came back");
    store.put_tenant(&tenant_doc(WRITTEN)).await.unwrap();
    let served = eventually(Duration::from_secs(10), || async {
        (content(&ask(&gw, "written", "hi").await.1) == "version one").then_some(())
    })
    .await;
    assert!(served.is_some(), "notices flow again after the reconnect");
}

const LIMITED: &str = r#"
apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {name: limited}
spec: {tenantId: limited}
---
apiVersion: understudy.dev/v1alpha1
kind: ChaosProfile
metadata: {name: limited}
spec: {tenantRef: limited, profile: rate_limit, limit: 4, windowSeconds: 3600}
"#;

#[tokio::test]
async fn the_rate_limit_holds_across_processes() {
    let redis = RedisServer::start().unwrap();
    let dir = std::env::temp_dir().join(format!("understudy-limit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("limited.yaml"), LIMITED).unwrap();
    let d = dir.display().to_string();
    let url = redis.url();
    let a = Gateway::start_bin(&bin(), &["--redis-url", &url, "--manifests", &d])
        .await
        .unwrap();
    let b = Gateway::start_bin(&bin(), &["--redis-url", &url, "--manifests", &d])
        .await
        .unwrap();
    // Both processes seeded the same folder: one wrote it, the other found the same generation.
    assert_eq!(
        redis.cli(&["GET", "us:cfg:version"]).unwrap(),
        "1",
        "the manifests were written once"
    );
    let mut statuses = Vec::new();
    for i in 0..8 {
        let gw = if i % 2 == 0 { &a } else { &b };
        statuses.push(ask(gw, "limited", "hi").await.0);
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(statuses, vec![200, 200, 200, 200, 429, 429, 429, 429]);
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let mut gw = Gateway::start_bin(&bin(), &["--manifests", &examples()])
        .await
        .unwrap();
    assert_eq!(ask(&gw, "tenant_ecommerce", "refund").await.0, 200);
    let status = gw
        .terminate(Duration::from_secs(15))
        .expect("exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn an_unknown_tenant_is_read_through_before_404() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let gw = Gateway::start_bin(&bin(), &["--redis-url", &url])
        .await
        .unwrap();
    assert_eq!(ask(&gw, "quiet", "hi").await.0, 404);
    // Written behind the gateway's back: no notice is published.
    let doc = serde_json::to_string(&tenant_doc(&WRITTEN.replace("written", "quiet"))).unwrap();
    redis.cli(&["SET", "us:cfg:tenant:quiet", &doc]).unwrap();
    redis.cli(&["HSET", "us:cfg:index", "quiet", "1"]).unwrap();
    // The 404 is remembered briefly (a flood of unknown ids costs no Redis round trip each),
    // then the tenant is read through.
    let found = eventually(Duration::from_secs(5), || async {
        let (status, body) = ask(&gw, "quiet", "hi").await;
        (status == 200).then_some(body)
    })
    .await
    .expect("read through after the negative cache expires");
    assert_eq!(content(&found), "version one");
}

const ADMIN: &str = "shared-mode-admin-token";

async fn api(
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", gw.base))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("gateway answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn api_writes_and_revocations_reach_every_process() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let a = Gateway::start_bin(&bin(), &["--redis-url", &url, "--admin-token", ADMIN])
        .await
        .unwrap();
    let b = Gateway::start_bin(&bin(), &["--redis-url", &url, "--admin-token", ADMIN])
        .await
        .unwrap();
    let post = reqwest::Method::POST;
    let (s, key) = api(
        &a,
        post.clone(),
        "/api/v1/admin/keys",
        ADMIN,
        Some(json!({"name": "alice", "role": "editor"})),
    )
    .await;
    assert_eq!(s, 201);
    let alice = key["plaintext"].as_str().unwrap().to_string();
    // A tenant and a scenario written through A are served by B (waiting on the version).
    let (s, _) = api(
        &a,
        post.clone(),
        "/public/tenants",
        &alice,
        Some(json!({"tenant_id": "alice_t"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, w) = api(
        &a,
        post.clone(),
        "/public/tenants/alice_t/scenarios",
        &alice,
        Some(json!({"keywords": ["ping"], "response": "pong"})),
    )
    .await;
    assert_eq!(s, 201);
    let version = w["version"].as_u64().unwrap().to_string();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", b.base))
        .header("x-tenant-id", "alice_t")
        .header("x-understudy-config-version", &version)
        .bearer_auth(&alice)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "ping"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(content(&r.json().await.unwrap()), "pong");
    // B may read it back through the API too.
    let (s, t) = api(
        &b,
        reqwest::Method::GET,
        "/public/tenants/alice_t",
        &alice,
        None,
    )
    .await;
    assert_eq!((s, t["scenarios"].as_u64()), (200, Some(1)));
    // A key revoked through A is refused by B. The change notice usually lands within
    // milliseconds; the wait is only a generous bound, not a timing assertion.
    let (s, _) = api(
        &a,
        reqwest::Method::DELETE,
        "/api/v1/admin/keys/alice",
        ADMIN,
        None,
    )
    .await;
    assert_eq!(s, 204);
    let refused = eventually(Duration::from_secs(15), || async {
        (api(
            &b,
            reqwest::Method::GET,
            "/public/tenants/alice_t",
            &alice,
            None,
        )
        .await
        .0 == 401)
            .then_some(())
    })
    .await;
    assert!(refused.is_some(), "B never refused the revoked key");
}

#[tokio::test]
async fn a_process_cut_off_from_redis_refuses_authenticated_writes() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let gw = Gateway::start_bin(&bin(), &["--redis-url", &url, "--admin-token", ADMIN])
        .await
        .unwrap();
    let (s, _) = api(
        &gw,
        reqwest::Method::POST,
        "/public/tenants",
        ADMIN,
        Some(json!({"tenant_id": "t"})),
    )
    .await;
    assert_eq!(s, 201);
    drop(redis);
    // Writes need the store (and, past 10 s without it, the process distrusts its keys too).
    let refused = eventually(Duration::from_secs(20), || async {
        let (s, body) = api(
            &gw,
            reqwest::Method::PUT,
            "/public/tenants/t/state",
            ADMIN,
            Some(json!({"state": {}})),
        )
        .await;
        (s == 503 && body["error"]["code"] == "unavailable").then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "authenticated writes answer 503 unavailable"
    );
    // Reads and the data plane keep working from the snapshot.
    assert_eq!(
        api(&gw, reqwest::Method::GET, "/public/tenants/t", ADMIN, None)
            .await
            .0,
        200
    );
}

/// `understudy_redis_errors_total{op}` as the process reports it.
async fn redis_errors(gw: &Gateway, op: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", gw.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("understudy_redis_errors_total{{op=\"{op}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap_or(0))
}

#[tokio::test]
async fn unknown_tenants_answer_503_without_a_store_round_trip_each_while_redis_is_stalled() {
    let redis = RedisServer::start().unwrap();
    let gw = Gateway::start_bin(
        &bin(),
        &["--redis-url", &redis.url(), "--manifests", &examples()],
    )
    .await
    .unwrap();
    assert_eq!(ask(&gw, "tenant_ecommerce", "refund").await.0, 200);
    redis.pause().unwrap();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    // 200 distinct unknown tenants on the LLM surface and the public API, 40 at a time.
    let flood = futures::stream::iter(0..200)
        .map(|i| {
            let client = client.clone();
            let base = gw.base.clone();
            async move {
                if i % 2 == 0 {
                    let r = client
                        .post(format!("{base}/v1/chat/completions"))
                        .header("x-tenant-id", format!("nobody_{i}"))
                        .json(
                            &json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
                        )
                        .send()
                        .await
                        .expect("answered");
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    (
                        "llm",
                        status,
                        body["error"]["type"].as_str().unwrap_or("").to_string(),
                    )
                } else {
                    let r = client
                        .get(format!("{base}/public/tenants/nobody_{i}"))
                        .send()
                        .await
                        .expect("answered");
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    (
                        "public",
                        status,
                        body["error"]["code"].as_str().unwrap_or("").to_string(),
                    )
                }
            }
        })
        .buffer_unordered(40)
        .collect::<Vec<_>>()
        .await;
    assert_eq!(flood.len(), 200);
    for (surface, status, kind) in &flood {
        assert_eq!(
            *status, 503,
            "{surface}: unknown tenant while Redis is stalled"
        );
        // Each surface's own shape: OpenAI's server_error, the envelope's unavailable.
        let want = if *surface == "llm" {
            "server_error"
        } else {
            "unavailable"
        };
        assert_eq!(kind, want, "{surface}");
    }
    // Known tenants keep answering from the snapshot meanwhile.
    assert_eq!(ask(&gw, "tenant_ecommerce", "refund").await.0, 200);
    // The breaker (and the stale-store check) kept almost every one of them off Redis: a
    // handful of read-throughs timed out, not 200.
    let tried = redis_errors(&gw, "read_through").await;
    assert!(
        tried < 20,
        "{tried} read-throughs waited on the stalled Redis"
    );
    redis.resume().unwrap();
    // Back: unknown tenants are plain 404s again.
    let back = eventually(Duration::from_secs(15), || async {
        (ask(&gw, "still_nobody", "hi").await.0 == 404).then_some(())
    })
    .await;
    assert!(back.is_some(), "404 once Redis answers again");
}

/// A `redis-server` listening on a Unix socket only (`--port 0`), killed on drop; the socket
/// file is removed with it.
struct UnixRedis {
    child: std::process::Child,
    socket: PathBuf,
}

impl UnixRedis {
    fn start() -> UnixRedis {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        // Short: a socket path is limited to about 100 bytes.
        let socket =
            std::env::temp_dir().join(format!("us-redis-{}-{nanos}.sock", std::process::id()));
        let child = std::process::Command::new("redis-server")
            .arg("--unixsocket")
            .arg(&socket)
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (is it installed?)");
        let redis = UnixRedis { child, socket };
        for _ in 0..500 {
            if redis.cli(&["PING"]) == "PONG" {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not listen on {}", redis.socket.display());
    }

    fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    fn cli(&self, args: &[&str]) -> String {
        std::process::Command::new("redis-cli")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }
}

impl Drop for UnixRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// `--redis-url unix://…`: a process seeds the manifests over the socket and serves them; a second
/// process on the same socket serves the seeded tenant and a tenant written through the first's
/// API.
#[tokio::test]
async fn a_unix_socket_redis_url_serves_and_shares_writes() {
    let redis = UnixRedis::start();
    let url = redis.url();
    let a = Gateway::start_bin(
        &bin(),
        &[
            "--redis-url",
            &url,
            "--manifests",
            &examples(),
            "--admin-token",
            ADMIN,
        ],
    )
    .await
    .unwrap();
    let b = Gateway::start_bin(&bin(), &["--redis-url", &url])
        .await
        .unwrap();
    for gw in [&a, &b] {
        let found = eventually(Duration::from_secs(10), || async {
            let (s, v) = ask(gw, "tenant_ecommerce", "invoice").await;
            (s == 200).then_some(v)
        })
        .await
        .unwrap_or_else(|| panic!("{} serves the seeded tenant", gw.base));
        assert!(content(&found).starts_with("Here are your recent invoices"));
    }
    // The seeded document is in the server behind the socket, not in a process's memory.
    assert_ne!(redis.cli(&["DBSIZE"]), "0");

    let (s, v) = api(
        &a,
        reqwest::Method::POST,
        "/public/tenants",
        ADMIN,
        Some(json!({"tenant_id": "over-the-socket", "visibility": "global", "default_response": "written on a"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert!(
        comes_to_answer(&b, "over-the-socket", Some("written on a")).await,
        "the second process serves a write made through the first"
    );
}

/// The traffic counters a process keeps reach the store (the operator's `kubectl get` columns
/// read them): requests, unmatched requests and hits per scenario, within a bounded wait (the
/// flusher runs every 2 s).
#[tokio::test]
async fn traffic_counters_reach_the_store() {
    let redis = RedisServer::start().unwrap();
    let url = redis.url();
    let gw = Gateway::start_bin(&bin(), &["--redis-url", &url, "--manifests", &examples()])
        .await
        .unwrap();
    let tenant = "tenant_ecommerce";
    for _ in 0..5 {
        let (s, v) = ask(&gw, tenant, "show me my invoices").await;
        assert_eq!(s, 200);
        assert!(content(&v).starts_with("Here are your recent invoices"));
    }
    for _ in 0..2 {
        let (s, v) = ask(&gw, tenant, "what is the weather like").await;
        assert_eq!(s, 200);
        assert_eq!(
            content(&v),
            "I can help with invoices, refunds and orders.",
            "no scenario matches"
        );
    }
    // The id the store counts hits under: the scenario's, as the API lists it.
    let r = reqwest::get(format!("{}/public/tenants/{tenant}/scenarios", gw.base))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let listed: Value = r.json().await.unwrap();
    let invoices = listed["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["response"]
                .as_str()
                .is_some_and(|r| r.starts_with("Here are your recent invoices"))
        })
        .and_then(|s| s["id"].as_str())
        .expect("the invoices scenario is listed")
        .to_string();

    let stores = understudy_core::Stores::redis(&url).unwrap();
    let totals = eventually(Duration::from_secs(15), || async {
        let t = stores.stats.read_stats(tenant).await.ok()?;
        (t.requests >= 7).then_some(t)
    })
    .await
    .expect("the counters reach the store within 15 s");
    assert_eq!(totals.requests, 7, "{totals:?}");
    assert_eq!(totals.unmatched, 2, "{totals:?}");
    assert_eq!(
        totals.hits,
        std::collections::HashMap::from([(invoices.clone(), 5)]),
        "{totals:?}"
    );
    assert!(totals.last_request_ms > 0, "{totals:?}");

    // Later traffic adds to the totals.
    let (s, _) = ask(&gw, tenant, "invoice").await;
    assert_eq!(s, 200);
    let totals = eventually(Duration::from_secs(15), || async {
        let t = stores.stats.read_stats(tenant).await.ok()?;
        (t.requests >= 8).then_some(t)
    })
    .await
    .expect("the next flush reaches the store within 15 s");
    assert_eq!(totals.requests, 8, "{totals:?}");
    assert_eq!(totals.hits.get(&invoices), Some(&6), "{totals:?}");
}
