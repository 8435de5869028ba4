//! Server-sent events for streamed answers: a renderer produces the whole event plan up front
//! (the mock knows its answer), and this module paces it (TTFT, per-event delay, jitter) and
//! breaks it on demand (stream_cut, malformed_stream).
//!
//! Without pacing or faults the plan goes out in a single write: the cheapest possible stream.
//! Headers, the open-stream gauge and the close on drain come from [`crate::sse`].

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, header};

use crate::chaos::{Fault, Outcome};
use crate::engine::settings::Settings;
use crate::state::App;

/// Every event of an answer, already encoded as SSE text in one buffer, with the end offset of
/// each event and where the content starts (TTFT applies there). Encoding once means the unpaced
/// path is a single write of this buffer and the paced path sends zero-copy slices of it.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    buf: Vec<u8>,
    ends: Vec<usize>,
    content_start: usize,
}

impl Plan {
    /// A plan with room for `bytes` of encoded events.
    pub fn with_capacity(bytes: usize) -> Self {
        Plan {
            buf: Vec::with_capacity(bytes),
            ends: Vec::new(),
            content_start: 0,
        }
    }

    /// Appends an event whose `data:` payload is `data` (one line).
    pub fn push(&mut self, event: Option<&str>, data: &str) {
        self.push_with(event, |buf| buf.extend_from_slice(data.as_bytes()));
    }

    /// Appends an event whose payload `write` appends to the buffer (no intermediate string).
    pub fn push_with(&mut self, event: Option<&str>, write: impl FnOnce(&mut Vec<u8>)) {
        if let Some(e) = event {
            self.buf.extend_from_slice(b"event: ");
            self.buf.extend_from_slice(e.as_bytes());
            self.buf.push(b'\n');
        }
        self.buf.extend_from_slice(b"data: ");
        write(&mut self.buf);
        self.buf.extend_from_slice(b"\n\n");
        self.ends.push(self.buf.len());
    }

    /// Marks the next event as the first content event.
    pub fn mark_content(&mut self) {
        self.content_start = self.ends.len();
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the plan holds no event.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The whole plan as SSE text.
    pub fn encode(&self) -> &[u8] {
        &self.buf
    }

    fn range(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        start..self.ends[i]
    }

    /// The `data:` payload of event `i`.
    pub fn data(&self, i: usize) -> &[u8] {
        let frame = &self.buf[self.range(i)];
        let at = frame
            .windows(6)
            .position(|w| w == b"data: ")
            .map_or(0, |p| p + 6);
        &frame[at..frame.len() - 2]
    }

    /// Replaces event `i`'s payload with invalid JSON (malformed_stream).
    fn corrupt(&mut self, i: usize) {
        let range = self.range(i);
        let frame = self.buf[range.clone()].to_vec();
        let at = frame
            .windows(6)
            .position(|w| w == b"data: ")
            .map_or(0, |p| p + 6);
        let data = String::from_utf8_lossy(&frame[at..frame.len() - 2]).into_owned();
        let mut replacement = frame[..at].to_vec();
        replacement.extend_from_slice(corrupt(&data).as_bytes());
        replacement.extend_from_slice(b"\n\n");
        let delta = replacement.len() as isize - range.len() as isize;
        self.buf.splice(range, replacement);
        for end in &mut self.ends[i..] {
            *end = (*end as isize + delta) as usize;
        }
    }
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
                plan.corrupt((after as usize).min(last));
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
        return crate::sse::whole(Body::from(plan.buf));
    }
    {
        let ttft = Duration::from_millis(settings.stream_ttft_ms);
        let delay = Duration::from_millis(settings.stream_chunk_delay_ms);
        let jitter = settings.stream_jitter_ms;
        let latency = chaos.latency;
        let content_start = plan.content_start;
        let total = cut.unwrap_or(plan.len());
        let ranges: Vec<_> = (0..total).map(|i| plan.range(i)).collect();
        let buf = Bytes::from(plan.buf);
        let events =
            futures::stream::iter(ranges.into_iter().enumerate()).then(move |(i, range)| {
                let frame = buf.slice(range);
                async move {
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
                    Ok::<Bytes, std::io::Error>(frame)
                }
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
}

/// A non-streamed JSON answer with chaos applied: latency was already waited for by the caller;
/// stream_cut closes the connection before a response, malformed_stream sends invalid JSON.
pub fn respond_json(body: Vec<u8>, chaos: &Outcome) -> Response {
    let body = match chaos.fault {
        Some(Fault::StreamCut(_)) => Body::from_stream(futures::stream::once(async {
            Err::<Bytes, _>(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "connection closed by chaos profile",
            ))
        })),
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
        let mut p = plan(6);
        assert_eq!(apply_fault(&mut p, Some(Fault::Malformed(2))), None);
        let bad: Vec<usize> = (0..p.len())
            .filter(|&i| serde_json::from_slice::<serde_json::Value>(p.data(i)).is_err())
            .collect();
        assert_eq!(bad, vec![2]);
        assert_eq!(p.data(5), b"{\"i\":5}", "later events intact");
    }

    #[test]
    fn encode_writes_event_and_data_lines() {
        let mut p = Plan::default();
        p.push(Some("ping"), "{\"type\":\"ping\"}");
        p.push(None, "[DONE]");
        assert_eq!(
            String::from_utf8(p.encode().to_vec()).unwrap(),
            "event: ping\ndata: {\"type\":\"ping\"}\n\ndata: [DONE]\n\n"
        );
        assert_eq!(p.data(1), b"[DONE]");
    }
}
