//! OpenID Connect (SPEC §8.1, §9.4, §11): the issuer's discovery document and signing keys,
//! bearer JWT validation (jsonwebtoken does the JOSE work), and the pieces of the portal's
//! authorization-code + PKCE login (the token exchange, id_token validation).
//!
//! ```text
//!  bearer JWT ─► kid ─► cached JWKS ─(unknown kid: refetch, at most every 10 s)─► verify
//!             ─► iss, aud, exp/nbf (60 s leeway) ─► OidcUser { sub, role from the claim }
//! ```
//!
//! Keys are replaced as a whole on each fetch, so a rotated-in key works after one refetch and
//! a rotated-out key stops working at the same moment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use understudy_crds::model::Role;

/// Least time between two JWKS fetches caused by unknown key ids.
const REFETCH_EVERY: Duration = Duration::from_secs(10);
/// Timeout of every call to the issuer.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// OIDC settings (`--oidc-*`).
#[derive(Debug, Clone, PartialEq)]
pub struct OidcOptions {
    /// The issuer URL (no trailing slash).
    pub issuer: String,
    /// The client id.
    pub client_id: String,
    /// The client secret (a confidential client), if any.
    pub client_secret: Option<String>,
    /// The claim holding the role.
    pub role_claim: String,
    /// Audiences accepted in bearer JWTs besides the client id.
    pub audiences: Vec<String>,
    /// Scopes asked for at login.
    pub scopes: String,
    /// The redirect URI, if fixed.
    pub redirect_url: Option<String>,
}

/// The issuer's discovery document (the fields used).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Metadata {
    /// Must equal the configured issuer.
    pub issuer: String,
    /// Where logins go.
    pub authorization_endpoint: String,
    /// Where codes are exchanged.
    pub token_endpoint: String,
    /// The signing keys.
    pub jwks_uri: String,
}

/// An OIDC identity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct OidcUser {
    /// The `sub` claim: the identity.
    pub sub: String,
    /// From the role claim (viewer when absent).
    pub role: Role,
    /// `name`, if any.
    pub name: Option<String>,
    /// `email`, if any.
    pub email: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Its key id is not among the issuer's keys (a refetch may help).
    #[error("it is signed with a key the issuer does not publish")]
    UnknownKey,
    /// Anything else: signature, claims, shape.
    #[error("{0}")]
    Invalid(String),
    /// The issuer could not be reached.
    #[error("the OIDC issuer cannot be reached: {0}")]
    Unreachable(String),
}

