//! In-process backend of every store trait: embedded mode (one process, no Redis) and unit
//! tests. Configuration notices go out on the process's memory [`Hub`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use understudy_crds::model::{ApiKeyRecord, TenantConfig};

use crate::calls::{
    Appended as CallAppended, CALL_TTL_MS, Call, CallDoc, CallEvent, CallStatus, CallStore,
    Created, EVENTS_PAGE, EventKind, Lease, call_topic, valid_call_id,
};
use crate::hub::{Hub, Topic};
use crate::sessions::{
    Appended, EventsRead, Session, SessionDoc, SessionEvent, SessionSignal, SessionStore,
    session_topic,
};
use crate::store::{
    ConfigNotice, ConfigStore, Counter, Expect, FullConfig, NoticeKind, NoticeOp, RuntimeStore,
    StatsBatch, StatsStore, StatsTotals, StoreError,
};

/// A run-time counter: its window (0 for counters without one), value and expiry.
#[derive(Debug, Clone, Copy)]
struct Count {
    window: u64,
    value: u64,
    expires: Option<Instant>,
}

#[derive(Default)]
struct State {
    version: u64,
    epoch: Option<String>,
    seed_generation: Option<String>,
    tenants: BTreeMap<String, (TenantConfig, u64)>,
    keys: BTreeMap<String, ApiKeyRecord>,
    /// tenant → counter → count: a tenant's counters go in one step.
    counters: HashMap<String, HashMap<Counter, Count>>,
    /// lock name → (holder, expiry)
    locks: HashMap<String, (String, Instant)>,
    /// name → (value, expiry): short-lived values.
    values: HashMap<String, (String, Instant)>,
    /// bucket name → (tokens, Unix ms the count is as of).
    buckets: HashMap<String, (u64, u64)>,
    /// tenant → the version that created its current incarnation.
    born: HashMap<String, u64>,
    /// tenant → (the incarnation counted for, totals).
    stats: HashMap<String, (u64, StatsTotals)>,
    /// When expired counters were last swept (at most once a second, so a large map is not
    /// scanned per request).
    last_sweep: Option<Instant>,
    /// tenant → session id → session (a tenant's expired sessions are swept when it creates
    /// one, so a tenant holds at most its cap).
    sessions: HashMap<String, HashMap<String, MemSession>>,
    /// tenant → call id → call.
    calls: HashMap<String, HashMap<String, MemCall>>,
    /// (tenant, caller, request id) → call id.
    call_requests: HashMap<(String, String, String), String>,
    /// When expired calls were last swept (at most once a second, and only past a size).
    last_call_sweep: Option<Instant>,
}

/// One execute-API call.
struct MemCall {
    doc: CallDoc,
    status: CallStatus,
    updated_ms: u64,
    expires: Instant,
    result: Option<String>,
    error: Option<String>,
    owner: String,
    lease_until_ms: u64,
    events: Vec<CallEvent>,
}

/// One MCP session.
struct MemSession {
    doc: SessionDoc,
    idle: Duration,
    touched: Instant,
    expires: Instant,
    seq: u64,
    tools: String,
    holder: String,
    log: std::collections::VecDeque<SessionEvent>,
}

/// Bound on tenants with run-time counters before expired ones are swept.
const SWEEP_AT: usize = 10_000;

/// The memory backend. Cheap to create; each instance is an isolated world.
pub struct MemoryStore {
    state: Mutex<State>,
    pub(crate) hub: Hub,
    instance: String,
    /// Channels have a lock of their own: a publish never waits on the other concerns.
    channels: Mutex<crate::channels_memory::MemChannels>,
    /// The audit log: read by the portal, written in batches by one writer.
    audit: std::sync::RwLock<crate::audit_memory::MemAudit>,
}

impl MemoryStore {
    /// An empty store publishing its notices on `hub`.
    pub fn new(hub: Hub) -> Self {
        MemoryStore {
            state: Mutex::new(State::default()),
            hub,
            instance: uuid::Uuid::new_v4().to_string(),
            channels: Mutex::new(Default::default()),
            audit: Default::default(),
        }
    }

    /// A store with a hub of its own (per-process chaos fallback counters, tests).
    pub fn standalone() -> Self {
        Self::new(Hub::memory())
    }

