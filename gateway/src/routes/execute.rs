//! The async execute API (SPEC §6, seed 001): start a tool call, stream its progress, inspect
//! it, cancel it — each from any process, with call state in the shared store
//! ([`understudy_core::calls`]).
//!
//! ```text
//!  POST /mcp/execute ─► credential (editor+) ─► tenant ─► tool ─► input checked ─► create the
//!     call under this process's lease (request_id: the same call for the same caller) ─► 200
//!     └─► worker task here: start ─► partial… (paced, renewing its lease) ─► final | error
//!  GET  /mcp/stream/{id}  ─► replay the events from the start, then follow the call's topic;
//!                            a lease expired while running → WORKER_LOST; closes after the
//!                            terminal event or 5 minutes
//!  POST /mcp/cancel/{id}, /mcp/cancel_all ─► a `cancelled` event (the first end wins)
//!  GET  /mcp/calls/{id}, /mcp/manifest
//! ```

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::request::Parts;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use understudy_core::Delivery;
use understudy_core::calls::{
    Appended, CallDoc, CallEvent, CallStatus, Created, EventKind, call_topic, valid_call_id,
    valid_request_id,
};
use understudy_crds::model::Role;

use crate::snapshot::TenantRuntime;
use crate::sse::{Event, Follow, KEEP_ALIVE_EVERY};
use crate::state::App;
use crate::surface::{Reject, Surface};
use crate::tenancy::{Access, TenancyError};
use crate::work::{LEASE_MS, OPENAI_CHAT, Refused, Work, lost_data, owner, prepare, run};

/// How long a stream stays open at most (SPEC §6).
const STREAM_MAX: Duration = Duration::from_secs(300);

/// How often a stream checks whether its call's worker is gone.
const LOST_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Calls a caller may have running (not ended) at once: past it, execute answers 429.
pub const MAX_LIVE_CALLS_PER_CALLER: usize = 100;

/// The surface.
pub fn surface() -> Surface {
    Surface {
        label: "execute",
        router: router(),
        prefixes: &[
            "/mcp/manifest",
            "/mcp/execute",
            "/mcp/stream",
            "/mcp/cancel",
            "/mcp/cancel_all",
            "/mcp/calls",
        ],
        reject,
    }
}

fn router() -> Router<App> {
    Router::new()
        .route("/mcp/manifest", get(manifest))
        .route("/mcp/execute", post(execute))
        .route("/mcp/stream/{call_id}", get(stream))
        .route("/mcp/cancel/{call_id}", post(cancel))
        .route("/mcp/cancel_all", post(cancel_all))
        .route("/mcp/calls/{call_id}", get(call))
}

/// An error of this API: `{"error":{"code","message"}}` with its upper-case code.
#[derive(Debug)]
pub struct ExecError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ExecError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ExecError {
            status,
            code,
            message: message.into(),
        }
    }

    fn validation(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
            message,
        )
    }

    fn call_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "CALL_NOT_FOUND",
            format!(
                "Call '{}' not found (calls are kept for an hour).",
                id.escape_default()
            ),
        )
    }

    fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "The call store is unreachable; retry shortly.",
        )
    }
}

impl IntoResponse for ExecError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

fn reject(why: Reject, method: &Method, path: &str) -> Response {
    let (status, code) = match why {
        Reject::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        Reject::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "VALIDATION_ERROR"),
    };
    ExecError::new(status, code, why.message(method, path)).into_response()
}

/// The caller and its tenant: an editor credential (SPEC §6), the tenant from `X-Tenant-ID`,
/// else the key's tenant scope.
async fn caller(app: &App, parts: &Parts) -> Result<(String, Arc<TenantRuntime>), ExecError> {
    let Some(secret) = crate::identity::credential(&parts.headers) else {
        return Err(ExecError::new(
            StatusCode::UNAUTHORIZED,
            "AUTH_ERROR",
            "Send an API key of the editor role or above as Authorization: Bearer <key>.",
        ));
    };
    let principal = app
        .identity
        .principal_async(secret)
        .await
        .map_err(|e| ExecError::new(StatusCode::UNAUTHORIZED, "AUTH_ERROR", format!("{e}.")))?;
    if principal.role() < Role::Editor {
        return Err(ExecError::new(
            StatusCode::FORBIDDEN,
            "AUTHZ_ERROR",
            format!(
                "The execute API needs the editor role or above; this key is a {}.",
                principal.role().as_str()
            ),
        ));
    }
    let tenant = crate::tenancy::resolve(app, parts, Access::Role(Role::Editor))
        .await
        .map_err(|e| match e {
            TenancyError::Unauthenticated { .. } => {
                ExecError::new(StatusCode::UNAUTHORIZED, "AUTH_ERROR", e.message())
            }
            TenancyError::Forbidden { .. } => {
                ExecError::new(StatusCode::FORBIDDEN, "AUTHZ_ERROR", e.message())
            }
            TenancyError::Starting | TenancyError::StoreUnavailable => {
                ExecError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", e.message())
            }
            TenancyError::Missing { .. }
            | TenancyError::InvalidHeader
            | TenancyError::InvalidConfigVersion
            | TenancyError::InvalidId(_)
            | TenancyError::NotFound(_) => ExecError::validation(e.message()),
        })?
        .tenant;
    Ok((principal.caller(), tenant))
}

