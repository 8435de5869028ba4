//! Every Redis key and pub/sub channel Understudy uses, in one place.
//!
//! All keys share the `us:` prefix so that an operator can find (and an ACL can scope) them.
//! Tenant ids are restricted to `[A-Za-z0-9_.-]`, so they never contain the `:` separator.

/// Global configuration version, bumped (INCR) by every configuration write.
pub const CONFIG_VERSION: &str = "us:cfg:version";
/// Hash tenant id → version of its last write: the list of tenants that exist.
pub const CONFIG_INDEX: &str = "us:cfg:index";
/// Hash tenant id → the configuration version of the write that created the tenant's current
/// incarnation (set when a document is written where none was, removed with the document). A
/// tenant deleted and created again under the same id gets a new one, so traffic counted under
/// the old incarnation never lands on the new one. Absent for documents written before it
/// existed (counted as 0: no check).
pub const CONFIG_BORN: &str = "us:cfg:born";
/// Pub/sub channel carrying `{"v":version,"t":tenant,"op":"put"|"del"}` after each write.
pub const CONFIG_CHANNEL: &str = "us:cfg:notify";
/// Written last by whoever (re)populates Redis (operator, manifest seeder, first gateway); its
/// absence means Redis was emptied and nothing is to be read as deleted.
pub const EPOCH: &str = "us:epoch";
/// Name of the short lock held by the gateway process seeding `--manifests` into Redis.
pub const SEED_LOCK: &str = "seed";
/// Content hash and generation of the manifests last seeded.
pub const SEED_GENERATION: &str = "us:seed:gen";

/// The JSON document of one tenant's configuration ([`crate::model::TenantConfig`]).
pub fn tenant_doc(tenant: &str) -> String {
    format!("us:cfg:tenant:{tenant}")
}

/// One run-time counter of a tenant (`name`: `rl`, `ff`, `every`). A windowed counter is a hash
/// `{w: window start, n: count}`, so each counter keeps one fixed name whatever the window and a
/// tenant's counters can be deleted by name, without scanning the keyspace.
pub fn runtime_counter(tenant: &str, name: &str) -> String {
    format!("us:rt:{tenant}:{name}")
}

/// The fixed-window request counter of one caller (an API key's name, or `admin`) on a
/// rate-limited route (`route`: e.g. `hosted`), a hash `{w, n}` like the chaos counters,
/// expiring with its window.
pub fn caller_counter(route: &str, caller: &str) -> String {
    format!("us:rl:{route}:{caller}")
}

/// A short process-wide lock (`name`: e.g. `seed`).
pub fn lock(name: &str) -> String {
    format!("us:lock:{name}")
}

/// A token bucket shared by every process (`name`: e.g. `replay:<identity>`), a hash
/// `{t: tokens, at: Unix ms}` expiring once it would be full again.
pub fn token_bucket(name: &str) -> String {
    format!("us:tb:{name}")
}

/// A short-lived value (`name`: e.g. `login:<state>`, `portal:<session hash>`), expiring with it.
pub fn value(name: &str) -> String {
    format!("us:val:{name}")
}

/// Hash audit event id → its summary JSON.
pub const AUDIT_EVENTS: &str = "us:audit:ev";
/// Hash audit event id → its payload JSON.
pub const AUDIT_PAYLOADS: &str = "us:audit:pl";
/// Hash audit event id → the index keys it is in, newline-separated (what a prune removes).
pub const AUDIT_INDEXED: &str = "us:audit:ik";
/// Sorted set of every audit event id (all scores 0: UUIDv7 ids in lexical order are in time
/// order, so a time window is a lexical range).
pub const AUDIT_INDEX: &str = "us:audit:ix";

/// Sorted set of the audit event ids with one value of one dimension (`dim`: tenant, tool, user,
/// session, source, ok), scored like [`AUDIT_INDEX`]. The value is hex-encoded, so it holds
/// nothing that means something in a key name.
pub fn audit_index(dim: &str, value: &str) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(13 + dim.len() + 2 * value.len());
    key.push_str("us:audit:ix:");
    key.push_str(dim);
    key.push(':');
    for b in value.bytes() {
        key.push(DIGITS[(b >> 4) as usize] as char);
        key.push(DIGITS[(b & 15) as usize] as char);
    }
    key
}

/// A short-lived intersection of audit indexes for one query (deleted by the query).
pub fn audit_scratch(id: &str) -> String {
    format!("us:audit:tmp:{id}")
}