    pub(crate) fn channels(
        &self,
    ) -> std::sync::MutexGuard<'_, crate::channels_memory::MemChannels> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn audit_read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, crate::audit_memory::MemAudit> {
        self.audit.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn audit_write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, crate::audit_memory::MemAudit> {
        self.audit.write().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update of plain data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bumps the version and publishes the notice, under the caller's lock so notices leave in
    /// version order.
    fn bump(&self, st: &mut State, name: String, op: NoticeOp, kind: NoticeKind) -> u64 {
        st.version += 1;
        let notice = ConfigNotice {
            version: st.version,
            tenant: name,
            op,
            kind,
        };
        if let Ok(bytes) = serde_json::to_vec(&notice) {
            self.hub.publish_local(&Topic::config(), bytes);
        }
        st.version
    }

    /// Synchronous windowed counter: the per-process fallback when the shared store is down.
    pub fn incr_window_now(
        &self,
        tenant: &str,
        counter: Counter,
        window_start: u64,
        ttl_secs: u64,
    ) -> u64 {
        let now = Instant::now();
        let mut st = self.lock();
        if st.counters.len() > SWEEP_AT
            && st
                .last_sweep
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            st.last_sweep = Some(now);
            st.counters.retain(|_, cs| {
                cs.retain(|_, c| c.expires.is_none_or(|e| e > now));
                !cs.is_empty()
            });
        }
        // Saturating: an absurd ttl means "never expires", not an overflow.
        let expires = now.checked_add(Duration::from_secs(ttl_secs));
        if !st.counters.contains_key(tenant) {
            st.counters.insert(tenant.to_string(), HashMap::new());
        }
        let Some(cs) = st.counters.get_mut(tenant) else {
            return 0;
        };
        let c = cs.entry(counter).or_insert(Count {
            window: window_start,
            value: 0,
            expires,
        });
        let expired = c.expires.is_some_and(|e| e <= now);
        if expired || window_start > c.window {
            *c = Count {
                window: window_start,
                value: 0,
                expires,
            };
        }
        c.value += 1;
        c.expires = expires;
        c.value
    }

    /// Synchronous purge of a tenant's counters (the per-process fallback's reset).
    pub fn forget_tenant(&self, tenant: &str) {
        self.lock().counters.remove(tenant);
    }
}

#[async_trait]
impl ConfigStore for MemoryStore {
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
        if current.is_none() {
            st.born.insert(config.tenant_id.clone(), v);
        }
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
        st.born.remove(tenant);
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

    async fn seed_generation(&self) -> Result<Option<String>, StoreError> {
        Ok(self.lock().seed_generation.clone())
    }

    async fn set_seed_generation(&self, hash: &str) -> Result<(), StoreError> {
        self.lock().seed_generation = Some(hash.to_string());
        Ok(())
    }
}

#[async_trait]
impl RuntimeStore for MemoryStore {
    async fn incr_window(
        &self,
        tenant: &str,
        counter: Counter,
        window_start: u64,
        ttl_secs: u64,
    ) -> Result<u64, StoreError> {
        Ok(self.incr_window_now(tenant, counter, window_start, ttl_secs))
    }

    async fn incr(&self, tenant: &str, counter: Counter) -> Result<u64, StoreError> {
        Ok(self.incr_window_now(tenant, counter, 0, u64::MAX / 4))
    }

