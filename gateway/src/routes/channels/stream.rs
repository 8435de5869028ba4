//! `GET /channel/v1/{public|private}/{id}` (SPEC §7.2): a channel's messages over SSE, from any
//! process, none lost and none twice.
//!
//! ```text
//!  subscribe to the channel's topic ─► where to start: Last-Event-ID (replay after it; unknown
//!  or no longer retained: from the oldest, said in a comment) · ?from=oldest · else the
//!  channel's last message (live only)
//!   loop: doorbell `m` whose prev is the cursor ─► send it (unless its TTL passed)
//!         doorbell at or before the cursor ─► skip (read from the stream already)
//!         anything else, a Gap, a reconnect ─► re-read the stream after the cursor, a page at
//!                                               a time (a store outage: retry every second)
//!         `x` (deleted), `r` (this stream's grant revoked), the grant's expiry ─► end
//! ```
//!
//! The stream is a plain `Stream` (no task, no buffer of its own besides one page of re-read
//! messages), so an idle subscriber costs its connection, one hub receiver and this state. A
//! client that reads slowly stops being polled; its hub receiver lags, and it re-reads what it
//! missed from the stream when it reads again: it never blocks others and never skips silently.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::HeaderMap;
use understudy_core::channels::{
    ChannelDoc, ChannelSignal, Grant, Head, Position, StoredMessage, channel_topic, position_of,
};
use understudy_core::{Delivery, Subscription, now_ms};

use super::{Fail, chaos, labelled, query_map, read_token, tenant_of};
use crate::api::ApiError;
use crate::channels::{self as ops};
use crate::chaos::Fault;
use crate::sse::KEEP_ALIVE_EVERY;
use crate::state::App;

/// Messages read from the stream per re-read.
const PAGE: usize = 256;

/// Most payload bytes read from the stream per re-read (one message at least): what a replaying
/// subscriber holds at once.
const PAGE_BYTES: usize = 1024 * 1024;

/// How long a stream waits before re-reading after the store failed.
const RETRY: Duration = Duration::from_secs(1);

/// `GET /channel/v1/{visibility}/{id}`.
pub async fn subscribe(
    State(app): State<App>,
    Path((visibility, id)): Path<(String, String)>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    match open(app, &visibility, &id, query, &headers).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    }
}

async fn open(
    app: App,
    visibility: &str,
    id: &str,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: &HeaderMap,
) -> Result<Response, Fail> {
    let query = query_map(query)?;
    let channel = ops::live(&app, id).await?;
    // A private channel on the public URL (or the reverse) does not exist there.
    if channel.doc.visibility.as_str() != visibility {
        return Err(ApiError::not_found(format!(
            "channel '{id}' not found at /channel/v1/{}/",
            visibility
                .chars()
                .take(16)
                .collect::<String>()
                .escape_default()
        ))
        .into());
    }
    let grant = ops::reader(&app, &channel, read_token(headers, &query)).await?;
    let doc = Arc::new(channel.doc);
    let topic = channel_topic(doc.tenant.as_deref(), &doc.id)
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    // Subscribe first: whatever is published (or revoked) from here on rings this receiver, so
    // the grant checked again below and the start position read after leave no hole.
    let sub = app.stores.hub.subscribe(&topic).await;
    if let Some(g) = &grant {
        let still = app
            .stores
            .channels
            .get_grant(&doc.id, &g.id)
            .await
            .map_err(|e| ops::store_error(&app, e))?;
        if !still.is_some_and(|g| g.valid_at(now_ms())) {
            return Err(ApiError::forbidden("this read grant was revoked or has expired").into());
        }
    }
    let tenant = tenant_of(&app, &doc).await;
    let outcome = chaos(&app, tenant.as_ref()).await?;
    let mut pending = VecDeque::new();
    let (cursor, behind) = if let Some(last) = crate::sse::last_event_id(headers) {
        app.metrics.channels.resumed.inc();
        match position_of(&doc.id, &last) {
            Some(pos) if retained(&app, &doc, pos).await? => (Some(pos), true),
            _ => {
                pending.push_back(comment(&format!(
                    "Last-Event-ID {last} is not a message this channel retains; replaying from the oldest retained message"
                )));
                (None, true)
            }
        }
    } else if query.get("from").is_some_and(|f| f == "oldest") {
        app.metrics.channels.resumed.inc();
        (None, true)
    } else {
        // Live only: start after the channel's last message, read after subscribing.
        (ops::live(&app, &doc.id).await?.last, false)
    };
    let expires = grant.as_ref().and_then(|g| g.expires_ms);
    let follower = Follower {
        app: app.clone(),
        doc,
        grant,
        sub,
        cursor,
        behind,
        revalidate: false,
        pending,
        done: false,
        expires,
        sent: 0,
        fault: outcome.fault,
    };
    let events = futures::stream::unfold(follower, step);
    let resp = crate::sse::response(&app, "channels", events, Some(KEEP_ALIVE_EVERY));
    Ok(labelled(resp, tenant.as_ref()))
}

