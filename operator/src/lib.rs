//! Understudy's operator: watches Tenant, Scenario and ChaosProfile resources and writes them into
//! the Redis the gateways serve from.
//!
//! ```text
//!  API server ──watch──► cache (per kind, per namespace) ──changed?──► reconcile pass (leader only)
//!                                                                      │
//!     plan (pure: resources → tenant documents + verdicts) ◄───────────┤
//!     apply (Redis: write what changed, delete what is gone, epoch) ◄──┤
//!     status + Events (API server: only what changed) ◄────────────────┤
//!     finalizers (added first; released once the data left Redis) ◄───┘
//! ```
//!
//! The same [`understudy_core::Stores`] the gateways read is what the operator writes,
//! so the document format, versions, notices and the epoch protocol are shared code.

pub mod apply;
pub mod cache;
pub mod config;
pub mod lease;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod run;
pub mod status;
#[cfg(feature = "testkit")]
pub mod testkit;
