//! The in-memory snapshot of every tenant's configuration that the request path reads.
//!
//! ```text
//!  sync task ──apply_put / apply_del / replace──► SnapshotHandle (ArcSwap<Snapshot>) ◄── requests
//!                                                   └─ watch<u64> version (X-Understudy-Config-Version waits on it)
//! ```
//!
//! A snapshot is immutable; a change builds a new one and swaps it in, so a request sees one
//! consistent configuration from start to finish and never takes a lock. Its maps are persistent
//! (`imbl`): a new snapshot shares everything but the changed entry with the old one, so applying
//! one notice costs O(log n), and seeding n tenants one notice at a time grows linearly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use understudy_crds::model::{ApiKeyRecord, TenantConfig};

use crate::engine::settings::Settings;

/// One tenant, pre-digested for the request path.
#[derive(Debug)]
pub struct TenantRuntime {
    /// The document as stored.
    pub config: TenantConfig,
    /// The global version of the write that produced it.
    pub version: u64,
    /// Settings parsed once.
    pub settings: Settings,
    /// Every keyword compiled into one automaton: matching is one pass over the text.
    pub matcher: crate::engine::matcher::Matcher,
    /// The tenant's tools (MCP, hosted, execute).
    pub tools: crate::engine::tools::Tools,
    /// This is the channel MCP server (SPEC §7.4), for a tenant or for none: it lists the
    /// channel tools and none of the tenant's.
    pub channel_server: bool,
    /// This is the channel MCP server of no tenant (its id is [`CHANNEL_SERVER_SCOPE`], which a
    /// tenant could also take: this flag, not the id, says which it is).
    pub tenantless: bool,
}

/// The scope of the channel MCP server's sessions and metrics when no tenant is named.
pub const CHANNEL_SERVER_SCOPE: &str = "understudy.channels";

impl TenantRuntime {
    /// Digests a document.
    pub fn new(config: TenantConfig, version: u64) -> Self {
        let settings = Settings::from_value(&config.settings);
        let matcher =
            crate::engine::matcher::Matcher::new(config.scenarios.iter().map(|s| &s.spec.keywords));
        let tools = crate::engine::tools::Tools::new(&config.scenarios);
        TenantRuntime {
            config,
            version,
            settings,
            matcher,
            tools,
            channel_server: false,
            tenantless: false,
        }
    }

    /// The channel MCP server: for `tenant` (its id, visibility and chaos; none of its
    /// scenarios), or for no tenant ([`CHANNEL_SERVER_SCOPE`]).
    pub fn channel_server(tenant: Option<&TenantRuntime>) -> Self {
        let config = match tenant {
            Some(t) => TenantConfig {
                tenant_id: t.config.tenant_id.clone(),
                visibility: t.config.visibility,
                owner: t.config.owner.clone(),
                state: serde_json::Value::Null,
                settings: serde_json::Value::Null,
                default_response: None,
                scenarios: Vec::new(),
                chaos: t.config.chaos.clone(),
                source: t.config.source,
                origin: t.config.origin.clone(),
            },
            None => TenantConfig {
                tenant_id: CHANNEL_SERVER_SCOPE.to_string(),
                visibility: Default::default(),
                owner: None,
                state: serde_json::Value::Null,
                settings: serde_json::Value::Null,
                default_response: None,
                scenarios: Vec::new(),
                chaos: None,
                source: understudy_crds::model::ConfigSource::Api,
                origin: String::new(),
            },
        };
        let mut rt = TenantRuntime::new(config, tenant.map_or(0, |t| t.version));
        rt.channel_server = true;
        rt.tenantless = tenant.is_none();
        rt.settings.channel_tools = true;
        rt
    }

    /// The tenant channels created here belong to (`None`: the channel server of no tenant).
    pub fn channel_owner(&self) -> Option<&str> {
        (!self.tenantless).then(|| self.id())
    }

    /// The tenant id.
    pub fn id(&self) -> &str {
        &self.config.tenant_id
    }
}

