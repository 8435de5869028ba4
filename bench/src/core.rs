//! `core-bench`: the state layer under the surfaces, each figure beside a baseline measured in
//! the same run.
//!
//! ```text
//! cargo run --release -p understudy-bench --bin core-bench            # needs redis-server
//! ```
//!
//! 1. Seeding tenants one notice at a time (1,000 and 10,000): every write publishes a notice and
//!    the sync task applies it to the snapshot. Baseline: the same writes with nobody listening.
//!    Linear growth means the per-tenant cost at 10,000 is about the cost at 1,000.
//! 2. The pub/sub hub: one publisher to 10,000 receivers on one topic, and to 1,000 topics of 10
//!    receivers each, on the memory and the Redis hub: deliveries per second and memory per
//!    receiver. Baseline: a bare `tokio::sync::broadcast` channel per topic with the same
//!    receivers and tasks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use understudy_core::{Delivery, Hub, Stores, Topic};
use understudy_crds::model::{ConfigSource, TenantConfig};
use understudy_e2e::RedisServer;
use understudy_gateway::metrics::Metrics;
use understudy_gateway::snapshot::SnapshotHandle;
use understudy_gateway::sync::{self, SyncHandle, SyncOptions};

fn rss_kib() -> u64 {
    understudy_e2e::rss_kib(std::process::id())
}

fn tenant(i: usize) -> TenantConfig {
    TenantConfig {
        tenant_id: format!("t{i:05}"),
        visibility: Default::default(),
        owner: None,
        state: serde_json::json!({"i": i}),
        settings: serde_json::json!({}),
        default_response: Some(format!("tenant {i}")),
        scenarios: vec![],
        chaos: None,
        source: ConfigSource::Api,
        origin: String::new(),
    }
}

/// Seeds `n` tenants one write (one notice) at a time; returns (with sync, bare) seconds.
async fn seed(stores: impl Fn() -> Stores, n: usize) -> anyhow::Result<(f64, f64)> {
    // Baseline: the writes alone.
    let bare = stores();
    let t = Instant::now();
    for i in 0..n {
        bare.config.put_tenant(&tenant(i)).await?;
    }
    let bare_s = t.elapsed().as_secs_f64();

    let stores = stores();
    let snapshot = Arc::new(SnapshotHandle::new());
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(sync::run(
        stores.config.clone(),
        stores.hub.clone(),
        snapshot.clone(),
        Arc::new(Metrics::new()),
        Arc::new(SyncHandle::default()),
        SyncOptions {
            resync: Duration::from_secs(3600),
            ..SyncOptions::default()
        },
        cancel.clone(),
    ));
    while !snapshot.is_synced() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let base = snapshot.load().version;
    let t = Instant::now();
    let mut last = base;
    for i in 0..n {
        last = stores.config.put_tenant(&tenant(i)).await?;
    }
    anyhow::ensure!(
        snapshot
            .wait_for_version(last, Duration::from_secs(120))
            .await,
        "the snapshot never caught up"
    );
    let synced_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(snapshot.load().tenants.len() == n);
    cancel.cancel();
    Ok((synced_s, bare_s))
}