/// Whether `pos` is a message the channel still retains.
async fn retained(app: &App, doc: &ChannelDoc, pos: Position) -> Result<bool, ApiError> {
    let read = app
        .stores
        .channels
        .messages_after(&doc.id, Some(pos), 1, 0)
        .await
        .map_err(|e| ops::store_error(app, e))?;
    Ok(read.after_retained)
}

fn comment(text: &str) -> Bytes {
    let clean: String = text.chars().filter(|c| *c != '\n' && *c != '\r').collect();
    Bytes::from(format!(": {clean}\n\n"))
}

/// One subscriber's state.
struct Follower {
    app: App,
    doc: Arc<ChannelDoc>,
    /// The read grant it reads with (private channels; `None`: public, or the publish token).
    grant: Option<Grant>,
    sub: Subscription,
    /// The last position sent or passed over (`None`: before the oldest).
    cursor: Option<Position>,
    /// The stream holds messages after the cursor that were not sent yet: read them.
    behind: bool,
    /// Doorbells were missed: check the channel and grant still stand before reading.
    revalidate: bool,
    /// Events ready to go (one page at most).
    pending: VecDeque<Bytes>,
    /// Ends once `pending` is sent.
    done: bool,
    /// The grant's expiry (Unix ms).
    expires: Option<u64>,
    /// Events sent (chaos `afterChunks`).
    sent: u32,
    /// A stream fault the tenant's chaos profile injects.
    fault: Option<Fault>,
}

type Item = Result<Bytes, std::io::Error>;

async fn step(mut f: Follower) -> Option<(Item, Follower)> {
    loop {
        if let Some(b) = f.pending.pop_front() {
            return Some((Ok(b), f));
        }
        if f.done {
            return None;
        }
        if f.fault_due() && matches!(f.fault, Some(Fault::StreamCut(_))) {
            f.done = true;
            return Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "stream cut by chaos profile",
                )),
                f,
            ));
        }
        if f.expires.is_some_and(|e| now_ms() >= e) {
            f.end("the read grant expired");
            continue;
        }
        if f.behind {
            if let Err(e) = f.reread().await {
                f.app.metrics.redis_error("channels");
                tracing::debug!(error = %e, "channel re-read failed; retrying");
                tokio::time::sleep(RETRY).await;
            }
            continue;
        }
        let wait = f
            .expires
            .map(|e| Duration::from_millis(e.saturating_sub(now_ms())));
        let delivery = match wait {
            Some(w) => tokio::select! {
                d = f.sub.recv() => d,
                _ = tokio::time::sleep(w) => continue,
            },
            None => f.sub.recv().await,
        };
        match delivery {
            None => return None,
            Some(Delivery::Gap) => {
                f.app.metrics.channels.lagged.inc();
                f.behind = true;
                f.revalidate = true;
            }
            Some(Delivery::Message(b)) => f.ring(&b),
        }
    }
}

impl Follower {
    /// Whether the next event is where the injected stream fault goes.
    fn fault_due(&self) -> bool {
        match self.fault {
            Some(Fault::StreamCut(n)) | Some(Fault::Malformed(n)) => self.sent == n,
            _ => false,
        }
    }

