//! The store traits, one per concern, and [`Stores`], the bundle every process holds.
//!
//! ```text
//!   writers (seeder, public API, operator) ─► ConfigStore ─► notice on the hub ─► sync ─► snapshot
//!   request path (chaos counters, locks)   ─► RuntimeStore
//!   stats flusher (every 2 s), operator    ─► StatsStore
//!   tenant deleted (API, operator, seeder) ─► Stores::purge_tenant ─► every concern's purge
//! ```
//!
//! [`crate::memory::MemoryStore`] (embedded mode, unit tests) and [`crate::redis::RedisStore`]
//! (shared mode) implement every trait; `core/tests/store_contract.rs` holds one suite per trait
//! and runs each against both.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use understudy_crds::model::{ApiKeyRecord, TenantConfig};

use crate::hub::Hub;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable or timed out; the caller may retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The backend returned something this version cannot read.
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

// --- configuration ---------------------------------------------------------------------------

/// Kind of configuration change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeOp {
    /// The tenant's document (or the key) was written.
    Put,
    /// The tenant (or the key) was deleted.
    Del,
}

/// What a notice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeKind {
    /// A tenant document (`tenant` names it).
    #[default]
    Tenant,
    /// An API key (`tenant` carries the key's name).
    Key,
}

/// A change notice, published on [`crate::Topic::config`] after every configuration write
/// (tenants and API keys share one version sequence, so one gap check covers both).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigNotice {
    /// The global configuration version this write produced.
    #[serde(rename = "v")]
    pub version: u64,
    /// The tenant (or key name) written.
    #[serde(rename = "t")]
    pub tenant: String,
    /// What happened to it.
    pub op: NoticeOp,
    /// Tenant or key.
    #[serde(rename = "k", default)]
    pub kind: NoticeKind,
}

/// The precondition of a checked tenant write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is there.
    Any,
    /// Only if the tenant does not exist (create).
    Absent,
    /// Only if the tenant's last write had this version (read-modify-write without lost updates).
    Version(u64),
}

/// Every tenant with the version of its last write.
#[derive(Debug, Clone, Default)]
pub struct FullConfig {
    /// The global version at the time of reading.
    pub version: u64,
    /// The epoch marker; `None` means the store was emptied (or never populated).
    pub epoch: Option<String>,
    /// Tenant documents with their versions.
    pub tenants: Vec<(TenantConfig, u64)>,
    /// Every API key (hashed).
    pub keys: Vec<ApiKeyRecord>,
}

