//! The admin keys API (SPEC §9.3): mint, list and revoke API keys. Only admins, never above their
//! own role or outside their own tenant scope. The plaintext is shown once; only its SHA-256 is
//! stored. A revocation reaches every process through the configuration notices (well within 1 s).

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};
use understudy_crds::model::{ApiKeyRecord, Role};
use utoipa::ToSchema;

use crate::api::{ApiError, ApiJson, Caller};
use crate::identity::hash_secret;
use crate::state::App;

/// Routes under `/api/v1/admin`.
/// The surface: its routes, label and prefixes; unknown paths under them get the envelope 404.
pub fn surface() -> crate::surface::Surface {
    crate::surface::Surface {
        label: "admin",
        router: router(),
        prefixes: &["/api/v1/admin/"],
        reject: crate::surface::envelope_reject,
    }
}

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/api/v1/admin/keys", get(list_keys).post(create_key))
        .route("/api/v1/admin/keys/{name}", delete(revoke_key))
        .route("/api/v1/admin/tryit/{name}", axum::routing::post(tryit))
}

/// `POST /api/v1/admin/tryit/{name}` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TryIt {
    /// The tool's arguments (default `{}`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub arguments: Option<serde_json::Value>,
}

/// `POST /api/v1/admin/tryit/{name}` (+ `X-Tenant-ID`, `X-Requested-With`): the tool called
/// in-process, recorded in the audit log as `portal-tryit`.
async fn tryit(
    State(app): State<App>,
    caller: Caller,
    Path(name): Path<String>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let body = crate::api::read_body(&app, &parts, body).await?;
    let input: TryIt = if body.iter().all(u8::is_ascii_whitespace) {
        TryIt { arguments: None }
    } else {
        crate::api::parse_json(&body)?
    };
    let arguments = input
        .arguments
        .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    if !caller.0.is_authenticated() {
        return Err(ApiError::unauthorized(
            "try-it needs a login: send X-API-Key or Authorization: Bearer, or log in at /portal/auth/login",
        ));
    }
    crate::routes::portal::api::tryit(&app, &caller.0, &name, arguments, &parts).await
}

/// `POST /api/v1/admin/keys` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Unique, `[A-Za-z0-9_.-]{1,64}`.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// viewer (default), editor or admin — never above the caller's.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "editor")]
    pub role: Option<Role>,
    /// The identity it authenticates as (default: the name); share one across keys to rotate.
    #[serde(default)]
    pub identity: Option<String>,
    /// Restrict the key to this tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// RFC 3339 time after which the key is refused.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// A key as listed (never the plaintext, never the hash).
#[derive(Serialize, ToSchema)]
pub struct KeyView {
    /// Its name.
    pub name: String,
    /// The identity it authenticates as.
    pub identity: String,
    /// Its role.
    #[schema(value_type = String, example = "editor")]
    pub role: Role,
    /// Its tenant scope.
    pub tenant: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// When it stops working.
    pub expires_at: Option<String>,
    /// When it was minted.
    pub created_at: String,
    /// Who minted it.
    pub created_by: String,
}

impl From<&ApiKeyRecord> for KeyView {
    fn from(k: &ApiKeyRecord) -> Self {
        KeyView {
            name: k.name.clone(),
            identity: k.identity.clone(),
            role: k.role,
            tenant: k.tenant.clone(),
            description: k.description.clone(),
            expires_at: k.expires_at.clone(),
            created_at: k.created_at.clone(),
            created_by: k.created_by.clone(),
        }
    }
}

/// A freshly minted key.
#[derive(Serialize, ToSchema)]
pub struct KeyCreated {
    /// The key.
    pub key: KeyView,
    /// The secret (`usk_…`): shown this once, stored only as a hash.
    pub plaintext: String,
}

/// `{"keys": [...]}`
#[derive(Serialize, ToSchema)]
pub struct KeyList {
    /// By name.
    pub keys: Vec<KeyView>,
}

fn valid_name(name: &str) -> bool {
    understudy_crds::model::valid_tenant_id(name)
}

