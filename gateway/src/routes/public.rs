//! The public tenant API (SPEC §8.2): tenants, their state, settings, scenarios and chaos, changed
//! at run time by tests and scripts, with ownership and visibility enforced.
//!
//! Writes are read-modify-write of the tenant's one document with an optimistic version check
//! (no lost updates across processes), then wait until this process's snapshot has the new
//! version, so a caller can read its own write here at once — and pass the returned `version`
//! as `X-Understudy-Config-Version` to any other process.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use understudy_crds::model::{self, ConfigSource, ScenarioConfig, TenantConfig};
use understudy_crds::{ChaosKind, ChaosProfileSpec, MatchMode, ScenarioSpec, Surface, Visibility};
use utoipa::ToSchema;

use crate::api::{ApiError, ApiJson, Caller};
use crate::identity::Identity;
use crate::state::App;

/// Largest tenant `state` document, serialised.
pub const MAX_STATE_BYTES: usize = 1024 * 1024;
/// Largest tenant `settings` document, serialised.
pub const MAX_SETTINGS_BYTES: usize = 64 * 1024;
/// Largest whole tenant document (state, settings, every scenario), serialised.
pub const MAX_TENANT_BYTES: usize = 8 * 1024 * 1024;
/// Most scenarios per tenant.
pub const MAX_SCENARIOS: usize = 10_000;
/// Bounded wait for this process's snapshot to hold a write it just made.
const OWN_WRITE_WAIT: Duration = Duration::from_secs(1);

/// Routes under `/public`.
/// The surface: its routes, label and prefixes; unknown paths under them get the envelope 404.
pub fn surface() -> crate::surface::Surface {
    crate::surface::Surface {
        label: "public",
        router: router(),
        prefixes: &["/public/"],
        reject: crate::surface::envelope_reject,
    }
}

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/public/tenants", get(list_tenants).post(create_tenant))
        .route(
            "/public/tenants/{id}",
            get(get_tenant).delete(delete_tenant),
        )
        .route("/public/tenants/{id}/state", axum::routing::put(put_state))
        .route(
            "/public/tenants/{id}/settings",
            get(get_settings).patch(patch_settings),
        )
        .route("/public/tenants/{id}/reset", post(reset_tenant))
        .route(
            "/public/tenants/{id}/scenarios",
            get(list_scenarios).post(add_scenario),
        )
        .route(
            "/public/tenants/{id}/scenarios/{*sid}",
            delete(delete_scenario),
        )
        .route("/public/tenants/{id}/chaos", get(get_chaos).put(put_chaos))
}

/// A tenant as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct TenantView {
    /// The `X-Tenant-ID` value.
    pub tenant_id: String,
    /// `global` or `private`.
    #[schema(value_type = String, example = "global")]
    pub visibility: Visibility,
    /// The owning identity.
    pub owner: Option<String>,
    /// `api`, `manifest` or `kubernetes`.
    #[schema(value_type = String, example = "api")]
    pub source: ConfigSource,
    /// Tenants from manifests or Kubernetes cannot be changed here (409).
    pub read_only: bool,
    /// The configuration version of its last write.
    pub version: u64,
    /// Free-form mock state.
    #[schema(value_type = Object)]
    pub state: Value,
    /// Settings.
    #[schema(value_type = Object)]
    pub settings: Value,
    /// The answer when no scenario matches.
    pub default_response: Option<String>,
    /// Scenarios in force.
    pub scenarios: usize,
    /// Distinct tool names.
    pub tools: usize,
    /// The chaos profile in force (`none` when off).
    pub chaos: String,
}

fn view(t: &TenantConfig, version: u64) -> TenantView {
    let (scenarios, tools) = model::counts(t);
    TenantView {
        tenant_id: t.tenant_id.clone(),
        visibility: t.visibility,
        owner: t.owner.clone(),
        source: t.source,
        read_only: t.read_only(),
        version,
        state: t.state.clone(),
        settings: t.settings.clone(),
        default_response: t.default_response.clone(),
        scenarios,
        tools,
        chaos: t
            .chaos
            .as_ref()
            .map_or("none", |c| c.profile.as_str())
            .to_string(),
    }
}

