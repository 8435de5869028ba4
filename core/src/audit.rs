//! The audit log (SPEC §9.1, §11): one event per MCP tool call, execute call, LLM request, chaos
//! injection, replay and try-it, with a payload row beside it. This module holds the types, the
//! filter grammar of seed 004 (one evaluator for every backend and for the live tail) and the
//! [`AuditStore`] trait.
//!
//! ```text
//!  request path ─► bounded queue (gateway) ─► batches ─► AuditStore::append ─► tail on the hub
//!  portal API  ─► AuditFilter ─► query / scan (indexes narrow, the filter decides) ─► rows
//! ```
//!
//! Event ids are UUIDv7: their first 48 bits are the Unix milliseconds of the event, so the
//! ids sort by time and a time window is a range of ids ([`id_floor`], [`id_ceil`]). Both
//! backends keep events in id order and answer newest first.

use std::collections::HashSet;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::StoreError;

/// Most events one query page returns (SPEC §11).
pub const MAX_LIMIT: usize = 1_000;
/// Page size when none is asked for.
pub const DEFAULT_LIMIT: usize = 50;
/// Most rows one export streams.
pub const MAX_EXPORT_ROWS: usize = 100_000;
/// The window JSON-path filters apply in when the query names none (the last 24 h).
pub const DEFAULT_JSON_WINDOW_MS: u64 = 24 * 3_600_000;

/// One audit event: the summary row every list, export and tail carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// UUIDv7 (its time is the event's).
    pub id: String,
    /// RFC 3339 UTC with milliseconds.
    pub ts: String,
    /// The tenant, if the request had one.
    pub tenant: Option<String>,
    /// The tool called, or `llm.chat`, `llm.messages`, … for LLM requests.
    pub tool: String,
    /// The caller's identity (`None`: anonymous).
    pub user: Option<String>,
    /// The MCP session, if any.
    pub session: Option<String>,
    /// anonymous, api_key, admin_token, oidc or session.
    pub auth_type: String,
    /// mcp, hosted, execute, llm, portal-replay or portal-tryit.
    pub source: String,
    /// Whether the call succeeded (a tool result with `isError`, an error reply, an injected
    /// fault: not).
    pub success: bool,
    /// Time from the request's arrival to its answer.
    pub duration_ms: f64,
    /// The MCP transport, if any.
    #[serde(default)]
    pub transport: Option<String>,
    /// The scenario that answered (`None`: none matched, or not a scenario answer).
    #[serde(default)]
    pub scenario: Option<String>,
    /// The chaos fault injected, if any.
    #[serde(default)]
    pub chaos: Option<String>,
    /// The HTTP status answered, where there is one of its own.
    #[serde(default)]
    pub status: Option<u16>,
    /// The error, in a few words, when it failed.
    #[serde(default)]
    pub error: Option<String>,
}

impl AuditEvent {
    /// Unix milliseconds of the event, from its id.
    pub fn ts_ms(&self) -> u64 {
        id_ms(&self.id).unwrap_or(0)
    }

    /// The summary as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// A JSON document kept as its text: written as it came (no tree built on the request's
/// behalf), parsed only by a query that looks inside it.
pub type Raw = Box<serde_json::value::RawValue>;

/// `v` as a [`Raw`].
pub fn raw(v: &Value) -> Raw {
    serde_json::value::to_raw_value(v).unwrap_or_else(|_| raw_null())
}

/// JSON `null` as a [`Raw`].
pub fn raw_null() -> Raw {
    serde_json::value::RawValue::from_string("null".into()).expect("null is JSON")
}

/// A [`Raw`] parsed into a tree (`None` if it somehow does not parse).
pub fn parsed(r: &Raw) -> Option<Value> {
    serde_json::from_str(r.get()).ok()
}

/// The payload row of an event (what was sent and answered), credentials redacted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditPayload {
    /// The request's parameters (tool arguments, the LLM request body).
    #[serde(default)]
    pub request_params: Option<Raw>,
    /// Request headers, canonical names → values.
    #[serde(default)]
    pub request_headers: Option<Raw>,
    /// The result.
    #[serde(default)]
    pub response_result: Option<Raw>,
    /// The error.
    #[serde(default)]
    pub response_error: Option<Raw>,
    /// Notifications sent while it ran.
    #[serde(default)]
    pub notifications: Option<Raw>,
    /// The event this one replays.
    #[serde(default)]
    pub replayed_from: Option<String>,
}

