//! Session streams: the process holding a stream follows the session's log in the shared store,
//! woken by the session's hub topic, so events appended on any process reach it, a reconnect
//! resumes on any process (`Last-Event-ID`), and a DELETE anywhere ends it.
//!
//! ```text
//!  open ─► subscribe(topic) ─► claim the session (streamable: the newest stream wins) ─►
//!          replay the log after the cursor ─► loop:
//!            hub: Event(seq = cursor+1) → send │ jump, large event or Gap → re-read the log
//!                 Claimed(other) or End → close
//!            snapshot changed: tools fingerprint ≠ told → append list_changed (once per session,
//!                                                        whichever process appends first)
//!            every idle/3: refresh the session (gone → close; behind its log → re-read)
//!            client gone → stop
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use serde_json::{Value, json};
use understudy_core::Delivery;
use understudy_core::sessions::{Appended, EventsRead, SessionEvent, SessionSignal, session_topic};

use crate::mcp::dispatch::{META_SUBSCRIPTION, finish};
use crate::mcp::{Revision, jsonrpc};
use crate::snapshot::TenantRuntime;
use crate::sse::{Event, Follow, KEEP_ALIVE_EVERY, Sender};
use crate::state::App;

/// Events buffered per stream before the follower waits for the client (each at most a tool
/// result, whose size the manifests bound).
const STREAM_BUFFER: usize = 8;

/// Signals buffered on a session's hub topic: past them the follower is told of a gap and
/// re-reads the log, so a small buffer loses nothing and keeps idle sessions light.
const TOPIC_BUFFER: usize = 16;

/// The list_changed notification.
fn list_changed() -> String {
    jsonrpc::notification("notifications/tools/list_changed", None).to_string()
}

/// How a stream starts.
pub struct Open {
    /// The session.
    pub id: String,
    /// Where to resume: `None` (a new stream: what is appended from now on), `Some(n)` (after
    /// event n), or `Some` of anything else (an id the log never held: replay what is kept, and
    /// say so).
    pub resume: Option<String>,
    /// The legacy transport's `endpoint` event: sent first; the stream replays the session's
    /// whole log and the session ends with the stream.
    pub endpoint: Option<String>,
    /// The session's log length (what a replay can hold).
    pub keep: usize,
}

/// Opens a stream of a session of `tenant` (see [`Open`]).
pub fn follow(app: &App, tenant: &Arc<TenantRuntime>, open: Open) -> Response {
    let (tx, resp) = crate::sse::channel(app, "mcp", STREAM_BUFFER, Some(KEEP_ALIVE_EVERY));
    let app = app.clone();
    let tenant_id = tenant.id().to_string();
    let served = tenant.clone();
    tokio::spawn(async move {
        let legacy = open.endpoint.is_some();
        let id = open.id.clone();
        let follower = Follower {
            app: app.clone(),
            tenant: tenant_id.clone(),
            served,
            id: open.id,
            tx,
            cursor: 0,
            token: understudy_core::sessions::new_session_id(),
            keep: open.keep,
        };
        follower.run(open.resume, open.endpoint).await;
        if legacy {
            let _ = app.stores.sessions.end_session(&tenant_id, &id).await;
        }
    });
    resp
}

struct Follower {
    app: App,
    tenant: String,
    /// What the session was opened on (a tenant, or a channel server): its current version is
    /// [`crate::state::AppState::current`].
    served: Arc<TenantRuntime>,
    id: String,
    tx: Sender,
    /// The last sequence sent.
    cursor: u64,
    /// This stream's token: a streamable session has one stream, the one that claimed it last.
    token: String,
    /// The session's log length.
    keep: usize,
}

/// Why a follower stops.
enum Stop {
    /// The client went away, or the session ended or passed to another stream.
    Done,
}

type Step = Result<(), Stop>;

impl Follower {
    async fn send(&mut self, e: &SessionEvent) -> Step {
        let seq = e.seq.to_string();
        self.tx
            .send(&Event {
                id: Some(&seq),
                event: Some("message"),
                data: &e.data,
            })
            .await
            .map_err(|_| Stop::Done)?;
        self.cursor = e.seq;
        Ok(())
    }

    /// Whether a read shows the stream must end: the session is gone, or another stream holds
    /// it.
    fn lost(&self, read_exists: bool, holder: &str) -> bool {
        !read_exists || (!holder.is_empty() && holder != self.token)
    }

