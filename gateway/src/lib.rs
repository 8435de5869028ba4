//! Understudy's gateway: a stand-in for the AI services agents call, answering per tenant from
//! scenario manifests, in one process (embedded mode) or many sharing Redis (shared mode).
//!
//! ```text
//!            ┌────────────── server (axum, TCP_NODELAY, SIGTERM drain) ──────────────┐
//!  clients ─►│ app::service: /t/{id} rewrite → CORS → metrics → routes::{llm, ops}    │
//!            └───────────────┬──────────────────────────────┬─────────────────────────┘
//!                 snapshot (memory, lock-free)        chaos counters, read-through
//!                            ▲                                  │
//!        sync: notices + resync + epoch check ◄──── store (memory | Redis) ◄── manifests seeder
//! ```

pub mod app;
pub mod chaos;
pub mod config;
pub mod engine;
pub mod identity;
pub mod manifests;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod snapshot;
pub mod stats;
pub mod store;
pub mod sync;
pub mod telemetry;
