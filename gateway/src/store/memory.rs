//! In-process backend: embedded mode (one process, no Redis) and unit tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use understudy_crds::model::{ApiKeyRecord, TenantConfig};

use super::{
    ConfigNotice, Expect, FullConfig, NoticeKind, NoticeOp, StatsBatch, StatsTotals, Store,
    StoreError, SyncEvent,
};

#[derive(Default)]
struct State {
    version: u64,
    epoch: Option<String>,
    tenants: BTreeMap<String, (TenantConfig, u64)>,
    keys: BTreeMap<String, ApiKeyRecord>,
    /// key → (value, expiry)
    counters: HashMap<String, (u64, Option<Instant>)>,
    values: HashMap<String, String>,
    /// key → (holder, expiry)
    locks: HashMap<String, (String, Instant)>,
    stats: HashMap<String, StatsTotals>,
}

/// The memory backend. Cheap to create; each instance is an isolated world.
pub struct MemoryStore {
    state: Mutex<State>,
    notices: broadcast::Sender<ConfigNotice>,
    instance: String,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        let (notices, _) = broadcast::channel(1024);
        MemoryStore {
            state: Mutex::new(State::default()),
            notices,
            instance: uuid::Uuid::new_v4().to_string(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of plain data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bumps the version and publishes the notice, under the caller's lock so notices leave in
    /// version order.
    fn bump(&self, st: &mut State, name: String, op: NoticeOp, kind: NoticeKind) -> u64 {
        st.version += 1;
        let _ = self.notices.send(ConfigNotice {
            version: st.version,
            tenant: name,
            op,
            kind,
        });
        st.version
    }

    /// Drops every counter with this prefix (synchronous, for the per-process fallback).
    pub fn forget_prefix(&self, prefix: &str) {
        self.lock().counters.retain(|k, _| !k.starts_with(prefix));
    }

    /// Synchronous counter used as the per-process fallback when the shared store is down.
    pub fn incr_expiring_now(&self, key: &str, ttl_secs: u64) -> u64 {
        let now = Instant::now();
        let mut st = self.lock();
        if st.counters.len() > 10_000 {
            st.counters
                .retain(|_, (_, exp)| exp.is_none_or(|e| e > now));
        }
        // Saturating: an absurd ttl means "never expires", not an overflow.
        let expiry = now.checked_add(Duration::from_secs(ttl_secs));
        let entry = st.counters.entry(key.to_string()).or_insert((0, expiry));
        if entry.1.is_some_and(|e| e <= now) {
            *entry = (0, expiry);
        }
        entry.0 += 1;
        entry.0
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn load_all(&self) -> Result<FullConfig, StoreError> {
        let st = self.lock();
        Ok(FullConfig {
            version: st.version,
            epoch: st.epoch.clone(),
            tenants: st.tenants.values().cloned().collect(),
            keys: st.keys.values().cloned().collect(),
        })
    }

    async fn config_version(&self) -> Result<u64, StoreError> {
        Ok(self.lock().version)
    }

    async fn get_tenant(&self, tenant: &str) -> Result<Option<(TenantConfig, u64)>, StoreError> {
        Ok(self.lock().tenants.get(tenant).cloned())
    }

    async fn put_tenant_checked(
        &self,
        config: &TenantConfig,
        expect: Expect,
    ) -> Result<Option<u64>, StoreError> {
        let mut st = self.lock();
        let current = st.tenants.get(&config.tenant_id).map(|(_, v)| *v);
        let ok = match expect {
            Expect::Any => true,
            Expect::Absent => current.is_none(),
            Expect::Version(v) => current == Some(v),
        };
        if !ok {
            return Ok(None);
        }
        // The document is stored before its notice is sent, under the same lock.
        let v = st.version + 1;
        st.tenants
            .insert(config.tenant_id.clone(), (config.clone(), v));
        self.bump(
            &mut st,
            config.tenant_id.clone(),
            NoticeOp::Put,
            NoticeKind::Tenant,
        );
        Ok(Some(v))
    }

    async fn delete_tenant_checked(
        &self,
        tenant: &str,
        expect: Expect,
    ) -> Result<Option<u64>, StoreError> {
        let mut st = self.lock();
        let current = st.tenants.get(tenant).map(|(_, v)| *v);
        let ok = match expect {
            Expect::Any => current.is_some(),
            Expect::Absent => false,
            Expect::Version(v) => current == Some(v),
        };
        if !ok {
            return Ok(None);
        }
        st.tenants.remove(tenant);
        let v = self.bump(
            &mut st,
            tenant.to_string(),
            NoticeOp::Del,
            NoticeKind::Tenant,
        );
        Ok(Some(v))
    }

    async fn put_key(&self, key: &ApiKeyRecord) -> Result<Option<u64>, StoreError> {
        let mut st = self.lock();
        if st.keys.contains_key(&key.name) {
            return Ok(None);
        }
        st.keys.insert(key.name.clone(), key.clone());
        let v = self.bump(&mut st, key.name.clone(), NoticeOp::Put, NoticeKind::Key);
        Ok(Some(v))
    }

    async fn get_key(&self, name: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Ok(self.lock().keys.get(name).cloned())
    }

    async fn delete_key_checked(
        &self,
        name: &str,
        expected_hash: Option<&str>,
    ) -> Result<Option<u64>, StoreError> {
        let mut st = self.lock();
        if expected_hash.is_some_and(|h| st.keys.get(name).is_some_and(|k| k.hash != h)) {
            return Ok(None);
        }
        if st.keys.remove(name).is_none() {
            return Ok(None);
        }
        let v = self.bump(&mut st, name.to_string(), NoticeOp::Del, NoticeKind::Key);
        Ok(Some(v))
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, SyncEvent>, StoreError> {
        let rx = self.notices.subscribe();
        Ok(BroadcastStream::new(rx)
            .map(|r| match r {
                Ok(n) => SyncEvent::Notice(n),
                Err(BroadcastStreamRecvError::Lagged(_)) => SyncEvent::Lagged,
            })
            .boxed())
    }

    async fn epoch(&self) -> Result<Option<String>, StoreError> {
        Ok(self.lock().epoch.clone())
    }

    async fn set_epoch(&self, epoch: &str) -> Result<(), StoreError> {
        self.lock().epoch = Some(epoch.to_string());
        Ok(())
    }

    async fn init_epoch(&self, epoch: &str) -> Result<Option<String>, StoreError> {
        let mut st = self.lock();
        if st.epoch.is_none() && st.version == 0 {
            st.epoch = Some(epoch.to_string());
        }
        Ok(st.epoch.clone())
    }

    async fn raise_version(&self, floor: u64) -> Result<(), StoreError> {
        let mut st = self.lock();
        st.version = st.version.max(floor);
        Ok(())
    }

    async fn instance_id(&self) -> Result<String, StoreError> {
        Ok(self.instance.clone())
    }

    async fn incr_expiring(&self, key: &str, ttl_secs: u64) -> Result<u64, StoreError> {
        Ok(self.incr_expiring_now(key, ttl_secs))
    }

    async fn incr(&self, key: &str) -> Result<u64, StoreError> {
        let mut st = self.lock();
        let entry = st.counters.entry(key.to_string()).or_insert((0, None));
        entry.0 += 1;
        Ok(entry.0)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let mut st = self.lock();
        let before = st.counters.len() + st.values.len();
        st.counters.retain(|k, _| !k.starts_with(prefix));
        st.values.retain(|k, _| !k.starts_with(prefix));
        Ok((before - st.counters.len() - st.values.len()) as u64)
    }

    async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.lock().values.get(key).cloned())
    }

    async fn set_value(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.lock()
            .values
            .insert(key.to_string(), value.to_string());
        Ok(())
    }

    async fn try_lock(&self, key: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut st = self.lock();
        match st.locks.get(key) {
            Some((h, exp)) if *exp > now && h != holder => Ok(false),
            _ => {
                st.locks.insert(
                    key.to_string(),
                    (holder.to_string(), now + Duration::from_millis(ttl_ms)),
                );
                Ok(true)
            }
        }
    }

    async fn unlock(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        let mut st = self.lock();
        if st.locks.get(key).is_some_and(|(h, _)| h == holder) {
            st.locks.remove(key);
        }
        Ok(())
    }

    async fn flush_stats(&self, batch: &StatsBatch) -> Result<(), StoreError> {
        let mut st = self.lock();
        for (tenant, s) in &batch.tenants {
            let t = st.stats.entry(tenant.clone()).or_default();
            t.requests += s.requests;
            t.unmatched += s.unmatched;
            t.last_request_ms = t.last_request_ms.max(s.last_request_ms);
            for (id, n) in &s.hits {
                *t.hits.entry(id.clone()).or_default() += n;
            }
        }
        Ok(())
    }

    async fn read_stats(&self, tenant: &str) -> Result<StatsTotals, StoreError> {
        Ok(self.lock().stats.get(tenant).cloned().unwrap_or_default())
    }
}