/// Tenant configuration, API keys, the epoch that reveals an emptied store, and the manifest
/// seeder's generation. Every write bumps one global version and publishes a [`ConfigNotice`]
/// on the hub, atomically with the write.
#[async_trait]
pub trait ConfigStore: Send + Sync + 'static {
    /// Every tenant document with its version, the global version and the epoch, read
    /// consistently.
    async fn load_all(&self) -> Result<FullConfig, StoreError>;
    /// The global configuration version (cheap: compared every second with the snapshot's, so a
    /// silently dead notice channel is noticed).
    async fn config_version(&self) -> Result<u64, StoreError>;
    /// One tenant's document and version (read-through for tenants a snapshot has not seen yet).
    async fn get_tenant(&self, tenant: &str) -> Result<Option<(TenantConfig, u64)>, StoreError>;
    /// Replaces a tenant's document, bumps the global version and publishes a notice, atomically.
    async fn put_tenant(&self, config: &TenantConfig) -> Result<u64, StoreError> {
        match self.put_tenant_checked(config, Expect::Any).await? {
            Some(v) => Ok(v),
            None => Err(StoreError::Corrupt(
                "an unconditional write was refused".into(),
            )),
        }
    }
    /// Like [`ConfigStore::put_tenant`], only if `expect` holds; `None` when it does not.
    async fn put_tenant_checked(
        &self,
        config: &TenantConfig,
        expect: Expect,
    ) -> Result<Option<u64>, StoreError>;
    /// Deletes a tenant's document; `None` when it did not exist (nothing is bumped then). What
    /// else the tenant owns goes with [`Stores::purge_tenant`].
    async fn delete_tenant(&self, tenant: &str) -> Result<Option<u64>, StoreError> {
        self.delete_tenant_checked(tenant, Expect::Any).await
    }
    /// Deletes a tenant only if `expect` holds (`Expect::Version`: the document the caller
    /// checked is still the one stored); `None` otherwise.
    async fn delete_tenant_checked(
        &self,
        tenant: &str,
        expect: Expect,
    ) -> Result<Option<u64>, StoreError>;

    /// Stores a new key; `None` when the name is taken. Bumps the version and publishes a notice.
    async fn put_key(&self, key: &ApiKeyRecord) -> Result<Option<u64>, StoreError>;
    /// One key by name.
    async fn get_key(&self, name: &str) -> Result<Option<ApiKeyRecord>, StoreError>;
    /// Revokes (deletes) a key; `None` when it did not exist.
    async fn delete_key(&self, name: &str) -> Result<Option<u64>, StoreError> {
        self.delete_key_checked(name, None).await
    }
    /// Revokes a key only if its stored hash is `expected_hash` (when given): a key revoked and
    /// minted again under the same name in between is left alone.
    async fn delete_key_checked(
        &self,
        name: &str,
        expected_hash: Option<&str>,
    ) -> Result<Option<u64>, StoreError>;

    /// The epoch marker, `None` when absent (store emptied).
    async fn epoch(&self) -> Result<Option<String>, StoreError>;
    /// Sets the epoch marker (after a full (re)population).
    async fn set_epoch(&self, epoch: &str) -> Result<(), StoreError>;
    /// Sets the epoch marker only on a store never used (no configuration version at all);
    /// returns the marker in force, `None` when the store was used and then emptied (only a
    /// writer that repopulates it may then set a new epoch).
    async fn init_epoch(&self, epoch: &str) -> Result<Option<String>, StoreError>;
    /// Raises the global version counter to at least `floor` (after an emptied store, so new
    /// writes are not mistaken for old ones by processes that hold a newer snapshot).
    async fn raise_version(&self, floor: u64) -> Result<(), StoreError>;
    /// Identifies the backend server instance (Redis `run_id`); a change means it restarted.
    async fn instance_id(&self) -> Result<String, StoreError>;

    /// The content hash of the manifests last seeded (`--manifests`), if any.
    async fn seed_generation(&self) -> Result<Option<String>, StoreError>;
    /// Records the content hash of the manifests just seeded.
    async fn set_seed_generation(&self, hash: &str) -> Result<(), StoreError>;
}

// --- tenant runtime --------------------------------------------------------------------------

/// A tenant's run-time counter. The set is closed, so everything a tenant owns here has a name
/// known in advance and [`RuntimeStore::purge_tenant`] needs no scan of the keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Requests in the current chaos rate-limit window.
    RateLimit,
    /// Requests in the current `failFirst` window.
    FailFirst,
    /// Requests counted for `every`.
    Every,
}

impl Counter {
    /// Every counter (what a purge deletes).
    pub const ALL: [Counter; 3] = [Counter::RateLimit, Counter::FailFirst, Counter::Every];

    /// Its short name in key names.
    pub fn as_str(self) -> &'static str {
        match self {
            Counter::RateLimit => "rl",
            Counter::FailFirst => "ff",
            Counter::Every => "every",
        }
    }
}

