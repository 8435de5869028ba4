//! The state model: one [`TenantConfig`] document per tenant, which every gateway serves from.
//!
//! [`build`] turns resources (from manifests or Kubernetes) into these documents. It does no I/O,
//! so the operator, the embedded loader, the `--manifests` seeder and the tests share it, and it
//! holds every rule that admission cannot express.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::resources::{ChaosKind, ChaosProfileSpec, ScenarioSpec, TenantSpec, Visibility};

/// Where a tenant's configuration comes from; decides whether the public API may change it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ConfigSource {
    /// A manifest file loaded by the gateway (`--manifests`): read-only through the API.
    Manifest,
    /// A custom resource reconciled by the operator: read-only through the API.
    Kubernetes,
    /// Created through the public API.
    Api,
}

/// One scenario in force, with its stable id (`namespace/name` for resources, `sc_…` for API ones).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ScenarioConfig {
    /// `namespace/name` or a generated `sc_…` id.
    pub id: String,
    /// The scenario as written (camelCase fields).
    #[serde(flatten)]
    pub spec: ScenarioSpec,
}

/// Everything a gateway needs to serve one tenant. Stored as one JSON document per tenant, so a
/// write is one atomic replacement and readers never see half a change.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantConfig {
    /// The `X-Tenant-ID` value.
    pub tenant_id: String,
    /// global | private.
    #[serde(default)]
    pub visibility: Visibility,
    /// The owner identity of a private tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Free-form mock state.
    #[serde(default)]
    pub state: Value,
    /// Free-form settings (see `Settings` in the gateway for the keys it reads).
    #[serde(default)]
    pub settings: Value,
    /// The answer when no scenario matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_response: Option<String>,
    /// Scenarios in creation order (document order for manifests): the last tie-breaker.
    #[serde(default)]
    pub scenarios: Vec<ScenarioConfig>,
    /// The chaos profile in force, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chaos: Option<ChaosProfileSpec>,
    /// Who wrote it.
    pub source: ConfigSource,
    /// Human-readable origin: `file.yaml` for manifests, `namespace/name` for resources.
    #[serde(default)]
    pub origin: String,
}

impl TenantConfig {
    /// Tenants from manifests or Kubernetes cannot be changed through the public API.
    pub fn read_only(&self) -> bool {
        self.source != ConfigSource::Api
    }
}

/// A problem found while building configuration, positioned for the person who wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where: `path/to/file.yaml, document 3 (Scenario shop/invoices)` or `namespace/name`.
    pub origin: String,
    /// The field, as a path (`spec.toolInputSchema`).
    pub field: String,
    /// The condition reason a controller reports (TenantNotFound, DuplicateTenantId, InvalidSchema, Invalid).
    pub reason: &'static str,
    /// What is wrong, and what is expected.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.origin, self.field, self.message)
    }
}

/// One resource to build from: its position, namespace, name and spec.
#[derive(Clone, Debug)]
pub struct Res<T> {
    /// Where it came from (file and document, or namespace/name).
    pub origin: String,
    /// Its namespace (`default` when a manifest names none).
    pub namespace: String,
    /// Its metadata.name.
    pub name: String,
    /// Its spec.
    pub spec: T,
}

/// The outcome of [`build`].
#[derive(Clone, Debug, Default)]
pub struct BuildReport {
    /// One document per valid tenant, in input order.
    pub tenants: Vec<TenantConfig>,
    /// Everything refused, each with its position.
    pub problems: Vec<Problem>,
    /// ChaosProfiles not in force because an older one of the same tenant is (origins).
    pub superseded: Vec<String>,
}

