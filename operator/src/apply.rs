//! The apply step: make the store hold exactly the planned tenant documents of Kubernetes
//! origin, writing only what changed, never touching tenants created through the API or seeded
//! from `--manifests`, and noticing an emptied or restarted Redis (epoch marker, run id) so that
//! everything is written back at once.

use std::collections::{BTreeMap, HashMap};

use understudy_core::{Expect, StoreError, Stores};
use understudy_crds::model::{ConfigSource, TenantConfig};

use crate::plan::origin_namespace;

/// What one apply did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// Documents written.
    pub written: usize,
    /// Tenant ids deleted (with their runtime counters and traffic stats).
    pub deleted: Vec<String>,
    /// tenant id → why it could not be written (the id belongs to a tenant of another origin).
    pub conflicts: BTreeMap<String, String>,
    /// Set when the store failed part-way; whatever was not written is retried.
    pub unavailable: Option<String>,
    /// Whether this apply rewrote a store found emptied.
    pub rewrote: bool,
}

/// Keeps the store in line with the plan. Holds what it last wrote, so a steady-state apply
/// compares in memory and writes only the tenants that changed.
pub struct Applier {
    stores: Stores,
    /// tenant id → (document, version) as this operator last wrote or read it.
    applied: HashMap<String, (TenantConfig, u64)>,
    /// Whether `applied` reflects the store (false at start and after a loss or failure).
    synced: bool,
    /// The epoch marker this operator saw or set.
    epoch: Option<String>,
    /// The Redis run id last seen.
    instance: Option<String>,
    /// The highest configuration version seen, raised again after an emptied store.
    max_version: u64,
    /// Whether an epoch was ever seen (so a missing one means the store was emptied).
    seen_epoch: bool,
    /// The namespaces this operator watches (`[]`: all): it owns only Kubernetes tenants whose
    /// Tenant lives there, so operators watching different namespaces can share one Redis.
    scope: Vec<String>,
}

impl Applier {
    /// An applier writing into `store`.
    pub fn new(stores: Stores) -> Self {
        Applier {
            stores,
            applied: HashMap::new(),
            synced: false,
            epoch: None,
            instance: None,
            max_version: 0,
            seen_epoch: false,
            scope: Vec::new(),
        }
    }

    /// Limits ownership to Kubernetes tenants from these namespaces (`[]`: all).
    pub fn with_scope(mut self, namespaces: Vec<String>) -> Self {
        self.scope = namespaces;
        self
    }

    fn owns(&self, doc: &TenantConfig) -> bool {
        doc.source == ConfigSource::Kubernetes
            && (self.scope.is_empty()
                || origin_namespace(&doc.origin)
                    .is_some_and(|ns| self.scope.iter().any(|s| s == ns)))
    }

    /// The stores this applier writes to.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// Tenant ids this operator has in the store.
    pub fn tenant_ids(&self) -> impl Iterator<Item = &str> {
        self.applied.keys().map(String::as_str)
    }

    /// Compares with the store afresh on the next apply (periodic resync, new leadership):
    /// anything that drifted (a key deleted by hand, a write by a former leader) is corrected.
    pub fn resync(&mut self) {
        self.synced = false;
    }

