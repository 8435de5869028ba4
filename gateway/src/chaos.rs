//! Chaos decisions (SPEC §5): given a tenant's profile and a surface, whether this request is
//! rate-limited, fails, waits or gets a broken stream.
//!
//! Counters (rate-limit windows, `failFirst`, `every`) live in the store so that they hold across
//! processes in shared mode; when the store is unreachable they fall back to per-process counting.

use std::sync::Arc;
use std::time::Duration;

use understudy_core::memory::MemoryStore;
use understudy_core::{Counter, RuntimeStore};
use understudy_crds::{ChaosKind, ChaosProfileSpec, Surface};

use crate::metrics::Metrics;
use crate::snapshot::TenantRuntime;

/// A fault to inject into this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 with Retry-After.
    RateLimited {
        /// Seconds until the window ends.
        retry_after: u64,
    },
    /// An error status (500, 502, 503, 529).
    ServerError(u16),
    /// The stream stops after this many events with no terminal event.
    StreamCut(u32),
    /// After this many events one event carries invalid JSON.
    Malformed(u32),
}

/// The rate-limit state reported in the providers' headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    /// Requests allowed per window.
    pub limit: u64,
    /// Requests left in this window.
    pub remaining: u64,
    /// Seconds until the window resets.
    pub reset_secs: u64,
    /// Unix seconds when the window resets.
    pub reset_at: u64,
}

/// What chaos does to one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// The fault, if one is injected.
    pub fault: Option<Fault>,
    /// Delay before the first byte (streams: before the first event).
    pub latency: Option<Duration>,
    /// Present while a rate_limit profile is in force.
    pub rate: Option<RateInfo>,
}

impl Outcome {
    /// The profile name of what was injected, for metrics and logs.
    pub fn injected(&self) -> Option<&'static str> {
        match (self.fault, self.latency) {
            (Some(Fault::RateLimited { .. }), _) => Some("rate_limit"),
            (Some(Fault::ServerError(_)), _) => Some("server_error"),
            (Some(Fault::StreamCut(_)), _) => Some("stream_cut"),
            (Some(Fault::Malformed(_)), _) => Some("malformed_stream"),
            (None, Some(_)) => Some("latency"),
            (None, None) => None,
        }
    }
}

/// A body that fails before its first byte: the connection closes without a response
/// (`stream_cut` on a non-streamed answer, for every surface).
pub fn aborted_body() -> axum::body::Body {
    axum::body::Body::from_stream(futures::stream::once(async {
        Err::<bytes::Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "connection closed by chaos profile",
        ))
    }))
}

/// A response whose body is [`aborted_body`].
pub fn aborted() -> axum::response::Response {
    axum::response::Response::new(aborted_body())
}

/// How long counting stays per-process after the shared store failed once.
const LOCAL_FALLBACK_MS: u64 = 5_000;

