//! MCP for tenants (SPEC §4): thin transport adapters over the one dispatcher in [`crate::mcp`].
//!
//! ```text
//!  POST /mcp/message ──────────────┐ (no session: JSON or one SSE event)
//!  POST /mcp/message?sessionId= ───┤ legacy: 202, the reply goes to the session's log ──┐
//!  GET  /mcp/sse ──────────────────┼─ opens a legacy session, follows its log ◄─────────┤
//!  POST /mcp, POST / ──────────────┤ streamable: sessions in the store; 2026-07-28      │
//!  GET  /mcp ──────────────────────┤   sessionless by MCP-Protocol-Version             │
//!  DELETE /mcp ────────────────────┘ follows the session's log (Last-Event-ID) ◄───────┘
//!       each: Origin check → tenancy → chaos → body → dispatch → render
//! ```
//!
//! The session's log lives in the shared store and its doorbell on the hub, so the POST of a
//! legacy session, the resumption of a stream and a DELETE may land on any process.

mod hosted;
mod legacy;
mod stream;
mod streamable;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::Value;
use understudy_crds::Surface as ChaosSurface;

use crate::chaos::{Fault, Outcome};
use crate::mcp::jsonrpc::{self, INTERNAL_ERROR, INVALID_REQUEST, SERVER_ERROR};
use crate::snapshot::TenantRuntime;
use crate::state::{App, TenantLabel};
use crate::surface::{Reject, Surface};
use crate::tenancy::{Access, TenancyError};

/// Events kept per session for `Last-Event-ID` resumption.
pub const SESSION_LOG: usize = 256;

/// "Session not found" (the code the SDKs use for it).
pub const SESSION_NOT_FOUND: i64 = -32001;

/// 503: the session store cannot be reached.
pub fn session_store_unavailable() -> Response {
    rpc_error(
        StatusCode::SERVICE_UNAVAILABLE,
        SERVER_ERROR,
        "The session store is unreachable; retry shortly",
    )
}

/// Opens a session of `tenant` in the shared store: its new id, or the refusal (429 at the
/// tenant's cap, 503 when the store cannot be reached).
pub async fn open_session(
    app: &App,
    tenant: &TenantRuntime,
    kind: understudy_core::SessionKind,
    protocol_version: Option<&str>,
    idle: std::time::Duration,
) -> Result<String, Response> {
    use understudy_core::sessions::MAX_SESSIONS_PER_TENANT;
    let id = understudy_core::sessions::new_session_id();
    let doc = understudy_core::SessionDoc {
        kind,
        protocol_version: protocol_version.map(String::from),
        created_ms: understudy_core::now_ms(),
    };
    match app
        .stores
        .sessions
        .create_session(
            tenant.id(),
            &id,
            &doc,
            &tenant.tools.fingerprint,
            idle.as_millis() as u64,
            MAX_SESSIONS_PER_TENANT,
        )
        .await
    {
        Ok(true) => Ok(id),
        Ok(false) => Err(rpc_error(
            StatusCode::TOO_MANY_REQUESTS,
            SERVER_ERROR,
            format!(
                "Tenant '{}' holds {MAX_SESSIONS_PER_TENANT} live MCP sessions, the most it may: end some (DELETE /mcp) or let them expire",
                tenant.id()
            ),
        )),
        Err(e) => {
            app.metrics.redis_error("mcp_session");
            tracing::debug!(error = %e, "session create failed");
            Err(session_store_unavailable())
        }
    }
}

/// The surface.
pub fn surface() -> Surface {
    Surface {
        label: "mcp",
        router: router(),
        prefixes: &[
            "/mcp",
            "/api/v1/mcp",
            "/channels/",
            "/.well-known/mcp-server",
        ],
        reject,
    }
}