impl PartialEq for AuditPayload {
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &Option<Raw>, b: &Option<Raw>| {
            a.as_ref().map(|r| r.get()) == b.as_ref().map(|r| r.get())
        };
        same(&self.request_params, &other.request_params)
            && same(&self.request_headers, &other.request_headers)
            && same(&self.response_result, &other.response_result)
            && same(&self.response_error, &other.response_error)
            && same(&self.notifications, &other.notifications)
            && self.replayed_from == other.replayed_from
    }
}

/// An event with its payload row.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// The summary.
    pub event: AuditEvent,
    /// The payload, if one was captured.
    pub payload: Option<AuditPayload>,
}

/// A payload column `has=` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    /// `request_params`
    RequestParams,
    /// `request_headers`
    RequestHeaders,
    /// `response_result`
    ResponseResult,
    /// `response_error`
    ResponseError,
    /// `notifications`
    Notifications,
    /// `replayed_from`
    ReplayedFrom,
}

impl Column {
    /// Every column, as `has=` names them.
    pub const NAMES: [&'static str; 6] = [
        "request_params",
        "request_headers",
        "response_result",
        "response_error",
        "notifications",
        "replayed_from",
    ];

    /// The column `name` names; `None` for anything else (dropped silently).
    pub fn parse(name: &str) -> Option<Column> {
        Some(match name {
            "request_params" => Column::RequestParams,
            "request_headers" => Column::RequestHeaders,
            "response_result" => Column::ResponseResult,
            "response_error" => Column::ResponseError,
            "notifications" => Column::Notifications,
            "replayed_from" => Column::ReplayedFrom,
            _ => return None,
        })
    }

    /// Whether the payload holds something in this column: present, and not an empty
    /// container, `null` or an empty text (seed 004: a JSON string `""` does pass).
    fn present(self, p: &AuditPayload) -> bool {
        let json = |v: &Option<Raw>| {
            let Some(r) = v else { return false };
            let text = r.get().trim();
            match text {
                "null" | "{}" | "[]" => false,
                // An empty container written with inner spaces.
                t if t.len() <= 16 && (t.starts_with('{') || t.starts_with('[')) => {
                    match parsed(r) {
                        Some(Value::Object(o)) => !o.is_empty(),
                        Some(Value::Array(a)) => !a.is_empty(),
                        _ => true,
                    }
                }
                _ => true,
            }
        };
        match self {
            Column::RequestParams => json(&p.request_params),
            Column::RequestHeaders => json(&p.request_headers),
            Column::ResponseResult => json(&p.response_result),
            Column::ResponseError => json(&p.response_error),
            Column::Notifications => json(&p.notifications),
            Column::ReplayedFrom => p.replayed_from.as_deref().is_some_and(|s| !s.is_empty()),
        }
    }
}

/// A JSON-path filter (seed 004).
#[derive(Debug, Clone, PartialEq)]
pub enum JsonFilter {
    /// `param.<path>=<value>`: `request_params` contains `{path: value}`.
    Param(Vec<String>, Value),
    /// `response.<path>=<value>`: `response_result` contains `{path: value}`.
    Response(Vec<String>, Value),
    /// `header.<Name>=<value>`: the header (canonical name) has this value.
    Header(String, String),
}

