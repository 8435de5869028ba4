//! The portal (SPEC §9): its web UI at `/portal/` (embedded in the binary, no external
//! network), the OIDC login (`/portal/auth/*`), the authorization-server metadata, and the
//! portal API under `/api/v1/portal/` ([`api`]).
//!
//! ```text
//!  /portal/auth/login ─► state, nonce, PKCE verifier kept 10 min (runtime store) ─► 302 issuer
//!  /portal/auth/callback ─► take the state (once, any process) ─► code + verifier ─► id_token
//!      validated (JWKS, iss, aud, exp, nonce) ─► session kept by its cookie's hash ─► cookie
//!  /portal/auth/logout ─► the session deleted (every process) ─► cookie cleared
//! ```

pub mod api;

use axum::Router;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};

use crate::api::ApiError;
use crate::identity::{SESSION_COOKIE, session_cookie, session_key};
use crate::oidc::{pkce_challenge, random_token};
use crate::state::App;

/// How long a login may take between the redirect and the callback.
const LOGIN_TTL_MS: u64 = 10 * 60 * 1000;

const INDEX_HTML: &str = include_str!("../../../portal/index.html");
const APP_JS: &str = include_str!("../../../portal/app.js");
const APP_CSS: &str = include_str!("../../../portal/app.css");

/// The surface.
pub fn surface() -> crate::surface::Surface {
    crate::surface::Surface {
        label: "portal",
        router: router(),
        prefixes: &[
            "/portal",
            "/api/v1/portal/",
            "/.well-known/oauth-authorization-server",
        ],
        reject: crate::surface::envelope_reject,
    }
}

fn router() -> Router<App> {
    Router::new()
        .route("/portal", get(redirect_to_portal))
        .route("/portal/", get(index))
        .route("/portal/assets/app.js", get(app_js))
        .route("/portal/assets/app.css", get(app_css))
        .route("/portal/auth/login", get(login))
        .route("/portal/auth/callback", get(callback))
        .route("/portal/auth/logout", post(logout))
        .route("/portal/{*rest}", get(index))
        .route(
            "/.well-known/oauth-authorization-server",
            get(authorization_server),
        )
        .merge(api::router())
}

async fn redirect_to_portal() -> Response {
    (
        StatusCode::MOVED_PERMANENTLY,
        [(header::LOCATION, "/portal/")],
    )
        .into_response()
}

/// The UI's own pages may only load the UI's own scripts and styles.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

async fn authorization_server(State(app): State<App>) -> Response {
    match crate::wellknown::authorization_server(&app).await {
        Some(doc) => axum::Json(doc).into_response(),
        None => ApiError::not_found("OIDC is not configured on this gateway (--oidc-issuer)")
            .into_response(),
    }
}

/// A login in flight.
#[derive(Serialize, Deserialize)]
struct Pending {
    verifier: String,
    nonce: String,
    return_to: String,
    redirect_uri: String,
    /// The SHA-256 of the login cookie set on the browser that started it: only that browser
    /// can finish it (no login CSRF: a callback URL sent to someone else fails).
    browser: String,
}

/// The cookie that ties a login to the browser that started it.
const LOGIN_COOKIE: &str = "understudy_login";

#[derive(Deserialize)]
struct LoginQuery {
    return_to: Option<String>,
}

/// Where the login comes back to: `--oidc-redirect-url`, else this gateway's own callback.
fn redirect_uri(app: &App, headers: &HeaderMap) -> String {
    app.oidc
        .as_ref()
        .and_then(|o| o.options.redirect_url.clone())
        .unwrap_or_else(|| {
            format!(
                "{}/portal/auth/callback",
                crate::api::base_url(app, headers)
            )
        })
}

/// A path under `/portal/` to go back to (anything else — other hosts included — is `/portal/`).
fn safe_return(to: Option<&str>) -> String {
    match to {
        Some(p)
            if p.starts_with("/portal")
                && !p.starts_with("//")
                && !p.contains('\\')
                && p.len() <= 2048
                && p.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            p.to_string()
        }
        _ => "/portal/".into(),
    }
}

