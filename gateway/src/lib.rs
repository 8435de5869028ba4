//! Understudy's gateway: a stand-in for the AI services agents call, answering per tenant from
//! scenario manifests, in one process (embedded mode) or many sharing Redis (shared mode).
//!
//! ```text
//!            ┌──────────── server (axum, TCP_NODELAY, SIGTERM drain), wired by server::wire ───────────┐
//!  clients ─►│ app: /t/{id} rewrite → CORS → metrics → surfaces (routes::{llm, public, admin, ops})   │
//!            │   each surface: tenancy::resolve → its own error shape; sse for streams               │
//!            └───────────────┬─────────────────────────────────────┬─────────────────────────────────┘
//!                 snapshot (memory, lock-free)          state::AppState.stores (understudy-core)
//!                            ▲                           config · runtime · stats · hub
//!        sync: hub notices + resync + epoch check ◄────── memory | Redis ◄── manifests seeder
//! ```

pub mod api;
pub mod app;
pub mod audit;
pub mod body;
pub mod channels;
pub mod chaos;
pub mod config;
pub mod conn;
pub mod engine;
pub mod identity;
pub mod manifests;
pub mod mcp;
pub mod metrics;
pub mod oidc;
pub mod routes;
pub mod server;
pub mod snapshot;
pub mod sse;
pub mod state;
pub mod stats;
pub mod surface;
pub mod sync;
pub mod tenancy;
pub mod wellknown;
pub mod work;
