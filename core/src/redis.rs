//! Redis backend of every store trait: shared mode. Every process reads and writes the same keys
//! (`understudy_crds::keys`), so a client may land on any process for any request.
//!
//! Configuration writes are Lua scripts (document + version + index + notice in one atomic step);
//! a windowed counter is one script on a hash with a fixed name, so a tenant's counters are
//! deleted by name; stats flushes skip tenants whose document is gone or was created again since
//! the counted requests were served (`us:cfg:born`). Commands time out quickly so a dead Redis
//! never stalls a request for long; callers decide the fallback.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use understudy_crds::keys;
use understudy_crds::model::{ApiKeyRecord, TenantConfig};

use crate::calls::{
    Appended as CallAppended, CALL_TTL_MS, Call, CallDoc, CallEvent, CallStatus, CallStore,
    Created, EVENTS_PAGE, EventKind, Lease, call_topic, valid_call_id,
};
use crate::sessions::{
    Appended, EventsRead, SIGNAL_DATA_MAX, Session, SessionDoc, SessionEvent, SessionStore,
    session_topic,
};
use crate::store::{
    ConfigStore, Counter, Expect, FullConfig, RuntimeStore, StatsBatch, StatsStore, StatsTotals,
    StoreError,
};

/// The Redis backend.
pub struct RedisStore {
    client: redis::Client,
    conn: ConnectionManager,
    /// The audit log's own connection (its queries never delay the request path's commands).
    audit_conn: ConnectionManager,
    put_script: Script,
    del_script: Script,
    load_script: Script,
    unlock_script: Script,
    lock_script: Script,
    window_script: Script,
    put_key_script: Script,
    del_key_script: Script,
    session_create: Script,
    session_touch: Script,
    session_end: Script,
    session_claim: Script,
    session_append: Script,
    call_create: Script,
    call_lease: Script,
    call_append: Script,
}

pub(crate) fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Writes a tenant's document (KEYS: version, index, document, born; ARGV: tenant, document,
/// channel, expectation). A document written where none was starts a new incarnation.
const PUT_LUA: &str = r#"
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if ARGV[4] == 'absent' then
  if cur then return -1 end
elseif ARGV[4] ~= 'any' then
  if cur ~= ARGV[4] then return -1 end
end
local v = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[3], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], v)
if not cur then redis.call('HSET', KEYS[4], ARGV[1], v) end
redis.call('PUBLISH', ARGV[3], '{"v":' .. v .. ',"t":"' .. ARGV[1] .. '","op":"put"}')
return v
"#;

/// Deletes a tenant's document and ends its incarnation (KEYS: version, index, document, born).
const DEL_LUA: &str = r#"
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur then return -1 end
if ARGV[3] ~= 'any' and cur ~= ARGV[3] then return -1 end
local v = redis.call('INCR', KEYS[1])
redis.call('DEL', KEYS[3])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('PUBLISH', ARGV[2], '{"v":' .. v .. ',"t":"' .. ARGV[1] .. '","op":"del"}')
return v
"#;

const LOAD_LUA: &str = r#"
local out = {redis.call('GET', KEYS[1]) or '0', redis.call('GET', KEYS[3]) or ''}
local keys = redis.call('HVALS', KEYS[4])
out[3] = tostring(#keys)
for i = 1, #keys do out[#out + 1] = keys[i] end
local idx = redis.call('HGETALL', KEYS[2])
for i = 1, #idx, 2 do
  local doc = redis.call('GET', ARGV[1] .. idx[i])
  if doc then
    out[#out + 1] = idx[i + 1]
    out[#out + 1] = doc
  end
end
return out
"#;

const PUT_KEY_LUA: &str = r#"
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return -1 end
local v = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[3], '{"v":' .. v .. ',"t":"' .. ARGV[1] .. '","op":"put","k":"key"}')
return v
"#;

const DEL_KEY_LUA: &str = r#"
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur then return -1 end
if ARGV[3] ~= '' and cjson.decode(cur)['hash'] ~= ARGV[3] then return -1 end
redis.call('HDEL', KEYS[2], ARGV[1])
local v = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[2], '{"v":' .. v .. ',"t":"' .. ARGV[1] .. '","op":"del","k":"key"}')
return v
"#;

const INIT_EPOCH_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1])
end
return redis.call('GET', KEYS[1])
"#;

const RAISE_LUA: &str = r#"
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) return 1 end
return 0
"#;

/// Takes a lock if free, or extends it if `holder` holds it.
/// Takes a token (KEYS: bucket; ARGV: burst, refill ms, now ms): -1 when taken, else the ms
/// until the next token. Whole refills are added; a full bucket's clock restarts now.
const TAKE_TOKEN_LUA: &str = r#"
local burst, refill, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
local gained = math.floor(math.max(0, now - at) / refill)
tokens = math.min(burst, tokens + gained)
if tokens >= burst then at = now else at = at + gained * refill end
if tokens < 1 then return math.max(1, at + refill - now) end
redis.call('HSET', KEYS[1], 't', tokens - 1, 'at', at)
redis.call('PEXPIRE', KEYS[1], burst * refill + 1000)
return -1
"#;

const LOCK_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#;