    async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        self.forget_tenant(tenant);
        Ok(())
    }

    async fn incr_caller(
        &self,
        route: &str,
        caller: &str,
        window_start: u64,
        ttl_secs: u64,
    ) -> Result<u64, StoreError> {
        // Callers share the per-tenant counter map under a name no tenant id can take (`:` is
        // not allowed in tenant ids).
        Ok(self.incr_window_now(
            &format!("caller:{route}:{caller}"),
            Counter::RateLimit,
            window_start,
            ttl_secs,
        ))
    }

    async fn try_lock(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut st = self.lock();
        match st.locks.get(name) {
            Some((h, exp)) if *exp > now && h != holder => Ok(false),
            _ => {
                st.locks.insert(
                    name.to_string(),
                    (holder.to_string(), now + Duration::from_millis(ttl_ms)),
                );
                Ok(true)
            }
        }
    }

    async fn unlock(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let mut st = self.lock();
        if st.locks.get(name).is_some_and(|(h, _)| h == holder) {
            st.locks.remove(name);
        }
        Ok(())
    }

    async fn take_token(
        &self,
        name: &str,
        burst: u32,
        refill_ms: u64,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut st = self.lock();
        let burst = u64::from(burst.max(1));
        let refill = refill_ms.max(1);
        if st.buckets.len() >= SWEEP_AT {
            // A bucket idle long enough to be full again holds nothing worth keeping.
            st.buckets
                .retain(|_, (_, at)| now_ms.saturating_sub(*at) < burst * refill);
        }
        let (tokens, at) = st.buckets.get(name).copied().unwrap_or((burst, now_ms));
        let (tokens, at) = bucket_step(tokens, at, burst, refill, now_ms);
        if tokens == 0 {
            return Ok(Some((at + refill).saturating_sub(now_ms).max(1)));
        }
        st.buckets.insert(name.to_string(), (tokens - 1, at));
        Ok(None)
    }

    async fn put_value(&self, name: &str, value: &str, ttl_ms: u64) -> Result<(), StoreError> {
        let mut st = self.lock();
        let now = Instant::now();
        if st.values.len() >= SWEEP_AT {
            st.values.retain(|_, (_, exp)| *exp > now);
        }
        st.values.insert(
            name.to_string(),
            (
                value.to_string(),
                now + Duration::from_millis(ttl_ms.max(1)),
            ),
        );
        Ok(())
    }

    async fn get_value(&self, name: &str) -> Result<Option<String>, StoreError> {
        let st = self.lock();
        Ok(st
            .values
            .get(name)
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(v, _)| v.clone()))
    }

    async fn take_value(&self, name: &str) -> Result<Option<String>, StoreError> {
        let mut st = self.lock();
        Ok(st
            .values
            .remove(name)
            .filter(|(_, exp)| *exp > Instant::now())
            .map(|(v, _)| v))
    }

    async fn delete_value(&self, name: &str) -> Result<(), StoreError> {
        self.lock().values.remove(name);
        Ok(())
    }
}

/// A token bucket brought up to `now`: whole refills added (at most to `burst`); a full bucket's
/// clock restarts now.
fn bucket_step(tokens: u64, at: u64, burst: u64, refill: u64, now: u64) -> (u64, u64) {
    let gained = now.saturating_sub(at) / refill;
    let tokens = (tokens + gained).min(burst);
    let at = if tokens >= burst {
        now
    } else {
        at + gained * refill
    };
    (tokens, at)
}

#[async_trait]
impl StatsStore for MemoryStore {
    async fn flush_stats(&self, batch: &StatsBatch) -> Result<(), StoreError> {
        let mut st = self.lock();
        for (tenant, s) in &batch.tenants {
            if !st.tenants.contains_key(tenant) {
                continue; // deleted: its counters went with it
            }
            let born = st.born.get(tenant).copied().unwrap_or(0);
            if s.served_version > 0 && born > s.served_version {
                continue; // served by an earlier incarnation of this id
            }
            let (counted_for, t) = st.stats.entry(tenant.clone()).or_default();
            if *counted_for != born {
                // Totals of an earlier incarnation whose purge was missed: start afresh.
                *counted_for = born;
                *t = StatsTotals::default();
            }
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
        let st = self.lock();
        let Some(born) = st
            .tenants
            .contains_key(tenant)
            .then(|| st.born.get(tenant).copied().unwrap_or(0))
        else {
            return Ok(StatsTotals::default());
        };
        Ok(st
            .stats
            .get(tenant)
            .filter(|(counted_for, _)| *counted_for == born)
            .map(|(_, t)| t.clone())
            .unwrap_or_default())
    }

    async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        self.lock().stats.remove(tenant);
        Ok(())
    }
}

