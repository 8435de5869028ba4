//! What each surface hands to the assembly in [`crate::app`]: its router, its label for metrics
//! and logs, the path prefixes it owns, and its own answer for unknown routes there.
//!
//! The assembly tags every response of a surface's router with its label, and sends an unknown
//! path to the surface owning the longest matching prefix, so a 404 has that surface's shape
//! (OpenAI, Anthropic, JSON-RPC, the `{"error":{"code","message"}}` envelope).

use axum::Router;
use axum::response::{IntoResponse, Response};
use http::{Method, StatusCode};

use crate::state::App;

/// One surface.
pub struct Surface {
    /// Metrics and log label: `llm`, `mcp`, `channels`, `public`, `admin`, `ops`, …
    pub label: &'static str,
    /// Its routes.
    pub router: Router<App>,
    /// Path prefixes whose unknown routes it answers (exact paths count as prefixes).
    pub prefixes: &'static [&'static str],
    /// Its answer when the framework refuses a request: 404 for an unknown path under one of
    /// its prefixes, 405 for a method its route does not take (the `Allow` header is added by
    /// the router).
    pub reject: fn(Reject, &Method, &str) -> Response,
}

/// Why the framework refused a request before any handler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// No route for the path.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
}

impl Reject {
    /// The status.
    pub fn status(self) -> StatusCode {
        match self {
            Reject::NotFound => StatusCode::NOT_FOUND,
            Reject::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// A message naming the request.
    pub fn message(self, method: &Method, path: &str) -> String {
        match self {
            Reject::NotFound => format!("No route for {method} {path}."),
            Reject::MethodNotAllowed => format!("{path} does not take {method}."),
        }
    }
}

/// The `{"error":{"code","message"}}` refusal (SPEC §7.3, §11): every surface without a
/// provider shape of its own, and paths no surface owns. (The envelope has no code for 405:
/// `invalid_input` with the 405 status.)
pub fn envelope_reject(reject: Reject, method: &Method, path: &str) -> Response {
    let message = reject.message(method, path);
    match reject {
        Reject::NotFound => crate::api::ApiError::not_found(message).into_response(),
        Reject::MethodNotAllowed => {
            let mut resp = crate::api::ApiError::invalid(message).into_response();
            *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            resp
        }
    }
}