    /// Sends what the log holds after the cursor (a store error leaves the cursor where it is:
    /// the next refresh tries again).
    async fn catch_up(&mut self) -> Step {
        let read: EventsRead = match self
            .app
            .stores
            .sessions
            .events_after(&self.tenant, &self.id, self.cursor)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                self.app.metrics.redis_error("mcp_session_log");
                tracing::debug!(error = %e, "session log read failed");
                return Ok(());
            }
        };
        if self.lost(read.exists, &read.holder) {
            return Err(Stop::Done);
        }
        if read.truncated {
            let note = format!(
                "events after {} were dropped from the session's log (it keeps the last {}); replaying what is kept",
                self.cursor, self.keep
            );
            self.tx.comment(&note).await.map_err(|_| Stop::Done)?;
        }
        for e in &read.events {
            self.send(e).await?;
        }
        Ok(())
    }

    async fn run(mut self, resume: Option<String>, endpoint: Option<String>) {
        let _ = self.follow(resume, endpoint).await;
    }

    async fn follow(&mut self, resume: Option<String>, endpoint: Option<String>) -> Step {
        let topic = session_topic(&self.tenant, &self.id).map_err(|_| Stop::Done)?;
        // Subscribed before anything is read, so nothing appended in between is missed.
        let mut sub = self
            .app
            .stores
            .hub
            .subscribe_with_capacity(&topic, TOPIC_BUFFER)
            .await;
        let sessions = self.app.stores.sessions.clone();
        let legacy = endpoint.is_some();
        if let Some(url) = &endpoint {
            self.tx
                .send(&Event {
                    id: None,
                    event: Some("endpoint"),
                    data: url,
                })
                .await
                .map_err(|_| Stop::Done)?;
        } else if !matches!(
            sessions
                .claim_stream(&self.tenant, &self.id, &self.token)
                .await,
            Ok(true)
        ) {
            return Err(Stop::Done);
        }
        let session = match sessions.touch_session(&self.tenant, &self.id).await {
            Ok(Some(s)) => s,
            _ => return Err(Stop::Done),
        };
        // A legacy stream replays its whole log (its replies may have been appended before the
        // stream read anything); a new streamable stream starts at the end; a resumed one after
        // its id.
        self.cursor = match (&resume, legacy) {
            (_, true) => 0,
            (None, false) => session.seq,
            (Some(r), false) => match r.parse::<u64>() {
                Ok(n) if n <= session.seq => n,
                _ => {
                    let note = format!(
                        "Last-Event-ID {} is not an event of this session; replaying the events kept",
                        r.escape_default()
                    );
                    self.tx.comment(&note).await.map_err(|_| Stop::Done)?;
                    0
                }
            },
        };
        self.catch_up().await?;
        let mut told = session.tools;
        let mut versions = self.app.snapshot.watch();
        self.check_tools(&mut told).await?;
        let idle_ms = self.app.options.mcp_session_idle.as_millis() as u64;
        let every = if legacy {
            super::legacy::LEGACY_IDLE / 3
        } else {
            Duration::from_millis(idle_ms / 3)
        };
        let mut refresh = tokio::time::interval(every.max(Duration::from_secs(1)));
        refresh.tick().await;
        loop {
            tokio::select! {
                d = sub.recv() => {
                    let signal = match d {
                        None => return Err(Stop::Done),
                        Some(Delivery::Gap) => None,
                        Some(Delivery::Message(b)) => match SessionSignal::decode(&b) {
                            Some(SessionSignal::End) => return Err(Stop::Done),
                            Some(SessionSignal::Claimed(t)) if t != self.token && !legacy => {
                                return Err(Stop::Done);
                            }
                            Some(SessionSignal::Claimed(_)) | None => continue,
                            Some(SessionSignal::Appended(seq)) if seq <= self.cursor => continue,
                            Some(SessionSignal::Appended(_)) => None,
                            Some(SessionSignal::Event(e)) => Some(e),
                        },
                    };
                    match (Follow::after(self.cursor, signal.as_ref().map(|e| e.seq)), signal) {
                        (Follow::Send, Some(e)) => self.send(&e).await?,
                        (Follow::Skip, _) => {}
                        _ => self.catch_up().await?,
                    }
                }
                changed = versions.changed() => {
                    if changed.is_err() {
                        return Err(Stop::Done);
                    }
                    self.check_tools(&mut told).await?;
                }
                _ = refresh.tick() => {
                    match sessions.touch_session(&self.tenant, &self.id).await {
                        Ok(Some(s)) => {
                            if self.lost(true, if legacy { "" } else { &s.holder }) {
                                return Err(Stop::Done);
                            }
                            if s.seq > self.cursor {
                                self.catch_up().await?;
                            }
                        }
                        Ok(None) => return Err(Stop::Done),
                        // The store is away: keep the stream; the next tick tries again.
                        Err(_) => self.app.metrics.redis_error("mcp_session"),
                    }
                }
                _ = self.tx.closed() => return Err(Stop::Done),
            }
        }
    }

    /// Appends `list_changed` when the tenant's tools differ from what the session was told
    /// (the store appends it once per listing, whichever stream asks first). Ends the stream
    /// when the tenant is gone.
    async fn check_tools(&mut self, told: &mut String) -> Step {
        let Some(t) = self.app.current(&self.served) else {
            return Err(Stop::Done);
        };
        if t.tools.fingerprint == *told {
            return Ok(());
        }
        let fp = t.tools.fingerprint.clone();
        match self
            .app
            .stores
            .sessions
            .append_event(
                &self.tenant,
                &self.id,
                &list_changed(),
                self.keep,
                Some(&fp),
            )
            .await
        {
            Ok(Appended::Event(_)) | Ok(Appended::AlreadyTold) => *told = fp,
            Ok(Appended::NoSession) => return Err(Stop::Done),
            Err(e) => {
                self.app.metrics.redis_error("mcp_session_log");
                tracing::debug!(error = %e, "list_changed not appended");
            }
        }
        Ok(())
    }
}

