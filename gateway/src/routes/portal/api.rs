//! The portal API (SPEC §9.2, seed 004), under `/api/v1/portal/`: who am I, the server, a
//! tenant's instructions and tools, and the audit log — list, detail, replay, export, live tail,
//! time series, breakdowns and the dashboard. Any authenticated identity may read (cookie,
//! `X-API-Key` or Bearer); what it sees is what it may read (a tenant-scoped key: its tenant;
//! others: global tenants and their own private ones; unscoped admins: everything).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue, header};
use serde_json::{Value, json};
use understudy_core::audit::{
    AuditEvent, AuditFilter, Column, DEFAULT_LIMIT, JsonFilter, MAX_EXPORT_ROWS, MAX_LIMIT,
    Visibility,
};
use understudy_core::{Delivery, now_ms};
use understudy_crds::model::Role;

use crate::api::{ApiError, Caller, Code};
use crate::identity::Identity;
use crate::snapshot::TenantRuntime;
use crate::state::App;

/// Replay budget per identity (seed 004): 5 at once, then one every 12 s.
pub const REPLAY_BURST: u32 = 5;
/// Seconds per replay token.
pub const REPLAY_REFILL_SECS: u64 = 12;
/// Most buckets a time series answers.
const MAX_BUCKETS: u64 = 1_000;
/// Rows a breakdown answers.
const BREAKDOWN_ROWS: usize = 100;
/// Most events an aggregation (time series, breakdown, dashboard) reads.
const AGGREGATE_MAX: usize = 1_000_000;
/// Most JSON-path filters in one query (each reads the payloads it looks into).
const MAX_JSON_FILTERS: usize = 32;
/// Largest `offset` (past it, pages are empty anyway).
const MAX_OFFSET: usize = 10_000_000;
/// How often an open live tail resolves its caller again.
const TAIL_RECHECK: Duration = Duration::from_secs(5);
/// The live tail's keep-alive (seed 004: every 30 s).
const TAIL_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/api/v1/portal/me", get(me))
        .route("/api/v1/portal/server", get(server))
        .route("/api/v1/portal/instructions", get(instructions))
        .route("/api/v1/portal/tools", get(tools))
        .route("/api/v1/portal/tools/{name}", get(tool))
        .route("/api/v1/portal/audit/meta", get(meta))
        .route("/api/v1/portal/audit/events", get(events))
        .route("/api/v1/portal/audit/events/{id}", get(event))
        .route("/api/v1/portal/audit/events/{id}/replay", post(replay))
        .route("/api/v1/portal/audit/export", get(export))
        .route("/api/v1/portal/audit/stream", get(stream))
        .route("/api/v1/portal/audit/timeseries", get(timeseries))
        .route("/api/v1/portal/audit/breakdown", get(breakdown))
        .route("/api/v1/portal/dashboard", get(dashboard))
        .route("/api/v1/portal/wellknown", get(wellknown))
}

/// An authenticated caller (any role).
fn reader(caller: Caller) -> Result<Identity, ApiError> {
    if !caller.0.is_authenticated() {
        return Err(ApiError::unauthorized(
            "the portal API needs a login: log in at /portal/auth/login, or send X-API-Key or Authorization: Bearer",
        ));
    }
    Ok(caller.0)
}

/// What `id` may see of the log.
fn visibility(app: &App, id: &Identity) -> Visibility {
    if let Some(t) = &id.tenant_scope {
        // Its scope, if it may read that tenant (a viewer key scoped to someone's private
        // tenant sees nothing of it here either).
        let readable = app
            .snapshot
            .tenant(t)
            .is_some_and(|tenant| id.may_read(&tenant.config));
        return if readable {
            Visibility::Only(t.clone())
        } else {
            Visibility::Allow(Default::default())
        };
    }
    if id.is_admin() {
        return Visibility::All;
    }
    // Others see the tenants they may read now: not events without a tenant (refusals that
    // may name a private tenant), nor those of deleted tenants.
    let snapshot = app.snapshot.load();
    Visibility::Allow(
        snapshot
            .tenants
            .values()
            .filter(|t| id.may_read(&t.config))
            .map(|t| t.id().to_string())
            .collect(),
    )
}

