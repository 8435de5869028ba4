//! The hub contract, one suite run against the memory hub and against a Redis hub over a fresh
//! `redis-server` per test; then what only the Redis hub has to survive (the server restarting,
//! stopping to answer, answering late).
//!
//! Every wait is bounded and generous (this runs on busy machines): a test fails when a
//! delivery never comes, never because one came slowly. Nothing sleeps to synchronise: tests
//! poll what they can observe (`hub.connected()`, `PUBSUB NUMSUB`, `CLIENT LIST`) or wait for
//! deliveries; the only fixed lengths are fault injections (`CLIENT PAUSE`) and retry intervals.

use std::collections::HashSet;
use std::time::Duration;

use futures::future::join_all;
use tokio::sync::watch;
use understudy_core::{Delivery, Hub, Stores, Subscription, Topic};
use understudy_e2e::{RedisServer, eventually, free_port};

/// The longest any single delivery may take to arrive.
const WAIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Redis,
}

/// A hub and, on Redis, the server it talks to (killed on drop).
struct Fixture {
    hub: Hub,
    server: Option<RedisServer>,
}

impl Backend {
    /// A hub as the processes wire it (`Stores`), with the default capacity.
    fn stores(self) -> Fixture {
        match self {
            Backend::Memory => Fixture {
                hub: Stores::memory().hub,
                server: None,
            },
            Backend::Redis => {
                let server = RedisServer::start().expect("redis-server starts");
                let hub = Stores::redis(&server.url()).expect("valid url").hub;
                Fixture {
                    hub,
                    server: Some(server),
                }
            }
        }
    }

    /// A hub buffering `capacity` messages per topic.
    fn with_capacity(self, capacity: usize) -> Fixture {
        match self {
            Backend::Memory => Fixture {
                hub: Hub::memory_with_capacity(capacity),
                server: None,
            },
            Backend::Redis => {
                let server = RedisServer::start().expect("redis-server starts");
                let hub = redis_hub(&server.url(), capacity);
                Fixture {
                    hub,
                    server: Some(server),
                }
            }
        }
    }
}

/// A Redis hub with `capacity`, its publisher configured as the Redis stores configure theirs.
fn redis_hub(url: &str, capacity: usize) -> Hub {
    let client = redis::Client::open(url).expect("valid url");
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_millis(1000)))
        .set_response_timeout(Some(Duration::from_millis(1000)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    let publisher = redis::aio::ConnectionManager::new_lazy_with_config(client.clone(), config)
        .expect("a lazy connection");
    Hub::redis_with_capacity(client, publisher, capacity)
}

impl Fixture {
    /// Redis's count of subscribers of `topic` (connections, all processes); `None` on memory.
    fn numsub(&self, topic: &Topic) -> Option<u64> {
        let server = self.server.as_ref()?;
        let out = server.cli(&["PUBSUB", "NUMSUB", topic.as_str()]).ok()?;
        out.lines().last()?.trim().parse().ok()
    }

    /// Waits until Redis counts `n` subscribers of `topic` (at once on memory).
    async fn numsub_becomes(&self, topic: &Topic, n: u64) {
        if self.server.is_none() {
            return;
        }
        let reached = eventually(WAIT, || async {
            (self.numsub(topic) == Some(n)).then_some(())
        })
        .await;
        assert!(
            reached.is_some(),
            "PUBSUB NUMSUB {topic} is {:?}, expected {n}",
            self.numsub(topic)
        );
    }
}

fn text(d: &Delivery) -> Option<String> {
    match d {
        Delivery::Message(m) => Some(String::from_utf8_lossy(m).into_owned()),
        Delivery::Gap => None,
    }
}

/// The next delivery, waiting at most [`WAIT`].
async fn next(sub: &mut Subscription) -> Delivery {
    match tokio::time::timeout(WAIT, sub.recv()).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("{}: the hub is gone", sub.topic()),
        Err(_) => panic!("{}: nothing delivered within {WAIT:?}", sub.topic()),
    }
}