/// A fixed-window counter on a hash `{w, n}`: a later window restarts the count (an earlier one,
/// from a process whose clock lags, counts into the current window).
const WINDOW_LUA: &str = r#"
local w = tonumber(redis.call('HGET', KEYS[1], 'w') or '-1')
local now = tonumber(ARGV[1])
if now > w then
  redis.call('HSET', KEYS[1], 'w', ARGV[1], 'n', 0)
end
local n = redis.call('HINCRBY', KEYS[1], 'n', 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return n
"#;

/// Adds one tenant's counters, only while its document exists and only if its current
/// incarnation served them (KEYS: index, born, tenant stats, scenario stats; ARGV: tenant,
/// served version (0: unknown), requests, unmatched, last_request_ms, then id/hits pairs). The
/// totals are tagged with the incarnation they count for (`born`); totals tagged with another one
/// (a purge that was missed) are replaced. Untagged totals (written before the tag existed) are
/// adopted.
const FLUSH_LUA: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local born = redis.call('HGET', KEYS[2], ARGV[1]) or '0'
local served = tonumber(ARGV[2])
if served > 0 and tonumber(born) > served then return 0 end
local tag = redis.call('HGET', KEYS[3], 'born')
if tag ~= born then
  if tag then redis.call('DEL', KEYS[3], KEYS[4]) end
  redis.call('HSET', KEYS[3], 'born', born)
end
redis.call('HINCRBY', KEYS[3], 'requests', ARGV[3])
redis.call('HINCRBY', KEYS[3], 'unmatched', ARGV[4])
local last = tonumber(redis.call('HGET', KEYS[3], 'last_request_ms') or '0')
if tonumber(ARGV[5]) > last then redis.call('HSET', KEYS[3], 'last_request_ms', ARGV[5]) end
for i = 6, #ARGV, 2 do redis.call('HINCRBY', KEYS[4], ARGV[i], ARGV[i + 1]) end
return 1
"#;

const UNLOCK_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

/// Creates a session unless the tenant holds `max` live ones (KEYS: record, index; ARGV: doc,
/// now ms, idle ms, id, tools, max). The index (id → expiry) loses its expired entries first and
/// lives as long as its longest-lived session. Returns 1, or 0 when full.
const SESSION_CREATE_LUA: &str = r#"
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) and not redis.call('ZSCORE', KEYS[2], ARGV[4]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'doc', ARGV[1], 't', ARGV[2], 'seq', 0, 'tools', ARGV[5], 'idle', ARGV[3], 'holder', '')
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[3]), ARGV[4])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[3]) then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return 1
"#;

/// Reads a session and refreshes its expiry (its own idle time) at most every tenth of it (KEYS:
/// record, log, index; ARGV: now ms, id). Returns {doc, seq, tools, holder} or nil.
const SESSION_TOUCH_LUA: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'doc', 't', 'seq', 'tools', 'idle', 'holder')
if not r[1] then return false end
local now = tonumber(ARGV[1])
local idle = tonumber(r[5] or '0')
if idle > 0 and now - tonumber(r[2] or '0') > idle / 10 then
  redis.call('HSET', KEYS[1], 't', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], idle)
  redis.call('PEXPIRE', KEYS[2], idle)
  redis.call('ZADD', KEYS[3], now + idle, ARGV[2])
  if redis.call('PTTL', KEYS[3]) < idle then redis.call('PEXPIRE', KEYS[3], idle) end
end
return {r[1], r[3] or '0', r[4] or '', r[6] or ''}
"#;

/// Ends a session (KEYS: record, log, index; ARGV: id, topic).
const SESSION_END_LUA: &str = r#"
local n = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'x')
return n
"#;

/// Makes a stream the session's holder (KEYS: record; ARGV: holder, topic).
const SESSION_CLAIM_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'holder', ARGV[1])
redis.call('PUBLISH', ARGV[2], 'c' .. ARGV[1])
return 1
"#;

/// Appends an event and rings the doorbell (KEYS: record, log; ARGV: data, keep, topic, tools
/// or '', largest data carried by the doorbell). Returns the sequence, -1 when the session does
/// not exist, -2 when it was already told about these tools.
const SESSION_APPEND_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if ARGV[4] ~= '' then
  if redis.call('HGET', KEYS[1], 'tools') == ARGV[4] then return -2 end
  redis.call('HSET', KEYS[1], 'tools', ARGV[4])
end
local n = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('RPUSH', KEYS[2], n .. '\n' .. ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
if #ARGV[1] <= tonumber(ARGV[5]) then
  redis.call('PUBLISH', ARGV[3], 'e' .. n .. '\n' .. ARGV[1])
else
  redis.call('PUBLISH', ARGV[3], 'n' .. n)
end
return n
"#;

/// The store's clock in ms (call leases are judged by it, never by a process's clock).
const NOW_LUA: &str = "local function now_ms() local t = redis.call('TIME') return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end\n";

/// Creates a call held by its creator's lease, unless the caller's request id names a kept one
/// (KEYS: call, request key (the call key again when there is none), caller index, tenant
/// index, caller's live set; ARGV: id, doc, ttl ms, has request id, owner, lease ms, the call
/// key prefix). Returns {1} or {0, existing id}.
const CALL_CREATE_LUA: &str = r#"
local now = now_ms()
if ARGV[4] == '1' then
  local existing = redis.call('GET', KEYS[2])
  if existing and redis.call('EXISTS', ARGV[7] .. existing) == 1 then return {0, existing} end
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
end
local rkey = ''
if ARGV[4] == '1' then rkey = KEYS[2] end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'doc', ARGV[2], 'status', 'started', 'updated', now, 'seq', 0,
  'owner', ARGV[5], 'lease', now + tonumber(ARGV[6]), 'rkey', rkey, 'cidx', KEYS[3],
  'lidx', KEYS[5])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