impl MemoryStore {
    /// A live session (an expired one is removed on sight).
    fn live_session<'a>(
        st: &'a mut State,
        tenant: &str,
        id: &str,
        now: Instant,
    ) -> Option<&'a mut MemSession> {
        let sessions = st.sessions.get_mut(tenant)?;
        if sessions.get(id).is_some_and(|s| s.expires <= now) {
            sessions.remove(id);
        }
        sessions.get_mut(id)
    }

    fn signal(&self, tenant: &str, id: &str, signal: SessionSignal) {
        if let Ok(topic) = session_topic(tenant, id) {
            self.hub.publish_local(&topic, signal.encode());
        }
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create_session(
        &self,
        tenant: &str,
        id: &str,
        doc: &SessionDoc,
        tools: &str,
        idle_ms: u64,
        max: usize,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut st = self.lock();
        let sessions = st.sessions.entry(tenant.to_string()).or_default();
        // Expired sessions are dropped on sight, and all at once when the tenant reaches its cap
        // (so a create costs a scan only then).
        if sessions.len() >= max {
            sessions.retain(|_, s| s.expires > now);
        }
        if sessions.len() >= max && !sessions.contains_key(id) {
            return Ok(false);
        }
        let idle = Duration::from_millis(idle_ms);
        sessions.insert(
            id.to_string(),
            MemSession {
                doc: doc.clone(),
                idle,
                touched: now,
                expires: now + idle,
                seq: 0,
                tools: tools.to_string(),
                holder: String::new(),
                log: Default::default(),
            },
        );
        Ok(true)
    }

    async fn touch_session(&self, tenant: &str, id: &str) -> Result<Option<Session>, StoreError> {
        let now = Instant::now();
        let mut st = self.lock();
        let Some(s) = Self::live_session(&mut st, tenant, id, now) else {
            return Ok(None);
        };
        if now.duration_since(s.touched) > s.idle / 10 {
            s.touched = now;
            s.expires = now + s.idle;
        }
        Ok(Some(Session {
            doc: s.doc.clone(),
            seq: s.seq,
            tools: s.tools.clone(),
            holder: s.holder.clone(),
        }))
    }

    async fn set_session_version(
        &self,
        tenant: &str,
        id: &str,
        version: &str,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut st = self.lock();
        let Some(s) = Self::live_session(&mut st, tenant, id, now) else {
            return Ok(false);
        };
        s.doc.protocol_version = Some(version.to_string());
        Ok(true)
    }

    async fn claim_stream(&self, tenant: &str, id: &str, holder: &str) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut st = self.lock();
        let Some(s) = Self::live_session(&mut st, tenant, id, now) else {
            return Ok(false);
        };
        s.holder = holder.to_string();
        self.signal(tenant, id, SessionSignal::Claimed(holder.to_string()));
        Ok(true)
    }

    async fn end_session(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut st = self.lock();
        let existed = Self::live_session(&mut st, tenant, id, now).is_some();
        if let Some(sessions) = st.sessions.get_mut(tenant) {
            sessions.remove(id);
        }
        self.signal(tenant, id, SessionSignal::End);
        Ok(existed)
    }

    async fn append_event(
        &self,
        tenant: &str,
        id: &str,
        data: &str,
        keep: usize,
        tools: Option<&str>,
    ) -> Result<Appended, StoreError> {
        let now = Instant::now();
        let mut st = self.lock();
        let Some(s) = Self::live_session(&mut st, tenant, id, now) else {
            return Ok(Appended::NoSession);
        };
        if let Some(t) = tools {
            if s.tools == t {
                return Ok(Appended::AlreadyTold);
            }
            s.tools = t.to_string();
        }
        s.seq += 1;
        let event = SessionEvent {
            seq: s.seq,
            data: data.to_string(),
        };
        s.log.push_back(event.clone());
        while s.log.len() > keep.max(1) {
            s.log.pop_front();
        }
        let seq = s.seq;
        // Under the lock, so signals leave in sequence order.
        self.signal(tenant, id, SessionSignal::for_event(event));
        Ok(Appended::Event(seq))
    }

    async fn events_after(
        &self,
        tenant: &str,
        id: &str,
        after: u64,
    ) -> Result<EventsRead, StoreError> {
        let now = Instant::now();
        let mut st = self.lock();
        let Some(s) = Self::live_session(&mut st, tenant, id, now) else {
            return Ok(EventsRead::default());
        };
        let first = s.log.front().map_or(s.seq + 1, |e| e.seq);
        Ok(EventsRead {
            exists: true,
            events: s.log.iter().filter(|e| e.seq > after).cloned().collect(),
            truncated: after + 1 < first && after < s.seq,
            last: s.seq,
            holder: s.holder.clone(),
        })
    }

    async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        self.lock().sessions.remove(tenant);
        Ok(())
    }
}