/// `{"tenants": [...]}`
#[derive(Serialize, ToSchema)]
pub struct TenantList {
    /// Tenants visible to the caller, by id.
    pub tenants: Vec<TenantView>,
}

/// A tenant after a write, with the configuration version to wait for elsewhere.
#[derive(Serialize, ToSchema)]
pub struct TenantWritten {
    /// The tenant now.
    pub tenant: TenantView,
    /// Pass as `X-Understudy-Config-Version` to any process to wait until it serves this.
    pub version: u64,
}

/// The outcome of a delete or reset.
#[derive(Serialize, ToSchema)]
pub struct Done {
    /// The tenant.
    pub tenant_id: String,
    /// What happened (`deleted` or `reset`).
    pub result: String,
    /// The configuration version after it.
    pub version: u64,
}

/// `POST /public/tenants` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// `[A-Za-z0-9_.-]{1,64}`, unique.
    pub tenant_id: String,
    /// Initial state (default `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub state: Option<Value>,
    /// Initial settings (default `{}`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub settings: Option<Value>,
    /// `private` (default: only the creator) or `global` (admins only).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "private")]
    pub visibility: Option<Visibility>,
    /// The answer when no scenario matches.
    #[serde(default)]
    pub default_response: Option<String>,
}

/// `PUT …/state` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StateBody {
    /// The new state (replaces the old one).
    #[schema(value_type = Object)]
    pub state: Value,
}

/// `GET …/settings` answer.
#[derive(Serialize, ToSchema)]
pub struct SettingsView {
    /// The tenant.
    pub tenant_id: String,
    /// Its settings.
    #[schema(value_type = Object)]
    pub settings: Value,
    /// The configuration version of its last write.
    pub version: u64,
}

/// A scenario as the API takes and shows it: the Scenario fields in snake_case.
/// Unknown fields are refused (400) by [`scenario_body`]; the type itself accepts them so that its
/// schema also describes the answers, which carry the server-set `id`.
#[derive(Serialize, Deserialize, ToSchema, Default)]
pub struct ScenarioBody {
    /// `sc_…` for API scenarios, `namespace/name` for resources (set by the server, ignored in requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(read_only)]
    pub id: Option<String>,
    /// Case-insensitive substrings of the latest user text.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// `any` (default) or `all`.
    #[serde(default, rename = "match")]
    #[schema(value_type = Option<String>, example = "any")]
    pub match_mode: Option<MatchMode>,
    /// Higher wins.
    #[serde(default)]
    pub priority: Option<i32>,
    /// The answer text.
    #[serde(default)]
    pub response: Option<String>,
    /// An MCP tool, and the tool the mock model calls.
    #[serde(default)]
    pub tool_name: Option<String>,
    /// The tool's description.
    #[serde(default)]
    pub tool_description: Option<String>,
    /// JSON Schema of the tool's arguments.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tool_input_schema: Option<Value>,
    /// Arguments the mock model passes.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tool_arguments: Option<Value>,
    /// Applies to tools/call only when the arguments contain this subset.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tool_when: Option<Value>,
    /// What tools/call returns.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tool_data: Option<Value>,
    /// Explicit MCP content blocks.
    #[serde(default)]
    #[schema(value_type = Option<Vec<Object>>)]
    pub tool_content: Option<Vec<Value>>,
    /// tools/call answers isError with this text.
    #[serde(default)]
    pub tool_error: Option<String>,
    /// The tool's outputSchema.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tool_output_schema: Option<Value>,
    /// The tool's annotations.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tool_annotations: Option<Value>,
    /// The answer is this JSON instead of `response`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub response_json: Option<Value>,
    /// Applies only at this user turn.
    #[serde(default)]
    pub turn: Option<u32>,
}

