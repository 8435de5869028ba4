//! MCP sessions (SPEC §4.3, §12): a record per session with an idle expiry, and a bounded log of
//! the server-to-client events of its stream, so that any process answers any request of a
//! session and a stream resumes (`Last-Event-ID`) on any process.
//!
//! ```text
//!  initialize ─► create ──► record {doc, touched, seq, tools}   (idle expiry, refreshed at most
//!                                                                 every tenth of its lifetime)
//!  any request ─► touch ───┘
//!  notice for the stream ─► append ─► log (last N events) + doorbell on the session's hub topic
//!                                                     └─► the process holding the stream sends it
//!  DELETE ─► end ─► record and log gone + `End` on the topic: the holder closes the stream
//! ```
//!
//! The doorbell carries the event itself, so the holder needs no read-back; a holder told
//! [`crate::Delivery::Gap`] (or seeing a sequence jump) reads the log after its last sequence.

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::hub::Topic;
use crate::store::StoreError;

/// Longest session id accepted from a client (ids this server hands out are 32 hex digits).
pub const MAX_SESSION_ID: usize = 128;

/// Whether `id` can be a session id: 1 to 128 characters of `[A-Za-z0-9_-]`. Anything else is
/// an unknown session, and never reaches a key name.
pub fn valid_session_id(id: &str) -> bool {
    (1..=MAX_SESSION_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A new random session id (32 hex digits).
pub fn new_session_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The transport a session belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// Streamable HTTP (`/mcp`, 2025-03-26 and later).
    Streamable,
    /// The legacy HTTP+SSE transport (`/mcp/sse`, 2024-11-05): lives as long as its stream.
    Legacy,
}

/// What a session was opened with. Written once, at `initialize` (or when a legacy stream opens).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDoc {
    /// Its transport.
    pub kind: SessionKind,
    /// The negotiated protocol revision (`None` for a legacy session not yet initialized).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// Unix ms of its creation.
    pub created_ms: u64,
}

/// Most live sessions a tenant may hold at once (past it a new one is refused): one client
/// looping on `initialize` cannot fill the store.
pub const MAX_SESSIONS_PER_TENANT: usize = 10_000;

/// Events whose data is larger than this ring the doorbell without their data (the holder
/// reads them from the log), so a topic's buffer stays small whatever the events weigh.
pub const SIGNAL_DATA_MAX: usize = 64 * 1024;

/// A session as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// What it was opened with.
    pub doc: SessionDoc,
    /// The sequence of the last event appended to its log (0: none).
    pub seq: u64,
    /// The fingerprint of the tool listing its client was last told about (empty: none yet).
    pub tools: String,
    /// The token of the stream that holds it (empty: none yet).
    pub holder: String,
}

/// One event of a session's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    /// Its sequence in the session (1, 2, …): the SSE event id.
    pub seq: u64,
    /// The JSON-RPC message it carries.
    pub data: String,
}

/// What a read of the log found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventsRead {
    /// Whether the session exists (a stream of a session that ended closes).
    pub exists: bool,
    /// The events after the requested sequence that are still kept, oldest first.
    pub events: Vec<SessionEvent>,
    /// Whether events after the requested sequence were dropped from the bounded log before this
    /// read (the reader missed some).
    pub truncated: bool,
    /// The session's last sequence (a requested sequence above it is unknown).
    pub last: u64,
    /// The token of the stream that holds the session (empty: none).
    pub holder: String,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// Appended with this sequence.
    Event(u64),
    /// Nothing: the session was already told about this tool listing.
    AlreadyTold,
    /// Nothing: the session does not exist.
    NoSession,
}

/// What a session's hub topic carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionSignal {
    /// An event was appended.
    Event(SessionEvent),
    /// An event too large to ring with its data was appended: read it from the log.
    Appended(u64),
    /// A stream claimed the session (any other stream of it closes).
    Claimed(String),
    /// The session ended (DELETE, or its legacy stream closed).
    End,
}

impl SessionSignal {
    /// The wire form: `e<seq>\n<data>`, `n<seq>`, `c<holder>` or `x`.
    pub fn encode(&self) -> Bytes {
        match self {
            SessionSignal::Event(e) => Bytes::from(format!("e{}\n{}", e.seq, e.data)),
            SessionSignal::Appended(seq) => Bytes::from(format!("n{seq}")),
            SessionSignal::Claimed(h) => Bytes::from(format!("c{h}")),
            SessionSignal::End => Bytes::from_static(b"x"),
        }
    }

    /// The signal for an appended event: with its data when it is small enough.
    pub fn for_event(event: SessionEvent) -> SessionSignal {
        if event.data.len() <= SIGNAL_DATA_MAX {
            SessionSignal::Event(event)
        } else {
            SessionSignal::Appended(event.seq)
        }
    }

