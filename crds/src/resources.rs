//! The custom resources (API group `understudy.dev`, version `v1alpha1`).
//!
//! These Rust types are the single source of truth: the CRD YAML is generated from them, the
//! manifest loader deserialises them, and the operator watches them.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Any JSON object, kept as written (`x-kubernetes-preserve-unknown-fields`).
fn free_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// Any JSON value (object, array, string, number, boolean), kept as written.
fn free_value(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"x-kubernetes-preserve-unknown-fields": true})
}

/// A list of arbitrary JSON objects (MCP content blocks).
fn free_object_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
    })
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Who may use a tenant.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Anyone may call its data plane and read it.
    #[default]
    Global,
    /// Only its `owner` (and admins) may.
    Private,
}

/// A Tenant: one isolated mock world (its scenarios, state, settings and chaos), addressed by
/// `X-Tenant-ID: <tenantId>` or the `/t/<tenantId>/` path prefix.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "understudy.dev",
    version = "v1alpha1",
    kind = "Tenant",
    namespaced,
    status = "TenantStatus",
    shortname = "ust",
    category = "understudy",
    printcolumn = r#"{"name":"Tenant ID","type":"string","jsonPath":".spec.tenantId"}"#,
    printcolumn = r#"{"name":"Visibility","type":"string","jsonPath":".spec.visibility"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Scenarios","type":"integer","jsonPath":".status.scenarios"}"#,
    printcolumn = r#"{"name":"Chaos","type":"string","jsonPath":".status.chaos"}"#,
    printcolumn = r#"{"name":"Requests","type":"integer","jsonPath":".status.requests"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.visibility) || self.visibility != 'private' || (has(self.owner) && size(self.owner) > 0)"
).message("spec.owner is required when spec.visibility is private"))]
#[x_kube(validation = Rule::new(
    "!has(self.tenantId) || (self.tenantId != '.' && self.tenantId != '..')"
).message("spec.tenantId may not be '.' or '..': clients normalise them out of URLs"))]
pub struct TenantSpec {
    /// The value clients send as `X-Tenant-ID` (or in `/t/{tenantId}/`). Defaults to
    /// metadata.name; may contain `_`, which Kubernetes names may not. Pattern [A-Za-z0-9_.-]{1,64}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,64}$"))]
    pub tenant_id: Option<String>,
    /// `global` (anyone may use it) or `private` (only `owner` and admins).
    #[serde(default)]
    pub visibility: Visibility,
    /// The identity (API key identity or OIDC `sub`) that owns a private tenant. Required when
    /// visibility is private.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Free-form JSON mock state, exposed to MCP clients as resource `understudy://tenant/state`.
    #[serde(default = "empty_object")]
    #[schemars(schema_with = "free_object")]
    pub state: Value,
    /// Free-form settings; the gateway reads stream_chunk_chars, stream_ttft_ms,
    /// stream_chunk_delay_ms, stream_jitter_ms, max_tool_results, models, embedding_dimensions,
    /// instructions and channel_tools. Unknown keys are kept and ignored.
    #[serde(default = "empty_object")]
    #[schemars(schema_with = "free_object")]
    pub settings: Value,
    /// The answer text when no scenario matches (otherwise a fixed sentence naming the tenant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_response: Option<String>,
}

/// Whether any or all keywords must occur in the user's text.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    /// At least one keyword occurs.
    #[default]
    Any,
    /// Every keyword occurs.
    All,
}