/// One publisher, `topics` topics of `per_topic` receivers (each a task counting `messages`
/// deliveries). Returns (deliveries/s, KiB per receiver).
async fn hub_run(
    hub: &Hub,
    topics: usize,
    per_topic: usize,
    messages: usize,
) -> anyhow::Result<(f64, f64)> {
    let names: Vec<Topic> = (0..topics)
        .map(|i| Topic::global("bench", &format!("t{i}")))
        .collect::<Result<_, _>>()?;
    let before = rss_kib();
    let mut subs = Vec::with_capacity(topics * per_topic);
    for topic in &names {
        for _ in 0..per_topic {
            subs.push(hub.subscribe(topic).await);
        }
    }
    let per_receiver = (rss_kib().saturating_sub(before)) as f64 / subs.len() as f64;
    let done = Arc::new(tokio::sync::Semaphore::new(0));
    for mut sub in subs {
        let done = done.clone();
        tokio::spawn(async move {
            let mut got = 0;
            while got < messages {
                match sub.recv().await {
                    Some(Delivery::Message(_)) => got += 1,
                    Some(Delivery::Gap) => panic!("a receiver lagged in the benchmark"),
                    None => break,
                }
            }
            done.add_permits(1);
        });
    }
    tokio::task::yield_now().await;
    let payload = Bytes::from_static(b"{\"id\":\"0191d6e0-0000-7000-8000-000000000000\"}");
    let t = Instant::now();
    for _ in 0..messages {
        // One message per topic in flight at once (pipelined on Redis); rounds in order, so
        // each topic's messages leave in order.
        let sent = futures::future::join_all(
            names
                .iter()
                .map(|topic| hub.publish(topic, payload.clone())),
        )
        .await;
        for r in sent {
            r?;
        }
    }
    let receivers = (topics * per_topic) as u32;
    let _all = tokio::time::timeout(Duration::from_secs(120), done.acquire_many(receivers))
        .await
        .map_err(|_| anyhow::anyhow!("deliveries did not complete"))??;
    let secs = t.elapsed().as_secs_f64();
    Ok(((topics * per_topic * messages) as f64 / secs, per_receiver))
}

/// The baseline: bare broadcast channels, same receivers and tasks.
async fn broadcast_run(topics: usize, per_topic: usize, messages: usize) -> (f64, f64) {
    let before = rss_kib();
    let mut senders = Vec::with_capacity(topics);
    let mut rxs = Vec::with_capacity(topics * per_topic);
    for _ in 0..topics {
        let (tx, _) =
            tokio::sync::broadcast::channel::<Bytes>(understudy_core::hub::TOPIC_CAPACITY);
        for _ in 0..per_topic {
            rxs.push(tx.subscribe());
        }
        senders.push(tx);
    }
    let per_receiver = (rss_kib().saturating_sub(before)) as f64 / rxs.len() as f64;
    let done = Arc::new(tokio::sync::Semaphore::new(0));
    for mut rx in rxs {
        let done = done.clone();
        tokio::spawn(async move {
            let mut got = 0;
            while got < messages {
                match rx.recv().await {
                    Ok(_) => got += 1,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        panic!("lagged")
                    }
                    Err(_) => break,
                }
            }
            done.add_permits(1);
        });
    }
    tokio::task::yield_now().await;
    let payload = Bytes::from_static(b"{\"id\":\"0191d6e0-0000-7000-8000-000000000000\"}");
    let t = Instant::now();
    for m in 0..messages {
        for tx in &senders {
            let _ = tx.send(payload.clone());
        }
        if m % 64 == 63 {
            tokio::task::yield_now().await;
        }
    }
    let _ = done.acquire_many((topics * per_topic) as u32).await;
    let secs = t.elapsed().as_secs_f64();
    ((topics * per_topic * messages) as f64 / secs, per_receiver)
}