fn router() -> Router<App> {
    Router::new()
        .route(
            "/mcp",
            post(streamable::post)
                .get(streamable::get)
                .delete(streamable::delete),
        )
        .route("/", post(streamable::post).get(streamable::root_get))
        .route("/mcp/message", post(legacy::message))
        .route("/mcp/sse", get(legacy::open))
        .route("/api/v1/mcp", post(hosted::post))
        .route(
            "/channels/mcp",
            post(streamable::post)
                .get(streamable::get)
                .delete(streamable::delete),
        )
        .route("/channels/sse", get(legacy::open))
        .route("/channels/message", post(legacy::message))
        .route("/.well-known/mcp-server", get(mcp_server))
        .route(
            "/.well-known/oauth-protected-resource",
            get(protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/{*rest}",
            get(protected_resource_of),
        )
}

/// Unknown paths and methods under `/mcp`: a JSON-RPC error body with the status.
fn reject(why: Reject, method: &Method, path: &str) -> Response {
    let mut resp = rpc_error(why.status(), SERVER_ERROR, why.message(method, path));
    if why == Reject::MethodNotAllowed && path == "/mcp/sse" {
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
    }
    resp
}

/// `GET /.well-known/oauth-protected-resource` (RFC 9728): where clients learn how to
/// authenticate to tenant MCP. Credentials are API keys (or the OpenID provider, once
/// configured).
async fn protected_resource(
    axum::extract::State(app): axum::extract::State<App>,
    headers: HeaderMap,
) -> Response {
    axum::Json(crate::wellknown::protected_resource(&app, &headers, None)).into_response()
}

/// `GET /.well-known/oauth-protected-resource/{path}`: the same for one path (RFC 9728 §3.1).
async fn protected_resource_of(
    axum::extract::State(app): axum::extract::State<App>,
    axum::extract::Path(rest): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    axum::Json(crate::wellknown::protected_resource(
        &app,
        &headers,
        Some(&rest),
    ))
    .into_response()
}

/// A JSON-RPC error response (id null) with `status`.
pub fn rpc_error(status: StatusCode, code: i64, message: impl Into<String>) -> Response {
    json_response(status, &jsonrpc::error(None, code, message, None))
}

/// A JSON response.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// One SSE event carrying `body`.
pub fn sse_response(body: &Value) -> Response {
    let data = serde_json::to_string(body).unwrap_or_default();
    let event = crate::sse::Event {
        id: None,
        event: Some("message"),
        data: &data,
    };
    crate::sse::whole(Body::from(event.encode()))
}

/// 202 with no body.
pub fn accepted() -> Response {
    StatusCode::ACCEPTED.into_response()
}

/// Whether `Accept` lists `text/event-stream`.
pub fn accepts_sse(headers: &HeaderMap) -> bool {
    accept_has(headers, "text/event-stream")
}

fn accept_has(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            m.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case(media))
        })
}