/// Is `id` a valid tenant id (`[A-Za-z0-9_.-]{1,64}`, and not `.` or `..`, which clients
/// normalise out of URLs so that `/t/{id}/` could never reach them)?
pub fn valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Is `name` a valid MCP tool name (`[A-Za-z0-9_.-]{1,128}`)?
pub fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Field-level checks of a tenant spec: `(field, reason, message)`.
pub fn validate_tenant(spec: &TenantSpec, tenant_id: &str) -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    if !valid_tenant_id(tenant_id) {
        out.push((
            "spec.tenantId".into(),
            "Invalid",
            format!("tenant id {tenant_id:?} must match [A-Za-z0-9_.-]{{1,64}}"),
        ));
    }
    if spec.visibility == Visibility::Private && spec.owner.as_deref().unwrap_or("").is_empty() {
        out.push((
            "spec.owner".into(),
            "Invalid",
            "owner is required when visibility is private".into(),
        ));
    }
    if !spec.state.is_object() {
        out.push((
            "spec.state".into(),
            "Invalid",
            "state must be a JSON object".into(),
        ));
    }
    if !spec.settings.is_object() {
        out.push((
            "spec.settings".into(),
            "Invalid",
            "settings must be a JSON object".into(),
        ));
    }
    out
}

/// Largest scenario answer content, in bytes: `response`, and each of `responseJson`,
/// `toolArguments` and `toolData` serialised. Below the gateways' per-answer limit
/// (`--max-answer-bytes`, 8 MiB by default), so that one answer always fits.
pub const MAX_SCENARIO_CONTENT_BYTES: usize = 1024 * 1024;

/// Field-level checks of a scenario spec (shared with the public API): `(field, reason, message)`.
pub fn validate_scenario(spec: &ScenarioSpec) -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    for (i, k) in spec.keywords.iter().enumerate() {
        if k.trim().is_empty() {
            out.push((
                format!("spec.keywords[{i}]"),
                "Invalid",
                "keywords must not be empty".into(),
            ));
        }
    }
    if let Some(name) = &spec.tool_name
        && !valid_tool_name(name)
    {
        out.push((
            "spec.toolName".into(),
            "Invalid",
            format!("tool name {name:?} must match [A-Za-z0-9_.-]{{1,128}}"),
        ));
    }
    for (field, value) in [
        ("spec.toolInputSchema", &spec.tool_input_schema),
        ("spec.toolOutputSchema", &spec.tool_output_schema),
    ] {
        if let Some(schema) = value {
            if !schema.is_object() {
                out.push((
                    field.into(),
                    "InvalidSchema",
                    "must be a JSON Schema object".into(),
                ));
            } else {
                match jsonschema::meta::try_validate(schema) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => out.push((
                        field.into(),
                        "InvalidSchema",
                        format!("not a valid JSON Schema: {e}"),
                    )),
                    Err(e) => out.push((
                        field.into(),
                        "InvalidSchema",
                        format!(
                            "unsupported $schema (use a draft 4, 6, 7, 2019-09 or 2020-12 URI): {e}"
                        ),
                    )),
                }
            }
        }
    }
    for (field, value) in [
        ("spec.toolArguments", &spec.tool_arguments),
        ("spec.toolWhen", &spec.tool_when),
        ("spec.toolAnnotations", &spec.tool_annotations),
    ] {
        if let Some(v) = value
            && !v.is_object()
        {
            out.push((field.into(), "Invalid", "must be a JSON object".into()));
        }
    }
    if let Some(blocks) = &spec.tool_content {
        for (i, b) in blocks.iter().enumerate() {
            let t = b.get("type").and_then(Value::as_str).unwrap_or("");
            if !matches!(t, "text" | "image" | "audio" | "resource" | "resource_link") {
                out.push((
                    format!("spec.toolContent[{i}].type"),
                    "Invalid",
                    "must be text, image, audio, resource or resource_link".into(),
                ));
            }
        }
    }
    let too_big = |n: usize| n > MAX_SCENARIO_CONTENT_BYTES;
    if too_big(spec.response.len()) {
        out.push((
            "spec.response".into(),
            "TooLarge",
            format!(
                "{} bytes, over the limit of {MAX_SCENARIO_CONTENT_BYTES} bytes per answer",
                spec.response.len()
            ),
        ));
    }
    for (field, value) in [
        ("spec.responseJson", &spec.response_json),
        ("spec.toolArguments", &spec.tool_arguments),
        ("spec.toolData", &spec.tool_data),
    ] {
        let size = value
            .as_ref()
            .map_or(0, |v| serde_json::to_vec(v).map_or(0, |b| b.len()));
        if too_big(size) {
            out.push((
                field.into(),
                "TooLarge",
                format!(
                    "{size} bytes serialised, over the limit of {MAX_SCENARIO_CONTENT_BYTES} bytes per answer"
                ),
            ));
        }
    }
    if spec.turn == Some(0) {
        out.push((
            "spec.turn".into(),
            "Invalid",
            "turn counts user messages from 1".into(),
        ));
    }
    let tool_only = spec.tool_input_schema.is_some()
        || spec.tool_data.is_some()
        || spec.tool_arguments.is_some()
        || spec.tool_error.is_some();
    if tool_only && spec.tool_name.is_none() {
        out.push((
            "spec.toolName".into(),
            "Invalid",
            "tool fields are set but toolName is missing".into(),
        ));
    }
    out
}

