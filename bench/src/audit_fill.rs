//! `audit-fill`: writes N audit events into a Redis (through the gateway's own audit store, in
//! batches of 1,000, as the writer does) for `bench/audit.py`'s query and export figures.
//!
//! ```text
//! audit-fill <redis-url> <events>
//! ```
//!
//! Events spread evenly over the last 24 h: 10 tenants, 20 tools, 50 users (and anonymous),
//! sources `mcp` and `llm`, one in ten failing, each with a small payload (`city`, `n`), so
//! filters of every kind select a realistic share.

use std::time::Instant;

use serde_json::json;
use understudy_core::Stores;
use understudy_core::audit::{AuditEntry, AuditEvent, AuditPayload, new_id, raw, rfc3339_ms};

const CITIES: [&str; 7] = ["Paris", "Oslo", "Lima", "Rome", "Kyiv", "Pune", "Quito"];

fn entry(i: u64, n: u64, now: u64) -> AuditEntry {
    let day = 24 * 3_600_000u64;
    let ms = now - day + i * day / n;
    let user = (i % 51 != 50).then(|| format!("user{}", i % 50));
    AuditEntry {
        event: AuditEvent {
            id: new_id(ms),
            ts: rfc3339_ms(ms),
            tenant: Some(format!("tenant{}", i % 10)),
            tool: format!("tool{}", i % 20),
            auth_type: if user.is_some() {
                "api_key"
            } else {
                "anonymous"
            }
            .into(),
            user,
            session: Some(format!("s{}", i / 50)),
            source: if i.is_multiple_of(4) { "llm" } else { "mcp" }.into(),
            success: !i.is_multiple_of(10),
            duration_ms: (i % 97) as f64 / 10.0,
            transport: Some("streamable".into()),
            scenario: Some(format!("scenario{}", i % 30)),
            chaos: None,
            status: None,
            error: i.is_multiple_of(10).then(|| "upstream said no".to_string()),
        },
        payload: Some(AuditPayload {
            request_params: Some(raw(
                &json!({"city": CITIES[(i % 7) as usize], "n": i % 100}),
            )),
            request_headers: Some(raw(&json!({"User-Agent": ["bench/1"]}))),
            response_result: Some(raw(&json!({"isError": i.is_multiple_of(10)}))),
            ..Default::default()
        }),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: audit-fill <redis-url> <events>"))?;
    let n: u64 = args.next().unwrap_or_else(|| "1000000".into()).parse()?;
    let stores = Stores::redis(&url)?;
    let now = understudy_core::now_ms();
    let started = Instant::now();
    let mut i = 0;
    while i < n {
        let batch: Vec<AuditEntry> = (i..(i + 1_000).min(n)).map(|j| entry(j, n, now)).collect();
        i += batch.len() as u64;
        stores.audit.append_audit(batch).await?;
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "{{\"events\": {n}, \"seconds\": {took:.2}, \"per_second\": {:.0}}}",
        n as f64 / took
    );
    Ok(())
}
