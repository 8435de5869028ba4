//! `/mcp` (and `POST /`): streamable HTTP (SPEC §4.3). The `MCP-Protocol-Version` header picks
//! the era: absent or a handshake revision → sessions (`initialize` opens one in the shared
//! store; later requests carry `Mcp-Session-Id`); `2026-07-28` → sessionless, each request
//! carrying its version in `_meta`.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::Value;
use understudy_core::sessions::{SessionKind, valid_session_id};

use super::{
    accepted, admit, json_response, labelled, read_body, rpc_error, sse_response, with_faults,
};
use crate::mcp::jsonrpc::{self, Body, INVALID_REQUEST, METHOD_NOT_FOUND, Message, SERVER_ERROR};
use crate::mcp::{BodyReply, Ctx, Reply, Revision, Transport, stateless};
use crate::snapshot::TenantRuntime;
use crate::state::App;

/// The session header.
pub const SESSION_HEADER: &str = "mcp-session-id";

use super::{SESSION_NOT_FOUND, session_store_unavailable as unavailable};

/// The era a request speaks, from `MCP-Protocol-Version`.
enum Era {
    /// Sessions (the header names a handshake revision, or is absent).
    Session,
    /// Sessionless 2026-07-28 (or a version this server does not speak: refused with -32022).
    Stateless(String),
}

fn era(headers: &HeaderMap) -> Era {
    match headers
        .get("mcp-protocol-version")
        .map(|v| v.to_str().map(str::trim))
    {
        None => Era::Session,
        Some(Ok(v)) if Revision::parse(v).is_some_and(|r| Revision::NEGOTIABLE.contains(&r)) => {
            Era::Session
        }
        Some(Ok(v)) => Era::Stateless(v.to_string()),
        Some(Err(_)) => Era::Stateless(String::new()),
    }
}

/// JSON, unless the client takes only SSE.
fn render(headers: &HeaderMap, status: StatusCode, body: &Value) -> Response {
    let json = headers.get(header::ACCEPT).is_none()
        || super::accept_has(headers, "application/json")
        || super::accept_has(headers, "*/*")
        || !super::accepts_sse(headers);
    if json || status != StatusCode::OK {
        json_response(status, body)
    } else {
        sse_response(body)
    }
}

/// The status of a reply: 400 for a malformed message, else 200.
fn status_of(reply: &Reply) -> StatusCode {
    match reply.error_code() {
        Some(jsonrpc::PARSE_ERROR) | Some(INVALID_REQUEST) => StatusCode::BAD_REQUEST,
        _ => StatusCode::OK,
    }
}

/// `POST /mcp`, `POST /`.
pub async fn post(State(app): State<App>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (tenant, outcome) = match admit(&app, &parts).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let bytes = match read_body(&app, &parts, body).await {
        Ok(b) => b,
        Err(r) => return labelled(r, &tenant),
    };
    let resp = match era(&parts.headers) {
        Era::Session => session_post(&app, &parts, &tenant, &bytes).await,
        Era::Stateless(version) => stateless_post(&app, &parts, &tenant, &bytes, &version).await,
    };
    labelled(with_faults(resp, &outcome), &tenant)
}

async fn session_post(
    app: &App,
    parts: &Parts,
    tenant: &std::sync::Arc<TenantRuntime>,
    bytes: &[u8],
) -> Response {
    let body = match jsonrpc::parse(bytes) {
        Ok(b) => b,
        Err(e) => return json_response(StatusCode::BAD_REQUEST, &e),
    };
    let headers = &parts.headers;
    let method = match &body {
        Body::Single(Ok(m)) => m.method(),
        _ => None,
    };
    if method == Some("initialize") {
        return initialize(app, headers, tenant, body).await;
    }
    let Some(sid) = headers.get(SESSION_HEADER) else {
        // Discovery is sessionless whatever the header says (a probe before `initialize`).
        if method == Some("server/discover") {
            let ctx = Ctx {
                app,
                tenant,
                revision: Revision::V2026_07_28,
                transport: Transport::Stateless,
                headers,
                session: None,
                audit_as: None,
            };
            return reply_body(headers, crate::mcp::dispatch::handle_body(&ctx, body).await);
        }
        // The channel server also takes plain JSON-RPC without a session (SPEC §7.4).
        if tenant.channel_server {
            let ctx = Ctx {
                app,
                tenant,
                revision: Revision::DEFAULT_HTTP,
                transport: Transport::Message,
                headers,
                session: None,
                audit_as: None,
            };
            return reply_body(headers, crate::mcp::dispatch::handle_body(&ctx, body).await);
        }
        return rpc_error(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "Bad Request: the Mcp-Session-Id header is required (send initialize first)",
        );
    };
    let session = match session(app, tenant, sid.to_str().unwrap_or("")).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let ctx = Ctx {
        app,
        tenant,
        revision: session,
        transport: Transport::Streamable,
        headers,
        session: None,
        audit_as: None,
    };
    reply_body(headers, crate::mcp::dispatch::handle_body(&ctx, body).await)
}