/// The fields a scenario body may carry.
const SCENARIO_FIELDS: &[&str] = &[
    "id",
    "keywords",
    "match",
    "priority",
    "response",
    "tool_name",
    "tool_description",
    "tool_input_schema",
    "tool_arguments",
    "tool_when",
    "tool_data",
    "tool_content",
    "tool_error",
    "tool_output_schema",
    "tool_annotations",
    "response_json",
    "turn",
];

/// Reads a scenario body, refusing unknown fields by name (e.g. camelCase `toolName`).
fn scenario_body(v: Value) -> Result<ScenarioBody, ApiError> {
    let Some(obj) = v.as_object() else {
        return Err(ApiError::invalid("a scenario must be a JSON object"));
    };
    if obj.contains_key("id") {
        return Err(ApiError::invalid(
            "unknown field \"id\": a scenario's id is set by the server (sc_…); leave it out",
        ));
    }
    if let Some(unknown) = obj.keys().find(|k| !SCENARIO_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid(format!(
            "unknown field {unknown:?}: scenario fields are snake_case ({})",
            SCENARIO_FIELDS[1..].join(", ")
        )));
    }
    serde_path_to_error::deserialize(v)
        .map_err(|e| ApiError::invalid(format!("{}: {}", e.path(), e.inner())))
}

impl ScenarioBody {
    fn into_spec(self, tenant: &str) -> ScenarioSpec {
        ScenarioSpec {
            tenant_ref: tenant.to_string(),
            keywords: self.keywords,
            match_mode: self.match_mode.unwrap_or_default(),
            priority: self.priority.unwrap_or(0),
            response: self.response.unwrap_or_default(),
            tool_name: self.tool_name,
            tool_description: self.tool_description,
            tool_input_schema: self.tool_input_schema,
            tool_arguments: self.tool_arguments,
            tool_when: self.tool_when,
            tool_data: self.tool_data,
            tool_content: self.tool_content,
            tool_error: self.tool_error,
            tool_output_schema: self.tool_output_schema,
            tool_annotations: self.tool_annotations,
            response_json: self.response_json,
            turn: self.turn,
        }
    }

    fn from_spec(id: &str, s: &ScenarioSpec) -> Self {
        ScenarioBody {
            id: Some(id.to_string()),
            keywords: s.keywords.clone(),
            match_mode: Some(s.match_mode),
            priority: Some(s.priority),
            response: Some(s.response.clone()),
            tool_name: s.tool_name.clone(),
            tool_description: s.tool_description.clone(),
            tool_input_schema: s.tool_input_schema.clone(),
            tool_arguments: s.tool_arguments.clone(),
            tool_when: s.tool_when.clone(),
            tool_data: s.tool_data.clone(),
            tool_content: s.tool_content.clone(),
            tool_error: s.tool_error.clone(),
            tool_output_schema: s.tool_output_schema.clone(),
            tool_annotations: s.tool_annotations.clone(),
            response_json: s.response_json.clone(),
            turn: s.turn,
        }
    }
}

/// `{"scenarios": [...]}`
#[derive(Serialize, ToSchema)]
pub struct ScenarioList {
    /// In creation order.
    pub scenarios: Vec<ScenarioBody>,
}

/// A scenario after a write.
#[derive(Serialize, ToSchema)]
pub struct ScenarioWritten {
    /// The scenario.
    pub scenario: ScenarioBody,
    /// The configuration version to wait for elsewhere.
    pub version: u64,
}