    /// Checks the epoch marker and the server's run id. Returns `true` when the store was emptied
    /// or restarted since the last look: the next [`Applier::apply`] then reads it afresh and
    /// writes back whatever is missing.
    pub async fn check_store(&mut self) -> Result<bool, StoreError> {
        let epoch = self.stores.config.epoch().await?;
        let instance = self.stores.config.instance_id().await?;
        let restarted = self.instance.as_ref().is_some_and(|i| *i != instance);
        self.instance = Some(instance);
        let lost = match (&self.epoch, &epoch) {
            (Some(mine), Some(now)) => mine != now,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if lost || restarted {
            tracing::warn!(
                emptied = lost,
                restarted,
                "the store was emptied or restarted; rewriting every resource"
            );
            // Versions restart from zero in an emptied Redis; make them exceed what gateways
            // hold, so nothing new is mistaken for old.
            self.stores.config.raise_version(self.max_version).await?;
            self.synced = false;
            self.epoch = None;
            return Ok(true);
        }
        Ok(false)
    }

    /// Writes `desired` (tenant id → document, all of Kubernetes origin): creates and updates
    /// what differs, deletes Kubernetes tenants no longer desired, and leaves every tenant of
    /// another origin alone (a planned id that collides with one is reported as a conflict).
    pub async fn apply(&mut self, desired: &BTreeMap<String, TenantConfig>) -> ApplyReport {
        let mut report = ApplyReport::default();
        if let Err(e) = self.apply_inner(desired, &mut report).await {
            self.synced = false;
            report.unavailable = Some(e.to_string());
        }
        report
    }

    async fn apply_inner(
        &mut self,
        desired: &BTreeMap<String, TenantConfig>,
        report: &mut ApplyReport,
    ) -> Result<(), StoreError> {
        let mut store_epoch = self.epoch.clone();
        if !self.synced {
            let all = self.stores.config.load_all().await?;
            self.max_version = self.max_version.max(all.version);
            report.rewrote = all.epoch.is_none() && self.seen_epoch;
            store_epoch = all.epoch.clone();
            self.applied = all
                .tenants
                .into_iter()
                .filter(|(t, _)| self.owns(t))
                .map(|(t, v)| (t.tenant_id.clone(), (t, v)))
                .collect();
            self.synced = true;
        }
        for (id, cfg) in desired {
            if self.applied.get(id).is_some_and(|(c, _)| c == cfg) {
                continue;
            }
            let chaos_changed = self
                .applied
                .get(id)
                .is_some_and(|(old, _)| old.chaos != cfg.chaos);
            match self.put(id, cfg).await? {
                Ok(v) => {
                    self.max_version = self.max_version.max(v);
                    self.applied.insert(id.clone(), (cfg.clone(), v));
                    report.written += 1;
                    if chaos_changed {
                        // A new or removed profile starts from zero, not from the old counts.
                        self.stores.runtime.purge_tenant(id).await?;
                    }
                }
                Err(conflict) => {
                    self.applied.remove(id);
                    report.conflicts.insert(id.clone(), conflict);
                }
            }
        }
        let gone: Vec<String> = self
            .applied
            .keys()
            .filter(|id| !desired.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            let (_, v) = self.applied[&id].clone();
            let mut deleted = self
                .stores
                .config
                .delete_tenant_checked(&id, Expect::Version(v))
                .await?
                .is_some();
            if !deleted
                && let Some((doc, v)) = self.stores.config.get_tenant(&id).await?
                && self.owns(&doc)
            {
                deleted = self
                    .stores
                    .config
                    .delete_tenant_checked(&id, Expect::Version(v))
                    .await?
                    .is_some();
            }
            // Counters go with the document, and only then: if the id now belongs to a tenant
            // of another origin, its counters are its own.
            if deleted {
                self.stores.purge_tenant(&id).await?;
                report.deleted.push(id.clone());
            }
            self.applied.remove(&id);
        }
        self.seen_epoch = true;
        match store_epoch {
            Some(e) => self.epoch = Some(e),
            None => {
                // Written last: its presence tells every gateway the store is whole again.
                let e = uuid::Uuid::new_v4().to_string();
                self.stores.config.set_epoch(&e).await?;
                self.epoch = Some(e);
            }
        }
        Ok(())
    }

    /// Writes one document; `Ok(Err(why))` when the id belongs to a tenant of another origin.
    async fn put(&self, id: &str, cfg: &TenantConfig) -> Result<Result<u64, String>, StoreError> {
        let mut expect = match self.applied.get(id) {
            Some((_, v)) => Expect::Version(*v),
            None => Expect::Absent,
        };
        // A concurrent writer (an operator replica that lost its lease, a gateway rewriting)
        // can move the version between our read and write; a few rounds settle it.
        for _ in 0..5 {
            if let Some(v) = self.stores.config.put_tenant_checked(cfg, expect).await? {
                return Ok(Ok(v));
            }
            match self.stores.config.get_tenant(id).await? {
                None => expect = Expect::Absent,
                Some((doc, v)) if self.owns(&doc) => expect = Expect::Version(v),
                Some((doc, _)) => {
                    let what = match doc.source {
                        ConfigSource::Api => "created through the public API",
                        ConfigSource::Manifest => "seeded from a gateway's --manifests folder",
                        ConfigSource::Kubernetes => {
                            "managed by an operator watching other namespaces"
                        }
                    };
                    return Ok(Err(format!(
                        "tenant id {id:?} is already used by a tenant {what} ({}); delete it or choose another spec.tenantId",
                        doc.origin
                    )));
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "tenant {id:?} kept changing under a checked write"
        )))
    }
}
