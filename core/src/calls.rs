//! Execute-API calls (SPEC §6, §12): a record per call and its append-only event stream, shared
//! by every process, so a call started on one process is streamed, inspected or cancelled from
//! any other, and a call whose worker died ends with `WORKER_LOST` wherever it is looked at.
//!
//! ```text
//!  execute ─► create (request_id: the same call for the same caller) ─► record + events
//!  worker  ─► start(owner, lease) ─► append partial… ─► renew(lease) between chunks
//!          ─► finish: append final | error (terminal: the first terminal event wins)
//!  cancel  ─► append cancelled (terminal), from any process; the worker sees it at its next
//!             renew (or on the call's hub topic) and stops
//!  reader  ─► events after n (replay from the start) + the doorbell on the call's topic;
//!             a lease expired while running → finish_if_lost appends error WORKER_LOST
//! ```
//!
//! Every append publishes the event on the call's hub topic in the same step, so a stream on
//! any process sends it without reading back.

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::hub::Topic;
use crate::store::StoreError;

/// How long a call's record and events are kept after its last change (SPEC §6: 1 h).
pub const CALL_TTL_MS: u64 = 60 * 60 * 1000;

/// A call's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// Accepted, not yet picked up.
    Started,
    /// Waiting (e.g. on chaos latency) before it runs.
    Pending,
    /// Its worker runs it.
    Running,
    /// Ended with a result.
    Finished,
    /// Ended with an error (a failed tool, a refused `openai_chat`, `WORKER_LOST`).
    Error,
    /// Cancelled.
    Cancelled,
}

impl CallStatus {
    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Started => "started",
            CallStatus::Pending => "pending",
            CallStatus::Running => "running",
            CallStatus::Finished => "finished",
            CallStatus::Error => "error",
            CallStatus::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<CallStatus> {
        [
            CallStatus::Started,
            CallStatus::Pending,
            CallStatus::Running,
            CallStatus::Finished,
            CallStatus::Error,
            CallStatus::Cancelled,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }

    /// Whether the call has ended.
    pub fn terminal(self) -> bool {
        matches!(
            self,
            CallStatus::Finished | CallStatus::Error | CallStatus::Cancelled
        )
    }
}

/// What a call was started with. Written once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallDoc {
    /// The call's id.
    pub call_id: String,
    /// Its tenant.
    pub tenant: String,
    /// Who started it (an API key's name, or `admin`): idempotency and `cancel_all` are per
    /// caller.
    pub caller: String,
    /// The tool.
    pub tool: String,
    /// The request body's canonical JSON (tool, input, session_id, metadata): a `request_id`
    /// reused with a different body is refused.
    pub body: String,
    /// The caller's `request_id`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Unix ms of its creation.
    pub created_ms: u64,
}

/// A call as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// What it was started with.
    pub doc: CallDoc,
    /// Its status.
    pub status: CallStatus,
    /// Unix ms of its last change.
    pub updated_ms: u64,
    /// The last event's sequence.
    pub seq: u64,
    /// The final text, once finished.
    pub result: Option<String>,
    /// The error code, once it ended with an error (`TOOL_ERROR`, `OPENAI_ERROR`,
    /// `WORKER_LOST`, …).
    pub error: Option<String>,
    /// Unix ms (the store's clock) until which its worker's lease holds.
    pub lease_until_ms: u64,
}

/// The kind of a call event (the SSE event name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Some output.
    Partial,
    /// The end, with the whole text.
    Final,
    /// The end, with an error code and text.
    Error,
    /// The end: cancelled.
    Cancelled,
}

impl EventKind {
    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Partial => "partial",
            EventKind::Final => "final",
            EventKind::Error => "error",
            EventKind::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<EventKind> {
        [
            EventKind::Partial,
            EventKind::Final,
            EventKind::Error,
            EventKind::Cancelled,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// The status a terminal event gives its call (`None`: not terminal).
    pub fn status(self) -> Option<CallStatus> {
        match self {
            EventKind::Partial => None,
            EventKind::Final => Some(CallStatus::Finished),
            EventKind::Error => Some(CallStatus::Error),
            EventKind::Cancelled => Some(CallStatus::Cancelled),
        }
    }
}

/// One event of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEvent {
    /// Its sequence (1, 2, …).
    pub seq: u64,
    /// Its kind.
    pub kind: EventKind,
    /// Its JSON payload (`{"type","text"}`, or `{"type","code","text"}` for errors).
    pub data: String,
}

impl CallEvent {
    /// The doorbell form: `<seq>\n<kind>\n<data>`.
    pub fn encode(&self) -> Bytes {
        Bytes::from(format!(
            "{}\n{}\n{}",
            self.seq,
            self.kind.as_str(),
            self.data
        ))
    }

    /// Reads the doorbell (or log) form.
    pub fn decode(b: &[u8]) -> Option<CallEvent> {
        let s = std::str::from_utf8(b).ok()?;
        let mut parts = s.splitn(3, '\n');
        let seq = parts.next()?.parse().ok()?;
        let kind = EventKind::parse(parts.next()?)?;
        let data = parts.next()?.to_string();
        Some(CallEvent { seq, kind, data })
    }
}

/// Most characters of a caller's `request_id`.
pub const MAX_REQUEST_ID: usize = 128;

/// Most events one `call_events` read returns (read again after the last for more).
pub const EVENTS_PAGE: usize = 1_000;

/// Whether `id` can be a call id: 1 to 128 characters of `[A-Za-z0-9_-]` (ids this server hands
/// out are 32 hex digits). Anything else is an unknown call, and never reaches a key name.
pub fn valid_call_id(id: &str) -> bool {
    crate::sessions::valid_session_id(id)
}

/// Whether `id` can be a `request_id`: 1 to 128 characters, no control characters.
pub fn valid_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.chars().count()) && !id.chars().any(char::is_control)
}