/// A chaos profile as the API takes and shows it (ChaosProfile fields in snake_case).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChaosBody {
    /// none | rate_limit | server_error | latency | stream_cut | malformed_stream.
    #[schema(value_type = String, example = "server_error")]
    pub profile: ChaosKind,
    /// Share of requests affected, 0..1 (default 1).
    #[serde(default)]
    pub probability: Option<f64>,
    /// llm, mcp, channels (default all).
    #[serde(default)]
    #[schema(value_type = Option<Vec<String>>)]
    pub surfaces: Option<Vec<Surface>>,
    /// latency: milliseconds.
    #[serde(default)]
    pub latency_ms: Option<u64>,
    /// server_error: 500, 502, 503 or 529 (default 500).
    #[serde(default)]
    pub status_code: Option<u16>,
    /// rate_limit: requests per window.
    #[serde(default)]
    pub limit: Option<u64>,
    /// rate_limit, fail_first: window length (default 60).
    #[serde(default)]
    pub window_seconds: Option<u64>,
    /// stream_cut, malformed_stream: events first (default 3).
    #[serde(default)]
    pub after_chunks: Option<u32>,
    /// Only the first N requests of each window fail.
    #[serde(default)]
    pub fail_first: Option<u64>,
    /// Only every Nth request fails (N ≥ 2).
    #[serde(default)]
    pub every: Option<u64>,
}

impl ChaosBody {
    fn into_spec(self, tenant: &str) -> ChaosProfileSpec {
        let d = ChaosProfileSpec::default();
        ChaosProfileSpec {
            tenant_ref: tenant.to_string(),
            profile: self.profile,
            probability: self.probability.unwrap_or(d.probability),
            surfaces: self.surfaces.unwrap_or(d.surfaces),
            latency_ms: self.latency_ms.unwrap_or(d.latency_ms),
            status_code: self.status_code.unwrap_or(d.status_code),
            limit: self.limit.unwrap_or(d.limit),
            window_seconds: self.window_seconds.unwrap_or(d.window_seconds),
            after_chunks: self.after_chunks.unwrap_or(d.after_chunks),
            fail_first: self.fail_first.unwrap_or(d.fail_first),
            every: self.every.unwrap_or(d.every),
        }
    }

    fn from_spec(c: &ChaosProfileSpec) -> Self {
        ChaosBody {
            profile: c.profile,
            probability: Some(c.probability),
            surfaces: Some(c.surfaces.clone()),
            latency_ms: Some(c.latency_ms),
            status_code: Some(c.status_code),
            limit: Some(c.limit),
            window_seconds: Some(c.window_seconds),
            after_chunks: Some(c.after_chunks),
            fail_first: Some(c.fail_first),
            every: Some(c.every),
        }
    }
}

/// The chaos profile of a tenant.
#[derive(Serialize, ToSchema)]
pub struct ChaosView {
    /// The tenant.
    pub tenant_id: String,
    /// The profile in force (`profile: none` when off).
    pub chaos: ChaosBody,
    /// The configuration version of its last write.
    pub version: u64,
}

/// Rewrites validation field paths of the CRD (`spec.toolInputSchema`) into API names.
fn api_field(field: &str) -> String {
    let f = field.strip_prefix("spec.").unwrap_or(field);
    let mut out = String::with_capacity(f.len() + 4);
    for c in f.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn refuse(problems: Vec<(String, &'static str, String)>) -> Result<(), ApiError> {
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems
        .iter()
        .map(|(f, _, m)| format!("{}: {m}", api_field(f)))
        .collect();
    Err(ApiError::invalid(list.join("; ")))
}

fn valid_id(id: &str) -> Result<(), ApiError> {
    if model::valid_tenant_id(id) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "tenant id {:?} must match [A-Za-z0-9_.-]{{1,64}}",
            id.chars().take(80).collect::<String>()
        )))
    }
}

fn check_size(what: &str, v: &Value, limit: usize) -> Result<(), ApiError> {
    if !v.is_object() {
        return Err(ApiError::invalid(format!("{what} must be a JSON object")));
    }
    let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
    if size > limit {
        return Err(ApiError::new(
            crate::api::Code::PayloadTooLarge,
            format!("{what} is {size} bytes serialised; the limit is {limit}"),
        ));
    }
    Ok(())
}

