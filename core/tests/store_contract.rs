//! The store contracts, one suite per concern, each run against the memory backend and against
//! a real `redis-server` started for the test. The hub has its own suite (`hub_contract.rs`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use understudy_core::audit::{self, AuditEntry, AuditEvent, AuditFilter, AuditPayload};
use understudy_core::calls::{
    Appended as CallAppended, CallDoc, CallEvent, CallStatus, Created, EventKind, Lease,
};
use understudy_core::channels::{
    ChannelDoc, ChannelSignal, Grant, GrantCreated, Visibility, channel_topic, token_hash,
};
use understudy_core::sessions::{Appended, SIGNAL_DATA_MAX};
use understudy_core::{
    ConfigNotice, ConfigStore, Counter, Delivery, Expect, Hub, NoticeKind, NoticeOp, SessionDoc,
    SessionKind, SessionSignal, StatsBatch, Stores, TenantStats, Topic,
};
use understudy_crds::model::{ApiKeyRecord, Role};
use understudy_crds::model::{ConfigSource, TenantConfig};
use understudy_e2e::RedisServer;

type Fixture = (Stores, Option<RedisServer>);

fn memory() -> Fixture {
    (Stores::memory(), None)
}

fn redis() -> Fixture {
    let server = RedisServer::start().expect("redis-server starts");
    let stores = Stores::redis(&server.url()).expect("valid url");
    (stores, Some(server))
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

// --- configuration ---------------------------------------------------------------------------

async fn put_get_load_and_versions(s: Arc<dyn ConfigStore>, _hub: Hub) {
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

async fn delete_reports_absence(s: Arc<dyn ConfigStore>, _hub: Hub) {
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

async fn notices_arrive_in_order(s: Arc<dyn ConfigStore>, hub: Hub) {
    let mut sub = hub.subscribe(&Topic::config()).await;
    let v1 = s.put_tenant(&tenant("a", "x")).await.unwrap();
    let v2 = s.delete_tenant("a").await.unwrap().unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(5), sub.recv()).await {
            Ok(Some(Delivery::Message(m))) => {
                let n: ConfigNotice = serde_json::from_slice(&m).unwrap();
                got.push((n.version, n.tenant, n.op))
            }
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

async fn epoch_marks_population(s: Arc<dyn ConfigStore>, _hub: Hub) {
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

async fn an_emptied_store_is_not_marked_by_a_reader(s: Arc<dyn ConfigStore>, _hub: Hub) {
    s.put_tenant(&tenant("a", "x")).await.unwrap();
    // Used (a version exists) but without an epoch: as after FLUSHALL once a process noticed.
    assert_eq!(s.init_epoch("reader").await.unwrap(), None);
    s.set_epoch("writer").await.unwrap();
    assert_eq!(
        s.init_epoch("reader").await.unwrap().as_deref(),
        Some("writer")
    );
}

async fn raise_version_only_raises(s: Arc<dyn ConfigStore>, _hub: Hub) {
    s.put_tenant(&tenant("a", "x")).await.unwrap();
    s.raise_version(100).await.unwrap();
    s.raise_version(50).await.unwrap();
    assert_eq!(s.put_tenant(&tenant("a", "y")).await.unwrap(), 101);
}

async fn checked_writes_refuse_stale_versions(s: Arc<dyn ConfigStore>, _hub: Hub) {
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

async fn keys_are_created_once_listed_and_revoked(s: Arc<dyn ConfigStore>, hub: Hub) {
    let mut sub = hub.subscribe(&Topic::config()).await;
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
        match tokio::time::timeout(Duration::from_secs(5), sub.recv()).await {
            Ok(Some(Delivery::Message(m))) => {
                let n: ConfigNotice = serde_json::from_slice(&m).unwrap();
                got.push((n.version, n.kind, n.op))
            }
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

// --- tenant runtime --------------------------------------------------------------------------

async fn windowed_counters_count_restart_and_expire(s: Stores) {
    let r = &s.runtime;
    assert_eq!(
        r.incr_window("t", Counter::RateLimit, 100, 60)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        r.incr_window("t", Counter::RateLimit, 100, 60)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        r.incr_window("t", Counter::FailFirst, 100, 60)
            .await
            .unwrap(),
        1,
        "counters are separate"
    );
    assert_eq!(
        r.incr_window("other", Counter::RateLimit, 100, 60)
            .await
            .unwrap(),
        1,
        "tenants are separate"
    );
    assert_eq!(
        r.incr_window("t", Counter::RateLimit, 160, 60)
            .await
            .unwrap(),
        1,
        "a later window starts from zero"
    );
    assert_eq!(
        r.incr_window("t", Counter::RateLimit, 100, 60)
            .await
            .unwrap(),
        2,
        "a lagging clock counts into the current window, never resets it"
    );
    // Expiry: a counter unused for its ttl is gone.
    assert_eq!(
        r.incr_window("e", Counter::RateLimit, 5, 1).await.unwrap(),
        1
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        r.incr_window("e", Counter::RateLimit, 5, 1).await.unwrap(),
        1,
        "an unused counter expires after its ttl"
    );
}

async fn callers_are_counted_per_route_and_window(s: Stores) {
    let rt = &s.runtime;
    for n in 1..=3 {
        assert_eq!(rt.incr_caller("hosted", "key-a", 600, 61).await.unwrap(), n);
    }
    // Another caller, another route: their own counts.
    assert_eq!(rt.incr_caller("hosted", "key-b", 600, 61).await.unwrap(), 1);
    assert_eq!(rt.incr_caller("replay", "key-a", 600, 61).await.unwrap(), 1);
    // A later window starts again; callers never touch a tenant's counters.
    assert_eq!(rt.incr_caller("hosted", "key-a", 660, 61).await.unwrap(), 1);
    assert_eq!(
        rt.incr_window("key-a", Counter::RateLimit, 660, 61)
            .await
            .unwrap(),
        1
    );
}

async fn plain_counters_and_purge(s: Stores) {
    let r = &s.runtime;
    assert_eq!(r.incr("t", Counter::Every).await.unwrap(), 1);
    assert_eq!(r.incr("t", Counter::Every).await.unwrap(), 2);
    assert_eq!(r.incr("other", Counter::Every).await.unwrap(), 1);
    r.incr_window("t", Counter::RateLimit, 100, 600)
        .await
        .unwrap();
    r.purge_tenant("t").await.unwrap();
    assert_eq!(r.incr("t", Counter::Every).await.unwrap(), 1, "purged");
    assert_eq!(
        r.incr_window("t", Counter::RateLimit, 100, 600)
            .await
            .unwrap(),
        1,
        "windowed counters purged too"
    );
    assert_eq!(
        r.incr("other", Counter::Every).await.unwrap(),
        2,
        "other tenants untouched"
    );
}

async fn locks_are_held_extended_and_expire(s: Stores) {
    let r = &s.runtime;
    assert!(r.try_lock("seed", "p1", 10_000).await.unwrap());
    assert!(
        r.try_lock("seed", "p1", 10_000).await.unwrap(),
        "the holder takes it again (and extends it)"
    );
    assert!(!r.try_lock("seed", "p2", 10_000).await.unwrap());
    r.unlock("seed", "p2").await.unwrap();
    assert!(
        !r.try_lock("seed", "p2", 10_000).await.unwrap(),
        "only the holder unlocks"
    );
    r.unlock("seed", "p1").await.unwrap();
    assert!(r.try_lock("seed", "p2", 300).await.unwrap());
    // Extended by its holder before it expires: still held past the first ttl.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(r.try_lock("seed", "p2", 300).await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !r.try_lock("seed", "p3", 300).await.unwrap(),
        "the extension holds"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        r.try_lock("seed", "p3", 300).await.unwrap(),
        "a lock expires"
    );
}

async fn seed_generation_is_kept(s: Stores) {
    assert_eq!(s.config.seed_generation().await.unwrap(), None);
    s.config.set_seed_generation("abc").await.unwrap();
    assert_eq!(
        s.config.seed_generation().await.unwrap().as_deref(),
        Some("abc")
    );
}

// --- stats ------------------------------------------------------------------------------------

async fn stats_accumulate(s: Stores) {
    s.config.put_tenant(&tenant("t", "x")).await.unwrap();
    let mut batch = StatsBatch::default();
    batch.tenants.insert(
        "t".into(),
        TenantStats {
            requests: 3,
            unmatched: 1,
            last_request_ms: 1000,
            hits: [("ns/a".to_string(), 2)].into_iter().collect(),
            served_version: 0,
        },
    );
    s.stats.flush_stats(&batch).await.unwrap();
    batch.tenants.get_mut("t").unwrap().last_request_ms = 2000;
    s.stats.flush_stats(&batch).await.unwrap();
    let totals = s.stats.read_stats("t").await.unwrap();
    assert_eq!(
        (totals.requests, totals.unmatched, totals.last_request_ms),
        (6, 2, 2000)
    );
    assert_eq!(totals.hits.get("ns/a"), Some(&4));
    assert_eq!(s.stats.read_stats("none").await.unwrap().requests, 0);
}

async fn stats_of_deleted_tenants_are_purged_and_not_recreated(s: Stores) {
    s.config.put_tenant(&tenant("t", "x")).await.unwrap();
    let mut batch = StatsBatch::default();
    batch.tenants.insert(
        "t".into(),
        TenantStats {
            requests: 2,
            hits: [("ns/a".to_string(), 1)].into_iter().collect(),
            ..Default::default()
        },
    );
    s.stats.flush_stats(&batch).await.unwrap();
    s.config.delete_tenant("t").await.unwrap();
    s.purge_tenant("t").await.unwrap();
    assert_eq!(s.stats.read_stats("t").await.unwrap(), Default::default());
    // A late flush (a gateway's buffered counts) does not bring them back.
    s.stats.flush_stats(&batch).await.unwrap();
    assert_eq!(
        s.stats.read_stats("t").await.unwrap(),
        Default::default(),
        "no counters for a tenant that is gone"
    );
}

/// Counts carry the document version that served them; a tenant deleted and created again under
/// the same id (by anyone) is a new incarnation, and counts served by the old one never reach it.
async fn counts_served_by_an_earlier_incarnation_never_reach_a_new_one(s: Stores) {
    let served = |v: u64, requests: u64| {
        let mut batch = StatsBatch::default();
        batch.tenants.insert(
            "t".into(),
            TenantStats {
                requests,
                last_request_ms: 1000 + v,
                hits: [("ns/a".to_string(), requests)].into_iter().collect(),
                served_version: v,
                ..Default::default()
            },
        );
        batch
    };
    let v1 = s.config.put_tenant(&tenant("t", "first")).await.unwrap();
    s.stats.flush_stats(&served(v1, 2)).await.unwrap();
    assert_eq!(s.stats.read_stats("t").await.unwrap().requests, 2);

    // Deleted and created again within a flush interval: a gateway still holds counts served
    // from the first incarnation.
    s.config.delete_tenant("t").await.unwrap();
    s.purge_tenant("t").await.unwrap();
    let v3 = s.config.put_tenant(&tenant("t", "second")).await.unwrap();
    s.stats.flush_stats(&served(v1, 5)).await.unwrap();
    assert_eq!(
        s.stats.read_stats("t").await.unwrap(),
        Default::default(),
        "the old incarnation's counts do not land on the new tenant"
    );
    s.stats.flush_stats(&served(v3, 1)).await.unwrap();
    // An update keeps the incarnation: counts served from either version count.
    let v4 = s
        .config
        .put_tenant_checked(&tenant("t", "edited"), Expect::Version(v3))
        .await
        .unwrap()
        .expect("checked update");
    s.stats.flush_stats(&served(v4, 1)).await.unwrap();
    s.stats.flush_stats(&served(v3, 1)).await.unwrap();
    s.stats.flush_stats(&served(0, 1)).await.unwrap();
    let totals = s.stats.read_stats("t").await.unwrap();
    assert_eq!(totals.requests, 4, "{totals:?}");
    assert_eq!(totals.hits.get("ns/a"), Some(&4));
    assert_eq!(totals.last_request_ms, 1000 + v4);
}

/// A deletion whose purge never happened (the store failed between the two steps) leaves totals
/// behind; they are neither read nor added to for the next tenant under that id.
async fn totals_of_an_earlier_incarnation_are_not_read(s: Stores) {
    let mut batch = StatsBatch::default();
    batch.tenants.insert(
        "t".into(),
        TenantStats {
            requests: 5,
            last_request_ms: 5000,
            ..Default::default()
        },
    );
    s.config.put_tenant(&tenant("t", "first")).await.unwrap();
    s.stats.flush_stats(&batch).await.unwrap();
    s.config.delete_tenant("t").await.unwrap(); // no purge
    assert_eq!(s.stats.read_stats("t").await.unwrap(), Default::default());
    s.config.put_tenant(&tenant("t", "second")).await.unwrap();
    assert_eq!(
        s.stats.read_stats("t").await.unwrap(),
        Default::default(),
        "stale totals are not the new tenant's"
    );
    batch.tenants.get_mut("t").unwrap().requests = 1;
    batch.tenants.get_mut("t").unwrap().last_request_ms = 100;
    s.stats.flush_stats(&batch).await.unwrap();
    let totals = s.stats.read_stats("t").await.unwrap();
    assert_eq!(
        (totals.requests, totals.last_request_ms),
        (1, 100),
        "replaced, not added to"
    );
}

/// Redis emptied (FLUSHALL) while gateways hold counts: a flush recreates nothing for tenants that
/// are gone, and a tenant written back afterwards (a new incarnation, above the raised version)
/// does not get counts served before.
#[tokio::test]
async fn an_emptied_redis_gets_no_counters_back() {
    let (s, server) = redis();
    let server = server.unwrap();
    let v = s.config.put_tenant(&tenant("t", "x")).await.unwrap();
    s.config.put_tenant(&tenant("gone", "x")).await.unwrap();
    let mut batch = StatsBatch::default();
    for id in ["t", "gone"] {
        batch.tenants.insert(
            id.into(),
            TenantStats {
                requests: 3,
                served_version: v,
                ..Default::default()
            },
        );
    }
    server.cli(&["FLUSHALL"]).unwrap();
    s.stats.flush_stats(&batch).await.unwrap();
    assert_eq!(server.cli(&["KEYS", "us:stats:*"]).unwrap(), "");
    // A writer puts "t" back (raising the version first, as the operator and gateways do).
    s.config.raise_version(v + 10).await.unwrap();
    s.config.put_tenant(&tenant("t", "x")).await.unwrap();
    s.stats.flush_stats(&batch).await.unwrap();
    assert_eq!(s.stats.read_stats("t").await.unwrap().requests, 0);
    assert_eq!(server.cli(&["KEYS", "us:stats:gone:*"]).unwrap(), "");
}

// --- MCP sessions ------------------------------------------------------------------------------

fn doc() -> SessionDoc {
    SessionDoc {
        kind: SessionKind::Streamable,
        protocol_version: Some("2025-06-18".into()),
        created_ms: 1,
    }
}

const MAX: usize = 1000;

async fn next_signal(sub: &mut understudy_core::Subscription) -> SessionSignal {
    let got = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("a signal within 5 s")
        .expect("the hub lives");
    let Delivery::Message(b) = got else {
        panic!("gap")
    };
    SessionSignal::decode(&b).expect("a session signal")
}

async fn sessions_are_created_touched_and_ended(s: Stores) {
    let st = &s.sessions;
    assert_eq!(st.touch_session("t", "s1").await.unwrap(), None);
    assert!(
        st.create_session("t", "s1", &doc(), "fp1", 60_000, MAX)
            .await
            .unwrap()
    );
    let got = st.touch_session("t", "s1").await.unwrap().unwrap();
    assert_eq!(got.doc, doc());
    assert_eq!(
        (got.seq, got.tools.as_str(), got.holder.as_str()),
        (0, "fp1", "")
    );
    // Sessions are per tenant: the same id under another tenant is unknown.
    assert_eq!(st.touch_session("u", "s1").await.unwrap(), None);
    assert!(
        st.set_session_version("t", "s1", "2025-11-25")
            .await
            .unwrap()
    );
    let got = st.touch_session("t", "s1").await.unwrap().unwrap();
    assert_eq!(got.doc.protocol_version.as_deref(), Some("2025-11-25"));
    assert!(
        !st.set_session_version("u", "s1", "2025-11-25")
            .await
            .unwrap()
    );
    let topic = understudy_core::sessions::session_topic("t", "s1").unwrap();
    let mut sub = s.hub.subscribe(&topic).await;
    // A stream claims the session: its token is recorded and announced.
    assert!(st.claim_stream("t", "s1", "tok-a").await.unwrap());
    assert_eq!(
        next_signal(&mut sub).await,
        SessionSignal::Claimed("tok-a".into())
    );
    assert_eq!(
        st.touch_session("t", "s1").await.unwrap().unwrap().holder,
        "tok-a"
    );
    assert_eq!(st.events_after("t", "s1", 0).await.unwrap().holder, "tok-a");
    assert!(!st.claim_stream("u", "s1", "tok-b").await.unwrap());
    assert!(st.end_session("t", "s1").await.unwrap());
    assert_eq!(next_signal(&mut sub).await, SessionSignal::End);
    assert_eq!(st.touch_session("t", "s1").await.unwrap(), None);
    assert!(!st.events_after("t", "s1", 0).await.unwrap().exists);
    assert!(!st.end_session("t", "s1").await.unwrap());
    assert!(
        !st.set_session_version("t", "s1", "2025-11-25")
            .await
            .unwrap()
    );
    assert_eq!(st.touch_session("t", "s1").await.unwrap(), None);
}

async fn idle_sessions_expire_and_use_keeps_them(s: Stores) {
    let st = &s.sessions;
    st.create_session("t", "idle", &doc(), "", 400, MAX)
        .await
        .unwrap();
    st.create_session("t", "busy", &doc(), "", 400, MAX)
        .await
        .unwrap();
    // A longer-lived session is refreshed with its own idle time, whoever touches it.
    st.create_session("t", "long", &doc(), "", 60_000, MAX)
        .await
        .unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(st.touch_session("t", "busy").await.unwrap().is_some());
        assert!(st.touch_session("t", "long").await.unwrap().is_some());
    }
    assert_eq!(st.touch_session("t", "idle").await.unwrap(), None);
    assert!(st.touch_session("t", "busy").await.unwrap().is_some());
    assert!(st.touch_session("t", "long").await.unwrap().is_some());
}

async fn a_tenant_holds_at_most_its_cap_of_live_sessions(s: Stores) {
    let st = &s.sessions;
    for i in 0..3 {
        assert!(
            st.create_session("t", &format!("s{i}"), &doc(), "", 300, 3)
                .await
                .unwrap()
        );
    }
    assert!(
        !st.create_session("t", "s3", &doc(), "", 300, 3)
            .await
            .unwrap(),
        "full"
    );
    // Another tenant has its own cap.
    assert!(
        st.create_session("u", "s3", &doc(), "", 300, 3)
            .await
            .unwrap()
    );
    // Ended and expired sessions free their places.
    st.end_session("t", "s0").await.unwrap();
    assert!(
        st.create_session("t", "s3", &doc(), "", 300, 3)
            .await
            .unwrap()
    );
    assert!(
        !st.create_session("t", "s4", &doc(), "", 300, 3)
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        st.create_session("t", "s4", &doc(), "", 300, 3)
            .await
            .unwrap()
    );
}

async fn events_are_logged_bounded_and_rung(s: Stores) {
    let st = &s.sessions;
    let topic = understudy_core::sessions::session_topic("t", "s").unwrap();
    assert_eq!(
        st.append_event("t", "s", "{}", 4, None).await.unwrap(),
        Appended::NoSession
    );
    st.create_session("t", "s", &doc(), "a", 60_000, MAX)
        .await
        .unwrap();
    let mut sub = s.hub.subscribe(&topic).await;
    for i in 1..=6u64 {
        let data = format!("{{\"n\":{i}}}");
        assert_eq!(
            st.append_event("t", "s", &data, 4, None).await.unwrap(),
            Appended::Event(i)
        );
    }
    for i in 1..=6u64 {
        match next_signal(&mut sub).await {
            SessionSignal::Event(e) => assert_eq!((e.seq, e.data), (i, format!("{{\"n\":{i}}}"))),
            other => panic!("{other:?}"),
        }
    }
    // Only the last 4 are kept: a reader after 0 or 1 missed some, a reader after 2 did not.
    let r = st.events_after("t", "s", 0).await.unwrap();
    assert_eq!(
        r.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );
    assert!(r.truncated && r.exists);
    assert_eq!(r.last, 6);
    assert!(st.events_after("t", "s", 1).await.unwrap().truncated);
    let r = st.events_after("t", "s", 2).await.unwrap();
    assert!(!r.truncated);
    assert_eq!(r.events.len(), 4);
    let r = st.events_after("t", "s", 6).await.unwrap();
    assert!(r.events.is_empty() && !r.truncated);
    // A sequence above the last is unknown: nothing after it, and the caller can tell.
    let r = st.events_after("t", "s", 99).await.unwrap();
    assert!(r.events.is_empty() && r.last == 6);
    // A tool listing is told once, whoever appends it; a new one is told again.
    assert_eq!(
        st.append_event("t", "s", "{\"lc\":1}", 4, Some("b"))
            .await
            .unwrap(),
        Appended::Event(7)
    );
    assert_eq!(
        st.append_event("t", "s", "{\"lc\":2}", 4, Some("b"))
            .await
            .unwrap(),
        Appended::AlreadyTold
    );
    let got = st.touch_session("t", "s").await.unwrap().unwrap();
    assert_eq!((got.seq, got.tools.as_str()), (7, "b"));
    assert!(matches!(next_signal(&mut sub).await, SessionSignal::Event(e) if e.seq == 7));
    // A large event rings without its data; the log has it.
    let big = format!("\"{}\"", "x".repeat(SIGNAL_DATA_MAX + 10));
    assert_eq!(
        st.append_event("t", "s", &big, 4, None).await.unwrap(),
        Appended::Event(8)
    );
    assert_eq!(next_signal(&mut sub).await, SessionSignal::Appended(8));
    let r = st.events_after("t", "s", 7).await.unwrap();
    assert_eq!(r.events[0].data, big);
}

async fn purge_deletes_every_session_of_a_tenant(s: Stores) {
    let st = &s.sessions;
    for i in 0..1200 {
        let id = format!("s{i}");
        st.create_session("t", &id, &doc(), "", 60_000, 5000)
            .await
            .unwrap();
        if i % 100 == 0 {
            st.append_event("t", &id, "{}", 8, None).await.unwrap();
        }
    }
    st.create_session("other", "a", &doc(), "", 60_000, MAX)
        .await
        .unwrap();
    st.purge_tenant("t").await.unwrap();
    for id in ["s0", "s500", "s1199"] {
        assert_eq!(st.touch_session("t", id).await.unwrap(), None);
        assert!(st.events_after("t", id, 0).await.unwrap().events.is_empty());
    }
    assert!(st.touch_session("other", "a").await.unwrap().is_some());
    // Stores::purge_tenant includes sessions.
    s.purge_tenant("other").await.unwrap();
    assert_eq!(st.touch_session("other", "a").await.unwrap(), None);
}

// --- execute calls ------------------------------------------------------------------------------

fn call_doc(id: &str, caller: &str, request_id: Option<&str>) -> CallDoc {
    CallDoc {
        call_id: id.into(),
        tenant: "t".into(),
        caller: caller.into(),
        tool: "weather".into(),
        body: "{\"tool\":\"weather\"}".into(),
        request_id: request_id.map(String::from),
        created_ms: understudy_core::now_ms(),
    }
}

async fn next_call_event(sub: &mut understudy_core::Subscription) -> CallEvent {
    let got = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("an event within 5 s")
        .expect("the hub lives");
    let Delivery::Message(b) = got else {
        panic!("gap")
    };
    CallEvent::decode(&b).expect("a call event")
}

async fn calls_run_stream_and_end_once(s: Stores) {
    let c = &s.calls;
    let created = c
        .create_call(&call_doc("c1", "k", None), "worker-a", 5_000)
        .await
        .unwrap();
    assert_eq!(created, Created::New);
    let got = c.get_call("t", "c1").await.unwrap().unwrap();
    assert_eq!((got.status, got.seq), (CallStatus::Started, 0));
    // Another tenant does not see it; an id that cannot be a call id is no call.
    assert_eq!(c.get_call("u", "c1").await.unwrap(), None);
    assert_eq!(c.get_call("t", "c1:events").await.unwrap(), None);
    let topic = understudy_core::calls::call_topic("t", "c1").unwrap();
    let mut sub = s.hub.subscribe(&topic).await;
    assert_eq!(
        c.start_call("t", "c1", "worker-a", 5_000).await.unwrap(),
        Lease::Held
    );
    assert_eq!(
        c.get_call("t", "c1").await.unwrap().unwrap().status,
        CallStatus::Running
    );
    // Another worker can neither take a live lease nor append as the worker.
    assert_eq!(
        c.start_call("t", "c1", "worker-b", 5_000).await.unwrap(),
        Lease::Lost
    );
    assert_eq!(
        c.renew_call("t", "c1", "worker-b", 5_000).await.unwrap(),
        Lease::Lost
    );
    assert_eq!(
        c.append_call_event(
            "t",
            "c1",
            Some("worker-b"),
            EventKind::Partial,
            "{}",
            None,
            None
        )
        .await
        .unwrap(),
        CallAppended::Lost
    );
    for text in ["Hel", "lo"] {
        let data = format!("{{\"type\":\"partial\",\"text\":\"{text}\"}}");
        assert!(matches!(
            c.append_call_event(
                "t",
                "c1",
                Some("worker-a"),
                EventKind::Partial,
                &data,
                None,
                None
            )
            .await
            .unwrap(),
            CallAppended::Event(_)
        ));
    }
    assert_eq!(
        c.renew_call("t", "c1", "worker-a", 5_000).await.unwrap(),
        Lease::Held
    );
    assert_eq!(
        c.append_call_event(
            "t",
            "c1",
            Some("worker-a"),
            EventKind::Final,
            "{\"type\":\"final\",\"text\":\"Hello\"}",
            Some("Hello"),
            None
        )
        .await
        .unwrap(),
        CallAppended::Event(3)
    );
    // The first terminal event wins: a late cancel changes nothing, and the worker is told.
    assert_eq!(
        c.append_call_event("t", "c1", None, EventKind::Cancelled, "{}", None, None)
            .await
            .unwrap(),
        CallAppended::Ended(CallStatus::Finished)
    );
    assert_eq!(
        c.renew_call("t", "c1", "worker-a", 5_000).await.unwrap(),
        Lease::Ended(CallStatus::Finished)
    );
    let got = c.get_call("t", "c1").await.unwrap().unwrap();
    assert_eq!(
        (got.status, got.result.as_deref(), got.seq),
        (CallStatus::Finished, Some("Hello"), 3)
    );
    // Events replay from the start, or after any sequence, and rang the doorbell in order.
    let all = c.call_events("t", "c1", 0).await.unwrap();
    assert_eq!(
        all.iter().map(|e| (e.seq, e.kind)).collect::<Vec<_>>(),
        vec![
            (1, EventKind::Partial),
            (2, EventKind::Partial),
            (3, EventKind::Final)
        ]
    );
    assert_eq!(c.call_events("t", "c1", 2).await.unwrap().len(), 1);
    for seq in 1..=3 {
        assert_eq!(next_call_event(&mut sub).await.seq, seq);
    }
    // A call cancelled before it runs cannot be started.
    c.create_call(&call_doc("c2", "k", None), "worker-a", 5_000)
        .await
        .unwrap();
    c.append_call_event(
        "t",
        "c2",
        None,
        EventKind::Cancelled,
        "{\"type\":\"cancelled\"}",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        c.start_call("t", "c2", "worker-a", 5_000).await.unwrap(),
        Lease::Ended(CallStatus::Cancelled)
    );
    assert_eq!(
        c.append_call_event("t", "nope", None, EventKind::Partial, "{}", None, None)
            .await
            .unwrap(),
        CallAppended::NoCall
    );
    // An empty result is a result, on every backend.
    c.create_call(&call_doc("c3", "k", None), "worker-a", 5_000)
        .await
        .unwrap();
    c.append_call_event(
        "t",
        "c3",
        Some("worker-a"),
        EventKind::Final,
        "{}",
        Some(""),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        c.get_call("t", "c3")
            .await
            .unwrap()
            .unwrap()
            .result
            .as_deref(),
        Some("")
    );
}

async fn a_request_id_names_one_call_per_caller(s: Stores) {
    let c = &s.calls;
    // Client-chosen text, whatever it holds, is only a name.
    let rid = "r-1: retry * {x}";
    let first = c
        .create_call(&call_doc("c1", "k", Some(rid)), "w", 5_000)
        .await
        .unwrap();
    assert_eq!(first, Created::New);
    let again = c
        .create_call(&call_doc("c2", "k", Some(rid)), "w", 5_000)
        .await
        .unwrap();
    let Created::Existing(doc) = again else {
        panic!("{again:?}")
    };
    assert_eq!(doc.call_id, "c1");
    assert_eq!(c.get_call("t", "c2").await.unwrap(), None, "no second call");
    // Another caller's request id is its own.
    assert_eq!(
        c.create_call(&call_doc("c3", "other", Some(rid)), "w", 5_000)
            .await
            .unwrap(),
        Created::New
    );
    assert_eq!(
        c.caller_calls("t", "k").await.unwrap(),
        vec!["c1".to_string()]
    );
    assert_eq!(
        c.caller_calls("t", "other").await.unwrap(),
        vec!["c3".to_string()]
    );
    // Live calls: counted until they end.
    assert_eq!(c.caller_live_calls("t", "k").await.unwrap(), 1);
    c.append_call_event("t", "c1", None, EventKind::Cancelled, "{}", None, None)
        .await
        .unwrap();
    assert_eq!(c.caller_live_calls("t", "k").await.unwrap(), 0);
    assert_eq!(c.caller_live_calls("t", "other").await.unwrap(), 1);
    // A purge forgets calls and their request ids.
    s.purge_tenant("t").await.unwrap();
    assert_eq!(c.get_call("t", "c1").await.unwrap(), None);
    assert!(c.caller_calls("t", "k").await.unwrap().is_empty());
    assert_eq!(
        c.create_call(&call_doc("c4", "k", Some(rid)), "w", 5_000)
            .await
            .unwrap(),
        Created::New
    );
}

async fn a_call_whose_lease_expired_ends_as_worker_lost(s: Stores) {
    let c = &s.calls;
    // Its creator died before running it: the creation lease expires too.
    c.create_call(&call_doc("c0", "k", None), "worker-a", 200)
        .await
        .unwrap();
    c.create_call(&call_doc("c1", "k", None), "worker-a", 200)
        .await
        .unwrap();
    assert_eq!(
        c.start_call("t", "c1", "worker-a", 200).await.unwrap(),
        Lease::Held
    );
    assert!(
        !c.finish_if_lost("t", "c1", "{}").await.unwrap(),
        "the lease holds"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let data = "{\"type\":\"error\",\"code\":\"WORKER_LOST\",\"text\":\"gone\"}";
    for id in ["c0", "c1"] {
        assert!(c.finish_if_lost("t", id, data).await.unwrap(), "{id}");
        assert!(
            !c.finish_if_lost("t", id, data).await.unwrap(),
            "{id}: once"
        );
        let got = c.get_call("t", id).await.unwrap().unwrap();
        assert_eq!(
            (got.status, got.error.as_deref()),
            (CallStatus::Error, Some("WORKER_LOST"))
        );
        assert_eq!(
            c.call_events("t", id, 0)
                .await
                .unwrap()
                .last()
                .unwrap()
                .data,
            data
        );
    }
    // A new worker may take over an expired lease (before anyone declares the call lost); the
    // old one is then told it lost the call.
    c.create_call(&call_doc("c2", "k", None), "worker-a", 100)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        c.start_call("t", "c2", "worker-b", 5_000).await.unwrap(),
        Lease::Held
    );
    assert_eq!(
        c.renew_call("t", "c2", "worker-a", 5_000).await.unwrap(),
        Lease::Lost
    );
    assert!(!c.finish_if_lost("t", "c2", data).await.unwrap());
}

// --- channels ---------------------------------------------------------------------------------

fn channel_doc(tenant: Option<&str>) -> ChannelDoc {
    ChannelDoc {
        id: uuid::Uuid::new_v4().to_string(),
        name: "orders".into(),
        visibility: Visibility::Private,
        description: Some("d".into()),
        default_ttl_seconds: None,
        created_ms: 1,
        tenant: tenant.map(String::from),
        publish_token_hash: token_hash("pub_x"),
    }
}

async fn next_channel_signal(sub: &mut understudy_core::Subscription) -> ChannelSignal {
    let got = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("a signal within 5 s")
        .expect("the hub lives");
    let Delivery::Message(b) = got else {
        panic!("gap")
    };
    ChannelSignal::decode(&b).expect("a channel signal")
}

async fn channels_publish_in_order_and_ring_their_doorbell(s: Stores) {
    let c = &s.channels;
    let doc = channel_doc(Some("t"));
    assert!(c.create_channel(&doc, 10).await.unwrap());
    let got = c.get_channel(&doc.id).await.unwrap().expect("created");
    assert_eq!(got.doc, doc);
    assert!(!got.deleted);
    assert_eq!(got.last, None);
    assert_eq!(
        c.list_channels(Some("t"), 10).await.unwrap(),
        vec![doc.id.clone()]
    );
    assert!(c.list_channels(None, 10).await.unwrap().is_empty());
    let mut sub = s
        .hub
        .subscribe(&channel_topic(Some("t"), &doc.id).unwrap())
        .await;
    let mut prev = None;
    let mut positions = Vec::new();
    for i in 0..5 {
        let m = c
            .publish(&doc, &format!("\"m{i}\""), "{\"k\":1}", 0, 100)
            .await
            .unwrap()
            .expect("published");
        assert_eq!(
            next_channel_signal(&mut sub).await,
            ChannelSignal::Message {
                prev,
                message: m.clone()
            }
        );
        prev = Some(m.pos);
        positions.push(m.pos);
    }
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions grow: {positions:?}"
    );
    assert_eq!(c.get_channel(&doc.id).await.unwrap().unwrap().last, prev);
    // Reads: from the oldest, after a position, in pages.
    let all = c
        .messages_after(&doc.id, None, 100, usize::MAX)
        .await
        .unwrap();
    assert!(all.exists && !all.has_more && !all.after_retained);
    assert_eq!(all.messages.len(), 5);
    assert_eq!(all.messages[0].payload, "\"m0\"");
    assert_eq!(all.messages[0].metadata, "{\"k\":1}");
    assert_eq!(all.first, Some(positions[0]));
    let page = c
        .messages_after(&doc.id, Some(positions[1]), 2, usize::MAX)
        .await
        .unwrap();
    assert!(page.after_retained && page.has_more);
    let p: Vec<_> = page.messages.iter().map(|m| m.pos).collect();
    assert_eq!(p, positions[2..4]);
    let tail = c
        .messages_after(&doc.id, Some(positions[4]), 2, usize::MAX)
        .await
        .unwrap();
    assert!(tail.after_retained && !tail.has_more && tail.messages.is_empty());
    // A position that was never a message is not retained; what follows it is still read.
    let fake = understudy_core::channels::Position {
        ms: positions[0].ms,
        seq: 999_999,
    };
    let r = c
        .messages_after(&doc.id, Some(fake), 100, usize::MAX)
        .await
        .unwrap();
    assert!(!r.after_retained);
    // Large messages ring without their data.
    let big = format!("\"{}\"", "x".repeat(SIGNAL_DATA_MAX));
    let m = c.publish(&doc, &big, "", 7, 100).await.unwrap().unwrap();
    assert_eq!(m.expires_ms, 7);
    assert_eq!(
        next_channel_signal(&mut sub).await,
        ChannelSignal::Published { prev, pos: m.pos }
    );
    let back = c
        .messages_after(&doc.id, prev, 1, usize::MAX)
        .await
        .unwrap();
    assert_eq!(back.messages, vec![m]);
}

async fn channel_streams_are_trimmed_to_their_cap(s: Stores) {
    let c = &s.channels;
    let doc = channel_doc(None);
    assert!(c.create_channel(&doc, 10).await.unwrap());
    let mut positions = Vec::new();
    for i in 0..10 {
        positions.push(
            c.publish(&doc, &i.to_string(), "", 0, 3)
                .await
                .unwrap()
                .unwrap()
                .pos,
        );
    }
    let r = c
        .messages_after(&doc.id, None, 100, usize::MAX)
        .await
        .unwrap();
    let kept: Vec<_> = r.messages.iter().map(|m| m.payload.as_str()).collect();
    assert_eq!(kept, ["7", "8", "9"]);
    assert_eq!(r.first, Some(positions[7]));
    // A read stops at its byte budget (one message at least) and says more follow.
    let r = c.messages_after(&doc.id, None, 100, 2).await.unwrap();
    let kept: Vec<_> = r.messages.iter().map(|m| m.payload.as_str()).collect();
    assert_eq!(kept, ["7", "8"]);
    assert!(r.has_more);
    let r = c.messages_after(&doc.id, None, 100, 0).await.unwrap();
    assert_eq!(r.messages.len(), 1, "one message whatever the budget");
    assert!(r.has_more);
    // A trimmed position is not retained: the reader learns it missed some.
    let r = c
        .messages_after(&doc.id, Some(positions[2]), 100, usize::MAX)
        .await
        .unwrap();
    assert!(!r.after_retained);
    assert_eq!(r.messages.len(), 3);
}

async fn deleted_channels_refuse_everything_and_ring(s: Stores) {
    let c = &s.channels;
    let doc = channel_doc(Some("t"));
    assert!(c.create_channel(&doc, 10).await.unwrap());
    c.publish(&doc, "1", "", 0, 10).await.unwrap().unwrap();
    let grant = Grant {
        id: uuid::Uuid::new_v4().to_string(),
        channel_id: doc.id.clone(),
        label: None,
        expires_ms: None,
        created_ms: 1,
        revoked_ms: None,
        token_hash: token_hash("rdg_a"),
    };
    assert_eq!(
        c.create_grant(&grant, 10, 0).await.unwrap(),
        GrantCreated::Created
    );
    let mut sub = s
        .hub
        .subscribe(&channel_topic(Some("t"), &doc.id).unwrap())
        .await;
    assert!(c.delete_channel(&doc).await.unwrap());
    assert_eq!(next_channel_signal(&mut sub).await, ChannelSignal::Deleted);
    assert!(!c.delete_channel(&doc).await.unwrap(), "deleted once");
    let tomb = c.get_channel(&doc.id).await.unwrap().expect("a tombstone");
    assert!(tomb.deleted);
    assert_eq!(c.publish(&doc, "2", "", 0, 10).await.unwrap(), None);
    assert!(
        !c.messages_after(&doc.id, None, 10, usize::MAX)
            .await
            .unwrap()
            .exists
    );
    assert_eq!(
        c.grant_by_token(&doc.id, &grant.token_hash).await.unwrap(),
        None
    );
    assert_eq!(c.get_grant(&doc.id, &grant.id).await.unwrap(), None);
    assert_eq!(
        c.create_grant(&grant, 10, 0).await.unwrap(),
        GrantCreated::NoChannel
    );
    assert!(c.list_channels(Some("t"), 10).await.unwrap().is_empty());
    // Nothing for an id never created.
    assert_eq!(
        c.get_channel(&uuid::Uuid::new_v4().to_string())
            .await
            .unwrap(),
        None
    );
}

async fn grants_are_found_by_token_capped_and_revoked(s: Stores) {
    let c = &s.channels;
    let doc = channel_doc(None);
    assert!(c.create_channel(&doc, 10).await.unwrap());
    let grant = |token: &str| Grant {
        id: uuid::Uuid::new_v4().to_string(),
        channel_id: doc.id.clone(),
        label: Some("agent".into()),
        expires_ms: Some(u64::MAX / 2),
        created_ms: 5,
        revoked_ms: None,
        token_hash: token_hash(token),
    };
    let a = grant("rdg_a");
    let b = grant("rdg_b");
    assert_eq!(
        c.create_grant(&a, 2, 0).await.unwrap(),
        GrantCreated::Created
    );
    assert_eq!(
        c.create_grant(&b, 2, 0).await.unwrap(),
        GrantCreated::Created
    );
    assert_eq!(
        c.create_grant(&grant("rdg_c"), 2, 0).await.unwrap(),
        GrantCreated::TooMany
    );
    assert_eq!(
        c.grant_by_token(&doc.id, &token_hash("rdg_a"))
            .await
            .unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        c.grant_by_token(&doc.id, &token_hash("rdg_z"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(c.get_grant(&doc.id, &b.id).await.unwrap(), Some(b.clone()));
    let mut sub = s
        .hub
        .subscribe(&channel_topic(None, &doc.id).unwrap())
        .await;
    let revoked = c
        .revoke_grant(&doc, &a.id, 77)
        .await
        .unwrap()
        .expect("revoked");
    assert_eq!(revoked.revoked_ms, Some(77));
    assert!(!revoked.valid_at(0));
    assert_eq!(
        next_channel_signal(&mut sub).await,
        ChannelSignal::Revoked(a.id.clone())
    );
    assert_eq!(
        c.grant_by_token(&doc.id, &token_hash("rdg_a"))
            .await
            .unwrap(),
        None
    );
    let again = c
        .revoke_grant(&doc, &a.id, 99)
        .await
        .unwrap()
        .expect("still there");
    assert_eq!(
        again.revoked_ms,
        Some(77),
        "the first revocation time is kept"
    );
    // At the cap, revoked (and expired) grants make room; live ones do not.
    let d = grant("rdg_d");
    assert_eq!(
        c.create_grant(&d, 2, 100).await.unwrap(),
        GrantCreated::Created
    );
    assert_eq!(
        c.get_grant(&doc.id, &a.id).await.unwrap(),
        None,
        "the revoked one went"
    );
    assert_eq!(
        c.create_grant(&grant("rdg_e"), 2, 100).await.unwrap(),
        GrantCreated::TooMany
    );
    let mut short = grant("rdg_f");
    short.expires_ms = Some(50);
    let s2 = channel_doc(None);
    assert!(c.create_channel(&s2, 10).await.unwrap());
    short.channel_id = s2.id.clone();
    let mut live = grant("rdg_g");
    live.channel_id = s2.id.clone();
    assert_eq!(
        c.create_grant(&short, 2, 0).await.unwrap(),
        GrantCreated::Created
    );
    assert_eq!(
        c.create_grant(&live, 2, 0).await.unwrap(),
        GrantCreated::Created
    );
    let mut next = grant("rdg_h");
    next.channel_id = s2.id.clone();
    assert_eq!(
        c.create_grant(&next, 2, 60).await.unwrap(),
        GrantCreated::Created,
        "an expired grant makes room"
    );
    assert_eq!(
        c.grant_by_token(&s2.id, &token_hash("rdg_f"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        c.revoke_grant(&doc, &uuid::Uuid::new_v4().to_string(), 1)
            .await
            .unwrap(),
        None
    );
    assert!(b.valid_at(1_000));
}

async fn owners_hold_at_most_their_cap_and_purge_takes_a_tenants_channels(s: Stores) {
    let c = &s.channels;
    let a = channel_doc(Some("t"));
    let b = channel_doc(Some("t"));
    let other = channel_doc(Some("u"));
    let global = channel_doc(None);
    assert!(c.create_channel(&a, 2).await.unwrap());
    assert!(c.create_channel(&b, 2).await.unwrap());
    assert!(
        !c.create_channel(&channel_doc(Some("t")), 2).await.unwrap(),
        "at the cap"
    );
    assert!(c.create_channel(&other, 2).await.unwrap());
    assert!(c.create_channel(&global, 2).await.unwrap());
    assert!(
        c.create_channel(&a, 2).await.is_err(),
        "an id is created once"
    );
    // A deleted channel frees its place.
    assert!(c.delete_channel(&b).await.unwrap());
    assert!(c.create_channel(&channel_doc(Some("t")), 2).await.unwrap());
    c.publish(&a, "1", "", 0, 10).await.unwrap().unwrap();
    let mut sub = s
        .hub
        .subscribe(&channel_topic(Some("t"), &a.id).unwrap())
        .await;
    c.purge_tenant("t").await.unwrap();
    assert_eq!(next_channel_signal(&mut sub).await, ChannelSignal::Deleted);
    assert_eq!(c.get_channel(&a.id).await.unwrap(), None);
    assert!(c.list_channels(Some("t"), 10).await.unwrap().is_empty());
    assert!(c.get_channel(&other.id).await.unwrap().is_some());
    assert!(c.get_channel(&global.id).await.unwrap().is_some());
}

// --- token buckets and short-lived values -----------------------------------------------------

async fn token_buckets_hold_a_burst_and_refill(s: Stores) {
    let r = &s.runtime;
    let t0 = 1_000_000;
    for i in 0..5 {
        assert_eq!(
            r.take_token("replay:ann", 5, 12_000, t0 + i).await.unwrap(),
            None
        );
    }
    let wait = r.take_token("replay:ann", 5, 12_000, t0 + 5).await.unwrap();
    assert_eq!(
        wait,
        Some(12_000 - 5),
        "the next token is due a refill after the first take"
    );
    assert_eq!(
        r.take_token("replay:bob", 5, 12_000, t0 + 5).await.unwrap(),
        None,
        "buckets are per name"
    );
    // One refill later exactly one token is back.
    assert_eq!(
        r.take_token("replay:ann", 5, 12_000, t0 + 12_000)
            .await
            .unwrap(),
        None
    );
    assert!(
        r.take_token("replay:ann", 5, 12_000, t0 + 12_001)
            .await
            .unwrap()
            .is_some()
    );
    // A long pause fills it to the burst, never beyond.
    for i in 0..5 {
        assert_eq!(
            r.take_token("replay:ann", 5, 12_000, t0 + 1_000_000 + i)
                .await
                .unwrap(),
            None
        );
    }
    assert!(
        r.take_token("replay:ann", 5, 12_000, t0 + 1_000_010)
            .await
            .unwrap()
            .is_some()
    );
}

async fn values_live_for_their_ttl_and_are_taken_once(s: Stores) {
    let r = &s.runtime;
    r.put_value("login:a", "one", 60_000).await.unwrap();
    assert_eq!(
        r.get_value("login:a").await.unwrap().as_deref(),
        Some("one")
    );
    assert_eq!(
        r.take_value("login:a").await.unwrap().as_deref(),
        Some("one")
    );
    assert_eq!(r.take_value("login:a").await.unwrap(), None, "taken once");
    assert_eq!(r.get_value("login:a").await.unwrap(), None);
    r.put_value("portal:s", "two", 60_000).await.unwrap();
    r.delete_value("portal:s").await.unwrap();
    assert_eq!(r.get_value("portal:s").await.unwrap(), None);
    r.put_value("short", "x", 50).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(r.get_value("short").await.unwrap(), None, "expired");
    assert_eq!(r.take_value("short").await.unwrap(), None);
}

// --- audit -------------------------------------------------------------------------------------

fn audit_entry(
    ms: u64,
    tenant: Option<&str>,
    tool: &str,
    user: Option<&str>,
    ok: bool,
) -> AuditEntry {
    AuditEntry {
        event: AuditEvent {
            id: audit::new_id(ms),
            ts: audit::rfc3339_ms(ms),
            tenant: tenant.map(String::from),
            tool: tool.into(),
            user: user.map(String::from),
            session: None,
            auth_type: if user.is_some() {
                "api_key"
            } else {
                "anonymous"
            }
            .into(),
            source: "mcp".into(),
            success: ok,
            duration_ms: 1.5,
            transport: Some("streamable".into()),
            scenario: None,
            chaos: None,
            status: None,
            error: (!ok).then(|| "Boom happened".to_string()),
        },
        payload: Some(AuditPayload {
            request_params: Some(audit::raw(
                &json!({"n": ms % 3, "city": if (ms / 10).is_multiple_of(2) { "Paris" } else { "Oslo" }}),
            )),
            request_headers: Some(audit::raw(&json!({"User-Agent": ["sdk/1"]}))),
            response_result: Some(audit::raw(&json!({"isError": !ok}))),
            response_error: (!ok).then(|| audit::raw(&json!({"message": "boom"}))),
            ..Default::default()
        }),
    }
}

async fn audit_events_are_stored_queried_and_paged(s: Stores) {
    let a = &s.audit;
    let now = understudy_core::now_ms();
    let base = now - 60_000;
    let mut entries = Vec::new();
    for i in 0..30u64 {
        let tenant = if i % 3 == 0 {
            Some("shop")
        } else {
            Some("bank")
        };
        let user = if i % 2 == 0 { Some("ann") } else { None };
        entries.push(audit_entry(
            base + i * 10,
            tenant,
            if i % 5 == 0 { "refund" } else { "lookup" },
            user,
            i % 4 != 0,
        ));
    }
    a.append_audit(entries[..10].to_vec()).await.unwrap();
    a.append_audit(entries[10..].to_vec()).await.unwrap();
    assert_eq!(a.audit_len().await.unwrap(), 30);

    let got = a.audit_event(&entries[7].event.id).await.unwrap().unwrap();
    assert_eq!(got, entries[7]);
    assert_eq!(a.audit_event(&audit::new_id(base)).await.unwrap(), None);

    // Everything, newest first, paged.
    let all = AuditFilter::default();
    let p = a.query_audit(&all, 0, 7, now).await.unwrap();
    assert_eq!(p.total, 30);
    let ids: Vec<_> = p.events.iter().map(|e| e.id.clone()).collect();
    let want: Vec<_> = entries
        .iter()
        .rev()
        .take(7)
        .map(|e| e.event.id.clone())
        .collect();
    assert_eq!(ids, want);
    let p2 = a.query_audit(&all, 28, 7, now).await.unwrap();
    assert_eq!(p2.events.len(), 2);
    assert_eq!(p2.events[1].id, entries[0].event.id);

    // The same filters on both backends, checked against a plain evaluation.
    let check = |f: AuditFilter| {
        let want: Vec<String> = entries
            .iter()
            .rev()
            .filter(|e| f.matches(&e.event, e.payload.as_ref(), now))
            .map(|e| e.event.id.clone())
            .collect();
        (f, want)
    };
    let mut filters = Vec::new();
    filters.push(AuditFilter {
        tenant: Some("shop".into()),
        ..Default::default()
    });
    filters.push(AuditFilter {
        tool: Some("lookup".into()),
        success: Some(false),
        ..Default::default()
    });
    filters.push(AuditFilter {
        tool: Some("refund".into()),
        user: Some("ann".into()),
        tenant: Some("shop".into()),
        ..Default::default()
    });
    filters.push(AuditFilter {
        q: Some("boom".into()),
        ..Default::default()
    });
    filters.push(AuditFilter {
        from_ms: Some(base + 100),
        to_ms: Some(base + 200),
        ..Default::default()
    });
    filters.push(AuditFilter {
        json: vec![audit::JsonFilter::parse("param.city", "Paris").unwrap()],
        ..Default::default()
    });
    filters.push(AuditFilter {
        json: vec![audit::JsonFilter::parse("param.n", "2").unwrap()],
        tool: Some("lookup".into()),
        ..Default::default()
    });
    filters.push(AuditFilter {
        has: vec![audit::Column::ResponseError],
        ..Default::default()
    });
    filters.push(AuditFilter {
        visibility: audit::Visibility::Only("bank".into()),
        ..Default::default()
    });
    filters.push(AuditFilter {
        visibility: audit::Visibility::Allow(["shop".to_string()].into()),
        ..Default::default()
    });
    filters.push(AuditFilter {
        tenant: Some("nobody".into()),
        ..Default::default()
    });
    for f in filters {
        let (f, want) = check(f);
        assert!(
            !want.is_empty() || f.tenant.as_deref() == Some("nobody"),
            "{f:?} selects something"
        );
        let p = a.query_audit(&f, 0, 1000, now).await.unwrap();
        let got: Vec<String> = p.events.iter().map(|e| e.id.clone()).collect();
        assert_eq!(got, want, "query {f:?}");
        assert_eq!(p.total as usize, want.len(), "total of {f:?}");
        let page = a.query_audit(&f, 1, 2, now).await.unwrap();
        let got: Vec<String> = page.events.iter().map(|e| e.id.clone()).collect();
        assert_eq!(
            got,
            want.iter().skip(1).take(2).cloned().collect::<Vec<_>>(),
            "page of {f:?}"
        );
        // A scan in pages of 4 reads the same, in the same order.
        let mut scanned = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let (evs, next) = a.scan_audit(&f, cursor.as_deref(), 4, now).await.unwrap();
            scanned.extend(evs.into_iter().map(|e| e.id));
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(scanned, want, "scan of {f:?}");
    }
}

async fn audit_retention_drops_the_oldest_by_age_and_count(s: Stores) {
    let a = &s.audit;
    let now = understudy_core::now_ms();
    let entries: Vec<_> = (0..20u64)
        .map(|i| {
            audit_entry(
                now - 100_000 + i * 1000,
                Some("shop"),
                "lookup",
                Some("ann"),
                true,
            )
        })
        .collect();
    a.append_audit(entries.clone()).await.unwrap();
    // By age: the first 5 are older than the cut-off; in batches of 3.
    let cut = now - 100_000 + 5 * 1000;
    assert_eq!(a.prune_audit(cut, 1000, 3).await.unwrap(), 3);
    assert_eq!(a.prune_audit(cut, 1000, 3).await.unwrap(), 2);
    assert_eq!(a.prune_audit(cut, 1000, 3).await.unwrap(), 0);
    assert_eq!(a.audit_len().await.unwrap(), 15);
    assert_eq!(a.audit_event(&entries[4].event.id).await.unwrap(), None);
    // By count: keep the newest 10.
    assert_eq!(a.prune_audit(0, 10, 100).await.unwrap(), 5);
    assert_eq!(a.audit_len().await.unwrap(), 10);
    let f = AuditFilter {
        user: Some("ann".into()),
        tool: Some("lookup".into()),
        ..Default::default()
    };
    let p = a.query_audit(&f, 0, 100, now).await.unwrap();
    assert_eq!(p.total, 10, "the indexes lose what was pruned");
    assert_eq!(p.events.last().unwrap().id, entries[10].event.id);
    let p = a
        .query_audit(
            &AuditFilter {
                q: Some("lookup".into()),
                ..Default::default()
            },
            0,
            100,
            now,
        )
        .await
        .unwrap();
    assert_eq!(p.total, 10);
}

macro_rules! contract {
    ($suite:ident: $($name:ident),* $(,)?) => {
        mod $suite {
            mod memory_backend {
                $(#[tokio::test] async fn $name() { let (s, _g) = super::super::memory(); super::super::$name(s).await })*
            }
            mod redis_backend {
                $(#[tokio::test] async fn $name() { let (s, _g) = super::super::redis(); super::super::$name(s).await })*
            }
        }
    };
}

/// The configuration suite takes the config store and the hub its notices go out on.
async fn config_case<F, Fut>(s: Stores, case: F)
where
    F: FnOnce(Arc<dyn ConfigStore>, Hub) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    case(s.config.clone(), s.hub.clone()).await
}

macro_rules! config_contract {
    ($($name:ident),* $(,)?) => {
        mod config {
            mod memory_backend {
                $(#[tokio::test] async fn $name() { let (s, _g) = super::super::memory(); super::super::config_case(s, super::super::$name).await })*
            }
            mod redis_backend {
                $(#[tokio::test] async fn $name() { let (s, _g) = super::super::redis(); super::super::config_case(s, super::super::$name).await })*
            }
        }
    };
}

config_contract!(
    put_get_load_and_versions,
    delete_reports_absence,
    notices_arrive_in_order,
    epoch_marks_population,
    raise_version_only_raises,
    checked_writes_refuse_stale_versions,
    keys_are_created_once_listed_and_revoked,
    an_emptied_store_is_not_marked_by_a_reader,
);

contract!(runtime:
    windowed_counters_count_restart_and_expire,
    callers_are_counted_per_route_and_window,
    plain_counters_and_purge,
    locks_are_held_extended_and_expire,
    seed_generation_is_kept,
    token_buckets_hold_a_burst_and_refill,
    values_live_for_their_ttl_and_are_taken_once,
);

contract!(audit_log:
    audit_events_are_stored_queried_and_paged,
    audit_retention_drops_the_oldest_by_age_and_count,
);

contract!(stats:
    stats_accumulate,
    stats_of_deleted_tenants_are_purged_and_not_recreated,
    counts_served_by_an_earlier_incarnation_never_reach_a_new_one,
    totals_of_an_earlier_incarnation_are_not_read,
);

contract!(sessions:
    sessions_are_created_touched_and_ended,
    idle_sessions_expire_and_use_keeps_them,
    a_tenant_holds_at_most_its_cap_of_live_sessions,
    events_are_logged_bounded_and_rung,
    purge_deletes_every_session_of_a_tenant,
);

contract!(channels:
    channels_publish_in_order_and_ring_their_doorbell,
    channel_streams_are_trimmed_to_their_cap,
    deleted_channels_refuse_everything_and_ring,
    grants_are_found_by_token_capped_and_revoked,
    owners_hold_at_most_their_cap_and_purge_takes_a_tenants_channels,
);

contract!(calls:
    calls_run_stream_and_end_once,
    a_request_id_names_one_call_per_caller,
    a_call_whose_lease_expired_ends_as_worker_lost,
);
