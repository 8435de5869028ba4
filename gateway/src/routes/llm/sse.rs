//! Server-sent events for streamed answers: a renderer produces the whole event plan up front
//! (the mock knows its answer), and this module paces it (TTFT, per-event delay, jitter) and
//! breaks it on demand (stream_cut, malformed_stream).
//!
//! Without pacing or faults the plan goes out in a single write: the cheapest possible stream.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, StatusCode, header};
use understudy_crds::Surface;

use crate::app::App;
use crate::chaos::{Fault, Outcome};
use crate::engine::settings::Settings;

/// One SSE event.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The `event:` name (Anthropic and Responses send one; Chat Completions does not).
    pub event: Option<&'static str>,
    /// The `data:` payload (one line of JSON, or `[DONE]`).
    pub data: String,
}

/// Every event of an answer, and where its content starts (TTFT applies there).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The events in order.
    pub frames: Vec<Frame>,
    /// Index of the first content event.
    pub content_start: usize,
}

impl Plan {
    /// Appends an event.
    pub fn push(&mut self, event: Option<&'static str>, data: String) {
        self.frames.push(Frame { event, data });
    }

    /// Marks the next event as the first content event.
    pub fn mark_content(&mut self) {
        self.content_start = self.frames.len();
    }

    /// The plan as SSE text (used by golden tests and the unpaced path).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.frames.iter().map(|f| f.data.len() + 32).sum());
        for f in &self.frames {
            encode_frame(f, &mut out);
        }
        out
    }
}

fn encode_frame(f: &Frame, out: &mut Vec<u8>) {
    if let Some(e) = f.event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(f.data.as_bytes());
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

/// Applies a mid-stream fault to a plan; returns where to cut (None: run to the end).
fn apply_fault(plan: &mut Plan, fault: Option<Fault>) -> Option<usize> {
    let last = plan.frames.len().saturating_sub(1);
    match fault {
        Some(Fault::StreamCut(after)) => Some((after as usize).min(last)),
        Some(Fault::Malformed(after)) => {
            let i = (after as usize).min(last);
            if let Some(f) = plan.frames.get_mut(i) {
                f.data = corrupt(&f.data);
            }
            None
        }
        Some(Fault::RateLimited { .. }) | Some(Fault::ServerError(_)) | None => None,
    }
}

fn sse_headers(resp: &mut Response) {
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

/// The streamed response for a plan, paced by the tenant's settings and broken by chaos.
pub fn respond(app: &App, mut plan: Plan, settings: &Settings, chaos: &Outcome) -> Response {
    let cut = apply_fault(&mut plan, chaos.fault);
    let paced = settings.paced() || chaos.latency.is_some() || cut.is_some();
    let body = if !paced {
        Body::from(plan.encode())
    } else {
        let guard = app.metrics.stream_guard(Surface::Llm);
        let ttft = Duration::from_millis(settings.stream_ttft_ms);
        let delay = Duration::from_millis(settings.stream_chunk_delay_ms);
        let jitter = settings.stream_jitter_ms;
        let latency = chaos.latency;
        let content_start = plan.content_start;
        let total = cut.unwrap_or(plan.frames.len());
        let frames: Vec<Frame> = plan.frames.into_iter().take(total).collect();
        let events =
            futures::stream::iter(frames.into_iter().enumerate()).then(move |(i, f)| async move {
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
                let mut out = Vec::with_capacity(f.data.len() + 32);
                encode_frame(&f, &mut out);
                Ok::<Bytes, std::io::Error>(Bytes::from(out))
            });
        // A cut stream ends with an error, which aborts the connection without the terminal
        // chunk: the client sees the stream break, as with a real dropped connection.
        let tail = futures::stream::iter(cut.map(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "stream cut by chaos profile",
            ))
        }));
        let shutdown = app.shutdown.clone();
        let stream = events
            .chain(tail)
            .take_until(shutdown.cancelled_owned())
            .map(move |item| {
                let _held = &guard;
                item
            });
        Body::from_stream(stream)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    sse_headers(&mut resp);
    resp
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
            p.push(Some("x"), format!("{{\"i\":{i}}}"));
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
        let bad: Vec<usize> = p
            .frames
            .iter()
            .enumerate()
            .filter(|(_, f)| serde_json::from_str::<serde_json::Value>(&f.data).is_err())
            .map(|(i, _)| i)
            .collect();
        assert_eq!(bad, vec![2]);
    }

    #[test]
    fn encode_writes_event_and_data_lines() {
        let mut p = Plan::default();
        p.push(Some("ping"), "{\"type\":\"ping\"}".into());
        p.push(None, "[DONE]".into());
        assert_eq!(
            String::from_utf8(p.encode()).unwrap(),
            "event: ping\ndata: {\"type\":\"ping\"}\n\ndata: [DONE]\n\n"
        );
    }
}
