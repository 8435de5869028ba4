//! Prometheus metrics. Labels come from small known sets: routes are matched route templates,
//! tenants are bounded to [`MAX_TENANT_LABELS`] distinct values (the rest become `_other`), and
//! no label ever carries raw user text.

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::Instant;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use understudy_crds::Surface;

/// Distinct tenant label values kept before folding into `_other`.
pub const MAX_TENANT_LABELS: usize = 1000;

/// Every metric the gateway exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    /// Streams end long after their headers: timed to the end of the body.
    stream_duration: HistogramVec,
    chaos: IntCounterVec,
    redis_errors: IntCounterVec,
    open_streams: IntGaugeVec,
    connections_refused: IntCounterVec,
    mcp_messages: IntCounterVec,
    /// The configuration version this process serves.
    pub config_version: IntGauge,
    /// Tenants in this process's snapshot.
    pub tenants: IntGauge,
    /// Stats flushes that failed (their counts are kept for the next flush).
    pub stats_flush_errors: IntGauge,
    /// Channel messages and streams.
    pub channels: ChannelMetrics,
    /// Audit events written and dropped.
    pub audit: AuditMetrics,
    tenant_labels: RwLock<HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn must<T>(r: Result<T, prometheus::Error>) -> T {
    // Only fails for malformed metric definitions, which are constants here.
    r.expect("metric definitions are valid")
}

/// The channel counters (plain counters: the delivery path costs one atomic add).
pub struct ChannelMetrics {
    /// Messages published.
    pub published: IntCounter,
    /// Messages sent to subscribers.
    pub delivered: IntCounter,
    /// Subscribers that re-read after missing doorbells.
    pub lagged: IntCounter,
    /// Streams opened with a replay.
    pub resumed: IntCounter,
}

/// The audit counters.
pub struct AuditMetrics {
    /// Events stored.
    pub written: IntCounter,
    /// Events dropped because the queue was full.
    pub dropped_queue_full: IntCounter,
    /// Events dropped because the store refused or could not be reached.
    pub dropped_store: IntCounter,
}