impl JsonFilter {
    /// Parses one query parameter; `None` when it is not a JSON-path filter or breaks the
    /// grammar (an empty path segment, a dotted header name): such filters are dropped
    /// silently, as the seed says.
    pub fn parse(key: &str, value: &str) -> Option<JsonFilter> {
        if let Some(path) = key.strip_prefix("param.") {
            return Some(JsonFilter::Param(segments(path)?, typed(value)));
        }
        if let Some(path) = key.strip_prefix("response.") {
            return Some(JsonFilter::Response(segments(path)?, typed(value)));
        }
        if let Some(name) = key.strip_prefix("header.") {
            if name.is_empty() || name.contains('.') {
                return None;
            }
            return Some(JsonFilter::Header(
                canonical_header(name),
                value.to_string(),
            ));
        }
        None
    }

    #[cfg(test)]
    fn matches(&self, p: &AuditPayload) -> bool {
        self.matches_parsed(&mut Parsed::new(p))
    }

    fn matches_parsed(&self, p: &mut Parsed<'_>) -> bool {
        match self {
            JsonFilter::Param(path, v) => contains_at(p.params(), path, v),
            JsonFilter::Response(path, v) => contains_at(p.result(), path, v),
            JsonFilter::Header(name, v) => {
                p.headers()
                    .and_then(|h| h.get(name))
                    .is_some_and(|vals| match vals {
                        Value::Array(a) => a.iter().any(|x| x.as_str() == Some(v)),
                        Value::String(s) => s == v,
                        _ => false,
                    })
            }
        }
    }
}

/// A payload's columns, each parsed once, when a filter first looks into it.
struct Parsed<'a> {
    payload: &'a AuditPayload,
    params: Option<Option<Value>>,
    result: Option<Option<Value>>,
    headers: Option<Option<Value>>,
}

impl<'a> Parsed<'a> {
    fn new(payload: &'a AuditPayload) -> Self {
        Parsed {
            payload,
            params: None,
            result: None,
            headers: None,
        }
    }

    fn params(&mut self) -> Option<&Value> {
        let p = self.payload;
        self.params
            .get_or_insert_with(|| p.request_params.as_ref().and_then(parsed))
            .as_ref()
    }

    fn result(&mut self) -> Option<&Value> {
        let p = self.payload;
        self.result
            .get_or_insert_with(|| p.response_result.as_ref().and_then(parsed))
            .as_ref()
    }

    fn headers(&mut self) -> Option<&Value> {
        let p = self.payload;
        self.headers
            .get_or_insert_with(|| p.request_headers.as_ref().and_then(parsed))
            .as_ref()
    }
}

fn segments(path: &str) -> Option<Vec<String>> {
    let segs: Vec<String> = path.split('.').map(String::from).collect();
    (!segs.iter().any(String::is_empty)).then_some(segs)
}

/// Seed 004's value typing: `true`/`false` are booleans, integers and floats numbers, a quoted
/// value the string inside the quotes, anything else a string.
pub fn typed(value: &str) -> Value {
    if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        return Value::String(value[1..value.len() - 1].to_string());
    }
    match value {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(i) = value.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = value.parse::<f64>()
        && f.is_finite()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(value.to_string())
}

/// Go's canonical header form (`user-agent` → `User-Agent`); a name with a character that
/// cannot be in a header name is returned as it is, as Go does.
pub fn canonical_header(name: &str) -> String {
    let valid = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !valid {
        return name.to_string();
    }
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

/// JSON containment at a path, as Postgres's `@>` reads `{path: value}`: the path walks
/// objects; at its end an equal scalar (numbers compared as numbers), or, for an object or
/// array filter value, containment.
fn contains_at(doc: Option<&Value>, path: &[String], want: &Value) -> bool {
    let mut cur = match doc {
        Some(d) => d,
        None => return false,
    };
    for seg in path {
        match cur.get(seg.as_str()) {
            Some(next) if cur.is_object() => cur = next,
            _ => return false,
        }
    }
    contains(cur, want)
}

fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => a == b,
        },
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            w.iter().all(|wv| h.iter().any(|hv| contains(hv, wv)))
        }
        (a, b) => a == b,
    }
}

/// Which events a caller may see.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Visibility {
    /// Everything (unscoped admins).
    #[default]
    All,
    /// One tenant's events only (tenant-scoped credentials).
    Only(String),
    /// These tenants' events only (those the caller may read; events without a tenant are not
    /// among them).
    Allow(HashSet<String>),
}