/// Finds a tenant the caller may read: 404 if absent; 401/403 for a private one it may not.
async fn readable(
    app: &App,
    caller: &Identity,
    id: &str,
) -> Result<Arc<crate::snapshot::TenantRuntime>, ApiError> {
    valid_id(id)?;
    let t = crate::tenancy::find(app, id)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found(format!("no tenant {id:?}")))?;
    if caller.may_read(&t.config) {
        return Ok(t);
    }
    Err(if caller.is_authenticated() {
        ApiError::forbidden(format!("tenant {id:?} belongs to someone else"))
    } else {
        ApiError::unauthorized(format!(
            "tenant {id:?} is private: send its owner's API key"
        ))
    })
}

/// Why a caller may not write a tenant, if it may not.
fn writable(caller: &Identity, t: &TenantConfig) -> Result<(), ApiError> {
    if !caller.may_read(t) {
        return Err(ApiError::forbidden(format!(
            "tenant {:?} belongs to someone else",
            t.tenant_id
        )));
    }
    if t.read_only() {
        let by = match t.source {
            ConfigSource::Kubernetes => "Kubernetes",
            ConfigSource::Manifest | ConfigSource::Api => "a manifest file",
        };
        return Err(ApiError::conflict(format!(
            "tenant {:?} is managed by {by} ({}); change it there",
            t.tenant_id, t.origin
        )));
    }
    if !caller.owns(t) {
        return Err(ApiError::forbidden(format!(
            "only the owner of tenant {:?} (or an admin) may change it",
            t.tenant_id
        )));
    }
    Ok(())
}

/// Read-modify-write of one tenant document without lost updates; returns the new document
/// and version once this process serves it.
async fn modify(
    app: &App,
    caller: &Identity,
    id: &str,
    change: impl Fn(&mut TenantConfig) -> Result<(), ApiError>,
) -> Result<(TenantConfig, u64), ApiError> {
    valid_id(id)?;
    for _ in 0..8 {
        let (mut cfg, v) = app
            .stores
            .config
            .get_tenant(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no tenant {id:?}")))?;
        if !caller.may_read(&cfg) {
            return Err(if caller.is_authenticated() {
                ApiError::forbidden(format!("tenant {id:?} belongs to someone else"))
            } else {
                ApiError::unauthorized(format!(
                    "tenant {id:?} is private: send its owner's API key"
                ))
            });
        }
        writable(caller, &cfg)?;
        change(&mut cfg)?;
        let size = serde_json::to_vec(&cfg)
            .map(|b| b.len())
            .unwrap_or(usize::MAX);
        if size > MAX_TENANT_BYTES {
            return Err(ApiError::new(
                crate::api::Code::PayloadTooLarge,
                format!(
                    "tenant {id:?} would be {size} bytes serialised; the limit is {MAX_TENANT_BYTES}"
                ),
            ));
        }
        if let Some(nv) = app
            .stores
            .config
            .put_tenant_checked(&cfg, understudy_core::Expect::Version(v))
            .await?
        {
            app.snapshot.wait_for_version(nv, OWN_WRITE_WAIT).await;
            return Ok((cfg, nv));
        }
    }
    Err(ApiError::conflict(format!(
        "tenant {id:?} is being changed concurrently; retry"
    )))
}

#[utoipa::path(get, path = "/public/tenants", tag = "tenants",
    responses((status = 200, body = TenantList), (status = 401, body = crate::api::ErrorBody)))]
/// Lists tenants: anonymous callers see global ones; logged-in callers also their private ones.
pub async fn list_tenants(State(app): State<App>, Caller(caller): Caller) -> Response {
    let snap = app.snapshot.load();
    let mut tenants: Vec<TenantView> = snap
        .tenants
        .values()
        .filter(|t| caller.may_read(&t.config))
        .map(|t| view(&t.config, t.version))
        .collect();
    tenants.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
    axum::Json(TenantList { tenants }).into_response()
}

