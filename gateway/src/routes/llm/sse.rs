//! Server-sent events for streamed answers: a renderer builds the event plan up front (the mock
//! knows its answer), and this module paces it (TTFT, per-event delay, jitter) and breaks it on
//! demand (stream_cut, malformed_stream).
//!
//! The content events (the answer in pieces of `stream_chunk_chars`) are not encoded up front:
//! a plan holds the answer text once and renders each piece when the socket can take it, so a
//! stream holds the text plus at most [`BATCH_BYTES`] of encoded events, whatever the chunking
//! and however slowly the client reads. Small unpaced answers still go out in a single write.
//! Headers, the open-stream gauge and the close on drain come from [`crate::sse`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, header};

use crate::chaos::{Fault, Outcome};
use crate::engine::settings::Settings;
use crate::state::App;

/// Most encoded bytes a stream prepares before handing them to the socket (backpressure: the
/// next batch is rendered only when the connection asks for more).
pub const BATCH_BYTES: usize = 16 * 1024;

/// Below this encoded size an unpaced plan is written in one go (the fast path).
const ONE_WRITE_BYTES: usize = 64 * 1024;

/// Renders piece `i` of a run (`piece`: its text) as an event's `data:` payload.
type PieceRender = Box<dyn FnMut(usize, &str, &mut Vec<u8>) + Send>;

/// One stretch of a plan.
enum Item {
    /// Events encoded up front: `buf[ends[i-1]..ends[i]]` is event i (SSE framing included).
    Frames { buf: Vec<u8>, ends: Vec<usize> },
    /// The answer in pieces of `chunk` characters, rendered on demand.
    Pieces {
        event: Option<&'static str>,
        text: Arc<String>,
        chunk: usize,
        count: usize,
        render: PieceRender,
    },
}

impl Item {
    fn count(&self) -> usize {
        match self {
            Item::Frames { ends, .. } => ends.len(),
            Item::Pieces { count, .. } => *count,
        }
    }
}

/// Every event of an answer, in order, with where the content starts (TTFT applies there).
#[derive(Default)]
pub struct Plan {
    items: Vec<Item>,
    len: usize,
    content_start: usize,
    /// Event whose payload is sent as invalid JSON (malformed_stream).
    corrupt: Option<usize>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("events", &self.len)
            .field("content_start", &self.content_start)
            .finish()
    }
}

fn frame(out: &mut Vec<u8>, event: Option<&str>, write: impl FnOnce(&mut Vec<u8>)) {
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    write(out);
    out.extend_from_slice(b"\n\n");
}

impl Plan {
    /// An empty plan expecting about `bytes` of up-front events.
    pub fn with_capacity(bytes: usize) -> Self {
        Plan {
            items: vec![Item::Frames {
                buf: Vec::with_capacity(bytes.min(ONE_WRITE_BYTES)),
                ends: Vec::new(),
            }],
            ..Plan::default()
        }
    }

    /// Appends an event whose `data:` payload is `data` (one line).
    pub fn push(&mut self, event: Option<&str>, data: &str) {
        self.push_with(event, |buf| buf.extend_from_slice(data.as_bytes()));
    }

    /// Appends an event whose payload `write` appends to the buffer (no intermediate string).
    pub fn push_with(&mut self, event: Option<&str>, write: impl FnOnce(&mut Vec<u8>)) {
        if !matches!(self.items.last(), Some(Item::Frames { .. })) {
            self.items.push(Item::Frames {
                buf: Vec::new(),
                ends: Vec::new(),
            });
        }
        if let Some(Item::Frames { buf, ends }) = self.items.last_mut() {
            frame(buf, event, write);
            ends.push(buf.len());
            self.len += 1;
        }
    }

