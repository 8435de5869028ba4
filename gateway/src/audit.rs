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

use bytes::Bytes;
use http::HeaderMap;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use understudy_core::audit::{AuditEntry, AuditEvent, AuditPayload, canonical_header};
use understudy_core::{Stores, Topic};

use crate::identity::{AuthType, Identity};
use crate::metrics::Metrics;

/// Events stored per batch at most.
const BATCH: usize = 256;
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
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            enabled: true,
            retention: Duration::from_secs(7 * 86_400),
            max_events: 100_000,
            queue: 10_000,
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
pub async fn who_of(app: &crate::state::AppState, headers: &HeaderMap) -> Who {
    match crate::identity::credential(headers) {
        None => Who::anonymous(),
        Some(secret) => match app.identity.principal_async(secret).await {
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
    /// The event's id, when the caller must know it in advance (else made when written).
    pub id: Option<String>,
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
    /// Secrets to blank wherever they appear (the admin token).
    secrets: Vec<String>,
}

/// The hub topic of the live tail.
pub fn tail_topic() -> Topic {
    Topic::global("audit", "tail").unwrap_or_else(|_| Topic::config())
}

impl Auditor {
    /// A queue of `options.queue` events; the writer starts with [`Auditor::run`].
    pub fn new(options: AuditOptions, metrics: Arc<Metrics>, secrets: Vec<String>) -> Self {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        Auditor {
            enabled: options.enabled,
            tx,
            rx: Mutex::new(Some(rx)),
            metrics,
            options,
            secrets,
        }
    }

    /// Whether events are recorded (surfaces skip all capture work otherwise).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The options.
    pub fn options(&self) -> &AuditOptions {
        &self.options
    }

    /// Queues an event; never waits: a full queue drops it and counts the drop.
    pub fn record(&self, r: Record) {
        if !self.enabled {
            return;
        }
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
        match stores.audit.append_audit(&entries).await {
            Ok(()) => {
                self.metrics.audit.written.inc_by(n);
                let mut tail = String::new();
                for e in &entries {
                    tail.push_str(&e.event.to_json());
                    tail.push('\n');
                }
                if let Err(e) = stores.hub.publish(&tail_topic(), tail).await {
                    tracing::debug!(error = %e, "audit tail publish failed");
                }
            }
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
        // Bounded work per tick: at most 20 batches of 1,000.
        for _ in 0..20 {
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
    pub fn entry(&self, r: Record) -> AuditEntry {
        let ms = understudy_core::now_ms();
        let duration_ms = (r.started.elapsed().as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
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
        AuditEntry {
            event: AuditEvent {
                id: r.id.unwrap_or_else(|| understudy_core::audit::new_id(ms)),
                ts: understudy_core::audit::rfc3339_ms(ms),
                tenant: r.tenant,
                tool: r.tool,
                user: r.who.user,
                session: r.session,
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

    fn field(&self, c: Captured) -> Option<Value> {
        let mut v = c.into_value()?;
        self.redact(&mut v, 0);
        let size = serde_json::to_vec(&v).map(|b| b.len()).unwrap_or(0);
        if size > FIELD_MAX_BYTES {
            let mut o = Map::new();
            o.insert("_truncated".into(), Value::Bool(true));
            o.insert("bytes".into(), Value::from(size));
            return Some(Value::Object(o));
        }
        Some(v)
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
                    }
                }
            }
            Value::String(s) if self.secret_value(s) => *s = REDACTED.into(),
            _ => {}
        }
    }

    fn secret_value(&self, s: &str) -> bool {
        looks_like_credential(s) || self.secrets.iter().any(|x| !x.is_empty() && s.contains(x))
    }

    fn scrub_text(&self, s: String) -> String {
        let mut s = s;
        for x in &self.secrets {
            if !x.is_empty() && s.contains(x.as_str()) {
                s = s.replace(x.as_str(), REDACTED);
            }
        }
        s
    }

    fn headers(&self, h: &HeaderMap) -> Value {
        let mut out = Map::new();
        for name in h.keys() {
            let key = canonical_header(name.as_str());
            let values: Vec<Value> = h
                .get_all(name)
                .iter()
                .map(|v| {
                    let text = String::from_utf8_lossy(v.as_bytes()).into_owned();
                    if secret_header(name.as_str()) || self.secret_value(&text) {
                        Value::String(REDACTED.into())
                    } else {
                        Value::String(clip(&text, 1024))
                    }
                })
                .collect();
            out.insert(key, Value::Array(values));
        }
        Value::Object(out)
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

fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
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
    let k: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    const EXACT: &[&str] = &[
        "token",
        "accesstoken",
        "refreshtoken",
        "idtoken",
        "authtoken",
        "sessiontoken",
        "bearertoken",
        "publishtoken",
        "readtoken",
        "rawtoken",
        "authorization",
        "credential",
        "credentials",
        "cookie",
        "privatekey",
        "clientsecret",
    ];
    EXACT.contains(&k.as_str())
        || k.ends_with("password")
        || k.ends_with("passwd")
        || k.ends_with("secret")
        || k.ends_with("apikey")
}

/// Whether a string is one of Understudy's credentials or a JWT.
pub fn looks_like_credential(s: &str) -> bool {
    let t = s.trim();
    let t = t
        .strip_prefix("Bearer ")
        .or_else(|| t.strip_prefix("bearer "))
        .unwrap_or(t);
    if ["usk_", "pub_", "rdg_"]
        .iter()
        .any(|p| t.starts_with(p) && t.len() > 12)
    {
        return true;
    }
    // A JWT: three base64url parts, the first a JSON object ("eyJ").
    t.starts_with("eyJ")
        && t.split('.').count() == 3
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
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
        let out = a.headers(&h);
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
        r.error = Some("bad token root-secret-token-123".into());
        let e = a.entry(r);
        let p = e.payload.unwrap();
        assert_eq!(p.request_params.unwrap()["_truncated"], true);
        assert_eq!(p.response_result.unwrap(), json!("not json"));
        assert_eq!(e.event.error.as_deref(), Some("bad token [REDACTED]"));
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
