//! Who is calling (SPEC §8.1): one resolver turns a request's credential into an [`Identity`].
//!
//! ```text
//!  X-API-Key / Authorization: Bearer ─► admin token? ─► API key (SHA-256 → snapshot lookup)
//!                                        └─ a JWT? ─► OIDC (issuer's JWKS, crate::oidc)
//!  no credential ─► portal session cookie (`understudy_session`, kept in the runtime store)
//! ```
//!
//! Keys are looked up in the in-memory snapshot (no Redis round trip per request); revocation
//! reaches every process through the same change notices as tenant configuration.

use std::sync::Arc;

use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use understudy_crds::Visibility;
use understudy_crds::model::{ApiKeyRecord, Role, TenantConfig};

use crate::oidc::{Oidc, OidcUser, looks_like_jwt};
use crate::snapshot::SnapshotHandle;

/// How the caller authenticated (audit's `auth_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    /// No credential.
    Anonymous,
    /// An API key.
    ApiKey,
    /// The bootstrap admin token.
    AdminToken,
    /// An OIDC bearer JWT (portal release).
    Oidc,
    /// The portal session cookie (portal release).
    Session,
}

/// A resolved caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// How it authenticated.
    pub auth_type: AuthType,
    /// The identity name (`None` when anonymous): what a private tenant's `owner` names.
    pub subject: Option<String>,
    /// Its role (`None` when anonymous).
    pub role: Option<Role>,
    /// The only tenant it may act on, when scoped.
    pub tenant_scope: Option<String>,
    /// The API key's name, for audit.
    pub key_name: Option<String>,
    /// The display name (OIDC `name`), if known.
    pub name: Option<String>,
    /// The e-mail address (OIDC `email`), if known.
    pub email: Option<String>,
}

/// Why a credential was refused (always 401: the caller must send something else).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown, revoked or malformed.
    #[error("the credential is not a valid API key (unknown or revoked)")]
    Invalid,
    /// Past its `expires_at`.
    #[error("the API key {0:?} has expired")]
    Expired(String),
    /// A bearer JWT that does not validate.
    #[error("the bearer JWT was refused: {0}")]
    Jwt(String),
    /// A portal session cookie that is unknown or expired.
    #[error("the portal session is unknown or has expired: log in again")]
    Session,
    /// The store holding portal sessions cannot be reached.
    #[error("portal sessions cannot be checked right now (the shared store is unreachable)")]
    SessionStore,
}

impl Identity {
    /// No credential.
    pub fn anonymous() -> Self {
        Identity {
            auth_type: AuthType::Anonymous,
            subject: None,
            role: None,
            tenant_scope: None,
            key_name: None,
            name: None,
            email: None,
        }
    }

    /// Whether a credential was presented and accepted.
    pub fn is_authenticated(&self) -> bool {
        self.auth_type != AuthType::Anonymous
    }

    /// At least `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.role.is_some_and(|r| r >= role)
    }

    /// An unscoped admin: may do anything.
    pub fn is_admin(&self) -> bool {
        self.has_role(Role::Admin)
    }

    /// Whether its scope (if any) allows `tenant`.
    pub fn in_scope(&self, tenant: &str) -> bool {
        self.tenant_scope.as_deref().is_none_or(|t| t == tenant)
    }

    /// Whether it owns `tenant` (admins own everything in their scope).
    pub fn owns(&self, tenant: &TenantConfig) -> bool {
        if !self.in_scope(&tenant.tenant_id) {
            return false;
        }
        if self.is_admin() {
            return true;
        }
        match (&self.subject, &tenant.owner) {
            (Some(me), Some(owner)) => me == owner,
            _ => false,
        }
    }

    /// Whether it may read `tenant` (global: everyone in scope; private: owner or admin).
    pub fn may_read(&self, tenant: &TenantConfig) -> bool {
        match tenant.visibility {
            Visibility::Global => self.in_scope(&tenant.tenant_id),
            Visibility::Private => self.owns(tenant),
        }
    }
}

/// The identity of the bootstrap admin token. Key identities may not start with `@`, so no key
/// can ever own what the token created.
pub const ADMIN_SUBJECT: &str = "@admin";

/// SHA-256 of a secret, hex: how keys and the admin token are kept.
pub fn hash_secret(secret: &str) -> String {
    let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let mut buf = [0u8; 64];
    hex(&digest, &mut buf).to_string()
}

