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
    assert_eq!(ready(Some(&status_of(&s))).1, "TenantNotReady");
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

#[tokio::test]
async fn redis_down_is_store_unavailable_with_backoff_then_recovers() {
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
    let t: Tenant = r.api.get("staging", "shop").unwrap();
    assert_eq!(
        ready(Some(&status_of(&t))),
        ("False".into(), "StoreUnavailable".into())
    );
    let reqs = r.api.take_requests();
    assert!(
        events(&reqs)
            .iter()
            .any(|(reason, _)| reason == "StoreUnavailable")
    );

    // Redis is back on its port, empty: the store check notices, the next pass writes everything.
    r.redis = RedisServer::start_on(port).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let back = loop {
        let _ = r.reconciler.applier().check_store().await;
        let out = r.pass().await;
        if !out.retry() {
            break out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "recovers once Redis is back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(back.apply.written >= 1);
    let doc = r.doc("tenant_shop").await.unwrap();
    assert_eq!(doc.scenarios[1].spec.response, "Changed.");
    let t: Tenant = r.api.get("staging", "shop").unwrap();
    assert_eq!(
        ready(Some(&status_of(&t))),
        ("True".into(), "Synced".into())
    );
    assert!(
        events(&r.api.take_requests())
            .iter()
            .any(|(reason, _)| reason == "Synced")
    );
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
