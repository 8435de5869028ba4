//! Traffic counters for status (`requests`, `unmatched`, `lastRequestTime`, scenario `hits`),
//! aggregated in process and flushed to the store every few seconds — never one store write per
//! request (SPEC §12).
//!
//! Counts are tied to the tenant document that served them: each tenant's entry carries the
//! lowest configuration version served since the last flush, and the store adds it only to the
//! incarnation created at or before that version. A tenant deleted (and perhaps created again
//! under the same id) while counts wait here, for one interval or through a store outage, never
//! gets them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::snapshot::TenantRuntime;
use understudy_core::{StatsBatch, StatsStore};

/// Bound on distinct tenants buffered between flushes (a flood of unknown tenants cannot grow it:
/// only tenants that exist are counted).
const MAX_BUFFERED_TENANTS: usize = 10_000;

/// The in-process aggregator.
#[derive(Default)]
pub struct Stats {
    pending: Mutex<StatsBatch>,
}

use understudy_core::now_ms;

impl Stats {
    /// Counts one data-plane request served from `tenant` (the document version it was served
    /// from included); `matched` is the scenario id that answered an LLM request (`Some(None)`
    /// for an LLM request nothing matched, `None` for other traffic).
    pub fn record(&self, tenant: &TenantRuntime, matched: Option<Option<&str>>) {
        let (id, version) = (tenant.id(), tenant.version);
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.tenants.len() >= MAX_BUFFERED_TENANTS && !p.tenants.contains_key(id) {
            return;
        }
        // Look up before inserting: the request path should not allocate for known keys.
        if !p.tenants.contains_key(id) {
            p.tenants.insert(
                id.to_string(),
                understudy_core::TenantStats {
                    served_version: version,
                    ..Default::default()
                },
            );
        }
        let Some(t) = p.tenants.get_mut(id) else {
            return;
        };
        // The lowest version served: never credited to a later incarnation (see the module doc).
        if version > 0 && (t.served_version == 0 || version < t.served_version) {
            t.served_version = version;
        }
        t.requests += 1;
        t.last_request_ms = now_ms();
        match matched {
            Some(Some(id)) => match t.hits.get_mut(id) {
                Some(n) => *n += 1,
                None => {
                    t.hits.insert(id.to_string(), 1);
                }
            },
            Some(None) => t.unmatched += 1,
            None => {}
        }
    }

    /// Takes what accumulated since the last call.
    pub fn take(&self) -> StatsBatch {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts a batch back after a failed flush so nothing is lost.
    pub fn restore(&self, batch: StatsBatch) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (tenant, s) in batch.tenants {
            p.tenants.entry(tenant).or_default().merge(&s);
        }
    }

    /// Flushes every `every` until cancelled, then once more.
    pub async fn run_flusher(
        self: Arc<Self>,
        store: Arc<dyn StatsStore>,
        metrics: Arc<Metrics>,
        every: Duration,
        cancel: CancellationToken,
    ) {
        loop {
            let stop = tokio::select! {
                _ = tokio::time::sleep(every) => false,
                _ = cancel.cancelled() => true,
            };
            let batch = self.take();
            if !batch.tenants.is_empty()
                && let Err(e) = store.flush_stats(&batch).await
            {
                metrics.redis_error("stats_flush");
                metrics.stats_flush_errors.inc();
                tracing::debug!(error = %e, "stats flush failed; keeping counts for the next one");
                self.restore(batch);
            }
            if stop {
                return;
            }
        }
    }
}
