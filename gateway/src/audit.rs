//! Writing the audit log (SPEC §9.1) off the request path: surfaces hand a [`Record`] to the
//! [`Auditor`], which only queues it (a full queue drops it and counts the drop); one writer task
//! per process drains the queue in batches, redacts and bounds the payloads, stores them through
//! the [`understudy_core::audit::AuditStore`] and rings the live tail on the hub, so a tail opened
//! on any process sees events from every process.
//!
//! ```text
//!  surface ─► Record (raw bytes, cheap clones) ─► bounded queue ─► writer: redact, bound, batch
//!                                                   │ full: dropped{queue_full}   │
//!                                                   ▼                             ▼
//!                                  AuditStore::append_audit (dropped{store})  hub "audit/tail"
//! ```
//!
//! What a handler learns along the way (the matched scenario, an injected fault, the request and
//! the answer) it notes with [`note`] inside a [`capture`] scope, so the surfaces share one way
//! of reporting and none of them threads audit state through its own code.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aho_corasick::AhoCorasick;
use bytes::Bytes;
use http::HeaderMap;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use understudy_core::Stores;
use understudy_core::audit::{AuditEntry, AuditEvent, AuditPayload, Raw, canonical_header, raw};

use crate::identity::{AuthType, Identity};
use crate::metrics::Metrics;

/// Events stored per batch at most.
const BATCH: usize = 1_024;
/// How long the writer waits for more events after the first of a batch (the live tail's delay).
const LINGER: Duration = Duration::from_millis(20);
/// Largest payload field kept, serialised; a larger one is replaced by a note of its size.
pub const FIELD_MAX_BYTES: usize = 64 * 1024;
/// How often retention is enforced.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// What a redacted value reads.
pub const REDACTED: &str = "[REDACTED]";

/// The audit options (`--audit*`).
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Whether events are recorded at all.
    pub enabled: bool,
    /// How long events are kept.
    pub retention: Duration,
    /// Most events kept.
    pub max_events: usize,
    /// Most events waiting to be written.
    pub queue: usize,
    /// Whether payload rows (request, answer, headers) are kept, or summaries only.
    pub payloads: bool,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            enabled: true,
            retention: Duration::from_secs(7 * 86_400),
            max_events: 100_000,
            queue: 10_000,
            payloads: true,
        }
    }
}

/// Something captured from a request or an answer, kept as cheaply as it came.
#[derive(Debug, Clone, Default)]
pub enum Captured {
    /// Nothing.
    #[default]
    None,
    /// A JSON value.
    Json(Value),
    /// Raw JSON bytes (parsed by the writer, off the request path).
    Raw(Bytes),
}

impl Captured {
    fn into_value(self) -> Option<Value> {
        match self {
            Captured::None => None,
            Captured::Json(v) => Some(v),
            Captured::Raw(b) => Some(
                serde_json::from_slice(&b)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into_owned())),
            ),
        }
    }

    fn is_none(&self) -> bool {
        matches!(self, Captured::None)
    }
}

/// Who made a request, as audit records it.
#[derive(Debug, Clone)]
pub struct Who {
    /// The identity (`None`: anonymous).
    pub user: Option<String>,
    /// How it authenticated.
    pub auth_type: AuthType,
}

impl Who {
    /// Nobody.
    pub fn anonymous() -> Who {
        Who {
            user: None,
            auth_type: AuthType::Anonymous,
        }
    }
}

/// Who sent a request, by its credential (anonymous without one, or with one that is refused:
/// the refusal is the request's own business, recorded as its status).
pub fn who_of(app: &crate::state::AppState, headers: &HeaderMap) -> Who {
    match crate::identity::credential(headers) {
        None => Who::anonymous(),
        // The keys at hand only: recording never waits for the issuer.
        Some(secret) => match app.identity.principal(secret) {
            Ok(p) => Who::from(&p.identity()),
            Err(_) => Who::anonymous(),
        },
    }
}