/// The next delivery, which must be the message `want`.
async fn expect_message(sub: &mut Subscription, want: &str) {
    let got = next(sub).await;
    assert_eq!(
        text(&got).as_deref(),
        Some(want),
        "{}: expected message {want:?}, got {got:?}",
        sub.topic()
    );
}

/// Checks that `got` is exactly the messages `0..n` as text, in order, with no gap.
fn assert_all_in_order(who: &str, got: &[Delivery], n: usize) {
    for (i, d) in got.iter().enumerate() {
        assert_eq!(
            text(d),
            Some(i.to_string()),
            "{who}: delivery #{i} is {d:?}, expected message {i}"
        );
    }
    assert_eq!(
        got.len(),
        n,
        "{who}: {} deliveries, expected {n}",
        got.len()
    );
}

/// Reads `sub` after it lagged: a `Gap` first, then messages in increasing order (more gaps
/// allowed while a Redis hub is still forwarding), up to and including the message `last`.
async fn expect_gap_then_tail(sub: &mut Subscription, last: usize) -> usize {
    let first = next(sub).await;
    assert_eq!(
        first,
        Delivery::Gap,
        "{}: a lagged receiver is told",
        sub.topic()
    );
    let mut previous: Option<usize> = None;
    let mut messages = 0;
    loop {
        let d = next(sub).await;
        let Some(t) = text(&d) else { continue };
        let i: usize = t.parse().expect("a numbered message");
        assert!(
            previous.is_none_or(|p| i > p),
            "{}: message {i} after {previous:?}: out of order",
            sub.topic()
        );
        previous = Some(i);
        messages += 1;
        if i == last {
            return messages;
        }
        assert!(
            i < last,
            "{}: message {i} past the last one, {last}",
            sub.topic()
        );
    }
}

// --- both backends ----------------------------------------------------------------------------

/// 1,000 messages published in order on one topic reach each of 3 receivers in order, none lost.
/// (The capacity holds them all, so no receiver can lag however the machine schedules it;
/// lagging has its own case.)
async fn order_per_topic(b: Backend) {
    const N: usize = 1000;
    let f = b.with_capacity(1024);
    let topic = Topic::global("order", "one").unwrap();
    let mut receivers = Vec::new();
    for _ in 0..3 {
        let mut sub = f.hub.subscribe(&topic).await;
        receivers.push(tokio::spawn(async move {
            let mut got = Vec::with_capacity(N);
            while got.len() < N {
                got.push(next(&mut sub).await);
            }
            got
        }));
    }
    for i in 0..N {
        f.hub.publish(&topic, i.to_string()).await.unwrap();
    }
    for (r, task) in receivers.into_iter().enumerate() {
        let got = task.await.expect("receiver task");
        assert_all_in_order(&format!("receiver {r}"), &got, N);
    }
}

/// A receiver sees only its own topic: not another kind, name or tenant of the same spelling,
/// not the global topic of that name, not a tenant topic whose parts concatenate alike.
async fn topics_are_isolated(b: Backend) {
    let f = b.stores();
    let topics = [
        Topic::tenant("a", "channel", "x").unwrap(),
        Topic::tenant("b", "channel", "x").unwrap(),
        Topic::tenant("a", "channel", "y").unwrap(),
        Topic::tenant("a", "session", "x").unwrap(),
        Topic::global("channel", "x").unwrap(),
        Topic::tenant("a", "channel", "b.c").unwrap(),
        Topic::tenant("a.b", "channel", "c").unwrap(),
        Topic::config(),
    ];
    let distinct: HashSet<_> = topics.iter().collect();
    assert_eq!(distinct.len(), topics.len(), "the names differ");
    let mut subs = Vec::new();
    for t in &topics {
        // Two receivers per topic.
        subs.push(f.hub.subscribe(t).await);
        subs.push(f.hub.subscribe(t).await);
    }
    assert_eq!(f.hub.topics(), topics.len());
    // A topic nobody here listens to.
    let unheard = Topic::tenant("c", "channel", "x").unwrap();
    f.hub.publish(&unheard, "nobody").await.unwrap();
    for t in &topics {
        f.hub.publish(t, format!("for {t}")).await.unwrap();
    }
    for t in &topics {
        f.hub.publish(t, "end").await.unwrap();
    }
    for sub in &mut subs {
        let own = format!("for {}", sub.topic());
        expect_message(sub, &own).await;
        expect_message(sub, "end").await;
    }
    // Every publish above was delivered (each topic's "end" came last on its topic, and both
    // backends deliver in publish order), so anything misrouted would be waiting by now.
    for sub in &mut subs {
        assert_eq!(sub.try_recv(), None, "{}: nothing else", sub.topic());
    }
}

