//! Which tenant a request is for, and whether its caller may use it: one step for every surface.
//!
//! ```text
//!  /t/{id}/ prefix ─┐
//!  X-Tenant-ID ─────┼─► id ─► X-Understudy-Config-Version wait ─► snapshot ─► negative cache
//!  key's tenant ────┘                                              └► read-through (shared mode)
//!        ─► access (visibility, ownership, role) ─► Resolved | TenancyError
//! ```
//!
//! [`TenancyError`] is surface-neutral: each surface turns it into its own shape (OpenAI,
//! Anthropic, JSON-RPC, the `{"error":{"code","message"}}` envelope, the execute API's codes)
//! with an exhaustive `match`, so a new variant cannot compile without a decision everywhere.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use http::request::Parts;
use understudy_crds::Visibility;
use understudy_crds::model::Role;

use understudy_core::StoreError;

use crate::identity::{AuthError, Principal};
use crate::snapshot::TenantRuntime;
use crate::state::{App, AppState, PathTenant};

/// Bounded wait for `X-Understudy-Config-Version`.
const CONFIG_WAIT: Duration = Duration::from_secs(1);

/// How long an unknown tenant id is remembered (and only while the snapshot's version stays
/// the same: any configuration change forgets them all).
const UNKNOWN_TTL_MS: u64 = 1_000;

/// Most unknown tenant ids remembered; past it the oldest half is forgotten.
const UNKNOWN_MAX: usize = 10_000;

/// After a failed read-through, unknown tenants answer 503 at once for this long instead of
/// each waiting for the store's timeout.
const BREAKER_MS: u64 = 2_000;

/// Read-throughs in flight at once. A healthy store answers in well under a millisecond, so they
/// rarely queue; a stalled one holds at most this many requests on its timeout.
const READ_THROUGH_SLOTS: usize = 8;

/// Longest wait for a read-through slot before answering 503.
const SLOT_WAIT: Duration = Duration::from_millis(100);

/// A store not heard from for this long (the sync task checks every second) is taken as
/// unreachable: unknown tenants answer 503 without trying it.
const STALE_MS: u64 = 3_000;

/// Whether a request names a tenant itself (`X-Tenant-ID` or the `/t/{id}/` prefix), as opposed
/// to leaving it to the key's scope or having none (channels may belong to no tenant).
pub fn names_tenant(parts: &Parts) -> bool {
    parts.headers.contains_key("x-tenant-id") || parts.extensions.get::<PathTenant>().is_some()
}

/// What access a route needs to a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The data plane (LLM, MCP): global tenants are open to anyone (unless anonymous access is
    /// off); a private tenant needs its owner's (or an admin's) credential.
    DataPlane,
    /// A credential of at least this role, allowed on the tenant (execute API, hosted MCP).
    Role(Role),
}

/// Why no credential was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unauthenticated {
    /// No credential was sent.
    Missing,
    /// The credential is unknown, revoked, expired or malformed.
    Invalid(AuthError),
}

/// Why a request cannot go to a tenant. Surfaces map it into their own shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenancyError {
    /// No `/t/{id}/` prefix, no `X-Tenant-ID`, no tenant-scoped key. `prefix`: the prefix was
    /// there but empty.
    Missing {
        /// The `/t//` prefix named no tenant.
        prefix: bool,
    },
    /// `X-Tenant-ID` is not valid text.
    InvalidHeader,
    /// `X-Understudy-Config-Version` is not a number.
    InvalidConfigVersion,
    /// The process has no configuration yet.
    Starting,
    /// The tenant is not in this process's snapshot and the shared store cannot be asked.
    StoreUnavailable,
    /// The id cannot be a tenant id.
    InvalidId(String),
    /// No such tenant.
    NotFound(String),
    /// A credential is needed and none valid was sent.
    Unauthenticated {
        /// The tenant.
        tenant: String,
        /// Whether the tenant is private (else anonymous access is off, or the route needs a
        /// role).
        private: bool,
        /// What was wrong.
        why: Unauthenticated,
        /// The role the route needs (`None`: the data plane).
        role: Option<Role>,
    },
    /// A valid credential that may not use this tenant.
    Forbidden {
        /// The tenant.
        tenant: String,
        /// The credential's role is below what the route needs (else: scope or ownership).
        role: Option<Role>,
    },
}