impl MemoryStore {
    /// A kept call (an expired one is removed on sight).
    fn live_call<'a>(
        st: &'a mut State,
        tenant: &str,
        call_id: &str,
        now: Instant,
    ) -> Option<&'a mut MemCall> {
        let calls = st.calls.get_mut(tenant)?;
        if calls.get(call_id).is_some_and(|c| c.expires <= now) {
            calls.remove(call_id);
        }
        calls.get_mut(call_id)
    }

    /// Drops expired calls and request ids, at most once a second and only once there are many.
    fn sweep_calls(st: &mut State, now: Instant) {
        let many = st.call_requests.len() > 10_000 || st.calls.values().any(|m| m.len() > 10_000);
        if !many
            || st
                .last_call_sweep
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        st.last_call_sweep = Some(now);
        for m in st.calls.values_mut() {
            m.retain(|_, c| c.expires > now);
        }
        let State {
            call_requests,
            calls,
            ..
        } = st;
        call_requests.retain(|(t, _, _), id| calls.get(t).is_some_and(|m| m.contains_key(id)));
    }

    /// Appends to a kept call, ending it on a terminal event; under the caller's lock, so events
    /// leave in order.
    #[allow(clippy::too_many_arguments)]
    fn append_locked(
        &self,
        st: &mut State,
        tenant: &str,
        call_id: &str,
        owner: Option<&str>,
        kind: EventKind,
        data: &str,
        result: Option<&str>,
        error: Option<&str>,
        now: Instant,
    ) -> CallAppended {
        let Some(c) = Self::live_call(st, tenant, call_id, now) else {
            return CallAppended::NoCall;
        };
        if c.status.terminal() {
            return CallAppended::Ended(c.status);
        }
        if owner.is_some_and(|o| o != c.owner) {
            return CallAppended::Lost;
        }
        let event = CallEvent {
            seq: c.events.len() as u64 + 1,
            kind,
            data: data.to_string(),
        };
        if let Some(status) = kind.status() {
            c.status = status;
            c.result = result.map(String::from);
            c.error = error.map(String::from);
        }
        c.updated_ms = crate::now_ms();
        c.expires = now + Duration::from_millis(CALL_TTL_MS);
        c.events.push(event.clone());
        if let Ok(topic) = call_topic(tenant, call_id) {
            self.hub.publish_local(&topic, event.encode());
        }
        CallAppended::Event(event.seq)
    }

    /// Takes or renews a lease: only the holder's own, or an expired one when `take`.
    fn lease_locked(
        st: &mut State,
        tenant: &str,
        call_id: &str,
        owner: &str,
        lease_ms: u64,
        take: bool,
        now: Instant,
    ) -> Lease {
        let Some(c) = Self::live_call(st, tenant, call_id, now) else {
            return Lease::NoCall;
        };
        if c.status.terminal() {
            return Lease::Ended(c.status);
        }
        let now_ms = crate::now_ms();
        let expired = c.lease_until_ms < now_ms;
        if c.owner != owner && !(take && expired) {
            return Lease::Lost;
        }
        c.owner = owner.to_string();
        c.lease_until_ms = now_ms + lease_ms;
        if take {
            c.status = CallStatus::Running;
            c.updated_ms = now_ms;
        }
        Lease::Held
    }
}

#[async_trait]
impl CallStore for MemoryStore {
    async fn create_call(
        &self,
        doc: &CallDoc,
        owner: &str,
        lease_ms: u64,
    ) -> Result<Created, StoreError> {
        if !valid_call_id(&doc.call_id) {
            return Err(StoreError::Corrupt(format!(
                "invalid call id {:?}",
                doc.call_id
            )));
        }
        let now = Instant::now();
        let mut st = self.lock();
        Self::sweep_calls(&mut st, now);
        if let Some(rid) = &doc.request_id {
            let key = (doc.tenant.clone(), doc.caller.clone(), rid.clone());
            if let Some(existing) = st.call_requests.get(&key).cloned()
                && let Some(c) = Self::live_call(&mut st, &doc.tenant, &existing, now)
            {
                return Ok(Created::Existing(c.doc.clone()));
            }
            st.call_requests.insert(key, doc.call_id.clone());
        }
        let now_ms = crate::now_ms();
        st.calls.entry(doc.tenant.clone()).or_default().insert(
            doc.call_id.clone(),
            MemCall {
                doc: doc.clone(),
                status: CallStatus::Started,
                updated_ms: now_ms,
                expires: now + Duration::from_millis(CALL_TTL_MS),
                result: None,
                error: None,
                owner: owner.to_string(),
                lease_until_ms: now_ms + lease_ms,
                events: Vec::new(),
            },
        );
        Ok(Created::New)
    }

