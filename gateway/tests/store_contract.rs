//! One contract, two backends: every test runs against the memory store and against a real
//! `redis-server` started for it.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use understudy_crds::model::{ApiKeyRecord, Role};
use understudy_crds::model::{ConfigSource, TenantConfig};
use understudy_e2e::RedisServer;
use understudy_gateway::store::memory::MemoryStore;
use understudy_gateway::store::redis::RedisStore;
use understudy_gateway::store::{
    Expect, NoticeKind, NoticeOp, StatsBatch, Store, SyncEvent, TenantStats,
};

type Fixture = (Arc<dyn Store>, Option<RedisServer>);

fn memory() -> Fixture {
    (Arc::new(MemoryStore::new()), None)
}

fn redis() -> Fixture {
    let server = RedisServer::start().expect("redis-server starts");
    let store = RedisStore::connect(&server.url()).expect("valid url");
    (Arc::new(store), Some(server))
}

fn tenant(id: &str, response: &str) -> TenantConfig {
    TenantConfig {
        tenant_id: id.into(),
        visibility: Default::default(),
        owner: None,
        state: json!({"k": response}),
        settings: json!({}),
        default_response: Some(response.into()),
        scenarios: vec![],
        chaos: None,
        source: ConfigSource::Api,
        origin: String::new(),
    }
}

async fn put_get_load_and_versions(s: Arc<dyn Store>) {
    assert_eq!(s.get_tenant("a").await.unwrap(), None);
    let v1 = s.put_tenant(&tenant("a", "one")).await.unwrap();
    let v2 = s.put_tenant(&tenant("b", "two")).await.unwrap();
    let v3 = s.put_tenant(&tenant("a", "three")).await.unwrap();
    assert!(v1 < v2 && v2 < v3, "versions increase: {v1} {v2} {v3}");
    let (a, va) = s.get_tenant("a").await.unwrap().unwrap();
    assert_eq!(a.default_response.as_deref(), Some("three"));
    assert_eq!(va, v3);
    let all = s.load_all().await.unwrap();
    assert_eq!(all.version, v3);
    let mut ids: Vec<_> = all
        .tenants
        .iter()
        .map(|(t, v)| (t.tenant_id.clone(), *v))
        .collect();
    ids.sort();
    assert_eq!(ids, vec![("a".to_string(), v3), ("b".to_string(), v2)]);
}

async fn delete_reports_absence(s: Arc<dyn Store>) {
    assert_eq!(s.delete_tenant("nope").await.unwrap(), None);
    let v1 = s.put_tenant(&tenant("a", "x")).await.unwrap();
    let v2 = s.delete_tenant("a").await.unwrap().expect("deleted");
    assert!(v2 > v1);
    assert_eq!(s.get_tenant("a").await.unwrap(), None);
    assert!(s.load_all().await.unwrap().tenants.is_empty());
    assert_eq!(
        s.load_all().await.unwrap().version,
        v2,
        "a delete is a version too"
    );
}

async fn notices_arrive_in_order(s: Arc<dyn Store>) {
    let mut sub = s.subscribe().await.unwrap();
    let v1 = s.put_tenant(&tenant("a", "x")).await.unwrap();
    let v2 = s.delete_tenant("a").await.unwrap().unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Some(SyncEvent::Notice(n))) => got.push((n.version, n.tenant, n.op)),
            other => panic!("expected a notice, got {other:?}"),
        }
    }
    assert_eq!(
        got,
        vec![
            (v1, "a".to_string(), NoticeOp::Put),
            (v2, "a".to_string(), NoticeOp::Del)
        ]
    );
}