/// A query over the log: the indexed fields, free text, JSON-path filters and `has=`, all
/// AND-combined, and who is asking.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    /// Unix ms, inclusive.
    pub from_ms: Option<u64>,
    /// Unix ms, inclusive.
    pub to_ms: Option<u64>,
    /// Exact tenant.
    pub tenant: Option<String>,
    /// Exact tool.
    pub tool: Option<String>,
    /// Exact user.
    pub user: Option<String>,
    /// Exact session.
    pub session: Option<String>,
    /// Exact source.
    pub source: Option<String>,
    /// Success or failure.
    pub success: Option<bool>,
    /// Exact auth type.
    pub auth_type: Option<String>,
    /// Case-insensitive text in tool, user, session, tenant, scenario, chaos or error (stored
    /// lower-case).
    pub q: Option<String>,
    /// JSON-path filters.
    pub json: Vec<JsonFilter>,
    /// Columns that must hold something.
    pub has: Vec<Column>,
    /// Who is asking.
    pub visibility: Visibility,
}

/// An equality dimension the backends index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    /// `tenant`
    Tenant,
    /// `tool`
    Tool,
    /// `user`
    User,
    /// `session`
    Session,
    /// `source`
    Source,
    /// `success`
    Success,
}

impl Dim {
    /// Its short name in index keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Dim::Tenant => "tenant",
            Dim::Tool => "tool",
            Dim::User => "user",
            Dim::Session => "session",
            Dim::Source => "source",
            Dim::Success => "ok",
        }
    }

    /// The values an event is indexed under, by dimension (absent ones are not indexed).
    pub fn of(event: &AuditEvent) -> Vec<(Dim, String)> {
        let mut out = vec![
            (Dim::Tool, event.tool.clone()),
            (Dim::Source, event.source.clone()),
            (Dim::Success, if event.success { "1" } else { "0" }.into()),
        ];
        if let Some(t) = &event.tenant {
            out.push((Dim::Tenant, t.clone()));
        }
        if let Some(u) = &event.user {
            out.push((Dim::User, u.clone()));
        }
        if let Some(s) = &event.session {
            out.push((Dim::Session, s.clone()));
        }
        out
    }
}

impl AuditFilter {
    /// The window, with JSON-path filters bounded to the last 24 h when none was asked for.
    pub fn window(&self, now_ms: u64) -> (u64, u64) {
        let to = self.to_ms.unwrap_or(u64::MAX);
        let from = match self.from_ms {
            Some(f) => f,
            None if self.needs_payload() => now_ms.saturating_sub(DEFAULT_JSON_WINDOW_MS),
            None => 0,
        };
        (from, to)
    }

    /// Whether evaluating it needs the payload rows.
    pub fn needs_payload(&self) -> bool {
        !self.json.is_empty() || !self.has.is_empty()
    }

    /// The indexed equalities it asks for (the tenant of a tenant-scoped caller included).
    pub fn dims(&self) -> Vec<(Dim, String)> {
        let mut out = Vec::new();
        let scoped = match &self.visibility {
            Visibility::Only(t) => Some(t.clone()),
            _ => None,
        };
        if let Some(t) = self.tenant.clone().or(scoped) {
            out.push((Dim::Tenant, t));
        }
        for (d, v) in [
            (Dim::Tool, &self.tool),
            (Dim::User, &self.user),
            (Dim::Session, &self.session),
            (Dim::Source, &self.source),
        ] {
            if let Some(v) = v {
                out.push((d, v.clone()));
            }
        }
        if let Some(ok) = self.success {
            out.push((Dim::Success, if ok { "1" } else { "0" }.into()));
        }
        out
    }

    /// Whether the indexes alone decide it: nothing but indexed equalities (at most one per
    /// dimension) and a window, so a count needs no event read.
    pub fn index_only(&self) -> bool {
        let scope_ok = match &self.visibility {
            Visibility::All => true,
            Visibility::Only(t) => self.tenant.as_ref().is_none_or(|x| x == t),
            Visibility::Allow(_) => false,
        };
        scope_ok && self.q.is_none() && self.auth_type.is_none() && !self.needs_payload()
    }

