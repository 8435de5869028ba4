//! The Redis backend of [`AuditStore`]: summaries and payloads in two hashes by id, and sorted
//! sets of ids (all scores 0, so lexical order, which for UUIDv7 is time order) — one of every
//! id, one per value of each indexed dimension (tenant, tool, user, session, source, success).
//!
//! A query narrows to the index of its most selective equality (or, when the indexes alone
//! decide it, to their intersection, counted without reading an event), within the window's id
//! range; anything else (free text, JSON paths, `has=`, hidden tenants) is decided by
//! [`AuditFilter::matches`] on the events read, a page of ids at a time. Audit traffic has a
//! connection of its own, so a long query never queues behind the request path's commands.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;
use redis::aio::ConnectionManager;
use understudy_crds::keys;

use crate::audit::{
    AuditEntry, AuditEvent, AuditFilter, AuditPage, AuditPayload, AuditStore, Cursor, Dim, id_ceil,
    id_floor, next_cursor,
};
use crate::redis::{RedisStore, unavailable};
use crate::store::StoreError;

/// Ids read per round trip while scanning.
const PAGE: usize = 1_000;
/// Payloads read per round trip while scanning.
const PAYLOAD_PAGE: usize = 50;

/// KEYS: all ids, summaries, payloads, index lists; ARGV: cutoff id, max events, batch.
/// Deletes events older than the cutoff and the oldest beyond the cap, at most `batch`.
static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local max, batch = tonumber(ARGV[2]), tonumber(ARGV[3])
local ids = redis.call('ZRANGEBYLEX', KEYS[1], '-', '(' .. ARGV[1], 'LIMIT', 0, batch)
local room = batch - #ids
local extra = redis.call('ZCARD', KEYS[1]) - #ids - max
if extra > 0 and room > 0 then
  local more = redis.call('ZRANGE', KEYS[1], #ids, #ids + math.min(extra, room) - 1)
  for _, id in ipairs(more) do table.insert(ids, id) end
end
for _, id in ipairs(ids) do
  local ik = redis.call('HGET', KEYS[4], id)
  if ik then
    for k in string.gmatch(ik, '[^\n]+') do redis.call('ZREM', k, id) end
  end
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('HDEL', KEYS[4], id)
  redis.call('ZREM', KEYS[1], id)
end
return #ids
"#,
    )
});

/// KEYS: summaries, payloads, index lists, all ids; ARGV: tail topic, tail text, then per event
/// `id, summary, payload ('' for none), n, n index keys`. One call per batch: the writer pays
/// for one request and one reply, not one per command.
static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local i = 3
while i <= #ARGV do
  local id, n = ARGV[i], tonumber(ARGV[i + 3])
  redis.call('HSET', KEYS[1], id, ARGV[i + 1])
  if ARGV[i + 2] ~= '' then redis.call('HSET', KEYS[2], id, ARGV[i + 2]) end
  redis.call('ZADD', KEYS[4], 0, id)
  local ik = {}
  for j = 1, n do
    local k = ARGV[i + 3 + j]
    redis.call('ZADD', k, 0, id)
    ik[j] = k
  end
  redis.call('HSET', KEYS[3], id, table.concat(ik, '\n'))
  i = i + 4 + n
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"#,
    )
});

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("audit {what}: {e}"))
}

/// The lexical bounds of a window (`[` inclusive).
fn bounds(filter: &AuditFilter, now_ms: u64) -> (String, String) {
    let (from, to) = filter.window(now_ms);
    (format!("[{}", id_floor(from)), format!("[{}", id_ceil(to)))
}

