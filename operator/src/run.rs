//! The operator process: watch caches, leader election, the reconcile loop (on change once a
//! burst settles, on a retry with backoff, when Redis was emptied, on the resync and status
//! periods) and the `/metrics`, `/healthz`, `/readyz` listener.
//!
//! A burst of changes (`kubectl apply -f` of a folder) is one pass: the first change opens a
//! debounce window that every further change extends by [`Options::debounce`], up to
//! [`Options::debounce_max`] after the first; the pass runs when the window closes, so each
//! tenant's document is written once per burst and gateways never serve a half-applied folder.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use understudy_core::Stores;
use understudy_crds::resources::{ChaosProfile, Scenario, Tenant};

use crate::cache::Cache;
use crate::lease::{Elector, LeaseSettings};
use crate::metrics::Metrics;
use crate::plan::Inputs;
use crate::reconcile::{self, Managed, Reconciler, Settings};

/// How the loop runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Namespaces to watch (`[]`: all).
    pub namespaces: Vec<String>,
    /// Leader election (`None`: this replica always leads).
    pub lease: Option<LeaseSettings>,
    /// Full resync period.
    pub resync: Duration,
    /// Traffic-counter period.
    pub status_interval: Duration,
    /// How often Redis's epoch and run id are checked.
    pub epoch_check: Duration,
    /// Quiet period after a change before the pass runs (each further change restarts it).
    pub debounce: Duration,
    /// Longest wait from the first change of a burst to its pass, however long the burst lasts.
    pub debounce_max: Duration,
    /// Reconciler settings.
    pub settings: Settings,
}

/// Default of [`Options::debounce`].
pub const DEBOUNCE: Duration = Duration::from_millis(500);
/// Default of [`Options::debounce_max`].
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(5);

/// Shared with the HTTP listener.
#[derive(Clone)]
pub struct Health {
    /// Every watch cache has listed once.
    pub ready: Arc<AtomicBool>,
    /// The metrics (`understudy_operator_store_up` is part of readiness).
    pub metrics: Arc<Metrics>,
}

impl Health {
    /// Ready: every watch has listed, and (on the leader) Redis answers and takes writes.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err("starting: watch caches not synced");
        }
        if self.metrics.store_up.get() == 0 {
            return Err("Redis unreachable: changes wait until it is back");
        }
        Ok(())
    }
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(h): State<Health>| async move {
                match h.readiness() {
                    Ok(()) => (StatusCode::OK, "ready").into_response(),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(h): State<Health>| async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    h.metrics.render(),
                )
            }),
        )
        .with_state(health)
}

// Boxed: scenario events are much larger than the others, and the queue holds thousands.
enum Msg {
    Tenant(usize, Box<watcher::Event<Tenant>>),
    Scenario(usize, Box<watcher::Event<Scenario>>),
    Chaos(usize, Box<watcher::Event<ChaosProfile>>),
}

fn apis<K: Managed>(client: &Client, namespaces: &[String]) -> Vec<Api<K>> {
    if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|n| Api::namespaced(client.clone(), n))
            .collect()
    }
}

fn spawn_watch<K: Managed>(
    api: Api<K>,
    index: usize,
    tx: mpsc::Sender<Msg>,
    wrap: fn(usize, Box<watcher::Event<K>>) -> Msg,
    cancel: CancellationToken,
) {
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                item = stream.next() => match item {
                    Some(Ok(ev)) => if tx.send(wrap(index, Box::new(ev))).await.is_err() { return },
                    // default_backoff retries; the error is worth a line (RBAC, CRDs not installed).
                    Some(Err(e)) => tracing::warn!(error = %e, kind = K::KIND.as_str(), "watch failed; retrying"),
                    None => return,
                }
            }
        }
    });
}

