//! Apply and status against a real `redis-server` and the scripted API server: every request the
//! operator makes is asserted (finalizers, status patches, Events, cleanup on delete).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{SHOP, create_all, inputs, listed};
use http::Method;
use serde_json::Value;
use understudy_core::{Counter, StatsBatch, Stores, TenantStats};
use understudy_crds::model::{ConfigSource, TenantConfig};
use understudy_crds::resources::Visibility;
use understudy_crds::resources::{ChaosProfile, Scenario, Tenant};
use understudy_e2e::{Gateway, RedisServer, eventually};
use understudy_operator::metrics::Metrics;
use understudy_operator::plan::FINALIZER;
use understudy_operator::reconcile::{Reconciler, Settings};
use understudy_operator::testkit::{FakeApi, Recorded};

struct Rig {
    api: FakeApi,
    store: Stores,
    reconciler: Reconciler,
    metrics: Arc<Metrics>,
    redis: RedisServer,
}

fn rig_on(redis: RedisServer) -> Rig {
    let (api, client) = FakeApi::start();
    let store = Stores::redis(&redis.url()).expect("valid url");
    let metrics = Arc::new(Metrics::new());
    let reconciler = Reconciler::new(
        client,
        store.clone(),
        metrics.clone(),
        Settings {
            concurrency: 4,
            ..Settings::default()
        },
    );
    Rig {
        api,
        store,
        reconciler,
        metrics,
        redis,
    }
}

fn rig() -> Rig {
    rig_on(RedisServer::start().expect("redis-server starts"))
}

impl Rig {
    async fn pass(&mut self) -> understudy_operator::reconcile::Outcome {
        let inputs = listed(&self.api);
        self.reconciler.reconcile(&inputs).await
    }
    async fn doc(&self, id: &str) -> Option<TenantConfig> {
        self.store
            .config
            .get_tenant(id)
            .await
            .expect("redis")
            .map(|(t, _)| t)
    }
}

fn ready(status: Option<&Value>) -> (String, String) {
    let c = status
        .and_then(|s| s["conditions"].as_array())
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or(Value::Null);
    (
        c["status"].as_str().unwrap_or("").to_string(),
        c["reason"].as_str().unwrap_or("").to_string(),
    )
}

fn status_of<K: serde::Serialize>(obj: &K) -> Value {
    serde_json::to_value(obj).unwrap()["status"].clone()
}

fn patches<'a>(reqs: &'a [Recorded], suffix: &str) -> Vec<&'a Recorded> {
    reqs.iter()
        .filter(|r| r.method == Method::PATCH && r.path.ends_with(suffix))
        .collect()
}