fn may_see(app: &App, id: &Identity, e: &AuditEvent) -> bool {
    let f = AuditFilter {
        visibility: visibility(app, id),
        ..Default::default()
    };
    f.matches_event(e, understudy_core::audit::id_ms(&e.id).unwrap_or(0))
}

/// A query string, parsed: the filter, paging, and the other parameters by name.
struct Parsed {
    filter: AuditFilter,
    limit: usize,
    offset: usize,
    rest: HashMap<String, String>,
}

fn timestamp(name: &str, v: &str) -> Result<u64, ApiError> {
    let t: jiff::Timestamp = v.parse().map_err(|_| {
        ApiError::invalid(format!(
            "{name}: {v:?} is not an RFC 3339 time (e.g. 2026-11-30T15:00:00Z)"
        ))
    })?;
    u64::try_from(t.as_millisecond())
        .map_err(|_| ApiError::invalid(format!("{name}: {v:?} is before 1970")))
}

fn parse_query(
    q: Option<&str>,
    default_limit: usize,
    max_limit: usize,
) -> Result<Parsed, ApiError> {
    let mut p = Parsed {
        filter: AuditFilter::default(),
        limit: default_limit,
        offset: 0,
        rest: HashMap::new(),
    };
    let pairs = form_urlencoded::parse(q.unwrap_or("").as_bytes());
    for (k, v) in pairs {
        let text = || (!v.is_empty()).then(|| v.to_string());
        match k.as_ref() {
            "from" => p.filter.from_ms = Some(timestamp("from", &v)?),
            "to" => p.filter.to_ms = Some(timestamp("to", &v)?),
            "tool" => p.filter.tool = text(),
            "user" => p.filter.user = text(),
            "session" => p.filter.session = text(),
            "tenant" => p.filter.tenant = text(),
            "source" => p.filter.source = text(),
            "auth_type" => p.filter.auth_type = text(),
            "q" => p.filter.q = text().map(|s| s.to_lowercase()),
            "success" => {
                p.filter.success = match v.as_ref() {
                    "true" => Some(true),
                    "false" => Some(false),
                    "" => None,
                    other => {
                        return Err(ApiError::invalid(format!(
                            "success: {other:?} must be true or false"
                        )));
                    }
                }
            }
            "limit" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| ApiError::invalid(format!("limit: {v:?} is not a number")))?;
                p.limit = n.clamp(1, max_limit);
            }
            "offset" => {
                let n: usize = v
                    .parse()
                    .map_err(|_| ApiError::invalid(format!("offset: {v:?} is not a number")))?;
                p.offset = n.min(MAX_OFFSET);
            }
            "has" => {
                // Unknown columns are dropped silently (seed 004).
                if let Some(c) = Column::parse(&v)
                    && !p.filter.has.contains(&c)
                {
                    p.filter.has.push(c);
                }
            }
            key => {
                if let Some(f) = JsonFilter::parse(key, &v) {
                    if p.filter.json.contains(&f) {
                        continue;
                    }
                    if p.filter.json.len() == MAX_JSON_FILTERS {
                        return Err(ApiError::invalid(format!(
                            "at most {MAX_JSON_FILTERS} param., response. and header. filters"
                        )));
                    }
                    p.filter.json.push(f);
                } else if !key.contains('.') {
                    p.rest.insert(key.to_string(), v.to_string());
                }
            }
        }
    }
    if let (Some(from), Some(to)) = (p.filter.from_ms, p.filter.to_ms)
        && from > to
    {
        return Err(ApiError::invalid("from is after to"));
    }
    Ok(p)
}