/// 256 bits from the operating system's generator (UUIDv4 draws from it), as `usk_` + hex.
fn new_secret() -> String {
    format!(
        "usk_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[utoipa::path(post, path = "/api/v1/admin/keys", tag = "admin", request_body = CreateKey,
    responses((status = 201, body = KeyCreated), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
        (status = 403, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody), (status = 413, body = crate::api::ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
/// Mints a key; the plaintext is in this answer only.
pub async fn create_key(
    State(app): State<App>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateKey>,
) -> Result<Response, ApiError> {
    let me = caller.admin(&app)?.clone();
    if !valid_name(&body.name) {
        return Err(ApiError::invalid("name must match [A-Za-z0-9_.-]{1,64}"));
    }
    let role = body.role.unwrap_or(Role::Viewer);
    if me.role.is_none_or(|r| role > r) {
        return Err(ApiError::forbidden(
            "a key cannot have a higher role than the admin minting it",
        ));
    }
    let tenant = match (&me.tenant_scope, body.tenant) {
        (Some(scope), Some(t)) if *scope != t => {
            return Err(ApiError::forbidden(
                "a tenant-scoped admin mints keys for its own tenant only",
            ));
        }
        (Some(scope), _) => Some(scope.clone()),
        (None, t) => t,
    };
    if let Some(t) = &tenant
        && !understudy_crds::model::valid_tenant_id(t)
    {
        return Err(ApiError::invalid(
            "tenant must be a tenant id ([A-Za-z0-9_.-]{1,64})",
        ));
    }
    let identity = body.identity.unwrap_or_else(|| body.name.clone());
    if identity.is_empty() || identity.len() > 256 || identity.starts_with('@') {
        return Err(ApiError::invalid(
            "identity must be 1 to 256 characters and not start with '@' (reserved for built-in identities)",
        ));
    }
    if body.description.as_ref().is_some_and(|d| d.len() > 1024) {
        return Err(ApiError::invalid(
            "description must be at most 1024 characters",
        ));
    }
    let expires_at = match body.expires_at {
        None => None,
        Some(e) => {
            let at =
                humantime::parse_rfc3339_weak(e.trim_end_matches('Z').replace('T', " ").as_str())
                    .or_else(|_| humantime::parse_rfc3339(&e))
                    .map_err(|_| {
                        ApiError::invalid(format!(
                            "expires_at {e:?} is not an RFC 3339 time (e.g. 2030-01-01T00:00:00Z)"
                        ))
                    })?;
            Some(humantime::format_rfc3339_seconds(at).to_string())
        }
    };
    let plaintext = new_secret();
    let record = ApiKeyRecord {
        name: body.name.clone(),
        identity,
        role,
        tenant,
        description: body.description,
        expires_at,
        created_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        created_by: me.subject.clone().unwrap_or_default(),
        hash: hash_secret(&plaintext),
    };
    let v = app.stores.config.put_key(&record).await?.ok_or_else(|| {
        ApiError::conflict(format!(
            "a key named {:?} exists; revoke it or pick another name",
            body.name
        ))
    })?;
    app.snapshot
        .wait_for_version(v, Duration::from_secs(1))
        .await;
    Ok((
        StatusCode::CREATED,
        axum::Json(KeyCreated {
            key: KeyView::from(&record),
            plaintext,
        }),
    )
        .into_response())
}

#[utoipa::path(get, path = "/api/v1/admin/keys", tag = "admin",
    responses((status = 200, body = KeyList), (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
/// Lists keys (a tenant-scoped admin sees its tenant's keys).
pub async fn list_keys(State(app): State<App>, caller: Caller) -> Result<Response, ApiError> {
    let me = caller.admin(&app)?;
    let snap = app.snapshot.load();
    let mut keys: Vec<KeyView> = snap
        .keys
        .values()
        .filter(|k| me.tenant_scope.is_none() || k.tenant == me.tenant_scope)
        .map(|k| KeyView::from(k.as_ref()))
        .collect();
    keys.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(axum::Json(KeyList { keys }).into_response())
}

#[utoipa::path(delete, path = "/api/v1/admin/keys/{name}", tag = "admin", params(("name" = String, Path, description = "key name")),
    responses((status = 204), (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody),
        (status = 404, body = crate::api::ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
/// Revokes a key; its name may be reused afterwards.
pub async fn revoke_key(
    State(app): State<App>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let me = caller.admin(&app)?.clone();
    let key = app
        .stores
        .config
        .get_key(&name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no key named {name:?}")))?;
    if me.tenant_scope.is_some() && key.tenant != me.tenant_scope {
        return Err(ApiError::forbidden(
            "a tenant-scoped admin revokes its own tenant's keys only",
        ));
    }
    let v = app
        .stores
        .config
        .delete_key_checked(&name, Some(&key.hash))
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no key named {name:?}")))?;
    app.snapshot
        .wait_for_version(v, Duration::from_secs(1))
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}