#[utoipa::path(post, path = "/public/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = TenantWritten), (status = 400, body = crate::api::ErrorBody),
        (status = 401, body = crate::api::ErrorBody), (status = 403, body = crate::api::ErrorBody),
        (status = 409, body = crate::api::ErrorBody), (status = 413, body = crate::api::ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
/// Creates a tenant, private to the creator unless an admin asks for global.
pub async fn create_tenant(
    State(app): State<App>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<Response, ApiError> {
    let id = caller.writer(&app)?.clone();
    valid_id(&body.tenant_id)?;
    if !id.in_scope(&body.tenant_id) {
        return Err(ApiError::forbidden("this key is scoped to another tenant"));
    }
    let visibility = body.visibility.unwrap_or(Visibility::Private);
    if visibility == Visibility::Global && !id.is_admin() {
        return Err(ApiError::forbidden(
            "only admins create global tenants; omit visibility for a private one",
        ));
    }
    let state = body
        .state
        .unwrap_or_else(|| Value::Object(Default::default()));
    let settings = body
        .settings
        .unwrap_or_else(|| Value::Object(Default::default()));
    check_size("state", &state, MAX_STATE_BYTES)?;
    check_size("settings", &settings, MAX_SETTINGS_BYTES)?;
    let cfg = TenantConfig {
        tenant_id: body.tenant_id.clone(),
        visibility,
        owner: id.subject.clone(),
        state,
        settings,
        default_response: body.default_response,
        scenarios: vec![],
        chaos: None,
        source: ConfigSource::Api,
        origin: "public API".into(),
    };
    let v = app
        .stores
        .config
        .put_tenant_checked(&cfg, understudy_core::Expect::Absent)
        .await?
        .ok_or_else(|| ApiError::conflict(format!("tenant id {:?} is taken", cfg.tenant_id)))?;
    app.snapshot.wait_for_version(v, OWN_WRITE_WAIT).await;
    Ok((
        StatusCode::CREATED,
        axum::Json(TenantWritten {
            tenant: view(&cfg, v),
            version: v,
        }),
    )
        .into_response())
}

#[utoipa::path(get, path = "/public/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, body = TenantView), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
        (status = 403, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody)))]
/// One tenant, with its state.
pub async fn get_tenant(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let t = readable(&app, &caller, &id).await?;
    Ok(axum::Json(view(&t.config, t.version)).into_response())
}

