//! The operator's Prometheus metrics (`GET /metrics`).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the operator exports.
pub struct Metrics {
    registry: Registry,
    /// Reconcile passes by result (`ok`, `error`).
    pub reconciles: IntCounterVec,
    /// Reconcile errors by cause (`store`, `kube`).
    pub errors: IntCounterVec,
    /// Duration of a reconcile pass.
    pub duration: Histogram,
    /// Resources by kind and readiness.
    pub resources: IntGaugeVec,
    /// Tenant documents written / deleted.
    pub writes: IntCounterVec,
    /// Full rewrites after the store was emptied or restarted.
    pub rewrites: IntCounter,
    /// Status patches sent.
    pub status_patches: IntCounter,
    /// 1 while this replica holds the leader lease.
    pub leader: IntGauge,
    /// 0 while the leader cannot reach or write Redis (1 otherwise, and on followers).
    pub store_up: IntGauge,
    /// Outages seen by the leader (transitions of `store_up` to 0).
    pub store_outages: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "understudy_operator_reconciles_total",
                "Reconcile passes by result",
            ),
            &["result"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "understudy_operator_reconcile_errors_total",
                "Reconcile errors by cause (store: Redis, kube: the API server)",
            ),
            &["cause"],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "understudy_operator_reconcile_duration_seconds",
                "Duration of a reconcile pass (plan, apply, status)",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        let resources = IntGaugeVec::new(
            Opts::new(
                "understudy_operator_resources",
                "Resources seen, by kind and Ready status",
            ),
            &["kind", "ready"],
        )
        .expect("valid metric");
        let writes = IntCounterVec::new(
            Opts::new(
                "understudy_operator_store_writes_total",
                "Tenant documents written to or deleted from Redis",
            ),
            &["op"],
        )
        .expect("valid metric");
        let rewrites = IntCounter::new(
            "understudy_operator_rewrites_total",
            "Full rewrites after Redis was emptied or restarted",
        )
        .expect("valid metric");
        let status_patches = IntCounter::new(
            "understudy_operator_status_patches_total",
            "Status patches sent to the API server",
        )
        .expect("valid metric");
        let leader = IntGauge::new(
            "understudy_operator_leader",
            "1 while this replica holds the leader lease",
        )
        .expect("valid metric");
        let store_up = IntGauge::new(
            "understudy_operator_store_up",
            "0 while the leader cannot reach or write Redis (1 otherwise, and on followers)",
        )
        .expect("valid metric");
        store_up.set(1);
        let store_outages = IntCounter::new(
            "understudy_operator_store_outages_total",
            "Redis outages seen by the leader",
        )
        .expect("valid metric");
        for m in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(errors.clone()),
            Box::new(duration.clone()),
            Box::new(resources.clone()),
            Box::new(writes.clone()),
            Box::new(rewrites.clone()),
            Box::new(status_patches.clone()),
            Box::new(leader.clone()),
            Box::new(store_up.clone()),
            Box::new(store_outages.clone()),
        ] {
            registry.register(m).expect("metric registered once");
        }
        Metrics {
            registry,
            reconciles,
            errors,
            duration,
            resources,
            writes,
            rewrites,
            status_patches,
            leader,
            store_up,
            store_outages,
        }
    }

    /// Records whether Redis answers and takes writes; a transition to down counts an outage.
    pub fn store_reachable(&self, up: bool) {
        if !up && self.store_up.get() != 0 {
            self.store_outages.inc();
        }
        self.store_up.set(up as i64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
