//! Operator benchmark: reconcile 1,000 Scenarios across 50 Tenants into a real Redis through the
//! scripted API server, and rewrite them after FLUSHALL. The baseline, measured in the same run,
//! is the least Redis work possible: writing the same 50 tenant documents straight through the
//! store, one after another.
//!
//! `cargo run --release -p understudy-bench --bin reconcile-bench -- [ROUNDS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use understudy_core::Stores;
use understudy_crds::resources::{Scenario, ScenarioSpec, Tenant, TenantSpec};
use understudy_e2e::RedisServer;
use understudy_operator::metrics::Metrics;
use understudy_operator::plan::{self, Inputs};
use understudy_operator::reconcile::{Reconciler, Settings};
use understudy_operator::testkit::FakeApi;

const TENANTS: usize = 50;
const SCENARIOS: usize = 1000;

fn world(api: &FakeApi) {
    for t in 0..TENANTS {
        let mut tenant = Tenant::new(&format!("tenant-{t}"), TenantSpec::default());
        tenant.metadata.namespace = Some(format!("ns-{}", t % 5));
        tenant.spec.tenant_id = Some(format!("bench_{t}"));
        tenant.spec.state = serde_json::json!({});
        tenant.spec.settings = serde_json::json!({});
        api.create(&tenant);
    }
    for s in 0..SCENARIOS {
        let t = s % TENANTS;
        let mut sc = Scenario::new(
            &format!("scenario-{s}"),
            ScenarioSpec {
                tenant_ref: format!("tenant-{t}"),
                keywords: vec![format!("keyword{s}"), "common".into()],
                response: format!("Answer number {s}, with a sentence of ordinary length."),
                tool_name: (s % 4 == 0).then(|| format!("tool_{s}")),
                tool_input_schema: (s % 4 == 0).then(|| {
                    serde_json::json!({"type": "object", "properties": {"id": {"type": "string"}}})
                }),
                ..Default::default()
            },
        );
        sc.metadata.namespace = Some(format!("ns-{}", t % 5));
        api.create(&sc);
    }
}

fn listed(api: &FakeApi) -> Inputs {
    Inputs {
        tenants: api.list(),
        scenarios: api.list(),
        chaos: api.list(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let resources = (TENANTS + SCENARIOS) as f64;
    let (mut cold, mut noop, mut one, mut rewrite, mut base, mut planned) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut calls = 0usize;
    for _ in 0..rounds {
        let redis = RedisServer::start()?;
        let store = Stores::redis(&redis.url())?;
        let (api, client) = FakeApi::start();
        world(&api);
        let mut rec = Reconciler::new(
            client,
            store.clone(),
            Arc::new(Metrics::new()),
            Settings::default(),
        );

        // Cold: finalizers on 1,050 resources, plan, 50 documents, 1,050 status patches.
        let inputs = listed(&api);
        let t = Instant::now();
        let out = rec.reconcile(&inputs).await;
        cold.push(ms(t.elapsed()));
        anyhow::ensure!(
            !out.retry() && out.apply.written == TENANTS,
            "cold pass: {out:?}"
        );
        calls = api.take_requests().len();

        // Plan alone (pure).
        let inputs = listed(&api);
        let t = Instant::now();
        let p = plan::plan(&inputs);
        planned.push(ms(t.elapsed()));
        anyhow::ensure!(p.desired.len() == TENANTS);

        // Steady state: nothing changed.
        let t = Instant::now();
        let out = rec.reconcile(&inputs).await;
        noop.push(ms(t.elapsed()));
        anyhow::ensure!(out.apply.written == 0 && out.status_patches == 0, "{out:?}");

        // One scenario edited.
        api.update_spec::<Scenario>(
            "ns-0",
            "scenario-0",
            serde_json::json!({"tenantRef": "tenant-0", "keywords": ["x"], "response": "edited"}),
        );
        let inputs = listed(&api);
        let t = Instant::now();
        let out = rec.reconcile(&inputs).await;
        one.push(ms(t.elapsed()));
        anyhow::ensure!(out.apply.written == 1, "{out:?}");

        // Redis emptied: noticed by the store check, everything written back.
        let docs: Vec<_> = store
            .config
            .load_all()
            .await?
            .tenants
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        redis.cli(&["FLUSHALL"])?;
        let t = Instant::now();
        anyhow::ensure!(rec.applier().check_store().await?, "loss noticed");
        let out = rec.reconcile(&inputs).await;
        rewrite.push(ms(t.elapsed()));
        anyhow::ensure!(out.apply.written == TENANTS && out.apply.rewrote, "{out:?}");

        // Baseline: the same documents written straight through the store.
        redis.cli(&["FLUSHALL"])?;
        let t = Instant::now();
        for d in &docs {
            store.config.put_tenant(d).await?;
        }
        base.push(ms(t.elapsed()));
    }
    let (cold, noop, one, rewrite, base, planned) = (
        median(cold),
        median(noop),
        median(one),
        median(rewrite),
        median(base),
        median(planned),
    );
    println!(
        "Operator: {SCENARIOS} Scenarios across {TENANTS} Tenants (5 namespaces), real redis-server, scripted API server; median of {rounds} rounds\n"
    );
    println!("| step | ms | resources/s | × baseline time |");
    println!("|---|---:|---:|---:|");
    println!(
        "| baseline: {TENANTS} documents written straight through the store | {base:.1} | | 1.00 |"
    );
    println!(
        "| cold reconcile ({calls} API calls: finalizers + status; {TENANTS} documents) | {cold:.1} | {:.0} | {:.2} |",
        resources / (cold / 1000.0),
        cold / base
    );
    println!(
        "| rewrite after FLUSHALL (store check + pass) | {rewrite:.1} | {:.0} | {:.2} |",
        resources / (rewrite / 1000.0),
        rewrite / base
    );
    println!(
        "| pass with one Scenario edited | {one:.1} | | {:.2} |",
        one / base
    );
    println!(
        "| pass with nothing changed | {noop:.1} | | {:.2} |",
        noop / base
    );
    println!(
        "| plan alone (pure build of 1,050 resources) | {planned:.1} | | {:.2} |",
        planned / base
    );
    println!(
        "\ntarget ≥ 500 resources/s: {:.0}/s ({}); full rewrite ≤ 5 s: {:.0} ms ({})",
        resources / (cold / 1000.0),
        if resources / (cold / 1000.0) >= 500.0 {
            "met"
        } else {
            "NOT met"
        },
        rewrite,
        if rewrite <= 5000.0 { "met" } else { "NOT met" }
    );
    Ok(())
}