#[utoipa::path(delete, path = "/public/tenants/{id}", tag = "tenants", params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, body = Done), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
        (status = 403, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
/// Deletes a tenant with its scenarios and chaos.
pub async fn delete_tenant(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = caller.writer(&app)?.clone();
    valid_id(&id)?;
    let (cfg, checked) = app
        .stores
        .config
        .get_tenant(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no tenant {id:?}")))?;
    writable(&who, &cfg)?;
    // Only the document just checked: if it changed meanwhile (a new owner, a manifest), refuse.
    let v = app
        .stores
        .config
        .delete_tenant_checked(&id, understudy_core::Expect::Version(checked))
        .await?
        .ok_or_else(|| {
            ApiError::conflict(format!("tenant {id:?} changed while being deleted; retry"))
        })?;
    // A tenant created later under the same id starts from zero.
    if let Err(e) = app.stores.purge_tenant(&id).await {
        tracing::warn!(error = %e, tenant = %id, "could not purge a deleted tenant's counters");
    }
    app.snapshot.wait_for_version(v, OWN_WRITE_WAIT).await;
    Ok(axum::Json(Done {
        tenant_id: id,
        result: "deleted".into(),
        version: v,
    })
    .into_response())
}

#[utoipa::path(put, path = "/public/tenants/{id}/state", tag = "tenants", params(("id" = String, Path, description = "tenant id")),
    request_body = StateBody,
    responses((status = 200, body = TenantWritten), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
        (status = 403, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody),
        (status = 413, body = crate::api::ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
/// Replaces a tenant's state.
pub async fn put_state(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<StateBody>,
) -> Result<Response, ApiError> {
    let who = caller.writer(&app)?.clone();
    check_size("state", &body.state, MAX_STATE_BYTES)?;
    let (cfg, v) = modify(&app, &who, &id, |c| {
        c.state = body.state.clone();
        Ok(())
    })
    .await?;
    Ok(axum::Json(TenantWritten {
        tenant: view(&cfg, v),
        version: v,
    })
    .into_response())
}

#[utoipa::path(get, path = "/public/tenants/{id}/settings", tag = "tenants", params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, body = SettingsView), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
        (status = 403, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody)))]
/// A tenant's settings.
pub async fn get_settings(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let t = readable(&app, &caller, &id).await?;
    Ok(axum::Json(SettingsView {
        tenant_id: id,
        settings: t.config.settings.clone(),
        version: t.version,
    })
    .into_response())
}

#[utoipa::path(patch, path = "/public/tenants/{id}/settings", tag = "tenants", params(("id" = String, Path, description = "tenant id")),
    request_body(content = Object, description = "a JSON merge patch (RFC 7396)", content_type = "application/json"),
    responses((status = 200, body = SettingsView), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
        (status = 403, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody),
        (status = 413, body = crate::api::ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
/// Merge-patches a tenant's settings (RFC 7396: `null` removes a key).
pub async fn patch_settings(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let who = caller.writer(&app)?.clone();
    if !patch.is_object() {
        return Err(ApiError::invalid(
            "a settings merge patch must be a JSON object",
        ));
    }
    let (cfg, v) = modify(&app, &who, &id, |c| {
        let mut next = c.settings.clone();
        json_patch::merge(&mut next, &patch);
        check_size("settings", &next, MAX_SETTINGS_BYTES)?;
        c.settings = next;
        Ok(())
    })
    .await?;
    Ok(axum::Json(SettingsView {
        tenant_id: id,
        settings: cfg.settings,
        version: v,
    })
    .into_response())
}

#[utoipa::path(post, path = "/public/tenants/{id}/reset", tag = "tenants", params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, body = Done), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
        (status = 403, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
/// A clean slate between test cases: clears the tenant's rate-limit windows and deterministic
/// fault counters (and, as those surfaces land, its sessions and calls). Allowed on read-only
/// tenants too: it changes run-time state, not configuration.
pub async fn reset_tenant(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let who = caller.writer(&app)?.clone();
    let t = readable(&app, &who, &id).await?;
    let unowned_global = t.config.visibility == Visibility::Global && t.config.owner.is_none();
    if !(who.owns(&t.config) || (unowned_global && who.in_scope(&id))) {
        return Err(ApiError::forbidden(format!(
            "only the owner of tenant {id:?} (or an admin) may reset it"
        )));
    }
    app.stores.runtime.purge_tenant(&id).await?;
    app.chaos.reset_local(&id);
    Ok(axum::Json(Done {
        tenant_id: id,
        result: "reset".into(),
        version: app.snapshot.load().version,
    })
    .into_response())
}

#[utoipa::path(get, path = "/public/tenants/{id}/scenarios", tag = "scenarios", params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, body = ScenarioList), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
        (status = 403, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody)))]
/// A tenant's scenarios, in creation order.
pub async fn list_scenarios(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let t = readable(&app, &caller, &id).await?;
    let scenarios = t
        .config
        .scenarios
        .iter()
        .map(|s| ScenarioBody::from_spec(&s.id, &s.spec))
        .collect();
    Ok(axum::Json(ScenarioList { scenarios }).into_response())
}

#[utoipa::path(post, path = "/public/tenants/{id}/scenarios", tag = "scenarios", params(("id" = String, Path, description = "tenant id")),
    request_body = ScenarioBody,
    responses((status = 201, body = ScenarioWritten), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
        (status = 403, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody),
        (status = 413, body = crate::api::ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
/// Adds a scenario (validated like the CRD: a bad `tool_input_schema` is refused with the reason).
pub async fn add_scenario(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    let who = caller.writer(&app)?.clone();
    let spec = scenario_body(body)?.into_spec(&id);
    refuse(model::validate_scenario(&spec))?;
    let sid = format!("sc_{}", uuid::Uuid::now_v7().simple());
    let (_, v) = modify(&app, &who, &id, |c| {
        if c.scenarios.len() >= MAX_SCENARIOS {
            return Err(ApiError::new(
                crate::api::Code::PayloadTooLarge,
                format!("tenant {id:?} already has {MAX_SCENARIOS} scenarios, the limit"),
            ));
        }
        c.scenarios.push(ScenarioConfig {
            id: sid.clone(),
            spec: spec.clone(),
        });
        Ok(())
    })
    .await?;
    let scenario = ScenarioBody::from_spec(&sid, &spec);
    Ok((
        StatusCode::CREATED,
        axum::Json(ScenarioWritten {
            scenario,
            version: v,
        }),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/public/tenants/{id}/scenarios/{sid}", tag = "scenarios",
    params(("id" = String, Path, description = "tenant id"), ("sid" = String, Path, description = "scenario id")),
    responses((status = 200, body = Done), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
        (status = 403, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
/// Deletes one scenario.
pub async fn delete_scenario(
    State(app): State<App>,
    caller: Caller,
    Path((id, sid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let who = caller.writer(&app)?.clone();
    let (_, v) = modify(&app, &who, &id, |c| {
        let before = c.scenarios.len();
        c.scenarios.retain(|s| s.id != sid);
        if c.scenarios.len() == before {
            return Err(ApiError::not_found(format!(
                "tenant {id:?} has no scenario {sid:?}"
            )));
        }
        Ok(())
    })
    .await?;
    Ok(axum::Json(Done {
        tenant_id: id,
        result: "deleted".into(),
        version: v,
    })
    .into_response())
}

#[utoipa::path(get, path = "/public/tenants/{id}/chaos", tag = "chaos", params(("id" = String, Path, description = "tenant id")),
    responses((status = 200, body = ChaosView), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
        (status = 403, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody)))]
/// The chaos profile in force.
pub async fn get_chaos(
    State(app): State<App>,
    Caller(caller): Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let t = readable(&app, &caller, &id).await?;
    let chaos = t.config.chaos.clone().unwrap_or_default();
    Ok(axum::Json(ChaosView {
        tenant_id: id,
        chaos: ChaosBody::from_spec(&chaos),
        version: t.version,
    })
    .into_response())
}

#[utoipa::path(put, path = "/public/tenants/{id}/chaos", tag = "chaos", params(("id" = String, Path, description = "tenant id")),
    request_body = ChaosBody,
    responses((status = 200, body = ChaosView), (status = 400, body = crate::api::ErrorBody), (status = 401, body = crate::api::ErrorBody),
        (status = 403, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody)),
    security(("api_key" = []), ("bearer" = [])))]
/// Sets the chaos profile (`profile: none` turns it off).
pub async fn put_chaos(
    State(app): State<App>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ChaosBody>,
) -> Result<Response, ApiError> {
    let who = caller.writer(&app)?.clone();
    let spec = body.into_spec(&id);
    refuse(model::validate_chaos(&spec))?;
    let (cfg, v) = modify(&app, &who, &id, |c| {
        c.chaos = (spec.profile != ChaosKind::None).then(|| spec.clone());
        Ok(())
    })
    .await?;
    let chaos = cfg.chaos.unwrap_or_default();
    Ok(axum::Json(ChaosView {
        tenant_id: id,
        chaos: ChaosBody::from_spec(&chaos),
        version: v,
    })
    .into_response())
}
