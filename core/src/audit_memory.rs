//! The memory backend of [`AuditStore`] (embedded mode, unit tests): events in id order (time
//! order), read newest first. A query walks the window; embedded mode holds at most
//! `--audit-max-events`, so a walk is a few milliseconds.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use async_trait::async_trait;

use crate::audit::{
    AuditEntry, AuditEvent, AuditFilter, AuditPage, AuditStore, Cursor, id_ceil, id_floor,
    next_cursor, tail_topic,
};
use crate::memory::MemoryStore;
use crate::store::StoreError;

/// Every event of the process, by id.
#[derive(Default)]
pub(crate) struct MemAudit {
    events: BTreeMap<String, Arc<AuditEntry>>,
}

impl MemAudit {
    /// Matching events, newest first, below `before` (exclusive).
    fn walk<'a>(
        &'a self,
        filter: &'a AuditFilter,
        before: Option<&str>,
        now_ms: u64,
    ) -> impl Iterator<Item = &'a Arc<AuditEntry>> + 'a {
        let (from, to) = filter.window(now_ms);
        let lo = id_floor(from);
        let hi = match before {
            Some(b) if *b <= *id_ceil(to) => Bound::Excluded(b.to_string()),
            _ => Bound::Included(id_ceil(to)),
        };
        let range = if matches!(&hi, Bound::Excluded(b) | Bound::Included(b) if *b < lo) {
            None
        } else {
            Some(self.events.range((Bound::Included(lo), hi)))
        };
        range
            .into_iter()
            .flatten()
            .rev()
            .map(|(_, e)| e)
            .filter(move |e| filter.matches(&e.event, e.payload.as_ref(), now_ms))
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError> {
        let topic = tail_topic();
        // Nobody else can listen in embedded mode: render the tail only for a local listener.
        if self.hub.has_local_receivers(&topic) {
            let mut tail = String::new();
            for e in &entries {
                tail.push_str(&e.event.to_json());
                tail.push('\n');
            }
            self.hub.publish_local(&topic, tail);
        }
        let mut a = self.audit_write();
        for e in entries {
            a.events.insert(e.event.id.clone(), Arc::new(e));
        }
        Ok(())
    }

    async fn audit_event(&self, id: &str) -> Result<Option<AuditEntry>, StoreError> {
        Ok(self.audit_read().events.get(id).map(|e| (**e).clone()))
    }

    async fn query_audit(
        &self,
        filter: &AuditFilter,
        offset: usize,
        limit: usize,
        now_ms: u64,
    ) -> Result<AuditPage, StoreError> {
        let a = self.audit_read();
        let mut page = AuditPage::default();
        for e in a.walk(filter, None, now_ms) {
            page.count(|| e.event.clone(), offset, limit);
        }
        Ok(page)
    }

    async fn scan_audit(
        &self,
        filter: &AuditFilter,
        before: Option<&str>,
        max: usize,
        now_ms: u64,
    ) -> Result<(Vec<AuditEvent>, Option<Cursor>), StoreError> {
        let a = self.audit_read();
        let events: Vec<AuditEvent> = a
            .walk(filter, before, now_ms)
            .take(max)
            .map(|e| e.event.clone())
            .collect();
        let next = next_cursor(&events, max);
        Ok((events, next))
    }

    async fn prune_audit(
        &self,
        min_ms: u64,
        max_events: usize,
        batch: usize,
    ) -> Result<usize, StoreError> {
        let mut a = self.audit_write();
        let cutoff = id_floor(min_ms);
        let mut gone = 0;
        while gone < batch {
            let Some((oldest, _)) = a.events.first_key_value() else {
                break;
            };
            if *oldest >= cutoff && a.events.len() <= max_events {
                break;
            }
            a.events.pop_first();
            gone += 1;
        }
        Ok(gone)
    }

    async fn audit_len(&self) -> Result<u64, StoreError> {
        Ok(self.audit_read().events.len() as u64)
    }
}