    fn end(&mut self, why: &str) {
        self.pending
            .push_back(comment(&format!("stream ended: {why}")));
        self.done = true;
    }

    /// Queues a message (unless its TTL passed) and moves the cursor past it.
    fn push(&mut self, m: &StoredMessage, now: u64) {
        if m.live_at(now) {
            let frame = ops::frame(&self.doc.id, m);
            self.push_frame(m.pos, frame);
        } else {
            self.cursor = Some(m.pos);
        }
    }

    /// Queues a live message's frame and moves the cursor past it.
    fn push_frame(&mut self, pos: Position, frame: Bytes) {
        self.cursor = Some(pos);
        if self.fault_due() && matches!(self.fault, Some(Fault::Malformed(_))) {
            self.pending
                .push_back(Bytes::from_static(b"event: message\ndata: {\"id\":\n\n"));
            self.sent += 1;
        }
        self.pending.push_back(frame);
        self.sent = self.sent.saturating_add(1);
        self.app.metrics.channels.delivered.inc();
    }

    /// A doorbell. The message it carries is rendered once per process ([`ops::Frames`]).
    fn ring(&mut self, b: &[u8]) {
        let Some(head) = ChannelSignal::head(b) else {
            return;
        };
        let seen = |pos: Position, cursor: Option<Position>| cursor.is_some_and(|c| pos <= c);
        match head {
            Head::Message {
                pos,
                prev,
                expires_ms,
            } => {
                if seen(pos, self.cursor) {
                } else if prev != self.cursor {
                    self.behind = true;
                } else if expires_ms != 0 && now_ms() >= expires_ms {
                    self.cursor = Some(pos);
                } else {
                    let channel = &self.doc.id;
                    let frame = self.app.channel_frames.get_or_render(channel, pos, || {
                        match ChannelSignal::decode(b)? {
                            ChannelSignal::Message { message, .. } => {
                                Some(ops::frame(channel, &message))
                            }
                            _ => None,
                        }
                    });
                    match frame {
                        Some(f) => self.push_frame(pos, f),
                        None => self.behind = true,
                    }
                }
            }
            Head::Published { pos, .. } => {
                if !seen(pos, self.cursor) {
                    self.behind = true;
                }
            }
            Head::Deleted => self.end("the channel was deleted"),
            Head::Revoked(g) => {
                if self.grant.as_ref().is_some_and(|mine| mine.id == g) {
                    self.end("the read grant was revoked");
                }
            }
        }
    }

    /// Reads one page of the stream after the cursor.
    async fn reread(&mut self) -> Result<(), understudy_core::StoreError> {
        // Doorbells that rang meanwhile first: a revocation or deletion ends a replay at once.
        while let Some(d) = self.sub.try_recv() {
            match d {
                Delivery::Gap => {
                    self.app.metrics.channels.lagged.inc();
                    self.revalidate = true;
                }
                Delivery::Message(b) => self.ring(&b),
            }
            if self.done {
                return Ok(());
            }
        }
        let store = &self.app.stores.channels;
        if self.revalidate {
            match store.get_channel(&self.doc.id).await? {
                Some(c) if !c.deleted => {}
                _ => {
                    self.end("the channel was deleted");
                    return Ok(());
                }
            }
            if let Some(g) = &self.grant {
                match store.get_grant(&self.doc.id, &g.id).await? {
                    Some(g) if g.valid_at(now_ms()) => {}
                    _ => {
                        self.end("the read grant was revoked or expired");
                        return Ok(());
                    }
                }
            }
            self.revalidate = false;
        }
        let read = store
            .messages_after(&self.doc.id, self.cursor, PAGE, PAGE_BYTES)
            .await?;
        if !read.exists {
            self.end("the channel was deleted");
            return Ok(());
        }
        if let (Some(c), Some(first)) = (self.cursor, read.first)
            && !read.after_retained
            && first > c
        {
            self.pending.push_back(comment(
                "messages published before the oldest retained one were trimmed (retention cap) before this stream could send them",
            ));
        }
        let now = now_ms();
        for m in &read.messages {
            self.push(m, now);
        }
        self.behind = read.has_more;
        Ok(())
    }
}