    /// Appends one event per piece of `chunk` characters of `text` (none for an empty text),
    /// rendered only when the stream reaches it: `render(i, piece, buf)` appends piece i's
    /// payload.
    pub fn push_pieces(
        &mut self,
        event: Option<&'static str>,
        text: Arc<String>,
        chunk: usize,
        render: impl FnMut(usize, &str, &mut Vec<u8>) + Send + 'static,
    ) -> usize {
        let chunk = chunk.max(1);
        let count = text.chars().count().div_ceil(chunk);
        if count > 0 {
            self.items.push(Item::Pieces {
                event,
                text,
                chunk,
                count,
                render: Box::new(render),
            });
            self.len += count;
        }
        count
    }

    /// Marks the next event as the first content event.
    pub fn mark_content(&mut self) {
        self.content_start = self.len;
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the plan holds no event.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole plan as SSE text (tests, and small answers written in one go).
    pub fn encode(self) -> Vec<u8> {
        let total = self.len;
        let mut cursor = Cursor::new(self, total);
        let mut out = Vec::new();
        while cursor.next_into(&mut out) {}
        out
    }

    /// The plan's single buffer when it holds up-front events only and nothing to corrupt.
    fn into_single_buffer(mut self) -> Result<Vec<u8>, Plan> {
        let single = self.corrupt.is_none()
            && self.items.len() == 1
            && matches!(self.items[0], Item::Frames { .. });
        match (single, self.items.pop()) {
            (true, Some(Item::Frames { buf, .. })) => Ok(buf),
            (_, item) => {
                self.items.extend(item);
                Err(self)
            }
        }
    }

    /// Roughly how many bytes the encoded plan takes (pieces: their text plus framing).
    fn estimated_bytes(&self) -> usize {
        self.items
            .iter()
            .map(|i| match i {
                Item::Frames { buf, .. } => buf.len(),
                Item::Pieces { text, count, .. } => text.len() + count * 160,
            })
            .sum()
    }
}

/// Walks a plan's events in order, rendering pieces as it goes.
struct Cursor {
    plan: Plan,
    /// Events to send (fewer than the plan's when the stream is cut).
    total: usize,
    item: usize,
    within: usize,
    /// Byte offset of the next piece in a `Pieces` run.
    offset: usize,
    index: usize,
}

impl Cursor {
    fn new(plan: Plan, total: usize) -> Self {
        Cursor {
            plan,
            total,
            item: 0,
            within: 0,
            offset: 0,
            index: 0,
        }
    }

    fn done(&self) -> bool {
        self.index >= self.total
    }