impl From<&Identity> for Who {
    fn from(id: &Identity) -> Who {
        Who {
            user: id.subject.clone(),
            auth_type: id.auth_type,
        }
    }
}

/// One event as a surface reports it.
#[derive(Debug, Clone)]
pub struct Record {
    /// The tenant.
    pub tenant: Option<String>,
    /// The tool, or `llm.*`, or `chaos.*`.
    pub tool: String,
    /// The caller.
    pub who: Who,
    /// The MCP session.
    pub session: Option<String>,
    /// mcp, hosted, execute, llm, channels, portal-replay, portal-tryit.
    pub source: &'static str,
    /// The MCP transport.
    pub transport: Option<&'static str>,
    /// Whether it succeeded.
    pub success: bool,
    /// When it began.
    pub started: Instant,
    /// The HTTP status, when it has its own.
    pub status: Option<u16>,
    /// A short error text.
    pub error: Option<String>,
    /// What the handler noted.
    pub note: Note,
    /// Request headers (redacted by the writer).
    pub headers: Option<HeaderMap>,
    /// The error answered.
    pub response_error: Captured,
    /// The event replayed.
    pub replayed_from: Option<String>,
    /// The event's id, when the caller must know it in advance (else made from its end time).
    pub id: Option<String>,
    /// Unix ms of its end (set when recorded).
    pub ended_ms: u64,
    /// Its duration (set when recorded).
    pub duration: Option<Duration>,
}

impl Record {
    /// A record of `tool` by `who`, begun at `started`, succeeded unless told otherwise.
    pub fn new(source: &'static str, tool: impl Into<String>, who: Who, started: Instant) -> Self {
        Record {
            tenant: None,
            tool: tool.into(),
            who,
            session: None,
            source,
            transport: None,
            success: true,
            started,
            status: None,
            error: None,
            note: Note::default(),
            headers: None,
            response_error: Captured::None,
            replayed_from: None,
            id: None,
            ended_ms: 0,
            duration: None,
        }
    }
}

/// What a handler noted while it ran.
#[derive(Debug, Clone, Default)]
pub struct Note {
    /// The scenario that answered.
    pub scenario: Option<String>,
    /// The fault injected.
    pub chaos: Option<&'static str>,
    /// The request parameters.
    pub params: Captured,
    /// The result.
    pub result: Captured,
    /// The error answered, in a few words.
    pub error: Option<String>,
}

tokio::task_local! {
    static NOTE: RefCell<Note>;
}

/// Runs `fut` with a note scope and returns what was noted in it with its output.
pub async fn capture<F: std::future::Future>(fut: F) -> (Note, F::Output) {
    NOTE.scope(RefCell::new(Note::default()), async move {
        let out = fut.await;
        let note = NOTE.with(|n| std::mem::take(&mut *n.borrow_mut()));
        (note, out)
    })
    .await
}

/// Notes something about the request being captured (nothing happens outside a capture).
pub fn note(f: impl FnOnce(&mut Note)) {
    let _ = NOTE.try_with(|n| f(&mut n.borrow_mut()));
}

/// Whether a capture is under way (so a handler only copies what will be used).
pub fn capturing() -> bool {
    NOTE.try_with(|_| ()).is_ok()
}

/// The process's audit queue.
pub struct Auditor {
    enabled: bool,
    tx: mpsc::Sender<Record>,
    rx: Mutex<Option<mpsc::Receiver<Record>>>,
    metrics: Arc<Metrics>,
    options: AuditOptions,
    /// Secrets to blank wherever they appear (the admin token, the OIDC client secret).
    secrets: Vec<String>,
    /// Finds, in one pass over raw JSON, anything redaction might have to touch: only then is
    /// the document parsed and walked.
    suspects: AhoCorasick,
}

