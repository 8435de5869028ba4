//! Manifests from a folder (`--manifests`): loaded at start-up, written into the store exactly as
//! the operator would (read-only through the API), and reloaded when a file changes.
//!
//! The same code runs in embedded mode (memory store) and shared mode (Redis). With several
//! processes seeding the same folder, one holds a short lock and stamps a generation with the
//! content hash; the others find an equal generation and skip (SPEC §12).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio_util::sync::CancellationToken;
use understudy_crds::keys;
use understudy_crds::manifests::{Loaded, load_dir};
use understudy_crds::model::{ConfigSource, TenantConfig};

use understudy_core::{StoreError, Stores};

use crate::sync::SyncHandle;

/// Why manifests could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The folder cannot be read.
    #[error("cannot read manifests folder {dir}: {source}")]
    Unreadable {
        /// The folder.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// At least one manifest is invalid; every problem is listed, one per line, in file and
    /// document order, each path as the folder was given (`examples/bad.yaml, document 2 …`).
    #[error("{dir}: {count} problem(s) in {files} file(s):\n{list}", dir = dir.display())]
    Invalid {
        /// The folder, as given.
        dir: PathBuf,
        /// How many problems.
        count: usize,
        /// How many files were read.
        files: usize,
        /// One line per problem: file, document, field, message.
        list: String,
    },
}

/// Loads and validates a folder; every problem is reported, not just the first.
pub fn load(dir: &Path) -> Result<Loaded, ManifestError> {
    let loaded =
        load_dir(dir, ConfigSource::Manifest).map_err(|source| ManifestError::Unreadable {
            dir: dir.to_path_buf(),
            source,
        })?;
    if loaded.report.problems.is_empty() {
        return Ok(loaded);
    }
    // Origins are relative to the folder (so that the content hash does not depend on how a
    // process was given it); the person reading the list gets paths they can open.
    let list = loaded
        .report
        .problems
        .iter()
        .map(|p| format!("  - {}", dir.join(p.to_string()).display()))
        .collect::<Vec<_>>()
        .join("\n");
    Err(ManifestError::Invalid {
        dir: dir.to_path_buf(),
        count: loaded.report.problems.len(),
        files: loaded.files,
        list,
    })
}

/// Why a seed runs, which decides when it may overwrite what another process wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedMode {
    /// Start-up or a file changed here: write unless the same content is already stored.
    Changed,
    /// The store was emptied: write everything back.
    Force,
    /// Periodic safety net: write only if the store lost the manifests (no generation or no
    /// epoch), never over another process's different generation — so processes whose files
    /// briefly differ (a rollout, a ConfigMap propagating) do not take turns overwriting.
    Check,
}

/// How long the seed lock is taken for; it is renewed every third of that while writing.
const SEED_LOCK_MS: u64 = 10_000;

/// Writes a folder's tenants into the store.
pub struct Seeder {
    stores: Stores,
    holder: String,
}

impl Seeder {
    /// A seeder writing into `stores`.
    pub fn new(stores: Stores) -> Self {
        Seeder {
            stores,
            holder: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Renews the seed lock until it cannot (lost to another holder, or the store failed).
    async fn keep_lock(&self) -> StoreError {
        loop {
            tokio::time::sleep(Duration::from_millis(SEED_LOCK_MS / 3)).await;
            match self
                .stores
                .runtime
                .try_lock(keys::SEED_LOCK, &self.holder, SEED_LOCK_MS)
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    return StoreError::Unavailable("lost the seed lock while writing".into());
                }
                Err(e) => return e,
            }
        }
    }