/// Lower-case hex of a digest into a stack buffer (the request path must not allocate per byte).
fn hex<'a>(digest: &[u8; 32], buf: &'a mut [u8; 64]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in digest.iter().enumerate() {
        buf[2 * i] = DIGITS[(b >> 4) as usize];
        buf[2 * i + 1] = DIGITS[(b & 15) as usize];
    }
    std::str::from_utf8(buf).unwrap_or_default()
}

/// What a presented secret turned out to be: cheap to produce (no allocation) for the data plane.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The bootstrap admin token.
    AdminToken,
    /// An API key.
    Key(Arc<ApiKeyRecord>),
    /// An OIDC bearer JWT, or a portal session after an OIDC login.
    Oidc(Arc<OidcUser>, AuthType),
}

impl Principal {
    /// Its role (the admin token is an admin).
    pub fn role(&self) -> Role {
        match self {
            Principal::AdminToken => Role::Admin,
            Principal::Key(k) => k.role,
            Principal::Oidc(u, _) => u.role,
        }
    }

    /// Whether it may use `tenant`'s data plane: in scope, and (for a private tenant) its owner
    /// or an admin.
    pub fn may_use(&self, tenant: &TenantConfig) -> bool {
        match self {
            Principal::AdminToken => true,
            Principal::Key(k) => {
                let in_scope = k.tenant.as_deref().is_none_or(|t| t == tenant.tenant_id);
                let owner = tenant.visibility == Visibility::Global
                    || k.role == Role::Admin
                    || tenant.owner.as_deref() == Some(k.identity.as_str());
                in_scope && owner
            }
            Principal::Oidc(u, _) => {
                tenant.visibility == Visibility::Global
                    || u.role == Role::Admin
                    || tenant.owner.as_deref() == Some(u.sub.as_str())
            }
        }
    }

    /// Who the caller is, for per-caller budgets and records (the hosted limiter, execute
    /// calls): the key's identity, so two keys of one identity are one caller; `@admin` for the
    /// admin token (`@` begins no key identity).
    pub fn caller(&self) -> String {
        match self {
            Principal::AdminToken => ADMIN_SUBJECT.into(),
            Principal::Key(k) => k.identity.clone(),
            Principal::Oidc(u, _) => u.sub.clone(),
        }
    }

    /// The full identity (API routes).
    pub fn identity(&self) -> Identity {
        match self {
            Principal::AdminToken => Identity {
                auth_type: AuthType::AdminToken,
                subject: Some(ADMIN_SUBJECT.into()),
                role: Some(Role::Admin),
                tenant_scope: None,
                key_name: None,
                name: None,
                email: None,
            },
            Principal::Key(k) => identity_of(k),
            Principal::Oidc(u, how) => Identity {
                auth_type: *how,
                subject: Some(u.sub.clone()),
                role: Some(u.role),
                tenant_scope: None,
                key_name: None,
                name: u.name.clone(),
                email: u.email.clone(),
            },
        }
    }
}

/// The portal session cookie's name.
pub const SESSION_COOKIE: &str = "understudy_session";

/// The runtime-store name of a portal session (the cookie's SHA-256: the store never holds a
/// usable cookie).
pub fn session_key(cookie: &str) -> String {
    format!("portal:{}", hash_secret(cookie))
}

/// The portal session cookie of a request, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, SESSION_COOKIE)
}

/// The non-empty value of the cookie `name` of a request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// The credential a request carries: `X-API-Key`, else `Authorization: Bearer`.
pub fn credential(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        let k = k.trim();
        if !k.is_empty() {
            return Some(k);
        }
    }
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Resolves credentials against the bootstrap admin token and the key snapshot.
pub struct Resolver {
    admin_token_hash: Option<[u8; 32]>,
    snapshot: Arc<SnapshotHandle>,
    oidc: Option<Arc<Oidc>>,
}

/// Whether an `expires_at` (RFC 3339, any offset or precision) is past, compared as a time, not
/// as text. One that cannot be read counts as expired: a key is never trusted by accident.
fn expired(at: &str) -> bool {
    match at.parse::<jiff::Timestamp>() {
        Ok(t) => t <= jiff::Timestamp::now(),
        Err(_) => true,
    }
}

