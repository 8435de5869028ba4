//! `POST /api/v1/mcp` (SPEC §4.5, seed 002): the hosted endpoint, for agents holding server
//! credentials. One JSON-RPC request, one JSON answer, no sessions and no streams.
//!
//! ```text
//!  credential (X-API-Key, Bearer, the admin token) ─► role ≥ editor ─► X-Tenant-Id ─► tenancy
//!     every failure: a plain 403 in the {"error":{"code","message"}} envelope, before dispatch
//!  ─► 60 requests per 60 s per caller, counted in the shared store (unreachable: 429, fail-closed)
//!  ─► chaos ─► body ─► the dispatcher (revision 2025-03-26, tenantId pinned in tools/call)
//! ```

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::Value;
use understudy_crds::model::Role;

use super::{accepted, chaos, json_response, labelled, read_body, with_faults};
use crate::api::{ApiError, Code};
use crate::identity::Principal;
use crate::mcp::jsonrpc::{self, Body, INVALID_REQUEST, METHOD_NOT_FOUND, Message};
use crate::mcp::{Ctx, Revision, Transport};
use crate::snapshot::TenantRuntime;
use crate::state::{App, PathTenant};
use crate::tenancy::{Access, TenancyError};

/// The limiter's window, in seconds (fixed, aligned to multiples of it since the epoch).
pub const HOSTED_WINDOW_SECS: u64 = 60;

/// The methods the hosted endpoint serves (seed 002); anything else is -32601.
const METHODS: &[&str] = &["initialize", "ping", "tools/list", "tools/call"];

fn refuse(code: Code, message: impl Into<String>) -> Response {
    ApiError::new(code, message).into_response()
}

fn forbidden(message: impl Into<String>) -> Response {
    refuse(Code::Forbidden, message)
}

/// What stands between a request and the dispatcher: its credential, role, tenant, limiter.
async fn admit(app: &App, parts: &http::request::Parts) -> Result<Arc<TenantRuntime>, Response> {
    const SEND: &str = "send an API key of the editor role or above as X-API-Key (or Authorization: Bearer), and X-Tenant-Id";
    let Some(secret) = crate::identity::credential(&parts.headers) else {
        return Err(forbidden(format!(
            "The hosted MCP endpoint needs a credential: {SEND} (a session cookie alone is not enough)."
        )));
    };
    let principal = app
        .identity
        .principal_async(secret)
        .await
        .map_err(|e| forbidden(format!("{e}: {SEND}.")))?;
    if principal.role() < Role::Editor {
        return Err(forbidden(format!(
            "The hosted MCP endpoint needs the editor role or above; this key is a {}.",
            principal.role().as_str()
        )));
    }
    let named = match parts.extensions.get::<PathTenant>() {
        Some(p) => Some(p.0.clone()),
        None => parts
            .headers
            .get("x-tenant-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string()),
    };
    let Some(named) = named.filter(|t| !t.is_empty()) else {
        return Err(forbidden(
            "The hosted MCP endpoint needs the X-Tenant-Id header naming the key's tenant.",
        ));
    };
    // A key scoped to another tenant is refused before the tenant is looked up, so the answer
    // never tells which tenants exist.
    if let Principal::Key(k) = &principal
        && k.tenant.as_deref().is_some_and(|scope| scope != named)
    {
        return Err(forbidden(format!(
            "This API key is scoped to another tenant than '{}'.",
            named.escape_default()
        )));
    }
    let tenant = crate::tenancy::resolve(app, parts, Access::Role(Role::Editor))
        .await
        .map_err(|e| match e {
            TenancyError::Starting | TenancyError::StoreUnavailable => {
                ApiError::unavailable(e.message()).into_response()
            }
            TenancyError::InvalidId(_) | TenancyError::NotFound(_) => {
                ApiError::not_found(e.message()).into_response()
            }
            TenancyError::InvalidConfigVersion => ApiError::invalid(e.message()).into_response(),
            TenancyError::Missing { .. }
            | TenancyError::InvalidHeader
            | TenancyError::Unauthenticated { .. }
            | TenancyError::Forbidden { .. } => forbidden(e.message()),
        })?
        .tenant;
    limit(app, &principal.caller()).await?;
    Ok(tenant)
}

/// The shared limiter: `--hosted-rate-limit` (60) requests per window per caller; when the store
/// cannot count, the request is refused (fail-closed), never let through.
async fn limit(app: &App, caller: &str) -> Result<(), Response> {
    let allowed = app.options.hosted_rate_limit;
    let now = understudy_core::now_secs();
    let start = now / HOSTED_WINDOW_SECS * HOSTED_WINDOW_SECS;
    let retry_after = (start + HOSTED_WINDOW_SECS - now).max(1);
    let refused = |message: String, retry: u64| {
        let mut r = refuse(Code::RateLimited, message);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry));
        r
    };
    match app
        .stores
        .runtime
        .incr_caller("hosted", caller, start, HOSTED_WINDOW_SECS + 1)
        .await
    {
        Ok(n) if n <= allowed => Ok(()),
        Ok(_) => Err(refused(
            format!(
                "Rate limit: {allowed} requests per {HOSTED_WINDOW_SECS} s per caller on the hosted MCP endpoint; retry after {retry_after} s."
            ),
            retry_after,
        )),
        Err(e) => {
            app.metrics.redis_error("hosted_limiter");
            tracing::debug!(error = %e, "hosted limiter unreachable: refusing");
            Err(refused(
                "The rate limiter cannot be reached, so the request is refused (fail-closed); retry shortly.".into(),
                1,
            ))
        }
    }
}