impl TenancyError {
    /// The HTTP status every surface answers with (JSON-RPC surfaces may answer 200 with an
    /// error object where their protocol wants it).
    pub fn status(&self) -> StatusCode {
        match self {
            TenancyError::Missing { .. }
            | TenancyError::InvalidHeader
            | TenancyError::InvalidConfigVersion => StatusCode::BAD_REQUEST,
            TenancyError::Starting | TenancyError::StoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            TenancyError::InvalidId(_) | TenancyError::NotFound(_) => StatusCode::NOT_FOUND,
            TenancyError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            TenancyError::Forbidden { .. } => StatusCode::FORBIDDEN,
        }
    }

    /// The message, naming what to send instead.
    pub fn message(&self) -> String {
        const WHAT: &str =
            "send its owner's API key as `Authorization: Bearer <key>` or `x-api-key: <key>`";
        match self {
            TenancyError::Missing { prefix: true } => {
                "Missing tenant: the /t/{tenantId}/ path prefix names none.".into()
            }
            TenancyError::Missing { prefix: false } => {
                "Missing tenant: send the X-Tenant-ID header or use the /t/{tenantId}/ path prefix."
                    .into()
            }
            TenancyError::InvalidHeader => "The X-Tenant-ID header is not valid text.".into(),
            TenancyError::InvalidConfigVersion => {
                "X-Understudy-Config-Version must be a configuration version number.".into()
            }
            TenancyError::Starting => {
                "The gateway is starting and has no configuration yet; retry shortly.".into()
            }
            TenancyError::StoreUnavailable => {
                "The shared store is unreachable and this tenant is not in this process's configuration; retry shortly.".into()
            }
            TenancyError::InvalidId(id) => format!(
                "Tenant '{}' not found: tenant ids match [A-Za-z0-9_.-]{{1,64}} and are not '.' or '..'.",
                id.escape_default()
            ),
            TenancyError::NotFound(id) => format!("Tenant '{id}' not found."),
            TenancyError::Unauthenticated {
                tenant,
                private,
                why,
                role,
            } => match (why, private, role) {
                (Unauthenticated::Missing, _, Some(r)) => format!(
                    "This needs an API key of the {} role or above for tenant '{tenant}': send it as `Authorization: Bearer <key>` or `x-api-key: <key>`.",
                    r.as_str()
                ),
                (Unauthenticated::Missing, true, None) => {
                    format!("Tenant '{tenant}' is private: {WHAT}.")
                }
                (Unauthenticated::Missing, false, None) => format!(
                    "Tenant '{tenant}' needs a credential (anonymous access is off): send an API key as `Authorization: Bearer <key>` or `x-api-key: <key>`."
                ),
                (Unauthenticated::Invalid(e), _, _) => format!("Tenant '{tenant}': {e}; {WHAT}."),
            },
            TenancyError::Forbidden { tenant, role: None } => {
                format!("This API key may not use tenant '{tenant}': {WHAT}.")
            }
            TenancyError::Forbidden {
                tenant,
                role: Some(r),
            } => format!(
                "This needs the {} role or above on tenant '{tenant}'.",
                r.as_str()
            ),
        }
    }