struct Key {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// The issuer, as this process knows it.
pub struct Oidc {
    /// The settings.
    pub options: OidcOptions,
    http: reqwest::Client,
    metadata: ArcSwap<Option<Arc<Metadata>>>,
    keys: ArcSwap<HashMap<String, Arc<Key>>>,
    last_fetch: Mutex<Option<Instant>>,
    fetching: tokio::sync::Mutex<()>,
    /// When discovery last failed: for a few seconds after, callers are answered at once
    /// instead of each waiting for the issuer's timeout.
    discovery_failed: Mutex<Option<Instant>>,
}

/// How long a failed discovery is remembered.
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

/// Whether a credential looks like a JWT (three base64url parts, a JSON header).
pub fn looks_like_jwt(s: &str) -> bool {
    s.starts_with("eyJ")
        && s.split('.').count() == 3
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A random URL-safe token of 32 bytes (state, nonce, PKCE verifier, session ids).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE S256 challenge of a verifier.
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn algorithms_for(params: &AlgorithmParameters) -> Vec<Algorithm> {
    match params {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(_) => vec![Algorithm::ES256, Algorithm::ES384],
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        // Symmetric keys are never trusted from a JWKS.
        _ => vec![],
    }
}

impl Oidc {
    /// The issuer, not contacted yet (discovery and keys are fetched on first use).
    pub fn new(options: OidcOptions) -> Self {
        let http = reqwest::Client::builder()
            .timeout(HTTP_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Oidc {
            options,
            http,
            metadata: ArcSwap::from_pointee(None),
            keys: ArcSwap::from_pointee(HashMap::new()),
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            discovery_failed: Mutex::new(None),
        }
    }

    /// The discovery document (fetched once, again after a failure).
    pub async fn metadata(&self) -> Result<Arc<Metadata>, TokenError> {
        if let Some(m) = self.metadata.load().as_ref() {
            return Ok(m.clone());
        }
        if self
            .discovery_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < DISCOVERY_RETRY)
        {
            return Err(TokenError::Unreachable(
                "its discovery document could not be read a moment ago; retrying shortly".into(),
            ));
        }
        let url = format!("{}/.well-known/openid-configuration", self.options.issuer);
        let meta: Metadata = match self.get_json(&url, "its discovery document").await {
            Ok(m) => m,
            Err(e) => {
                *self
                    .discovery_failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                return Err(e);
            }
        };
        if meta.issuer.trim_end_matches('/') != self.options.issuer {
            return Err(TokenError::Unreachable(format!(
                "its discovery document names the issuer {:?}, not {:?}",
                meta.issuer, self.options.issuer
            )));
        }
        let meta = Arc::new(meta);
        self.metadata.store(Arc::new(Some(meta.clone())));
        Ok(meta)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        what: &str,
    ) -> Result<T, TokenError> {
        self.http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| TokenError::Unreachable(e.to_string()))?
            .json()
            .await
            .map_err(|e| TokenError::Unreachable(format!("{what}: {e}")))
    }

    /// The discovery document if it was fetched already.
    pub fn metadata_cached(&self) -> Option<Arc<Metadata>> {
        self.metadata.load().as_ref().clone()
    }

    /// Fetches the signing keys again, unless they were fetched less than 10 s ago.
    pub async fn refresh_keys(&self) -> Result<(), TokenError> {
        let _one = self.fetching.lock().await;
        {
            let last = self.last_fetch.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < REFETCH_EVERY) {
                return Ok(());
            }
        }
        // A failed fetch counts too: an issuer that is down is asked at most every 10 s.
        *self.last_fetch.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let meta = self.metadata().await?;
        let set: JwkSet = self.get_json(&meta.jwks_uri, "its JWKS").await?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            // Encryption keys never verify a signature.
            if matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            ) {
                continue;
            }
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
            else {
                continue;
            };
            let mut algorithms = algorithms_for(&jwk.algorithm);
            // A key that names its algorithm verifies that one only.
            if let Some(named) = jwk
                .common
                .key_algorithm
                .as_ref()
                .and_then(|a| a.to_string().parse::<Algorithm>().ok())
            {
                algorithms.retain(|a| *a == named);
            }
            if !algorithms.is_empty() {
                keys.insert(kid, Arc::new(Key { key, algorithms }));
            }
        }
        tracing::debug!(keys = keys.len(), "OIDC signing keys fetched");
        self.keys.store(Arc::new(keys));
        Ok(())
    }

    /// Validates a token with the keys at hand: signature, `iss`, `aud` (one of `audiences`),
    /// `exp` and `nbf` with 60 s of leeway, and a `sub`. Returns its claims.
    pub fn validate_cached(&self, token: &str, audiences: &[String]) -> Result<Value, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Invalid(e.to_string()))?;
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("it names no key id (kid)".into()))?;
        let keys = self.keys.load();
        let key = keys.get(&kid).ok_or(TokenError::UnknownKey)?;
        if !key.algorithms.contains(&header.alg) {
            return Err(TokenError::Invalid(format!(
                "its algorithm {:?} does not fit its key",
                header.alg
            )));
        }
        let mut v = Validation::new(header.alg);
        v.algorithms = key.algorithms.clone();
        // The issuer exactly as its discovery document spells it (a trailing slash included).
        let issuer = self
            .metadata_cached()
            .map(|m| m.issuer.clone())
            .unwrap_or_else(|| self.options.issuer.clone());
        v.set_issuer(&[issuer]);
        v.set_audience(audiences);
        v.validate_nbf = true;
        v.leeway = 60;
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Value>(token, &key.key, &v)
            .map_err(|e| TokenError::Invalid(describe(&e)))?;
        Ok(data.claims)
    }

    /// Validates a token, fetching the keys again once when its key is unknown.
    pub async fn validate(&self, token: &str, audiences: &[String]) -> Result<Value, TokenError> {
        match self.validate_cached(token, audiences) {
            Err(TokenError::UnknownKey) => {
                self.refresh_keys().await?;
                self.validate_cached(token, audiences)
            }
            other => other,
        }
    }

    /// The audiences a bearer JWT may carry.
    pub fn bearer_audiences(&self) -> Vec<String> {
        let mut a = vec![self.options.client_id.clone()];
        a.extend(self.options.audiences.iter().cloned());
        a
    }

    /// The identity in validated claims.
    pub fn user_of(&self, claims: &Value) -> Option<OidcUser> {
        let sub = claims.get("sub")?.as_str()?.to_string();
        // `@` begins the identities of built-in principals (`@admin`): no token may claim one.
        if sub.is_empty() || sub.starts_with('@') {
            return None;
        }
        let role_of = |v: &Value| {
            v.as_str()
                .and_then(|s| serde_json::from_value::<Role>(s.to_ascii_lowercase().into()).ok())
        };
        let role = match claims.get(&self.options.role_claim) {
            Some(Value::Array(a)) => a.iter().filter_map(role_of).max(),
            Some(v) => role_of(v),
            None => None,
        }
        .unwrap_or(Role::Viewer);
        let text = |k: &str| claims.get(k).and_then(Value::as_str).map(String::from);
        Some(OidcUser {
            sub,
            role,
            name: text("name"),
            email: text("email"),
        })
    }

    /// Exchanges an authorization code (with its PKCE verifier) for the id_token.
    pub async fn exchange(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<String, TokenError> {
        let meta = self.metadata().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let mut req = self.http.post(&meta.token_endpoint);
        match &self.options.client_secret {
            Some(secret) => req = req.basic_auth(&self.options.client_id, Some(secret)),
            None => form.push(("client_id", &self.options.client_id)),
        }
        let resp = req
            .form(&form)
            .send()
            .await
            .map_err(|e| TokenError::Unreachable(e.to_string()))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| TokenError::Invalid(format!("the token endpoint's answer: {e}")))?;
        if !status.is_success() {
            let why = body
                .get("error_description")
                .or_else(|| body.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("refused");
            return Err(TokenError::Invalid(format!(
                "the issuer refused the code ({status}): {why}"
            )));
        }
        body.get("id_token")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| TokenError::Invalid("the token endpoint sent no id_token".into()))
    }
}