/// What makes raw JSON worth a closer look: the ends of credential-like keys, the starts of
/// Understudy's credentials and JWTs.
const SUSPECTS: &[&str] = &[
    "token\"",
    "secret\"",
    "password\"",
    "passwd\"",
    "apikey\"",
    "api_key\"",
    "api-key\"",
    "authorization\"",
    "credential\"",
    "credentials\"",
    "cookie\"",
    "privatekey\"",
    "private_key\"",
    "private-key\"",
    "\"usk_",
    "\"pub_",
    "\"rdg_",
    "\"eyJ",
    "\"bearer ",
    "\\u",
];

impl Auditor {
    /// A queue of `options.queue` events; the writer starts with [`Auditor::run`].
    pub fn new(options: AuditOptions, metrics: Arc<Metrics>, secrets: Vec<String>) -> Self {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let patterns: Vec<&str> = SUSPECTS
            .iter()
            .copied()
            .chain(secrets.iter().map(String::as_str).filter(|s| !s.is_empty()))
            .collect();
        // A DFA without prefilter: every pattern holds a quote, which JSON is full of, so a
        // prefilter would stop at every one.
        let suspects = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .prefilter(false)
            .build(patterns)
            .expect("fixed patterns build");
        Auditor {
            enabled: options.enabled,
            tx,
            rx: Mutex::new(Some(rx)),
            metrics,
            options,
            secrets,
            suspects,
        }
    }

    /// Whether events are recorded (surfaces skip all capture work otherwise).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether payload rows are kept (capturing them is skipped otherwise).
    pub fn payloads(&self) -> bool {
        self.options.payloads
    }

    /// The options.
    pub fn options(&self) -> &AuditOptions {
        &self.options
    }

    /// Queues an event; never waits: a full queue drops it and counts the drop. Its time and
    /// duration are taken now, not when the writer gets to it.
    pub fn record(&self, mut r: Record) {
        if !self.enabled {
            return;
        }
        r.ended_ms = understudy_core::now_ms();
        r.duration = Some(r.started.elapsed());
        if self.tx.try_send(r).is_err() {
            self.metrics.audit.dropped_queue_full.inc();
        }
    }