    /// Whether the summary passes every summary-level predicate (the window included).
    pub fn matches_event(&self, e: &AuditEvent, now_ms: u64) -> bool {
        let (from, to) = self.window(now_ms);
        let ts = e.ts_ms();
        if ts < from || ts > to {
            return false;
        }
        let eq = |want: &Option<String>, have: Option<&str>| {
            want.as_deref().is_none_or(|w| have == Some(w))
        };
        if !(eq(&self.tenant, e.tenant.as_deref())
            && eq(&self.tool, Some(&e.tool))
            && eq(&self.user, e.user.as_deref())
            && eq(&self.session, e.session.as_deref())
            && eq(&self.source, Some(&e.source))
            && eq(&self.auth_type, Some(&e.auth_type))
            && self.success.is_none_or(|s| s == e.success))
        {
            return false;
        }
        match &self.visibility {
            Visibility::All => {}
            Visibility::Only(t) => {
                if e.tenant.as_deref() != Some(t) {
                    return false;
                }
            }
            Visibility::Allow(a) => {
                if !e.tenant.as_ref().is_some_and(|t| a.contains(t)) {
                    return false;
                }
            }
        }
        if let Some(q) = &self.q {
            let hit = |s: Option<&str>| s.is_some_and(|s| s.to_lowercase().contains(q));
            if !(hit(Some(&e.tool))
                || hit(e.user.as_deref())
                || hit(e.session.as_deref())
                || hit(e.tenant.as_deref())
                || hit(e.scenario.as_deref())
                || hit(e.chaos.as_deref())
                || hit(e.error.as_deref()))
            {
                return false;
            }
        }
        true
    }

    /// Whether the payload passes the JSON-path and `has=` filters (an event without a payload
    /// passes only when there are none).
    pub fn matches_payload(&self, p: Option<&AuditPayload>) -> bool {
        if !self.needs_payload() {
            return true;
        }
        let Some(p) = p else { return false };
        if !self.has.iter().all(|c| c.present(p)) {
            return false;
        }
        let mut cols = Parsed::new(p);
        self.json.iter().all(|f| f.matches_parsed(&mut cols))
    }

    /// Every predicate.
    pub fn matches(&self, e: &AuditEvent, p: Option<&AuditPayload>, now_ms: u64) -> bool {
        self.matches_event(e, now_ms) && self.matches_payload(p)
    }
}

/// Unix ms of a UUIDv7 in its text form (`None` if it is not one).
pub fn id_ms(id: &str) -> Option<u64> {
    let u = uuid::Uuid::parse_str(id).ok()?;
    if u.get_version_num() != 7 {
        return None;
    }
    let b = u.as_bytes();
    Some(
        b[..6]
            .iter()
            .fold(0u64, |acc, x| (acc << 8) | u64::from(*x)),
    )
}

/// The smallest id text of millisecond `ms` (for id-ordered ranges).
pub fn id_floor(ms: u64) -> String {
    let h = format!("{:012x}", ms.min((1 << 48) - 1));
    format!("{}-{}-0000-0000-000000000000", &h[..8], &h[8..])
}

/// The largest id text of millisecond `ms`.
pub fn id_ceil(ms: u64) -> String {
    let h = format!("{:012x}", ms.min((1 << 48) - 1));
    format!("{}-{}-ffff-ffff-ffffffffffff", &h[..8], &h[8..])
}

/// A new event id for the time `ms`.
pub fn new_id(ms: u64) -> String {
    let ts =
        uuid::Timestamp::from_unix(uuid::NoContext, ms / 1000, ((ms % 1000) * 1_000_000) as u32);
    uuid::Uuid::new_v7(ts).to_string()
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// The hub topic of the live tail: every stored batch's summaries, one JSON per line.
pub fn tail_topic() -> crate::Topic {
    crate::Topic::global("audit", "tail").unwrap_or_else(|_| crate::Topic::config())
}

/// A page of a query.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditPage {
    /// Newest first.
    pub events: Vec<AuditEvent>,
    /// How many events match in all.
    pub total: u64,
}