    /// Appends the next event to `out`; `false` when there is none left.
    fn next_into(&mut self, out: &mut Vec<u8>) -> bool {
        loop {
            if self.done() {
                return false;
            }
            let Some(item) = self.plan.items.get_mut(self.item) else {
                return false;
            };
            if self.within >= item.count() {
                self.item += 1;
                self.within = 0;
                self.offset = 0;
                continue;
            }
            let corrupt = self.plan.corrupt == Some(self.index);
            match item {
                Item::Frames { buf, ends } => {
                    let start = if self.within == 0 {
                        0
                    } else {
                        ends[self.within - 1]
                    };
                    let event = &buf[start..ends[self.within]];
                    if corrupt {
                        corrupt_frame(event, out);
                    } else {
                        out.extend_from_slice(event);
                    }
                }
                Item::Pieces {
                    event,
                    text,
                    chunk,
                    render,
                    ..
                } => {
                    let rest = &text[self.offset..];
                    let end = rest
                        .char_indices()
                        .nth(*chunk)
                        .map_or(rest.len(), |(i, _)| i);
                    let piece = &rest[..end];
                    self.offset += end;
                    if corrupt {
                        let mut tmp = Vec::new();
                        frame(&mut tmp, *event, |b| render(self.within, piece, b));
                        corrupt_frame(&tmp, out);
                    } else {
                        frame(out, *event, |b| render(self.within, piece, b));
                    }
                }
            }
            self.within += 1;
            self.index += 1;
            return true;
        }
    }
}

/// Writes `event` with its `data:` payload cut so it is no longer valid JSON.
fn corrupt_frame(event: &[u8], out: &mut Vec<u8>) {
    let at = event
        .windows(6)
        .position(|w| w == b"data: ")
        .map_or(0, |p| p + 6);
    let data = String::from_utf8_lossy(&event[at..event.len().saturating_sub(2)]).into_owned();
    out.extend_from_slice(&event[..at]);
    out.extend_from_slice(corrupt(&data).as_bytes());
    out.extend_from_slice(b"\n\n");
}

/// Cuts a payload so it is no longer valid JSON.
fn corrupt(data: &str) -> String {
    let mut cut = data.len() / 2;
    while !data.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut s = data[..cut].to_string();
    if s.is_empty() || serde_json::from_str::<serde_json::Value>(&s).is_ok() {
        s.push_str("{\"");
    }
    s
}

/// Applies a mid-stream fault to a plan; returns how many events to send before cutting.
fn apply_fault(plan: &mut Plan, fault: Option<Fault>) -> Option<usize> {
    let last = plan.len().saturating_sub(1);
    match fault {
        Some(Fault::StreamCut(after)) => Some((after as usize).min(last)),
        Some(Fault::Malformed(after)) => {
            if !plan.is_empty() {
                plan.corrupt = Some((after as usize).min(last));
            }
            None
        }
        Some(Fault::RateLimited { .. }) | Some(Fault::ServerError(_)) | None => None,
    }
}

/// How long a cut stream waits after its last event before aborting the connection.
const CUT_FLUSH_PAUSE: Duration = Duration::from_millis(50);

/// The streamed response for a plan, paced by the tenant's settings and broken by chaos.
pub fn respond(app: &App, mut plan: Plan, settings: &Settings, chaos: &Outcome) -> Response {
    let cut = apply_fault(&mut plan, chaos.fault);
    let paced = settings.paced() || chaos.latency.is_some() || cut.is_some();
    if !paced {
        let plan = match plan.into_single_buffer() {
            Ok(buf) => return crate::sse::whole(Body::from(buf)),
            Err(plan) => plan,
        };
        if plan.estimated_bytes() <= ONE_WRITE_BYTES {
            return crate::sse::whole(Body::from(plan.encode()));
        }
        // Large: rendered batch by batch as the socket drains.
        let total = plan.len();
        let batches = futures::stream::unfold(Cursor::new(plan, total), |mut cursor| async move {
            let mut out = Vec::with_capacity(BATCH_BYTES + 1024);
            while out.len() < BATCH_BYTES && cursor.next_into(&mut out) {}
            if out.is_empty() {
                return None;
            }
            Some((Ok::<Bytes, std::io::Error>(Bytes::from(out)), cursor))
        });
        return crate::sse::response(app, "llm", batches, None);
    }
    let ttft = Duration::from_millis(settings.stream_ttft_ms);
    let delay = Duration::from_millis(settings.stream_chunk_delay_ms);
    let jitter = settings.stream_jitter_ms;
    let latency = chaos.latency;
    let content_start = plan.content_start;
    let total = cut.unwrap_or(plan.len());
    let events = futures::stream::unfold(Cursor::new(plan, total), move |mut cursor| async move {
        if cursor.done() {
            return None;
        }
        let i = cursor.index;
        let mut wait = Duration::ZERO;
        if i == 0
            && let Some(l) = latency
        {
            wait += l;
        }
        if i == content_start {
            wait += ttft;
        }
        if i > 0 {
            wait += delay;
        }
        if jitter > 0 {
            wait += Duration::from_millis(fastrand::u64(0..=jitter));
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let mut out = Vec::new();
        cursor.next_into(&mut out);
        Some((Ok::<Bytes, std::io::Error>(Bytes::from(out)), cursor))
    });
    // A cut stream ends with an error, which aborts the connection without the terminal
    // chunk: the client sees the stream break, as with a real dropped connection.
    // The pause lets the server flush the events before the abort discards its buffer.
    let tail = futures::stream::iter(cut).then(|_| async {
        tokio::time::sleep(CUT_FLUSH_PAUSE).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "stream cut by chaos profile",
        ))
    });
    crate::sse::response(app, "llm", events.chain(tail), None)
}

