//! Session streams: the process holding a stream follows the session's log in the shared store,
//! woken by the session's hub topic, so events appended on any process reach it, a reconnect
//! resumes on any process (`Last-Event-ID`), and a DELETE anywhere ends it.
//!
//! ```text
//!  open ─► subscribe(topic) ─► replay log after the cursor ─► loop:
//!            hub: Event(seq = cursor+1) → send │ jump or Gap → re-read the log │ End → close
//!            snapshot changed: tools fingerprint ≠ told → append list_changed (rings everyone)
//!            every idle/3: refresh the session (gone → close)   │ client gone → stop
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use serde_json::{Value, json};
use understudy_core::Delivery;
use understudy_core::sessions::{SessionEvent, SessionSignal, session_topic};

use super::SESSION_LOG;
use crate::mcp::dispatch::{META_SUBSCRIPTION, finish};
use crate::mcp::{Revision, jsonrpc};
use crate::snapshot::TenantRuntime;
use crate::sse::{Event, KEEP_ALIVE_EVERY, Sender};
use crate::state::App;

/// Events buffered per stream before the follower waits for the client.
const STREAM_BUFFER: usize = 32;

/// Signals buffered on a session's hub topic: past them the follower is told of a gap and
/// re-reads the log, so a small buffer loses nothing and keeps idle sessions light.
const TOPIC_BUFFER: usize = 16;

/// The list_changed notification.
fn list_changed() -> String {
    jsonrpc::notification("notifications/tools/list_changed", None).to_string()
}

/// Opens the stream of session `id` of `tenant`, replaying what follows `resume` (a
/// `Last-Event-ID`). `first`: an event sent before anything else (the legacy `endpoint`).
/// A legacy stream's session ends with it. The session is kept alive while the stream is open
/// (refreshed every third of `idle_ms`).
pub fn follow(
    app: &App,
    tenant: &Arc<TenantRuntime>,
    id: String,
    resume: Option<String>,
    first: Option<(String, String)>,
    idle_ms: u64,
) -> Response {
    let (tx, resp) = crate::sse::channel(app, "mcp", STREAM_BUFFER, Some(KEEP_ALIVE_EVERY));
    let app = app.clone();
    let tenant_id = tenant.id().to_string();
    let legacy = first.is_some();
    tokio::spawn(async move {
        let follower = Follower {
            app: app.clone(),
            tenant: tenant_id.clone(),
            id: id.clone(),
            tx,
            cursor: 0,
            idle_ms,
        };
        follower.run(resume, first).await;
        if legacy {
            let _ = app.stores.sessions.end_session(&tenant_id, &id).await;
        }
    });
    resp
}

struct Follower {
    app: App,
    tenant: String,
    id: String,
    tx: Sender,
    /// The last sequence sent.
    cursor: u64,
    /// The session's idle expiry.
    idle_ms: u64,
}

impl Follower {
    async fn send(&mut self, e: &SessionEvent) -> bool {
        let seq = e.seq.to_string();
        let ok = self
            .tx
            .send(&Event {
                id: Some(&seq),
                event: Some("message"),
                data: &e.data,
            })
            .await
            .is_ok();
        self.cursor = e.seq;
        ok
    }

    /// Sends what the log holds after the cursor. `false`: the client is gone.
    async fn catch_up(&mut self) -> bool {
        match self
            .app
            .stores
            .sessions
            .events_after(&self.tenant, &self.id, self.cursor)
            .await
        {
            Ok(read) => {
                if read.truncated {
                    let note = format!(
                        "events after {} were dropped from the session's log (it keeps the last {SESSION_LOG}); replaying what is kept",
                        self.cursor
                    );
                    if self.tx.comment(&note).await.is_err() {
                        return false;
                    }
                }
                for e in &read.events {
                    if !self.send(e).await {
                        return false;
                    }
                }
                true
            }
            Err(e) => {
                self.app.metrics.redis_error("mcp_session_log");
                tracing::debug!(error = %e, "session log read failed");
                true
            }
        }
    }