impl MatchMode {
    fn is_any(&self) -> bool {
        *self == MatchMode::Any
    }
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

/// A Scenario: what a tenant's mock LLM answers to matching user text, and optionally an MCP tool
/// (with the arguments the mock LLM calls it with and the data the tool returns).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "understudy.dev",
    version = "v1alpha1",
    kind = "Scenario",
    namespaced,
    status = "ScenarioStatus",
    shortname = "uss",
    category = "understudy",
    printcolumn = r#"{"name":"Tenant","type":"string","jsonPath":".spec.tenantRef"}"#,
    printcolumn = r#"{"name":"Tool","type":"string","jsonPath":".spec.toolName"}"#,
    printcolumn = r#"{"name":"Priority","type":"integer","jsonPath":".spec.priority"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Hits","type":"integer","jsonPath":".status.hits"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioSpec {
    /// The metadata.name of a Tenant in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub tenant_ref: String,
    /// Case-insensitive substrings looked for in the most recent user text. A scenario without
    /// keywords never answers an LLM request (it only serves its tool).
    #[serde(default)]
    pub keywords: Vec<String>,
    /// `any` (default): one keyword suffices; `all`: every keyword must occur.
    #[serde(default, skip_serializing_if = "MatchMode::is_any")]
    #[serde(rename = "match")]
    pub match_mode: MatchMode,
    /// Among matching scenarios the highest priority wins (default 0).
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    #[schemars(extend("default" = 0))]
    pub priority: i32,
    /// The LLM answer text (at most 1 MiB).
    #[serde(default)]
    #[schemars(length(max = 1048576))]
    pub response: String,
    /// Exposes an MCP tool of this name; the mock LLM calls it when a request offers it.
    /// Pattern [A-Za-z0-9_.-]{1,128}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9_.-]{1,128}$"))]
    pub tool_name: Option<String>,
    /// The tool's description in tools/list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_description: Option<String>,
    /// JSON Schema of the tool's arguments (default `{type: object}`); tools/call validates
    /// against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object_opt")]
    pub tool_input_schema: Option<Value>,
    /// The arguments the mock LLM passes when it calls this tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object_opt")]
    pub tool_arguments: Option<Value>,
    /// The scenario applies to tools/call only when the call's arguments contain this subset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object_opt")]
    pub tool_when: Option<Value>,
    /// What tools/call returns (rendered as JSON text, and as structuredContent when an object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_value_opt")]
    pub tool_data: Option<Value>,
    /// Explicit MCP content blocks (text, image, audio, resource) instead of toolData as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object_list_opt")]
    pub tool_content: Option<Vec<Value>>,
    /// tools/call returns `isError: true` with this text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_error: Option<String>,
    /// Listed as the tool's outputSchema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object_opt")]
    pub tool_output_schema: Option<Value>,
    /// Listed as the tool's annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_object_opt")]
    pub tool_annotations: Option<Value>,
    /// The LLM answer is this JSON (serialised) instead of `response`, for structured outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_value_opt")]
    pub response_json: Option<Value>,
    /// Applies only when the conversation holds exactly this many user messages with text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub turn: Option<u32>,
}

fn free_object_opt(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    free_object(g)
}
fn free_value_opt(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    free_value(g)
}
fn free_object_list_opt(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    free_object_list(g)
}

/// The fault a ChaosProfile injects.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChaosKind {
    /// Off.
    #[default]
    None,
    /// At most `limit` requests per `windowSeconds` per tenant, counted across all pods.
    RateLimit,
    /// Answer `statusCode` with the provider's error.
    ServerError,
    /// Wait `latencyMs` before the first byte (streams: before the first event).
    Latency,
    /// A stream stops after `afterChunks` events with no terminal event.
    StreamCut,
    /// After `afterChunks` events one event carries invalid JSON, then the stream goes on.
    MalformedStream,
}

impl ChaosKind {
    /// The name used in manifests, metrics and audit.
    pub fn as_str(&self) -> &'static str {
        match self {
            ChaosKind::None => "none",
            ChaosKind::RateLimit => "rate_limit",
            ChaosKind::ServerError => "server_error",
            ChaosKind::Latency => "latency",
            ChaosKind::StreamCut => "stream_cut",
            ChaosKind::MalformedStream => "malformed_stream",
        }
    }
}

/// The traffic surfaces chaos can apply to.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Surface {
    /// OpenAI and Anthropic APIs.
    Llm,
    /// MCP transports and the execute API.
    Mcp,
    /// Channels.
    Channels,
}

fn default_probability() -> f64 {
    1.0
}
fn default_surfaces() -> Vec<Surface> {
    vec![Surface::Llm, Surface::Mcp, Surface::Channels]
}
fn default_status_code() -> u16 {
    500
}
fn default_window() -> u64 {
    60
}
fn default_after_chunks() -> u32 {
    3
}

