//! Channels (SPEC §7): the REST routes and the SSE streams ([`stream`]) — thin adapters over
//! [`crate::channels`].
//!
//! ```text
//!  POST   /v1/channels                                   create (X-Tenant-ID: the tenant's)
//!  GET    /v1/channels/{id}                              ┐
//!  DELETE /v1/channels/{id}                              │ X-Publish-Token
//!  POST   /v1/channels/{id}/publish                      │
//!  POST   /v1/channels/{id}/read-grants                  │
//!  POST   /v1/channels/{id}/read-grants/{gid}/revoke     ┘
//!  GET    /v1/channels/{id}/messages                     read token (private), or publish token
//!  GET    /channel/v1/{public|private}/{id}              SSE: replay (Last-Event-ID, ?from=oldest)
//!                                                        then live; ends on delete / revoke / expiry
//! ```
//! The channel MCP server (`/channels/mcp`, `/channels/sse`, `/.well-known/mcp-server`) is served
//! by the MCP surface's transports with the tools of [`crate::mcp::channel_tools`].
//! A tenant's channels get its chaos profile (surface `channels`) with the §7.3 codes.

mod stream;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::Value;
use understudy_core::channels::{Channel, ChannelDoc};
use understudy_crds::Surface as ChaosSurface;

use crate::api::{ApiError, Code, parse_json, read_body};
use crate::channels::{self as ops, CreateChannel, CreateGrant, DEFAULT_LIMIT, Publish};
use crate::chaos::{Fault, Outcome};
use crate::snapshot::TenantRuntime;
use crate::state::{App, TenantLabel};
use crate::surface::{Surface, envelope_reject};

/// The surface.
pub fn surface() -> Surface {
    Surface {
        label: "channels",
        router: router(),
        prefixes: &["/v1/channels", "/channel/", "/internal/v1/channels"],
        reject: envelope_reject,
    }
}

fn router() -> Router<App> {
    Router::new()
        .route("/v1/channels", post(create))
        .route("/v1/channels/{id}", get(get_channel).delete(delete))
        .route("/v1/channels/{id}/publish", post(publish))
        .route("/v1/channels/{id}/read-grants", post(create_grant))
        .route(
            "/v1/channels/{id}/read-grants/{grant_id}/revoke",
            post(revoke_grant),
        )
        .route("/v1/channels/{id}/messages", get(messages))
        .route("/internal/v1/channels/{id}/messages", get(messages))
        .route("/channel/v1/{visibility}/{id}", get(stream::subscribe))
}

/// A refusal: the envelope, or a response already made (chaos).
pub enum Fail {
    /// The envelope.
    Api(ApiError),
    /// A finished response.
    Raw(Response),
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        Fail::Api(e)
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        match self {
            Fail::Api(e) => e.into_response(),
            Fail::Raw(r) => r,
        }
    }
}

type Answer = Result<Response, Fail>;

fn publish_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-publish-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// A read token: `Authorization: Bearer`, else `?access_token=` (browsers' EventSource cannot
/// send headers), else the publish token.
fn read_token<'a>(headers: &'a HeaderMap, query: &'a HashMap<String, String>) -> Option<&'a str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    [
        bearer,
        query.get("access_token").map(|t| t.trim()),
        publish_token(headers),
    ]
    .into_iter()
    .flatten()
    .find(|t| !t.is_empty())
}

fn query_map(
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m)
        .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))
}

/// The tenant of a channel, when it has one that still exists.
async fn tenant_of(app: &App, doc: &ChannelDoc) -> Option<Arc<TenantRuntime>> {
    let id = doc.tenant.as_deref()?;
    crate::tenancy::find(app, id).await.ok().flatten()
}