    /// Writes `loaded` as `mode` allows. Returns whether this call wrote.
    pub async fn seed(&self, loaded: &Loaded, mode: SeedMode) -> Result<bool, StoreError> {
        for _ in 0..50 {
            if self
                .stores
                .runtime
                .try_lock(keys::SEED_LOCK, &self.holder, SEED_LOCK_MS)
                .await?
            {
                // The lock is renewed while the write runs, so a long write (thousands of
                // tenants, a slow store) never outlives it; losing it stops the write.
                let result = tokio::select! {
                    r = self.seed_locked(loaded, mode) => r,
                    e = self.keep_lock() => Err(e),
                };
                let _ = self
                    .stores
                    .runtime
                    .unlock(keys::SEED_LOCK, &self.holder)
                    .await;
                return result;
            }
            // Someone else is seeding; if it is the same content we will find its generation.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(StoreError::Unavailable(
            "timed out waiting for the seed lock".into(),
        ))
    }

    async fn seed_locked(&self, loaded: &Loaded, mode: SeedMode) -> Result<bool, StoreError> {
        let config = &self.stores.config;
        let epoch = config.epoch().await?;
        let generation = config.seed_generation().await?;
        let skip = match mode {
            SeedMode::Force => false,
            SeedMode::Changed => {
                epoch.is_some() && generation.as_deref() == Some(loaded.content_hash.as_str())
            }
            SeedMode::Check => epoch.is_some() && generation.is_some(),
        };
        if skip {
            return Ok(false);
        }
        let existing = config.load_all().await?;
        let wanted: HashMap<&str, &TenantConfig> = loaded
            .report
            .tenants
            .iter()
            .map(|t| (t.tenant_id.as_str(), t))
            .collect();
        for (cfg, _) in &existing.tenants {
            if cfg.source == ConfigSource::Manifest
                && !wanted.contains_key(cfg.tenant_id.as_str())
                && config.delete_tenant(&cfg.tenant_id).await?.is_some()
            {
                self.stores.purge_tenant(&cfg.tenant_id).await?;
            }
        }
        let current: HashMap<&str, &TenantConfig> = existing
            .tenants
            .iter()
            .map(|(t, _)| (t.tenant_id.as_str(), t))
            .collect();
        for t in &loaded.report.tenants {
            if let Some(c) = current.get(t.tenant_id.as_str()) {
                if *c == t {
                    continue;
                }
                if c.source == ConfigSource::Kubernetes {
                    tracing::warn!(tenant = %t.tenant_id, "tenant id is managed by Kubernetes; the manifest copy is skipped");
                    continue;
                }
                if c.source == ConfigSource::Api {
                    tracing::warn!(tenant = %t.tenant_id, "a manifest replaces the API-created tenant of the same id");
                }
            }
            config.put_tenant(t).await?;
        }
        config.set_seed_generation(&loaded.content_hash).await?;
        if epoch.is_none() {
            config.set_epoch(&uuid::Uuid::new_v4().to_string()).await?;
        }
        tracing::info!(
            tenants = loaded.report.tenants.len(),
            files = loaded.files,
            "manifests written to the {} store",
            self.stores.backend()
        );
        Ok(true)
    }
}

/// Watches `dir`, reseeding on every change (a broken edit keeps the last good configuration and
/// logs why), after the store was emptied, and periodically as a safety net.
pub async fn run_watcher(
    dir: PathBuf,
    seeder: Arc<Seeder>,
    sync: Arc<SyncHandle>,
    resync: Duration,
    pending: bool,
    cancel: CancellationToken,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(16);
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res
            && !matches!(ev.kind, notify::EventKind::Access(_))
        {
            let _ = tx.try_send(());
        }
    });
    let _watcher = match watcher {
        Ok(mut w) => match w.watch(&dir, RecursiveMode::Recursive) {
            Ok(()) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, dir = %dir.display(), "cannot watch manifests; changes need a restart");
                None
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "no file watcher available; changes need a restart");
            None
        }
    };
    let mut tick = tokio::time::interval(resync);
    tick.tick().await;
    // A write that failed (store down) is retried on the tick with the mode it had.
    let mut pending = pending.then_some(SeedMode::Changed);
    loop {
        let mode = tokio::select! {
            _ = cancel.cancelled() => return,
            Some(()) = rx.recv() => {
                // Debounce: editors write in several steps.
                tokio::time::sleep(Duration::from_millis(150)).await;
                while rx.try_recv().is_ok() {}
                SeedMode::Changed
            }
            _ = sync.epoch_lost.notified() => SeedMode::Force,
            _ = tick.tick() => pending.unwrap_or(SeedMode::Check),
        };
        // Parsing thousands of manifests is blocking work: off the async workers.
        let parsed = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || load(&dir)).await
        };
        let parsed = match parsed {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "reading manifests failed; keeping the last good configuration");
                continue;
            }
        };
        match parsed {
            Ok(loaded) => match seeder.seed(&loaded, mode).await {
                Ok(_) => pending = None,
                Err(e) => {
                    tracing::warn!(error = %e, "could not write manifests; will retry");
                    pending = Some(mode);
                }
            },
            Err(e) => tracing::error!(
                "manifests changed but are invalid; keeping the last good configuration\n{e}"
            ),
        }
    }
}
