//! Server-sent events for every surface: event encoding with ids, `Last-Event-ID` parsing,
//! keep-alive comments, a bounded per-stream buffer, the per-surface open-stream gauge, and a
//! clean close when the process drains.
//!
//! ```text
//!  producer ─► Sender (bounded: `send` waits, `try_send` reports Full) ─┐
//!  or any Stream<Bytes> ──────────────────────────────────────────────────┼─► keep-alive ─► ends at
//!                                                                         │   comments      drain or
//!                                                     open-stream gauge ──┘   when idle     producer end
//! ```
//!
//! The LLM surface renders its whole answer up front and hands the bytes to [`response`];
//! surfaces whose events arrive over time (MCP streams, execute calls, channels, the audit tail)
//! use [`channel`].

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use tokio::sync::mpsc;

use crate::state::App;

/// The keep-alive comment.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// The usual keep-alive period (SPEC §4.2, §7.2: every 15 s).
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);

/// Longest `Last-Event-ID` accepted; a longer one is ignored (as if absent).
pub const MAX_LAST_EVENT_ID: usize = 256;

/// One event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event<'a> {
    /// `id:` — what a client sends back as `Last-Event-ID`.
    pub id: Option<&'a str>,
    /// `event:` — the event type (`message` when absent).
    pub event: Option<&'a str>,
    /// `data:` — split into one `data:` line per line of text.
    pub data: &'a str,
}

impl Event<'_> {
    /// Appends the event's wire form to `buf`.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        if let Some(id) = self.id {
            buf.extend_from_slice(b"id: ");
            push_line(buf, id);
        }
        if let Some(e) = self.event {
            buf.extend_from_slice(b"event: ");
            push_line(buf, e);
        }
        let data = self.data.strip_suffix('\n').unwrap_or(self.data);
        for line in data.split('\n') {
            buf.extend_from_slice(b"data: ");
            push_line(buf, line.strip_suffix('\r').unwrap_or(line));
        }
        buf.push(b'\n');
    }

    /// The event's wire form.
    pub fn encode(&self) -> Bytes {
        let mut buf = Vec::with_capacity(self.data.len() + 32);
        self.encode_into(&mut buf);
        Bytes::from(buf)
    }
}

/// One line with any CR or LF removed (a field value cannot span lines).
fn push_line(buf: &mut Vec<u8>, value: &str) {
    buf.extend(value.bytes().filter(|b| *b != b'\n' && *b != b'\r'));
    buf.push(b'\n');
}

/// The `Last-Event-ID` a reconnecting client sent: trimmed, printable ASCII, at most
/// [`MAX_LAST_EVENT_ID`] characters; anything else is ignored (as if absent).
pub fn last_event_id(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get("last-event-id")?.to_str().ok()?.trim();
    let ok = !raw.is_empty()
        && raw.len() <= MAX_LAST_EVENT_ID
        && raw.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    ok.then(|| raw.to_string())
}

/// What a stream following a durable log (an MCP session's, a call's) does when its doorbell
/// rings: the log is the truth, the doorbell only a shortcut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// The next event: send it as it came.
    Send,
    /// Already sent (read from the log before its doorbell arrived): nothing to do.
    Skip,
    /// A gap, a jump past the next event, or an event that came without its data: read the
    /// log after the cursor.
    ReRead,
}

impl Follow {
    /// The step for a doorbell carrying event `seq` (`None`: a gap, or no event inline) when
    /// the stream has sent up to `cursor`.
    pub fn after(cursor: u64, seq: Option<u64>) -> Follow {
        match seq {
            Some(s) if s <= cursor => Follow::Skip,
            Some(s) if s == cursor + 1 => Follow::Send,
            _ => Follow::ReRead,
        }
    }
}

/// Sets the SSE response headers.
pub fn headers(resp: &mut Response) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
}

/// A 200 SSE response whose body is `body` as is (no gauge: the LLM surface's unpaced answers,
/// written in one go).
pub fn whole(body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    headers(&mut resp);
    resp
}

/// A 200 SSE response streaming `events`: counted in the open-stream gauge of `surface` while it
/// lives, with a keep-alive comment after each `keep_alive` without an event (when given), and
/// ended cleanly when the process drains. An `Err` item aborts the connection (a broken stream,
/// as chaos wants it).
pub fn response<S>(
    app: &App,
    surface: &'static str,
    events: S,
    keep_alive: Option<Duration>,
) -> Response
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let guard = app.metrics.stream_guard(surface);
    let events = events.take_until(app.shutdown.clone().cancelled_owned());
    let body = match keep_alive {
        None => Body::from_stream(events.map(move |item| {
            let _held = &guard;
            item
        })),
        Some(every) => {
            Body::from_stream(with_keep_alive(events, every, KEEP_ALIVE).map(move |item| {
                let _held = &guard;
                item
            }))
        }
    };
    whole(body)
}

/// Like [`response`], with `comment` (a whole `: …\n\n` block) as the keep-alive every `every`
/// (the portal's audit tail sends `: keepalive`, as seed 004 has it).
pub fn response_with_keep_alive<S>(
    app: &App,
    surface: &'static str,
    events: S,
    every: Duration,
    comment: &'static [u8],
) -> Response
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let guard = app.metrics.stream_guard(surface);
    let events = events.take_until(app.shutdown.clone().cancelled_owned());
    whole(Body::from_stream(
        with_keep_alive(events, every, comment).map(move |item| {
            let _held = &guard;
            item
        }),
    ))
}