/// The caller (any role) and its query, scoped to what it may see.
fn scoped(
    app: &App,
    caller: Caller,
    q: Option<&str>,
    default_limit: usize,
    max_limit: usize,
) -> Result<Parsed, ApiError> {
    let id = reader(caller)?;
    let mut p = parse_query(q, default_limit, max_limit)?;
    p.filter.visibility = visibility(app, &id);
    Ok(p)
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn me(caller: Caller) -> Result<Response, ApiError> {
    let id = reader(caller)?;
    Ok(no_store(
        axum::Json(json!({
            "subject": id.subject,
            "auth_type": crate::audit::auth_type_label(id.auth_type),
            "role": id.role.map(|r| r.as_str()),
            "tenant": id.tenant_scope,
            "key_name": id.key_name,
            "name": id.name,
            "email": id.email,
        }))
        .into_response(),
    ))
}

async fn server(State(app): State<App>, caller: Caller) -> Result<Response, ApiError> {
    reader(caller)?;
    let o = &app.options;
    let redacted = |s: &Option<String>| s.as_ref().map(|_| "[REDACTED]");
    Ok(axum::Json(json!({
        "name": "understudy",
        "version": env!("CARGO_PKG_VERSION"),
        "mode": if o.shared { "shared" } else { "embedded" },
        "store": app.stores.backend(),
        "config": {
            "public_url": o.public_url,
            "admin_token": redacted(&o.admin_token),
            "allow_anonymous": o.allow_anonymous,
            "cors_origins": o.cors_origins,
            "max_body_bytes": o.max_body_bytes,
            "max_answer_bytes": o.max_answer_bytes,
            "max_stream_events": o.max_stream_events,
            "hosted_rate_limit": o.hosted_rate_limit,
            "mcp_session_idle_seconds": o.mcp_session_idle.as_secs(),
            "channel_max_payload_bytes": o.channel_max_payload_bytes,
            "channel_retention": o.channel_retention,
            "audit": {
                "enabled": o.audit.enabled,
                "retention_seconds": o.audit.retention.as_secs(),
                "max_events": o.audit.max_events,
                "queue": o.audit.queue,
                "payloads": o.audit.payloads,
            },
            "portal_session_ttl_seconds": o.portal_session_ttl.as_secs(),
        },
        "oidc": o.oidc.as_ref().map(|c| json!({
            "issuer": c.issuer,
            "client_id": c.client_id,
            "client_secret": redacted(&c.client_secret),
            "role_claim": c.role_claim,
            "audiences": c.audiences,
            "scopes": c.scopes,
        })),
    }))
    .into_response())
}

/// The tenant a portal request names (`?tenant=` or `X-Tenant-ID`), which `id` must be able to
/// read.
async fn named_tenant(
    app: &App,
    id: &Identity,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Arc<TenantRuntime>, ApiError> {
    let from_query = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == "tenant")
        .map(|(_, v)| v.to_string());
    let name = from_query
        .or_else(|| {
            headers
                .get("x-tenant-id")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
        })
        .or_else(|| id.tenant_scope.clone())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::invalid("name a tenant: ?tenant=<id>, X-Tenant-ID or /t/<id>/"))?;
    if !understudy_crds::model::valid_tenant_id(&name) {
        return Err(ApiError::invalid(format!(
            "{name:?} is not a valid tenant id"
        )));
    }
    let tenant = crate::tenancy::find(app, &name)
        .await
        .map_err(ApiError::from)?
        .filter(|t| id.may_read(&t.config))
        .ok_or_else(|| ApiError::not_found(format!("no tenant {name:?} that you may read")))?;
    Ok(tenant)
}

async fn instructions(
    State(app): State<App>,
    caller: Caller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = reader(caller)?;
    let t = named_tenant(&app, &id, q.as_deref(), &headers).await?;
    Ok(axum::Json(json!({
        "tenant": t.id(),
        "instructions": t.settings.instructions,
    }))
    .into_response())
}

/// Every tool of a tenant: its own, then the channel tools when it offers them.
fn tool_list(t: &TenantRuntime) -> Vec<Value> {
    let mut out: Vec<Value> = t
        .tools
        .list
        .iter()
        .map(|tool| {
            json!({
                "name": tool.listing.get("name"),
                "group": "tenant",
                "description": tool.listing.get("description"),
                "input_schema": tool.listing.get("inputSchema"),
            })
        })
        .collect();
    for (name, description, schema) in crate::mcp::channel_tools::catalog(t) {
        out.push(json!({
            "name": name, "group": "channels", "description": description, "input_schema": schema,
        }));
    }
    out
}

async fn tools(
    State(app): State<App>,
    caller: Caller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = reader(caller)?;
    let t = named_tenant(&app, &id, q.as_deref(), &headers).await?;
    Ok(axum::Json(json!({"tenant": t.id(), "tools": tool_list(&t)})).into_response())
}

async fn tool(
    State(app): State<App>,
    caller: Caller,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = reader(caller)?;
    let t = named_tenant(&app, &id, q.as_deref(), &headers).await?;
    tool_list(&t)
        .into_iter()
        .find(|tool| tool["name"] == name.as_str())
        .map(|tool| axum::Json(tool).into_response())
        .ok_or_else(|| ApiError::not_found(format!("tenant {:?} has no tool {name:?}", t.id())))
}