/// Runs until `cancel`: watches, elects, reconciles.
pub async fn run(
    client: Client,
    stores: Stores,
    opts: Options,
    health: Health,
    cancel: CancellationToken,
) {
    let (tx, mut rx) = mpsc::channel::<Msg>(4096);
    let t_apis = apis::<Tenant>(&client, &opts.namespaces);
    let s_apis = apis::<Scenario>(&client, &opts.namespaces);
    let c_apis = apis::<ChaosProfile>(&client, &opts.namespaces);
    let mut tenants: Cache<Tenant> = Cache::new(t_apis.len());
    let mut scenarios: Cache<Scenario> = Cache::new(s_apis.len());
    let mut chaos: Cache<ChaosProfile> = Cache::new(c_apis.len());
    for (i, api) in t_apis.into_iter().enumerate() {
        spawn_watch(api, i, tx.clone(), Msg::Tenant, cancel.clone());
    }
    for (i, api) in s_apis.into_iter().enumerate() {
        spawn_watch(api, i, tx.clone(), Msg::Scenario, cancel.clone());
    }
    for (i, api) in c_apis.into_iter().enumerate() {
        spawn_watch(api, i, tx.clone(), Msg::Chaos, cancel.clone());
    }
    drop(tx);

    let (leader_tx, mut leader_rx) = watch::channel(opts.lease.is_none());
    // The elector is stopped (and releases the lease) only once this loop has stopped, so a
    // successor never reconciles while a pass here is still running.
    let stop_electing = CancellationToken::new();
    let elector = match opts.lease.clone() {
        Some(lease) => Some(tokio::spawn(
            Elector::new(client.clone(), lease).run(leader_tx, stop_electing.clone()),
        )),
        None => {
            drop(leader_tx);
            None
        }
    };

    let mut reconciler = Reconciler::new(
        client,
        stores,
        health.metrics.clone(),
        opts.settings.clone(),
    );
    let mut epoch_tick = tokio::time::interval(opts.epoch_check);
    let mut status_tick = tokio::time::interval(opts.status_interval);
    let mut resync_tick = tokio::time::interval(opts.resync);
    for t in [&mut epoch_tick, &mut status_tick, &mut resync_tick] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut dirty = false;
    // The open debounce window: when it closes, and the latest it may close (first change + max).
    let mut settle_at: Option<tokio::time::Instant> = None;
    let mut burst_deadline: Option<tokio::time::Instant> = None;
    // Redis emptied: rewrite without waiting for a burst to settle.
    let mut urgent = false;
    // What the leader last saw of Redis: the epoch check answered, the last pass could write.
    let (mut store_answers, mut store_writes) = (true, true);
    let mut attempt: u32 = 0;
    let mut retry_at: Option<tokio::time::Instant> = None;
    // Whether the last pass failed on Redis (then only a retry, or Redis coming back, helps);
    // after API-server errors alone, a new change is reconciled at once.
    let mut store_failing = false;
    let mut changed = false;
    let mut leading = *leader_rx.borrow();
    let mut electing = elector.is_some();
    health.metrics.leader.set(leading as i64);
    loop {
        let retry = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let settled = async {
            match settle_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                let mut trigger = absorb(msg, &mut tenants, &mut scenarios, &mut chaos);
                // Take whatever else is already queued.
                while let Ok(msg) = rx.try_recv() {
                    trigger |= absorb(msg, &mut tenants, &mut scenarios, &mut chaos);
                }
                if trigger {
                    // Open or extend the debounce window: a burst is one pass.
                    let now = tokio::time::Instant::now();
                    let deadline = *burst_deadline.get_or_insert(now + opts.debounce_max);
                    settle_at = Some((now + opts.debounce).min(deadline));
                    changed = true;
                    dirty = true;
                }
            }
            _ = settled => {
                settle_at = None;
                burst_deadline = None;
            }
            res = leader_rx.changed(), if electing => {
                electing = res.is_ok();
                // An elector that stopped cannot renew: stop leading.
                leading = electing && *leader_rx.borrow();
                health.metrics.leader.set(leading as i64);
                tracing::info!(leading, "leadership changed");
                if leading {
                    // Another replica may have written meanwhile: compare with Redis afresh.
                    reconciler.applier().resync();
                    dirty = true;
                } else {
                    // Only the leader talks to Redis; a follower has nothing to report.
                    (store_answers, store_writes) = (true, true);
                    health.metrics.store_reachable(true);
                }
            }
            _ = epoch_tick.tick() => {
                if leading {
                    let check = reconciler.applier().check_store().await;
                    let back = check.is_ok() && !store_answers;
                    store_answers = check.is_ok();
                    health.metrics.store_reachable(store_answers && store_writes);
                    if back && store_failing {
                        // Redis answers again: retry now rather than when the backoff ends.
                        dirty = true;
                        retry_at = None;
                        attempt = 0;
                    }
                    match check {
                        Ok(true) => {
                            // Rewrite at once, whatever the backoff or a settling burst says
                            // (SPEC §10).
                            dirty = true;
                            urgent = true;
                            retry_at = None;
                            attempt = 0;
                        }
                        Ok(false) => {}
                        Err(e) => tracing::debug!(error = %e, "store check failed"),
                    }
                }
            }
            _ = status_tick.tick() => {
                if leading && reconciler.refresh_stats().await {
                    dirty = true;
                }
            }
            _ = resync_tick.tick() => {
                reconciler.applier().resync();
                dirty = true;
            }
            _ = retry => {
                retry_at = None;
                dirty = true;
            }
        }
        let synced = tenants.synced() && scenarios.synced() && chaos.synced();
        health.ready.store(synced, Ordering::Relaxed);
        let waiting = retry_at.is_some() && (store_failing || !changed);
        let settling = settle_at.is_some() && !urgent;
        if !(dirty && synced && leading && !waiting && !settling) {
            continue;
        }
        dirty = false;
        changed = false;
        urgent = false;
        settle_at = None;
        burst_deadline = None;
        retry_at = None;
        let inputs = Inputs {
            tenants: tenants.items(),
            scenarios: scenarios.items(),
            chaos: chaos.items(),
        };
        let outcome = reconciler.reconcile(&inputs).await;
        store_failing = outcome.apply.unavailable.is_some();
        store_writes = !store_failing;
        health
            .metrics
            .store_reachable(store_answers && store_writes);
        if outcome.retry() {
            let wait = reconcile::backoff(attempt);
            attempt = attempt.saturating_add(1);
            retry_at = Some(tokio::time::Instant::now() + wait);
            tracing::warn!(retry_in = ?wait, store = ?outcome.apply.unavailable, kube_errors = outcome.kube_errors, "reconcile incomplete");
        } else {
            attempt = 0;
        }
    }
    // Now hand the lease over, before the process exits.
    stop_electing.cancel();
    if let Some(e) = elector {
        let _ = e.await;
    }
}

fn absorb(
    msg: Msg,
    tenants: &mut Cache<Tenant>,
    scenarios: &mut Cache<Scenario>,
    chaos: &mut Cache<ChaosProfile>,
) -> bool {
    match msg {
        Msg::Tenant(i, e) => tenants.apply(i, *e),
        Msg::Scenario(i, e) => scenarios.apply(i, *e),
        Msg::Chaos(i, e) => chaos.apply(i, *e),
    }
}