async fn epoch_marks_population(s: Arc<dyn Store>) {
    assert_eq!(s.epoch().await.unwrap(), None);
    assert_eq!(
        s.init_epoch("e1").await.unwrap().as_deref(),
        Some("e1"),
        "a fresh store is marked"
    );
    assert_eq!(
        s.init_epoch("e2").await.unwrap().as_deref(),
        Some("e1"),
        "init never replaces"
    );
    s.set_epoch("e3").await.unwrap();
    assert_eq!(s.epoch().await.unwrap().as_deref(), Some("e3"));
    assert_eq!(s.load_all().await.unwrap().epoch.as_deref(), Some("e3"));
    let id = s.instance_id().await.unwrap();
    assert!(!id.is_empty());
    assert_eq!(
        s.instance_id().await.unwrap(),
        id,
        "stable while the backend runs"
    );
}

async fn an_emptied_store_is_not_marked_by_a_reader(s: Arc<dyn Store>) {
    s.put_tenant(&tenant("a", "x")).await.unwrap();
    // Used (a version exists) but without an epoch: as after FLUSHALL once a process noticed.
    assert_eq!(s.init_epoch("reader").await.unwrap(), None);
    s.set_epoch("writer").await.unwrap();
    assert_eq!(
        s.init_epoch("reader").await.unwrap().as_deref(),
        Some("writer")
    );
}

async fn raise_version_only_raises(s: Arc<dyn Store>) {
    s.put_tenant(&tenant("a", "x")).await.unwrap();
    s.raise_version(100).await.unwrap();
    s.raise_version(50).await.unwrap();
    assert_eq!(s.put_tenant(&tenant("a", "y")).await.unwrap(), 101);
}

async fn counters_count_expire_and_reset(s: Arc<dyn Store>) {
    assert_eq!(s.incr_expiring("us:rt:t:rl:1", 1).await.unwrap(), 1);
    assert_eq!(s.incr_expiring("us:rt:t:rl:1", 1).await.unwrap(), 2);
    assert_eq!(s.incr("us:rt:t:every").await.unwrap(), 1);
    assert_eq!(s.incr("us:rt:t:every").await.unwrap(), 2);
    assert_eq!(s.incr("us:rt:other:every").await.unwrap(), 1);
    // Expiry: wait (generously) for the 1 s counter to start again.
    let mut restarted = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.incr_expiring("us:rt:t:rl:1", 1).await.unwrap() == 1 {
            restarted = true;
            break;
        }
    }
    assert!(restarted, "an expiring counter starts again after its ttl");
    assert!(s.delete_prefix("us:rt:t:").await.unwrap() >= 1);
    assert_eq!(
        s.incr("us:rt:t:every").await.unwrap(),
        1,
        "reset cleared the tenant's counters"
    );
    assert_eq!(
        s.incr("us:rt:other:every").await.unwrap(),
        2,
        "other tenants untouched"
    );
}

async fn values_and_locks(s: Arc<dyn Store>) {
    assert_eq!(s.get_value("us:seed:gen").await.unwrap(), None);
    s.set_value("us:seed:gen", "abc").await.unwrap();
    assert_eq!(
        s.get_value("us:seed:gen").await.unwrap().as_deref(),
        Some("abc")
    );
    assert!(s.try_lock("us:seed:lock", "p1", 10_000).await.unwrap());
    assert!(
        s.try_lock("us:seed:lock", "p1", 10_000).await.unwrap(),
        "re-entrant for its holder"
    );
    assert!(!s.try_lock("us:seed:lock", "p2", 10_000).await.unwrap());
    s.unlock("us:seed:lock", "p2").await.unwrap();
    assert!(
        !s.try_lock("us:seed:lock", "p2", 10_000).await.unwrap(),
        "only the holder unlocks"
    );
    s.unlock("us:seed:lock", "p1").await.unwrap();
    assert!(s.try_lock("us:seed:lock", "p2", 100).await.unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        s.try_lock("us:seed:lock", "p3", 100).await.unwrap(),
        "a lock expires"
    );
}