async fn meta(caller: Caller) -> Result<Response, ApiError> {
    reader(caller)?;
    Ok(axum::Json(json!({
        "has_keys": Column::NAMES,
        "json_sources": ["param", "response", "header"],
        "replay": {
            "burst": REPLAY_BURST,
            "refill_secs": REPLAY_REFILL_SECS,
            "sustained_min": 60 / REPLAY_REFILL_SECS,
        },
        "export": {"max_rows": MAX_EXPORT_ROWS},
        "sources": ["mcp", "hosted", "execute", "llm", "channels", "portal-replay", "portal-tryit"],
        "breakdown_by": ["tool", "user", "success", "auth_type"],
        "max_limit": MAX_LIMIT,
        "default_limit": DEFAULT_LIMIT,
        "json_window_default_seconds": understudy_core::audit::DEFAULT_JSON_WINDOW_MS / 1000,
    }))
    .into_response())
}

async fn events(
    State(app): State<App>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = scoped(&app, caller, q.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let page = app
        .stores
        .audit
        .query_audit(&p.filter, p.offset, p.limit, now_ms())
        .await?;
    Ok(no_store(
        axum::Json(json!({
            "events": page.events,
            "total": page.total,
            "limit": p.limit,
            "offset": p.offset,
        }))
        .into_response(),
    ))
}

/// The event `id` names, if the caller may see it: 400 for a non-UUID, 404 when unknown.
async fn find_event(
    app: &App,
    who: &Identity,
    id: &str,
) -> Result<understudy_core::audit::AuditEntry, ApiError> {
    let Ok(uuid) = uuid::Uuid::parse_str(id) else {
        return Err(ApiError::invalid(format!("{:?} is not a UUID", clip(id))));
    };
    app.stores
        .audit
        .audit_event(&uuid.hyphenated().to_string())
        .await?
        .filter(|e| may_see(app, who, &e.event))
        .ok_or_else(|| ApiError::not_found(format!("no audit event {id}")))
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

async fn event(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = reader(caller)?;
    let e = find_event(&app, &who, &id).await?;
    let mut doc = serde_json::to_value(&e.event).unwrap_or_else(|_| json!({}));
    doc["payload"] = e
        .payload
        .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
        .unwrap_or(Value::Null);
    Ok(no_store(axum::Json(doc).into_response()))
}

/// Sources whose rows are tool calls the dispatcher can run again.
const REPLAYABLE: &[&str] = &["mcp", "hosted", "portal-replay", "portal-tryit"];

async fn replay(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let who = reader(caller)?;
    if headers
        .get("x-requested-with")
        .is_none_or(|v| v.as_bytes().trim_ascii().is_empty())
    {
        return Err(ApiError::forbidden(
            "replay needs the X-Requested-With header (CSRF protection)",
        ));
    }
    if !who.has_role(Role::Editor) {
        return Err(ApiError::forbidden("replay needs the editor or admin role"));
    }
    let e = find_event(&app, &who, &id).await?;
    // Everything that can refuse is checked before the budget is spent.
    let not = |why: &str| {
        Err(ApiError::invalid(format!(
            "event {id} cannot be replayed: {why}"
        )))
    };
    if !REPLAYABLE.contains(&e.event.source.as_str()) || e.event.tool.is_empty() {
        return not("only MCP tool calls can be replayed");
    }
    let Some(args) = e
        .payload
        .as_ref()
        .and_then(|p| p.request_params.as_ref())
        .and_then(understudy_core::audit::parsed)
    else {
        return not("it has no captured request");
    };
    if !args.is_object() {
        return not("its captured arguments are not an object");
    }
    if crate::audit::altered(&args) {
        return not("its captured arguments were redacted or cut");
    }
    let tenant = match &e.event.tenant {
        Some(t) => crate::tenancy::find(&app, t)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found(format!("tenant {t:?} no longer exists")))?,
        None => app.channel_server.clone(),
    };
    if !who.may_read(&tenant.config) && !tenant.tenantless {
        return Err(ApiError::not_found(format!("no audit event {id}")));
    }
    if !tool_list(&tenant)
        .iter()
        .any(|t| t["name"] == e.event.tool.as_str())
    {
        return not("its tool is no longer offered");
    }
    let subject = who.subject.clone().unwrap_or_default();
    if let Some(wait_ms) = app
        .stores
        .runtime
        .take_token(
            &format!("replay:{subject}"),
            REPLAY_BURST,
            REPLAY_REFILL_SECS * 1000,
            now_ms(),
        )
        .await?
    {
        let secs = wait_ms.div_ceil(1000).max(1);
        let mut resp = ApiError::new(
            Code::RateLimited,
            format!("replay budget spent ({REPLAY_BURST} at once, one more every {REPLAY_REFILL_SECS} s): retry in {secs} s"),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Ok(resp);
    }
    let audit_as = crate::mcp::audit::AuditAs {
        source: "portal-replay",
        who: crate::audit::Who::from(&who),
        replayed_from: Some(e.event.id.clone()),
        event_id: understudy_core::audit::new_id(now_ms()),
    };
    let reply =
        crate::mcp::audit::invoke(&app, &tenant, &e.event.tool, args, &headers, &audit_as).await;
    Ok(axum::Json(json!({
        "event_id": audit_as.event_id,
        "replayed_from": e.event.id,
        "result": reply.get("result"),
        "error": reply.get("error"),
    }))
    .into_response())
}

async fn export(
    State(app): State<App>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let p = scoped(&app, caller, q.as_deref(), MAX_EXPORT_ROWS, MAX_EXPORT_ROWS)?;
    match p.rest.get("format").map(String::as_str) {
        None | Some("jsonl") | Some("ndjson") => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "format {:?} is not supported: jsonl is",
                clip(other)
            )));
        }
    }
    let filter = Arc::new(p.filter);
    let now = now_ms();
    let store = app.stores.audit.clone();
    // Pages of 1,000 rows, read as the client takes them: memory stays flat whatever the size.
    let state = (None::<String>, p.limit, false);
    let rows = futures::stream::unfold(state, move |(cursor, left, done)| {
        let store = store.clone();
        let filter = filter.clone();
        async move {
            if done || left == 0 {
                return None;
            }
            let want = left.min(1_000);
            match store
                .scan_audit(&filter, cursor.as_deref(), want, now)
                .await
            {
                Ok((events, next)) => {
                    let mut buf = Vec::with_capacity(events.len() * 256);
                    for e in &events {
                        buf.extend_from_slice(e.to_json().as_bytes());
                        buf.push(b'\n');
                    }
                    let left = left - events.len();
                    let done = next.is_none();
                    Some((
                        Ok::<Bytes, std::io::Error>(Bytes::from(buf)),
                        (next, left, done),
                    ))
                }
                Err(e) => Some((Err(std::io::Error::other(e.to_string())), (None, 0, true))),
            }
        }
    });
    let mut resp = Response::new(axum::body::Body::from_stream(rows));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"audit.jsonl\""),
    );
    Ok(no_store(resp))
}