for i = 3, 5 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - tonumber(ARGV[3]))
  redis.call('ZADD', KEYS[i], now, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[3])
end
return {1}
"#;

/// Takes (ARGV[3] = '1': from its own or an expired lease) or renews a worker's lease (KEYS:
/// call; ARGV: owner, lease ms, take). Returns {'held'}, {'lost'}, {'ended', status} or
/// {'nocall'}.
const CALL_LEASE_LUA: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'status', 'owner', 'lease')
local st = r[1]
if not st then return {'nocall'} end
if st == 'finished' or st == 'error' or st == 'cancelled' then return {'ended', st} end
local now = now_ms()
local expired = tonumber(r[3] or '0') < now
if r[2] ~= ARGV[1] and not (ARGV[3] == '1' and expired) then return {'lost'} end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'lease', now + tonumber(ARGV[2]))
if ARGV[3] == '1' then redis.call('HSET', KEYS[1], 'status', 'running', 'updated', now) end
return {'held'}
"#;

/// Appends a call event and rings the doorbell (KEYS: call, events, tenant index; ARGV: kind,
/// data, terminal status or '', has result, result, error or '', topic, ttl ms, owner or '',
/// only-if-lost, id). The call's request key and caller index are kept as long as the call.
/// Returns {n}, {-1} (no call), {-2, status} (ended), {-3} (not lost) or {-4} (another owner).
const CALL_APPEND_LUA: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'status', 'lease', 'owner', 'rkey', 'cidx', 'lidx')
local st = r[1]
if not st then return {-1} end
if st == 'finished' or st == 'error' or st == 'cancelled' then return {-2, st} end
local now = now_ms()
if ARGV[10] == '1' and tonumber(r[2] or '0') >= now then return {-3} end
if ARGV[9] ~= '' and r[3] ~= ARGV[9] then return {-4} end
local n = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('RPUSH', KEYS[2], n .. '\n' .. ARGV[1] .. '\n' .. ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'status', ARGV[3])
  if ARGV[4] == '1' then redis.call('HSET', KEYS[1], 'result', ARGV[5]) end
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[6]) end
  if r[6] and r[6] ~= '' then redis.call('ZREM', r[6], ARGV[11]) end
end
redis.call('HSET', KEYS[1], 'updated', now)
local ttl = tonumber(ARGV[8])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
if r[4] and r[4] ~= '' then redis.call('PEXPIRE', r[4], ttl) end
for _, idx in ipairs({KEYS[3], r[5]}) do
  if idx and idx ~= '' then
    redis.call('ZADD', idx, now, ARGV[11])
    redis.call('PEXPIRE', idx, ttl)
  end
end
redis.call('PUBLISH', ARGV[7], n .. '\n' .. ARGV[1] .. '\n' .. ARGV[2])
return {n}
"#;

/// Client-chosen text as a key part: lower-case hex, so it can hold nothing that means
/// something in a key name.
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

impl RedisStore {
    /// Connects lazily: the gateway starts (not ready) while Redis is down and connects as soon
    /// as it can. Fails only on an invalid URL.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        // rediss:// uses rustls; one process-wide crypto provider (ring, as kube's client uses).
        // An error only means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid Redis URL: {e}")))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(1000)))
            .set_response_timeout(Some(Duration::from_millis(1000)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(unavailable)?;
        let audit_config = config.set_response_timeout(Some(Duration::from_secs(10)));
        let audit_conn = ConnectionManager::new_lazy_with_config(client.clone(), audit_config)
            .map_err(unavailable)?;
        Ok(RedisStore {
            client,
            conn,
            audit_conn,
            put_script: Script::new(PUT_LUA),
            del_script: Script::new(DEL_LUA),
            load_script: Script::new(LOAD_LUA),
            unlock_script: Script::new(UNLOCK_LUA),
            lock_script: Script::new(LOCK_LUA),
            window_script: Script::new(WINDOW_LUA),
            put_key_script: Script::new(PUT_KEY_LUA),
            del_key_script: Script::new(DEL_KEY_LUA),
            session_create: Script::new(SESSION_CREATE_LUA),
            session_touch: Script::new(SESSION_TOUCH_LUA),
            session_end: Script::new(SESSION_END_LUA),
            session_claim: Script::new(SESSION_CLAIM_LUA),
            call_create: Self::with_now(CALL_CREATE_LUA),
            call_lease: Self::with_now(CALL_LEASE_LUA),
            call_append: Self::with_now(CALL_APPEND_LUA),
            session_append: Script::new(SESSION_APPEND_LUA),
        })
    }

    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub(crate) fn audit_conn(&self) -> ConnectionManager {
        self.audit_conn.clone()
    }

    /// The client (the hub opens its subscriber connection from it).
    pub fn client(&self) -> redis::Client {
        self.client.clone()
    }

    /// The shared multiplexed connection (the hub publishes through it).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

fn parse_doc(doc: &str) -> Result<TenantConfig, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("tenant document: {e}")))
}

