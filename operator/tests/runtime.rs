//! The pieces around the reconcile pass: the watch-cache predicate (own status patches do not
//! re-trigger), leader election on a Lease, the HTTP endpoints and the command line.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::inputs;
use http::{Method, Request, StatusCode};
use kube::runtime::watcher::Event;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use understudy_crds::resources::{Scenario, ScenarioStatus};
use understudy_e2e::eventually;
use understudy_operator::cache::Cache;
use understudy_operator::lease::{Elector, LeaseSettings};
use understudy_operator::metrics::Metrics;
use understudy_operator::plan::FINALIZER;
use understudy_operator::run::{Health, router};
use understudy_operator::testkit::FakeApi;

fn scenario() -> Scenario {
    inputs("apiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {name: s}\nspec: {tenantRef: t, keywords: [a], response: b}\n")
        .scenarios
        .remove(0)
}

#[test]
fn only_spec_deletion_and_a_lost_finalizer_trigger() {
    let mut cache: Cache<Scenario> = Cache::new(1);
    assert!(!cache.synced());
    assert!(!cache.apply(0, Event::Init));
    assert!(!cache.apply(0, Event::InitApply(scenario())));
    assert!(cache.apply(0, Event::InitDone), "a (re)list triggers");
    assert!(cache.synced());
    assert_eq!(cache.items().len(), 1);

    // The operator's own status patch: new resourceVersion and status, same generation.
    let mut s = scenario();
    s.metadata.resource_version = Some("99".into());
    s.status = Some(ScenarioStatus {
        hits: 3,
        ..Default::default()
    });
    assert!(
        !cache.apply(0, Event::Apply(s.clone())),
        "status-only change"
    );
    assert_eq!(
        cache.items()[0].status.as_ref().unwrap().hits,
        3,
        "but cached"
    );

    let mut f = s.clone();
    f.metadata.finalizers = Some(vec![FINALIZER.into()]);
    assert!(
        !cache.apply(0, Event::Apply(f.clone())),
        "the operator's own finalizer patch calls for nothing"
    );
    assert!(
        cache.apply(0, Event::Apply(s.clone())),
        "the finalizer taken off a live object: put back"
    );
    assert!(!cache.apply(0, Event::Apply(f.clone())));
    let mut g = f.clone();
    g.metadata.generation = Some(2);
    assert!(cache.apply(0, Event::Apply(g.clone())), "spec changed");
    let mut d = g.clone();
    d.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    assert!(cache.apply(0, Event::Apply(d.clone())), "deletion started");
    assert!(cache.apply(0, Event::Delete(d)), "deleted");
    assert!(cache.items().is_empty());
}

#[test]
fn several_namespace_streams_merge_and_relist_independently() {
    let mut cache: Cache<Scenario> = Cache::new(2);
    let mut a = scenario();
    a.metadata.namespace = Some("a".into());
    let mut b = scenario();
    b.metadata.namespace = Some("b".into());
    cache.apply(0, Event::Init);
    cache.apply(0, Event::InitApply(a.clone()));
    cache.apply(0, Event::InitDone);
    assert!(!cache.synced(), "stream b has not listed");
    cache.apply(1, Event::Init);
    cache.apply(1, Event::InitApply(b));
    cache.apply(1, Event::InitDone);
    assert!(cache.synced());
    assert_eq!(cache.items().len(), 2);
    // Stream a relists empty: b's object stays.
    cache.apply(0, Event::Init);
    cache.apply(0, Event::InitDone);
    let left: Vec<_> = cache
        .items()
        .into_iter()
        .map(|s| s.metadata.namespace.unwrap())
        .collect();
    assert_eq!(left, ["b"]);
}

fn settings(identity: &str, secs: u64) -> LeaseSettings {
    LeaseSettings {
        name: "understudy-operator".into(),
        namespace: "understudy".into(),
        identity: identity.into(),
        duration: Duration::from_secs(secs),
        renew: Duration::from_millis(200),
    }
}

