//! The Redis backend of [`ChannelStore`]: a hash per channel, a stream per channel (trimmed to
//! the retention cap; its entry ids are the message positions), grants in two hashes, and the
//! doorbell published by the same script that writes, so doorbells leave in stream order.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::{AsyncCommands, Script, Value};
use understudy_crds::keys;

use crate::channels::{
    Channel, ChannelDoc, ChannelStore, Grant, GrantCreated, MessagesRead, Position,
    SIGNAL_DATA_MAX, StoredMessage, TOMBSTONE_TTL_SECS, channel_topic,
};
use crate::redis::{RedisStore, unavailable};
use crate::store::StoreError;

/// KEYS: channel, owner set; ARGV: doc, id, max. 1 created, 0 at the cap, -1 id taken.
static CREATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
if redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'doc', ARGV[1], 'deleted', '0')
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"#,
    )
});

/// KEYS: channel, stream; ARGV: payload, metadata, expiry, keep, topic, signal max.
/// The new entry id (nil: no live channel).
static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local st = redis.call('HMGET', KEYS[1], 'deleted', 'last')
if st[1] ~= '0' then return false end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], '*', 'p', ARGV[1], 'm', ARGV[2], 'x', ARGV[3])
redis.call('HSET', KEYS[1], 'last', id)
local prev = st[2] or '-'
local sig
if #ARGV[1] + #ARGV[2] <= tonumber(ARGV[6]) then
  sig = 'm' .. id .. '\n' .. prev .. '\n' .. ARGV[3] .. '\n' .. ARGV[1] .. '\n' .. ARGV[2]
else
  sig = 'n' .. id .. '\n' .. prev
end
redis.call('PUBLISH', ARGV[5], sig)
return id
"#,
    )
});

/// KEYS: channel, stream, grants, tokens, owner set; ARGV: id, topic, tombstone ttl.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'deleted') ~= '0' then return 0 end
redis.call('HSET', KEYS[1], 'deleted', '1')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('SREM', KEYS[5], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'x')
return 1
"#,
    )
});

/// KEYS: channel, stream; ARGV: after ('' for none), count, byte budget.
/// {0} without a live channel, else {1, first id, after retained, entries, more}: entries stop
/// at the count or once the budget of payload and metadata bytes is spent (one at least).
static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'deleted') ~= '0' then return {0} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local f = ''
if #first > 0 then f = first[1][1] end
local found = 0
local start = '-'
if ARGV[1] ~= '' then
  if #redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1]) > 0 then found = 1 end
  start = '(' .. ARGV[1]
end
local count = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local got = redis.call('XRANGE', KEYS[2], start, '+', 'COUNT', count + 1)
local out = {}
local bytes = 0
local more = 0
for i, e in ipairs(got) do
  if i > count then more = 1 break end
  local size = 0
  for j = 1, #e[2], 2 do
    local k = e[2][j]
    if k == 'p' or k == 'm' then size = size + #e[2][j + 1] end
  end
  if #out > 0 and bytes + size > budget then more = 1 break end
  bytes = bytes + size
  out[#out + 1] = e
end
return {1, f, found, out, more}
"#,
    )
});

/// KEYS: channel, grants, tokens; ARGV: grant id, grant JSON, token hash, max, now (ms).
/// 1 created, 0 no live channel, -1 at the cap. At the cap, revoked and expired grants are
/// forgotten first.
static GRANT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'deleted') ~= '0' then return 0 end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then
  local now = tonumber(ARGV[5])
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    local ok, g = pcall(cjson.decode, all[i + 1])
    if ok and type(g) == 'table' then
      local revoked = g.revoked_ms ~= nil and g.revoked_ms ~= cjson.null
      local expired = type(g.expires_ms) == 'number' and g.expires_ms <= now
      if revoked or expired then
        redis.call('HDEL', KEYS[2], all[i])
        if type(g.token_hash) == 'string' then redis.call('HDEL', KEYS[3], g.token_hash) end
      end
    end
  end
  if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then return -1 end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[1])
return 1
"#,
    )
});

/// KEYS: channel, grants, tokens; ARGV: token hash. The grant's JSON, or nil.
static BY_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'deleted') ~= '0' then return false end
local g = redis.call('HGET', KEYS[3], ARGV[1])
if not g then return false end
return redis.call('HGET', KEYS[2], g)
"#,
    )
});