fn store_error(app: &App, e: understudy_core::StoreError) -> ExecError {
    app.metrics.redis_error("calls");
    tracing::debug!(error = %e, "call store failed");
    ExecError::unavailable()
}

/// `GET /mcp/manifest`: the tenant's tools and the built-in `openai_chat`.
async fn manifest(State(app): State<App>, req: Request) -> Result<Response, ExecError> {
    let (parts, _) = req.into_parts();
    let (_, tenant) = caller(&app, &parts).await?;
    let mut tools: Vec<Value> = tenant
        .tools
        .list
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "description": t.listing.get("description").cloned().unwrap_or(Value::Null),
                "input_schema": t.listing.get("inputSchema").cloned().unwrap_or(json!({"type": "object"})),
            })
        })
        .collect();
    tools.push(json!({
        "name": OPENAI_CHAT,
        "description": "The tenant's mock model: input is a Chat Completions request (messages, model, max_tokens); the answer streams as partial events.",
        "input_schema": {"type": "object", "properties": {"messages": {"type": "array"}}, "required": ["messages"]},
    }));
    Ok(axum::Json(json!({"tools": tools})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecuteBody {
    tool: String,
    #[serde(default)]
    input: Option<Value>,
    #[serde(default)]
    session_id: Option<String>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

/// `POST /mcp/execute`.
async fn execute(State(app): State<App>, req: Request) -> Result<Response, ExecError> {
    let started = std::time::Instant::now();
    let (parts, body) = req.into_parts();
    let (caller, tenant) = caller(&app, &parts).await?;
    let bytes = crate::body::read(&parts, body, app.options.max_body_bytes)
        .await
        .map_err(|e| match e {
            crate::body::BodyError::TooLarge(_) => ExecError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "VALIDATION_ERROR",
                e.message(),
            ),
            crate::body::BodyError::Unreadable(_) => ExecError::validation(e.message()),
        })?;
    let body: ExecuteBody = serde_json::from_slice(&bytes)
        .map_err(|e| ExecError::validation(format!("Invalid request body: {e}")))?;
    let input = match body.input {
        None | Some(Value::Null) => json!({}),
        Some(v @ Value::Object(_)) => v,
        Some(_) => return Err(ExecError::validation("\"input\" must be an object")),
    };
    if let Some(r) = &body.request_id
        && !valid_request_id(r)
    {
        return Err(ExecError::validation(
            "\"request_id\" must be 1 to 128 characters without control characters",
        ));
    }
    let work = prepare(&app, &tenant, &body.tool, &input)
        .await
        .map_err(|r| match r {
            Refused::UnknownTool => ExecError::new(
                StatusCode::NOT_FOUND,
                "TOOL_NOT_FOUND",
                format!(
                    "Tool '{}' not found: GET /mcp/manifest lists the tenant's tools.",
                    body.tool
                        .chars()
                        .take(128)
                        .collect::<String>()
                        .escape_default()
                ),
            ),
            Refused::Invalid(message) => ExecError::validation(message),
        })?;
    // The request as stored: a request_id reused with another body is refused.
    let canonical = json!({"tool": body.tool, "input": input, "session_id": body.session_id, "metadata": body.metadata}).to_string();
    let live = app
        .stores
        .calls
        .caller_live_calls(tenant.id(), &caller)
        .await
        .map_err(|e| store_error(&app, e))?;
    let call_id = understudy_core::sessions::new_session_id();
    let doc = CallDoc {
        call_id: call_id.clone(),
        tenant: tenant.id().to_string(),
        caller,
        tool: body.tool.clone(),
        body: canonical.clone(),
        request_id: body.request_id.clone(),
        created_ms: understudy_core::now_ms(),
    };
    if live >= MAX_LIVE_CALLS_PER_CALLER && body.request_id.is_none() {
        return Err(ExecError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            format!(
                "This caller has {MAX_LIVE_CALLS_PER_CALLER} calls running, the most it may: wait for some to end, or cancel them."
            ),
        ));
    }
    match app
        .stores
        .calls
        .create_call(&doc, owner(), LEASE_MS)
        .await
        .map_err(|e| store_error(&app, e))?
    {
        Created::Existing(existing) => {
            if existing.body != canonical {
                return Err(ExecError::validation(
                    "This request_id already names a call started with a different body.",
                ));
            }
            let status = app
                .stores
                .calls
                .get_call(tenant.id(), &existing.call_id)
                .await
                .map_err(|e| store_error(&app, e))?
                .map_or(CallStatus::Started, |c| c.status);
            return Ok(
                axum::Json(json!({"call_id": existing.call_id, "status": status.as_str()}))
                    .into_response(),
            );
        }
        Created::New => {}
    }
    if let Work::Fault(code, text) = &work
        && *code == "OPENAI_ERROR"
    {
        // The tenant's chaos refused the model before it started: the call ends at once, and
        // the answer says so (SPEC §6: OPENAI_ERROR 502).
        let data = json!({"type": "error", "code": code, "text": text}).to_string();
        let _ = app
            .stores
            .calls
            .append_call_event(
                tenant.id(),
                &call_id,
                Some(owner()),
                EventKind::Error,
                &data,
                None,
                Some(code),
            )
            .await;
        return Err(ExecError::new(
            StatusCode::BAD_GATEWAY,
            "OPENAI_ERROR",
            format!("{text} (call {call_id})"),
        ));
    }
    let audit = if app.audit.enabled() {
        let who = crate::audit::who_of(&app, &parts.headers);
        let mut r = crate::audit::Record::new("execute", body.tool.clone(), who, started);
        r.tenant = Some(tenant.id().to_string());
        r.note.params = crate::audit::Captured::Json(input.clone());
        r.headers = Some(parts.headers.clone());
        r.session = body.session_id.clone();
        Some(r)
    } else {
        None
    };
    tokio::spawn(run(
        app.clone(),
        tenant.clone(),
        call_id.clone(),
        work,
        audit,
    ));
    Ok(axum::Json(json!({"call_id": call_id, "status": "started"})).into_response())
}

/// `GET /mcp/stream/{call_id}`.
async fn stream(
    State(app): State<App>,
    Path(call_id): Path<String>,
    req: Request,
) -> Result<Response, ExecError> {
    let (parts, _) = req.into_parts();
    let (_, tenant) = caller(&app, &parts).await?;
    let t = tenant.id().to_string();
    let calls = app.stores.calls.clone();
    if !valid_call_id(&call_id) {
        return Err(ExecError::call_not_found(&call_id));
    }
    let topic = call_topic(&t, &call_id).map_err(|_| ExecError::call_not_found(&call_id))?;
    // Subscribed before the record is read, so nothing appended in between is missed.
    let mut sub = app.stores.hub.subscribe_with_capacity(&topic, 64).await;
    if calls
        .get_call(&t, &call_id)
        .await
        .map_err(|e| store_error(&app, e))?
        .is_none()
    {
        return Err(ExecError::call_not_found(&call_id));
    }
    let (tx, resp) = crate::sse::channel(&app, "execute", 16, Some(KEEP_ALIVE_EVERY));
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + STREAM_MAX;
        let mut cursor = 0u64;
        let send = |e: CallEvent| {
            let tx = tx.clone();
            async move {
                let seq = e.seq.to_string();
                let ok = tx
                    .send(&Event {
                        id: Some(&seq),
                        event: Some(e.kind.as_str()),
                        data: &e.data,
                    })
                    .await
                    .is_ok();
                (ok, e.kind.status().is_some())
            }
        };
        // Sends what the record holds after the cursor; `false`: the stream is done.
        macro_rules! catch_up {
            () => {{
                let mut go = true;
                loop {
                    let Ok(events) = calls.call_events(&t, &call_id, cursor).await else {
                        break;
                    };
                    let n = events.len();
                    for e in events {
                        cursor = e.seq;
                        let (ok, end) = send(e).await;
                        if !ok || end {
                            go = false;
                            break;
                        }
                    }
                    if !go || n < understudy_core::calls::EVENTS_PAGE {
                        break;
                    }
                }
                go
            }};
        }
        if !catch_up!() {
            return;
        }
        let mut check = tokio::time::interval(LOST_CHECK_EVERY);
        loop {
            tokio::select! {
                d = sub.recv() => {
                    let next = match d {
                        None => return,
                        Some(Delivery::Message(b)) => CallEvent::decode(&b),
                        Some(Delivery::Gap) => None,
                    };
                    match (Follow::after(cursor, next.as_ref().map(|e| e.seq)), next) {
                        (Follow::Send, Some(e)) => {
                            cursor = e.seq;
                            let (ok, end) = send(e).await;
                            if !ok || end { return; }
                        }
                        (Follow::Skip, _) => {}
                        _ => if !catch_up!() { return; },
                    }
                }
                _ = check.tick() => {
                    // A running call whose worker's lease ran out ends as WORKER_LOST, here if
                    // nobody else noticed first; its event arrives on the topic like any other.
                    if let Ok(Some(c)) = calls.get_call(&t, &call_id).await
                        && !c.status.terminal()
                        && c.lease_until_ms < understudy_core::now_ms()
                    {
                        let _ = calls.finish_if_lost(&t, &call_id, &lost_data()).await;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    Ok(resp)
}

/// Cancels one call of `tenant`: its status after, and whether this cancel ended it.
async fn cancel_one(
    app: &App,
    tenant: &str,
    call_id: &str,
) -> Result<(CallStatus, bool), ExecError> {
    match crate::work::cancel(app, tenant, call_id)
        .await
        .map_err(|e| store_error(app, e))?
    {
        Appended::Event(_) => Ok((CallStatus::Cancelled, true)),
        Appended::Ended(s) => Ok((s, false)),
        Appended::Lost | Appended::NoCall => Err(ExecError::call_not_found(call_id)),
    }
}

/// `POST /mcp/cancel/{call_id}`.
async fn cancel(
    State(app): State<App>,
    Path(call_id): Path<String>,
    req: Request,
) -> Result<Response, ExecError> {
    let (parts, _) = req.into_parts();
    let (_, tenant) = caller(&app, &parts).await?;
    let (status, _) = cancel_one(&app, tenant.id(), &call_id).await?;
    Ok(axum::Json(json!({"call_id": call_id, "status": status.as_str()})).into_response())
}

/// `POST /mcp/cancel_all`: the caller's calls that have not ended.
async fn cancel_all(State(app): State<App>, req: Request) -> Result<Response, ExecError> {
    let (parts, _) = req.into_parts();
    let (caller, tenant) = caller(&app, &parts).await?;
    let ids = app
        .stores
        .calls
        .caller_calls(tenant.id(), &caller)
        .await
        .map_err(|e| store_error(&app, e))?;
    let mut n = 0;
    for id in ids {
        if let Ok((_, true)) = cancel_one(&app, tenant.id(), &id).await {
            n += 1;
        }
    }
    Ok(axum::Json(json!({"cancelled": n})).into_response())
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// `GET /mcp/calls/{call_id}`.
async fn call(
    State(app): State<App>,
    Path(call_id): Path<String>,
    req: Request,
) -> Result<Response, ExecError> {
    let (parts, _) = req.into_parts();
    let (_, tenant) = caller(&app, &parts).await?;
    let calls = &app.stores.calls;
    let mut c = calls
        .get_call(tenant.id(), &call_id)
        .await
        .map_err(|e| store_error(&app, e))?
        .ok_or_else(|| ExecError::call_not_found(&call_id))?;
    if !c.status.terminal() && c.lease_until_ms < understudy_core::now_ms() {
        let _ = calls
            .finish_if_lost(tenant.id(), &call_id, &lost_data())
            .await;
        if let Ok(Some(again)) = calls.get_call(tenant.id(), &call_id).await {
            c = again;
        }
    }
    Ok(axum::Json(json!({
        "call_id": c.doc.call_id,
        "tool": c.doc.tool,
        "status": c.status.as_str(),
        "created_at": rfc3339(c.doc.created_ms),
        "updated_at": rfc3339(c.updated_ms),
        "request_id": c.doc.request_id,
        "result": crate::work::result_text(c.result.as_deref()).or(c.result),
        "error": c.error,
    }))
    .into_response())
}