    /// The writer: drains the queue in batches into the store until `stop`, then writes what is
    /// still queued; enforces retention every few seconds.
    pub async fn run(self: Arc<Self>, stores: Stores, stop: CancellationToken) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    // Linger a moment so a busy process writes few large batches (one store
                    // round trip each) rather than many small ones.
                    if batch.len() < BATCH {
                        tokio::select! {
                            _ = tokio::time::sleep(LINGER) => {}
                            _ = stop.cancelled() => {}
                        }
                        while batch.len() < BATCH {
                            match rx.try_recv() {
                                Ok(r) => batch.push(r),
                                Err(_) => break,
                            }
                        }
                    }
                    self.write(&stores, std::mem::take(&mut batch)).await;
                }
                _ = prune.tick() => self.prune(&stores).await,
                _ = stop.cancelled() => {
                    while let Ok(r) = rx.try_recv() {
                        batch.push(r);
                        if batch.len() == BATCH {
                            self.write(&stores, std::mem::take(&mut batch)).await;
                        }
                    }
                    self.write(&stores, batch).await;
                    return;
                }
            }
        }
    }

    async fn write(&self, stores: &Stores, batch: Vec<Record>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let entries: Vec<AuditEntry> = batch.into_iter().map(|r| self.entry(r)).collect();
        match stores.audit.append_audit(entries).await {
            Ok(()) => self.metrics.audit.written.inc_by(n),
            Err(e) => {
                self.metrics.audit.dropped_store.inc_by(n);
                self.metrics.redis_error("audit_append");
                tracing::debug!(error = %e, events = n, "audit events dropped: the store refused them");
            }
        }
    }

    async fn prune(&self, stores: &Stores) {
        let min_ms = understudy_core::now_ms()
            .saturating_sub(self.options.retention.as_millis().min(u64::MAX as u128) as u64);
        // At most 200 batches of 1,000 per tick (20,000 events/s), yielding between them.
        for _ in 0..200 {
            tokio::task::yield_now().await;
            match stores
                .audit
                .prune_audit(min_ms, self.options.max_events, 1_000)
                .await
            {
                Ok(1_000) => continue,
                Ok(_) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "audit retention could not run");
                    return;
                }
            }
        }
    }

    /// Builds the stored entry: redacted, bounded, with its id and time.
    pub fn entry(&self, mut r: Record) -> AuditEntry {
        let ms = if r.ended_ms > 0 {
            r.ended_ms
        } else {
            understudy_core::now_ms()
        };
        let took = r.duration.unwrap_or_else(|| r.started.elapsed());
        let duration_ms = (took.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
        if !self.options.payloads {
            r.note.params = Captured::None;
            r.note.result = Captured::None;
            r.response_error = Captured::None;
            r.headers = None;
        }
        let has_payload = !r.note.params.is_none()
            || !r.note.result.is_none()
            || !r.response_error.is_none()
            || r.headers.is_some()
            || r.replayed_from.is_some();
        let payload = has_payload.then(|| AuditPayload {
            request_params: self.field(r.note.params),
            request_headers: r.headers.as_ref().map(|h| self.headers(h)),
            response_result: self.field(r.note.result),
            response_error: self.field(r.response_error),
            notifications: None,
            replayed_from: r.replayed_from.clone(),
        });
        let error = r.error.map(|e| self.scrub_text(clip(&e, 500)));
        // Client-chosen names are bounded: they end up in index keys and on every tail.
        let tool = clip_owned(r.tool, 256);
        let session = r.session.map(|s| clip_owned(s, 256));
        AuditEntry {
            event: AuditEvent {
                id: r.id.unwrap_or_else(|| understudy_core::audit::new_id(ms)),
                ts: understudy_core::audit::rfc3339_ms(ms),
                tenant: r.tenant,
                tool,
                user: r.who.user,
                session,
                auth_type: auth_type_label(r.who.auth_type).into(),
                source: r.source.into(),
                success: r.success,
                duration_ms,
                transport: r.transport.map(String::from),
                scenario: r.note.scenario,
                chaos: r.note.chaos.map(String::from),
                status: r.status,
                error,
            },
            payload,
        }
    }

    /// A payload field: redacted, at most [`FIELD_MAX_BYTES`], as JSON text. Raw bytes with
    /// nothing that looks like a credential are kept as they came (validated, never parsed into
    /// a tree); anything else is parsed, redacted and written again.
    fn field(&self, c: Captured) -> Option<Raw> {
        let cut = |size: usize| Some(raw(&serde_json::json!({"_truncated": true, "bytes": size})));
        match c {
            Captured::None => None,
            Captured::Raw(b) => {
                if b.len() > FIELD_MAX_BYTES {
                    return cut(b.len());
                }
                if !self.suspects.is_match(&b[..])
                    && let Ok(text) = std::str::from_utf8(&b)
                    && let Ok(r) = serde_json::value::RawValue::from_string(text.to_owned())
                {
                    return Some(r);
                }
                let mut v = Captured::Raw(b).into_value()?;
                self.redact(&mut v, 0);
                Some(raw(&v))
            }
            Captured::Json(mut v) => {
                self.redact(&mut v, 0);
                let r = raw(&v);
                if r.get().len() > FIELD_MAX_BYTES {
                    return cut(r.get().len());
                }
                Some(r)
            }
        }
    }

    /// Blanks credentials: values under credential-like keys, and strings that look like one of
    /// Understudy's secrets (API keys, channel tokens, JWTs, the admin token).
    pub fn redact(&self, v: &mut Value, depth: usize) {
        match v {
            Value::Object(o) => {
                for (k, val) in o.iter_mut() {
                    if secret_key(k) && !val.is_null() {
                        *val = Value::String(REDACTED.into());
                    } else if depth < 64 {
                        self.redact(val, depth + 1);
                    } else {
                        *val = Value::String(REDACTED.into());
                    }
                }
            }
            Value::Array(a) => {
                for val in a {
                    if depth < 64 {
                        self.redact(val, depth + 1);
                    } else {
                        *val = Value::String(REDACTED.into());
                    }
                }
            }
            Value::String(s) if self.secret_value(s) => *s = REDACTED.into(),
            Value::String(s) => {
                // JSON inside a string (a tool result's text copy of its structured content):
                // redacted as JSON.
                let t = s.trim_start();
                if (t.starts_with('{') || t.starts_with('['))
                    && depth < 64
                    && let Ok(mut inner) = serde_json::from_str::<Value>(s)
                {
                    let before = inner.clone();
                    self.redact(&mut inner, depth + 1);
                    if inner != before {
                        *s = inner.to_string();
                    }
                    return;
                }
                if let Some(clean) = scrub_words(s) {
                    *s = clean;
                }
            }
            _ => {}
        }
    }

    fn secret_value(&self, s: &str) -> bool {
        looks_like_credential(s) || self.secrets.iter().any(|x| !x.is_empty() && s.contains(x))
    }

    fn scrub_text(&self, s: String) -> String {
        let mut s = scrub_words(&s).unwrap_or(s);
        for x in &self.secrets {
            if !x.is_empty() && s.contains(x.as_str()) {
                s = s.replace(x.as_str(), REDACTED);
            }
        }
        s
    }

    fn headers(&self, h: &HeaderMap) -> Raw {
        let mut out: Vec<u8> = Vec::with_capacity(64 * h.keys_len() + 2);
        out.push(b'{');
        for (i, name) in h.keys().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut out, &canonical_header(name.as_str()));
            out.extend_from_slice(b":[");
            for (j, v) in h.get_all(name).iter().enumerate() {
                if j > 0 {
                    out.push(b',');
                }
                let text = String::from_utf8_lossy(v.as_bytes());
                let shown = if secret_header(name.as_str()) || self.secret_value(&text) {
                    REDACTED
                } else {
                    clip_str(&text, 1024)
                };
                let _ = serde_json::to_writer(&mut out, shown);
            }
            out.push(b']');
        }
        out.push(b'}');
        String::from_utf8(out)
            .ok()
            .and_then(|s| serde_json::value::RawValue::from_string(s).ok())
            .unwrap_or_else(understudy_core::audit::raw_null)
    }
}