/// What `create_call` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// A new call, held by the creating worker's lease.
    New,
    /// The caller's `request_id` already names this call (with the body it was started with).
    Existing(CallDoc),
}

/// What a worker's `start_call` or `renew_call` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// The worker holds the call (status running), its lease renewed.
    Held,
    /// Another worker holds it on a live lease: this one must not run it.
    Lost,
    /// The call had ended (a cancel, or `WORKER_LOST`): stop.
    Ended(CallStatus),
    /// No such call (expired, or never existed).
    NoCall,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Appended with this sequence.
    Event(u64),
    /// Nothing: the call had already ended (the first terminal event wins).
    Ended(CallStatus),
    /// Nothing: the appending worker no longer holds the call.
    Lost,
    /// Nothing: no such call (expired, or never existed).
    NoCall,
}

/// The hub topic of a call's events.
pub fn call_topic(tenant: &str, call_id: &str) -> Result<Topic, crate::TopicError> {
    Topic::tenant(tenant, "call", call_id)
}

/// Execute-API calls and their events, shared by every process. Lease times are the store's
/// clock (Redis `TIME`), never a process's: processes whose clocks disagree still agree on
/// whether a lease expired.
#[async_trait]
pub trait CallStore: Send + Sync + 'static {
    /// Creates a call held by the worker `owner` for `lease_ms` (so a call whose creator dies
    /// before it runs still ends as `WORKER_LOST`), unless `doc.request_id` (with `doc.caller`)
    /// already names a kept call, which is returned instead.
    async fn create_call(
        &self,
        doc: &CallDoc,
        owner: &str,
        lease_ms: u64,
    ) -> Result<Created, StoreError>;
    /// Reads a call of `tenant`.
    async fn get_call(&self, tenant: &str, call_id: &str) -> Result<Option<Call>, StoreError>;
    /// The worker `owner` runs the call: status `running`, lease renewed for `lease_ms`. Taken
    /// only from its own lease or an expired one, never from another worker's live lease.
    async fn start_call(
        &self,
        tenant: &str,
        call_id: &str,
        owner: &str,
        lease_ms: u64,
    ) -> Result<Lease, StoreError>;
    /// The worker `owner` renews its lease between chunks; `Ended` (a cancel) or `Lost` tell it
    /// to stop.
    async fn renew_call(
        &self,
        tenant: &str,
        call_id: &str,
        owner: &str,
        lease_ms: u64,
    ) -> Result<Lease, StoreError>;
    /// Appends an event and publishes it on the call's topic, in one step. A terminal event
    /// ends the call (status; `result`, `error` code) unless it had ended already. `owner`: a
    /// worker's append, refused (`Lost`) unless it holds the call; `None` for a cancel, which
    /// anyone with access may append.
    #[allow(clippy::too_many_arguments)]
    async fn append_call_event(
        &self,
        tenant: &str,
        call_id: &str,
        owner: Option<&str>,
        kind: EventKind,
        data: &str,
        result: Option<&str>,
        error: Option<&str>,
    ) -> Result<Appended, StoreError>;
    /// Ends a call whose worker's lease expired (by the store's clock) with an `error` event
    /// (code `WORKER_LOST`, `data`). `true`: this call ended it.
    async fn finish_if_lost(
        &self,
        tenant: &str,
        call_id: &str,
        data: &str,
    ) -> Result<bool, StoreError>;
    /// The call's events with a sequence above `after`, oldest first, at most [`EVENTS_PAGE`].
    async fn call_events(
        &self,
        tenant: &str,
        call_id: &str,
        after: u64,
    ) -> Result<Vec<CallEvent>, StoreError>;
    /// The ids of the calls `caller` started that are still kept, oldest first.
    async fn caller_calls(&self, tenant: &str, caller: &str) -> Result<Vec<String>, StoreError>;
    /// How many of the calls `caller` started have not ended (a call whose worker died counts
    /// until someone ends it as `WORKER_LOST`, or it expires).
    async fn caller_live_calls(&self, tenant: &str, caller: &str) -> Result<usize, StoreError>;
    /// Deletes every call of a tenant.
    async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_statuses_round_trip() {
        let e = CallEvent {
            seq: 3,
            kind: EventKind::Partial,
            data: "{\"type\":\"partial\",\"text\":\"a\\nb\"}".into(),
        };
        assert_eq!(CallEvent::decode(&e.encode()), Some(e));
        assert_eq!(CallEvent::decode(b"x\npartial\n{}"), None);
        assert_eq!(CallEvent::decode(b"1\nnope\n{}"), None);
        for s in [
            "started",
            "pending",
            "running",
            "finished",
            "error",
            "cancelled",
        ] {
            assert_eq!(CallStatus::parse(s).unwrap().as_str(), s);
        }
        assert!(CallStatus::Cancelled.terminal() && !CallStatus::Running.terminal());
        assert_eq!(EventKind::Final.status(), Some(CallStatus::Finished));
        assert_eq!(EventKind::Partial.status(), None);
        assert!(valid_call_id("0123abcd") && !valid_call_id("a:events") && !valid_call_id(""));
        assert!(valid_request_id("order 42: retry") && !valid_request_id("a\nb"));
        assert!(!valid_request_id(&"r".repeat(MAX_REQUEST_ID + 1)));
    }
}