/// In a fresh process (so no freed memory of an earlier run is reused): subscribes the
/// receivers and prints the RSS they added, in KiB per receiver.
async fn memory_child(
    kind: &str,
    topics: usize,
    per_topic: usize,
    url: &str,
) -> anyhow::Result<()> {
    let names: Vec<Topic> = (0..topics)
        .map(|i| Topic::global("bench", &format!("t{i}")))
        .collect::<Result<_, _>>()?;
    let hub = match kind {
        "memory" => Some(Hub::memory()),
        "redis" => Some(Stores::redis(url)?.hub),
        _ => None,
    };
    if let Some(h) = &hub {
        while !h.connected() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Warm the runtime and the connection before measuring.
        let warm = h.subscribe(&Topic::global("bench", "warm")?).await;
        drop(warm);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = rss_kib();
    let n = topics * per_topic;
    let kib = match &hub {
        Some(h) => {
            let mut subs = Vec::with_capacity(n);
            for topic in &names {
                for _ in 0..per_topic {
                    subs.push(h.subscribe(topic).await);
                }
            }
            let kib = rss_kib().saturating_sub(before) as f64 / n as f64;
            drop(subs);
            kib
        }
        None => {
            let mut keep = Vec::with_capacity(topics);
            let mut rxs = Vec::with_capacity(n);
            for _ in 0..topics {
                let (tx, _) =
                    tokio::sync::broadcast::channel::<Bytes>(understudy_core::hub::TOPIC_CAPACITY);
                for _ in 0..per_topic {
                    rxs.push(tx.subscribe());
                }
                keep.push(tx);
            }
            rss_kib().saturating_sub(before) as f64 / n as f64
        }
    };
    println!("{kib:.3}");
    Ok(())
}

/// KiB per receiver, measured by a child process.
fn memory_per_receiver(
    kind: &str,
    topics: usize,
    per_topic: usize,
    url: &str,
) -> anyhow::Result<f64> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args([
            "mem",
            kind,
            &topics.to_string(),
            &per_topic.to_string(),
            url,
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn med(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("mem") {
        let num = |i: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(1);
        return memory_child(&args[2], num(3), num(4), args.get(5).map_or("", |s| s)).await;
    }
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let redis = RedisServer::start()?;
    let url = redis.url();

    println!("\nSeeding tenants one notice at a time ({rounds} rounds, medians)\n");
    println!(
        "| store | tenants | seed + sync ms | µs / tenant | bare writes µs / tenant | × bare | µs / tenant ÷ at 1,000 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, is_redis) in [("memory", false), ("redis", true)] {
        let mut at_1000 = 0.0;
        for n in [1_000usize, 10_000] {
            let (mut synced, mut bare) = (vec![], vec![]);
            for _ in 0..rounds {
                if is_redis {
                    redis.cli(&["FLUSHALL"])?;
                }
                let u = url.clone();
                let make = move || {
                    if is_redis {
                        Stores::redis(&u).expect("valid url")
                    } else {
                        Stores::memory()
                    }
                };
                let (s, b) = seed(make, n).await?;
                synced.push(s);
                bare.push(b);
            }
            let (s, b) = (med(synced), med(bare));
            let per = s * 1e6 / n as f64;
            if n == 1_000 {
                at_1000 = per;
            }
            println!(
                "| {name} | {n} | {:.1} | {per:.1} | {:.1} | {:.2} | {:.2} |",
                s * 1e3,
                b * 1e6 / n as f64,
                s / b,
                per / at_1000
            );
        }
    }

    println!(
        "\nThe pub/sub hub: one publisher, 100 messages per topic ({rounds} rounds, medians)\n"
    );
    println!(
        "| fan-out | hub | deliveries/s | × broadcast | KiB / receiver | broadcast KiB / receiver |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for (label, topics, per_topic) in [
        ("1 topic × 10,000 receivers", 1usize, 10_000usize),
        ("1,000 topics × 10 receivers", 1_000, 10),
    ] {
        let mut base = vec![];
        for _ in 0..rounds {
            base.push(broadcast_run(topics, per_topic, 100).await.0);
        }
        let base = med(base);
        let base_mem = memory_per_receiver("broadcast", topics, per_topic, &url)?;
        for (name, is_redis) in [("memory", false), ("redis", true)] {
            let mut rate = vec![];
            for _ in 0..rounds {
                let hub = if is_redis {
                    Stores::redis(&url)?.hub
                } else {
                    Hub::memory()
                };
                while !hub.connected() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                rate.push(hub_run(&hub, topics, per_topic, 100).await?.0);
            }
            let rate = med(rate);
            let mem = memory_per_receiver(name, topics, per_topic, &url)?;
            println!(
                "| {label} | {name} | {rate:.0} | {:.2} | {mem:.3} | {base_mem:.3} |",
                rate / base
            );
        }
    }
    Ok(())
}
