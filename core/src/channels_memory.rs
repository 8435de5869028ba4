//! The memory backend of [`ChannelStore`] (embedded mode, unit tests): the same positions,
//! trimming, tombstones and doorbells as the Redis stream, in one process.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::channels::{
    Channel, ChannelDoc, ChannelSignal, ChannelStore, Grant, GrantCreated, MessagesRead, Position,
    StoredMessage, TOMBSTONE_TTL_SECS, channel_topic,
};
use crate::memory::MemoryStore;
use crate::store::StoreError;

/// Every channel of the process.
#[derive(Default)]
pub(crate) struct MemChannels {
    channels: HashMap<String, MemChannel>,
    /// owner (tenant, or `None`) → its live channel ids.
    owners: HashMap<Option<String>, HashSet<String>>,
    /// When tombstones were last swept.
    last_sweep: Option<Instant>,
}

struct MemChannel {
    doc: ChannelDoc,
    /// When it was deleted (a tombstone until [`TOMBSTONE_TTL_SECS`] later).
    deleted: Option<Instant>,
    last: Option<Position>,
    messages: VecDeque<StoredMessage>,
    grants: HashMap<String, Grant>,
    /// token hash → grant id (live grants only).
    tokens: HashMap<String, String>,
}

impl MemChannels {
    fn live(&mut self, id: &str) -> Option<&mut MemChannel> {
        self.channels.get_mut(id).filter(|c| c.deleted.is_none())
    }

    /// Forgets tombstones past their time (at most once a minute).
    fn sweep(&mut self) {
        let now = Instant::now();
        if self
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
        {
            return;
        }
        self.last_sweep = Some(now);
        let ttl = Duration::from_secs(TOMBSTONE_TTL_SECS);
        self.channels
            .retain(|_, c| c.deleted.is_none_or(|d| now.duration_since(d) < ttl));
    }
}

impl MemoryStore {
    fn ring(&self, doc: &ChannelDoc, signal: &ChannelSignal) {
        if let Ok(topic) = channel_topic(doc.tenant.as_deref(), &doc.id) {
            self.hub.publish_local(&topic, signal.encode());
        }
    }
}

#[async_trait]
impl ChannelStore for MemoryStore {
    async fn create_channel(&self, doc: &ChannelDoc, max: usize) -> Result<bool, StoreError> {
        let mut st = self.channels();
        st.sweep();
        if st.channels.contains_key(&doc.id) {
            return Err(StoreError::Corrupt(format!(
                "channel id {} already exists",
                doc.id
            )));
        }
        let owned = st.owners.entry(doc.tenant.clone()).or_default();
        if owned.len() >= max {
            return Ok(false);
        }
        owned.insert(doc.id.clone());
        st.channels.insert(
            doc.id.clone(),
            MemChannel {
                doc: doc.clone(),
                deleted: None,
                last: None,
                messages: VecDeque::new(),
                grants: HashMap::new(),
                tokens: HashMap::new(),
            },
        );
        Ok(true)
    }

    async fn get_channel(&self, id: &str) -> Result<Option<Channel>, StoreError> {
        Ok(self.channels().channels.get(id).map(|c| Channel {
            doc: c.doc.clone(),
            deleted: c.deleted.is_some(),
            last: c.last,
        }))
    }

    async fn delete_channel(&self, doc: &ChannelDoc) -> Result<bool, StoreError> {
        let mut st = self.channels();
        let Some(c) = st.live(&doc.id) else {
            return Ok(false);
        };
        c.deleted = Some(Instant::now());
        c.messages = VecDeque::new();
        c.grants = HashMap::new();
        c.tokens = HashMap::new();
        if let Some(owned) = st.owners.get_mut(&doc.tenant) {
            owned.remove(&doc.id);
        }
        self.ring(doc, &ChannelSignal::Deleted);
        Ok(true)
    }