/// A non-streamed JSON answer with chaos applied: latency was already waited for by the caller;
/// stream_cut closes the connection before a response, malformed_stream sends invalid JSON.
pub fn respond_json(body: impl Into<bytes::Bytes>, chaos: &Outcome) -> Response {
    let body: bytes::Bytes = body.into();
    let body = match chaos.fault {
        Some(Fault::StreamCut(_)) => crate::chaos::aborted_body(),
        Some(Fault::Malformed(_)) => {
            let text = String::from_utf8_lossy(&body).into_owned();
            Body::from(corrupt(&text))
        }
        Some(Fault::RateLimited { .. }) | Some(Fault::ServerError(_)) | None => Body::from(body),
    };
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: usize) -> Plan {
        let mut p = Plan::default();
        for i in 0..n {
            p.push(Some("x"), &format!("{{\"i\":{i}}}"));
        }
        p
    }

    /// The `data:` payloads of an encoded plan.
    fn datas(p: Plan) -> Vec<String> {
        String::from_utf8(p.encode())
            .unwrap()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.split("data: ").nth(1).unwrap_or("").to_string())
            .collect()
    }

    #[test]
    fn cut_keeps_after_chunks_events() {
        let mut p = plan(10);
        assert_eq!(apply_fault(&mut p, Some(Fault::StreamCut(3))), Some(3));
        let mut p = plan(2);
        assert_eq!(
            apply_fault(&mut p, Some(Fault::StreamCut(30))),
            Some(1),
            "never the terminal event"
        );
    }

    #[test]
    fn malformed_corrupts_exactly_one_event() {
        let mut p = plan(3);
        p.push_pieces(
            Some("x"),
            Arc::new("abcdef".to_string()),
            2,
            |i, piece, b| {
                b.extend_from_slice(format!("{{\"p\":{i},\"t\":\"{piece}\"}}").as_bytes())
            },
        );
        assert_eq!(apply_fault(&mut p, Some(Fault::Malformed(4))), None);
        let d = datas(p);
        let bad: Vec<usize> = (0..d.len())
            .filter(|&i| serde_json::from_str::<serde_json::Value>(&d[i]).is_err())
            .collect();
        assert_eq!(bad, vec![4], "{d:?}");
        assert_eq!(d[5], "{\"p\":2,\"t\":\"ef\"}", "later events intact");
    }

    #[test]
    fn pieces_are_rendered_in_order_between_frames() {
        let mut p = Plan::default();
        p.push(Some("ping"), "{\"type\":\"ping\"}");
        p.mark_content();
        let n = p.push_pieces(
            None,
            Arc::new("héllo wörld".to_string()),
            4,
            |i, piece, b| b.extend_from_slice(format!("{i}:{piece}").as_bytes()),
        );
        p.push(None, "[DONE]");
        assert_eq!((n, p.len(), p.content_start), (3, 5, 1));
        assert_eq!(
            String::from_utf8(p.encode()).unwrap(),
            "event: ping\ndata: {\"type\":\"ping\"}\n\ndata: 0:héll\n\ndata: 1:o wö\n\ndata: 2:rld\n\ndata: [DONE]\n\n"
        );
    }

    #[test]
    fn a_cursor_stops_at_the_cut() {
        let mut p = plan(1);
        p.push_pieces(None, Arc::new("abcdefgh".to_string()), 1, |_, piece, b| {
            b.extend_from_slice(piece.as_bytes())
        });
        let mut c = Cursor::new(p, 4);
        let mut out = Vec::new();
        while c.next_into(&mut out) {}
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "event: x\ndata: {\"i\":0}\n\ndata: a\n\ndata: b\n\ndata: c\n\n"
        );
    }
}