#[async_trait]
impl ConfigStore for RedisStore {
    async fn load_all(&self) -> Result<FullConfig, StoreError> {
        let out: Vec<String> = self
            .load_script
            .key(keys::CONFIG_VERSION)
            .key(keys::CONFIG_INDEX)
            .key(keys::EPOCH)
            .key(keys::API_KEYS)
            .arg(keys::tenant_doc(""))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut it = out.into_iter();
        let version = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        let epoch = it.next().filter(|e| !e.is_empty());
        let key_count: usize = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let mut api_keys = Vec::with_capacity(key_count);
        for raw in it.by_ref().take(key_count) {
            match serde_json::from_str(&raw) {
                Ok(k) => api_keys.push(k),
                Err(e) => tracing::warn!(error = %e, "skipping unreadable API key record"),
            }
        }
        let mut tenants = Vec::new();
        while let (Some(v), Some(doc)) = (it.next(), it.next()) {
            match parse_doc(&doc) {
                Ok(cfg) => tenants.push((cfg, v.parse().unwrap_or(0))),
                // One unreadable document must not hide every other tenant.
                Err(e) => tracing::warn!(error = %e, "skipping unreadable tenant document"),
            }
        }
        Ok(FullConfig {
            version,
            epoch,
            tenants,
            keys: api_keys,
        })
    }

    async fn config_version(&self) -> Result<u64, StoreError> {
        let v: Option<u64> = self
            .conn()
            .get(keys::CONFIG_VERSION)
            .await
            .map_err(unavailable)?;
        Ok(v.unwrap_or(0))
    }

    async fn get_tenant(&self, tenant: &str) -> Result<Option<(TenantConfig, u64)>, StoreError> {
        // MULTI/EXEC: the document and its version come from the same moment.
        let (doc, version): (Option<String>, Option<u64>) = redis::pipe()
            .atomic()
            .get(keys::tenant_doc(tenant))
            .hget(keys::CONFIG_INDEX, tenant)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match (doc, version) {
            (Some(doc), Some(v)) => Ok(Some((parse_doc(&doc)?, v))),
            _ => Ok(None),
        }
    }

    async fn put_tenant_checked(
        &self,
        config: &TenantConfig,
        expect: Expect,
    ) -> Result<Option<u64>, StoreError> {
        let doc = serde_json::to_string(config).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let expect = match expect {
            Expect::Any => "any".to_string(),
            Expect::Absent => "absent".to_string(),
            Expect::Version(v) => v.to_string(),
        };
        let v: i64 = self
            .put_script
            .key(keys::CONFIG_VERSION)
            .key(keys::CONFIG_INDEX)
            .key(keys::tenant_doc(&config.tenant_id))
            .key(keys::CONFIG_BORN)
            .arg(&config.tenant_id)
            .arg(doc)
            .arg(keys::CONFIG_CHANNEL)
            .arg(expect)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((v >= 0).then_some(v as u64))
    }

    async fn put_key(&self, key: &ApiKeyRecord) -> Result<Option<u64>, StoreError> {
        let doc = serde_json::to_string(key).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let v: i64 = self
            .put_key_script
            .key(keys::CONFIG_VERSION)
            .key(keys::API_KEYS)
            .arg(&key.name)
            .arg(doc)
            .arg(keys::CONFIG_CHANNEL)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((v >= 0).then_some(v as u64))
    }

    async fn get_key(&self, name: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let raw: Option<String> = self
            .conn()
            .hget(keys::API_KEYS, name)
            .await
            .map_err(unavailable)?;
        raw.map(|r| {
            serde_json::from_str(&r)
                .map_err(|e| StoreError::Corrupt(format!("API key record: {e}")))
        })
        .transpose()
    }

    async fn delete_key_checked(
        &self,
        name: &str,
        expected_hash: Option<&str>,
    ) -> Result<Option<u64>, StoreError> {
        let v: i64 = self
            .del_key_script
            .key(keys::CONFIG_VERSION)
            .key(keys::API_KEYS)
            .arg(name)
            .arg(keys::CONFIG_CHANNEL)
            .arg(expected_hash.unwrap_or(""))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((v >= 0).then_some(v as u64))
    }

    async fn delete_tenant_checked(
        &self,
        tenant: &str,
        expect: Expect,
    ) -> Result<Option<u64>, StoreError> {
        let expect = match expect {
            Expect::Any => "any".to_string(),
            Expect::Absent => return Ok(None),
            Expect::Version(v) => v.to_string(),
        };
        let v: i64 = self
            .del_script
            .key(keys::CONFIG_VERSION)
            .key(keys::CONFIG_INDEX)
            .key(keys::tenant_doc(tenant))
            .key(keys::CONFIG_BORN)
            .arg(tenant)
            .arg(keys::CONFIG_CHANNEL)
            .arg(expect)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((v >= 0).then_some(v as u64))
    }

    async fn epoch(&self) -> Result<Option<String>, StoreError> {
        self.conn().get(keys::EPOCH).await.map_err(unavailable)
    }

    async fn set_epoch(&self, epoch: &str) -> Result<(), StoreError> {
        self.conn()
            .set(keys::EPOCH, epoch)
            .await
            .map_err(unavailable)
    }