    async fn publish(
        &self,
        doc: &ChannelDoc,
        payload: &str,
        metadata: &str,
        expires_ms: u64,
        keep: usize,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let mut st = self.channels();
        let Some(c) = st.live(&doc.id) else {
            return Ok(None);
        };
        // Positions as Redis makes stream ids: the clock, never going backwards.
        let now = crate::now_ms();
        let pos = match c.last {
            Some(l) if l.ms >= now => Position {
                ms: l.ms,
                seq: l.seq + 1,
            },
            _ => Position { ms: now, seq: 0 },
        };
        let message = StoredMessage {
            pos,
            payload: payload.to_string(),
            metadata: metadata.to_string(),
            expires_ms,
        };
        let prev = c.last.replace(pos);
        c.messages.push_back(message.clone());
        while c.messages.len() > keep.max(1) {
            c.messages.pop_front();
        }
        let signal = ChannelSignal::for_message(prev, message.clone());
        // Under the lock, so doorbells leave in publish order.
        self.ring(doc, &signal);
        Ok(Some(message))
    }

    async fn messages_after(
        &self,
        id: &str,
        after: Option<Position>,
        limit: usize,
        max_bytes: usize,
    ) -> Result<MessagesRead, StoreError> {
        let mut st = self.channels();
        let Some(c) = st.live(id) else {
            return Ok(MessagesRead::default());
        };
        let start = match after {
            None => 0,
            Some(a) => c.messages.partition_point(|m| m.pos <= a),
        };
        let after_retained = after
            .is_some_and(|a| start > 0 && c.messages.get(start - 1).is_some_and(|m| m.pos == a));
        let mut messages = Vec::new();
        let mut bytes = 0;
        for m in c.messages.iter().skip(start).take(limit) {
            let size = m.payload.len() + m.metadata.len();
            if !messages.is_empty() && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            messages.push(m.clone());
        }
        Ok(MessagesRead {
            exists: true,
            has_more: c.messages.len() > start + messages.len(),
            messages,
            after_retained,
            first: c.messages.front().map(|m| m.pos),
        })
    }

    async fn create_grant(
        &self,
        grant: &Grant,
        max: usize,
        now_ms: u64,
    ) -> Result<GrantCreated, StoreError> {
        let mut st = self.channels();
        let Some(c) = st.live(&grant.channel_id) else {
            return Ok(GrantCreated::NoChannel);
        };
        if c.grants.len() >= max {
            c.grants.retain(|_, g| g.valid_at(now_ms));
            let grants = &c.grants;
            c.tokens.retain(|_, id| grants.contains_key(id));
        }
        if c.grants.len() >= max {
            return Ok(GrantCreated::TooMany);
        }
        c.tokens.insert(grant.token_hash.clone(), grant.id.clone());
        c.grants.insert(grant.id.clone(), grant.clone());
        Ok(GrantCreated::Created)
    }

    async fn get_grant(&self, channel: &str, grant_id: &str) -> Result<Option<Grant>, StoreError> {
        let mut st = self.channels();
        Ok(st
            .live(channel)
            .and_then(|c| c.grants.get(grant_id).cloned()))
    }

    async fn grant_by_token(
        &self,
        channel: &str,
        token_hash: &str,
    ) -> Result<Option<Grant>, StoreError> {
        let mut st = self.channels();
        Ok(st.live(channel).and_then(|c| {
            let id = c.tokens.get(token_hash)?;
            c.grants.get(id).cloned()
        }))
    }

    async fn revoke_grant(
        &self,
        doc: &ChannelDoc,
        grant_id: &str,
        now_ms: u64,
    ) -> Result<Option<Grant>, StoreError> {
        let mut st = self.channels();
        let Some(c) = st.live(&doc.id) else {
            return Ok(None);
        };
        let Some(g) = c.grants.get_mut(grant_id) else {
            return Ok(None);
        };
        if g.revoked_ms.is_none() {
            g.revoked_ms = Some(now_ms);
        }
        let g = g.clone();
        c.tokens.remove(&g.token_hash);
        self.ring(doc, &ChannelSignal::Revoked(g.id.clone()));
        Ok(Some(g))
    }

    async fn list_channels(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let st = self.channels();
        let mut ids: Vec<String> = st
            .owners
            .get(&tenant.map(String::from))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        ids.sort();
        ids.truncate(limit);
        Ok(ids)
    }

    async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError> {
        let mut st = self.channels();
        let owned = st.owners.remove(&Some(tenant.to_string()));
        for id in owned.into_iter().flatten() {
            if let Some(c) = st.channels.remove(&id) {
                self.ring(&c.doc, &ChannelSignal::Deleted);
            }
        }
        Ok(())
    }
}