/// `events`, with a keep-alive comment whenever `every` passes without one.
fn with_keep_alive<S>(
    events: S,
    every: Duration,
    comment: &'static [u8],
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let events = Box::pin(events);
    futures::stream::unfold(events, move |mut events| async move {
        match tokio::time::timeout(every, events.next()).await {
            Ok(Some(item)) => Some((item, events)),
            Ok(None) => None,
            Err(_) => Some((Ok(Bytes::from_static(comment)), events)),
        }
    })
}

/// The producer side of a [`channel`] stream.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<Bytes>,
}

/// Why an event could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The client is gone (or the process drains): stop producing.
    Closed,
    /// The buffer is full: the client reads slower than events arrive. The producer decides
    /// (wait with [`Sender::send`], or drop the client and let it resume from its last id).
    Full,
}

impl Sender {
    /// Queues an event, waiting while the buffer is full (backpressure).
    pub async fn send(&self, event: &Event<'_>) -> Result<(), SendError> {
        self.tx
            .send(event.encode())
            .await
            .map_err(|_| SendError::Closed)
    }

    /// Queues a comment line (`: text`), which clients ignore: notes for whoever reads the raw
    /// stream (e.g. "events were dropped; replaying from …").
    pub async fn comment(&self, text: &str) -> Result<(), SendError> {
        let mut buf = Vec::with_capacity(text.len() + 4);
        buf.extend_from_slice(b": ");
        push_line(&mut buf, text);
        buf.push(b'\n');
        self.tx
            .send(Bytes::from(buf))
            .await
            .map_err(|_| SendError::Closed)
    }

    /// Queues an event if there is room.
    pub fn try_send(&self, event: &Event<'_>) -> Result<(), SendError> {
        self.tx.try_send(event.encode()).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }

    /// Whether the client is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Resolves when the client is gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A stream fed by a bounded buffer of `capacity` events: the usual way for a surface whose
/// events arrive over time. The stream ends when every [`Sender`] is dropped or the process
/// drains; the buffer bounds what one slow client can hold in memory.
pub fn channel(
    app: &App,
    surface: &'static str,
    capacity: usize,
    keep_alive: Option<Duration>,
) -> (Sender, Response) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(capacity.max(1));
    let events = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).map(Ok);
    (Sender { tx }, response(app, surface, events, keep_alive))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_fields_and_multiline_data() {
        let e = Event {
            id: Some("42"),
            event: Some("message"),
            data: "{\"a\":1}",
        };
        assert_eq!(
            &e.encode()[..],
            b"id: 42\nevent: message\ndata: {\"a\":1}\n\n"
        );
        let e = Event {
            data: "one\ntwo",
            ..Event::default()
        };
        assert_eq!(&e.encode()[..], b"data: one\ndata: two\n\n");
        // An id cannot smuggle a second field in.
        let e = Event {
            id: Some("1\nevent: x"),
            data: "d",
            ..Event::default()
        };
        assert_eq!(&e.encode()[..], b"id: 1event: x\ndata: d\n\n");
    }

    #[test]
    fn a_follower_sends_the_next_event_and_rereads_after_a_gap() {
        assert_eq!(Follow::after(4, Some(5)), Follow::Send);
        assert_eq!(Follow::after(4, Some(3)), Follow::Skip);
        assert_eq!(Follow::after(4, Some(4)), Follow::Skip);
        assert_eq!(Follow::after(4, Some(7)), Follow::ReRead);
        assert_eq!(Follow::after(4, None), Follow::ReRead);
    }

    #[test]
    fn last_event_id_is_bounded_and_printable() {
        let mut h = HeaderMap::new();
        assert_eq!(last_event_id(&h), None);
        h.insert("last-event-id", HeaderValue::from_static(" 17-3 "));
        assert_eq!(last_event_id(&h).as_deref(), Some("17-3"));
        h.insert(
            "last-event-id",
            HeaderValue::from_str(&"x".repeat(MAX_LAST_EVENT_ID + 1)).unwrap(),
        );
        assert_eq!(last_event_id(&h), None);
        h.insert("last-event-id", HeaderValue::from_static(""));
        assert_eq!(last_event_id(&h), None);
    }

    #[tokio::test(start_paused = true)]
    async fn keep_alive_fills_idle_time_and_ends_with_the_events() {
        let events = futures::stream::iter(vec![Ok(Bytes::from_static(b"data: 1\n\n"))]).chain(
            futures::stream::once(async {
                tokio::time::sleep(Duration::from_secs(40)).await;
                Ok(Bytes::from_static(b"data: 2\n\n"))
            }),
        );
        let out: Vec<Bytes> = with_keep_alive(events, Duration::from_secs(15), KEEP_ALIVE)
            .map(|r| r.unwrap())
            .collect()
            .await;
        let text: Vec<&[u8]> = out.iter().map(|b| &b[..]).collect();
        assert_eq!(
            text,
            vec![
                &b"data: 1\n\n"[..],
                KEEP_ALIVE,
                KEEP_ALIVE,
                &b"data: 2\n\n"[..]
            ]
        );
    }
}