/// `GET /portal/auth/login`: starts the authorization-code + PKCE flow.
async fn login(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    let oidc = app.oidc.clone().ok_or_else(|| {
        ApiError::not_found("OIDC login is not configured on this gateway (--oidc-issuer)")
    })?;
    let meta = oidc
        .metadata()
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?;
    let state = random_token();
    let browser = random_token();
    let pending = Pending {
        verifier: random_token(),
        nonce: random_token(),
        return_to: safe_return(q.return_to.as_deref()),
        redirect_uri: redirect_uri(&app, &headers),
        browser: crate::identity::hash_secret(&browser),
    };
    let doc = serde_json::to_string(&pending).unwrap_or_default();
    app.stores
        .runtime
        .put_value(&format!("login:{state}"), &doc, LOGIN_TTL_MS)
        .await?;
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &oidc.options.client_id)
        .append_pair("redirect_uri", &pending.redirect_uri)
        .append_pair("scope", &oidc.options.scopes)
        .append_pair("state", &state)
        .append_pair("nonce", &pending.nonce)
        .append_pair("code_challenge", &pkce_challenge(&pending.verifier))
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if meta.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let location = format!("{}{sep}{query}", meta.authorization_endpoint);
    let mut resp = (
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, "no-store".into()),
        ],
    )
        .into_response();
    let cookie = format!(
        "{LOGIN_COOKIE}={browser}; HttpOnly; SameSite=Lax; Path=/portal/auth; Max-Age={}{}",
        LOGIN_TTL_MS / 1000,
        secure(&app, &headers)
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /portal/auth/callback`: the issuer sends the browser back with a code.
async fn callback(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Result<Response, ApiError> {
    let oidc = app.oidc.clone().ok_or_else(|| {
        ApiError::not_found("OIDC login is not configured on this gateway (--oidc-issuer)")
    })?;
    if let Some(e) = q.error {
        let why = q.error_description.unwrap_or_default();
        return Err(ApiError::invalid(format!(
            "the OIDC issuer refused the login: {} {}",
            clip(&e),
            clip(&why)
        )));
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return Err(ApiError::invalid(
            "the callback needs code and state (start at /portal/auth/login)",
        ));
    };
    if state.len() > 128 {
        return Err(ApiError::invalid("unknown login state"));
    }
    let pending = app
        .stores
        .runtime
        .take_value(&format!("login:{state}"))
        .await?
        .and_then(|d| serde_json::from_str::<Pending>(&d).ok())
        .ok_or_else(|| {
            ApiError::invalid(
                "unknown, used or expired login state: start again at /portal/auth/login",
            )
        })?;
    let same_browser = crate::identity::cookie(&headers, LOGIN_COOKIE)
        .is_some_and(|c| crate::identity::hash_secret(c) == pending.browser);
    if !same_browser {
        return Err(ApiError::invalid(
            "this login was started in another browser (or its cookie expired): start again at /portal/auth/login",
        ));
    }
    let id_token = oidc
        .exchange(&code, &pending.verifier, &pending.redirect_uri)
        .await
        .map_err(|e| ApiError::invalid(format!("the login failed: {e}")))?;
    let claims = oidc
        .validate(&id_token, std::slice::from_ref(&oidc.options.client_id))
        .await
        .map_err(|e| ApiError::invalid(format!("the id_token was refused: {e}")))?;
    if claims.get("nonce").and_then(|n| n.as_str()) != Some(pending.nonce.as_str()) {
        return Err(ApiError::invalid(
            "the id_token was refused: its nonce is not this login's",
        ));
    }
    let user = oidc
        .user_of(&claims)
        .ok_or_else(|| ApiError::invalid("the id_token names no subject (sub)"))?;
    let cookie = random_token();
    let ttl = app.options.portal_session_ttl;
    let doc = serde_json::to_string(&user).unwrap_or_default();
    app.stores
        .runtime
        .put_value(
            &session_key(&cookie),
            &doc,
            ttl.as_millis().min(u64::MAX as u128) as u64,
        )
        .await?;
    tracing::info!(subject = %user.sub, role = user.role.as_str(), "portal login");
    let set = format!(
        "{SESSION_COOKIE}={cookie}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}{}",
        ttl.as_secs(),
        secure(&app, &headers)
    );
    let mut resp = (
        StatusCode::FOUND,
        [
            (header::LOCATION, pending.return_to),
            (header::CACHE_CONTROL, "no-store".into()),
        ],
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&set) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "understudy_login=; HttpOnly; SameSite=Lax; Path=/portal/auth; Max-Age=0",
        ),
    );
    Ok(resp)
}

/// `; Secure` when the gateway is reached over https.
fn secure(app: &App, headers: &HeaderMap) -> &'static str {
    if crate::api::base_url(app, headers).starts_with("https://") {
        "; Secure"
    } else {
        ""
    }
}

fn clip(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// `POST /portal/auth/logout`: ends the session on every process and clears the cookie.
async fn logout(State(app): State<App>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(cookie) = session_cookie(&headers) {
        app.stores
            .runtime
            .delete_value(&session_key(cookie))
            .await?;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("understudy_session=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_portal_paths_are_returned_to() {
        assert_eq!(safe_return(Some("/portal/#/tail")), "/portal/#/tail");
        assert_eq!(safe_return(Some("https://evil.example/")), "/portal/");
        assert_eq!(safe_return(Some("//evil.example/portal")), "/portal/");
        assert_eq!(safe_return(Some("/portal\\..\\x")), "/portal/");
        assert_eq!(safe_return(None), "/portal/");
    }
}
