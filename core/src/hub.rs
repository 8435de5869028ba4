//! The pub/sub hub: one subscriber connection per process, bounded local fan-out per topic
//! (mini-redis's pattern).
//!
//! ```text
//!  publish(topic) ─► Redis PUBLISH ─► the process's one subscriber connection ─┐
//!                 └─ (memory backend: straight to the local map) ───────────────┤
//!                                                                               ▼
//!     topics: map topic → bounded broadcast sender ─► Subscription (one per receiver)
//!                 │ receiver too slow: told `Gap` (it re-reads from the durable record)
//!                 └ connection lost: resubscribes every topic, tells every receiver `Gap`
//! ```
//!
//! The hub is a doorbell, never the record: whatever a receiver must not miss also lives
//! somewhere durable (the configuration store, a channel's stream, a call's event log). A
//! [`Delivery::Gap`] says "you may have missed messages: read the record again". Sending never
//! waits for a receiver, so a receiver that never reads cannot stall a publisher or the others.
//!
//! Topic names are built only through [`Topic`]'s constructors, which validate every part a
//! client could choose and scope it under its tenant, so no name can reach another tenant's
//! topics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use understudy_crds::keys;

use crate::store::StoreError;

/// Messages buffered per topic before a receiver that does not read is told it lagged.
pub const TOPIC_CAPACITY: usize = 256;

/// Longest name part a client may choose for a topic.
pub const MAX_TOPIC_NAME: usize = 128;

/// How long [`Hub::subscribe`] waits for Redis to confirm a new subscription. Past it, the
/// subscription is returned anyway and its receiver gets a [`Delivery::Gap`] once it is live.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

/// How often the subscriber connection is pinged; a missing answer means it is dead (a
/// half-open connection would otherwise deliver nothing, silently).
const PING_EVERY: Duration = Duration::from_secs(3);

/// How long the subscriber connection waits for Redis to answer a (un)subscribe; past it the
/// connection counts as dead (while it waits it cannot ping, so it must not wait for ever).
const REPLY_WAIT: Duration = Duration::from_secs(5);

/// What a receiver gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// One published payload, in publish order per topic.
    Message(Bytes),
    /// Messages may have been missed (this receiver lagged, or the connection was lost and is
    /// back): re-read the durable record.
    Gap,
}

/// A validated pub/sub topic name. Its text is the Redis channel name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Topic(String);

/// Why a topic name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The tenant id is not a valid tenant id.
    #[error("invalid tenant id in topic: {0:?}")]
    Tenant(String),
    /// The kind is not `[a-z_]{1,32}`.
    #[error("invalid topic kind: {0:?}")]
    Kind(String),
    /// The name is empty, longer than [`MAX_TOPIC_NAME`] or has characters outside
    /// `[A-Za-z0-9_.-]`.
    #[error("invalid topic name {0:?}: 1 to 128 characters of [A-Za-z0-9_.-]")]
    Name(String),
}