/// `s` cut to `max` characters, reusing it when it fits.
fn clip_owned(mut s: String, max: usize) -> String {
    let keep = clip_str(&s, max).len();
    s.truncate(keep);
    s
}

/// `s` cut to `max` characters (no copy).
fn clip_str(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `auth_type` as SPEC §11 spells it.
pub fn auth_type_label(a: AuthType) -> &'static str {
    match a {
        AuthType::Anonymous => "anonymous",
        AuthType::ApiKey => "api_key",
        AuthType::AdminToken => "admin_token",
        AuthType::Oidc => "oidc",
        AuthType::Session => "session",
    }
}

/// `s` cut to `max` characters, with `…` when cut.
fn clip(s: &str, max: usize) -> String {
    match clip_str(s, max) {
        kept if kept.len() == s.len() => s.to_string(),
        kept => format!("{kept}…"),
    }
}

/// Whether a header carries a credential: by name.
pub fn secret_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["token", "secret", "key", "auth", "cookie", "password"]
        .iter()
        .any(|w| n.contains(w))
}

/// Whether an object key names a credential (`max_tokens` does not: exact names and suffixes,
/// separators ignored).
pub fn secret_key(key: &str) -> bool {
    // Lower-cased, separators dropped, into a stack buffer (keys are checked by the thousand).
    let mut buf = [0u8; 64];
    let mut n = 0;
    for b in key.bytes().filter(|b| *b != b'_' && *b != b'-') {
        if n == buf.len() {
            // Longer than any name below: only the suffix rules can apply.
            buf.copy_within(1.., 0);
            n -= 1;
        }
        buf[n] = b.to_ascii_lowercase();
        n += 1;
    }
    let k = &buf[..n];
    const EXACT: &[&[u8]] = &[
        b"token",
        b"accesstoken",
        b"refreshtoken",
        b"idtoken",
        b"authtoken",
        b"sessiontoken",
        b"bearertoken",
        b"publishtoken",
        b"readtoken",
        b"rawtoken",
        b"authorization",
        b"credential",
        b"credentials",
        b"cookie",
        b"privatekey",
        b"clientsecret",
    ];
    EXACT.contains(&k)
        || k.ends_with(b"password")
        || k.ends_with(b"passwd")
        || k.ends_with(b"secret")
        || k.ends_with(b"apikey")
}

