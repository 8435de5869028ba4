//! `scenario-write-bench`: what a single-scenario write through the public API costs as a tenant
//! grows, in embedded and shared mode, beside a baseline measured in the same run.
//!
//! ```text
//! cargo build --release -p understudy-gateway
//! cargo run --release -p understudy-bench --bin scenario-write-bench -- 10000
//! ```
//!
//! For each mode, a release gateway process (with `redis-server` for shared mode) and, through
//! `POST /public/tenants/{id}/scenarios`, N scenarios added one at a time to one tenant, each a
//! keyword and an answer. Printed: the mean time per write over the 100 writes ending at 1,000,
//! 5,000 and N, and the total. Baseline: N writes of a tiny tenant document each
//! (`PUT …/state` on a tenant without scenarios), the same read-modify-write of one document at
//! a constant size.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use understudy_e2e::{Gateway, RedisServer};

const ADMIN: &str = "scenario-write-bench-admin-token";

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> anyhow::Result<()> {
        let r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        anyhow::ensure!(status.is_success(), "{path}: {status} {}", r.text().await?);
        Ok(())
    }
}

/// Seconds per write over the window of `width` writes ending at each checkpoint, and the total.
struct Run {
    windows: Vec<(usize, f64)>,
    total: Duration,
}

async fn scenarios(api: &Api, n: usize) -> anyhow::Result<Run> {
    api.send(
        reqwest::Method::POST,
        "/public/tenants",
        json!({"tenant_id": "grows", "default_response": "none matched"}),
    )
    .await?;
    let checkpoints: Vec<usize> = [1_000, 5_000, n].into_iter().filter(|c| *c <= n).collect();
    let width = 100.min(n);
    let mut windows = Vec::new();
    let start = Instant::now();
    let mut window_start = start;
    for i in 1..=n {
        if checkpoints.iter().any(|c| i == c - width + 1) {
            window_start = Instant::now();
        }
        api.send(
            reqwest::Method::POST,
            "/public/tenants/grows/scenarios",
            json!({"keywords": [format!("kw{i:06}x")], "response": format!("answer {i}")}),
        )
        .await?;
        if checkpoints.contains(&i) && !windows.iter().any(|(c, _)| *c == i) {
            windows.push((i, window_start.elapsed().as_secs_f64() / width as f64));
        }
    }
    Ok(Run {
        windows,
        total: start.elapsed(),
    })
}

async fn baseline(api: &Api, n: usize) -> anyhow::Result<Duration> {
    api.send(
        reqwest::Method::POST,
        "/public/tenants",
        json!({"tenant_id": "tiny"}),
    )
    .await?;
    let start = Instant::now();
    for i in 0..n {
        api.send(
            reqwest::Method::PUT,
            "/public/tenants/tiny/state",
            json!({"state": {"i": i}}),
        )
        .await?;
    }
    Ok(start.elapsed())
}

async fn mode(name: &str, args: &[&str], n: usize) -> anyhow::Result<()> {
    let mut all = vec!["--admin-token", ADMIN];
    all.extend_from_slice(args);
    let gw = Gateway::start(&all).await?;
    let api = Api {
        client: reqwest::Client::new(),
        base: gw.base.clone(),
    };
    let base = baseline(&api, n).await?;
    println!(
        "{name:9} baseline: {n} writes of a tiny document: {:.2} s total, {:.3} ms per write",
        base.as_secs_f64(),
        base.as_secs_f64() * 1000.0 / n as f64
    );
    let run = scenarios(&api, n).await?;
    for (at, secs) in &run.windows {
        println!(
            "{name:9} scenarios: write at {at:>6}: {:.3} ms per write (mean of the 100 ending there)",
            secs * 1000.0
        );
    }
    println!(
        "{name:9} scenarios: {n} writes: {:.2} s total, {:.3} ms per write on average",
        run.total.as_secs_f64(),
        run.total.as_secs_f64() * 1000.0 / n as f64
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    anyhow::ensure!(n > 0, "N must be at least 1");
    mode("embedded", &[], n).await?;
    let redis = RedisServer::start()?;
    let url = redis.url();
    mode("shared", &["--redis-url", &url], n).await?;
    Ok(())
}