/// Per-tenant run-time state shared by every process (chaos counters and their windows) and
/// short process-wide locks.
#[async_trait]
pub trait RuntimeStore: Send + Sync + 'static {
    /// Counts one request in the fixed window starting at `window_start` (Unix seconds): the
    /// count restarts when a later window begins; the counter expires `ttl_secs` after its last
    /// use. Returns the count in the window, this request included.
    async fn incr_window(
        &self,
        tenant: &str,
        counter: Counter,
        window_start: u64,
        ttl_secs: u64,
    ) -> Result<u64, StoreError>;
    /// Counts one request on a counter without a window; returns the new value.
    async fn incr(&self, tenant: &str, counter: Counter) -> Result<u64, StoreError>;
    /// Deletes every run-time counter of a tenant (reset, deletion, a new chaos profile).
    async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError>;

    /// Counts one request of `caller` on the rate-limited `route` in the fixed window starting at
    /// `window_start` (Unix seconds), expiring `ttl_secs` after its last use; returns the count
    /// in the window, this request included. Shared by every process: a caller's limit holds
    /// whichever process it reaches.
    async fn incr_caller(
        &self,
        route: &str,
        caller: &str,
        window_start: u64,
        ttl_secs: u64,
    ) -> Result<u64, StoreError>;

    /// Takes the lock `name` for `ttl_ms` if it is free or already `holder`'s (which extends it);
    /// `true` when `holder` now holds it.
    async fn try_lock(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError>;
    /// Releases a lock if `holder` holds it.
    async fn unlock(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Takes one token from the bucket `name` (full at `burst` tokens, one more every
    /// `refill_ms`), shared by every process: `None` when one was taken, `Some(ms)` when the
    /// bucket is empty and the next token is due in `ms`. An unused bucket expires once full.
    async fn take_token(
        &self,
        name: &str,
        burst: u32,
        refill_ms: u64,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError>;

    /// Stores a short-lived value under `name` for `ttl_ms` (login states, portal sessions),
    /// replacing what was there.
    async fn put_value(&self, name: &str, value: &str, ttl_ms: u64) -> Result<(), StoreError>;
    /// The value under `name`, while it lives.
    async fn get_value(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// The value under `name`, deleted in the same step: of two processes taking it, one gets it.
    async fn take_value(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Deletes the value under `name`.
    async fn delete_value(&self, name: &str) -> Result<(), StoreError>;
}

// --- stats ------------------------------------------------------------------------------------

/// Traffic counters aggregated in process and flushed in one batch (SPEC §12).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsBatch {
    /// tenant → counters since the last flush.
    pub tenants: HashMap<String, TenantStats>,
}

/// Counters of one tenant since the last flush.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantStats {
    /// Data-plane requests.
    pub requests: u64,
    /// LLM requests no scenario matched.
    pub unmatched: u64,
    /// Unix milliseconds of the latest request.
    pub last_request_ms: u64,
    /// scenario id → hits.
    pub hits: HashMap<String, u64>,
    /// The lowest configuration version of the tenant's document these requests were served
    /// from (a gateway's `TenantRuntime::version`). A flush adds the counts only if the tenant's
    /// current incarnation was created at or before it, so counts served before a deletion never
    /// land on a tenant created again under the same id. `0`: unknown, counted for whatever
    /// incarnation is current.
    pub served_version: u64,
}

impl TenantStats {
    /// Adds `other` into these counters. The served version becomes the lower of the two known
    /// ones: counts are never attributed to a later incarnation than the one that served them
    /// (at worst, a tenant deleted and created again while serving traffic loses one flush
    /// interval of its new counts).
    pub fn merge(&mut self, other: &TenantStats) {
        self.requests += other.requests;
        self.unmatched += other.unmatched;
        self.last_request_ms = self.last_request_ms.max(other.last_request_ms);
        for (id, n) in &other.hits {
            match self.hits.get_mut(id) {
                Some(h) => *h += n,
                None => {
                    self.hits.insert(id.clone(), *n);
                }
            }
        }
        self.served_version = match (self.served_version, other.served_version) {
            (0, v) | (v, 0) => v,
            (a, b) => a.min(b),
        };
    }
}

/// Totals read back (for status and tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsTotals {
    /// Data-plane requests.
    pub requests: u64,
    /// LLM requests no scenario matched.
    pub unmatched: u64,
    /// Unix milliseconds of the latest request.
    pub last_request_ms: u64,
    /// scenario id → hits.
    pub hits: HashMap<String, u64>,
}

/// Traffic counters for status (`requests`, `unmatched`, `lastRequestTime`, scenario `hits`).
#[async_trait]
pub trait StatsStore: Send + Sync + 'static {
    /// Adds a batch of in-process counters to the shared totals, atomically per tenant, and only
    /// to the incarnation that served them: counters of a tenant whose document no longer exists,
    /// or was created again after the counted requests were served
    /// ([`TenantStats::served_version`]), are dropped, so a late flush can neither bring back what
    /// a deletion purged nor credit a new tenant with its predecessor's traffic. The totals carry
    /// the incarnation they belong to; totals of an earlier one are replaced, not added to.
    async fn flush_stats(&self, batch: &StatsBatch) -> Result<(), StoreError>;
    /// Reads a tenant's totals: those of its current incarnation only (zero when the tenant does
    /// not exist, or when what is stored was counted for an earlier incarnation whose purge was
    /// missed).
    async fn read_stats(&self, tenant: &str) -> Result<StatsTotals, StoreError>;
    /// Deletes a tenant's totals.
    async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError>;
}

// --- the bundle -------------------------------------------------------------------------------

/// Every store of a process, by concern, and its hub. Cheap to clone.
#[derive(Clone)]
pub struct Stores {
    /// Tenant configuration, keys, epoch, versions.
    pub config: Arc<dyn ConfigStore>,
    /// Chaos counters, windows, locks.
    pub runtime: Arc<dyn RuntimeStore>,
    /// Traffic counters for status.
    pub stats: Arc<dyn StatsStore>,
    /// MCP sessions and their stream logs.
    pub sessions: Arc<dyn crate::sessions::SessionStore>,
    /// Execute-API calls and their events.
    pub calls: Arc<dyn crate::calls::CallStore>,
    /// Channels, their grants and messages.
    pub channels: Arc<dyn crate::channels::ChannelStore>,
    /// The audit log.
    pub audit: Arc<dyn crate::audit::AuditStore>,
    /// Pub/sub: configuration notices and, later, every surface's fan-out.
    pub hub: Hub,
    backend: &'static str,
}

impl Stores {
    /// A fresh in-process world (embedded mode, unit tests): memory stores and a memory hub.
    pub fn memory() -> Stores {
        let hub = Hub::memory();
        let store = Arc::new(crate::memory::MemoryStore::new(hub.clone()));
        Stores {
            config: store.clone(),
            runtime: store.clone(),
            stats: store.clone(),
            sessions: store.clone(),
            calls: store.clone(),
            channels: store.clone(),
            audit: store,
            hub,
            backend: "memory",
        }
    }

    /// Shared mode: Redis stores and a hub with one subscriber connection. Connects lazily (the
    /// process starts while Redis is down); fails only on an invalid URL.
    pub fn redis(url: &str) -> Result<Stores, StoreError> {
        let store = Arc::new(crate::redis::RedisStore::connect(url)?);
        let hub = Hub::redis(store.client(), store.connection());
        Ok(Stores {
            config: store.clone(),
            runtime: store.clone(),
            stats: store.clone(),
            sessions: store.clone(),
            calls: store.clone(),
            channels: store.clone(),
            audit: store,
            hub,
            backend: "redis",
        })
    }

    /// `memory` or `redis`, for logs and `/readyz`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Deletes everything a tenant owns besides its configuration document: run-time counters
    /// traffic counters, MCP sessions, execute calls and channels. The one
    /// cleanup used by the public API, the operator and the manifest seeder. Every part is
    /// attempted; the first error is returned.
    pub async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        let runtime = self.runtime.purge_tenant(tenant).await;
        let stats = self.stats.purge_tenant(tenant).await;
        let sessions = self.sessions.purge_tenant(tenant).await;
        let calls = self.calls.purge_tenant(tenant).await;
        let channels = self.channels.purge_tenant(tenant).await;
        runtime.and(stats).and(sessions).and(calls).and(channels)
    }
}