    /// The request parameter at fault, when there is one.
    pub fn param(&self) -> Option<&'static str> {
        match self {
            TenancyError::Missing { prefix: true } => Some("tenantId"),
            TenancyError::Missing { prefix: false } | TenancyError::InvalidHeader => {
                Some("X-Tenant-ID")
            }
            TenancyError::InvalidConfigVersion => Some("X-Understudy-Config-Version"),
            TenancyError::Starting
            | TenancyError::StoreUnavailable
            | TenancyError::InvalidId(_)
            | TenancyError::NotFound(_)
            | TenancyError::Unauthenticated { .. }
            | TenancyError::Forbidden { .. } => None,
        }
    }
}

/// A resolved tenant and, when one was sent and accepted, the caller's credential.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The tenant.
    pub tenant: Arc<TenantRuntime>,
    /// The caller (`None`: anonymous, or a credential ignored on an open global tenant).
    pub principal: Option<Principal>,
}

/// Unknown tenant ids, remembered briefly, the read-through breaker and its slots.
pub struct UnknownTenants {
    /// id → (snapshot version, expiry in Unix ms).
    ids: Mutex<HashMap<String, (u64, u64)>>,
    /// Unix ms until which read-throughs are not tried (the store just failed).
    down_until_ms: AtomicU64,
    /// Bounds read-throughs in flight, so a flood of unknown ids meets a stalled store with
    /// a few requests, not all of them.
    slots: tokio::sync::Semaphore,
}

impl Default for UnknownTenants {
    fn default() -> Self {
        UnknownTenants {
            ids: Mutex::default(),
            down_until_ms: AtomicU64::new(0),
            slots: tokio::sync::Semaphore::new(READ_THROUGH_SLOTS),
        }
    }
}

impl UnknownTenants {
    fn known_unknown(&self, id: &str, version: u64, now: u64) -> bool {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.get(id)
            .is_some_and(|(v, exp)| *v == version && *exp > now)
    }

    fn remember(&self, id: &str, version: u64, now: u64) {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.len() >= UNKNOWN_MAX {
            ids.retain(|_, (v, exp)| *v == version && *exp > now);
            if ids.len() >= UNKNOWN_MAX {
                ids.clear();
            }
        }
        ids.insert(id.to_string(), (version, now + UNKNOWN_TTL_MS));
    }