/// Surface label of a surface.
pub fn surface_label(s: Surface) -> &'static str {
    match s {
        Surface::Llm => "llm",
        Surface::Mcp => "mcp",
        Surface::Channels => "channels",
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = must(IntCounterVec::new(
            Opts::new(
                "understudy_http_requests_total",
                "HTTP requests by surface, route, status and tenant",
            ),
            &["surface", "route", "status", "tenant"],
        ));
        let duration = must(HistogramVec::new(
            HistogramOpts::new(
                "understudy_http_request_duration_seconds",
                "Time to response headers by surface, route and tenant",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["surface", "route", "tenant"],
        ));
        let stream_duration = must(HistogramVec::new(
            HistogramOpts::new(
                "understudy_http_stream_duration_seconds",
                "Time to the end of a streamed (SSE) response body, or to the client going \
                 away, by surface, route and tenant",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            ]),
            &["surface", "route", "tenant"],
        ));
        let chaos = must(IntCounterVec::new(
            Opts::new(
                "understudy_chaos_injections_total",
                "Faults injected by chaos profiles",
            ),
            &["surface", "profile", "tenant"],
        ));
        let redis_errors = must(IntCounterVec::new(
            Opts::new(
                "understudy_redis_errors_total",
                "Failed Redis operations by operation",
            ),
            &["op"],
        ));
        let open_streams = must(IntGaugeVec::new(
            Opts::new("understudy_open_streams", "Open SSE streams by surface"),
            &["surface"],
        ));
        let connections_refused = must(IntCounterVec::new(
            Opts::new(
                "understudy_connections_refused_total",
                "Connections closed at accept: over the connection cap, or accept errors",
            ),
            &["reason"],
        ));
        let mcp_messages = must(IntCounterVec::new(
            Opts::new(
                "understudy_mcp_messages_total",
                "MCP requests and notifications by method (known methods; the rest `other`), \
                 transport (message, sse, streamable, stateless) and protocol revision",
            ),
            &["method", "transport", "revision"],
        ));
        let config_version = must(IntGauge::new(
            "understudy_config_version",
            "Configuration version served",
        ));
        let tenants = must(IntGauge::new(
            "understudy_tenants",
            "Tenants in this process's snapshot",
        ));
        let stats_flush_errors = must(IntGauge::new(
            "understudy_stats_flush_errors",
            "Traffic-counter flushes that failed",
        ));
        let counter = |name: &str, help: &str| must(IntCounter::new(name, help));
        let channels = ChannelMetrics {
            published: counter(
                "understudy_channel_messages_published_total",
                "Channel messages published (stored)",
            ),
            delivered: counter(
                "understudy_channel_messages_delivered_total",
                "Channel messages sent to SSE subscribers",
            ),
            lagged: counter(
                "understudy_channel_lagged_receivers_total",
                "Times a channel subscriber missed doorbells (it lagged, or the hub reconnected) \
                 and re-read its channel's stream",
            ),
            resumed: counter(
                "understudy_channel_resumed_streams_total",
                "Channel SSE streams opened with Last-Event-ID or ?from=oldest (replay)",
            ),
        };
        let written = counter(
            "understudy_audit_events_written_total",
            "Audit events stored",
        );
        let dropped = must(IntCounterVec::new(
            Opts::new(
                "understudy_audit_events_dropped_total",
                "Audit events dropped: the queue was full (queue_full) or the store could not \
                 take them (store)",
            ),
            &["reason"],
        ));
        let audit = AuditMetrics {
            written,
            dropped_queue_full: dropped.with_label_values(&["queue_full"]),
            dropped_store: dropped.with_label_values(&["store"]),
        };
        must(registry.register(Box::new(audit.written.clone())));
        must(registry.register(Box::new(dropped)));
        for c in [
            Box::new(channels.published.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(channels.delivered.clone()),
            Box::new(channels.lagged.clone()),
            Box::new(channels.resumed.clone()),
        ] {
            must(registry.register(c));
        }
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(stream_duration.clone()),
            Box::new(chaos.clone()),
            Box::new(redis_errors.clone()),
            Box::new(open_streams.clone()),
            Box::new(connections_refused.clone()),
            Box::new(mcp_messages.clone()),
            Box::new(config_version.clone()),
            Box::new(tenants.clone()),
            Box::new(stats_flush_errors.clone()),
        ] {
            must(registry.register(c));
        }
        Metrics {
            registry,
            requests,
            duration,
            stream_duration,
            chaos,
            redis_errors,
            open_streams,
            connections_refused,
            mcp_messages,
            config_version,
            tenants,
            stats_flush_errors,
            channels,
            audit,
            tenant_labels: RwLock::new(HashSet::new()),
        }
    }

    /// The label for a tenant id: itself while fewer than 1,000 are known, else `_other`.
    pub fn tenant_label<'a>(&self, tenant: &'a str) -> &'a str {
        {
            let known = self.tenant_labels.read().unwrap_or_else(|e| e.into_inner());
            if known.contains(tenant) {
                return tenant;
            }
            if known.len() >= MAX_TENANT_LABELS {
                return "_other"; // full: no write lock on the request path
            }
        }
        let mut known = self
            .tenant_labels
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if known.len() < MAX_TENANT_LABELS {
            known.insert(tenant.to_string());
            return tenant;
        }
        if known.contains(tenant) {
            tenant
        } else {
            "_other"
        }
    }

    /// Forgets a deleted tenant: its label slot is freed for another tenant and its series
    /// leave the exposition.
    pub fn forget_tenant(&self, tenant: &str) {
        let known = self
            .tenant_labels
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(tenant);
        if !known {
            return;
        }
        remove_tenant_series(&self.requests, tenant);
        remove_tenant_series(&self.duration, tenant);
        remove_tenant_series(&self.stream_duration, tenant);
        remove_tenant_series(&self.chaos, tenant);
    }

    /// Records one finished request.
    pub fn observe(&self, surface: &str, route: &str, status: u16, tenant: &str, started: Instant) {
        let tenant = self.tenant_label(tenant);
        let mut buf = [0u8; 3];
        self.requests
            .with_label_values(&[surface, route, status_str(status, &mut buf), tenant])
            .inc();
        self.duration
            .with_label_values(&[surface, route, tenant])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Records the end of one streamed response body (its last frame, or the client leaving).
    pub fn observe_stream(&self, surface: &str, route: &str, tenant: &str, started: Instant) {
        let tenant = self.tenant_label(tenant);
        self.stream_duration
            .with_label_values(&[surface, route, tenant])
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts one chaos injection.
    pub fn chaos_injected(&self, surface: Surface, profile: &str, tenant: &str) {
        let tenant = self.tenant_label(tenant);
        self.chaos
            .with_label_values(&[surface_label(surface), profile, tenant])
            .inc();
    }

    /// Counts one MCP message (`method` from a fixed set, see `mcp::dispatch::method_label`).
    pub fn mcp_message(&self, method: &str, transport: &str, revision: &str) {
        self.mcp_messages
            .with_label_values(&[method, transport, revision])
            .inc();
    }

    /// Counts one failed Redis operation.
    pub fn redis_error(&self, op: &str) {
        self.redis_errors.with_label_values(&[op]).inc();
    }

    /// Counts a connection closed at accept (`cap`: over the connection cap; `accept_error`).
    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused.with_label_values(&[reason]).inc();
    }

    /// Counts an SSE stream as open until the guard drops.
    pub fn stream_guard(&self, surface: &'static str) -> StreamGuard {
        let g = self.open_streams.with_label_values(&[surface]);
        g.inc();
        StreamGuard(g)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// Removes every series of `vec` whose `tenant` label is `tenant`.
fn remove_tenant_series<T: prometheus::core::MetricVecBuilder>(
    vec: &prometheus::core::MetricVec<T>,
    tenant: &str,
) {
    use prometheus::core::Collector;
    for family in vec.collect() {
        for m in family.get_metric() {
            let labels: Vec<(&str, &str)> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if labels.iter().any(|(n, v)| *n == "tenant" && *v == tenant) {
                let map: std::collections::HashMap<&str, &str> = labels.into_iter().collect();
                let _ = vec.remove(&map);
            }
        }
    }
}

fn status_str(status: u16, buf: &mut [u8; 3]) -> &str {
    if !(100..=999).contains(&status) {
        return "000";
    }
    buf[0] = b'0' + (status / 100) as u8;
    buf[1] = b'0' + (status / 10 % 10) as u8;
    buf[2] = b'0' + (status % 10) as u8;
    std::str::from_utf8(buf).unwrap_or("000")
}

/// Decrements the open-stream gauge when dropped.
pub struct StreamGuard(prometheus::IntGauge);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod label_cap_tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        String::from_utf8(m.render()).unwrap()
    }

    fn series_for(m: &Metrics, tenant: &str) -> bool {
        text(m).contains(&format!("tenant=\"{tenant}\""))
    }

    #[test]
    fn the_tenant_label_holds_1000_values_then_folds_into_other() {
        let m = Metrics::new();
        let t0 = Instant::now();
        for i in 0..MAX_TENANT_LABELS {
            m.observe("llm", "/v1/chat/completions", 200, &format!("t{i}"), t0);
        }
        // The 1,001st tenant, and every later one, is `_other`; known ones keep their label.
        m.observe("llm", "/v1/chat/completions", 200, "late", t0);
        m.observe("llm", "/v1/chat/completions", 200, "later", t0);
        m.observe("llm", "/v1/chat/completions", 200, "t999", t0);
        assert!(series_for(&m, "t999"));
        assert!(!series_for(&m, "late") && !series_for(&m, "later"));
        assert!(text(&m).contains(
            r#"understudy_http_requests_total{route="/v1/chat/completions",status="200",surface="llm",tenant="_other"} 2"#
        ));
        // A deleted tenant frees its slot for the next one.
        m.forget_tenant("t0");
        m.observe("llm", "/v1/chat/completions", 200, "newcomer", t0);
        assert!(series_for(&m, "newcomer") && !series_for(&m, "t0"));
    }
}