/// With 8 messages of capacity: a receiver that never reads is told `Gap` when it reads at last;
/// another receiver of the topic that keeps up gets all 10,000 messages; the publisher never
/// waits for the one that does not read (10,000 more publishes with nobody reading complete).
async fn a_slow_receiver_lags_alone(b: Backend) {
    const N: usize = 10_000;
    const CAPACITY: usize = 8;
    // The publisher stays at most this far ahead of the reading receiver, so it cannot lag.
    const AHEAD: usize = CAPACITY / 2;
    let f = b.with_capacity(CAPACITY);
    let topic = Topic::global("lag", "one").unwrap();
    let mut idle = f.hub.subscribe(&topic).await;
    let mut reader = f.hub.subscribe(&topic).await;
    let (count_tx, mut count) = watch::channel(0usize);
    let reading = tokio::spawn(async move {
        let mut got = Vec::with_capacity(N);
        while got.len() < N {
            let d = next(&mut reader).await;
            let gap = d == Delivery::Gap;
            got.push(d);
            count_tx.send_replace(got.len());
            if gap {
                break;
            }
        }
        (reader, got)
    });
    for i in 0..N {
        if i >= AHEAD {
            let caught_up = tokio::time::timeout(WAIT, count.wait_for(|&n| n + AHEAD > i)).await;
            if !matches!(caught_up, Ok(Ok(_))) {
                break; // the reader stopped (a gap) or stalled: its result says which
            }
        }
        f.hub.publish(&topic, i.to_string()).await.unwrap();
    }
    let (mut reader, got) = reading.await.expect("reader task");
    assert_all_in_order("the reading receiver", &got, N);
    // The idle receiver: told it lagged, then the newest messages, in order.
    let tail = expect_gap_then_tail(&mut idle, N - 1).await;
    assert!(
        tail <= CAPACITY.next_power_of_two(),
        "{tail} messages after the gap: no more than the topic buffers"
    );

    // Nobody reads now: the publisher still completes (within a bound no healthy run nears).
    let published = tokio::time::timeout(Duration::from_secs(120), async {
        for i in N..2 * N {
            f.hub.publish(&topic, i.to_string()).await.unwrap();
        }
    })
    .await;
    assert!(published.is_ok(), "publishing never waits for receivers");
    expect_gap_then_tail(&mut idle, 2 * N - 1).await;
    expect_gap_then_tail(&mut reader, 2 * N - 1).await;
}

/// Dropping a topic's last receiver removes the topic (and, on Redis, the connection's
/// subscription); subscribing again works, also at once after the drop, also after many
/// subscribe/drop rounds.
async fn last_drop_removes_topic(b: Backend) {
    let f = b.stores();
    let topic = Topic::tenant("shop", "channel", "orders").unwrap();
    let first = f.hub.subscribe(&topic).await;
    let second = f.hub.subscribe(&topic).await;
    let mut third = f.hub.subscribe(&topic).await;
    assert_eq!(f.hub.topics(), 1);
    f.numsub_becomes(&topic, 1).await;
    drop(first);
    drop(second);
    assert_eq!(f.hub.topics(), 1, "a receiver is left");
    f.hub.publish(&topic, "still").await.unwrap();
    expect_message(&mut third, "still").await;
    assert_eq!(f.numsub(&topic).unwrap_or(1), 1);
    drop(third);
    assert_eq!(f.hub.topics(), 0, "the last drop removes the topic");
    f.numsub_becomes(&topic, 0).await;

    // Subscribing again after the topic is gone.
    let mut again = f.hub.subscribe(&topic).await;
    assert_eq!(f.hub.topics(), 1);
    f.numsub_becomes(&topic, 1).await;
    f.hub.publish(&topic, "again").await.unwrap();
    expect_message(&mut again, "again").await;

    // Dropped and subscribed again at once, many times: the unsubscribe of the old topic must
    // not undo the subscription of the new one.
    drop(again);
    for _ in 0..50 {
        let sub = f.hub.subscribe(&topic).await;
        drop(sub);
    }
    let mut last = f.hub.subscribe(&topic).await;
    f.hub.publish(&topic, "after churn").await.unwrap();
    expect_message(&mut last, "after churn").await;
    f.numsub_becomes(&topic, 1).await;
    assert_eq!(f.hub.topics(), 1);
    drop(last);
    assert_eq!(f.hub.topics(), 0);
    f.numsub_becomes(&topic, 0).await;
}

