//! Every Redis key and pub/sub channel Understudy uses, in one place.
//!
//! All keys share the `us:` prefix so that an operator can find (and an ACL can scope) them.
//! Tenant ids are restricted to `[A-Za-z0-9_.-]`, so they never contain the `:` separator.

/// Global configuration version, bumped (INCR) by every configuration write.
pub const CONFIG_VERSION: &str = "us:cfg:version";
/// Hash tenant id → version of its last write: the list of tenants that exist.
pub const CONFIG_INDEX: &str = "us:cfg:index";
/// Pub/sub channel carrying `{"v":version,"t":tenant,"op":"put"|"del"}` after each write.
pub const CONFIG_CHANNEL: &str = "us:cfg:notify";
/// Written last by whoever (re)populates Redis (operator, manifest seeder, first gateway); its
/// absence means Redis was emptied and nothing is to be read as deleted.
pub const EPOCH: &str = "us:epoch";
/// Short lock held by the gateway process seeding `--manifests` into Redis.
pub const SEED_LOCK: &str = "us:seed:lock";
/// Content hash and generation of the manifests last seeded.
pub const SEED_GENERATION: &str = "us:seed:gen";

/// The JSON document of one tenant's configuration ([`crate::model::TenantConfig`]).
pub fn tenant_doc(tenant: &str) -> String {
    format!("us:cfg:tenant:{tenant}")
}

/// Prefix of every runtime counter of a tenant (rate-limit windows, deterministic faults), so a
/// reset can find them all.
pub fn tenant_runtime_prefix(tenant: &str) -> String {
    format!("us:rt:{tenant}:")
}

/// Fixed-window counter of requests for the chaos rate limit (window start in epoch seconds).
pub fn rate_limit_window(tenant: &str, window_start: u64) -> String {
    format!("us:rt:{tenant}:rl:{window_start}")
}

/// Fixed-window counter of requests for `failFirst`.
pub fn fail_first_window(tenant: &str, window_start: u64) -> String {
    format!("us:rt:{tenant}:ff:{window_start}")
}

/// Running counter of requests for `every`.
pub fn every_counter(tenant: &str) -> String {
    format!("us:rt:{tenant}:every")
}

/// Prefix of a tenant's traffic counters (deleted with the tenant).
pub fn tenant_stats_prefix(tenant: &str) -> String {
    format!("us:stats:{tenant}:")
}

/// Hash of traffic counters of a tenant (`requests`, `unmatched`, `last_request_ms`), flushed by
/// gateways every few seconds and read by the operator for status.
pub fn tenant_stats(tenant: &str) -> String {
    format!("us:stats:{tenant}:tenant")
}

/// Hash scenario id → hits for a tenant.
pub fn scenario_stats(tenant: &str) -> String {
    format!("us:stats:{tenant}:scenarios")
}

/// Hash key name → JSON [`crate::model::ApiKeyRecord`] (hashed keys only, never plaintext).
pub const API_KEYS: &str = "us:keys";