    async fn run(mut self, resume: Option<String>, first: Option<(String, String)>) {
        let topic = match session_topic(&self.tenant, &self.id) {
            Ok(t) => t,
            Err(_) => return,
        };
        // Subscribed before reading, so nothing appended in between is missed.
        let mut sub = self
            .app
            .stores
            .hub
            .subscribe_with_capacity(&topic, TOPIC_BUFFER)
            .await;
        if let Some((event, data)) = &first
            && self
                .tx
                .send(&Event {
                    id: None,
                    event: Some(event),
                    data,
                })
                .await
                .is_err()
        {
            return;
        }
        let idle_ms = self.idle_ms;
        let session = match self
            .app
            .stores
            .sessions
            .touch_session(&self.tenant, &self.id, idle_ms)
            .await
        {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(_) => return,
        };
        // Resume: a known sequence continues after it; anything else replays what is kept.
        match resume {
            None => self.cursor = session.seq,
            Some(r) => match r.parse::<u64>() {
                Ok(n) if n <= session.seq => self.cursor = n,
                _ => {
                    let note = format!(
                        "Last-Event-ID {} is not an event of this session; replaying the events kept",
                        r.escape_default()
                    );
                    if self.tx.comment(&note).await.is_err() {
                        return;
                    }
                    self.cursor = 0;
                }
            },
        }
        if !self.catch_up().await {
            return;
        }
        let mut told = session.tools;
        let mut versions = self.app.snapshot.watch();
        if !self.check_tools(&mut told).await {
            return;
        }
        let mut refresh = tokio::time::interval(Duration::from_millis((idle_ms / 3).max(1_000)));
        refresh.tick().await;
        loop {
            tokio::select! {
                d = sub.recv() => {
                    let signal = match d {
                        None => return,
                        Some(Delivery::Gap) => None,
                        Some(Delivery::Message(b)) => match SessionSignal::decode(&b) {
                            Some(SessionSignal::End) => return,
                            Some(SessionSignal::Event(e)) => Some(e),
                            None => continue,
                        },
                    };
                    let live = match signal {
                        // The next event: sent as it came.
                        Some(e) if e.seq == self.cursor + 1 => self.send(&e).await,
                        // Already sent (read from the log before its signal arrived).
                        Some(e) if e.seq <= self.cursor => true,
                        // A gap, or a jump past the next event: the log has what was missed.
                        _ => self.catch_up().await,
                    };
                    if !live {
                        return;
                    }
                }
                changed = versions.changed() => {
                    if changed.is_err() || !self.check_tools(&mut told).await {
                        return;
                    }
                }
                _ = refresh.tick() => {
                    match self.app.stores.sessions.touch_session(&self.tenant, &self.id, idle_ms).await {
                        Ok(Some(_)) => {}
                        Ok(None) => return,
                        // The store is away: keep the stream; the next tick tries again.
                        Err(_) => self.app.metrics.redis_error("mcp_session"),
                    }
                }
                _ = self.tx.closed() => return,
            }
        }
    }

    /// Appends `list_changed` when the tenant's tools differ from what the client was told.
    /// `false`: the tenant is gone (the stream ends).
    async fn check_tools(&mut self, told: &mut String) -> bool {
        let Some(t) = self.app.snapshot.tenant(&self.tenant) else {
            return false;
        };
        if t.tools.fingerprint == *told {
            return true;
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
                SESSION_LOG,
                Some(&fp),
            )
            .await
        {
            Ok(Some(_)) => *told = fp,
            Ok(None) => return false,
            Err(e) => {
                self.app.metrics.redis_error("mcp_session_log");
                tracing::debug!(error = %e, "list_changed not appended");
            }
        }
        true
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
    let app = app.clone();
    let tenant_id = tenant.id().to_string();
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
        let mut versions = app.snapshot.watch();
        loop {
            tokio::select! {
                changed = versions.changed() => {
                    if changed.is_err() { break; }
                    let Some(t) = app.snapshot.tenant(&tenant_id) else { break };
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