/// An immutable view of every tenant.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The highest global version applied.
    pub version: u64,
    /// The epoch of the store this snapshot was read from.
    pub epoch: Option<String>,
    /// tenant id → runtime.
    pub tenants: imbl::HashMap<String, Arc<TenantRuntime>>,
    /// SHA-256 of a key's plaintext → the key: authentication is one map lookup.
    pub keys: imbl::HashMap<[u8; 32], Arc<ApiKeyRecord>>,
    /// Key name → its digest in `keys` (a revocation by name is one lookup, not a scan).
    key_names: imbl::HashMap<String, [u8; 32]>,
}

impl Snapshot {
    /// A copy to change, at `version` (never lower than this one's).
    fn next(&self, version: u64) -> Snapshot {
        Snapshot {
            version: self.version.max(version),
            epoch: self.epoch.clone(),
            tenants: self.tenants.clone(),
            keys: self.keys.clone(),
            key_names: self.key_names.clone(),
        }
    }

    /// Removes the key named `name`, if any.
    fn remove_key(&mut self, name: &str) {
        if let Some(d) = self.key_names.remove(name) {
            self.keys.remove(&d);
        }
    }
}

/// The shared handle: current snapshot, version watch, readiness of the first sync.
pub struct SnapshotHandle {
    current: ArcSwap<Snapshot>,
    /// Serialises writers (the sync task and request-path read-throughs): each change is a
    /// load-modify-store, which two unserialised writers would undo for each other.
    write: std::sync::Mutex<()>,
    version_tx: watch::Sender<u64>,
    synced: AtomicBool,
    /// Unix ms of the last successful contact with the store (full sync or notice).
    last_contact_ms: AtomicU64,
}

impl Default for SnapshotHandle {
    fn default() -> Self {
        Self::new()
    }
}