/// 2,000 topics with one receiver each (subscribed all at once): one publish per topic, and
/// every receiver gets exactly its own message.
async fn thousands_of_topics(b: Backend) {
    const TOPICS: usize = 2000;
    let f = b.stores();
    let topics: Vec<Topic> = (0..TOPICS)
        .map(|i| Topic::global("many", &format!("t{i}")).unwrap())
        .collect();
    let mut subs = join_all(topics.iter().map(|t| f.hub.subscribe(t))).await;
    assert_eq!(f.hub.topics(), TOPICS);
    for t in &topics {
        f.hub.publish(t, t.as_str().to_string()).await.unwrap();
    }
    for sub in &mut subs {
        let own = sub.topic().to_string();
        expect_message(sub, &own).await;
    }
    // One connection delivers in publish order: anything misrouted would be here by now.
    for sub in &mut subs {
        assert_eq!(
            sub.try_recv(),
            None,
            "{}: only its own message",
            sub.topic()
        );
    }
    drop(subs);
    assert_eq!(f.hub.topics(), 0);
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod memory_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Memory).await })*
        }
        mod redis_backend {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Redis).await })*
        }
    };
}

contract!(
    order_per_topic,
    topics_are_isolated,
    a_slow_receiver_lags_alone,
    last_drop_removes_topic,
    thousands_of_topics,
);

// --- Redis only -------------------------------------------------------------------------------

/// Waits until `hub.connected()` is `want`.
async fn connected_becomes(hub: &Hub, want: bool) {
    let reached = eventually(WAIT, || async { (hub.connected() == want).then_some(()) }).await;
    assert!(reached.is_some(), "hub.connected() never became {want}");
}