fn describe(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => "it has expired".into(),
        K::ImmatureSignature => "it is not valid yet (nbf)".into(),
        K::InvalidIssuer => "its issuer (iss) is not this gateway's OIDC issuer".into(),
        K::InvalidAudience => "its audience (aud) is not accepted here".into(),
        K::InvalidSignature => "its signature does not verify".into(),
        K::MissingRequiredClaim(c) => format!("it lacks the {c} claim"),
        K::InvalidAlgorithm => "its algorithm is not accepted".into(),
        other => format!("it cannot be read ({other:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwts_and_pkce() {
        assert!(looks_like_jwt("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"));
        assert!(!looks_like_jwt("usk_abc"));
        assert!(!looks_like_jwt("eyJ.a"));
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert_ne!(random_token(), random_token());
        assert_eq!(random_token().len(), 43);
    }

    #[test]
    fn roles_come_from_the_claim() {
        let o = Oidc::new(OidcOptions {
            issuer: "http://idp".into(),
            client_id: "c".into(),
            client_secret: None,
            role_claim: "groups".into(),
            audiences: vec![],
            scopes: "openid".into(),
            redirect_url: None,
        });
        let u = o
            .user_of(&serde_json::json!({"sub": "ann", "groups": ["viewer", "admin", "x"]}))
            .unwrap();
        assert_eq!(u.role, Role::Admin);
        let u = o
            .user_of(&serde_json::json!({"sub": "bob", "groups": "nonsense"}))
            .unwrap();
        assert_eq!(u.role, Role::Viewer);
        assert!(o.user_of(&serde_json::json!({"sub": ""})).is_none());
        assert!(o.user_of(&serde_json::json!({"sub": "@admin"})).is_none());
    }
}