/// Pins the authenticated tenant into a `tools/call`: a `tenantId` argument is overwritten.
fn pin_tenant(params: &mut Option<Value>, tenant: &str) {
    if let Some(Value::Object(args)) = params.as_mut().and_then(|p| p.get_mut("arguments"))
        && args.contains_key("tenantId")
    {
        args.insert("tenantId".into(), Value::String(tenant.to_string()));
    }
}

/// `POST /api/v1/mcp`.
pub async fn post(State(app): State<App>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let tenant = match admit(&app, &parts).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let outcome = match chaos(&app, &tenant).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let bytes = match read_body(&app, &parts, body).await {
        Ok(b) => b,
        Err(r) => return labelled(r, &tenant),
    };
    let resp = answer(&app, &tenant, &bytes, &parts.headers).await;
    labelled(with_faults(resp, &outcome), &tenant)
}

async fn answer(
    app: &App,
    tenant: &Arc<TenantRuntime>,
    bytes: &[u8],
    headers: &http::HeaderMap,
) -> Response {
    let msg = match jsonrpc::parse(bytes) {
        Err(e) => return json_response(StatusCode::BAD_REQUEST, &e),
        Ok(Body::Batch(_)) => {
            let e = jsonrpc::error(
                None,
                INVALID_REQUEST,
                "Invalid Request: the hosted endpoint takes one JSON-RPC request per call",
                None,
            );
            return json_response(StatusCode::BAD_REQUEST, &e);
        }
        Ok(Body::Single(Err(e))) => return json_response(StatusCode::BAD_REQUEST, &e),
        Ok(Body::Single(Ok(m))) => m,
    };
    let msg = match msg {
        Message::Request { id, method, .. } if !METHODS.contains(&method.as_str()) => {
            let e = jsonrpc::error(
                Some(&id),
                METHOD_NOT_FOUND,
                format!(
                    "Method not found: the hosted endpoint serves {}",
                    METHODS.join(", ")
                ),
                None,
            );
            return json_response(StatusCode::OK, &e);
        }
        Message::Request {
            id,
            method,
            mut params,
        } => {
            match method.as_str() {
                // One request, one answer: this endpoint speaks 2025-03-26 whatever is asked.
                "initialize" => {
                    let p = params.get_or_insert_with(|| Value::Object(Default::default()));
                    if let Value::Object(o) = p {
                        o.insert(
                            "protocolVersion".into(),
                            Revision::V2025_03_26.as_str().into(),
                        );
                    }
                }
                "tools/call" => pin_tenant(&mut params, tenant.id()),
                _ => {}
            }
            Message::Request { id, method, params }
        }
        other => other,
    };
    let ctx = Ctx {
        app,
        tenant,
        revision: Revision::V2025_03_26,
        transport: Transport::Hosted,
        headers,
        session: None,
        audit_as: None,
    };
    match crate::mcp::dispatch::handle_own(&ctx, msg).await {
        None => accepted(),
        Some(r) => {
            let status = match r.error_code() {
                Some(jsonrpc::PARSE_ERROR) | Some(INVALID_REQUEST) => StatusCode::BAD_REQUEST,
                _ => StatusCode::OK,
            };
            json_response(status, &r.body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_tenant_is_pinned_only_where_the_call_names_one() {
        let mut p = Some(json!({"name": "t", "arguments": {"tenantId": "other", "x": 1}}));
        pin_tenant(&mut p, "mine");
        assert_eq!(p.unwrap()["arguments"], json!({"tenantId": "mine", "x": 1}));
        let mut p = Some(json!({"name": "t", "arguments": {"x": 1}}));
        pin_tenant(&mut p, "mine");
        assert_eq!(p.unwrap()["arguments"], json!({"x": 1}));
        let mut p = None;
        pin_tenant(&mut p, "mine");
        assert_eq!(p, None);
    }
}
