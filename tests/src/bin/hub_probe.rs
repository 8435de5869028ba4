//! A process full of hub receivers, for the multi-process hub test (`tests/hub_processes.rs`).
//!
//! ```text
//! hub_probe REDIS_URL TOPICS RECEIVERS_PER_TOPIC
//! ```
//!
//! Builds the stores as the gateway does (`Stores::redis`), subscribes RECEIVERS_PER_TOPIC
//! receivers to each of TOPICS topics (`Topic::global("probe", "t{i}")`; receiver
//! `i * RECEIVERS_PER_TOPIC + j` listens on topic `i`), prints `ready` once all are subscribed
//! and the hub is connected, then one line per delivery: `gap R` or `msg R PAYLOAD`. Ends when
//! its standard input closes.
//!
//! Lines are written by a thread of their own, so a slow reader of the output never stalls the
//! runtime (and with it the hub's subscriber connection and its pings).

use std::io::{BufWriter, Read, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::{mpsc, oneshot};
use understudy_core::{Delivery, Stores, Topic};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, topics, per] = args.as_slice() else {
        bail!("usage: hub_probe REDIS_URL TOPICS RECEIVERS_PER_TOPIC");
    };
    let topics: usize = topics.parse().context("TOPICS")?;
    let per: usize = per.parse().context("RECEIVERS_PER_TOPIC")?;
    let stores = Stores::redis(url)?;
    let hub = stores.hub.clone();

    let mut subs = Vec::with_capacity(topics * per);
    for i in 0..topics {
        let topic = Topic::global("probe", &format!("t{i}"))?;
        for _ in 0..per {
            subs.push(hub.subscribe(&topic).await);
        }
    }
    while !hub.connected() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (lines, mut to_write) = mpsc::unbounded_channel::<String>();
    // Queued before any receiver task runs: `ready` is the first line.
    lines.send("ready".to_string())?;
    for (r, mut sub) in subs.into_iter().enumerate() {
        let lines = lines.clone();
        tokio::spawn(async move {
            while let Some(d) = sub.recv().await {
                let line = match d {
                    Delivery::Gap => format!("gap {r}"),
                    Delivery::Message(m) => format!("msg {r} {}", String::from_utf8_lossy(&m)),
                };
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
    }
    drop(lines);

    std::thread::spawn(move || {
        let mut out = BufWriter::new(std::io::stdout().lock());
        while let Some(line) = to_write.blocking_recv() {
            let mut batch = Some(line);
            while let Some(line) = batch {
                if writeln!(out, "{line}").is_err() {
                    return;
                }
                batch = to_write.try_recv().ok();
            }
            if out.flush().is_err() {
                return;
            }
        }
    });

    let (closed, stdin_closed) = oneshot::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed.send(());
    });
    let _ = stdin_closed.await;
    Ok(())
}