    async fn get_call(&self, tenant: &str, call_id: &str) -> Result<Option<Call>, StoreError> {
        let now = Instant::now();
        let mut st = self.lock();
        Ok(
            Self::live_call(&mut st, tenant, call_id, now).map(|c| Call {
                doc: c.doc.clone(),
                status: c.status,
                updated_ms: c.updated_ms,
                seq: c.events.len() as u64,
                result: c.result.clone(),
                error: c.error.clone(),
                lease_until_ms: c.lease_until_ms,
            }),
        )
    }

    async fn start_call(
        &self,
        tenant: &str,
        call_id: &str,
        owner: &str,
        lease_ms: u64,
    ) -> Result<Lease, StoreError> {
        let now = Instant::now();
        let mut st = self.lock();
        Ok(Self::lease_locked(
            &mut st, tenant, call_id, owner, lease_ms, true, now,
        ))
    }

    async fn renew_call(
        &self,
        tenant: &str,
        call_id: &str,
        owner: &str,
        lease_ms: u64,
    ) -> Result<Lease, StoreError> {
        let now = Instant::now();
        let mut st = self.lock();
        Ok(Self::lease_locked(
            &mut st, tenant, call_id, owner, lease_ms, false, now,
        ))
    }

    async fn append_call_event(
        &self,
        tenant: &str,
        call_id: &str,
        owner: Option<&str>,
        kind: EventKind,
        data: &str,
        result: Option<&str>,
        error: Option<&str>,
    ) -> Result<CallAppended, StoreError> {
        let now = Instant::now();
        let mut st = self.lock();
        Ok(self.append_locked(
            &mut st, tenant, call_id, owner, kind, data, result, error, now,
        ))
    }

    async fn finish_if_lost(
        &self,
        tenant: &str,
        call_id: &str,
        data: &str,
    ) -> Result<bool, StoreError> {
        let now = Instant::now();
        let now_ms = crate::now_ms();
        let mut st = self.lock();
        let lost = Self::live_call(&mut st, tenant, call_id, now)
            .is_some_and(|c| !c.status.terminal() && c.lease_until_ms < now_ms);
        if !lost {
            return Ok(false);
        }
        let done = self.append_locked(
            &mut st,
            tenant,
            call_id,
            None,
            EventKind::Error,
            data,
            None,
            Some("WORKER_LOST"),
            now,
        );
        Ok(matches!(done, CallAppended::Event(_)))
    }

    async fn call_events(
        &self,
        tenant: &str,
        call_id: &str,
        after: u64,
    ) -> Result<Vec<CallEvent>, StoreError> {
        let now = Instant::now();
        let mut st = self.lock();
        Ok(Self::live_call(&mut st, tenant, call_id, now)
            .map(|c| {
                c.events
                    .iter()
                    .filter(|e| e.seq > after)
                    .take(EVENTS_PAGE)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn caller_calls(&self, tenant: &str, caller: &str) -> Result<Vec<String>, StoreError> {
        let now = Instant::now();
        let st = self.lock();
        let mut calls: Vec<(u64, String)> = st
            .calls
            .get(tenant)
            .map(|m| {
                m.values()
                    .filter(|c| c.doc.caller == caller && c.expires > now)
                    .map(|c| (c.doc.created_ms, c.doc.call_id.clone()))
                    .collect()
            })
            .unwrap_or_default();
        calls.sort();
        Ok(calls.into_iter().map(|(_, id)| id).collect())
    }

    async fn caller_live_calls(&self, tenant: &str, caller: &str) -> Result<usize, StoreError> {
        let now = Instant::now();
        let st = self.lock();
        Ok(st.calls.get(tenant).map_or(0, |m| {
            m.values()
                .filter(|c| c.doc.caller == caller && c.expires > now && !c.status.terminal())
                .count()
        }))
    }

    async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        let mut st = self.lock();
        st.calls.remove(tenant);
        st.call_requests.retain(|(t, _, _), _| t != tenant);
        Ok(())
    }
}
