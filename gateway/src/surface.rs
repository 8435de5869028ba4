//! What each surface hands to the assembly in [`crate::app`]: its router, its label for metrics
//! and logs, the path prefixes it owns, and its own answer for unknown routes there.
//!
//! The assembly tags every response of a surface's router with its label, and sends an unknown
//! path to the surface owning the longest matching prefix, so a 404 has that surface's shape
//! (OpenAI, Anthropic, JSON-RPC, the `{"error":{"code","message"}}` envelope).

use axum::Router;
use axum::response::{IntoResponse, Response};
use http::Method;

use crate::state::App;

/// One surface.
pub struct Surface {
    /// Metrics and log label: `llm`, `mcp`, `channels`, `public`, `admin`, `ops`, …
    pub label: &'static str,
    /// Its routes.
    pub router: Router<App>,
    /// Path prefixes whose unknown routes it answers (exact paths count as prefixes).
    pub prefixes: &'static [&'static str],
    /// Its 404 for `method path` under one of its prefixes.
    pub not_found: fn(&Method, &str) -> Response,
}

/// The `{"error":{"code","message"}}` 404 (SPEC §7.3, §11): every surface without a provider
/// shape of its own, and paths no surface owns.
pub fn envelope_not_found(method: &Method, path: &str) -> Response {
    crate::api::ApiError::not_found(format!("No route for {method} {path}.")).into_response()
}