impl Resolver {
    /// A resolver; `admin_token` is the bootstrap admin secret, if configured.
    pub fn new(
        admin_token: Option<&str>,
        snapshot: Arc<SnapshotHandle>,
        oidc: Option<Arc<Oidc>>,
    ) -> Self {
        Resolver {
            admin_token_hash: admin_token.map(|t| Sha256::digest(t.as_bytes()).into()),
            snapshot,
            oidc,
        }
    }

    /// Like [`Resolver::principal`], fetching the issuer's keys again when a JWT names a key
    /// not seen yet (at most every 10 s), so rotated keys work.
    pub async fn principal_async(&self, secret: &str) -> Result<Principal, AuthError> {
        if let Some(oidc) = &self.oidc
            && looks_like_jwt(secret)
            && self.lookup(secret).is_err()
        {
            let claims = oidc
                .validate(secret, &oidc.bearer_audiences())
                .await
                .map_err(|e| AuthError::Jwt(e.to_string()))?;
            let user = oidc
                .user_of(&claims)
                .ok_or_else(|| AuthError::Jwt("it names no subject (sub)".into()))?;
            return Ok(Principal::Oidc(Arc::new(user), AuthType::Oidc));
        }
        self.principal(secret)
    }

    /// The identity of a request: its credential (the admin token, a key, a JWT), else its
    /// portal session cookie, else anonymous.
    pub async fn resolve_request(
        &self,
        headers: &HeaderMap,
        runtime: &dyn understudy_core::RuntimeStore,
    ) -> Result<Identity, AuthError> {
        if let Some(secret) = credential(headers) {
            return self.principal_async(secret).await.map(|p| p.identity());
        }
        let Some(cookie) = session_cookie(headers) else {
            return Ok(Identity::anonymous());
        };
        let stored = runtime
            .get_value(&session_key(cookie))
            .await
            .map_err(|_| AuthError::SessionStore)?
            .ok_or(AuthError::Session)?;
        let user: OidcUser = serde_json::from_str(&stored).map_err(|_| AuthError::Session)?;
        Ok(Principal::Oidc(Arc::new(user), AuthType::Session).identity())
    }

    /// The identity of a request: anonymous without a credential, an error for a bad one.
    pub fn resolve(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        match credential(headers) {
            None => Ok(Identity::anonymous()),
            Some(secret) => self.principal(secret).map(|p| p.identity()),
        }
    }

    /// The identity of one presented secret.
    pub fn resolve_secret(&self, secret: &str) -> Result<Identity, AuthError> {
        self.principal(secret).map(|p| p.identity())
    }

    /// What one presented secret is: the admin token or a live key (constant-time comparisons).
    pub fn principal(&self, secret: &str) -> Result<Principal, AuthError> {
        match self.lookup(secret) {
            Err(AuthError::Invalid) if looks_like_jwt(secret) => match &self.oidc {
                Some(oidc) => {
                    let claims = oidc
                        .validate_cached(secret, &oidc.bearer_audiences())
                        .map_err(|e| AuthError::Jwt(e.to_string()))?;
                    let user = oidc
                        .user_of(&claims)
                        .ok_or_else(|| AuthError::Jwt("it names no subject (sub)".into()))?;
                    Ok(Principal::Oidc(Arc::new(user), AuthType::Oidc))
                }
                None => Err(AuthError::Jwt(
                    "OIDC is not configured on this gateway (--oidc-issuer)".into(),
                )),
            },
            other => other,
        }
    }

    /// The admin token or a live key (constant-time comparisons).
    fn lookup(&self, secret: &str) -> Result<Principal, AuthError> {
        let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if let Some(admin) = &self.admin_token_hash
            && bool::from(admin.ct_eq(&digest))
        {
            return Ok(Principal::AdminToken);
        }
        let snapshot = self.snapshot.load();
        let (stored, key) = snapshot
            .keys
            .get_key_value(&digest)
            .ok_or(AuthError::Invalid)?;
        if !bool::from(stored.ct_eq(&digest)) {
            return Err(AuthError::Invalid);
        }
        if key.expires_at.as_deref().is_some_and(expired) {
            return Err(AuthError::Expired(key.name.clone()));
        }
        Ok(Principal::Key(key.clone()))
    }
}