/// A ChaosProfile: how a tenant misbehaves. Exactly one is in force per tenant (the oldest).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "understudy.dev",
    version = "v1alpha1",
    kind = "ChaosProfile",
    namespaced,
    status = "ChaosProfileStatus",
    shortname = "usc",
    category = "understudy",
    printcolumn = r#"{"name":"Tenant","type":"string","jsonPath":".spec.tenantRef"}"#,
    printcolumn = r#"{"name":"Profile","type":"string","jsonPath":".spec.profile"}"#,
    printcolumn = r#"{"name":"Probability","type":"number","jsonPath":".status.probability"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.every) || self.every != 1")
    .message("spec.every must be 0 (off) or at least 2"))]
#[x_kube(validation = Rule::new("!has(self.statusCode) || self.statusCode in [500, 502, 503, 529]")
    .message("spec.statusCode must be 500, 502, 503 or 529"))]
pub struct ChaosProfileSpec {
    /// The metadata.name of a Tenant in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub tenant_ref: String,
    /// none | rate_limit | server_error | latency | stream_cut | malformed_stream.
    #[serde(default)]
    pub profile: ChaosKind,
    /// Share of requests affected, 0..1 (not used by rate_limit, nor when failFirst or every is set).
    #[serde(default = "default_probability")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub probability: f64,
    /// The surfaces affected (default all).
    #[serde(default = "default_surfaces")]
    pub surfaces: Vec<Surface>,
    /// latency: milliseconds before the first byte (at most 600000).
    #[serde(default)]
    #[schemars(range(max = 600_000))]
    pub latency_ms: u64,
    /// server_error: 500, 502, 503 or 529.
    #[serde(default = "default_status_code")]
    pub status_code: u16,
    /// rate_limit: requests allowed per window per tenant (0 refuses every request).
    #[serde(default)]
    pub limit: u64,
    /// rate_limit and failFirst: the window length; windows are aligned to multiples of it.
    #[serde(default = "default_window")]
    #[schemars(range(min = 1, max = 31_536_000))]
    pub window_seconds: u64,
    /// stream_cut, malformed_stream: how many SSE events go out first.
    #[serde(default = "default_after_chunks")]
    pub after_chunks: u32,
    /// Deterministic: only the first N requests in each window fail.
    #[serde(default)]
    pub fail_first: u64,
    /// Deterministic: only every Nth request fails (N ≥ 2).
    #[serde(default)]
    pub every: u64,
}

impl Default for ChaosProfileSpec {
    fn default() -> Self {
        ChaosProfileSpec {
            tenant_ref: String::new(),
            profile: ChaosKind::None,
            probability: default_probability(),
            surfaces: default_surfaces(),
            latency_ms: 0,
            status_code: default_status_code(),
            limit: 0,
            window_seconds: default_window(),
            after_chunks: default_after_chunks(),
            fail_first: 0,
            every: 0,
        }
    }
}

/// A status condition (the `Ready` condition and its reason).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Always `Ready` for now.
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    /// Synced, TenantNotFound, DuplicateTenantId, InvalidSchema, Superseded, StoreUnavailable, …
    #[serde(default)]
    pub reason: String,
    /// Human-readable detail.
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time of the last status change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The generation the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// What the operator observed of a Tenant, and the traffic the gateways saw.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Ready condition.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Scenarios in force.
    #[serde(default)]
    pub scenarios: u32,
    /// Distinct tool names exposed over MCP.
    #[serde(default)]
    pub tools: u32,
    /// The chaos profile in force (`none` when there is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chaos: Option<String>,
    /// Data-plane requests served (all gateways).
    #[serde(default)]
    pub requests: u64,
    /// LLM requests no scenario matched.
    #[serde(default)]
    pub unmatched: u64,
    /// RFC 3339 time of the latest request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request_time: Option<String>,
}

/// What the operator observed of a Scenario.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Ready condition.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Requests this scenario answered (all gateways).
    #[serde(default)]
    pub hits: u64,
}

/// What the operator observed of a ChaosProfile.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChaosProfileStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Ready condition (`Superseded` when an older profile of the tenant is in force).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The share of requests the profile affects, as the gateways apply it: `spec.probability`
    /// (default 1), or absent where the profile does not use it (none, rate_limit, failFirst,
    /// every), so the PROBABILITY column is blank there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
}