fn reply_body(headers: &HeaderMap, reply: BodyReply) -> Response {
    match reply {
        BodyReply::Accepted => accepted(),
        BodyReply::One(r) => render(headers, status_of(&r), &r.body),
        BodyReply::Batch(items) => json_response(StatusCode::OK, &Value::Array(items)),
    }
}

/// The revision of a live streamable session of `tenant`, refreshing its idle expiry; 404 when
/// it is unknown or ended (another tenant's session id is unknown here), 503 when the store
/// cannot be asked.
async fn session(app: &App, tenant: &TenantRuntime, id: &str) -> Result<Revision, Response> {
    let not_found = || {
        rpc_error(
            StatusCode::NOT_FOUND,
            SESSION_NOT_FOUND,
            "Session not found: it ended, expired or never existed; send initialize for a new one",
        )
    };
    if !valid_session_id(id) {
        return Err(not_found());
    }
    match app.stores.sessions.touch_session(tenant.id(), id).await {
        Ok(Some(s)) if s.doc.kind == SessionKind::Streamable => Ok(s
            .doc
            .protocol_version
            .as_deref()
            .and_then(Revision::parse)
            .unwrap_or(Revision::DEFAULT_HTTP)),
        Ok(_) => Err(not_found()),
        Err(e) => {
            app.metrics.redis_error("mcp_session");
            tracing::debug!(error = %e, "session lookup failed");
            Err(unavailable())
        }
    }
}

async fn initialize(
    app: &App,
    headers: &HeaderMap,
    tenant: &std::sync::Arc<TenantRuntime>,
    body: Body,
) -> Response {
    let ctx = Ctx {
        app,
        tenant,
        revision: Revision::DEFAULT_HTTP,
        transport: Transport::Streamable,
        headers,
        session: None,
        audit_as: None,
    };
    let BodyReply::One(reply) = crate::mcp::dispatch::handle_body(&ctx, body).await else {
        return accepted();
    };
    let Some(negotiated) = reply.negotiated else {
        return render(headers, status_of(&reply), &reply.body);
    };
    let id = match super::open_session(
        app,
        tenant,
        SessionKind::Streamable,
        Some(negotiated.as_str()),
        app.options.mcp_session_idle,
    )
    .await
    {
        Ok(id) => id,
        Err(r) => return r,
    };
    let mut resp = render(headers, StatusCode::OK, &reply.body);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(SESSION_HEADER, v);
    }
    resp
}

async fn stateless_post(
    app: &App,
    parts: &Parts,
    tenant: &std::sync::Arc<TenantRuntime>,
    bytes: &[u8],
    version: &str,
) -> Response {
    let headers = &parts.headers;
    let bad_envelope = || {
        json_response(
            StatusCode::BAD_REQUEST,
            &jsonrpc::error(
                None,
                INVALID_REQUEST,
                "Invalid Request: the body must be a single JSON-RPC request or notification object",
                None,
            ),
        )
    };
    let msg = match jsonrpc::parse(bytes) {
        Err(e) => return json_response(StatusCode::BAD_REQUEST, &e),
        Ok(Body::Batch(_)) | Ok(Body::Single(Ok(Message::Response))) => return bad_envelope(),
        Ok(Body::Single(Err(e))) => return json_response(StatusCode::BAD_REQUEST, &e),
        Ok(Body::Single(Ok(m))) => m,
    };
    if Revision::parse(version) != Some(Revision::V2026_07_28) {
        let id = match &msg {
            Message::Request { id, .. } => Some(id),
            _ => None,
        };
        let (status, body) = stateless::unsupported(id, version);
        return json_response(status, &body);
    }
    if let Err((status, body)) = stateless::check(headers, &msg, version) {
        return json_response(status, &body);
    }
    if let Message::Request { id, method, params } = &msg
        && method == "subscriptions/listen"
    {
        if !super::accepts_sse(headers) {
            return rpc_error(
                StatusCode::NOT_ACCEPTABLE,
                INVALID_REQUEST,
                "Not Acceptable: subscriptions/listen answers with an SSE stream; accept text/event-stream",
            );
        }
        app.metrics
            .mcp_message("subscriptions/listen", "stateless", "2026-07-28");
        return super::stream::listen(app, tenant, id.clone(), params.as_ref());
    }
    let ctx = Ctx {
        app,
        tenant,
        revision: Revision::V2026_07_28,
        transport: Transport::Stateless,
        headers,
        session: None,
        audit_as: None,
    };
    match crate::mcp::dispatch::handle_any(&ctx, msg).await {
        None => accepted(),
        Some(r) => {
            let status = match r.error_code() {
                Some(METHOD_NOT_FOUND) => StatusCode::NOT_FOUND,
                _ => status_of(&r),
            };
            render(headers, status, &r.body)
        }
    }
}

