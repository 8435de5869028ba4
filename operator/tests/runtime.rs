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
fn only_spec_deletion_and_finalizer_changes_trigger() {
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
    assert!(cache.apply(0, Event::Apply(f.clone())), "finalizer added");
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