#[tokio::test]
async fn one_replica_leads_and_another_takes_over_after_expiry_or_release() {
    let (api, client) = FakeApi::start();
    let mut a = Elector::new(client.clone(), settings("pod-a", 1));
    let mut b = Elector::new(client.clone(), settings("pod-b", 1));
    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "first comes, first leads"
    );
    assert!(!b.try_acquire_or_renew().await.unwrap());
    let created = api
        .requests()
        .into_iter()
        .find(|r| r.method == Method::POST)
        .expect("lease created");
    assert_eq!(
        created.path,
        "/apis/coordination.k8s.io/v1/namespaces/understudy/leases"
    );
    assert_eq!(created.body["spec"]["holderIdentity"], "pod-a");
    assert!(a.try_acquire_or_renew().await.unwrap(), "the holder renews");

    // a stops renewing; b takes over once the record has not changed for a lease duration.
    assert!(!b.try_acquire_or_renew().await.unwrap());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        b.try_acquire_or_renew().await.unwrap(),
        "expired lease taken"
    );
    let lease: k8s_openapi::api::coordination::v1::Lease =
        api.get("understudy", "understudy-operator").unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("pod-b"));
    assert_eq!(spec.lease_transitions, Some(1));
    assert!(
        !a.try_acquire_or_renew().await.unwrap(),
        "the old holder sees it lost"
    );

    // Release on shutdown: a takes over at once.
    b.release().await;
    assert!(a.try_acquire_or_renew().await.unwrap());
}

#[tokio::test]
async fn the_campaign_publishes_leadership_and_releases_on_cancel() {
    let (api, client) = FakeApi::start();
    let (tx, mut rx) = watch::channel(false);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(Elector::new(client, settings("pod-a", 5)).run(tx, cancel.clone()));
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|l| *l))
        .await
        .expect("becomes leader")
        .unwrap();
    cancel.cancel();
    task.await.unwrap();
    assert!(!*rx.borrow());
    let lease: k8s_openapi::api::coordination::v1::Lease =
        api.get("understudy", "understudy-operator").unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity, None, "released");
}

