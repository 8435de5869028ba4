//! `hostile-bench`: what the shared-service limits cost and what they hold, each figure beside a
//! baseline measured in the same run.
//!
//! ```text
//! cargo build --release -p understudy-gateway
//! cargo run --release -p understudy-bench --bin hostile-bench -- 3
//! ```
//!
//! 1. Keyword matching (`engine::select`, the automaton) with 10, 1,000 and 100,000 keywords on
//!    a 10 KB and a 1 MB message, against one plain substring search of the same lower-cased
//!    text, and against the per-keyword search matching used before (where it finishes).
//! 2. Memory per open stream of a 1 MiB answer at 16 characters per event (65,536 events) whose
//!    client never reads, in a release gateway process, against the answer's own size.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use understudy_crds::model::{ConfigSource, ScenarioConfig, TenantConfig};
use understudy_crds::{MatchMode, ScenarioSpec};
use understudy_e2e::Gateway;
use understudy_gateway::engine;
use understudy_gateway::snapshot::TenantRuntime;

fn med(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn tenant(keywords: usize) -> TenantRuntime {
    let scenario = ScenarioConfig {
        id: "many".into(),
        spec: ScenarioSpec {
            tenant_ref: "t".into(),
            keywords: (0..keywords).map(|i| format!("kw{i:06}x")).collect(),
            match_mode: MatchMode::Any,
            response: "matched".into(),
            ..Default::default()
        },
    };
    TenantRuntime::new(
        TenantConfig {
            tenant_id: "t".into(),
            visibility: Default::default(),
            owner: None,
            state: serde_json::json!({}),
            settings: serde_json::json!({}),
            default_response: None,
            scenarios: vec![scenario],
            chaos: None,
            source: ConfigSource::Api,
            origin: String::new(),
        },
        1,
    )
}

/// A message of about `bytes` with no keyword in it but the last one at its end.
fn message(bytes: usize) -> String {
    let mut rng = fastrand::Rng::with_seed(7);
    let mut s = String::with_capacity(bytes + 16);
    while s.len() < bytes {
        for _ in 0..rng.usize(2..9) {
            s.push(rng.alphabetic());
        }
        s.push(' ');
    }
    s
}

/// Median seconds of `f` over enough calls to take about `budget`.
fn time(budget: Duration, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    f();
    let once = t.elapsed();
    let n = (budget.as_secs_f64() / once.as_secs_f64().max(1e-9)).clamp(3.0, 200.0) as usize;
    let mut runs = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f();
        runs.push(t.elapsed().as_secs_f64());
    }
    med(runs)
}

async fn stream_memory(streams: usize) -> anyhow::Result<(f64, f64)> {
    let dir = std::env::temp_dir().join(format!("understudy-hostile-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let answer = "b".repeat(1024 * 1024 - 16);
    std::fs::write(
        dir.join("t.yaml"),
        format!(
            "apiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: slow}}\nspec: {{tenantId: slow, settings: {{stream_chunk_chars: 16}}}}\n---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {{name: big}}\nspec: {{tenantRef: slow, keywords: [big], response: \"{answer}\"}}\n"
        ),
    )?;
    let gw = Gateway::start(&["--manifests", &dir.display().to_string()]).await?;
    let addr = gw.base.trim_start_matches("http://").to_string();
    let body = serde_json::json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "big"}]}).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-tenant-id: slow\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    // Baseline: the same number of connections, each with a finished request, idle.
    let idle_req = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = gw.rss_kib();
    let mut idle = Vec::new();
    for _ in 0..streams {
        let mut s = TcpStream::connect(&addr)?;
        s.write_all(idle_req.as_bytes())?;
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_kib = gw.rss_kib().saturating_sub(before) as f64 / streams as f64;
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = gw.rss_kib();
    let mut held = Vec::new();
    for _ in 0..streams {
        let mut s = TcpStream::connect(&addr)?;
        s.write_all(request.as_bytes())?;
        held.push(s);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stream_kib = gw.rss_kib().saturating_sub(before) as f64 / streams as f64;
    drop(held);
    drop(gw);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((stream_kib, idle_kib))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    println!(
        "\nKeyword matching: one scenario with K keywords, none in the message ({rounds} rounds, medians)\n"
    );
    println!(
        "| keywords | message | automaton µs | one substring search µs | × one search | per-keyword search µs (before) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for k in [10usize, 1_000, 100_000] {
        let t = tenant(k);
        for (label, bytes) in [("10 KB", 10_000usize), ("1 MB", 1_000_000)] {
            let text = message(bytes);
            let budget = Duration::from_millis(300);
            let (mut auto, mut one, mut old) = (vec![], vec![], vec![]);
            for _ in 0..rounds {
                auto.push(time(budget, || {
                    std::hint::black_box(engine::select(&t, &text, 1));
                }));
                one.push(time(budget, || {
                    let lower = text.to_lowercase();
                    std::hint::black_box(lower.contains("kw000000x"));
                }));
                // The matching this replaced: lower-case, then one search per keyword. Skipped
                // where it would take minutes.
                if k * bytes <= 1_000_000_000 {
                    old.push(time(budget, || {
                        let lower = text.to_lowercase();
                        let hits = t.config.scenarios[0]
                            .spec
                            .keywords
                            .iter()
                            .filter(|kw| lower.contains(kw.as_str()))
                            .count();
                        std::hint::black_box(hits);
                    }));
                }
            }
            let (auto, one) = (med(auto) * 1e6, med(one) * 1e6);
            let old = if old.is_empty() {
                "(not run)".to_string()
            } else {
                format!("{:.0}", med(old) * 1e6)
            };
            println!(
                "| {k} | {label} | {auto:.0} | {one:.0} | {:.2} | {old} |",
                auto / one
            );
        }
    }

    println!(
        "\nUnread streams: a 1 MiB answer at 16 characters per event (65,536 events), release gateway\n"
    );
    println!(
        "| streams | KiB RSS per unread stream | KiB RSS per idle connection (baseline) | per stream ÷ answer size |"
    );
    println!("|---:|---:|---:|---:|");
    let (mut per, mut base) = (vec![], vec![]);
    for _ in 0..rounds {
        let (s, i) = stream_memory(20).await?;
        per.push(s);
        base.push(i);
    }
    let (per, base) = (med(per), med(base));
    println!("| 20 | {per:.0} | {base:.0} | {:.2} |", per / 1024.0);
    Ok(())
}