/// `subscriptions/listen` (2026-07-28): an SSE stream acknowledging the subscription, then
/// `notifications/tools/list_changed` (tagged with the subscription id) each time the tenant's
/// tools change, until the client goes away. Held by this process alone: every process sees
/// every configuration change, so nothing needs relaying.
pub fn listen(
    app: &App,
    tenant: &Arc<TenantRuntime>,
    id: Value,
    params: Option<&Value>,
) -> Response {
    let wanted = params
        .and_then(|p| p.get("notifications"))
        .and_then(|n| n.get("toolsListChanged"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (tx, resp) = crate::sse::channel(app, "mcp", STREAM_BUFFER, Some(KEEP_ALIVE_EVERY));
    // Watching before the listing is read, so no change falls between the two.
    let mut versions = app.snapshot.watch();
    let app = app.clone();
    let served = tenant.clone();
    let mut told = tenant.tools.fingerprint.clone();
    tokio::spawn(async move {
        let meta = json!({META_SUBSCRIPTION: id});
        let mut honoured = serde_json::Map::new();
        if wanted {
            honoured.insert("toolsListChanged".into(), json!(true));
        }
        let ack = jsonrpc::notification(
            "notifications/subscriptions/acknowledged",
            Some(json!({"_meta": meta, "notifications": honoured})),
        )
        .to_string();
        let send = |data: String| {
            let tx = tx.clone();
            async move {
                tx.send(&Event {
                    id: None,
                    event: Some("message"),
                    data: &data,
                })
                .await
                .is_ok()
            }
        };
        if !send(ack).await {
            return;
        }
        loop {
            tokio::select! {
                changed = versions.changed() => {
                    if changed.is_err() { break; }
                    let Some(t) = app.current(&served) else { break };
                    if t.tools.fingerprint != told {
                        told = t.tools.fingerprint.clone();
                        if wanted {
                            let n = jsonrpc::notification(
                                "notifications/tools/list_changed",
                                Some(json!({"_meta": meta})),
                            );
                            if !send(n.to_string()).await { return; }
                        }
                    }
                }
                _ = tx.closed() => return,
            }
        }
        // The tenant is gone or the process drains: end the subscription gracefully.
        let done = jsonrpc::result(
            &meta[META_SUBSCRIPTION],
            finish(Revision::V2026_07_28, json!({"_meta": meta}), false),
        );
        let _ = send(done.to_string()).await;
    });
    resp
}
