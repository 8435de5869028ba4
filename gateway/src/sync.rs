//! Keeps a process's snapshot in step with the store (SPEC §12).
//!
//! ```text
//!  hub.subscribe(config) ─► full sync ─► loop { notice → apply one tenant (version gap → full sync)
//!                                              hub Gap (lag, reconnect) → full sync
//!                                              every resync period → full sync
//!                                              every second → epoch + instance check }
//! ```
//!
//! An emptied store (no epoch marker) is never read as "every tenant deleted": the snapshot is
//! kept until a writer repopulates the store and sets a new epoch. Whoever seeds manifests is
//! told through [`SyncHandle::epoch_lost`] so it can write them back at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use understudy_core::{
    ConfigNotice, ConfigStore, Delivery, Hub, NoticeKind, NoticeOp, StoreError, Topic,
};

use crate::metrics::Metrics;
use crate::snapshot::SnapshotHandle;

/// Timing of the sync loop.
#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Full resync period (a safety net behind notices).
    pub resync: Duration,
    /// Epoch and instance check period.
    pub check: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            resync: Duration::from_secs(30),
            check: Duration::from_secs(1),
        }
    }
}

/// Signals shared between the sync task and the manifest seeder.
#[derive(Default)]
pub struct SyncHandle {
    /// Notified when the store turns out to have been emptied (epoch gone).
    pub epoch_lost: Notify,
}

struct Syncer {
    store: Arc<dyn ConfigStore>,
    snapshot: Arc<SnapshotHandle>,
    metrics: Arc<Metrics>,
    handle: Arc<SyncHandle>,
}

impl Syncer {
    fn gauges(&self) {
        let s = self.snapshot.load();
        self.metrics.config_version.set(s.version as i64);
        self.metrics.tenants.set(s.tenants.len() as i64);
    }

    async fn full_sync(&self) -> Result<(), StoreError> {
        let full = self.store.load_all().await?;
        let current = self.snapshot.load();
        match (&full.epoch, self.snapshot.is_synced()) {
            (Some(_), _) => {
                if full.version < current.version {
                    // The store restarted from a lower counter: lift it so later writes are seen.
                    self.store.raise_version(current.version).await?;
                }
                let gone = self.snapshot.replace(
                    full.version.max(current.version),
                    full.epoch,
                    full.tenants,
                    full.keys,
                );
                for id in gone {
                    self.metrics.forget_tenant(&id);
                }
            }
            (None, false) => {
                // A store never used: this process marks it, so a later emptying is noticed. A
                // store used and then emptied: serve what it holds and leave the new epoch to
                // whoever repopulates it (other processes keep their snapshots meanwhile).
                let epoch = self
                    .store
                    .init_epoch(&uuid::Uuid::new_v4().to_string())
                    .await?;
                let _ = self
                    .snapshot
                    .replace(full.version, epoch, full.tenants, full.keys);
            }
            (None, true) => {
                tracing::warn!(
                    tenants = current.tenants.len(),
                    "the store was emptied: serving the last snapshot until it is repopulated"
                );
                self.store.raise_version(current.version).await?;
                self.handle.epoch_lost.notify_one();
                self.snapshot.touch();
            }
        }
        self.gauges();
        Ok(())
    }

    async fn apply(&self, n: ConfigNotice) -> Result<(), StoreError> {
        let have = self.snapshot.load().version;
        if n.version <= have {
            return Ok(()); // already part of a full sync we did
        }
        if n.version > have + 1 {
            tracing::debug!(have, got = n.version, "version gap: full resync");
            return self.full_sync().await;
        }
        match (n.kind, n.op) {
            (NoticeKind::Tenant, NoticeOp::Put) => match self.store.get_tenant(&n.tenant).await? {
                Some((cfg, v)) => self.snapshot.apply_put(cfg, v, n.version),
                // Deleted again already; its delete notice follows.
                None => self.snapshot.bump_version(n.version),
            },
            (NoticeKind::Tenant, NoticeOp::Del) => {
                self.snapshot.apply_del(&n.tenant, n.version);
                self.metrics.forget_tenant(&n.tenant);
            }
            (NoticeKind::Key, NoticeOp::Put) => match self.store.get_key(&n.tenant).await? {
                Some(key) => self.snapshot.apply_key_put(key, n.version),
                None => self.snapshot.bump_version(n.version),
            },
            (NoticeKind::Key, NoticeOp::Del) => self.snapshot.apply_key_del(&n.tenant, n.version),
        }
        self.gauges();
        Ok(())
    }

    async fn check(
        &self,
        epoch_seen: &mut Option<String>,
        instance_seen: &mut Option<String>,
    ) -> Result<(), StoreError> {
        let instance = self.store.instance_id().await?;
        let epoch = self.store.epoch().await?;
        let version = self.store.config_version().await?;
        let restarted = instance_seen.as_ref().is_some_and(|i| *i != instance);
        let changed = *epoch_seen != epoch;
        *instance_seen = Some(instance);
        *epoch_seen = epoch;
        // The store is ahead of us: a notice was lost (or a half-open pub/sub connection is
        // delivering nothing). A full sync catches up; only then is the snapshot fresh again.
        let behind = version > self.snapshot.load().version;
        if restarted || changed || behind {
            tracing::info!(restarted, epoch_changed = changed, behind, "full resync");
            self.full_sync().await?;
        } else {
            self.snapshot.touch();
        }
        Ok(())
    }
}

/// Runs until cancelled. Store errors are logged and retried; the snapshot keeps serving.
pub async fn run(
    store: Arc<dyn ConfigStore>,
    hub: Hub,
    snapshot: Arc<SnapshotHandle>,
    metrics: Arc<Metrics>,
    handle: Arc<SyncHandle>,
    options: SyncOptions,
    cancel: CancellationToken,
) {
    let s = Syncer {
        store,
        snapshot,
        metrics,
        handle,
    };
    // Subscribe before reading so that no write falls between the two. The hub resubscribes
    // by itself after a lost connection and then says `Gap`.
    let mut sub = hub.subscribe(&Topic::config()).await;
    let mut backoff = Duration::from_millis(100);
    loop {
        match s.full_sync().await {
            Ok(()) => break,
            Err(e) => {
                s.metrics.redis_error("load_all");
                tracing::warn!(error = %e, "full configuration sync failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = cancel.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    let mut epoch_seen: Option<String> = s.snapshot.load().epoch.clone();
    let mut instance_seen: Option<String> = None;
    // A full sync that failed (after a gap) is retried on the next check.
    let mut owed = false;
    let mut resync = tokio::time::interval(options.resync);
    resync.tick().await;
    let mut check = tokio::time::interval(options.check);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (result, full) = tokio::select! {
            _ = cancel.cancelled() => return,
            delivery = sub.recv() => match delivery {
                Some(Delivery::Message(bytes)) => match serde_json::from_slice::<ConfigNotice>(&bytes) {
                    Ok(n) => (s.apply(n).await, false),
                    // A notice we cannot read means we may have missed a change.
                    Err(_) => (s.full_sync().await, true),
                },
                Some(Delivery::Gap) => (s.full_sync().await, true),
                None => return,
            },
            _ = resync.tick() => (s.full_sync().await, true),
            _ = check.tick() => if owed {
                (s.full_sync().await, true)
            } else {
                (s.check(&mut epoch_seen, &mut instance_seen).await, false)
            },
        };
        match result {
            Ok(()) => {
                if full {
                    owed = false;
                }
            }
            Err(e) => {
                owed |= full;
                s.metrics.redis_error("sync");
                tracing::debug!(error = %e, "configuration sync step failed");
            }
        }
    }
}