    /// How many ids are remembered (tests, metrics).
    pub fn len(&self) -> usize {
        self.ids.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A tenant from the snapshot or, in shared mode, read through from the store (SPEC §12).
/// `Ok(None)`: it exists nowhere. `Err(StoreUnavailable)`: it is not in the snapshot and the
/// store cannot be asked now.
pub async fn find(app: &AppState, id: &str) -> Result<Option<Arc<TenantRuntime>>, TenancyError> {
    if let Some(t) = app.snapshot.tenant(id) {
        return Ok(Some(t));
    }
    if !app.options.shared {
        return Ok(None);
    }
    let now = understudy_core::now_ms();
    let seen = app.snapshot.load().version;
    if app.unknown.known_unknown(id, seen, now) {
        return Ok(None);
    }
    if now < app.unknown.down_until_ms.load(Ordering::Relaxed)
        || app.snapshot.staleness_ms() > STALE_MS
    {
        return Err(TenancyError::StoreUnavailable);
    }
    let Ok(Ok(_slot)) = tokio::time::timeout(SLOT_WAIT, app.unknown.slots.acquire()).await else {
        return Err(TenancyError::StoreUnavailable);
    };
    // Another request may have settled it (or the breaker opened) while this one waited.
    if let Some(t) = app.snapshot.tenant(id) {
        return Ok(Some(t));
    }
    let now = understudy_core::now_ms();
    if app.unknown.known_unknown(id, seen, now) {
        return Ok(None);
    }
    if now < app.unknown.down_until_ms.load(Ordering::Relaxed) {
        return Err(TenancyError::StoreUnavailable);
    }
    match app.stores.config.get_tenant(id).await {
        Ok(Some((cfg, v))) => Ok(Some(app.snapshot.insert_read_through(cfg, v, seen))),
        Ok(None) => {
            app.unknown.remember(id, seen, now);
            Ok(None)
        }
        // A document this version cannot read is served as absent (the full sync skips it
        // too), and never opens the breaker for everyone else.
        Err(e @ StoreError::Corrupt(_)) => {
            tracing::warn!(error = %e, tenant = id, "unreadable tenant document");
            app.unknown.remember(id, seen, now);
            Ok(None)
        }
        Err(e @ StoreError::Unavailable(_)) => {
            app.metrics.redis_error("read_through");
            tracing::debug!(error = %e, tenant = id, "read-through failed");
            app.unknown
                .down_until_ms
                .store(understudy_core::now_ms() + BREAKER_MS, Ordering::Relaxed);
            Err(TenancyError::StoreUnavailable)
        }
    }
}

/// The tenant id a request names: `/t/{id}/` prefix, else `X-Tenant-ID`, else the tenant scope
/// of the key it carries.
fn requested_id(app: &App, parts: &Parts) -> Result<String, TenancyError> {
    match parts.extensions.get::<PathTenant>() {
        Some(p) if p.0.is_empty() => Err(TenancyError::Missing { prefix: true }),
        Some(p) => Ok(p.0.clone()),
        None => match parts.headers.get("x-tenant-id").map(|v| v.to_str()) {
            Some(Ok(v)) if !v.trim().is_empty() => Ok(v.trim().to_string()),
            Some(Err(_)) => Err(TenancyError::InvalidHeader),
            _ => crate::identity::credential(&parts.headers)
                .and_then(|secret| app.identity.principal(secret).ok())
                .and_then(|p| match p {
                    Principal::Key(k) => k.tenant.clone(),
                    Principal::AdminToken | Principal::Oidc(..) => None,
                })
                .ok_or(TenancyError::Missing { prefix: false }),
        },
    }
}

/// Resolves the request's tenant and checks the caller's access to it.
pub async fn resolve(app: &App, parts: &Parts, access: Access) -> Result<Resolved, TenancyError> {
    let id = requested_id(app, parts)?;
    if let Some(v) = parts.headers.get("x-understudy-config-version") {
        let wanted: u64 = v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or(TenancyError::InvalidConfigVersion)?;
        app.snapshot.wait_for_version(wanted, CONFIG_WAIT).await;
    }
    if !app.snapshot.is_synced() {
        return Err(TenancyError::Starting);
    }
    if !understudy_crds::model::valid_tenant_id(&id) {
        return Err(TenancyError::InvalidId(id));
    }
    let tenant = find(app, &id).await?.ok_or(TenancyError::NotFound(id))?;
    let principal = authorize(app, parts, &tenant, access).await?;
    Ok(Resolved { tenant, principal })
}

/// Whether the caller may use `t` with `access`.
async fn authorize(
    app: &App,
    parts: &Parts,
    t: &TenantRuntime,
    access: Access,
) -> Result<Option<Principal>, TenancyError> {
    let private = t.config.visibility == Visibility::Private;
    let open = access == Access::DataPlane && !private && app.options.allow_anonymous;
    if open {
        return Ok(None);
    }
    let unauthenticated = |why| TenancyError::Unauthenticated {
        tenant: t.id().to_string(),
        private,
        why,
        role: match access {
            Access::Role(r) => Some(r),
            Access::DataPlane => None,
        },
    };
    let secret = crate::identity::credential(&parts.headers)
        .ok_or_else(|| unauthenticated(Unauthenticated::Missing))?;
    let principal = app
        .identity
        .principal_async(secret)
        .await
        .map_err(|e| unauthenticated(Unauthenticated::Invalid(e)))?;
    if let Access::Role(needed) = access
        && principal.role() < needed
    {
        return Err(TenancyError::Forbidden {
            tenant: t.id().to_string(),
            role: Some(needed),
        });
    }
    if !principal.may_use(&t.config) {
        return Err(TenancyError::Forbidden {
            tenant: t.id().to_string(),
            role: None,
        });
    }
    Ok(Some(principal))
}