/// What a GET or DELETE answers before anything else in the sessionless era: 405 for
/// 2026-07-28 (it has no sessions), 400 for a version this server does not speak.
fn sessionless_refusal(headers: &HeaderMap) -> Option<Response> {
    match era(headers) {
        Era::Session => None,
        Era::Stateless(v) if v == Revision::V2026_07_28.as_str() => Some(post_only()),
        Era::Stateless(v) => {
            let (status, body) = stateless::unsupported(None, &v);
            Some(json_response(status, &body))
        }
    }
}

/// 405 for the sessionless revision's GET and DELETE.
fn post_only() -> Response {
    let mut resp = rpc_error(
        StatusCode::METHOD_NOT_ALLOWED,
        SERVER_ERROR,
        "Method Not Allowed: protocol revision 2026-07-28 has no sessions; POST requests",
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    resp
}

/// `GET /mcp`: the session's server-to-client stream, resumable with `Last-Event-ID`.
pub async fn get(State(app): State<App>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    if let Some(r) = sessionless_refusal(&parts.headers) {
        return r;
    }
    let (tenant, outcome) = match admit(&app, &parts).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if !super::accepts_sse(&parts.headers) {
        return labelled(
            rpc_error(
                StatusCode::NOT_ACCEPTABLE,
                INVALID_REQUEST,
                "Not Acceptable: GET /mcp opens an SSE stream; accept text/event-stream",
            ),
            &tenant,
        );
    }
    let Some(sid) = parts.headers.get(SESSION_HEADER) else {
        return labelled(
            rpc_error(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "Bad Request: the Mcp-Session-Id header is required",
            ),
            &tenant,
        );
    };
    let sid = sid.to_str().unwrap_or("").to_string();
    if let Err(r) = session(&app, &tenant, &sid).await {
        return labelled(r, &tenant);
    }
    // A Last-Event-ID too long or not printable is one the log never held: replayed from the
    // start, with a comment saying so.
    let resume = match parts.headers.get("last-event-id") {
        None => None,
        Some(_) => {
            Some(crate::sse::last_event_id(&parts.headers).unwrap_or_else(|| "(unreadable)".into()))
        }
    };
    let open = super::stream::Open {
        id: sid,
        resume,
        endpoint: None,
        keep: super::SESSION_LOG,
    };
    let resp = super::stream::follow(&app, &tenant, open);
    labelled(with_faults(resp, &outcome), &tenant)
}

/// `DELETE /mcp`: ends the session everywhere (its stream closes on whichever process holds
/// it).
pub async fn delete(State(app): State<App>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    if let Some(r) = sessionless_refusal(&parts.headers) {
        return r;
    }
    let (tenant, _) = match admit(&app, &parts).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Some(sid) = parts.headers.get(SESSION_HEADER) else {
        return labelled(
            rpc_error(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "Bad Request: the Mcp-Session-Id header is required",
            ),
            &tenant,
        );
    };
    let sid = sid.to_str().unwrap_or("");
    if !valid_session_id(sid) {
        return labelled(
            rpc_error(
                StatusCode::NOT_FOUND,
                SESSION_NOT_FOUND,
                "Session not found",
            ),
            &tenant,
        );
    }
    let resp = match app.stores.sessions.end_session(tenant.id(), sid).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => rpc_error(
            StatusCode::NOT_FOUND,
            SESSION_NOT_FOUND,
            "Session not found",
        ),
        Err(e) => {
            app.metrics.redis_error("mcp_session");
            tracing::debug!(error = %e, "session end failed");
            unavailable()
        }
    };
    labelled(resp, &tenant)
}

/// `GET /`: an MCP client's stream (it accepts `text/event-stream`), else a browser, sent to
/// the portal.
pub async fn root_get(state: State<App>, req: Request) -> Response {
    if super::accepts_sse(req.headers()) {
        return get(state, req).await;
    }
    let mut resp = StatusCode::FOUND.into_response();
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/portal/"));
    resp
}