/// Publishes on `topic` once the publisher's connection works again, and returns what went
/// out. A publish that failed may still have reached the server, so every attempt carries its
/// own payload (`base #n`): receivers skip earlier attempts with [`expect_published`].
async fn publish_when_back(hub: &Hub, topic: &Topic, base: &str) -> String {
    let mut attempt = 0;
    loop {
        let payload = format!("{base} #{attempt}");
        match hub.publish(topic, payload.clone()).await {
            Ok(()) => return payload,
            Err(e) => assert!(attempt < 100, "publishing keeps failing: {e}"),
        }
        attempt += 1;
        // A retry interval, not a synchronisation: the next attempt is checked either way.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next message is `want` (what [`publish_when_back`] returned), after perhaps failed
/// attempts of the same `base` and more gaps (a busy machine may see one more reconnect).
async fn expect_published(sub: &mut Subscription, base: &str, want: &str) {
    loop {
        let got = next(sub).await;
        let t = text(&got);
        if t.as_deref() == Some(want) {
            return;
        }
        assert!(
            got == Delivery::Gap
                || t.as_deref()
                    .is_some_and(|t| t.starts_with(&format!("{base} #"))),
            "{}: expected message {want:?}, got {got:?}",
            sub.topic()
        );
    }
}

/// The server is killed and started again on its port: every receiver is told `Gap`, the hub
/// counts a reconnect, and a publish after the restart reaches every receiver. A subscribe
/// made while the server is down returns, and its receiver gets `Gap`, then messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_tells_every_receiver() {
    let server = RedisServer::start().expect("redis-server starts");
    let port = server.port;
    let url = server.url();
    let hub = Stores::redis(&url).expect("valid url").hub;
    let topics: Vec<Topic> = (0..3)
        .map(|i| Topic::global("restart", &format!("t{i}")).unwrap())
        .collect();
    let mut subs = Vec::new();
    for t in &topics {
        subs.push(hub.subscribe(t).await);
        subs.push(hub.subscribe(t).await);
    }
    connected_becomes(&hub, true).await;
    let before = hub.reconnects();

    drop(server);
    connected_becomes(&hub, false).await;
    let published = tokio::time::timeout(WAIT, hub.publish(&topics[0], "lost")).await;
    assert!(
        matches!(published, Ok(Err(_))),
        "a publish while Redis is down fails (and returns): {published:?}"
    );
    // Subscribing while the server is down returns: to a new topic and to a known one.
    let late_topic = Topic::global("restart", "late").unwrap();
    let late = tokio::time::timeout(WAIT, hub.subscribe(&late_topic)).await;
    let late = late.expect("subscribe returns while Redis is down");
    let known = tokio::time::timeout(WAIT, hub.subscribe(&topics[1])).await;
    let known = known.expect("subscribe returns while Redis is down");
    subs.push(late);
    subs.push(known);

    let server = RedisServer::start_on(port).expect("redis-server starts again on its port");
    for sub in &mut subs {
        let d = next(sub).await;
        assert_eq!(d, Delivery::Gap, "{}: told to re-read", sub.topic());
    }
    assert!(
        hub.reconnects() > before,
        "a reconnect is counted: {} then {}",
        before,
        hub.reconnects()
    );
    assert!(hub.connected());
    let mut all_topics = topics.clone();
    all_topics.push(late_topic);
    let mut went_out = std::collections::HashMap::new();
    for t in &all_topics {
        assert_eq!(
            server
                .cli(&["PUBSUB", "NUMSUB", t.as_str()])
                .unwrap()
                .lines()
                .last(),
            Some("1"),
            "{t} subscribed again"
        );
        let sent = publish_when_back(&hub, t, &format!("back on {t}")).await;
        went_out.insert(t.as_str().to_string(), sent);
    }
    for sub in &mut subs {
        let base = format!("back on {}", sub.topic());
        let want = went_out[sub.topic()].clone();
        expect_published(sub, &base, &want).await;
    }
}

/// A hub created while Redis is not there yet: subscribing returns; once the server is up, the
/// receiver is told `Gap` (it may have missed something), then gets messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_started_before_redis_catches_up() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let hub = Stores::redis(&url).expect("valid url").hub;
    let topic = Topic::global("early", "one").unwrap();
    let mut sub = tokio::time::timeout(WAIT, hub.subscribe(&topic))
        .await
        .expect("subscribe returns while Redis is down");
    assert!(!hub.connected());
    let _server = RedisServer::start_on(port).expect("redis-server starts");
    assert_eq!(next(&mut sub).await, Delivery::Gap);
    connected_becomes(&hub, true).await;
    assert_eq!(hub.reconnects(), 0, "the first connection is no reconnect");
    let sent = publish_when_back(&hub, &topic, "hello").await;
    expect_published(&mut sub, "hello", &sent).await;
}

