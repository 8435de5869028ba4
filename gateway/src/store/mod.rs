//! Shared state behind one trait, two backends.
//!
//! ```text
//!   writers (seeder, public API, operator) ──put/delete──►  Store  ──notices──► sync task ─► Snapshot
//!   request path ──(rate-limit / fault counters only)────►  Store
//! ```
//!
//! [`memory::MemoryStore`] serves embedded mode and unit tests; [`redis::RedisStore`] serves
//! shared mode, where any number of gateway processes see the same state. Both pass the same
//! contract suite (`gateway/tests/store_contract.rs`).

pub mod memory;
pub mod redis;

use std::collections::HashMap;

use async_trait::async_trait;
use futures::stream::BoxStream;
use understudy_crds::model::{ApiKeyRecord, TenantConfig};

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

/// Kind of configuration change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoticeOp {
    /// The tenant's document was written.
    Put,
    /// The tenant was deleted.
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

/// A change notice, published after every configuration write (tenants and API keys share one
/// version sequence, so one gap check covers both).
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

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    /// One write, in order.
    Notice(ConfigNotice),
    /// Notices were lost (slow consumer): the subscriber must do a full resync.
    Lagged,
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

/// The one storage interface. Methods are grouped by concern; later surfaces (sessions, channels,
/// calls, audit) add their groups here so both backends keep implementing one contract.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `memory` or `redis`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    // --- tenant configuration -------------------------------------------------------------

    /// Every tenant document with its version, the global version and the epoch, read consistently.
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
    /// Like [`Store::put_tenant`], only if `expect` holds; `None` when it does not.
    async fn put_tenant_checked(
        &self,
        config: &TenantConfig,
        expect: Expect,
    ) -> Result<Option<u64>, StoreError>;
    /// Deletes a tenant; `None` when it did not exist (nothing is bumped then).
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
    /// Change notices from now on. The stream ends when the backend connection is lost; the
    /// subscriber then resubscribes and resyncs.
    async fn subscribe(&self) -> Result<BoxStream<'static, SyncEvent>, StoreError>;

    // --- API keys ----------------------------------------------------------------------------

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

    // --- epoch: noticing an emptied or restarted store -------------------------------------

    /// The epoch marker, `None` when absent (store emptied).
    async fn epoch(&self) -> Result<Option<String>, StoreError>;
    /// Sets the epoch marker (after a full (re)population) and returns it.
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

    // --- counters and small values -------------------------------------------------------

    /// Increments a counter that expires `ttl_secs` after its creation; returns the new value.
    async fn incr_expiring(&self, key: &str, ttl_secs: u64) -> Result<u64, StoreError>;
    /// Increments a counter that does not expire; returns the new value.
    async fn incr(&self, key: &str) -> Result<u64, StoreError>;
    /// Deletes every key with this prefix (tenant reset); returns how many.
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError>;
    /// Reads a small string value.
    async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Writes a small string value.
    async fn set_value(&self, key: &str, value: &str) -> Result<(), StoreError>;
    /// Takes a lock for `ttl_ms` if free; `true` when `holder` now holds it.
    async fn try_lock(&self, key: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError>;
    /// Releases a lock if `holder` holds it.
    async fn unlock(&self, key: &str, holder: &str) -> Result<(), StoreError>;

    // --- traffic counters for status -------------------------------------------------------

    /// Adds a batch of in-process counters to the shared totals.
    async fn flush_stats(&self, batch: &StatsBatch) -> Result<(), StoreError>;
    /// Reads a tenant's totals.
    async fn read_stats(&self, tenant: &str) -> Result<StatsTotals, StoreError>;
}