#[tokio::test]
async fn healthz_readyz_and_metrics() {
    let health = Health {
        ready: Arc::new(AtomicBool::new(false)),
        metrics: Arc::new(Metrics::new()),
    };
    let get = |path: &'static str| {
        let app = router(health.clone());
        async move {
            let resp = app
                .oneshot(Request::get(path).body(axum::body::Body::empty()).unwrap())
                .await
                .unwrap();
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&body).to_string())
        }
    };
    assert_eq!(get("/healthz").await.0, StatusCode::OK);
    assert_eq!(get("/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    health.ready.store(true, Ordering::Relaxed);
    assert_eq!(get("/readyz").await.0, StatusCode::OK);
    health.metrics.reconciles.with_label_values(&["ok"]).inc();
    let (status, text) = get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for name in [
        "understudy_operator_reconciles_total{result=\"ok\"} 1",
        "understudy_operator_reconcile_duration_seconds",
        "understudy_operator_leader",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
}

#[test]
fn the_binary_refuses_bad_settings_with_a_message() {
    let bin = env!("CARGO_BIN_EXE_understudy-operator");
    let out = std::process::Command::new(bin)
        .args(["--redis-url", "http://user:hunter2@example"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--redis-url"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the password is not echoed: {err}"
    );
    let out = std::process::Command::new(bin).output().unwrap();
    assert!(!out.status.success(), "the Redis URL is required");
}

#[tokio::test]
async fn a_holder_whose_api_server_hangs_steps_down() {
    let (api, client) = FakeApi::start();
    let (tx, mut rx) = watch::channel(false);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(Elector::new(client, settings("pod-a", 2)).run(tx, cancel.clone()));
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|l| *l))
        .await
        .expect("becomes leader")
        .unwrap();
    // Every lease read from now on hangs (a half-open connection).
    api.fail(Method::GET, "/leases/", 0, 1000);
    tokio::time::timeout(Duration::from_secs(15), rx.wait_for(|l| !*l))
        .await
        .expect("steps down although no call ever returns an error")
        .unwrap();
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

/// The whole loop against the scripted API server (lists, then watches that deliver each
/// change) and a real Redis: initial sync, a new Scenario, a deletion through the finalizer,
/// an emptied Redis, traffic counters, leadership and shutdown.
#[tokio::test]
async fn the_run_loop_follows_the_cluster_and_redis() {
    use understudy_core::{StatsBatch, Stores, TenantStats};
    use understudy_crds::resources::{Scenario, Tenant};
    use understudy_e2e::RedisServer;
    use understudy_operator::reconcile::Settings;
    use understudy_operator::run::{Options, run};

    let redis = RedisServer::start().unwrap();
    let store = Stores::redis(&redis.url()).unwrap();
    let (api, client) = FakeApi::start();
    let world = inputs(
        "apiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {name: shop, namespace: staging}\nspec: {tenantId: tenant_shop}\n---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {name: invoices, namespace: staging}\nspec: {tenantRef: shop, keywords: [invoice], response: Two.}\n",
    );
    api.create::<Tenant>(&world.tenants[0]);
    api.create::<Scenario>(&world.scenarios[0]);
    let health = Health {
        ready: Arc::new(AtomicBool::new(false)),
        metrics: Arc::new(Metrics::new()),
    };
    let cancel = CancellationToken::new();
    let opts = Options {
        namespaces: vec![],
        lease: Some(settings("pod-a", 2)),
        resync: Duration::from_secs(2),
        status_interval: Duration::from_millis(500),
        epoch_check: Duration::from_millis(200),
        debounce: Duration::from_millis(200),
        debounce_max: Duration::from_secs(2),
        settings: Settings::default(),
    };
    let task = tokio::spawn(run(
        client,
        store.clone(),
        opts,
        health.clone(),
        cancel.clone(),
    ));
    let scenarios = |store: Stores| async move {
        store
            .config
            .get_tenant("tenant_shop")
            .await
            .ok()
            .flatten()
            .map(|(t, _)| t.scenarios.len())
    };
    let limit = Duration::from_secs(20);
    // Waits until the tenant's document in Redis holds `n` scenarios.
    let holds = |n: usize, what: &'static str| {
        let store = store.clone();
        async move {
            let seen = eventually(limit, || {
                let store = store.clone();
                async move { (scenarios(store).await == Some(n)).then_some(()) }
            })
            .await;
            assert!(seen.is_some(), "{what}");
        }
    };
    holds(1, "initial sync written").await;
    assert!(health.ready.load(Ordering::Relaxed));
    assert!(
        health
            .metrics
            .render()
            .contains("understudy_operator_leader 1")
    );

    // A new Scenario arrives through the watch.
    let mut more = world.scenarios[0].clone();
    more.metadata.name = Some("refunds".into());
    more.spec.keywords = vec!["refund".into()];
    api.create::<Scenario>(&more);
    holds(2, "a new Scenario is written").await;

    // Deleted: out of Redis, then the finalizer is released and the object goes.
    api.delete::<Scenario>("staging", "invoices");
    assert!(
        eventually(limit, || async {
            (scenarios(store.clone()).await == Some(1)
                && api.get::<Scenario>("staging", "invoices").is_none())
            .then_some(())
        })
        .await
        .is_some(),
        "deleted Scenario purged and released"
    );

    // Emptied Redis: written back by itself.
    redis.cli(&["FLUSHALL"]).unwrap();
    holds(1, "rewritten after FLUSHALL").await;

    // Traffic counters reach status on the status period.
    let mut batch = StatsBatch::default();
    batch.tenants.insert(
        "tenant_shop".into(),
        TenantStats {
            requests: 9,
            ..Default::default()
        },
    );
    store.stats.flush_stats(&batch).await.unwrap();
    assert!(
        eventually(limit, || async {
            let t: Tenant = api.get("staging", "shop")?;
            (t.status?.requests == 9).then_some(())
        })
        .await
        .is_some(),
        "requests counted in status"
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .unwrap();
    let lease: k8s_openapi::api::coordination::v1::Lease =
        api.get("understudy", "understudy-operator").unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity,
        None,
        "released on the way out"
    );
}

/// A run loop on the scripted API server and a real Redis, for the burst and outage tests.
struct Loop {
    api: FakeApi,
    redis: understudy_e2e::RedisServer,
    health: Health,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Loop {
    /// Starts the loop with the default debounce (what `understudy-operator` runs with) and
    /// waits for its first pass over an empty cluster.
    async fn start() -> Loop {
        use understudy_operator::reconcile::Settings;
        use understudy_operator::run::{DEBOUNCE, DEBOUNCE_MAX, Options, run};
        let redis = understudy_e2e::RedisServer::start().unwrap();
        let store = understudy_core::Stores::redis(&redis.url()).unwrap();
        let (api, client) = FakeApi::start();
        let health = Health {
            ready: Arc::new(AtomicBool::new(false)),
            metrics: Arc::new(Metrics::new()),
        };
        let cancel = CancellationToken::new();
        let opts = Options {
            namespaces: vec![],
            lease: None,
            // Neither period starts a pass during the test (both fire once at start).
            resync: Duration::from_secs(3600),
            status_interval: Duration::from_secs(3600),
            epoch_check: Duration::from_millis(200),
            debounce: DEBOUNCE,
            debounce_max: DEBOUNCE_MAX,
            settings: Settings::default(),
        };
        let task = tokio::spawn(run(client, store, opts, health.clone(), cancel.clone()));
        let l = Loop {
            api,
            redis,
            health,
            cancel,
            task,
        };
        assert!(
            eventually(Duration::from_secs(20), || async {
                (l.passes() >= 1).then_some(())
            })
            .await
            .is_some(),
            "first pass"
        );
        l
    }

    fn passes(&self) -> u64 {
        let m = &self.health.metrics;
        m.reconciles.with_label_values(&["ok"]).get()
            + m.reconciles.with_label_values(&["error"]).get()
    }

    fn puts(&self) -> u64 {
        self.health.metrics.writes.with_label_values(&["put"]).get()
    }

    fn version(&self) -> u64 {
        self.redis
            .cli(&["GET", "us:cfg:version"])
            .unwrap()
            .parse()
            .unwrap_or(0)
    }

    /// Events the operator published (created or, for a repeat, patched).
    fn events(&self) -> Vec<(String, String, String)> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.path.contains("/apis/events.k8s.io/v1/") && r.method != Method::GET)
            .map(|r| {
                let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
                (
                    s(&r.body["type"]),
                    s(&r.body["reason"]),
                    s(&r.body["regarding"]["name"]),
                )
            })
            .collect()
    }

    /// Waits until every object of `inputs` has a Ready condition, then a little longer than the
    /// debounce, so that any further pass would have started and ended.
    async fn settle(&self, n: usize) {
        let ready = |api: &FakeApi| {
            let l = common::listed(api);
            let has = |c: Option<&Vec<understudy_crds::resources::Condition>>| {
                c.is_some_and(|c| !c.is_empty())
            };
            let count = l
                .tenants
                .iter()
                .filter(|t| has(t.status.as_ref().map(|s| &s.conditions)))
                .count()
                + l.scenarios
                    .iter()
                    .filter(|t| has(t.status.as_ref().map(|s| &s.conditions)))
                    .count()
                + l.chaos
                    .iter()
                    .filter(|t| has(t.status.as_ref().map(|s| &s.conditions)))
                    .count();
            count >= n
        };
        assert!(
            eventually(Duration::from_secs(30), || async {
                ready(&self.api).then_some(())
            })
            .await
            .is_some(),
            "every object got its status"
        );
        tokio::time::sleep(understudy_operator::run::DEBOUNCE * 3).await;
    }

    async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("stops")
            .unwrap();
    }
}