async fn stream(
    State(app): State<App>,
    caller: Caller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mut p = scoped(&app, caller, q.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    // The tail carries summaries: payload filters do not apply to it, nor does a past window.
    p.filter.json.clear();
    p.filter.has.clear();
    p.filter.from_ms = None;
    p.filter.to_ms = None;
    let sub = app
        .stores
        .hub
        .subscribe(&understudy_core::audit::tail_topic())
        .await;
    // Every few seconds the caller is resolved again: a revoked key, an expired token or a
    // logout ends the tail, and what it may see follows tenants' visibility as it changes.
    let mut recheck = tokio::time::interval(TAIL_RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    recheck.reset();
    let state = (sub, recheck, p.filter, headers, app.clone());
    let frames = futures::stream::unfold(state, |(mut sub, mut recheck, mut filter, headers, app)| async move {
        loop {
            tokio::select! {
                d = sub.recv() => {
                    let frame = tail_frame(&filter, d?);
                    return Some((frame, (sub, recheck, filter, headers, app)));
                }
                _ = recheck.tick() => {
                    match app.identity.resolve_request(&headers, app.stores.runtime.as_ref()).await {
                        Ok(id) if id.is_authenticated() => filter.visibility = visibility(&app, &id),
                        _ => return None,
                    }
                }
            }
        }
    })
    .filter(|b| futures::future::ready(!b.is_empty()))
    .map(Ok::<Bytes, std::io::Error>);
    let first = futures::stream::once(async { Ok(Bytes::from_static(b": connected\n\n")) });
    Ok(crate::sse::response_with_keep_alive(
        &app,
        "portal",
        first.chain(frames),
        TAIL_KEEP_ALIVE,
        b": keepalive\n\n",
    ))
}

/// The SSE frames of one tail delivery: the events `filter` lets through.
fn tail_frame(filter: &AuditFilter, d: Delivery) -> Bytes {
    match d {
        Delivery::Message(bytes) => {
            let mut out = Vec::new();
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let Ok(e) = serde_json::from_slice::<AuditEvent>(line) else {
                    continue;
                };
                if filter.matches_event(&e, now_ms()) {
                    crate::sse::Event {
                        id: Some(&e.id),
                        event: Some("audit"),
                        data: std::str::from_utf8(line).unwrap_or("{}"),
                    }
                    .encode_into(&mut out);
                }
            }
            Bytes::from(out)
        }
        Delivery::Gap => Bytes::from_static(
            b": some events may have been missed (the tail lagged or reconnected)\n\n",
        ),
    }
}

/// A Go duration (`1h30m`, `5m`, `90s`, `1.5h`, `500ms`) in milliseconds.
fn go_duration(s: &str) -> Option<u64> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let ms = match &rest[..unit_end] {
            "ns" => 1e-6,
            "us" | "µs" => 1e-3,
            "ms" => 1.0,
            "s" => 1e3,
            "m" => 60e3,
            "h" => 3_600e3,
            _ => return None,
        };
        total += n * ms;
        rest = &rest[unit_end..];
    }
    (total.is_finite() && total < 1e15).then_some(total as u64)
}

