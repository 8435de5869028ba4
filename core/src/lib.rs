//! Understudy's core below every surface: the state layer and the process helpers that the
//! gateway and the operator share.
//!
//! ```text
//!   gateway surfaces (llm, public, admin, later mcp, execute, channels, portal)   operator
//!        │ snapshot reads (memory)          │ shared state                          │
//!        ▼                                  ▼                                       ▼
//!   ┌──────────── Stores ──────────────────────────────────────────────────────────────────┐
//!   │ config  (tenants, keys, epoch, versions, seed generation)  ── notices ──┐              │
//!   │ runtime (chaos counters and windows, locks)                              │              │
//!   │ stats   (traffic counters for status)                                    ▼              │
//!   │ hub     (one subscriber connection per process, bounded local fan-out per topic)       │
//!   └── memory backend (embedded mode, unit tests) │ Redis backend (shared mode) ───────────┘
//! ```
//!
//! Each store trait has a memory and a Redis backend and one contract suite run against both
//! (`core/tests/`); the hub has its own. Later concerns (sessions, calls, channels, audit) join
//! as their own traits in [`Stores`], each with its part of [`Stores::purge_tenant`].

pub mod audit;
mod audit_memory;
mod audit_redis;
pub mod calls;
pub mod channels;
mod channels_memory;
mod channels_redis;
pub mod hub;
pub mod memory;
pub mod process;
pub mod redis;
pub mod sessions;
pub mod store;
pub mod telemetry;

pub use hub::{Delivery, Hub, Subscription, Topic, TopicError};
pub use sessions::{Session, SessionDoc, SessionEvent, SessionKind, SessionSignal, SessionStore};
pub use store::{
    ConfigNotice, ConfigStore, Counter, Expect, FullConfig, NoticeKind, NoticeOp, RuntimeStore,
    StatsBatch, StatsStore, StatsTotals, StoreError, Stores, TenantStats,
};

/// Unix milliseconds now (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    now_ms() / 1000
}