/// Chaos for a request on a tenant's channel (SPEC §5 with the §7.3 codes): a refusal answers
/// here; latency is waited for; what is left (stream faults) goes to the caller.
pub async fn chaos(app: &App, tenant: Option<&Arc<TenantRuntime>>) -> Result<Outcome, Fail> {
    let Some(tenant) = tenant else {
        return Ok(Outcome::default());
    };
    let outcome = app.chaos.evaluate(tenant, ChaosSurface::Channels).await;
    match outcome.fault {
        Some(Fault::RateLimited { retry_after }) => {
            let mut resp = ApiError::new(
                Code::RateLimited,
                format!(
                    "rate limit exceeded for tenant '{}' (chaos profile); retry after {retry_after} s",
                    tenant.id()
                ),
            )
            .into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            Err(Fail::Raw(labelled(resp, Some(tenant))))
        }
        Some(Fault::ServerError(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = ApiError::unavailable(format!(
                "injected server error {} (chaos profile)",
                status.as_u16()
            ))
            .into_response();
            *resp.status_mut() = status;
            Err(Fail::Raw(labelled(resp, Some(tenant))))
        }
        Some(Fault::StreamCut(_)) | Some(Fault::Malformed(_)) | None => {
            if let Some(l) = outcome.latency {
                tokio::time::sleep(l).await;
            }
            Ok(outcome)
        }
    }
}

/// Tags a response with its tenant (metrics).
fn labelled(mut resp: Response, tenant: Option<&Arc<TenantRuntime>>) -> Response {
    if let Some(t) = tenant {
        resp.extensions_mut().insert(TenantLabel(t.clone()));
    }
    resp
}

/// A non-streamed answer: `stream_cut` closes the connection before it.
fn answer(
    status: StatusCode,
    body: Value,
    outcome: &Outcome,
    tenant: Option<&Arc<TenantRuntime>>,
) -> Response {
    if matches!(outcome.fault, Some(Fault::StreamCut(_))) {
        return labelled(crate::chaos::aborted(), tenant);
    }
    labelled((status, axum::Json(body)).into_response(), tenant)
}

/// The owner's view of a channel, with its tenant and chaos applied.
async fn owned(
    app: &App,
    id: &str,
    headers: &HeaderMap,
) -> Result<(Channel, Option<Arc<TenantRuntime>>, Outcome), Fail> {
    let channel = ops::owner(app, id, publish_token(headers)).await?;
    let tenant = tenant_of(app, &channel.doc).await;
    let outcome = rest_chaos(app, tenant.as_ref()).await?;
    Ok((channel, tenant, outcome))
}

/// [`chaos`] for a request answered in one piece: `stream_cut` closes the connection before
/// anything is done (a client that retries never finds its first attempt half-applied).
async fn rest_chaos(app: &App, tenant: Option<&Arc<TenantRuntime>>) -> Result<Outcome, Fail> {
    let outcome = chaos(app, tenant).await?;
    if matches!(outcome.fault, Some(Fault::StreamCut(_))) {
        return Err(Fail::Raw(labelled(crate::chaos::aborted(), tenant)));
    }
    Ok(outcome)
}

/// `POST /v1/channels`.
async fn create(State(app): State<App>, req: Request) -> Answer {
    let (parts, body) = req.into_parts();
    let tenant = if crate::tenancy::names_tenant(&parts) {
        Some(
            crate::tenancy::resolve(&app, &parts, crate::tenancy::Access::DataPlane)
                .await
                .map_err(ApiError::from)?
                .tenant,
        )
    } else {
        None
    };
    let outcome = rest_chaos(&app, tenant.as_ref()).await?;
    let input: CreateChannel = parse_json(&read_body(&app, &parts, body).await?)?;
    let base = crate::api::base_url(&app, &parts.headers);
    let body = ops::create(&app, tenant.as_ref().map(|t| t.id()), input, &base).await?;
    Ok(answer(StatusCode::CREATED, body, &outcome, tenant.as_ref()))
}

/// `GET /v1/channels/{id}`.
async fn get_channel(State(app): State<App>, Path(id): Path<String>, headers: HeaderMap) -> Answer {
    let (channel, tenant, outcome) = owned(&app, &id, &headers).await?;
    let body = ops::channel_json(&channel.doc, &crate::api::base_url(&app, &headers));
    Ok(answer(StatusCode::OK, body, &outcome, tenant.as_ref()))
}

/// `DELETE /v1/channels/{id}`.
async fn delete(State(app): State<App>, Path(id): Path<String>, headers: HeaderMap) -> Answer {
    let (channel, tenant, outcome) = owned(&app, &id, &headers).await?;
    let body = ops::delete(&app, &channel).await?;
    Ok(answer(StatusCode::OK, body, &outcome, tenant.as_ref()))
}

/// `POST /v1/channels/{id}/publish`.
async fn publish(State(app): State<App>, Path(id): Path<String>, req: Request) -> Answer {
    let (parts, body) = req.into_parts();
    let (channel, tenant, outcome) = owned(&app, &id, &parts.headers).await?;
    let input: Publish = parse_json(&read_body(&app, &parts, body).await?)?;
    let body = ops::publish(&app, &channel, input).await?;
    Ok(answer(StatusCode::CREATED, body, &outcome, tenant.as_ref()))
}

/// `POST /v1/channels/{id}/read-grants`.
async fn create_grant(State(app): State<App>, Path(id): Path<String>, req: Request) -> Answer {
    let (parts, body) = req.into_parts();
    let (channel, tenant, outcome) = owned(&app, &id, &parts.headers).await?;
    // An empty body is an empty request (both fields are optional).
    let bytes = crate::body::read(&parts, body, app.options.max_body_bytes)
        .await
        .map_err(|e| match e {
            crate::body::BodyError::TooLarge(_) => {
                ApiError::new(Code::PayloadTooLarge, e.message())
            }
            crate::body::BodyError::Unreadable(_) => ApiError::invalid(e.message()),
        })?;
    let input = if bytes.iter().all(u8::is_ascii_whitespace) {
        CreateGrant::default()
    } else {
        crate::api::parse_json::<CreateGrant>(&bytes)?
    };
    let body = ops::create_grant(&app, &channel, input).await?;
    Ok(answer(StatusCode::CREATED, body, &outcome, tenant.as_ref()))
}

/// `POST /v1/channels/{id}/read-grants/{grant_id}/revoke`.
async fn revoke_grant(
    State(app): State<App>,
    Path((id, grant_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    let (channel, tenant, outcome) = owned(&app, &id, &headers).await?;
    let body = ops::revoke_grant(&app, &channel, &grant_id).await?;
    Ok(answer(StatusCode::OK, body, &outcome, tenant.as_ref()))
}

/// `GET /v1/channels/{id}/messages?after_message_id=&limit=`.
async fn messages(
    State(app): State<App>,
    Path(id): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Answer {
    let query = query_map(query)?;
    let channel = ops::live(&app, &id).await?;
    ops::reader(&app, &channel, read_token(&headers, &query)).await?;
    let tenant = tenant_of(&app, &channel.doc).await;
    let outcome = rest_chaos(&app, tenant.as_ref()).await?;
    let after = match query.get("after_message_id").filter(|v| !v.is_empty()) {
        Some(m) => Some(ops::position(&channel.doc.id, m)?),
        None => None,
    };
    let limit = match query.get("limit").filter(|v| !v.is_empty()) {
        Some(l) => l
            .parse::<usize>()
            .map_err(|_| ApiError::invalid("limit must be a whole number between 1 and 1000"))?,
        None => DEFAULT_LIMIT,
    };
    let body = ops::messages(&app, &channel, after, limit).await?;
    Ok(answer(StatusCode::OK, body, &outcome, tenant.as_ref()))
}