/// Creates `inputs` one object after another, `gap` apart, as `kubectl apply -f` does.
async fn apply_slowly(api: &FakeApi, inputs: &understudy_operator::plan::Inputs, gap: Duration) {
    use understudy_crds::resources::{ChaosProfile, Tenant};
    for t in &inputs.tenants {
        api.create::<Tenant>(t);
        tokio::time::sleep(gap).await;
    }
    for s in &inputs.scenarios {
        api.create::<Scenario>(s);
        tokio::time::sleep(gap).await;
    }
    for c in &inputs.chaos {
        api.create::<ChaosProfile>(c);
        tokio::time::sleep(gap).await;
    }
}

/// Issue 14, item 1: `kubectl apply -f examples/` (13 objects, 3 tenants) and a folder of 300
/// Scenarios are each one pass and one write per tenant, however many watch deliveries they
/// span; deleting the 300 is one write.
#[tokio::test]
async fn a_burst_is_one_pass_and_one_write_per_tenant() {
    let l = Loop::start().await;
    let examples: String = ["ecommerce.yaml", "flaky-weather.yaml"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(
                std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../examples")
                    .join(f),
            )
            .unwrap()
                + "\n---\n"
        })
        .collect();
    let examples = inputs(&examples);
    let objects = examples.tenants.len() + examples.scenarios.len() + examples.chaos.len();
    assert_eq!(objects, 13);
    let (p0, w0, v0) = (l.passes(), l.puts(), l.version());
    // 13 objects in about 0.2 s, as observed with kubectl.
    apply_slowly(&l.api, &examples, Duration::from_millis(15)).await;
    l.settle(objects).await;
    let (p1, w1, v1) = (l.passes(), l.puts(), l.version());
    eprintln!(
        "burst of {objects}: {} pass(es), {} document write(s), {} config version(s)",
        p1 - p0,
        w1 - w0,
        v1 - v0
    );
    assert_eq!(p1 - p0, 1, "one pass for the burst");
    assert_eq!(w1 - w0, 3, "one write per tenant");
    assert_eq!(v1 - v0, 3, "one configuration version per tenant");

    // 300 Scenarios and their Tenant.
    let mut big = String::from(
        "apiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {name: big}\nspec: {}\n",
    );
    for i in 0..300 {
        big.push_str(&format!(
            "---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {{name: s{i:03}}}\nspec: {{tenantRef: big, keywords: [k{i}], response: \"answer {i} {}\"}}\n",
            "x".repeat(100)
        ));
    }
    let big = inputs(&big);
    apply_slowly(&l.api, &big, Duration::from_millis(5)).await;
    l.settle(objects + 301).await;
    let (p2, w2, v2) = (l.passes(), l.puts(), l.version());
    eprintln!(
        "burst of 301: {} pass(es), {} document write(s), {} config version(s)",
        p2 - p1,
        w2 - w1,
        v2 - v1
    );
    assert_eq!(p2 - p1, 1, "one pass for the burst");
    assert_eq!(w2 - w1, 1, "one write of the tenant's document");
    assert_eq!(v2 - v1, 1);

    // Deleting the 300: one write; the objects' disappearance (after their finalizers are
    // released) wakes one more pass that writes nothing.
    for s in &big.scenarios {
        l.api
            .delete::<Scenario>("default", s.metadata.name.as_deref().unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        eventually(Duration::from_secs(30), || async {
            common::listed(&l.api).scenarios.len().eq(&8).then_some(())
        })
        .await
        .is_some(),
        "deleted Scenarios released"
    );
    tokio::time::sleep(understudy_operator::run::DEBOUNCE * 3).await;
    let (p3, w3, v3) = (l.passes(), l.puts(), l.version());
    eprintln!(
        "deletion of 300: {} pass(es), {} document write(s), {} config version(s)",
        p3 - p2,
        w3 - w2,
        v3 - v2
    );
    assert_eq!(w3 - w2, 1);
    assert_eq!(v3 - v2, 1);
    assert!(p3 - p2 <= 2, "{} passes", p3 - p2);
    assert!(l.events().is_empty(), "{:?}", l.events());
    l.stop().await;
}