/// KEYS: channel, grants, tokens; ARGV: grant id, revoked JSON, token hash, topic.
static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'deleted') ~= '0' then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[3])
redis.call('PUBLISH', ARGV[4], 'r' .. ARGV[1])
return 1
"#,
    )
});

fn topic(doc: &ChannelDoc) -> Result<String, StoreError> {
    channel_topic(doc.tenant.as_deref(), &doc.id)
        .map(|t| t.as_str().to_string())
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// One stream entry `[id, [field, value, …]]`.
fn entry(v: &Value) -> Option<StoredMessage> {
    let Value::Array(parts) = v else { return None };
    let pos = Position::parse(&text(parts.first()?)?)?;
    let Value::Array(fields) = parts.get(1)? else {
        return None;
    };
    let mut m = StoredMessage {
        pos,
        payload: String::new(),
        metadata: String::new(),
        expires_ms: 0,
    };
    for kv in fields.chunks(2) {
        let (Some(k), Some(v)) = (kv.first().and_then(text), kv.get(1).and_then(text)) else {
            continue;
        };
        match k.as_str() {
            "p" => m.payload = v,
            "m" => m.metadata = v,
            "x" => m.expires_ms = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    Some(m)
}

#[async_trait]
impl ChannelStore for RedisStore {
    async fn create_channel(&self, doc: &ChannelDoc, max: usize) -> Result<bool, StoreError> {
        let json = serde_json::to_string(doc).map_err(corrupt)?;
        let n: i64 = CREATE
            .key(keys::channel(&doc.id))
            .key(keys::channels_of(doc.tenant.as_deref()))
            .arg(json)
            .arg(&doc.id)
            .arg(max)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match n {
            -1 => Err(StoreError::Corrupt(format!(
                "channel id {} already exists",
                doc.id
            ))),
            n => Ok(n == 1),
        }
    }

    async fn get_channel(&self, id: &str) -> Result<Option<Channel>, StoreError> {
        let (doc, deleted, last): (Option<String>, Option<String>, Option<String>) =
            redis::cmd("HMGET")
                .arg(keys::channel(id))
                .arg("doc")
                .arg("deleted")
                .arg("last")
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
        let Some(doc) = doc else { return Ok(None) };
        Ok(Some(Channel {
            doc: serde_json::from_str(&doc).map_err(corrupt)?,
            deleted: deleted.as_deref() != Some("0"),
            last: last.as_deref().and_then(Position::parse),
        }))
    }

    async fn delete_channel(&self, doc: &ChannelDoc) -> Result<bool, StoreError> {
        let n: i64 = DELETE
            .key(keys::channel(&doc.id))
            .key(keys::channel_messages(&doc.id))
            .key(keys::channel_grants(&doc.id))
            .key(keys::channel_tokens(&doc.id))
            .key(keys::channels_of(doc.tenant.as_deref()))
            .arg(&doc.id)
            .arg(topic(doc)?)
            .arg(TOMBSTONE_TTL_SECS)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(n == 1)
    }

    async fn publish(
        &self,
        doc: &ChannelDoc,
        payload: &str,
        metadata: &str,
        expires_ms: u64,
        keep: usize,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let id: Option<String> = PUBLISH
            .key(keys::channel(&doc.id))
            .key(keys::channel_messages(&doc.id))
            .arg(payload)
            .arg(metadata)
            .arg(expires_ms)
            .arg(keep.max(1))
            .arg(topic(doc)?)
            .arg(SIGNAL_DATA_MAX)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let Some(id) = id else { return Ok(None) };
        let pos = Position::parse(&id).ok_or_else(|| corrupt(format!("stream id {id}")))?;
        Ok(Some(StoredMessage {
            pos,
            payload: payload.to_string(),
            metadata: metadata.to_string(),
            expires_ms,
        }))
    }

    async fn messages_after(
        &self,
        id: &str,
        after: Option<Position>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<MessagesRead, StoreError> {
        let reply: Value = READ
            .key(keys::channel(id))
            .key(keys::channel_messages(id))
            .arg(after.map(|p| p.to_string()).unwrap_or_default())
            .arg(limit.max(1))
            .arg(max_bytes)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let Value::Array(parts) = reply else {
            return Err(corrupt("channel read"));
        };
        if !matches!(parts.first(), Some(Value::Int(1))) {
            return Ok(MessagesRead::default());
        }
        let first = parts
            .get(1)
            .and_then(text)
            .and_then(|t| Position::parse(&t));
        let after_retained = matches!(parts.get(2), Some(Value::Int(1)));
        let messages: Vec<StoredMessage> = match parts.get(3) {
            Some(Value::Array(entries)) => entries.iter().filter_map(entry).collect(),
            _ => Vec::new(),
        };
        let has_more = matches!(parts.get(4), Some(Value::Int(1)));
        Ok(MessagesRead {
            exists: true,
            messages,
            has_more,
            after_retained,
            first,
        })
    }

    async fn create_grant(
        &self,
        grant: &Grant,
        max: usize,
        now_ms: u64,
    ) -> Result<GrantCreated, StoreError> {
        let json = serde_json::to_string(grant).map_err(corrupt)?;
        let n: i64 = GRANT
            .key(keys::channel(&grant.channel_id))
            .key(keys::channel_grants(&grant.channel_id))
            .key(keys::channel_tokens(&grant.channel_id))
            .arg(&grant.id)
            .arg(json)
            .arg(&grant.token_hash)
            .arg(max)
            .arg(now_ms)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(match n {
            1 => GrantCreated::Created,
            -1 => GrantCreated::TooMany,
            _ => GrantCreated::NoChannel,
        })
    }

    async fn get_grant(&self, channel: &str, grant_id: &str) -> Result<Option<Grant>, StoreError> {
        let (deleted, json): (Option<String>, Option<String>) = redis::pipe()
            .hget(keys::channel(channel), "deleted")
            .hget(keys::channel_grants(channel), grant_id)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if deleted.as_deref() != Some("0") {
            return Ok(None);
        }
        json.map(|j| serde_json::from_str(&j).map_err(corrupt))
            .transpose()
    }

    async fn grant_by_token(
        &self,
        channel: &str,
        token_hash: &str,
    ) -> Result<Option<Grant>, StoreError> {
        let json: Option<String> = BY_TOKEN
            .key(keys::channel(channel))
            .key(keys::channel_grants(channel))
            .key(keys::channel_tokens(channel))
            .arg(token_hash)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        json.map(|j| serde_json::from_str(&j).map_err(corrupt))
            .transpose()
    }

    async fn revoke_grant(
        &self,
        doc: &ChannelDoc,
        grant_id: &str,
        now_ms: u64,
    ) -> Result<Option<Grant>, StoreError> {
        let Some(mut grant) = self.get_grant(&doc.id, grant_id).await? else {
            return Ok(None);
        };
        if grant.revoked_ms.is_none() {
            grant.revoked_ms = Some(now_ms);
        }
        let json = serde_json::to_string(&grant).map_err(corrupt)?;
        let n: i64 = REVOKE
            .key(keys::channel(&doc.id))
            .key(keys::channel_grants(&doc.id))
            .key(keys::channel_tokens(&doc.id))
            .arg(grant_id)
            .arg(json)
            .arg(&grant.token_hash)
            .arg(topic(doc)?)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok((n == 1).then_some(grant))
    }

    async fn list_channels(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = self
            .conn()
            .smembers(keys::channels_of(tenant))
            .await
            .map_err(unavailable)?;
        ids.sort();
        ids.truncate(limit);
        Ok(ids)
    }

    async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        let index = keys::channels_of(Some(tenant));
        let ids: Vec<String> = self.conn().smembers(&index).await.map_err(unavailable)?;
        // In pages, so a tenant with many channels never makes one huge command.
        for page in ids.chunks(500) {
            let mut pipe = redis::pipe();
            for id in page {
                pipe.del(&[
                    keys::channel(id),
                    keys::channel_messages(id),
                    keys::channel_grants(id),
                    keys::channel_tokens(id),
                ])
                .ignore();
                if let Ok(t) = channel_topic(Some(tenant), id) {
                    pipe.publish(t.as_str(), &b"x"[..]).ignore();
                }
                pipe.srem(&index, id).ignore();
            }
            pipe.query_async::<()>(&mut self.conn())
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}