fn valid_kind(kind: &str) -> bool {
    (1..=32).contains(&kind.len()) && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_TOPIC_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Topic {
    /// Configuration change notices (every process listens).
    pub fn config() -> Topic {
        Topic(keys::CONFIG_CHANNEL.to_string())
    }

    /// A topic of one tenant: `kind` says what for (`channel`, `session`, `call`, …), `name`
    /// which one. Neither part may hold `:`, so one tenant's names never reach another's.
    pub fn tenant(tenant: &str, kind: &str, name: &str) -> Result<Topic, TopicError> {
        if !understudy_crds::model::valid_tenant_id(tenant) {
            return Err(TopicError::Tenant(tenant.to_string()));
        }
        if !valid_kind(kind) {
            return Err(TopicError::Kind(kind.to_string()));
        }
        if !valid_name(name) {
            return Err(TopicError::Name(name.to_string()));
        }
        Ok(Topic(format!(
            "{}t:{tenant}:{kind}:{name}",
            keys::HUB_PREFIX
        )))
    }

    /// A topic that belongs to no tenant (e.g. a channel created without one, the audit tail).
    pub fn global(kind: &str, name: &str) -> Result<Topic, TopicError> {
        if !valid_kind(kind) {
            return Err(TopicError::Kind(kind.to_string()));
        }
        if !valid_name(name) {
            return Err(TopicError::Name(name.to_string()));
        }
        Ok(Topic(format!("{}g:{kind}:{name}", keys::HUB_PREFIX)))
    }

    /// The channel name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One topic's local fan-out. Shared (`Arc`) so that whoever confirms a subscription marks
/// the very entry it subscribed, never a later one of the same name.
struct Entry {
    tx: broadcast::Sender<Delivery>,
    /// `true` once Redis confirmed the subscription (always, on the memory backend). Later
    /// subscribers of a topic still being confirmed wait for it too.
    live: watch::Sender<bool>,
    /// A receiver of this topic was returned before the topic was live: once it is, the
    /// topic's receivers are told `Gap`.
    owed_gap: AtomicBool,
}

impl Entry {
    /// Tells the topic's receivers `Gap` if one of them is owed it (once: whoever takes the
    /// debt pays it).
    fn pay_owed_gap(&self) {
        if self.owed_gap.swap(false, Ordering::AcqRel) {
            let _ = self.tx.send(Delivery::Gap);
        }
    }
}

type Topics = HashMap<String, Arc<Entry>>;

enum Command {
    Subscribe(String, oneshot::Sender<()>),
    Unsubscribe(String),
}

struct Redis {
    publisher: redis::aio::ConnectionManager,
    commands: mpsc::UnboundedSender<Command>,
    /// Whether the subscriber connection is up (for `/readyz` and metrics).
    connected: AtomicBool,
}

struct Inner {
    topics: Mutex<Topics>,
    capacity: usize,
    redis: Option<Redis>,
    /// Reconnections of the subscriber connection (each told every receiver `Gap`).
    reconnects: AtomicU64,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Topics> {
        // A poisoned lock only means a thread panicked while holding plain data.
        self.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn deliver(&self, topic: &str, delivery: Delivery) {
        if let Some(entry) = self.lock().get(topic) {
            // No receiver left is fine: the last one's drop removes the topic.
            let _ = entry.tx.send(delivery);
        }
    }

    fn release(&self, topic: &str) {
        let mut topics = self.lock();
        if topics
            .get(topic)
            .is_some_and(|e| e.tx.receiver_count() == 0)
        {
            topics.remove(topic);
            if let Some(r) = &self.redis {
                let _ = r.commands.send(Command::Unsubscribe(topic.to_string()));
            }
        }
    }
}

/// The hub. Cheap to clone; all clones share one set of topics (and one connection).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// One receiver of one topic. Dropping the last receiver of a topic drops the topic (and its
/// Redis subscription).
pub struct Subscription {
    topic: String,
    rx: Option<broadcast::Receiver<Delivery>>,
    hub: Weak<Inner>,
}

impl Subscription {
    /// The next delivery; `None` only when the hub is gone. A receiver that fell behind gets
    /// one [`Delivery::Gap`] and then the newest messages.
    pub async fn recv(&mut self) -> Option<Delivery> {
        let rx = self.rx.as_mut()?;
        match rx.recv().await {
            Ok(d) => Some(d),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(Delivery::Gap),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// A delivery if one is waiting, without waiting.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        let rx = self.rx.as_mut()?;
        match rx.try_recv() {
            Ok(d) => Some(d),
            Err(broadcast::error::TryRecvError::Lagged(_)) => Some(Delivery::Gap),
            Err(_) => None,
        }
    }

    /// The topic's channel name.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.rx.take());
        if let Some(hub) = self.hub.upgrade() {
            hub.release(&self.topic);
        }
    }
}

impl Hub {
    fn with(redis: Option<Redis>, capacity: usize) -> Hub {
        Hub {
            inner: Arc::new(Inner {
                topics: Mutex::new(HashMap::new()),
                capacity,
                redis,
                reconnects: AtomicU64::new(0),
            }),
        }
    }

    /// An in-process hub (embedded mode, tests).
    pub fn memory() -> Hub {
        Self::with(None, TOPIC_CAPACITY)
    }

    /// An in-process hub with `capacity` messages buffered per topic (tests of lag).
    pub fn memory_with_capacity(capacity: usize) -> Hub {
        Self::with(None, capacity.max(1))
    }

    /// A hub over Redis: `publisher` sends, one dedicated connection from `client` receives
    /// (opened, and reopened after any loss, by a background task that lives as long as the
    /// hub).
    pub fn redis(client: redis::Client, publisher: redis::aio::ConnectionManager) -> Hub {
        Self::redis_with_capacity(client, publisher, TOPIC_CAPACITY)
    }

    /// [`Hub::redis`] with `capacity` messages buffered per topic.
    pub fn redis_with_capacity(
        client: redis::Client,
        publisher: redis::aio::ConnectionManager,
        capacity: usize,
    ) -> Hub {
        let (commands, rx) = mpsc::unbounded_channel();
        let hub = Self::with(
            Some(Redis {
                publisher,
                commands,
                connected: AtomicBool::new(false),
            }),
            capacity.max(1),
        );
        tokio::spawn(run_subscriber(client, Arc::downgrade(&hub.inner), rx));
        hub
    }

    /// `memory` or `redis`.
    pub fn backend(&self) -> &'static str {
        if self.inner.redis.is_some() {
            "redis"
        } else {
            "memory"
        }
    }

    /// Whether the subscriber connection is up (always on the memory backend).
    pub fn connected(&self) -> bool {
        self.inner
            .redis
            .as_ref()
            .is_none_or(|r| r.connected.load(Ordering::Acquire))
    }

    /// How many times the subscriber connection was re-established.
    pub fn reconnects(&self) -> u64 {
        self.inner.reconnects.load(Ordering::Relaxed)
    }

    /// Topics with at least one receiver in this process.
    pub fn topics(&self) -> usize {
        self.inner.lock().len()
    }

    /// Receives what is published on `topic` from now on. On Redis, returns once the
    /// subscription is confirmed (so a publish after this returns is delivered); if Redis is
    /// unreachable it returns anyway, and the receiver gets [`Delivery::Gap`] once the
    /// subscription is live.
    pub async fn subscribe(&self, topic: &Topic) -> Subscription {
        self.subscribe_with_capacity(topic, self.inner.capacity)
            .await
    }

    /// [`Hub::subscribe`], buffering `capacity` messages for the topic if this subscription
    /// creates it (a topic with one reader that re-reads its record on a gap, such as an MCP
    /// session's, needs few: each buffered slot costs memory per topic).
    pub async fn subscribe_with_capacity(&self, topic: &Topic, capacity: usize) -> Subscription {
        let (rx, entry) = {
            let mut topics = self.inner.lock();
            match topics.get(topic.as_str()) {
                Some(entry) => (entry.tx.subscribe(), entry.clone()),
                None => {
                    let (tx, rx) = broadcast::channel(capacity.max(1));
                    let entry = Arc::new(Entry {
                        tx,
                        live: watch::Sender::new(self.inner.redis.is_none()),
                        owed_gap: AtomicBool::new(false),
                    });
                    topics.insert(topic.0.clone(), entry.clone());
                    if let Some(r) = &self.inner.redis {
                        let (ack, acked) = oneshot::channel();
                        let _ = r.commands.send(Command::Subscribe(topic.0.clone(), ack));
                        let confirmed = entry.clone();
                        // Marks the topic live once Redis confirmed it, whoever waits, and
                        // tells its receivers `Gap` if one was returned before.
                        tokio::spawn(async move {
                            if acked.await.is_ok() {
                                confirmed.live.send_replace(true);
                                confirmed.pay_owed_gap();
                            }
                        });
                    }
                    (rx, entry)
                }
            }
        };
        let mut live = entry.live.subscribe();
        let live = tokio::time::timeout(SUBSCRIBE_WAIT, live.wait_for(|l| *l)).await;
        if !matches!(live, Ok(Ok(_))) {
            entry.owed_gap.store(true, Ordering::Release);
            // Confirmed between the wait giving up and the debt being written down: whoever
            // confirmed it may have looked before, so settle it here (`swap`: paid once).
            if *entry.live.borrow() {
                entry.pay_owed_gap();
            }
        }
        Subscription {
            topic: topic.0.clone(),
            rx: Some(rx),
            hub: Arc::downgrade(&self.inner),
        }
    }

    /// Whether `topic` has a receiver in this process (a publisher of something costly to render
    /// may skip it when, in embedded mode, nobody listens).
    pub fn has_local_receivers(&self, topic: &Topic) -> bool {
        self.inner.lock().contains_key(topic.as_str())
    }

    /// Publishes to every receiver of `topic` in every process.
    pub async fn publish(
        &self,
        topic: &Topic,
        payload: impl Into<Bytes>,
    ) -> Result<(), StoreError> {
        self.publish_raw(topic.as_str(), payload.into()).await
    }

    async fn publish_raw(&self, topic: &str, payload: Bytes) -> Result<(), StoreError> {
        match &self.inner.redis {
            None => {
                self.inner.deliver(topic, Delivery::Message(payload));
                Ok(())
            }
            Some(r) => {
                let mut conn = r.publisher.clone();
                redis::cmd("PUBLISH")
                    .arg(topic)
                    .arg(payload.as_ref())
                    .query_async::<i64>(&mut conn)
                    .await
                    .map(|_| ())
                    .map_err(|e| StoreError::Unavailable(e.to_string()))
            }
        }
    }

    /// Delivers to this process's receivers only, synchronously (the memory stores publish their
    /// notices this way, under their own lock, so notices leave in version order).
    pub fn publish_local(&self, topic: &Topic, payload: impl Into<Bytes>) {
        self.inner
            .deliver(topic.as_str(), Delivery::Message(payload.into()));
    }
}

/// Owns the subscriber connection: (re)connects, (re)subscribes every topic, forwards messages to
/// the local map, pings, and on any loss tells every receiver `Gap`. Ends when the hub is gone.
async fn run_subscriber(
    client: redis::Client,
    hub: Weak<Inner>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        let Some(inner) = hub.upgrade() else { return };
        let connected =
            tokio::time::timeout(Duration::from_secs(2), client.get_async_pubsub()).await;
        let pubsub = match connected {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "hub: cannot connect; retrying");
                drop(inner);
                if wait_or_closed(&mut commands, backoff, &hub).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(_) => {
                tracing::debug!("hub: connecting timed out; retrying");
                drop(inner);
                if wait_or_closed(&mut commands, backoff, &hub).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        // Everything subscribed while we were away, in batches. Only these entries are marked
        // live below: a topic added meanwhile has its own subscribe command queued.
        let entries: Vec<(String, Arc<Entry>)> = inner
            .lock()
            .iter()
            .map(|(name, e)| (name.clone(), e.clone()))
            .collect();
        let mut ok = true;
        for chunk in entries.chunks(1000) {
            let names: Vec<&str> = chunk.iter().map(|(name, _)| name.as_str()).collect();
            if !matches!(
                tokio::time::timeout(REPLY_WAIT, sink.subscribe(&names)).await,
                Ok(Ok(()))
            ) {
                ok = false;
                break;
            }
        }
        if !ok {
            drop(inner);
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(100);
        if let Some(r) = &inner.redis {
            r.connected.store(true, Ordering::Release);
        }
        if !first {
            inner.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                topics = entries.len(),
                "hub: reconnected; receivers told to re-read"
            );
        }
        // After a reconnect every receiver may have missed messages; on the first connection,
        // only receivers whose subscription returned before it was live. Live first, then the
        // gap: a subscription giving up meanwhile sees it live and settles its own debt.
        for (_, e) in &entries {
            e.live.send_replace(true);
            if first {
                e.pay_owed_gap();
            } else {
                e.owed_gap.store(false, Ordering::Release);
                let _ = e.tx.send(Delivery::Gap);
            }
        }
        first = false;
        drop(inner);
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        let lost = loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => {
                        let Some(inner) = hub.upgrade() else { return };
                        let payload = Bytes::copy_from_slice(msg.get_payload_bytes());
                        inner.deliver(msg.get_channel_name(), Delivery::Message(payload));
                    }
                    None => break "connection closed",
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Subscribe(name, ack)) => {
                        match tokio::time::timeout(REPLY_WAIT, sink.subscribe(&name)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => break "subscribe failed",
                            Err(_) => break "subscribe unanswered",
                        }
                        let _ = ack.send(());
                    }
                    Some(Command::Unsubscribe(name)) => {
                        // Subscribed again meanwhile? Then keep it.
                        let wanted = hub.upgrade().is_some_and(|i| i.lock().contains_key(&name));
                        if !wanted {
                            match tokio::time::timeout(REPLY_WAIT, sink.unsubscribe(&name)).await {
                                Ok(Ok(())) => {}
                                Ok(Err(_)) => break "unsubscribe failed",
                                Err(_) => break "unsubscribe unanswered",
                            }
                        }
                    }
                    None => return,
                },
                _ = ping.tick() => {
                    // Any answer will do: with subscriptions, Redis answers `["pong", ""]` (an
                    // array, which a `String` cannot be read from), without, `PONG`.
                    let pong = tokio::time::timeout(Duration::from_secs(2), sink.ping::<redis::Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        break "ping unanswered";
                    }
                }
            }
        };
        let Some(inner) = hub.upgrade() else { return };
        tracing::warn!(
            reason = lost,
            "hub: subscriber connection lost; reconnecting"
        );
        if let Some(r) = &inner.redis {
            r.connected.store(false, Ordering::Release);
        }
        for e in inner.lock().values() {
            e.live.send_replace(false);
        }
        drop(inner);
        tokio::time::sleep(backoff).await;
    }
}