impl RedisStore {
    /// The index to walk: the one of the filter's equalities with the fewest ids in the window
    /// (every id when it has none).
    async fn narrowest(
        conn: &mut ConnectionManager,
        dims: &[(Dim, String)],
        lo: &str,
        hi: &str,
    ) -> Result<String, StoreError> {
        let keys: Vec<String> = dims
            .iter()
            .map(|(d, v)| keys::audit_index(d.as_str(), v))
            .collect();
        if keys.len() <= 1 {
            return Ok(keys
                .into_iter()
                .next()
                .unwrap_or_else(|| keys::AUDIT_INDEX.to_string()));
        }
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("ZLEXCOUNT").arg(k).arg(lo).arg(hi);
        }
        let counts: Vec<u64> = pipe.query_async(conn).await.map_err(unavailable)?;
        let best = counts
            .iter()
            .enumerate()
            .min_by_key(|(_, c)| **c)
            .map_or(0, |(i, _)| i);
        Ok(keys[best].clone())
    }

    /// Reads summaries (and payloads, when asked) of `ids`, in their order; ids whose summary
    /// is gone (pruned meanwhile) are skipped.
    async fn read_events(
        conn: &mut ConnectionManager,
        ids: &[String],
        payloads: bool,
    ) -> Result<Vec<(AuditEvent, Option<AuditPayload>)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(keys::AUDIT_EVENTS).arg(ids);
        if payloads {
            pipe.cmd("HMGET").arg(keys::AUDIT_PAYLOADS).arg(ids);
        }
        let mut rows: Vec<Vec<Option<String>>> =
            pipe.query_async(conn).await.map_err(unavailable)?;
        let pls = if payloads { rows.pop() } else { None };
        let evs = rows.pop().unwrap_or_default();
        let mut out = Vec::with_capacity(evs.len());
        for (i, ev) in evs.into_iter().enumerate() {
            let Some(ev) = ev else { continue };
            let event: AuditEvent = serde_json::from_str(&ev).map_err(|e| corrupt("event", e))?;
            let payload = match pls.as_ref().and_then(|p| p.get(i)).cloned().flatten() {
                Some(p) => Some(serde_json::from_str(&p).map_err(|e| corrupt("payload", e))?),
                None => None,
            };
            out.push((event, payload));
        }
        Ok(out)
    }

    /// Walks `key` newest first below `start` (a lexical bound), calling `visit` with each
    /// matching event until it returns `false` or the window is done.
    async fn walk(
        conn: &mut ConnectionManager,
        key: &str,
        filter: &AuditFilter,
        start: String,
        lo: &str,
        now_ms: u64,
        mut visit: impl FnMut(AuditEvent) -> bool + Send,
    ) -> Result<(), StoreError> {
        let mut hi = start;
        let payloads = filter.needs_payload();
        loop {
            let ids: Vec<String> = redis::cmd("ZREVRANGEBYLEX")
                .arg(key)
                .arg(&hi)
                .arg(lo)
                .arg("LIMIT")
                .arg(0)
                .arg(PAGE)
                .query_async(conn)
                .await
                .map_err(unavailable)?;
            let Some(last) = ids.last() else {
                return Ok(());
            };
            hi = format!("({last}");
            let done = ids.len() < PAGE;
            // Summaries first; payloads only for the events they let through, a few at a time
            // (a page of payloads can be large).
            let events: Vec<AuditEvent> = Self::read_events(conn, &ids, false)
                .await?
                .into_iter()
                .map(|(e, _)| e)
                .filter(|e| filter.matches_event(e, now_ms))
                .collect();
            if !payloads {
                for e in events {
                    if !visit(e) {
                        return Ok(());
                    }
                }
            } else {
                for chunk in events.chunks(PAYLOAD_PAGE) {
                    let ids: Vec<String> = chunk.iter().map(|e| e.id.clone()).collect();
                    let pls: Vec<Option<String>> = redis::cmd("HMGET")
                        .arg(keys::AUDIT_PAYLOADS)
                        .arg(&ids)
                        .query_async(conn)
                        .await
                        .map_err(unavailable)?;
                    for (e, pl) in chunk.iter().zip(pls) {
                        let p: Option<AuditPayload> = match pl {
                            Some(text) => Some(
                                serde_json::from_str(&text).map_err(|e| corrupt("payload", e))?,
                            ),
                            None => None,
                        };
                        if filter.matches_payload(p.as_ref()) && !visit(e.clone()) {
                            return Ok(());
                        }
                    }
                }
            }
            if done {
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl AuditStore for RedisStore {
    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut tail = String::with_capacity(entries.len() * 320);
        let mut args: Vec<Vec<u8>> = Vec::with_capacity(entries.len() * 12);
        for e in &entries {
            let summary = e.event.to_json();
            tail.push_str(&summary);
            tail.push('\n');
            let payload = match &e.payload {
                Some(p) => serde_json::to_string(p).map_err(|e| corrupt("payload", e))?,
                None => String::new(),
            };
            let indexes = Dim::of(&e.event);
            args.push(e.event.id.clone().into_bytes());
            args.push(summary.into_bytes());
            args.push(payload.into_bytes());
            args.push(indexes.len().to_string().into_bytes());
            for (d, v) in &indexes {
                args.push(keys::audit_index(d.as_str(), v).into_bytes());
            }
        }
        let topic = crate::audit::tail_topic();
        let mut call = APPEND.prepare_invoke();
        call.key(keys::AUDIT_EVENTS)
            .key(keys::AUDIT_PAYLOADS)
            .key(keys::AUDIT_INDEXED)
            .key(keys::AUDIT_INDEX)
            .arg(topic.as_str())
            .arg(tail);
        for a in args {
            call.arg(a);
        }
        call.invoke_async::<i64>(&mut self.audit_conn())
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn audit_event(&self, id: &str) -> Result<Option<AuditEntry>, StoreError> {
        let mut conn = self.audit_conn();
        let ids = [id.to_string()];
        Ok(Self::read_events(&mut conn, &ids, true)
            .await?
            .into_iter()
            .next()
            .map(|(event, payload)| AuditEntry { event, payload }))
    }

    async fn query_audit(
        &self,
        filter: &AuditFilter,
        offset: usize,
        limit: usize,
        now_ms: u64,
    ) -> Result<AuditPage, StoreError> {
        let mut conn = self.audit_conn();
        let (lo, hi) = bounds(filter, now_ms);
        let dims = filter.dims();
        if filter.index_only() {
            // The indexes decide: count and page without reading more than the page.
            let (key, scratch) = if dims.len() > 1 {
                let scratch = keys::audit_scratch(&uuid::Uuid::new_v4().to_string());
                let keys: Vec<String> = dims
                    .iter()
                    .map(|(d, v)| keys::audit_index(d.as_str(), v))
                    .collect();
                redis::pipe()
                    .atomic()
                    .cmd("ZINTERSTORE")
                    .arg(&scratch)
                    .arg(keys.len())
                    .arg(&keys)
                    .ignore()
                    .cmd("PEXPIRE")
                    .arg(&scratch)
                    .arg(30_000)
                    .ignore()
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(unavailable)?;
                (scratch.clone(), Some(scratch))
            } else {
                (Self::narrowest(&mut conn, &dims, &lo, &hi).await?, None)
            };
            let (total, ids): (u64, Vec<String>) = redis::pipe()
                .cmd("ZLEXCOUNT")
                .arg(&key)
                .arg(&lo)
                .arg(&hi)
                .cmd("ZREVRANGEBYLEX")
                .arg(&key)
                .arg(&hi)
                .arg(&lo)
                .arg("LIMIT")
                .arg(offset)
                .arg(limit)
                .query_async(&mut conn)
                .await
                .map_err(unavailable)?;
            if let Some(s) = scratch {
                let _: Result<(), _> = redis::cmd("DEL").arg(s).query_async(&mut conn).await;
            }
            let events = Self::read_events(&mut conn, &ids, false)
                .await?
                .into_iter()
                .map(|(e, _)| e)
                .collect();
            return Ok(AuditPage { events, total });
        }
        let key = Self::narrowest(&mut conn, &dims, &lo, &hi).await?;
        let mut page = AuditPage::default();
        Self::walk(&mut conn, &key, filter, hi, &lo, now_ms, |e| {
            page.count(|| e, offset, limit);
            true
        })
        .await?;
        Ok(page)
    }

    async fn scan_audit(
        &self,
        filter: &AuditFilter,
        before: Option<&str>,
        max: usize,
        now_ms: u64,
    ) -> Result<(Vec<AuditEvent>, Option<Cursor>), StoreError> {
        let mut conn = self.audit_conn();
        let (lo, hi) = bounds(filter, now_ms);
        let key = Self::narrowest(&mut conn, &filter.dims(), &lo, &hi).await?;
        let start = match before {
            Some(b) if b <= &hi[1..] => format!("({b}"),
            _ => hi,
        };
        let mut events = Vec::new();
        if max > 0 {
            Self::walk(&mut conn, &key, filter, start, &lo, now_ms, |e| {
                events.push(e);
                events.len() < max
            })
            .await?;
        }
        let next = next_cursor(&events, max);
        Ok((events, next))
    }

    async fn prune_audit(
        &self,
        min_ms: u64,
        max_events: usize,
        batch: usize,
    ) -> Result<usize, StoreError> {
        let n: usize = PRUNE
            .key(keys::AUDIT_INDEX)
            .key(keys::AUDIT_EVENTS)
            .key(keys::AUDIT_PAYLOADS)
            .key(keys::AUDIT_INDEXED)
            .arg(id_floor(min_ms))
            .arg(max_events)
            .arg(batch.max(1))
            .invoke_async(&mut self.audit_conn())
            .await
            .map_err(unavailable)?;
        Ok(n)
    }

    async fn audit_len(&self) -> Result<u64, StoreError> {
        redis::cmd("ZCARD")
            .arg(keys::AUDIT_INDEX)
            .query_async(&mut self.audit_conn())
            .await
            .map_err(unavailable)
    }
}