/// `s` with every credential inside it (a run of token characters that is one: `usk_…`,
/// `pub_…`, `rdg_…`, a JWT) replaced by `[REDACTED]`; `None` when there is none.
pub fn scrub_words(s: &str) -> Option<String> {
    let token = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    if !(s.contains("usk_") || s.contains("pub_") || s.contains("rdg_") || s.contains("eyJ")) {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut changed = false;
    let mut rest = s;
    while let Some(start) = rest.find(token) {
        out.push_str(&rest[..start]);
        let run = &rest[start..];
        let end = run.find(|c: char| !token(c)).unwrap_or(run.len());
        let word = &run[..end];
        let core = word.trim_end_matches('.');
        if looks_like_credential(core) {
            out.push_str(REDACTED);
            out.push_str(&word[core.len()..]);
            changed = true;
        } else {
            out.push_str(word);
        }
        rest = &run[end..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// Whether a string is one of Understudy's credentials or a JWT.
pub fn looks_like_credential(s: &str) -> bool {
    let t = s.trim();
    let t = match t.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => t[7..].trim_start(),
        _ => t,
    };
    if ["usk_", "pub_", "rdg_"]
        .iter()
        .any(|p| t.starts_with(p) && t.len() > 12)
    {
        return true;
    }
    crate::oidc::looks_like_jwt(t)
}

/// Whether a stored request's params were redacted or cut (it cannot be replayed as it was).
pub fn altered(v: &Value) -> bool {
    match v {
        Value::String(s) => s == REDACTED,
        Value::Object(o) => {
            o.get("_truncated") == Some(&Value::Bool(true)) || o.values().any(altered)
        }
        Value::Array(a) => a.iter().any(altered),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn auditor() -> Auditor {
        Auditor::new(
            AuditOptions::default(),
            Arc::new(Metrics::new()),
            vec!["root-secret-token-123".into()],
        )
    }

    #[test]
    fn credentials_are_redacted_by_key_value_and_header() {
        let a = auditor();
        let mut v = json!({
            "api_key": "abc", "max_tokens": 5, "nested": {"password": "p", "ok": "fine"},
            "list": ["usk_0123456789abcdef", "plain"], "note": "has root-secret-token-123 inside",
            "jwt": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "publish_token": "pub_x",
        });
        a.redact(&mut v, 0);
        assert_eq!(v["api_key"], REDACTED);
        assert_eq!(v["max_tokens"], 5);
        assert_eq!(v["nested"]["password"], REDACTED);
        assert_eq!(v["nested"]["ok"], "fine");
        assert_eq!(v["list"][0], REDACTED);
        assert_eq!(v["list"][1], "plain");
        assert_eq!(v["note"], REDACTED);
        assert_eq!(v["jwt"], REDACTED);
        assert_eq!(v["publish_token"], REDACTED);
        assert!(altered(&v));
        assert!(!altered(&json!({"a": [1, "b"]})));
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer x".parse().unwrap());
        h.insert("x-api-key", "k".parse().unwrap());
        h.insert("user-agent", "curl/8.0".parse().unwrap());
        h.insert("x-custom", "usk_0123456789abcdef".parse().unwrap());
        let out: Value = serde_json::from_str(a.headers(&h).get()).unwrap();
        assert_eq!(out["Authorization"], json!([REDACTED]));
        assert_eq!(out["X-Api-Key"], json!([REDACTED]));
        assert_eq!(out["User-Agent"], json!(["curl/8.0"]));
        assert_eq!(out["X-Custom"], json!([REDACTED]));
    }

    #[test]
    fn big_fields_are_cut_and_errors_scrubbed() {
        let a = auditor();
        let mut r = Record::new("mcp", "t", Who::anonymous(), Instant::now());
        r.note.params = Captured::Raw(Bytes::from(format!(
            "{{\"x\":\"{}\"}}",
            "a".repeat(FIELD_MAX_BYTES)
        )));
        r.note.result = Captured::Raw(Bytes::from_static(b"not json"));
        r.error = Some("bad token root-secret-token-123 (key usk_0123456789abcdef)".into());
        let e = a.entry(r);
        let p = e.payload.unwrap();
        let params = understudy_core::audit::parsed(&p.request_params.unwrap()).unwrap();
        assert_eq!(params["_truncated"], true);
        assert_eq!(p.response_result.unwrap().get(), "\"not json\"");
        // Raw JSON without anything credential-like is kept as it came; with, it is redacted.
        let plain = a
            .field(Captured::Raw(Bytes::from_static(
                b" {\"max_tokens\": 5, \"x\": [1]} ",
            )))
            .unwrap();
        assert_eq!(plain.get(), "{\"max_tokens\": 5, \"x\": [1]}");
        let secret = a
            .field(Captured::Raw(Bytes::from_static(
                b"{\"Api_Key\": \"k\", \"n\": 1}",
            )))
            .unwrap();
        assert_eq!(secret.get(), "{\"Api_Key\":\"[REDACTED]\",\"n\":1}");
        // A credential inside a text, and a tool result's JSON text copy.
        let mut v = json!({"content": [{"type": "text",
            "text": "{\"id\":\"c1\",\"publish_token\":\"pub_0123456789abcdef\"}"}],
            "note": "use key usk_0123456789abcdef, BEARER eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln."});
        a.redact(&mut v, 0);
        assert_eq!(
            v["content"][0]["text"],
            "{\"id\":\"c1\",\"publish_token\":\"[REDACTED]\"}"
        );
        assert_eq!(v["note"], "use key [REDACTED], BEARER [REDACTED].");
        let escaped = a
            .field(Captured::Raw(Bytes::from_static(
                b"{\"p\": \"\\u0075sk_0123456789abcdef\"}",
            )))
            .unwrap();
        assert_eq!(escaped.get(), "{\"p\":\"[REDACTED]\"}");
        assert!(
            secret_key("client-secret") && secret_key("X_API_KEY") && !secret_key("max_tokens")
        );
        assert!(secret_key(&format!("{}_password", "a".repeat(100))));
        assert_eq!(
            e.event.error.as_deref(),
            Some("bad token [REDACTED] (key [REDACTED])")
        );
        assert!(understudy_core::audit::id_ms(&e.event.id).is_some());
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let metrics = Arc::new(Metrics::new());
        let a = Auditor::new(
            AuditOptions {
                queue: 2,
                ..Default::default()
            },
            metrics.clone(),
            vec![],
        );
        for _ in 0..5 {
            a.record(Record::new("mcp", "t", Who::anonymous(), Instant::now()));
        }
        assert_eq!(metrics.audit.dropped_queue_full.get(), 3);
        let (note, out) = capture(async {
            note(|n| n.scenario = Some("s".into()));
            capturing()
        })
        .await;
        assert!(out);
        assert_eq!(note.scenario.as_deref(), Some("s"));
        assert!(!capturing());
    }
}