    /// Reads the wire form (`None`: not one of ours).
    pub fn decode(b: &[u8]) -> Option<SessionSignal> {
        let rest = std::str::from_utf8(b.get(1..)?).ok()?;
        match b.first()? {
            b'x' => Some(SessionSignal::End),
            b'n' => rest.parse().ok().map(SessionSignal::Appended),
            b'c' => Some(SessionSignal::Claimed(rest.to_string())),
            b'e' => {
                let (seq, data) = rest.split_once('\n')?;
                Some(SessionSignal::Event(SessionEvent {
                    seq: seq.parse().ok()?,
                    data: data.to_string(),
                }))
            }
            _ => None,
        }
    }
}

/// The hub topic of a session's signals.
pub fn session_topic(tenant: &str, id: &str) -> Result<Topic, crate::TopicError> {
    Topic::tenant(tenant, "mcp_session", id)
}

/// MCP session records and their event logs, shared by every process.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Creates a session, expiring `idle_ms` after its last use. `tools`: the fingerprint of the
    /// tool listing its client starts with. `false`: the tenant already holds `max` live
    /// sessions (nothing was created).
    async fn create_session(
        &self,
        tenant: &str,
        id: &str,
        doc: &SessionDoc,
        tools: &str,
        idle_ms: u64,
        max: usize,
    ) -> Result<bool, StoreError>;
    /// Reads a session and counts it as used: its idle expiry (the one it was created with) is
    /// refreshed, at most once per tenth of it, so a busy session costs one read per request.
    /// `None`: unknown, ended or expired.
    async fn touch_session(&self, tenant: &str, id: &str) -> Result<Option<Session>, StoreError>;
    /// Records the protocol revision a session negotiated (`initialize` on a session opened
    /// before it). `false`: the session does not exist.
    async fn set_session_version(
        &self,
        tenant: &str,
        id: &str,
        version: &str,
    ) -> Result<bool, StoreError>;
    /// Makes the stream `holder` the session's one stream: [`SessionSignal::Claimed`] goes to its
    /// topic, and any other stream of the session closes. `false`: the session does not exist.
    async fn claim_stream(&self, tenant: &str, id: &str, holder: &str) -> Result<bool, StoreError>;
    /// Ends a session: its record and log are deleted and [`SessionSignal::End`] goes to its
    /// topic. `false`: it did not exist.
    async fn end_session(&self, tenant: &str, id: &str) -> Result<bool, StoreError>;
    /// Appends an event to a session's log (keeping the last `keep`), and publishes it on the
    /// session's topic ([`SessionSignal::for_event`]), in one step. `tools`: the fingerprint of
    /// the tool listing the event tells about; if the session was already told about it, nothing
    /// is appended, so streams on several processes never tell it twice.
    async fn append_event(
        &self,
        tenant: &str,
        id: &str,
        data: &str,
        keep: usize,
        tools: Option<&str>,
    ) -> Result<Appended, StoreError>;
    /// The kept events with a sequence above `after`.
    async fn events_after(
        &self,
        tenant: &str,
        id: &str,
        after: u64,
    ) -> Result<EventsRead, StoreError>;
    /// Deletes every session of a tenant.
    async fn purge_tenant(&self, tenant: &str) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_round_trip() {
        let e = SessionSignal::Event(SessionEvent {
            seq: 42,
            data: "{\"a\":\"x\\ny\"}".into(),
        });
        assert_eq!(SessionSignal::decode(&e.encode()), Some(e));
        for sig in [
            SessionSignal::End,
            SessionSignal::Appended(7),
            SessionSignal::Claimed("tok".into()),
        ] {
            assert_eq!(SessionSignal::decode(&sig.encode()), Some(sig));
        }
        let big = SessionEvent {
            seq: 3,
            data: "x".repeat(SIGNAL_DATA_MAX + 1),
        };
        assert_eq!(SessionSignal::for_event(big), SessionSignal::Appended(3));
        assert_eq!(SessionSignal::decode(b"q"), None);
        assert_eq!(SessionSignal::decode(b"eX\n{}"), None);
        assert_eq!(SessionSignal::decode(b""), None);
    }

    #[test]
    fn session_ids_are_bounded() {
        assert!(valid_session_id(&new_session_id()));
        assert!(valid_session_id("abc-DEF_09"));
        assert!(!valid_session_id(""));
        assert!(!valid_session_id("a:b"));
        assert!(!valid_session_id("a*"));
        assert!(!valid_session_id(&"a".repeat(MAX_SESSION_ID + 1)));
    }
}