/// Where a scan goes on from: the last id it returned (exclusive).
pub type Cursor = String;

impl AuditPage {
    /// Counts one more match, keeping it when it falls in the page `offset..offset + limit`
    /// (the backends walk matches newest first and page with this).
    pub(crate) fn count(&mut self, e: impl FnOnce() -> AuditEvent, offset: usize, limit: usize) {
        if self.total as usize >= offset && self.events.len() < limit {
            self.events.push(e());
        }
        self.total += 1;
    }
}

/// The cursor a scan that asked for `max` events and got `events` goes on from (`None`: it
/// found fewer, so nothing older matches).
pub(crate) fn next_cursor(events: &[AuditEvent], max: usize) -> Option<Cursor> {
    (events.len() == max && max > 0)
        .then(|| events.last().map(|e| e.id.clone()))
        .flatten()
}

/// The audit log's storage: append in batches (off the request path), read by the portal.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Stores a batch of events with their payloads and indexes, and rings the live tail
    /// ([`tail_topic`]) with their summaries in the same step.
    async fn append_audit(&self, entries: Vec<AuditEntry>) -> Result<(), StoreError>;
    /// One event with its payload.
    async fn audit_event(&self, id: &str) -> Result<Option<AuditEntry>, StoreError>;
    /// One page (newest first) and the number of matches.
    async fn query_audit(
        &self,
        filter: &AuditFilter,
        offset: usize,
        limit: usize,
        now_ms: u64,
    ) -> Result<AuditPage, StoreError>;
    /// Up to `max` matching events older than `before` (newest first), and the cursor to go on
    /// from (`None`: nothing older matches). Exports and aggregations read through this.
    async fn scan_audit(
        &self,
        filter: &AuditFilter,
        before: Option<&str>,
        max: usize,
        now_ms: u64,
    ) -> Result<(Vec<AuditEvent>, Option<Cursor>), StoreError>;
    /// Deletes events older than `min_ms` and the oldest beyond `max_events`; returns how many
    /// went. Bounded work per call (`batch`); the writer calls it until it returns less.
    async fn prune_audit(
        &self,
        min_ms: u64,
        max_events: usize,
        batch: usize,
    ) -> Result<usize, StoreError>;
    /// How many events are stored.
    async fn audit_len(&self) -> Result<u64, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(id: &str) -> AuditEvent {
        AuditEvent {
            id: id.into(),
            ts: String::new(),
            tenant: Some("shop".into()),
            tool: "lookup".into(),
            user: Some("alice".into()),
            session: None,
            auth_type: "api_key".into(),
            source: "mcp".into(),
            success: true,
            duration_ms: 1.0,
            transport: None,
            scenario: Some("sc".into()),
            chaos: None,
            status: None,
            error: None,
        }
    }

    #[test]
    fn values_are_typed_as_the_seed_says() {
        assert_eq!(typed("true"), json!(true));
        assert_eq!(typed("false"), json!(false));
        assert_eq!(typed("200"), json!(200));
        assert_eq!(typed("2.5"), json!(2.5));
        assert_eq!(typed("\"200\""), json!("200"));
        assert_eq!(typed("null"), json!("null"));
        assert_eq!(typed("alice"), json!("alice"));
        assert_eq!(typed("NaN"), json!("NaN"));
    }

    #[test]
    fn header_names_are_canonical_and_bad_filters_dropped() {
        assert_eq!(canonical_header("user-agent"), "User-Agent");
        assert_eq!(canonical_header("X-FOO-bar"), "X-Foo-Bar");
        assert_eq!(canonical_header("bad name"), "bad name");
        assert_eq!(JsonFilter::parse("header.X-Foo.bar", "v"), None);
        assert_eq!(JsonFilter::parse("param.a..b", "v"), None);
        assert_eq!(JsonFilter::parse("param.", "v"), None);
        assert_eq!(JsonFilter::parse("tool", "v"), None);
        assert_eq!(
            JsonFilter::parse("header.user-agent", "curl/8.0"),
            Some(JsonFilter::Header("User-Agent".into(), "curl/8.0".into()))
        );
        assert_eq!(Column::parse("bogus"), None);
    }

    #[test]
    fn containment_follows_paths_and_types() {
        let p = AuditPayload {
            request_params: Some(raw(
                &json!({"user": {"id": "alice"}, "code": 200, "tags": ["a", "b"]}),
            )),
            request_headers: Some(raw(&json!({"User-Agent": ["curl/8.0"]}))),
            response_result: Some(raw(&json!({"isError": false}))),
            ..Default::default()
        };
        let f = |k: &str, v: &str| JsonFilter::parse(k, v).unwrap().matches(&p);
        assert!(f("param.user.id", "alice"));
        assert!(!f("param.user.id", "bob"));
        assert!(f("param.code", "200"));
        assert!(f("param.code", "200.0"));
        assert!(!f("param.code", "\"200\""));
        assert!(!f("param.tags", "a"), "a scalar does not match an array");
        assert!(f("response.isError", "false"));
        assert!(f("header.user-agent", "curl/8.0"));
        assert!(!f("header.User-Agent", "curl/7"));
        assert!(Column::RequestParams.present(&p));
        assert!(!Column::ResponseError.present(&p));
        let empty = AuditPayload {
            response_error: Some(raw(&json!({}))),
            request_params: Some(serde_json::value::RawValue::from_string("{ }".into()).unwrap()),
            notifications: Some(raw(&json!(""))),
            ..Default::default()
        };
        assert!(!Column::RequestParams.present(&empty));
        assert!(!Column::ResponseError.present(&empty));
        assert!(Column::Notifications.present(&empty));
    }

    #[test]
    fn ids_carry_their_time_and_bound_windows() {
        let id = new_id(1_764_500_000_123);
        assert_eq!(id_ms(&id), Some(1_764_500_000_123));
        assert!(id_floor(1_764_500_000_123).as_str() <= id.as_str());
        assert!(id.as_str() <= id_ceil(1_764_500_000_123).as_str());
        assert!(id_ceil(1_764_500_000_122) < id_floor(1_764_500_000_123));
        assert_eq!(id_ms("not-a-uuid"), None);
        assert_eq!(id_ms(&uuid::Uuid::new_v4().to_string()), None);
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_764_500_000_123), "2025-11-30T10:53:20.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn filters_match_summaries_scopes_and_text() {
        let now = 1_764_500_000_000;
        let e = event(&new_id(now - 1000));
        let mut f = AuditFilter::default();
        assert!(f.matches(&e, None, now));
        f.q = Some("ALI".to_lowercase());
        assert!(f.matches(&e, None, now));
        f.q = Some("zzz".into());
        assert!(!f.matches(&e, None, now));
        f.q = None;
        f.visibility = Visibility::Only("other".into());
        assert!(!f.matches(&e, None, now));
        f.visibility = Visibility::Allow(["bank".to_string()].into());
        assert!(!f.matches(&e, None, now));
        f.visibility = Visibility::Allow(["shop".to_string()].into());
        assert!(f.matches(&e, None, now));
        f.visibility = Visibility::All;
        f.success = Some(false);
        assert!(!f.matches(&e, None, now));
        f.success = None;
        f.to_ms = Some(now - 2000);
        assert!(!f.matches(&e, None, now));
        f.to_ms = None;
        f.json.push(JsonFilter::parse("param.x", "1").unwrap());
        assert!(!f.matches(&e, None, now), "a JSON filter needs a payload");
        let old = event(&new_id(now - DEFAULT_JSON_WINDOW_MS - 1000));
        let p = AuditPayload {
            request_params: Some(raw(&json!({"x": 1}))),
            ..Default::default()
        };
        assert!(f.matches(&e, Some(&p), now));
        assert!(
            !f.matches(&old, Some(&p), now),
            "JSON filters look back 24 h by default"
        );
    }
}