async fn stats_accumulate(s: Arc<dyn Store>) {
    let mut batch = StatsBatch::default();
    batch.tenants.insert(
        "t".into(),
        TenantStats {
            requests: 3,
            unmatched: 1,
            last_request_ms: 1000,
            hits: [("ns/a".to_string(), 2)].into_iter().collect(),
        },
    );
    s.flush_stats(&batch).await.unwrap();
    batch.tenants.get_mut("t").unwrap().last_request_ms = 2000;
    s.flush_stats(&batch).await.unwrap();
    let totals = s.read_stats("t").await.unwrap();
    assert_eq!(
        (totals.requests, totals.unmatched, totals.last_request_ms),
        (6, 2, 2000)
    );
    assert_eq!(totals.hits.get("ns/a"), Some(&4));
    assert_eq!(s.read_stats("none").await.unwrap().requests, 0);
}

async fn checked_writes_refuse_stale_versions(s: Arc<dyn Store>) {
    let v1 = s
        .put_tenant_checked(&tenant("a", "one"), Expect::Absent)
        .await
        .unwrap()
        .expect("created");
    assert_eq!(
        s.put_tenant_checked(&tenant("a", "dup"), Expect::Absent)
            .await
            .unwrap(),
        None,
        "create twice"
    );
    let v2 = s
        .put_tenant_checked(&tenant("a", "two"), Expect::Version(v1))
        .await
        .unwrap()
        .expect("fresh version");
    assert_eq!(
        s.put_tenant_checked(&tenant("a", "lost update"), Expect::Version(v1))
            .await
            .unwrap(),
        None,
        "a write based on an old version is refused"
    );
    let (doc, v) = s.get_tenant("a").await.unwrap().unwrap();
    assert_eq!(
        (doc.default_response.as_deref(), v),
        (Some("two"), v2),
        "nothing refused was stored"
    );
}

fn key(name: &str) -> ApiKeyRecord {
    ApiKeyRecord {
        name: name.into(),
        identity: "alice".into(),
        role: Role::Editor,
        tenant: None,
        description: None,
        expires_at: None,
        created_at: "2026-01-01T00:00:00Z".into(),
        created_by: "admin".into(),
        hash: format!("hash-of-{name}"),
    }
}

async fn keys_are_created_once_listed_and_revoked(s: Arc<dyn Store>) {
    let mut sub = s.subscribe().await.unwrap();
    let v1 = s.put_key(&key("ci")).await.unwrap().expect("created");
    assert_eq!(
        s.put_key(&key("ci")).await.unwrap(),
        None,
        "names are unique"
    );
    assert_eq!(s.get_key("ci").await.unwrap(), Some(key("ci")));
    assert_eq!(s.load_all().await.unwrap().keys, vec![key("ci")]);
    let v2 = s.delete_key("ci").await.unwrap().expect("revoked");
    assert_eq!(s.delete_key("ci").await.unwrap(), None);
    assert!(s.load_all().await.unwrap().keys.is_empty());
    assert!(
        s.put_key(&key("ci")).await.unwrap().is_some(),
        "a revoked key's name may be reused"
    );
    let mut got = Vec::new();
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
            Ok(Some(SyncEvent::Notice(n))) => got.push((n.version, n.kind, n.op)),
            other => panic!("expected a notice, got {other:?}"),
        }
    }
    assert_eq!(
        got,
        vec![
            (v1, NoticeKind::Key, NoticeOp::Put),
            (v2, NoticeKind::Key, NoticeOp::Del)
        ]
    );
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory_backend {
            $(#[tokio::test] async fn $name() { let (s, _g) = super::memory(); super::$name(s).await })*
        }
        mod redis_backend {
            $(#[tokio::test] async fn $name() { let (s, _g) = super::redis(); super::$name(s).await })*
        }
    };
}

contract!(
    put_get_load_and_versions,
    delete_reports_absence,
    notices_arrive_in_order,
    epoch_marks_population,
    raise_version_only_raises,
    counters_count_expire_and_reset,
    values_and_locks,
    stats_accumulate,
    checked_writes_refuse_stale_versions,
    keys_are_created_once_listed_and_revoked,
    an_emptied_store_is_not_marked_by_a_reader,
);