/// The 32 bytes of a stored hex SHA-256 (`None` for a malformed record, which then never matches).
fn digest_of(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nibble(bytes[2 * i])? << 4) | nibble(bytes[2 * i + 1])?;
    }
    Some(out)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl SnapshotHandle {
    /// An empty, not yet synced handle.
    pub fn new() -> Self {
        SnapshotHandle {
            current: ArcSwap::from_pointee(Snapshot::default()),
            write: std::sync::Mutex::new(()),
            version_tx: watch::channel(0).0,
            synced: AtomicBool::new(false),
            last_contact_ms: AtomicU64::new(0),
        }
    }

    /// Receives the version each time a change is applied.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.version_tx.subscribe()
    }

    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// One tenant from the current snapshot.
    pub fn tenant(&self, id: &str) -> Option<Arc<TenantRuntime>> {
        self.current.load().tenants.get(id).cloned()
    }

    /// Whether the first full sync has completed.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Milliseconds since the store was last heard from.
    pub fn staleness_ms(&self) -> u64 {
        now_ms().saturating_sub(self.last_contact_ms.load(Ordering::Relaxed))
    }

    /// Records contact with the store.
    pub fn touch(&self) {
        self.last_contact_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn publish(&self, next: Snapshot) {
        let v = next.version;
        self.current.store(Arc::new(next));
        self.version_tx.send_if_modified(|cur| {
            if v > *cur {
                *cur = v;
                true
            } else {
                false
            }
        });
    }

    /// Replaces everything (a full sync). A tenant whose version did not change keeps its digested
    /// runtime. Returns the ids of tenants that are gone.
    pub fn replace(
        &self,
        version: u64,
        epoch: Option<String>,
        tenants: Vec<(TenantConfig, u64)>,
        keys: Vec<ApiKeyRecord>,
    ) -> Vec<String> {
        // Digested before the lock (see `apply_put`); only the sync task replaces, so the
        // snapshot read here is the one replaced (a read-through cached meanwhile is re-read).
        let cur = self.load();
        let tenants: imbl::HashMap<String, Arc<TenantRuntime>> = tenants
            .into_iter()
            .map(|(c, v)| {
                let runtime = match cur.tenants.get(&c.tenant_id) {
                    Some(t) if t.version == v && t.config == c => t.clone(),
                    _ => Arc::new(TenantRuntime::new(c, v)),
                };
                (runtime.config.tenant_id.clone(), runtime)
            })
            .collect();
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.load();
        let gone = cur
            .tenants
            .keys()
            .filter(|id| !tenants.contains_key(*id))
            .cloned()
            .collect();
        let mut next = Snapshot {
            version,
            epoch,
            tenants,
            ..Snapshot::default()
        };
        for k in keys {
            if let Some(d) = digest_of(&k.hash) {
                next.key_names.insert(k.name.clone(), d);
                next.keys.insert(d, Arc::new(k));
            }
        }
        self.publish(next);
        self.synced.store(true, Ordering::Release);
        self.touch();
        gone
    }

    /// Applies one tenant write. `version` becomes the snapshot version only if it is newer.
    pub fn apply_put(&self, config: TenantConfig, tenant_version: u64, global_version: u64) {
        // Digesting (settings, the keyword automaton) happens before the lock: read-throughs on
        // the request path take the same lock.
        let runtime = Arc::new(TenantRuntime::new(config, tenant_version));
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.load();
        if cur
            .tenants
            .get(runtime.id())
            .is_some_and(|t| t.version > tenant_version)
        {
            return; // an older document than the one we serve
        }
        let mut next = cur.next(global_version);
        next.tenants.insert(runtime.id().to_string(), runtime);
        self.publish(next);
        self.touch();
    }

    /// Applies one tenant deletion.
    pub fn apply_del(&self, tenant: &str, global_version: u64) {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.load().next(global_version);
        next.tenants.remove(tenant);
        self.publish(next);
        self.touch();
    }

    /// Applies one API key creation.
    pub fn apply_key_put(&self, key: ApiKeyRecord, global_version: u64) {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.load().next(global_version);
        next.remove_key(&key.name);
        if let Some(d) = digest_of(&key.hash) {
            next.key_names.insert(key.name.clone(), d);
            next.keys.insert(d, Arc::new(key));
        }
        self.publish(next);
        self.touch();
    }

    /// Applies one API key revocation.
    pub fn apply_key_del(&self, name: &str, global_version: u64) {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = self.load().next(global_version);
        next.remove_key(name);
        self.publish(next);
        self.touch();
    }

    /// Raises the version without a change (a notice for a write we already hold).
    pub fn bump_version(&self, version: u64) {
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.load();
        if version > cur.version {
            self.publish(cur.next(version));
        }
        self.touch();
    }

    /// Caches a tenant read through from the store, unless the snapshot changed while it was being
    /// read (then a newer write or a delete may have overtaken it: it is served uncached).
    pub fn insert_read_through(
        &self,
        config: TenantConfig,
        tenant_version: u64,
        seen_version: u64,
    ) -> Arc<TenantRuntime> {
        if let Some(t) = self.tenant(&config.tenant_id) {
            return t;
        }
        // Digested before the lock (see `apply_put`).
        let runtime = Arc::new(TenantRuntime::new(config, tenant_version));
        let _w = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.load();
        if let Some(t) = cur.tenants.get(runtime.id()) {
            return t.clone();
        }
        if cur.version == seen_version {
            let mut next = cur.next(seen_version);
            next.tenants
                .insert(runtime.config.tenant_id.clone(), runtime.clone());
            self.publish(next);
        }
        runtime
    }

    /// Waits (at most `limit`) until the snapshot holds `version`; `true` if it does.
    pub async fn wait_for_version(&self, version: u64, limit: Duration) -> bool {
        let mut rx = self.version_tx.subscribe();
        let wait = rx.wait_for(|v| *v >= version);
        matches!(tokio::time::timeout(limit, wait).await, Ok(Ok(_)))
    }
}