    async fn init_epoch(&self, epoch: &str) -> Result<Option<String>, StoreError> {
        Script::new(INIT_EPOCH_LUA)
            .key(keys::EPOCH)
            .key(keys::CONFIG_VERSION)
            .arg(epoch)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn raise_version(&self, floor: u64) -> Result<(), StoreError> {
        let _: i64 = Script::new(RAISE_LUA)
            .key(keys::CONFIG_VERSION)
            .arg(floor)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn instance_id(&self) -> Result<String, StoreError> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        info.lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .map(|s| s.trim().to_string())
            .ok_or_else(|| StoreError::Corrupt("INFO server has no run_id".into()))
    }

    async fn seed_generation(&self) -> Result<Option<String>, StoreError> {
        self.conn()
            .get(keys::SEED_GENERATION)
            .await
            .map_err(unavailable)
    }

    async fn set_seed_generation(&self, hash: &str) -> Result<(), StoreError> {
        self.conn()
            .set(keys::SEED_GENERATION, hash)
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl RuntimeStore for RedisStore {
    async fn incr_window(
        &self,
        tenant: &str,
        counter: Counter,
        window_start: u64,
        ttl_secs: u64,
    ) -> Result<u64, StoreError> {
        self.window_script
            .key(keys::runtime_counter(tenant, counter.as_str()))
            .arg(window_start)
            .arg(ttl_secs.clamp(1, i64::MAX as u64 / 2))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn incr(&self, tenant: &str, counter: Counter) -> Result<u64, StoreError> {
        self.conn()
            .hincr(keys::runtime_counter(tenant, counter.as_str()), "n", 1)
            .await
            .map_err(unavailable)
    }

    async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        let names: Vec<String> = Counter::ALL
            .iter()
            .map(|c| keys::runtime_counter(tenant, c.as_str()))
            .collect();
        self.conn().del::<_, ()>(names).await.map_err(unavailable)
    }

    async fn incr_caller(
        &self,
        route: &str,
        caller: &str,
        window_start: u64,
        ttl_secs: u64,
    ) -> Result<u64, StoreError> {
        self.window_script
            .key(keys::caller_counter(route, caller))
            .arg(window_start)
            .arg(ttl_secs.clamp(1, i64::MAX as u64 / 2))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn try_lock(&self, name: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let ok: i64 = self
            .lock_script
            .key(keys::lock(name))
            .arg(holder)
            .arg(ttl_ms.max(1))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(ok == 1)
    }

    async fn unlock(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .unlock_script
            .key(keys::lock(name))
            .arg(holder)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn take_token(
        &self,
        name: &str,
        burst: u32,
        refill_ms: u64,
        now_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        static SCRIPT: std::sync::LazyLock<Script> =
            std::sync::LazyLock::new(|| Script::new(TAKE_TOKEN_LUA));
        let wait: i64 = SCRIPT
            .key(keys::token_bucket(name))
            .arg(burst.max(1))
            .arg(refill_ms.max(1))
            .arg(now_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((wait >= 0).then_some(wait as u64))
    }

    async fn put_value(&self, name: &str, value: &str, ttl_ms: u64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        redis::cmd("SET")
            .arg(keys::value(name))
            .arg(value)
            .arg("PX")
            .arg(ttl_ms.max(1))
            .query_async::<()>(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn get_value(&self, name: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn();
        conn.get(keys::value(name)).await.map_err(unavailable)
    }

    async fn take_value(&self, name: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn();
        redis::cmd("GETDEL")
            .arg(keys::value(name))
            .query_async(&mut conn)
            .await
            .map_err(unavailable)
    }

    async fn delete_value(&self, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        conn.del::<_, ()>(keys::value(name))
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl StatsStore for RedisStore {
    async fn flush_stats(&self, batch: &StatsBatch) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for (tenant, s) in &batch.tenants {
            let mut eval = redis::cmd("EVAL");
            eval.arg(FLUSH_LUA)
                .arg(4)
                .arg(keys::CONFIG_INDEX)
                .arg(keys::CONFIG_BORN)
                .arg(keys::tenant_stats(tenant))
                .arg(keys::scenario_stats(tenant))
                .arg(tenant)
                .arg(s.served_version)
                .arg(s.requests)
                .arg(s.unmatched)
                .arg(s.last_request_ms);
            for (id, n) in &s.hits {
                eval.arg(id).arg(*n);
            }
            pipe.add_command(eval).ignore();
        }
        // EVAL (not EVALSHA) in a pipeline: no NOSCRIPT round trip to handle; the script is small.
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn read_stats(&self, tenant: &str) -> Result<StatsTotals, StoreError> {
        // MULTI/EXEC: the incarnation and the totals come from the same moment.
        let (exists, born, t, hits): (
            bool,
            Option<u64>,
            std::collections::HashMap<String, u64>,
            std::collections::HashMap<String, u64>,
        ) = redis::pipe()
            .atomic()
            .hexists(keys::CONFIG_INDEX, tenant)
            .hget(keys::CONFIG_BORN, tenant)
            .hgetall(keys::tenant_stats(tenant))
            .hgetall(keys::scenario_stats(tenant))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let current = born.unwrap_or(0);
        if !exists || t.get("born").is_some_and(|b| *b != current) {
            // Gone, or counted for an earlier incarnation whose purge was missed.
            return Ok(StatsTotals::default());
        }
        Ok(StatsTotals {
            requests: t.get("requests").copied().unwrap_or(0),
            unmatched: t.get("unmatched").copied().unwrap_or(0),
            last_request_ms: t.get("last_request_ms").copied().unwrap_or(0),
            hits,
        })
    }

    async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        self.conn()
            .del::<_, ()>(&[keys::tenant_stats(tenant), keys::scenario_stats(tenant)])
            .await
            .map_err(unavailable)
    }
}

fn topic_of(tenant: &str, id: &str) -> Result<String, StoreError> {
    session_topic(tenant, id)
        .map(|t| t.as_str().to_string())
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create_session(
        &self,
        tenant: &str,
        id: &str,
        doc: &SessionDoc,
        tools: &str,
        idle_ms: u64,
        max: usize,
    ) -> Result<bool, StoreError> {
        let doc = serde_json::to_string(doc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let created: i64 = self
            .session_create
            .key(keys::mcp_session(tenant, id))
            .key(keys::mcp_sessions(tenant))
            .arg(doc)
            .arg(crate::now_ms())
            .arg(idle_ms.max(1))
            .arg(id)
            .arg(tools)
            .arg(max)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(created == 1)
    }

    async fn touch_session(&self, tenant: &str, id: &str) -> Result<Option<Session>, StoreError> {
        let got: Option<(String, String, String, String)> = self
            .session_touch
            .key(keys::mcp_session(tenant, id))
            .key(keys::mcp_session_log(tenant, id))
            .key(keys::mcp_sessions(tenant))
            .arg(crate::now_ms())
            .arg(id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let Some((doc, seq, tools, holder)) = got else {
            return Ok(None);
        };
        let doc: SessionDoc =
            serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some(Session {
            doc,
            seq: seq.parse().unwrap_or(0),
            tools,
            holder,
        }))
    }

    async fn set_session_version(
        &self,
        tenant: &str,
        id: &str,
        version: &str,
    ) -> Result<bool, StoreError> {
        let key = keys::mcp_session(tenant, id);
        let doc: Option<String> = self.conn().hget(&key, "doc").await.map_err(unavailable)?;
        let Some(doc) = doc else {
            return Ok(false);
        };
        let mut doc: SessionDoc =
            serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        doc.protocol_version = Some(version.to_string());
        let doc = serde_json::to_string(&doc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        // Only while the session exists (HSET on a missing key would bring it back, unexpiring).
        let n: i64 = redis::Script::new(
            "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'doc', ARGV[1]) return 1 end return 0",
        )
        .key(&key)
        .arg(doc)
        .invoke_async(&mut self.conn())
        .await
        .map_err(unavailable)?;
        Ok(n == 1)
    }

    async fn claim_stream(&self, tenant: &str, id: &str, holder: &str) -> Result<bool, StoreError> {
        let n: i64 = self
            .session_claim
            .key(keys::mcp_session(tenant, id))
            .arg(holder)
            .arg(topic_of(tenant, id)?)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    async fn end_session(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let n: i64 = self
            .session_end
            .key(keys::mcp_session(tenant, id))
            .key(keys::mcp_session_log(tenant, id))
            .key(keys::mcp_sessions(tenant))
            .arg(id)
            .arg(topic_of(tenant, id)?)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn append_event(
        &self,
        tenant: &str,
        id: &str,
        data: &str,
        keep: usize,
        tools: Option<&str>,
    ) -> Result<Appended, StoreError> {
        let n: i64 = self
            .session_append
            .key(keys::mcp_session(tenant, id))
            .key(keys::mcp_session_log(tenant, id))
            .arg(data)
            .arg(keep.max(1))
            .arg(topic_of(tenant, id)?)
            .arg(tools.unwrap_or(""))
            .arg(SIGNAL_DATA_MAX)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(match n {
            -2 => Appended::AlreadyTold,
            n if n > 0 => Appended::Event(n as u64),
            _ => Appended::NoSession,
        })
    }

    async fn events_after(
        &self,
        tenant: &str,
        id: &str,
        after: u64,
    ) -> Result<EventsRead, StoreError> {
        let (raw, (last, holder)): (Vec<String>, (Option<u64>, Option<String>)) = redis::pipe()
            .lrange(keys::mcp_session_log(tenant, id), 0, -1)
            .cmd("HMGET")
            .arg(keys::mcp_session(tenant, id))
            .arg("seq")
            .arg("holder")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let Some(last) = last else {
            return Ok(EventsRead::default());
        };
        let kept: Vec<SessionEvent> = raw
            .into_iter()
            .filter_map(|line| {
                let (seq, data) = line.split_once('\n')?;
                Some(SessionEvent {
                    seq: seq.parse().ok()?,
                    data: data.to_string(),
                })
            })
            .collect();
        let first = kept.first().map_or(last + 1, |e| e.seq);
        Ok(EventsRead {
            exists: true,
            events: kept.into_iter().filter(|e| e.seq > after).collect(),
            truncated: after + 1 < first && after < last,
            last,
            holder: holder.unwrap_or_default(),
        })
    }

    async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        // In pages, so a tenant with many sessions never makes one huge reply or command.
        let index = keys::mcp_sessions(tenant);
        loop {
            let ids: Vec<String> = self
                .conn()
                .zrange(&index, 0, 499)
                .await
                .map_err(unavailable)?;
            if ids.is_empty() {
                break;
            }
            let names: Vec<String> = ids
                .iter()
                .flat_map(|id| {
                    [
                        keys::mcp_session(tenant, id),
                        keys::mcp_session_log(tenant, id),
                    ]
                })
                .collect();
            redis::pipe()
                .del(names)
                .ignore()
                .zrem(&index, &ids)
                .ignore()
                .query_async::<()>(&mut self.conn())
                .await
                .map_err(unavailable)?;
        }
        self.conn().del::<_, ()>(&index).await.map_err(unavailable)
    }
}

fn call_topic_of(tenant: &str, call_id: &str) -> Result<String, StoreError> {
    call_topic(tenant, call_id)
        .map(|t| t.as_str().to_string())
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn int_of(v: Option<&redis::Value>) -> Option<i64> {
    match v {
        Some(redis::Value::Int(n)) => Some(*n),
        _ => None,
    }
}

fn text_of(v: Option<&redis::Value>) -> Option<String> {
    match v {
        Some(redis::Value::BulkString(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        Some(redis::Value::SimpleString(s)) => Some(s.clone()),
        _ => None,
    }
}

impl RedisStore {
    fn with_now(script: &str) -> Script {
        Script::new(&format!("{NOW_LUA}{script}"))
    }

    #[allow(clippy::too_many_arguments)]
    async fn append_call(
        &self,
        tenant: &str,
        call_id: &str,
        owner: Option<&str>,
        kind: EventKind,
        data: &str,
        result: Option<&str>,
        error: Option<&str>,
        only_if_lost: bool,
    ) -> Result<Option<CallAppended>, StoreError> {
        if !valid_call_id(call_id) {
            return Ok(Some(CallAppended::NoCall));
        }
        let got: Vec<redis::Value> = self
            .call_append
            .key(keys::call(tenant, call_id))
            .key(keys::call_events(tenant, call_id))
            .key(keys::tenant_calls(tenant))
            .arg(kind.as_str())
            .arg(data)
            .arg(kind.status().map_or("", |s| s.as_str()))
            .arg(if result.is_some() { "1" } else { "0" })
            .arg(result.unwrap_or(""))
            .arg(error.unwrap_or(""))
            .arg(call_topic_of(tenant, call_id)?)
            .arg(CALL_TTL_MS)
            .arg(owner.unwrap_or(""))
            .arg(if only_if_lost { "1" } else { "0" })
            .arg(call_id)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(match int_of(got.first()) {
            Some(-1) => Some(CallAppended::NoCall),
            Some(-2) => Some(CallAppended::Ended(
                text_of(got.get(1))
                    .as_deref()
                    .and_then(CallStatus::parse)
                    .unwrap_or(CallStatus::Error),
            )),
            Some(-3) => None,
            Some(-4) => Some(CallAppended::Lost),
            Some(n) if n > 0 => Some(CallAppended::Event(n as u64)),
            _ => return Err(StoreError::Corrupt(format!("unexpected reply {got:?}"))),
        })
    }

    async fn lease(
        &self,
        tenant: &str,
        call_id: &str,
        owner: &str,
        lease_ms: u64,
        take: bool,
    ) -> Result<Lease, StoreError> {
        if !valid_call_id(call_id) {
            return Ok(Lease::NoCall);
        }
        let got: Vec<redis::Value> = self
            .call_lease
            .key(keys::call(tenant, call_id))
            .arg(owner)
            .arg(lease_ms)
            .arg(if take { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(match text_of(got.first()).as_deref() {
            Some("held") => Lease::Held,
            Some("lost") => Lease::Lost,
            Some("ended") => Lease::Ended(
                text_of(got.get(1))
                    .as_deref()
                    .and_then(CallStatus::parse)
                    .unwrap_or(CallStatus::Error),
            ),
            Some("nocall") => Lease::NoCall,
            _ => return Err(StoreError::Corrupt(format!("unexpected reply {got:?}"))),
        })
    }
}

#[async_trait]
impl CallStore for RedisStore {
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
        let text = serde_json::to_string(doc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let key = keys::call(&doc.tenant, &doc.call_id);
        let caller = hex(&doc.caller);
        let request_key = match &doc.request_id {
            Some(r) => keys::call_request(&doc.tenant, &caller, &hex(r)),
            None => key.clone(),
        };
        for _ in 0..2 {
            let got: Vec<redis::Value> = self
                .call_create
                .key(&key)
                .key(&request_key)
                .key(keys::caller_calls(&doc.tenant, &caller))
                .key(keys::tenant_calls(&doc.tenant))
                .key(keys::caller_live_calls(&doc.tenant, &caller))
                .arg(&doc.call_id)
                .arg(&text)
                .arg(CALL_TTL_MS)
                .arg(if doc.request_id.is_some() { "1" } else { "0" })
                .arg(owner)
                .arg(lease_ms)
                .arg(keys::call(&doc.tenant, ""))
                .invoke_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            match (int_of(got.first()), text_of(got.get(1))) {
                (Some(1), _) => return Ok(Created::New),
                (Some(0), Some(existing)) => {
                    if let Some(c) = self.get_call(&doc.tenant, &existing).await? {
                        return Ok(Created::Existing(c.doc));
                    }
                    // It expired between the two reads: the script now creates afresh.
                }
                _ => return Err(StoreError::Corrupt(format!("unexpected reply {got:?}"))),
            }
        }
        Err(StoreError::Unavailable(
            "the call named by this request_id keeps expiring".into(),
        ))
    }

    async fn get_call(&self, tenant: &str, call_id: &str) -> Result<Option<Call>, StoreError> {
        if !valid_call_id(call_id) {
            return Ok(None);
        }
        type Row = (
            Option<String>,
            Option<String>,
            Option<u64>,
            Option<u64>,
            Option<String>,
            Option<String>,
            Option<u64>,
        );
        let row: Row = redis::cmd("HMGET")
            .arg(keys::call(tenant, call_id))
            .arg(&[
                "doc", "status", "updated", "seq", "result", "error", "lease",
            ])
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let (Some(doc), Some(status)) = (row.0, row.1) else {
            return Ok(None);
        };
        let doc: CallDoc =
            serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let status = CallStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("call status {status:?}")))?;
        Ok(Some(Call {
            doc,
            status,
            updated_ms: row.2.unwrap_or(0),
            seq: row.3.unwrap_or(0),
            result: row.4,
            error: row.5,
            lease_until_ms: row.6.unwrap_or(0),
        }))
    }

    async fn start_call(
        &self,
        tenant: &str,
        call_id: &str,
        owner: &str,
        lease_ms: u64,
    ) -> Result<Lease, StoreError> {
        self.lease(tenant, call_id, owner, lease_ms, true).await
    }

    async fn renew_call(
        &self,
        tenant: &str,
        call_id: &str,
        owner: &str,
        lease_ms: u64,
    ) -> Result<Lease, StoreError> {
        self.lease(tenant, call_id, owner, lease_ms, false).await
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
        Ok(self
            .append_call(tenant, call_id, owner, kind, data, result, error, false)
            .await?
            .unwrap_or(CallAppended::NoCall))
    }

    async fn finish_if_lost(
        &self,
        tenant: &str,
        call_id: &str,
        data: &str,
    ) -> Result<bool, StoreError> {
        let done = self
            .append_call(
                tenant,
                call_id,
                None,
                EventKind::Error,
                data,
                None,
                Some("WORKER_LOST"),
                true,
            )
            .await?;
        Ok(matches!(done, Some(CallAppended::Event(_))))
    }

    async fn call_events(
        &self,
        tenant: &str,
        call_id: &str,
        after: u64,
    ) -> Result<Vec<CallEvent>, StoreError> {
        if !valid_call_id(call_id) {
            return Ok(Vec::new());
        }
        // Events are numbered from 1 in list order: read from index `after` on.
        let from = after as isize;
        let raw: Vec<Vec<u8>> = self
            .conn()
            .lrange(
                keys::call_events(tenant, call_id),
                from,
                from + EVENTS_PAGE as isize - 1,
            )
            .await
            .map_err(unavailable)?;
        Ok(raw
            .iter()
            .filter_map(|b| CallEvent::decode(b))
            .filter(|e| e.seq > after)
            .collect())
    }

    async fn caller_calls(&self, tenant: &str, caller: &str) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = self
            .conn()
            .zrange(keys::caller_calls(tenant, &hex(caller)), 0, -1)
            .await
            .map_err(unavailable)?;
        // Scored by last change: a kept call is one whose record still exists.
        let mut kept = Vec::with_capacity(ids.len());
        for id in ids {
            let exists: bool = self
                .conn()
                .exists(keys::call(tenant, &id))
                .await
                .map_err(unavailable)?;
            if exists {
                kept.push(id);
            }
        }
        Ok(kept)
    }

    async fn caller_live_calls(&self, tenant: &str, caller: &str) -> Result<usize, StoreError> {
        let key = keys::caller_live_calls(tenant, &hex(caller));
        let min = crate::now_ms().saturating_sub(CALL_TTL_MS);
        let (_, n): ((), usize) = redis::pipe()
            .zrembyscore(&key, "-inf", min)
            .zcard(&key)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(n)
    }

    async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        let index = keys::tenant_calls(tenant);
        loop {
            let ids: Vec<String> = self
                .conn()
                .zrange(&index, 0, 499)
                .await
                .map_err(unavailable)?;
            if ids.is_empty() {
                break;
            }
            let mut names = Vec::new();
            for id in &ids {
                let call = keys::call(tenant, id);
                let (rkey, cidx, lidx): (Option<String>, Option<String>, Option<String>) =
                    redis::cmd("HMGET")
                        .arg(&call)
                        .arg("rkey")
                        .arg("cidx")
                        .arg("lidx")
                        .query_async(&mut self.conn())
                        .await
                        .map_err(unavailable)?;
                names.extend(
                    rkey.into_iter()
                        .chain(cidx)
                        .chain(lidx)
                        .filter(|k| !k.is_empty()),
                );
                names.push(call);
                names.push(keys::call_events(tenant, id));
            }
            redis::pipe()
                .del(names)
                .ignore()
                .zrem(&index, &ids)
                .ignore()
                .query_async::<()>(&mut self.conn())
                .await
                .map_err(unavailable)?;
        }
        self.conn().del::<_, ()>(&index).await.map_err(unavailable)
    }
}