/// Longest chaos window: one year.
pub const MAX_WINDOW_SECONDS: u64 = 31_536_000;

/// Field-level checks of a chaos profile spec: `(field, reason, message)`.
pub fn validate_chaos(spec: &ChaosProfileSpec) -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    if !(0.0..=1.0).contains(&spec.probability) || spec.probability.is_nan() {
        out.push((
            "spec.probability".into(),
            "Invalid",
            format!("probability {} must be between 0 and 1", spec.probability),
        ));
    }
    if spec.profile == ChaosKind::ServerError && !matches!(spec.status_code, 500 | 502 | 503 | 529)
    {
        out.push((
            "spec.statusCode".into(),
            "Invalid",
            format!(
                "statusCode {} must be 500, 502, 503 or 529",
                spec.status_code
            ),
        ));
    }
    if !(1..=MAX_WINDOW_SECONDS).contains(&spec.window_seconds) {
        out.push((
            "spec.windowSeconds".into(),
            "Invalid",
            format!("windowSeconds must be between 1 and {MAX_WINDOW_SECONDS} (one year)"),
        ));
    }
    if spec.every == 1 {
        out.push((
            "spec.every".into(),
            "Invalid",
            "every must be 0 (off) or at least 2; use probability 1 to fail every request".into(),
        ));
    }
    if spec.latency_ms > 600_000 {
        out.push((
            "spec.latencyMs".into(),
            "Invalid",
            "latencyMs must be at most 600000".into(),
        ));
    }
    out
}