/// A tenancy refusal as a JSON-RPC error with the step's status; 401s carry
/// `WWW-Authenticate` pointing at the protected-resource metadata (SPEC §4.4).
fn tenancy_refusal(app: &App, headers: &HeaderMap, e: TenancyError) -> Response {
    let code = match e.status() {
        StatusCode::BAD_REQUEST => INVALID_REQUEST,
        _ => SERVER_ERROR,
    };
    let mut resp = rpc_error(e.status(), code, e.message());
    if e.status() == StatusCode::UNAUTHORIZED
        && let Some(v) = crate::api::challenge(app, headers)
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// Whether the request's `Origin` may use MCP (DNS-rebinding protection): no `Origin` (not a
/// browser); one of `--mcp-allowed-origins` (`*` allows any); or the gateway's own origin —
/// `--public-url`'s, or the request's `Host` when it is a loopback name. A rebinding page sends
/// a `Host` equal to its own `Origin`, so a non-loopback `Host` alone never vouches for itself.
fn origin_allowed(app: &App, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    let allowed = &app.options.mcp_allowed_origins;
    if allowed
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    if let Some(public) = &app.options.public_url
        && public.trim_end_matches('/').eq_ignore_ascii_case(origin)
    {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    match (host, origin_host) {
        (Some(h), Some(o)) => h.eq_ignore_ascii_case(o) && loopback(h),
        _ => false,
    }
}

/// Whether `host` (with or without a port) names this machine's loopback interface.
fn loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// What every MCP request goes through before its body: the Origin check, tenancy and chaos
/// (an injected fault answers here: the HTTP status with a JSON-RPC error body; latency is
/// waited for). Returns the tenant and what chaos left for the renderer.
pub async fn admit(app: &App, parts: &Parts) -> Result<(Arc<TenantRuntime>, Outcome), Response> {
    if !origin_allowed(app, &parts.headers) {
        return Err(rpc_error(
            StatusCode::FORBIDDEN,
            SERVER_ERROR,
            "Forbidden: this Origin may not use MCP here (see --mcp-allowed-origins)",
        ));
    }
    let channel_server = parts.uri.path().starts_with(CHANNEL_SERVER_PREFIX);
    let tenant = if channel_server && !crate::tenancy::names_tenant(parts) {
        app.channel_server.clone()
    } else {
        let tenant = crate::tenancy::resolve(app, parts, Access::DataPlane)
            .await
            .map_err(|e| tenancy_refusal(app, &parts.headers, e))?
            .tenant;
        if channel_server {
            app.channel_view(&tenant)
        } else {
            tenant
        }
    };
    let outcome = chaos(app, &tenant).await?;
    Ok((tenant, outcome))
}

/// Where the channel MCP server is mounted (SPEC §7.4): `/channels/mcp` (streamable HTTP and
/// plain JSON-RPC), `/channels/sse` with `/channels/message` (the legacy transport).
pub const CHANNEL_SERVER_PREFIX: &str = "/channels/";

/// `GET /.well-known/mcp-server`: the channel MCP server described (seed 003).
async fn mcp_server(
    axum::extract::State(app): axum::extract::State<App>,
    headers: HeaderMap,
) -> Response {
    let base = crate::api::base_url(&app, &headers);
    axum::Json(crate::mcp::channel_tools::describe(&base)).into_response()
}

/// Chaos for an MCP request of `tenant` (SPEC §5): a refusal answers here, with the HTTP status
/// and a JSON-RPC error body; latency is waited for; what is left goes to the renderer.
pub async fn chaos(app: &App, tenant: &Arc<TenantRuntime>) -> Result<Outcome, Response> {
    // The channel MCP server answers to the tenant's chaos for channels.
    let surface = if tenant.channel_server {
        ChaosSurface::Channels
    } else {
        ChaosSurface::Mcp
    };
    let outcome = app.chaos.evaluate(tenant, surface).await;
    let label = |mut r: Response| {
        r.extensions_mut().insert(TenantLabel(tenant.clone()));
        r
    };
    match outcome.fault {
        Some(Fault::RateLimited { retry_after }) => {
            let mut resp = rpc_error(
                StatusCode::TOO_MANY_REQUESTS,
                SERVER_ERROR,
                format!(
                    "Rate limit exceeded for tenant '{}' (chaos profile); retry after {retry_after} s",
                    tenant.id()
                ),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            Err(label(resp))
        }
        Some(Fault::ServerError(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Err(label(rpc_error(
                status,
                INTERNAL_ERROR,
                format!("Injected server error {} (chaos profile)", status.as_u16()),
            )))
        }
        Some(Fault::StreamCut(_)) | Some(Fault::Malformed(_)) | None => {
            if let Some(l) = outcome.latency {
                tokio::time::sleep(l).await;
            }
            Ok(outcome)
        }
    }
}

/// Reads the body within `--max-body-bytes` (413 with a JSON-RPC error over it).
pub async fn read_body(app: &App, parts: &Parts, body: Body) -> Result<Bytes, Response> {
    crate::body::read(parts, body, app.options.max_body_bytes)
        .await
        .map_err(|e| {
            let status = match e {
                crate::body::BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                crate::body::BodyError::Unreadable(_) => StatusCode::BAD_REQUEST,
            };
            rpc_error(status, INVALID_REQUEST, e.message())
        })
}

/// Applies what chaos left to a rendered answer: `stream_cut` closes the connection before a
/// response; `malformed_stream` (with `afterChunks: 0`, as an answer is one event) makes the
/// body invalid JSON.
pub fn with_faults(resp: Response, outcome: &Outcome) -> Response {
    match outcome.fault {
        Some(Fault::StreamCut(_)) => crate::chaos::aborted(),
        Some(Fault::Malformed(0)) => {
            let (parts, _) = resp.into_parts();
            Response::from_parts(parts, Body::from("{\"jsonrpc\":\"2.0\",\"id\":"))
        }
        _ => resp,
    }
}

/// Tags a response with its tenant (metrics).
pub fn labelled(mut resp: Response, tenant: &Arc<TenantRuntime>) -> Response {
    resp.extensions_mut().insert(TenantLabel(tenant.clone()));
    resp
}