/// Issue 14, item 3, through the run loop: an outage shows in `understudy_operator_store_up`, the
/// outage counter and `/readyz`; a change made meanwhile is one Warning Event on its Tenant (not
/// one per resource), applied as soon as Redis answers again, with one Normal Event.
#[tokio::test]
async fn an_outage_shows_in_metrics_and_readiness_and_once_on_the_tenant() {
    let l = Loop::start().await;
    let world = inputs(&format!(
        "apiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: shop}}\nspec: {{}}\n{}",
        (0..20)
            .map(|i| format!("---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {{name: s{i}}}\nspec: {{tenantRef: shop, keywords: [k{i}], response: r}}\n"))
            .collect::<String>()
    ));
    common::create_all(&l.api, &world);
    l.settle(21).await;
    assert!(l.health.readiness().is_ok());

    l.redis.pause().unwrap();
    assert!(
        eventually(Duration::from_secs(20), || async {
            (l.health.metrics.store_up.get() == 0).then_some(())
        })
        .await
        .is_some(),
        "the outage is noticed"
    );
    assert!(
        l.health.readiness().is_err(),
        "not ready while Redis is unreachable"
    );
    // A change that cannot be written.
    l.api.update_spec::<Scenario>(
        "default",
        "s1",
        serde_json::json!({"tenantRef": "shop", "keywords": ["k1"], "response": "changed"}),
    );
    assert!(
        eventually(Duration::from_secs(30), || async {
            (!l.events().is_empty()).then_some(())
        })
        .await
        .is_some(),
        "the outage is recorded"
    );
    l.redis.resume().unwrap();
    let store = understudy_core::Stores::redis(&l.redis.url()).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || {
            let store = store.clone();
            async move {
                let (doc, _) = store.config.get_tenant("shop").await.ok()??;
                (doc.scenarios[1].spec.response == "changed").then_some(())
            }
        })
        .await
        .is_some(),
        "applied once Redis is back"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            (l.health.readiness().is_ok() && l.events().len() >= 2).then_some(())
        })
        .await
        .is_some(),
        "ready again"
    );
    assert_eq!(
        l.events(),
        [
            (
                "Warning".to_string(),
                "StoreUnavailable".to_string(),
                "shop".to_string()
            ),
            ("Normal".into(), "StoreAvailable".into(), "shop".into()),
        ]
    );
    let s: Scenario = l.api.get("default", "s1").unwrap();
    let c = &s.status.unwrap().conditions[0];
    assert_eq!(
        (c.reason.as_str(), c.observed_generation),
        ("Synced", Some(2))
    );
    let text = l.health.metrics.render();
    assert!(text.contains("understudy_operator_store_up 1"), "{text}");
    assert!(
        text.contains("understudy_operator_store_outages_total 1"),
        "{text}"
    );
    l.stop().await;
}