/// A healthy subscriber connection is kept: past several pings (the server's view of the
/// connection grows old), no reconnect and no `Gap`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_connection_is_kept() {
    let f = Backend::Redis.stores();
    let server = f.server.as_ref().unwrap();
    let topic = Topic::global("idle", "one").unwrap();
    let mut sub = f.hub.subscribe(&topic).await;
    connected_becomes(&f.hub, true).await;
    // The subscriber connection as the server sees it: its id and age (seconds).
    let subscriber = || -> Option<(String, u64)> {
        let list = server.cli(&["CLIENT", "LIST"]).ok()?;
        list.lines().find_map(|l| {
            let field = |k: &str| {
                l.split(' ')
                    .find_map(|kv| kv.strip_prefix(k).map(str::to_string))
            };
            if field("sub=")? == "0" {
                return None;
            }
            Some((field("id=")?, field("age=")?.parse().ok()?))
        })
    };
    let (id, _) = eventually(WAIT, || async { subscriber() })
        .await
        .expect("the subscriber connection is listed");
    // Three ping periods (3 s each) and a margin.
    let aged = eventually(WAIT, || async {
        subscriber().filter(|(i, age)| *i == id && *age >= 10)
    })
    .await;
    assert!(
        aged.is_some(),
        "the subscriber connection {id} was replaced (now {:?}); reconnects: {}",
        subscriber(),
        f.hub.reconnects()
    );
    assert_eq!(f.hub.reconnects(), 0);
    assert_eq!(sub.try_recv(), None, "no gap on a healthy connection");
    f.hub.publish(&topic, "still here").await.unwrap();
    expect_message(&mut sub, "still here").await;
}

/// A subscription Redis confirms only after `subscribe` gave up waiting (the server paused
/// longer than the hub waits) still gets its `Gap` once it is live, and then messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_confirmation_is_followed_by_a_gap() {
    let f = Backend::Redis.stores();
    let server = f.server.as_ref().unwrap();
    let known = Topic::global("late", "known").unwrap();
    let mut first = f.hub.subscribe(&known).await;
    connected_becomes(&f.hub, true).await;
    // Every client's commands wait 4.5 s (longer than subscribe waits for a confirmation).
    assert_eq!(
        server.cli(&["CLIENT", "PAUSE", "4500", "ALL"]).unwrap(),
        "OK"
    );
    let topic = Topic::global("late", "one").unwrap();
    let mut sub = tokio::time::timeout(WAIT, f.hub.subscribe(&topic))
        .await
        .expect("subscribe returns while the server is paused");
    assert_eq!(
        next(&mut sub).await,
        Delivery::Gap,
        "the receiver may have missed messages before its subscription was live"
    );
    f.numsub_becomes(&topic, 1).await;
    f.hub.publish(&topic, "after").await.unwrap();
    expect_message(&mut sub, "after").await;
    // The other topic's receiver got nothing but (perhaps) a gap.
    f.hub.publish(&known, "known").await.unwrap();
    loop {
        match next(&mut first).await {
            Delivery::Gap => continue,
            d => {
                assert_eq!(text(&d).as_deref(), Some("known"));
                break;
            }
        }
    }
}

/// A server that stops answering (frozen, its connections open) is noticed even while the hub
/// is waiting for a subscription to be confirmed; once it answers again every receiver is told
/// `Gap` and messages flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_is_noticed() {
    let f = Backend::Redis.stores();
    let server = f.server.as_ref().unwrap();
    let topic = Topic::global("frozen", "one").unwrap();
    let mut sub = f.hub.subscribe(&topic).await;
    connected_becomes(&f.hub, true).await;
    // Frozen (SIGSTOP): its connections stay open, nothing is answered. (Should the test fail
    // while it is frozen, dropping the server kills it all the same.)
    server.pause().expect("the server freezes");
    // The subscriber connection is now busy waiting for this confirmation.
    let other = Topic::global("frozen", "two").unwrap();
    let mut late = tokio::time::timeout(WAIT, f.hub.subscribe(&other))
        .await
        .expect("subscribe returns while the server is frozen");
    connected_becomes(&f.hub, false).await;
    server.resume().expect("the server resumes");
    assert_eq!(next(&mut sub).await, Delivery::Gap);
    assert_eq!(next(&mut late).await, Delivery::Gap);
    connected_becomes(&f.hub, true).await;
    assert!(f.hub.reconnects() >= 1);
    let sent = publish_when_back(&f.hub, &topic, "thawed").await;
    expect_published(&mut sub, "thawed", &sent).await;
    let sent = publish_when_back(&f.hub, &other, "thawed too").await;
    expect_published(&mut late, "thawed too", &sent).await;
}