/// Prefix of every pub/sub channel of the hub besides [`CONFIG_CHANNEL`].
pub const HUB_PREFIX: &str = "us:hub:";

/// Hash of traffic counters of a tenant (`requests`, `unmatched`, `last_request_ms`, and `born`:
/// the incarnation ([`CONFIG_BORN`]) they were counted for), flushed by gateways every few
/// seconds and read by the operator for status.
pub fn tenant_stats(tenant: &str) -> String {
    format!("us:stats:{tenant}:tenant")
}

/// Hash scenario id → hits for a tenant.
pub fn scenario_stats(tenant: &str) -> String {
    format!("us:stats:{tenant}:scenarios")
}

/// Hash key name → JSON [`crate::model::ApiKeyRecord`] (hashed keys only, never plaintext).
pub const API_KEYS: &str = "us:keys";

/// Hash of one MCP session (`doc`: its JSON record, `t`: Unix ms of the last refresh, `seq`: the
/// last event's sequence, `tools`: the tool-listing fingerprint its client was told about),
/// expiring after its idle time.
pub fn mcp_session(tenant: &str, id: &str) -> String {
    format!("us:mcp:{tenant}:s:{id}")
}

/// List of an MCP session's last stream events (`<seq>\n<json>`), expiring with the session.
pub fn mcp_session_log(tenant: &str, id: &str) -> String {
    format!("us:mcp:{tenant}:s:{id}:log")
}

/// Sorted set session id → expiry (Unix ms) of a tenant's MCP sessions: a purge deletes them by
/// name, without scanning the keyspace.
pub fn mcp_sessions(tenant: &str) -> String {
    format!("us:mcp:{tenant}:sessions")
}

/// Hash of one execute-API call (`doc`: its JSON record, `status`, `updated`, `seq`, `result`,
/// `error`, `owner`, `lease`), kept an hour after its last change.
pub fn call(tenant: &str, call_id: &str) -> String {
    format!("us:call:{tenant}:{call_id}")
}

/// List of a call's events (`<seq>\n<kind>\n<json>`), kept with the call.
pub fn call_events(tenant: &str, call_id: &str) -> String {
    format!("us:call:{tenant}:{call_id}:events")
}

/// The call a caller's `request_id` names (idempotent execute), kept with the call. `caller` and
/// `request_id` are client-chosen text given hex-encoded, so they hold nothing that means
/// something in a key name.
pub fn call_request(tenant: &str, caller: &str, request_id: &str) -> String {
    format!("us:callreq:{tenant}:{caller}:{request_id}")
}

/// Sorted set call id → last change (Unix ms) of a caller's calls (`cancel_all`); `caller`
/// hex-encoded.
pub fn caller_calls(tenant: &str, caller: &str) -> String {
    format!("us:calls:{tenant}:by:{caller}")
}

/// Sorted set call id → last change (Unix ms) of a tenant's calls: a purge deletes them by name.
pub fn tenant_calls(tenant: &str) -> String {
    format!("us:calls:{tenant}")
}

/// Sorted set call id → creation (Unix ms) of a caller's calls that have not ended (the live
/// limit); `caller` hex-encoded. A terminal event removes its call.
pub fn caller_live_calls(tenant: &str, caller: &str) -> String {
    format!("us:calls:{tenant}:live:{caller}")
}

/// Hash of one channel (`doc`: its JSON record, `deleted`: `0` or `1`, `last`: the stream id of
/// its last message). A deleted channel's hash stays as a tombstone for a week.
pub fn channel(id: &str) -> String {
    format!("us:ch:{id}")
}

/// Stream of a channel's messages (fields `p` payload, `m` metadata, `x` expiry in Unix ms),
/// trimmed to the retention cap: the truth subscribers resume from.
pub fn channel_messages(id: &str) -> String {
    format!("us:ch:{id}:m")
}

/// Hash grant id → JSON grant of a channel.
pub fn channel_grants(id: &str) -> String {
    format!("us:ch:{id}:g")
}

/// Hash token hash → grant id of a channel's grants that are not revoked.
pub fn channel_tokens(id: &str) -> String {
    format!("us:ch:{id}:gt")
}

/// Set of the live channel ids of a tenant (`None`: of no tenant): the per-owner cap and the
/// tenant purge.
pub fn channels_of(tenant: Option<&str>) -> String {
    match tenant {
        Some(t) => format!("us:chs:t:{t}"),
        None => "us:chs:g".to_string(),
    }
}