/// Evaluates profiles against shared counters.
pub struct Chaos {
    store: Arc<dyn RuntimeStore>,
    /// Per-process counters used while the shared store is unreachable.
    local: MemoryStore,
    /// Unix ms until which counting stays local after a store failure (a breaker: without it
    /// every request during an outage would wait for the store's timeouts).
    local_until_ms: std::sync::atomic::AtomicU64,
    metrics: Arc<Metrics>,
    audit: Arc<crate::audit::Auditor>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Chaos {
    /// A chaos evaluator over `store`.
    pub fn new(
        store: Arc<dyn RuntimeStore>,
        metrics: Arc<Metrics>,
        audit: Arc<crate::audit::Auditor>,
    ) -> Self {
        Chaos {
            store,
            local: MemoryStore::standalone(),
            local_until_ms: std::sync::atomic::AtomicU64::new(0),
            metrics,
            audit,
        }
    }

    /// Counts one request on `counter` (in the window starting at `window`, kept `ttl` seconds,
    /// when given).
    async fn count(&self, tenant: &str, counter: Counter, window: Option<(u64, u64)>) -> u64 {
        use std::sync::atomic::Ordering;
        let (start, ttl) = window.unwrap_or((0, u64::MAX / 4));
        let now = now_secs() * 1000;
        if now < self.local_until_ms.load(Ordering::Relaxed) {
            return self.local.incr_window_now(tenant, counter, start, ttl);
        }
        let shared = match window {
            Some(_) => self.store.incr_window(tenant, counter, start, ttl).await,
            None => self.store.incr(tenant, counter).await,
        };
        match shared {
            Ok(n) => n,
            Err(e) => {
                self.metrics.redis_error("chaos_counter");
                tracing::debug!(error = %e, "chaos counters fall back to this process for 5 s");
                self.local_until_ms
                    .store(now + LOCAL_FALLBACK_MS, Ordering::Relaxed);
                self.local.incr_window_now(tenant, counter, start, ttl)
            }
        }
    }

    /// Forgets this process's fallback counters of a tenant (tenant reset).
    pub fn reset_local(&self, tenant: &str) {
        self.local.forget_tenant(tenant);
    }

    /// Decides what happens to one request of `tenant` on `surface`.
    pub async fn evaluate(&self, tenant: &TenantRuntime, surface: Surface) -> Outcome {
        let Some(spec) = tenant.config.chaos.as_ref() else {
            return Outcome::default();
        };
        if spec.profile == ChaosKind::None || !spec.surfaces.contains(&surface) {
            return Outcome::default();
        }
        let outcome = self.evaluate_spec(tenant.id(), spec).await;
        if let Some(kind) = outcome.injected() {
            self.metrics.chaos_injected(surface, kind, tenant.id());
            self.audit_injection(tenant, surface, kind, &outcome);
        }
        outcome
    }

    /// Records an injection (SPEC §5, §9.1): as an event of its own (`chaos.<kind>`), and on
    /// the request's own event when one is being captured.
    fn audit_injection(
        &self,
        tenant: &TenantRuntime,
        surface: Surface,
        kind: &'static str,
        outcome: &Outcome,
    ) {
        crate::audit::note(|n| n.chaos = Some(kind));
        if !self.audit.enabled() {
            return;
        }
        let mut r = crate::audit::Record::new(
            crate::metrics::surface_label(surface),
            format!("chaos.{kind}"),
            crate::audit::Who::anonymous(),
            std::time::Instant::now(),
        );
        r.tenant = Some(tenant.id().to_string());
        r.note.chaos = Some(kind);
        let (status, error) = match outcome.fault {
            Some(Fault::RateLimited { retry_after }) => (
                Some(429),
                format!("rate limited by the chaos profile; retry after {retry_after} s"),
            ),
            Some(Fault::ServerError(s)) => (Some(s), format!("injected server error {s}")),
            Some(Fault::StreamCut(n)) => (None, format!("stream cut after {n} events")),
            Some(Fault::Malformed(n)) => (None, format!("malformed event after {n} events")),
            None => (
                None,
                format!(
                    "latency {} ms",
                    outcome.latency.map_or(0, |l| l.as_millis())
                ),
            ),
        };
        r.status = status;
        // A delay is injected, not a failure.
        r.success = outcome.fault.is_none();
        r.error = Some(error);
        self.audit.record(r);
    }

    async fn evaluate_spec(&self, tenant: &str, spec: &ChaosProfileSpec) -> Outcome {
        let window = spec.window_seconds.max(1);
        let now = now_secs();
        let window_start = now / window * window;
        let window_end = window_start + window;
        if spec.profile == ChaosKind::RateLimit {
            let n = self
                .count(
                    tenant,
                    Counter::RateLimit,
                    Some((window_start, window.saturating_add(1))),
                )
                .await;
            let reset_secs = (window_end - now).max(1);
            let rate = RateInfo {
                limit: spec.limit,
                remaining: spec.limit.saturating_sub(n),
                reset_secs,
                reset_at: window_end,
            };
            let fault = (n > spec.limit).then_some(Fault::RateLimited {
                retry_after: reset_secs,
            });
            return Outcome {
                fault,
                latency: None,
                rate: Some(rate),
            };
        }
        let selected = if spec.fail_first > 0 {
            self.count(
                tenant,
                Counter::FailFirst,
                Some((window_start, window.saturating_add(1))),
            )
            .await
                <= spec.fail_first
        } else if spec.every >= 2 {
            self.count(tenant, Counter::Every, None)
                .await
                .is_multiple_of(spec.every)
        } else {
            spec.probability >= 1.0 || fastrand::f64() < spec.probability
        };
        if !selected {
            return Outcome::default();
        }
        let mut out = Outcome::default();
        match spec.profile {
            ChaosKind::ServerError => out.fault = Some(Fault::ServerError(spec.status_code)),
            ChaosKind::Latency => out.latency = Some(Duration::from_millis(spec.latency_ms)),
            ChaosKind::StreamCut => out.fault = Some(Fault::StreamCut(spec.after_chunks)),
            ChaosKind::MalformedStream => out.fault = Some(Fault::Malformed(spec.after_chunks)),
            ChaosKind::None | ChaosKind::RateLimit => {}
        }
        out
    }
}