/// Reads every event of a filter (newest first) up to [`AGGREGATE_MAX`].
async fn read_all(
    app: &App,
    filter: &AuditFilter,
    now: u64,
    mut visit: impl FnMut(&AuditEvent),
) -> Result<(), ApiError> {
    let mut cursor: Option<String> = None;
    let mut seen = 0usize;
    loop {
        let (events, next) = app
            .stores
            .audit
            .scan_audit(filter, cursor.as_deref(), 5_000, now)
            .await?;
        for e in &events {
            visit(e);
        }
        seen += events.len();
        match next {
            Some(c) if seen < AGGREGATE_MAX => cursor = Some(c),
            _ => return Ok(()),
        }
    }
}

/// The window of an aggregation: `from`/`to`, by default the last hour (400 when `from` ends
/// up after `to`, e.g. a `from` in the future without a `to`).
fn window(p: &mut Parsed, now: u64) -> Result<(u64, u64), ApiError> {
    let to = p.filter.to_ms.unwrap_or(now);
    let from = p.filter.from_ms.unwrap_or(to.saturating_sub(3_600_000));
    if from > to {
        return Err(ApiError::invalid(
            "from is after to (a to defaults to now): the window is empty",
        ));
    }
    p.filter.from_ms = Some(from);
    p.filter.to_ms = Some(to);
    Ok((from, to))
}

