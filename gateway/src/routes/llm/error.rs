//! Provider-exact errors (SPEC §3.5): OpenAI `{"error":{message,type,param,code}}`, Anthropic
//! `{"type":"error","error":{type,message}}`.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::json;

/// Whose error shape to answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI (chat completions, responses, embeddings, models).
    OpenAi,
    /// Anthropic (messages, count_tokens, models with `anthropic-version`).
    Anthropic,
}

/// The class of an error; each maps to a status and to each provider's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 400: the request is malformed or invalid.
    InvalidRequest,
    /// 401: no valid credential.
    Authentication,
    /// 403: a valid credential without access.
    Permission,
    /// 404: unknown tenant, model or route.
    NotFound,
    /// 413: body over the limit.
    TooLarge,
    /// 429: rate limited.
    RateLimited,
    /// 5xx injected or internal (the status is carried separately).
    Server,
    /// 529: overloaded.
    Overloaded,
}

/// An error on an LLM route, rendered in the provider's shape.
#[derive(Debug, Clone)]
pub struct LlmError {
    /// The class.
    pub kind: Kind,
    /// The HTTP status.
    pub status: StatusCode,
    /// Human-readable message naming the problem.
    pub message: String,
    /// OpenAI `param`: the offending field.
    pub param: Option<String>,
    /// OpenAI `code`.
    pub code: Option<&'static str>,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u64>,
}

impl LlmError {
    fn new(kind: Kind, status: StatusCode, message: impl Into<String>) -> Self {
        LlmError {
            kind,
            status,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400 naming the field.
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        let mut e = Self::new(Kind::InvalidRequest, StatusCode::BAD_REQUEST, message);
        e.param = param.map(String::from);
        e
    }

    /// 404.
    pub fn not_found(message: impl Into<String>, code: &'static str) -> Self {
        let mut e = Self::new(Kind::NotFound, StatusCode::NOT_FOUND, message);
        e.code = Some(code);
        e
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            Kind::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is larger than the limit of {limit} bytes."),
        )
    }

    /// 429 from chaos.
    pub fn rate_limited(tenant: &str, retry_after: u64) -> Self {
        let mut e = Self::new(
            Kind::RateLimited,
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Rate limit reached for requests of tenant '{tenant}' (Understudy chaos profile). Please try again in {retry_after}s."
            ),
        );
        e.code = Some("rate_limit_exceeded");
        e.retry_after = Some(retry_after);
        e
    }

    /// An injected server error with this status.
    pub fn injected(status: u16) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let (kind, message) = match status.as_u16() {
            529 => (
                Kind::Overloaded,
                "Overloaded (injected by an Understudy chaos profile).",
            ),
            _ => (
                Kind::Server,
                "The server had an error while processing your request (injected by an Understudy chaos profile).",
            ),
        };
        Self::new(kind, status, message)
    }

    /// 503 while this process cannot serve (no configuration yet).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Kind::Server, StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// Renders in `provider`'s shape.
    pub fn render(self, provider: Provider) -> Response {
        let body = match provider {
            Provider::OpenAi => {
                let ty = match self.kind {
                    Kind::InvalidRequest
                    | Kind::Authentication
                    | Kind::Permission
                    | Kind::NotFound
                    | Kind::TooLarge => "invalid_request_error",
                    Kind::RateLimited => "requests",
                    Kind::Server | Kind::Overloaded => "server_error",
                };
                let code = self.code.or(match self.kind {
                    Kind::Authentication => Some("invalid_api_key"),
                    Kind::InvalidRequest
                    | Kind::Permission
                    | Kind::NotFound
                    | Kind::TooLarge
                    | Kind::RateLimited
                    | Kind::Server
                    | Kind::Overloaded => None,
                });
                json!({"error": {"message": self.message, "type": ty, "param": self.param, "code": code}})
            }
            Provider::Anthropic => {
                let ty = match self.kind {
                    Kind::InvalidRequest => "invalid_request_error",
                    Kind::Authentication => "authentication_error",
                    Kind::Permission => "permission_error",
                    Kind::NotFound => "not_found_error",
                    Kind::TooLarge => "request_too_large",
                    Kind::RateLimited => "rate_limit_error",
                    Kind::Server => "api_error",
                    Kind::Overloaded => "overloaded_error",
                };
                let message = match &self.param {
                    Some(p) if !self.message.contains(p.as_str()) => {
                        format!("{p}: {}", self.message)
                    }
                    _ => self.message,
                };
                json!({"type": "error", "error": {"type": ty, "message": message}, "request_id": super::ids::request_id()})
            }
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// Turns a JSON parse failure into a 400 naming the field (`serde_path_to_error` gives the path).
pub fn from_json_error(e: serde_path_to_error::Error<serde_json::Error>) -> LlmError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    match inner.classify() {
        serde_json::error::Category::Syntax
        | serde_json::error::Category::Eof
        | serde_json::error::Category::Io => LlmError::invalid(
            format!(
                "We could not parse the JSON body of your request ({inner}). The body must be valid JSON encoded as UTF-8."
            ),
            None,
        ),
        serde_json::error::Category::Data => {
            let msg = inner.to_string();
            // "missing field `model` at line 1 column 2"
            if let Some(field) = msg
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                let param = if path == "." {
                    field.to_string()
                } else {
                    format!("{path}.{field}")
                };
                return LlmError::invalid(
                    format!("Missing required parameter: '{param}'."),
                    Some(&param),
                );
            }
            let param = if path == "." {
                None
            } else {
                Some(path.as_str())
            };
            let detail = msg.split(" at line ").next().unwrap_or(&msg);
            LlmError::invalid(
                match param {
                    Some(p) => format!("Invalid value for '{p}': {detail}."),
                    None => format!("Invalid request body: {detail}."),
                },
                param,
            )
        }
    }
}

impl From<crate::tenancy::TenancyError> for LlmError {
    fn from(e: crate::tenancy::TenancyError) -> Self {
        use crate::tenancy::TenancyError as T;
        let message = e.message();
        let param = e.param();
        match e {
            T::Missing { .. } => {
                let mut l = LlmError::invalid(message, param);
                l.code = Some("missing_tenant");
                l
            }
            T::InvalidHeader | T::InvalidConfigVersion => LlmError::invalid(message, param),
            T::Starting | T::StoreUnavailable => LlmError::unavailable(message),
            T::InvalidId(_) | T::NotFound(_) => LlmError::not_found(message, "tenant_not_found"),
            T::Unauthenticated { .. } => {
                let mut l = LlmError::invalid(message, None);
                l.kind = Kind::Authentication;
                l.status = StatusCode::UNAUTHORIZED;
                l
            }
            T::Forbidden { .. } => {
                let mut l = LlmError::invalid(message, None);
                l.kind = Kind::Permission;
                l.status = StatusCode::FORBIDDEN;
                l
            }
        }
    }
}