/// The identity an API key authenticates as.
pub fn identity_of(key: &ApiKeyRecord) -> Identity {
    Identity {
        auth_type: AuthType::ApiKey,
        subject: Some(key.identity.clone()),
        role: Some(key.role),
        tenant_scope: key.tenant.clone(),
        key_name: Some(key.name.clone()),
        name: None,
        email: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn key(
        name: &str,
        secret: &str,
        role: Role,
        tenant: Option<&str>,
        expires: Option<&str>,
    ) -> ApiKeyRecord {
        ApiKeyRecord {
            name: name.into(),
            identity: format!("{name}-owner"),
            role,
            tenant: tenant.map(String::from),
            description: None,
            expires_at: expires.map(String::from),
            created_at: "2026-01-01T00:00:00Z".into(),
            created_by: "admin".into(),
            hash: hash_secret(secret),
        }
    }

    fn resolver() -> Resolver {
        let snap = Arc::new(SnapshotHandle::new());
        snap.replace(
            1,
            None,
            vec![],
            vec![
                key("live", "usk_live", Role::Editor, None, None),
                key(
                    "old",
                    "usk_old",
                    Role::Editor,
                    None,
                    Some("2001-01-01T00:00:00Z"),
                ),
                key("scoped", "usk_scoped", Role::Admin, Some("shop"), None),
            ],
        );
        Resolver::new(Some("root-secret"), snap, None)
    }

    #[test]
    fn credentials_come_from_x_api_key_or_bearer() {
        assert_eq!(credential(&headers(&[("x-api-key", "a")])), Some("a"));
        assert_eq!(
            credential(&headers(&[("authorization", "Bearer b")])),
            Some("b")
        );
        assert_eq!(
            credential(&headers(&[("authorization", "bearer  c ")])),
            Some("c")
        );
        assert_eq!(
            credential(&headers(&[("authorization", "Basic xyz")])),
            None
        );
        assert_eq!(credential(&headers(&[])), None);
    }

    #[test]
    fn resolves_admin_token_keys_and_refuses_bad_ones() {
        let r = resolver();
        assert_eq!(r.resolve(&headers(&[])).unwrap(), Identity::anonymous());
        let admin = r
            .resolve(&headers(&[("authorization", "Bearer root-secret")]))
            .unwrap();
        assert_eq!(admin.auth_type, AuthType::AdminToken);
        assert!(admin.is_admin());
        let live = r.resolve(&headers(&[("x-api-key", "usk_live")])).unwrap();
        assert_eq!(
            (live.subject.as_deref(), live.role),
            (Some("live-owner"), Some(Role::Editor))
        );
        assert_eq!(
            r.resolve(&headers(&[("x-api-key", "usk_nope")])),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            r.resolve(&headers(&[("x-api-key", "usk_old")])),
            Err(AuthError::Expired("old".into()))
        );
    }

    #[test]
    fn ownership_scope_and_visibility() {
        let r = resolver();
        let scoped = r.resolve_secret("usk_scoped").unwrap();
        let live = r.resolve_secret("usk_live").unwrap();
        let mut t = TenantConfig {
            tenant_id: "shop".into(),
            visibility: Visibility::Private,
            owner: Some("live-owner".into()),
            state: serde_json::json!({}),
            settings: serde_json::json!({}),
            default_response: None,
            scenarios: vec![],
            chaos: None,
            source: understudy_crds::model::ConfigSource::Api,
            origin: String::new(),
        };
        assert!(live.owns(&t) && live.may_read(&t));
        assert!(scoped.owns(&t), "a scoped admin owns its tenant");
        assert!(!Identity::anonymous().may_read(&t));
        t.tenant_id = "other".into();
        assert!(
            !scoped.owns(&t) && !scoped.may_read(&t),
            "scope holds even for admins"
        );
        t.visibility = Visibility::Global;
        assert!(Identity::anonymous().may_read(&t));
    }

    #[test]
    fn expiry_is_compared_as_a_time() {
        // As text, "2999-01-01T00:00:00.5Z" < "2999-01-01T00:00:00Z" would read as earlier; as
        // times, both are far in the future.
        assert!(!expired("2999-01-01T00:00:00Z"));
        assert!(!expired("2999-01-01T00:00:00.5Z"));
        assert!(!expired("2999-01-01T00:00:00+02:00"));
        assert!(expired("2001-01-01T00:00:00Z"));
        assert!(expired("2001-01-01T00:00:00.999999Z"));
        // Unreadable: never trusted.
        assert!(expired("next tuesday"));
    }
}
