//! What the JSON APIs (public tenant API, admin API, later portal and channels) share: the
//! `{"error":{"code","message"}}` envelope (SPEC §7.3), a JSON body extractor whose rejection is
//! that envelope, and the caller's identity.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;
use serde::de::DeserializeOwned;
use understudy_crds::model::Role;
use utoipa::ToSchema;

use crate::identity::Identity;
use crate::state::App;

/// The error codes of the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The body is not JSON.
    InvalidJson,
    /// The body or a parameter breaks a rule.
    InvalidInput,
    /// No valid credential.
    Unauthorized,
    /// A valid credential without the right.
    Forbidden,
    /// Nothing there.
    NotFound,
    /// Taken, read-only, or changed concurrently.
    Conflict,
    /// Over a size limit.
    PayloadTooLarge,
    /// Too many requests.
    RateLimited,
    /// The shared store cannot be trusted or reached right now.
    Unavailable,
}

/// An API error, rendered as `{"error":{"code","message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The code.
    pub code: Code,
    /// What went wrong and what to do.
    pub message: String,
}

/// The envelope's body, for the OpenAPI document.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The envelope's content.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code.
    pub code: Code,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
    /// 400 invalid_input.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidInput, message)
    }
    /// 404 not_found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
    /// 409 conflict.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(Code::Conflict, message)
    }
    /// 403 forbidden.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, message)
    }
    /// 401 unauthorized.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthorized, message)
    }
    /// 503 unavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    /// The HTTP status of the code (no catch-all: a new code needs a decision here).
    pub fn status(&self) -> StatusCode {
        match self.code {
            Code::InvalidJson | Code::InvalidInput => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::Conflict => StatusCode::CONFLICT,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl From<understudy_core::StoreError> for ApiError {
    fn from(e: understudy_core::StoreError) -> Self {
        ApiError::unavailable(format!(
            "the shared store cannot serve this request right now: {e}"
        ))
    }
}

impl From<crate::tenancy::TenancyError> for ApiError {
    fn from(e: crate::tenancy::TenancyError) -> Self {
        use crate::tenancy::TenancyError as T;
        let code = match &e {
            T::Missing { .. } | T::InvalidHeader | T::InvalidConfigVersion | T::InvalidId(_) => {
                Code::InvalidInput
            }
            T::Starting | T::StoreUnavailable => Code::Unavailable,
            T::NotFound(_) => Code::NotFound,
            T::Unauthenticated { .. } => Code::Unauthorized,
            T::Forbidden { .. } => Code::Forbidden,
        };
        ApiError::new(code, e.message())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"understudy\""),
            );
            // The full challenge (with the metadata URL) needs the request's host: added by
            // `app::challenge` on the way out.
            resp.extensions_mut().insert(NeedsChallenge);
        }
        resp
    }
}

/// Marks a 401 whose `WWW-Authenticate` gets the protected-resource metadata URL (SPEC §9.4).
#[derive(Debug, Clone, Copy)]
pub struct NeedsChallenge;

/// The `WWW-Authenticate` challenge of a 401 (SPEC §4.4, §9.4).
pub fn challenge(app: &App, headers: &http::HeaderMap) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "Bearer realm=\"understudy\", resource_metadata=\"{}/.well-known/oauth-protected-resource\"",
        base_url(app, headers)
    ))
    .ok()
}

/// A JSON body parsed into `T`: refusals are the envelope naming the field (unknown fields
/// included, where `T` denies them), and bodies over `--max-body-bytes` are 413.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<App> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &App) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        parse_json(&read_body(app, &parts, body).await?).map(ApiJson)
    }
}

/// Reads a request body within `--max-body-bytes`: 413 `payload_too_large` over it (an
/// announced oversized body is refused before any of it is read), 400 when it breaks off.
pub async fn read_body(
    app: &App,
    parts: &Parts,
    body: axum::body::Body,
) -> Result<bytes::Bytes, ApiError> {
    crate::body::read(parts, body, app.options.max_body_bytes)
        .await
        .map_err(|e| match e {
            crate::body::BodyError::TooLarge(_) => {
                ApiError::new(Code::PayloadTooLarge, e.message())
            }
            crate::body::BodyError::Unreadable(_) => ApiError::invalid(e.message()),
        })
}

/// Parses a JSON body into `T`, with [`ApiJson`]'s refusals (the field named, unknown fields
/// included where `T` denies them).
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            Code::InvalidJson,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    // Every body of these APIs is an object (serde would read a struct from an array too).
    if !value.is_object() {
        return Err(ApiError::invalid("the body must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." {
            ApiError::invalid(inner)
        } else {
            ApiError::invalid(format!("{path}: {inner}"))
        }
    })
}

/// The base URL links are built on (channel URLs, metadata documents): `--public-url`, else the
/// request's own host (when it is a plain host name), else `http://localhost`.
pub fn base_url(app: &App, headers: &http::HeaderMap) -> String {
    if let Some(u) = &app.options.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    format!("http://{host}")
}

/// The caller, resolved from `X-API-Key` / `Authorization: Bearer` (an API key, the admin token
/// or an OIDC JWT), else the portal session cookie (401 for a bad credential). A request that
/// changes something on the strength of the cookie alone must carry `X-Requested-With` (a
/// cross-site form cannot), else 403.
pub struct Caller(pub Identity);

impl FromRequestParts<App> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let id = app
            .identity
            .resolve_request(&parts.headers, app.stores.runtime.as_ref())
            .await
            .map_err(|e| match e {
                crate::identity::AuthError::SessionStore => ApiError::unavailable(e.to_string()),
                e => ApiError::unauthorized(format!(
                    "{e}: send a valid key as X-API-Key or Authorization: Bearer, or log in at /portal/auth/login"
                )),
            })?;
        let safe = matches!(
            parts.method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        if id.auth_type == crate::identity::AuthType::Session && !safe && !csrf_header(parts) {
            return Err(ApiError::forbidden(
                "a change made with the portal session cookie needs the X-Requested-With header (CSRF protection)",
            ));
        }
        Ok(Caller(id))
    }
}

/// Whether the request carries a non-empty `X-Requested-With` (which a cross-site form or a
/// simple cross-origin request cannot send).
pub fn csrf_header(parts: &Parts) -> bool {
    parts
        .headers
        .get("x-requested-with")
        .is_some_and(|v| !v.as_bytes().trim_ascii().is_empty())
}

/// Most a process trusts its key snapshot without hearing from the store (SPEC §12).
pub const MAX_STALENESS_MS: u64 = 10_000;

impl Caller {
    /// Login (editor or admin), in a process whose snapshot is fresh enough to trust.
    pub fn writer(&self, app: &App) -> Result<&Identity, ApiError> {
        let id = &self.0;
        if !id.is_authenticated() {
            return Err(ApiError::unauthorized(
                "this needs a login: send an editor or admin API key as X-API-Key or Authorization: Bearer",
            ));
        }
        if !id.has_role(Role::Editor) {
            return Err(ApiError::forbidden(
                "this needs the editor or admin role; the key is a viewer",
            ));
        }
        if app.options.shared && app.snapshot.staleness_ms() > MAX_STALENESS_MS {
            return Err(ApiError::unavailable(
                "this process has not heard from the shared store for over 10 s and will not trust its keys for writes; retry shortly",
            ));
        }
        Ok(id)
    }

    /// An admin (possibly tenant-scoped).
    pub fn admin(&self, app: &App) -> Result<&Identity, ApiError> {
        let id = self.writer(app)?;
        if !id.is_admin() {
            return Err(ApiError::forbidden("this needs the admin role"));
        }
        Ok(id)
    }
}