/// Sleeps `d`, answering subscribe commands meanwhile (they are confirmed on reconnect, when the
/// whole map is subscribed). `true` when the hub is gone.
async fn wait_or_closed(
    commands: &mut mpsc::UnboundedReceiver<Command>,
    d: Duration,
    hub: &Weak<Inner>,
) -> bool {
    let deadline = tokio::time::Instant::now() + d;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return hub.strong_count() == 0,
            cmd = commands.recv() => match cmd {
                // The topic is in the map: the reconnect subscribes it and confirms it live.
                Some(_) => continue,
                None => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_scoped_and_bounded() {
        let t = Topic::tenant("shop", "channel", "orders").unwrap();
        assert_eq!(t.as_str(), "us:hub:t:shop:channel:orders");
        assert!(Topic::tenant("shop", "channel", "a:b").is_err());
        assert!(Topic::tenant("sh:op", "channel", "x").is_err());
        assert!(Topic::tenant("shop", "Channel", "x").is_err());
        assert!(Topic::tenant("shop", "channel", &"x".repeat(129)).is_err());
        assert!(Topic::tenant("shop", "channel", "").is_err());
        assert!(Topic::global("audit", "tail").is_ok());
        // No tenant's topic can spell another tenant's: the separator is refused in every part.
        let a = Topic::tenant("a", "channel", "b.c").unwrap();
        let b = Topic::tenant("a.b", "channel", "c").unwrap();
        assert_ne!(a, b);
    }
}