fn events(reqs: &[Recorded]) -> Vec<(String, String)> {
    reqs.iter()
        .filter(|r| r.method == Method::POST && r.path.contains("/apis/events.k8s.io/v1/"))
        .map(|r| {
            (
                r.body["reason"].as_str().unwrap_or("").to_string(),
                r.body["regarding"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn writes_redis_adds_finalizers_patches_status_then_goes_quiet() {
    let mut r = rig();
    create_all(&r.api, &inputs(SHOP));

    let out = r.pass().await;
    assert!(!out.retry(), "{out:?}");
    let reqs = r.api.take_requests();
    // One finalizer patch per resource, on the object (not status), keeping the resourceVersion.
    let fin: Vec<_> = reqs
        .iter()
        .filter(|q| q.method == Method::PATCH && !q.path.ends_with("/status"))
        .collect();
    assert_eq!(fin.len(), 4, "{fin:#?}");
    for q in &fin {
        assert_eq!(
            q.body["metadata"]["finalizers"],
            serde_json::json!([FINALIZER])
        );
        assert!(q.body["metadata"]["resourceVersion"].is_string());
    }
    // One status patch per resource, all Ready=True/Synced with observedGeneration.
    let st = patches(&reqs, "/status");
    assert_eq!(st.len(), 4);
    for q in &st {
        assert_eq!(
            ready(Some(&q.body["status"])),
            ("True".into(), "Synced".into()),
            "{q:?}"
        );
        assert_eq!(q.body["status"]["observedGeneration"], 1);
    }
    // No Event for a routine first Synced.
    assert!(events(&reqs).is_empty(), "{:?}", events(&reqs));

    let tenant: Tenant = r.api.get("staging", "shop").unwrap();
    let ts = tenant.status.unwrap();
    assert_eq!(
        (ts.scenarios, ts.tools, ts.chaos.as_deref()),
        (2, 1, Some("latency"))
    );
    assert_eq!(tenant.metadata.finalizers.unwrap(), [FINALIZER]);

    let doc = r.doc("tenant_shop").await.expect("tenant written");
    assert_eq!(doc.source, ConfigSource::Kubernetes);
    assert_eq!(doc.scenarios.len(), 2);
    assert!(
        r.store.config.epoch().await.unwrap().is_some(),
        "epoch marked after writing"
    );

    // Nothing changed: a pass makes no API call and no write.
    let out = r.pass().await;
    assert_eq!(out.apply.written, 0);
    assert!(r.api.take_requests().is_empty());

    // A spec change is written and its status says the new generation.
    r.api.update_spec::<Scenario>(
        "staging",
        "refunds",
        serde_json::json!({"tenantRef": "shop", "keywords": ["refund"], "response": "Refund issued."}),
    );
    let out = r.pass().await;
    assert_eq!(out.apply.written, 1);
    let doc = r.doc("tenant_shop").await.unwrap();
    assert_eq!(doc.scenarios[1].spec.response, "Refund issued.");
    let s: Scenario = r.api.get("staging", "refunds").unwrap();
    assert_eq!(s.status.unwrap().observed_generation, Some(2));
}

#[tokio::test]
async fn deleting_a_scenario_removes_it_from_redis_then_releases_the_finalizer() {
    let mut r = rig();
    create_all(&r.api, &inputs(SHOP));
    r.pass().await;
    r.api.take_requests();

    r.api.delete::<Scenario>("staging", "invoices");
    assert!(
        r.api.get::<Scenario>("staging", "invoices").is_some(),
        "held by the finalizer"
    );
    let out = r.pass().await;
    assert_eq!(out.finalizers_removed, 1, "{out:?}");
    let doc = r.doc("tenant_shop").await.unwrap();
    assert_eq!(doc.scenarios.len(), 1);
    assert_eq!(doc.scenarios[0].id, "staging/refunds");
    assert!(
        r.api.get::<Scenario>("staging", "invoices").is_none(),
        "gone once released"
    );
    let reqs = r.api.take_requests();
    let released: Vec<_> = reqs
        .iter()
        .filter(|q| q.method == Method::PATCH && q.path.ends_with("/scenarios/invoices"))
        .collect();
    assert_eq!(released.len(), 1);
    assert_eq!(
        released[0].body["metadata"]["finalizers"],
        serde_json::json!([])
    );
    // The tenant's counts follow.
    let t: Tenant = r.api.get("staging", "shop").unwrap();
    assert_eq!(t.status.unwrap().scenarios, 1);
}

#[tokio::test]
async fn deleting_a_tenant_purges_its_document_and_counters() {
    let mut r = rig();
    create_all(&r.api, &inputs(SHOP));
    r.pass().await;
    let mut batch = StatsBatch::default();
    batch.tenants.insert(
        "tenant_shop".into(),
        TenantStats {
            requests: 3,
            ..Default::default()
        },
    );
    r.store.stats.flush_stats(&batch).await.unwrap();
    r.store
        .runtime
        .incr("tenant_shop", Counter::Every)
        .await
        .unwrap();

    r.api.delete::<Tenant>("staging", "shop");
    let out = r.pass().await;
    assert_eq!(out.apply.deleted, ["tenant_shop"]);
    assert!(r.doc("tenant_shop").await.is_none());
    assert_eq!(
        r.redis.cli(&["KEYS", "us:stats:tenant_shop:*"]).unwrap(),
        ""
    );
    assert_eq!(r.redis.cli(&["KEYS", "us:rt:tenant_shop:*"]).unwrap(), "");
    assert!(r.api.get::<Tenant>("staging", "shop").is_none());
    // Its scenarios now say why they are not served.
    let s: Scenario = r.api.get("staging", "invoices").unwrap();
    assert_eq!(
        ready(Some(&status_of(&s))),
        ("False".into(), "TenantNotFound".into())
    );
}

#[tokio::test]
async fn bad_input_gets_conditions_and_events_once_and_no_hot_retry() {
    let yaml = format!(
        r#"{SHOP}
---
apiVersion: understudy.dev/v1alpha1
kind: Scenario
metadata: {{name: orphan, namespace: staging}}
spec: {{tenantRef: missing, keywords: [x], response: y}}
---
apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {{name: copycat, namespace: other}}
spec: {{tenantId: tenant_shop}}
---
apiVersion: understudy.dev/v1alpha1
kind: Scenario
metadata: {{name: broken-schema, namespace: staging}}
spec: {{tenantRef: shop, toolName: t, toolInputSchema: {{type: 12}}}}
---
apiVersion: understudy.dev/v1alpha1
kind: ChaosProfile
metadata: {{name: too-likely, namespace: staging}}
spec: {{tenantRef: shop, profile: server_error, probability: 2}}
---
apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {{name: secret, namespace: staging}}
spec: {{visibility: private}}
"#
    );
    let mut r = rig();
    create_all(&r.api, &inputs(&yaml));
    let out = r.pass().await;
    // Retrying cannot fix a resource; only a change to it can.
    assert!(!out.retry(), "{out:?}");
    let reqs = r.api.take_requests();
    let mut ev = events(&reqs);
    ev.sort();
    assert_eq!(
        ev,
        [
            ("DuplicateTenantId".to_string(), "copycat".to_string()),
            ("Invalid".into(), "secret".into()),
            ("Invalid".into(), "too-likely".into()),
            ("InvalidSchema".into(), "broken-schema".into()),
            ("TenantNotFound".into(), "orphan".into()),
        ]
    );
    for (ns, name, reason) in [
        ("staging", "orphan", "TenantNotFound"),
        ("staging", "broken-schema", "InvalidSchema"),
    ] {
        let s: Scenario = r.api.get(ns, name).unwrap();
        assert_eq!(
            ready(Some(&status_of(&s))),
            ("False".into(), reason.into()),
            "{name}"
        );
    }
    let c: ChaosProfile = r.api.get("staging", "too-likely").unwrap();
    let cs = status_of(&c);
    assert_eq!(ready(Some(&cs)).1, "Invalid");
    assert!(
        cs["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("spec.probability")
    );
    let t: Tenant = r.api.get("other", "copycat").unwrap();
    assert_eq!(ready(Some(&status_of(&t))).1, "DuplicateTenantId");
    // What the good resources put in Redis is intact.
    let doc = r.doc("tenant_shop").await.unwrap();
    assert_eq!(doc.origin, "Tenant staging/shop");
    assert_eq!(doc.scenarios.len(), 2);
    assert_eq!(
        doc.chaos.as_ref().map(|c| c.profile.as_str()),
        Some("latency")
    );

    // A second pass: no status patch, no Event, no write.
    r.pass().await;
    let reqs = r.api.take_requests();
    assert!(reqs.is_empty(), "{reqs:#?}");
}

#[tokio::test]
async fn a_tenant_id_taken_through_the_api_is_left_alone() {
    let mut r = rig();
    let api_tenant = TenantConfig {
        tenant_id: "tenant_shop".into(),
        visibility: Visibility::Private,
        owner: Some("alice".into()),
        state: serde_json::json!({}),
        settings: serde_json::json!({}),
        default_response: Some("from the API".into()),
        scenarios: vec![],
        chaos: None,
        source: ConfigSource::Api,
        origin: "api".into(),
    };
    r.store.config.put_tenant(&api_tenant).await.unwrap();
    create_all(&r.api, &inputs(SHOP));
    let out = r.pass().await;
    assert!(out.apply.conflicts.contains_key("tenant_shop"));
    assert_eq!(r.doc("tenant_shop").await.unwrap(), api_tenant);
    let t: Tenant = r.api.get("staging", "shop").unwrap();
    let st = status_of(&t);
    assert_eq!(
        ready(Some(&st)),
        ("False".into(), "DuplicateTenantId".into())
    );
    assert!(
        st["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("public API")
    );
    let s: Scenario = r.api.get("staging", "invoices").unwrap();
    let st = status_of(&s);
    assert_eq!(ready(Some(&st)).1, "TenantNotReady");
    let message = st["conditions"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("Tenant staging/shop is not in force (DuplicateTenantId)")
            && message.contains("public API"),
        "{message}"
    );
}

#[tokio::test]
async fn traffic_counters_reach_status_and_unchanged_counters_patch_nothing() {
    let mut r = rig();
    create_all(&r.api, &inputs(SHOP));
    r.pass().await;
    r.api.take_requests();

    let mut batch = StatsBatch::default();
    let mut stats = TenantStats {
        requests: 7,
        unmatched: 2,
        last_request_ms: 1_790_000_000_000,
        ..Default::default()
    };
    stats.hits.insert("staging/invoices".into(), 5);
    batch.tenants.insert("tenant_shop".into(), stats);
    r.store.stats.flush_stats(&batch).await.unwrap();

    assert!(r.reconciler.refresh_stats().await);
    r.pass().await;
    let reqs = r.api.take_requests();
    // The tenant and the scenario with hits changed; the other scenario and the chaos profile
    // did not.
    let st = patches(&reqs, "/status");
    assert_eq!(st.len(), 2, "{reqs:#?}");
    assert!(st.iter().any(|q| q.path.ends_with("/tenants/shop/status")));
    assert!(
        st.iter()
            .any(|q| q.path.ends_with("/scenarios/invoices/status"))
    );
    assert!(events(&reqs).is_empty(), "counter updates raise no Events");
    let t: Tenant = r.api.get("staging", "shop").unwrap();
    let ts = t.status.unwrap();
    assert_eq!((ts.requests, ts.unmatched), (7, 2));
    assert_eq!(
        ts.last_request_time.as_deref(),
        Some("2026-09-21T14:13:20Z")
    );
    let s: Scenario = r.api.get("staging", "invoices").unwrap();
    assert_eq!(s.status.unwrap().hits, 5);

    assert!(!r.reconciler.refresh_stats().await, "nothing new");
    r.pass().await;
    assert!(r.api.take_requests().is_empty());
}

/// Events the operator published (created or, for a repeat, patched): (type, reason, object).
fn all_events(reqs: &[Recorded]) -> Vec<(String, String, String)> {
    reqs.iter()
        .filter(|r| r.path.contains("/apis/events.k8s.io/v1/") && r.method != Method::GET)
        .map(|r| {
            let s = |v: &Value| v.as_str().unwrap_or("").to_string();
            (
                s(&r.body["type"]),
                s(&r.body["reason"]),
                s(&r.body["regarding"]["name"]),
            )
        })
        .collect()
}

/// Passes until one succeeds, checking the store first as the run loop does every second.
async fn recover(r: &mut Rig) -> understudy_operator::reconcile::Outcome {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let _ = r.reconciler.applier().check_store().await;
        let out = r.pass().await;
        if !out.retry() {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "recovers once Redis is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn redis_down_keeps_conditions_is_recorded_once_per_tenant_then_recovers() {
    let mut r = rig();
    create_all(&r.api, &inputs(SHOP));
    r.pass().await;
    r.api.take_requests();
    let port = r.redis.port;

    // Redis goes away; a spec change cannot be written.
    drop(std::mem::replace(
        &mut r.redis,
        RedisServer::start().unwrap(),
    ));
    r.api.update_spec::<Scenario>(
        "staging",
        "refunds",
        serde_json::json!({"tenantRef": "shop", "keywords": ["refund"], "response": "Changed."}),
    );
    let out = r.pass().await;
    assert!(out.retry(), "a store failure is retried");
    assert!(out.apply.unavailable.is_some());
    // Every resource keeps the condition it had: the gateways still serve what they hold.
    let t: Tenant = r.api.get("staging", "shop").unwrap();
    assert_eq!(
        ready(Some(&status_of(&t))),
        ("True".into(), "Synced".into())
    );
    let s: Scenario = r.api.get("staging", "refunds").unwrap();
    let st = s.status.unwrap();
    assert_eq!(
        (st.conditions[0].reason.as_str(), st.observed_generation),
        ("Synced", Some(1)),
        "not claimed as applied"
    );
    // One Event, on the Tenant; a retry during the same outage adds none.
    let _ = r.pass().await;
    let reqs = r.api.take_requests();
    assert!(patches(&reqs, "/status").is_empty(), "{reqs:#?}");
    assert_eq!(
        all_events(&reqs),
        [(
            "Warning".to_string(),
            "StoreUnavailable".to_string(),
            "shop".to_string()
        )]
    );

    // Redis is back on its port, empty: the store check notices, the next pass writes everything.
    r.redis = RedisServer::start_on(port).unwrap();
    let back = recover(&mut r).await;
    assert!(back.apply.written >= 1);
    let doc = r.doc("tenant_shop").await.unwrap();
    assert_eq!(doc.scenarios[1].spec.response, "Changed.");
    let s: Scenario = r.api.get("staging", "refunds").unwrap();
    assert_eq!(s.status.unwrap().observed_generation, Some(2));
    assert_eq!(
        all_events(&r.api.take_requests()),
        [(
            "Normal".to_string(),
            "StoreAvailable".to_string(),
            "shop".to_string()
        )]
    );
}

/// Issue 14, item 3: the same outage with 300 Scenarios (and one new while Redis is down) is two
/// Events, one Warning and one Normal on the Tenant, where it was one pair per resource.
#[tokio::test]
async fn an_outage_is_two_events_on_the_tenant_whatever_its_size() {
    let mut r = rig();
    let mut yaml = String::from(SHOP);
    for i in 0..298 {
        yaml.push_str(&format!(
            "---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {{name: s{i:03}, namespace: staging}}\nspec: {{tenantRef: shop, keywords: [k{i}], response: r}}\n"
        ));
    }
    let world = inputs(&yaml);
    let in_force = world.tenants.len() + world.scenarios.len() + world.chaos.len();
    assert_eq!(world.scenarios.len(), 300);
    create_all(&r.api, &world);
    assert!(!r.pass().await.retry());
    r.api.take_requests();
    let port = r.redis.port;

    drop(std::mem::replace(
        &mut r.redis,
        RedisServer::start().unwrap(),
    ));
    // What the outage meets: a resync (the 60 s period), retries with backoff, a new Scenario.
    r.reconciler.applier().resync();
    assert!(r.pass().await.retry());
    let mut late = world.scenarios[0].clone();
    late.metadata.name = Some("late".into());
    r.api.create::<Scenario>(&late);
    for _ in 0..3 {
        assert!(r.pass().await.retry());
    }
    // The new Scenario has no condition to keep: it says why it is not served yet, quietly.
    let s: Scenario = r.api.get("staging", "late").unwrap();
    assert_eq!(
        ready(Some(&status_of(&s))),
        ("False".into(), "StoreUnavailable".into())
    );
    r.redis = RedisServer::start_on(port).unwrap();
    recover(&mut r).await;
    let events = all_events(&r.api.take_requests());
    eprintln!(
        "outage with {in_force} resources in force: {} Warning, {} Normal Event(s)",
        events.iter().filter(|e| e.0 == "Warning").count(),
        events.iter().filter(|e| e.0 == "Normal").count()
    );
    assert_eq!(
        events,
        [
            (
                "Warning".to_string(),
                "StoreUnavailable".to_string(),
                "shop".to_string()
            ),
            ("Normal".into(), "StoreAvailable".into(), "shop".into()),
        ]
    );
    let s: Scenario = r.api.get("staging", "late").unwrap();
    assert_eq!(
        ready(Some(&status_of(&s))),
        ("True".into(), "Synced".into())
    );
    assert_eq!(r.doc("tenant_shop").await.unwrap().scenarios.len(), 301);
}

#[tokio::test]
async fn kube_errors_are_retried_and_counted() {
    let mut r = rig();
    create_all(&r.api, &inputs(SHOP));
    r.api.fail(Method::PATCH, "/status", 500, 1);
    let out = r.pass().await;
    assert_eq!(out.kube_errors, 1);
    assert!(out.retry());
    let out = r.pass().await;
    assert!(!out.retry(), "{out:?}");
    assert!(
        r.metrics
            .render()
            .contains("understudy_operator_reconcile_errors_total{cause=\"kube\"} 1")
    );
}

/// SPEC §10: an emptied Redis is noticed (epoch) and everything is written back, and a gateway
/// process serving from that Redis keeps answering and sees later changes.
#[tokio::test]
async fn an_emptied_redis_is_rewritten_and_gateways_follow() {
    let mut r = rig();
    let many: String = (0..3)
        .map(|i| {
            format!(
                "---\napiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: t{i}}}\nspec: {{}}\n---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {{name: s{i}}}\nspec: {{tenantRef: t{i}, keywords: [hello], response: \"answer {i}\"}}\n"
            )
        })
        .collect();
    create_all(&r.api, &inputs(&many));
    r.pass().await;
    let url = r.redis.url();
    let gw = Gateway::start(&["--redis-url", &url])
        .await
        .expect("gateway starts");
    let http = reqwest::Client::new();
    let ask = |tenant: &'static str| {
        let http = http.clone();
        let base = gw.base.clone();
        async move {
            let resp = http
                .post(format!("{base}/v1/chat/completions"))
                .header("X-Tenant-ID", tenant)
                .json(&serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}))
                .send()
                .await
                .ok()?;
            let v: Value = resp.json().await.ok()?;
            v["choices"][0]["message"]["content"]
                .as_str()
                .map(str::to_string)
        }
    };
    assert_eq!(ask("t1").await.as_deref(), Some("answer 1"));

    r.redis.cli(&["FLUSHALL"]).unwrap();
    // Before the operator rewrites anything, the gateway notices the emptied Redis (it checks
    // every second) and keeps serving its snapshot rather than reading "every tenant deleted".
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        ask("t1").await.as_deref(),
        Some("answer 1"),
        "served in the gap"
    );
    assert!(
        r.reconciler.applier().check_store().await.unwrap(),
        "loss noticed"
    );
    let out = r.pass().await;
    assert!(out.apply.rewrote);
    assert_eq!(out.apply.written, 3);
    for i in 0..3 {
        assert!(r.doc(&format!("t{i}")).await.is_some(), "t{i} back");
    }
    assert!(r.store.config.epoch().await.unwrap().is_some());
    assert!(
        r.metrics
            .render()
            .contains("understudy_operator_rewrites_total 1")
    );
    assert_eq!(
        ask("t1").await.as_deref(),
        Some("answer 1"),
        "served throughout"
    );

    // Writes after the rewrite reach the gateway.
    r.api.update_spec::<Scenario>(
        "default",
        "s2",
        serde_json::json!({"tenantRef": "t2", "keywords": ["hello"], "response": "changed after the flush"}),
    );
    r.pass().await;
    let seen = eventually(Duration::from_secs(10), || async {
        (ask("t2").await.as_deref() == Some("changed after the flush")).then_some(())
    })
    .await;
    assert!(seen.is_some(), "the gateway serves the new version");
}

#[tokio::test]
async fn a_finalizer_is_kept_while_redis_cannot_be_cleaned() {
    let mut r = rig();
    create_all(&r.api, &inputs(SHOP));
    r.pass().await;
    let port = r.redis.port;
    r.api.delete::<Scenario>("staging", "invoices");
    drop(std::mem::replace(
        &mut r.redis,
        RedisServer::start().unwrap(),
    ));
    r.api.take_requests();
    let out = r.pass().await;
    assert!(out.retry());
    assert_eq!(out.finalizers_removed, 0);
    let held: Scenario = r.api.get("staging", "invoices").expect("still held");
    assert_eq!(held.metadata.finalizers.unwrap(), [FINALIZER]);
    assert!(
        !r.api
            .take_requests()
            .iter()
            .any(|q| q.method == Method::PATCH && q.path.ends_with("/scenarios/invoices")),
        "no finalizer release while the data may still be in Redis"
    );
    // Back (empty, as after a restart without persistence): rewritten without the scenario,
    // then released.
    r.redis = RedisServer::start_on(port).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let _ = r.reconciler.applier().check_store().await;
        if !r.pass().await.retry() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "recovers");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(r.api.get::<Scenario>("staging", "invoices").is_none());
    let doc = r.doc("tenant_shop").await.unwrap();
    assert_eq!(doc.scenarios.len(), 1);
}

#[tokio::test]
async fn a_tenant_leaving_service_reports_it_and_then_goes_quiet() {
    let mut r = rig();
    create_all(&r.api, &inputs(SHOP));
    r.pass().await;
    // An edit admission would refuse (the CEL rule), reaching the operator anyway (say, the
    // CRDs were not upgraded): the operator still judges it.
    r.api.update_spec::<Tenant>(
        "staging",
        "shop",
        serde_json::json!({"tenantId": "tenant_shop", "visibility": "private"}),
    );
    r.pass().await;
    assert!(r.doc("tenant_shop").await.is_none(), "out of service");
    let t: Tenant = r.api.get("staging", "shop").unwrap();
    let st = t.status.unwrap();
    assert_eq!(st.chaos.as_deref(), Some("none"), "no stale profile");
    assert_eq!((st.scenarios, st.tools), (0, 0));
    assert_eq!(st.conditions[0].reason, "Invalid");
    assert_eq!(st.observed_generation, Some(2));
    r.api.take_requests();
    r.pass().await;
    assert!(
        r.api.take_requests().is_empty(),
        "no status patch on every pass"
    );
}

#[tokio::test]
async fn a_changed_chaos_profile_starts_from_zero() {
    let mut r = rig();
    create_all(&r.api, &inputs(SHOP));
    r.pass().await;
    r.store
        .runtime
        .incr("tenant_shop", Counter::Every)
        .await
        .unwrap();
    // Unrelated edits keep the counters.
    r.api.update_spec::<Scenario>(
        "staging",
        "refunds",
        serde_json::json!({"tenantRef": "shop", "keywords": ["refund"], "response": "Other."}),
    );
    r.pass().await;
    assert_eq!(
        r.redis
            .cli(&["HGET", "us:rt:tenant_shop:every", "n"])
            .unwrap(),
        "1"
    );
    r.api.update_spec::<ChaosProfile>(
        "staging",
        "slow",
        serde_json::json!({"tenantRef": "shop", "profile": "server_error", "every": 3}),
    );
    r.pass().await;
    assert_eq!(
        r.redis
            .cli(&["HGET", "us:rt:tenant_shop:every", "n"])
            .unwrap(),
        ""
    );
}

#[tokio::test]
async fn operators_watching_different_namespaces_share_one_redis() {
    let redis = RedisServer::start().unwrap();
    let store = Stores::redis(&redis.url()).unwrap();
    let mut sides = Vec::new();
    for ns in ["team-a", "team-b"] {
        let (api, client) = FakeApi::start();
        let yaml = format!(
            "apiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: t, namespace: {ns}}}\nspec: {{tenantId: {ns}}}\n---\napiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: clash, namespace: {ns}}}\nspec: {{tenantId: shared}}\n"
        );
        create_all(&api, &inputs(&yaml));
        let rec = Reconciler::new(
            client,
            store.clone(),
            Arc::new(Metrics::new()),
            Settings {
                namespaces: vec![ns.to_string()],
                ..Settings::default()
            },
        );
        sides.push((api, rec));
    }
    for _ in 0..2 {
        for (api, rec) in sides.iter_mut() {
            rec.applier().resync();
            let out = rec.reconcile(&listed(api)).await;
            assert!(out.apply.deleted.is_empty(), "{out:?}");
        }
    }
    for id in ["team-a", "team-b"] {
        assert!(
            store.config.get_tenant(id).await.unwrap().is_some(),
            "{id} kept"
        );
    }
    // The id both claim stays with the first; the other is told why.
    let (doc, _) = store.config.get_tenant("shared").await.unwrap().unwrap();
    assert_eq!(doc.origin, "Tenant team-a/clash");
    let t: Tenant = sides[1].0.get("team-b", "clash").unwrap();
    let st = status_of(&t);
    assert_eq!(ready(Some(&st)).1, "DuplicateTenantId");
    assert!(
        st["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .contains("other namespaces")
    );
}

/// Two Tenants (`shop` as `tenant_shop`, and `control`) for the counter races.
const TWO: &str = r#"
apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {name: shop, namespace: staging}
spec: {tenantId: tenant_shop}
---
apiVersion: understudy.dev/v1alpha1
kind: Scenario
metadata: {name: invoices, namespace: staging}
spec: {tenantRef: shop, keywords: [invoice], response: "Two invoices."}
---
apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {name: control, namespace: staging}
spec: {}
"#;

/// One chat request to `tenant` on a gateway process; whether it was answered.
async fn chat(base: &str, tenant: &str) -> bool {
    reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .header("X-Tenant-ID", tenant)
        .json(&serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "an invoice"}]}))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Waits until the gateway has flushed `n` requests of `control` (its flush runs every 2 s and
/// carries every tenant's counts in one pipeline, so this also says the other counts were sent).
async fn flushed(store: &Stores, n: u64) {
    let seen = eventually(Duration::from_secs(20), || async {
        let t = store.stats.read_stats("control").await.ok()?;
        (t.requests >= n).then_some(())
    })
    .await;
    assert!(
        seen.is_some(),
        "the gateway flushed {n} request(s) of control"
    );
}

/// A Tenant claiming `tenant_shop` again: another object, another namespace (another team).
fn claimant() -> Tenant {
    inputs("apiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {name: mine, namespace: other-team}\nspec: {tenantId: tenant_shop}\n")
        .tenants
        .remove(0)
}

/// What the new Tenant shows once the operator has read the counters.
async fn claimant_status(r: &mut Rig) -> understudy_crds::resources::TenantStatus {
    r.reconciler.refresh_stats().await;
    r.pass().await;
    let t: Tenant = r.api.get("other-team", "mine").unwrap();
    t.status.unwrap()
}

/// Issue 14, item 2: a request, then `kubectl delete tenant` and a new Tenant under the same id,
/// all before the gateway's next flush. The flush lands after the purge: it recreates nothing for
/// the deleted tenant, and the new one starts from zero; its own traffic counts.
#[tokio::test]
async fn counters_die_with_their_tenant_when_a_flush_races_the_deletion() {
    let mut r = rig();
    create_all(&r.api, &inputs(TWO));
    r.pass().await;
    let gw = Gateway::start(&["--redis-url", &r.redis.url()])
        .await
        .expect("gateway starts");
    // Just after a flush, so that what follows happens well within the next interval.
    assert!(chat(&gw.base, "control").await);
    flushed(&r.store, 1).await;
    assert!(chat(&gw.base, "tenant_shop").await);
    assert!(chat(&gw.base, "control").await);
    r.api.delete::<Tenant>("staging", "shop");
    let out = r.pass().await;
    assert_eq!(out.apply.deleted, ["tenant_shop"]);
    r.api.create::<Tenant>(&claimant());
    let out = r.pass().await;
    assert_eq!(out.apply.written, 1);
    let raced = r.store.stats.read_stats("control").await.unwrap().requests == 1;
    eprintln!("the flush came after the deletion and the new Tenant: {raced}");

    flushed(&r.store, 2).await;
    assert_eq!(
        r.store.stats.read_stats("tenant_shop").await.unwrap(),
        Default::default(),
        "the old tenant's request does not reach the new one"
    );
    assert_eq!(
        r.redis
            .cli(&["HGET", "us:stats:tenant_shop:tenant", "requests"])
            .unwrap(),
        ""
    );
    let st = claimant_status(&mut r).await;
    assert_eq!((st.requests, st.last_request_time), (0, None));

    // The new tenant's own traffic counts (its documents' versions are of its incarnation).
    assert!(chat(&gw.base, "tenant_shop").await);
    assert!(chat(&gw.base, "control").await);
    flushed(&r.store, 3).await;
    assert_eq!(
        r.store
            .stats
            .read_stats("tenant_shop")
            .await
            .unwrap()
            .requests,
        1
    );
    assert_eq!(claimant_status(&mut r).await.requests, 1);
}

/// A `redis-server` that persists (AOF) in a directory of its own, so that it can be stopped and
/// started again with its data, as the chart's bundled Redis is.
struct PersistentRedis {
    child: Option<std::process::Child>,
    port: u16,
    dir: std::path::PathBuf,
}

impl PersistentRedis {
    fn start() -> PersistentRedis {
        let port = understudy_e2e::free_port();
        let dir = std::env::temp_dir().join(format!("understudy-op-redis-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = PersistentRedis {
            child: None,
            port,
            dir,
        };
        r.up();
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn up(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if self.cli(&["PING"]) == "PONG" {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not start");
    }

    /// Stops it (SIGTERM: a clean shutdown, its data kept).
    fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    fn cli(&self, args: &[&str]) -> String {
        std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }
}

impl Drop for PersistentRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Issue 14, item 2: Redis down (stopped, persisting) while a Tenant with buffered counts is
/// deleted. The deletion waits for Redis; the gateway keeps its counts through the outage and
/// flushes them once Redis is back, after the deletion completed and a new Tenant claimed the id:
/// nothing is recreated for the deleted tenant, nothing reaches the new one, and a resync finds
/// nothing to correct.
#[tokio::test]
async fn counters_die_with_their_tenant_deleted_during_an_outage() {
    let mut redis = PersistentRedis::start();
    let (api, client) = FakeApi::start();
    let store = Stores::redis(&redis.url()).unwrap();
    let mut reconciler = Reconciler::new(
        client,
        store.clone(),
        Arc::new(Metrics::new()),
        Settings::default(),
    );
    create_all(&api, &inputs(TWO));
    assert!(!reconciler.reconcile(&listed(&api)).await.retry());
    let gw = Gateway::start(&["--redis-url", &redis.url()])
        .await
        .expect("gateway starts");
    assert!(chat(&gw.base, "control").await);
    flushed(&store, 1).await;
    assert!(chat(&gw.base, "tenant_shop").await);
    assert!(chat(&gw.base, "control").await);
    redis.down();

    api.delete::<Tenant>("staging", "shop");
    let out = reconciler.reconcile(&listed(&api)).await;
    assert!(out.apply.unavailable.is_some(), "{out:?}");
    assert!(
        api.get::<Tenant>("staging", "shop").is_some(),
        "held by its finalizer while Redis is down"
    );
    // The gateway tries to flush and fails; it keeps the counts for its next flush, 2 s later.
    let failed = eventually(Duration::from_secs(20), || async {
        let text = reqwest::get(format!("{}/metrics", gw.base))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let n: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("understudy_stats_flush_errors "))?
            .trim()
            .parse()
            .ok()?;
        (n >= 1).then_some(())
    })
    .await;
    assert!(
        failed.is_some(),
        "the gateway's flush failed during the outage"
    );

    // Redis is back with its data: the deletion completes and a new Tenant claims the id, before
    // the gateway's next flush.
    redis.up();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let out = loop {
        let _ = reconciler.applier().check_store().await;
        let out = reconciler.reconcile(&listed(&api)).await;
        if !out.retry() {
            break out;
        }
        assert!(std::time::Instant::now() < deadline, "recovers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(out.apply.deleted, ["tenant_shop"]);
    assert!(api.get::<Tenant>("staging", "shop").is_none());
    api.create::<Tenant>(&claimant());
    assert_eq!(reconciler.reconcile(&listed(&api)).await.apply.written, 1);
    let raced = store.stats.read_stats("control").await.unwrap().requests == 1;
    eprintln!("the buffered flush came after the deletion and the new Tenant: {raced}");

    flushed(&store, 2).await;
    assert_eq!(
        redis.cli(&["KEYS", "us:stats:tenant_shop:*"]),
        "",
        "no counters for the deleted tenant, none given to the new one"
    );
    reconciler.refresh_stats().await;
    reconciler.reconcile(&listed(&api)).await;
    let t: Tenant = api.get("other-team", "mine").unwrap();
    let st = t.status.unwrap();
    assert_eq!((st.requests, st.last_request_time), (0, None));
    reconciler.applier().resync();
    reconciler.reconcile(&listed(&api)).await;
    assert_eq!(redis.cli(&["KEYS", "us:stats:tenant_shop:*"]), "");
}
