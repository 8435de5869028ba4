//! The channel MCP server (SPEC §7.4).

use axum::Router;

use crate::state::App;

pub fn router() -> Router<App> {
    Router::new()
}