async fn timeseries(
    State(app): State<App>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let mut p = scoped(&app, caller, q.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let now = now_ms();
    let (from, to) = window(&mut p, now)?;
    let bucket_text = p.rest.get("bucket").cloned().unwrap_or_else(|| "1m".into());
    let bucket = go_duration(&bucket_text).ok_or_else(|| {
        ApiError::invalid(format!(
            "bucket: {:?} is not a duration (e.g. 30s, 5m, 1h)",
            clip(&bucket_text)
        ))
    })?;
    if bucket < 1_000 {
        return Err(ApiError::invalid("bucket: at least 1s"));
    }
    let start = from / bucket * bucket;
    let n = to.saturating_sub(start) / bucket + 1;
    if n > MAX_BUCKETS {
        return Err(ApiError::invalid(format!(
            "{n} buckets of {bucket_text} between from and to: at most {MAX_BUCKETS}; widen the bucket or narrow the window"
        )));
    }
    let mut counts = vec![(0u64, 0u64); n as usize];
    read_all(&app, &p.filter, now, |e| {
        let i = ((e.ts_ms().saturating_sub(start)) / bucket) as usize;
        if let Some(c) = counts.get_mut(i) {
            c.0 += 1;
            if !e.success {
                c.1 += 1;
            }
        }
    })
    .await?;
    let buckets: Vec<Value> = counts
        .iter()
        .enumerate()
        .map(|(i, (count, errors))| {
            json!({
                "ts": understudy_core::audit::rfc3339_ms(start + i as u64 * bucket),
                "count": count,
                "errors": errors,
            })
        })
        .collect();
    Ok(no_store(
        axum::Json(json!({
            "from": understudy_core::audit::rfc3339_ms(from),
            "to": understudy_core::audit::rfc3339_ms(to),
            "bucket": bucket_text,
            "bucket_seconds": bucket as f64 / 1000.0,
            "buckets": buckets,
        }))
        .into_response(),
    ))
}

/// `(key, count, errors)` rows by count, then key.
fn ranked(map: HashMap<Value, (u64, u64)>, max: usize) -> Vec<Value> {
    let mut rows: Vec<(Value, (u64, u64))> = map.into_iter().collect();
    rows.sort_by(|a, b| {
        b.1.0
            .cmp(&a.1.0)
            .then_with(|| a.0.to_string().cmp(&b.0.to_string()))
    });
    rows.into_iter()
        .take(max)
        .map(|(key, (count, errors))| json!({"key": key, "count": count, "errors": errors}))
        .collect()
}

fn dimension(by: &str, e: &AuditEvent) -> Value {
    match by {
        "tool" => json!(e.tool),
        "user" => json!(e.user),
        "success" => json!(e.success),
        "auth_type" => json!(e.auth_type),
        "source" => json!(e.source),
        "tenant" => json!(e.tenant),
        _ => Value::Null,
    }
}

async fn breakdown(
    State(app): State<App>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let mut p = scoped(&app, caller, q.as_deref(), DEFAULT_LIMIT, MAX_LIMIT)?;
    let by = p.rest.get("by").cloned().unwrap_or_else(|| "tool".into());
    if !["tool", "user", "success", "auth_type", "source", "tenant"].contains(&by.as_str()) {
        return Err(ApiError::invalid(format!(
            "by: {:?} must be one of tool, user, success, auth_type (or source, tenant)",
            clip(&by)
        )));
    }
    let now = now_ms();
    let (from, to) = window(&mut p, now)?;
    let mut map: HashMap<Value, (u64, u64)> = HashMap::new();
    read_all(&app, &p.filter, now, |e| {
        let c = map.entry(dimension(&by, e)).or_default();
        c.0 += 1;
        if !e.success {
            c.1 += 1;
        }
    })
    .await?;
    Ok(no_store(
        axum::Json(json!({
            "by": by,
            "from": understudy_core::audit::rfc3339_ms(from),
            "to": understudy_core::audit::rfc3339_ms(to),
            "rows": ranked(map, BREAKDOWN_ROWS),
        }))
        .into_response(),
    ))
}

async fn dashboard(State(app): State<App>, caller: Caller) -> Result<Response, ApiError> {
    let id = reader(caller)?;
    let now = now_ms();
    let filter = AuditFilter {
        visibility: visibility(&app, &id),
        from_ms: Some(now.saturating_sub(3_600_000)),
        to_ms: Some(now),
        ..Default::default()
    };
    let (mut total, mut errors) = (0u64, 0u64);
    let mut durations = Vec::new();
    let mut sources: HashMap<String, u64> = HashMap::new();
    let mut tools: HashMap<Value, (u64, u64)> = HashMap::new();
    let mut recent = Vec::new();
    read_all(&app, &filter, now, |e| {
        total += 1;
        if !e.success {
            errors += 1;
        }
        durations.push(e.duration_ms);
        *sources.entry(e.source.clone()).or_default() += 1;
        let t = tools.entry(json!(e.tool)).or_default();
        t.0 += 1;
        if !e.success {
            t.1 += 1;
        }
        if recent.len() < 20 {
            recent.push(e.clone());
        }
    })
    .await?;
    durations.sort_by(|a, b| a.total_cmp(b));
    let pct = |q: f64| -> Option<f64> {
        (!durations.is_empty()).then(|| {
            let i = ((durations.len() as f64 - 1.0) * q).round() as usize;
            durations[i.min(durations.len() - 1)]
        })
    };
    let snapshot = app.snapshot.load();
    let tenants = snapshot
        .tenants
        .values()
        .filter(|t| id.may_read(&t.config))
        .count();
    Ok(no_store(
        axum::Json(json!({
            "window_seconds": 3600,
            "total": total,
            "errors": errors,
            "error_rate": if total == 0 { 0.0 } else { errors as f64 / total as f64 },
            "p50_ms": pct(0.5),
            "p95_ms": pct(0.95),
            "by_source": sources,
            "top_tools": ranked(tools, 10),
            "recent": recent,
            "tenants": tenants,
        }))
        .into_response(),
    ))
}

async fn wellknown(
    State(app): State<App>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    reader(caller)?;
    Ok(axum::Json(json!({
        "protected_resource": crate::wellknown::protected_resource(&app, &headers, None),
        "authorization_server": crate::wellknown::authorization_server(&app).await,
    }))
    .into_response())
}

/// `POST /api/v1/admin/tryit/{name}` (SPEC §9.3): calls a tool of the named tenant in-process,
/// recorded as `portal-tryit`; answers the tool's CallToolResult.
pub async fn tryit(
    app: &App,
    who: &Identity,
    name: &str,
    arguments: Value,
    parts: &http::request::Parts,
) -> Result<Response, ApiError> {
    // (A cookie caller's X-Requested-With is checked by `Caller`, as for every change.)
    if !who.has_role(Role::Editor) {
        return Err(ApiError::forbidden("try-it needs the editor or admin role"));
    }
    let path_tenant = parts
        .extensions
        .get::<crate::state::PathTenant>()
        .map(|p| format!("tenant={}", p.0));
    let tenant = named_tenant(app, who, path_tenant.as_deref(), &parts.headers).await?;
    if !tool_list(&tenant).iter().any(|t| t["name"] == name) {
        return Err(ApiError::not_found(format!(
            "tenant {:?} has no tool {:?}",
            tenant.id(),
            clip(name)
        )));
    }
    if !arguments.is_object() {
        return Err(ApiError::invalid("arguments must be an object"));
    }
    let audit_as = crate::mcp::audit::AuditAs {
        source: "portal-tryit",
        who: crate::audit::Who::from(who),
        replayed_from: None,
        event_id: understudy_core::audit::new_id(now_ms()),
    };
    let reply =
        crate::mcp::audit::invoke(app, &tenant, name, arguments, &parts.headers, &audit_as).await;
    if let Some(result) = reply.get("result") {
        let mut resp = axum::Json(result).into_response();
        if let Ok(v) = HeaderValue::from_str(&audit_as.event_id) {
            resp.headers_mut().insert("x-audit-event-id", v);
        }
        return Ok(resp);
    }
    let message = reply
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("the tool call failed");
    Err(ApiError::invalid(message.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("5m"), Some(300_000));
        assert_eq!(go_duration("1h30m"), Some(5_400_000));
        assert_eq!(go_duration("1.5h"), Some(5_400_000));
        assert_eq!(go_duration("500ms"), Some(500));
        assert_eq!(go_duration("5x"), None);
        assert_eq!(go_duration(""), None);
        assert_eq!(go_duration("m"), None);
    }

    #[test]
    fn queries_parse_with_the_seed_rules() {
        let p = parse_query(
            Some("tool=a&success=false&limit=5000&param.n=2&header.x-foo.bar=v&param.a..b=1&has=bogus&has=response_error&format=jsonl"),
            50,
            1000,
        )
        .unwrap();
        assert_eq!(p.limit, 1000);
        assert_eq!(p.filter.tool.as_deref(), Some("a"));
        assert_eq!(p.filter.success, Some(false));
        assert_eq!(
            p.filter.json.len(),
            1,
            "the dotted header and the empty segment are dropped"
        );
        assert_eq!(p.filter.has, vec![Column::ResponseError]);
        assert_eq!(p.rest.get("format").map(String::as_str), Some("jsonl"));
        assert!(parse_query(Some("limit=x"), 50, 1000).is_err());
        assert!(parse_query(Some("success=maybe"), 50, 1000).is_err());
        assert!(parse_query(Some("from=yesterday"), 50, 1000).is_err());
        assert!(
            parse_query(
                Some("from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z"),
                50,
                1000
            )
            .is_err()
        );
    }
}