fn push(
    problems: &mut Vec<Problem>,
    origin: &str,
    found: Vec<(String, &'static str, String)>,
) -> bool {
    let bad = !found.is_empty();
    problems.extend(found.into_iter().map(|(field, reason, message)| Problem {
        origin: origin.to_string(),
        field,
        reason,
        message,
    }));
    bad
}

/// Builds every tenant's document from resources. Invalid resources are left out and reported;
/// valid ones are unaffected by their neighbours' mistakes (a bad scenario does not take its
/// tenant down). Input order is creation order: it decides the chaos profile in force and the
/// last tie-breaker among scenarios.
pub fn build(
    tenants: &[Res<TenantSpec>],
    scenarios: &[Res<ScenarioSpec>],
    chaos: &[Res<ChaosProfileSpec>],
    source: ConfigSource,
) -> BuildReport {
    let mut report = BuildReport::default();
    // (namespace, name) → index in report.tenants
    let mut by_ref: HashMap<(&str, &str), usize> = HashMap::new();
    let mut ids: HashMap<String, String> = HashMap::new();
    for t in tenants {
        let tenant_id = t.spec.tenant_id.clone().unwrap_or_else(|| t.name.clone());
        if push(
            &mut report.problems,
            &t.origin,
            validate_tenant(&t.spec, &tenant_id),
        ) {
            continue;
        }
        if let Some(first) = ids.get(&tenant_id) {
            report.problems.push(Problem {
                origin: t.origin.clone(),
                field: "spec.tenantId".into(),
                reason: "DuplicateTenantId",
                message: format!("tenant id {tenant_id:?} is already claimed by {first}"),
            });
            continue;
        }
        if by_ref.contains_key(&(t.namespace.as_str(), t.name.as_str())) {
            report.problems.push(Problem {
                origin: t.origin.clone(),
                field: "metadata.name".into(),
                reason: "Invalid",
                message: format!("Tenant {}/{} is defined twice", t.namespace, t.name),
            });
            continue;
        }
        ids.insert(tenant_id.clone(), t.origin.clone());
        by_ref.insert(
            (t.namespace.as_str(), t.name.as_str()),
            report.tenants.len(),
        );
        report.tenants.push(TenantConfig {
            tenant_id,
            visibility: t.spec.visibility,
            owner: t.spec.owner.clone(),
            state: t.spec.state.clone(),
            settings: t.spec.settings.clone(),
            default_response: t.spec.default_response.clone(),
            scenarios: Vec::new(),
            chaos: None,
            source,
            origin: t.origin.clone(),
        });
    }
    let mut seen_scenarios: HashSet<(String, String)> = HashSet::new();
    for s in scenarios {
        if push(&mut report.problems, &s.origin, validate_scenario(&s.spec)) {
            continue;
        }
        let Some(&idx) = by_ref.get(&(s.namespace.as_str(), s.spec.tenant_ref.as_str())) else {
            report.problems.push(Problem {
                origin: s.origin.clone(),
                field: "spec.tenantRef".into(),
                reason: "TenantNotFound",
                message: format!(
                    "no valid Tenant named {:?} in namespace {:?}",
                    s.spec.tenant_ref, s.namespace
                ),
            });
            continue;
        };
        if !seen_scenarios.insert((s.namespace.clone(), s.name.clone())) {
            report.problems.push(Problem {
                origin: s.origin.clone(),
                field: "metadata.name".into(),
                reason: "Invalid",
                message: format!("Scenario {}/{} is defined twice", s.namespace, s.name),
            });
            continue;
        }
        report.tenants[idx].scenarios.push(ScenarioConfig {
            id: format!("{}/{}", s.namespace, s.name),
            spec: s.spec.clone(),
        });
    }
    for c in chaos {
        if push(&mut report.problems, &c.origin, validate_chaos(&c.spec)) {
            continue;
        }
        let Some(&idx) = by_ref.get(&(c.namespace.as_str(), c.spec.tenant_ref.as_str())) else {
            report.problems.push(Problem {
                origin: c.origin.clone(),
                field: "spec.tenantRef".into(),
                reason: "TenantNotFound",
                message: format!(
                    "no valid Tenant named {:?} in namespace {:?}",
                    c.spec.tenant_ref, c.namespace
                ),
            });
            continue;
        };
        let tenant = &mut report.tenants[idx];
        if tenant.chaos.is_some() {
            report.superseded.push(c.origin.clone());
        } else {
            tenant.chaos = Some(c.spec.clone());
        }
    }
    report
}

/// Summary counts used in status and logs: (scenarios, distinct tools).
pub fn counts(t: &TenantConfig) -> (usize, usize) {
    let tools: BTreeMap<&str, ()> = t
        .scenarios
        .iter()
        .filter_map(|s| s.spec.tool_name.as_deref().map(|n| (n, ())))
        .collect();
    (t.scenarios.len(), tools.len())
}

/// What an identity may do. Ordered: a higher role includes the lower ones.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads what it may see.
    #[default]
    Viewer,
    /// Also creates and changes tenants it owns.
    Editor,
    /// Everything, including minting and revoking keys.
    Admin,
}

impl Role {
    /// The lowercase name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

/// An API key as stored: never the plaintext, only its SHA-256.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Unique name (the handle for listing and revoking).
    pub name: String,
    /// The identity the key authenticates as (several keys may share one, for rotation).
    pub identity: String,
    /// What the key may do.
    pub role: Role,
    /// When set, the key acts on this tenant only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// RFC 3339; the key is refused from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// The identity that minted it.
    pub created_by: String,
    /// Hex SHA-256 of the plaintext.
    pub hash: String,
}
