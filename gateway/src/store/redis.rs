//! Redis backend: shared mode. Every gateway process reads and writes the same keys
//! (`understudy_crds::keys`), so a client may land on any process for any request.
//!
//! Configuration writes are Lua scripts (document + version + index + notice in one atomic step);
//! counters are pipelined INCR + EXPIRE. Commands time out quickly so a dead Redis never stalls a
//! request for long; callers decide the fallback.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use understudy_crds::keys;
use understudy_crds::model::{ApiKeyRecord, TenantConfig};

use super::{
    ConfigNotice, Expect, FullConfig, StatsBatch, StatsTotals, Store, StoreError, SyncEvent,
};

/// The Redis backend.
pub struct RedisStore {
    client: redis::Client,
    conn: ConnectionManager,
    put_script: Script,
    del_script: Script,
    load_script: Script,
    unlock_script: Script,
    put_key_script: Script,
    del_key_script: Script,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

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
redis.call('PUBLISH', ARGV[3], '{"v":' .. v .. ',"t":"' .. ARGV[1] .. '","op":"put"}')
return v
"#;

const DEL_LUA: &str = r#"
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur then return -1 end
if ARGV[3] ~= 'any' and cur ~= ARGV[3] then return -1 end
local v = redis.call('INCR', KEYS[1])
redis.call('DEL', KEYS[3])
redis.call('HDEL', KEYS[2], ARGV[1])
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

const UNLOCK_LUA: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;

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
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)?;
        Ok(RedisStore {
            client,
            conn,
            put_script: Script::new(PUT_LUA),
            del_script: Script::new(DEL_LUA),
            load_script: Script::new(LOAD_LUA),
            unlock_script: Script::new(UNLOCK_LUA),
            put_key_script: Script::new(PUT_KEY_LUA),
            del_key_script: Script::new(DEL_KEY_LUA),
        })
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }
}

fn parse_doc(doc: &str) -> Result<TenantConfig, StoreError> {
    serde_json::from_str(doc).map_err(|e| StoreError::Corrupt(format!("tenant document: {e}")))
}

#[async_trait]
impl Store for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

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
            .arg(tenant)
            .arg(keys::CONFIG_CHANNEL)
            .arg(expect)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((v >= 0).then_some(v as u64))
    }

    async fn subscribe(&self) -> Result<BoxStream<'static, SyncEvent>, StoreError> {
        let mut pubsub =
            tokio::time::timeout(Duration::from_secs(2), self.client.get_async_pubsub())
                .await
                .map_err(|_| StoreError::Unavailable("timed out connecting for pub/sub".into()))?
                .map_err(unavailable)?;
        pubsub
            .subscribe(keys::CONFIG_CHANNEL)
            .await
            .map_err(unavailable)?;
        Ok(pubsub
            .into_on_message()
            .filter_map(|msg| async move {
                match serde_json::from_slice::<ConfigNotice>(msg.get_payload_bytes()) {
                    Ok(n) => Some(SyncEvent::Notice(n)),
                    // A notice we cannot read means we may have missed a change.
                    Err(_) => Some(SyncEvent::Lagged),
                }
            })
            .boxed())
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

    async fn incr_expiring(&self, key: &str, ttl_secs: u64) -> Result<u64, StoreError> {
        let (n,): (u64,) = redis::pipe()
            .atomic()
            .incr(key, 1)
            .cmd("EXPIRE")
            .arg(key)
            .arg(ttl_secs.max(1))
            .arg("NX")
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(n)
    }

    async fn incr(&self, key: &str) -> Result<u64, StoreError> {
        self.conn().incr(key, 1).await.map_err(unavailable)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if !batch.is_empty() {
                let n: u64 = conn.del(&batch).await.map_err(unavailable)?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    async fn get_value(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.conn().get(key).await.map_err(unavailable)
    }

    async fn set_value(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn().set(key, value).await.map_err(unavailable)
    }

    async fn try_lock(&self, key: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let ok: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if ok.is_some() {
            return Ok(true);
        }
        let current: Option<String> = self.conn().get(key).await.map_err(unavailable)?;
        Ok(current.as_deref() == Some(holder))
    }

    async fn unlock(&self, key: &str, holder: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .unlock_script
            .key(key)
            .arg(holder)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn flush_stats(&self, batch: &StatsBatch) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        for (tenant, s) in &batch.tenants {
            let tk = keys::tenant_stats(tenant);
            pipe.hincr(&tk, "requests", s.requests).ignore();
            pipe.hincr(&tk, "unmatched", s.unmatched).ignore();
            // Last flush wins: flushes are seconds apart and the time is informational.
            pipe.hset(&tk, "last_request_ms", s.last_request_ms)
                .ignore();
            let sk = keys::scenario_stats(tenant);
            for (id, n) in &s.hits {
                pipe.hincr(&sk, id, *n).ignore();
            }
        }
        pipe.query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    async fn read_stats(&self, tenant: &str) -> Result<StatsTotals, StoreError> {
        let (t, hits): (
            std::collections::HashMap<String, u64>,
            std::collections::HashMap<String, u64>,
        ) = redis::pipe()
            .hgetall(keys::tenant_stats(tenant))
            .hgetall(keys::scenario_stats(tenant))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(StatsTotals {
            requests: t.get("requests").copied().unwrap_or(0),
            unmatched: t.get("unmatched").copied().unwrap_or(0),
            last_request_ms: t.get("last_request_ms").copied().unwrap_or(0),
            hits,
        })
    }
}
