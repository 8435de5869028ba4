//! The one MCP dispatcher: every transport (and later the hosted endpoint and the channel MCP
//! server) hands it parsed messages with a context, and renders what it returns.
//!
//! ```text
//!  transport ─► Ctx { tenant, revision, transport } + Message ─► handle ─► Option<Reply>
//!                                                                 (None: a notification)
//!  tools/call ─► audited (mcp::audit): one event per call, whatever the transport
//!  revision-specific shapes: tool fields per revision, validation errors as -32602 or as a
//!  tool result, 2026-07-28 result fields (resultType, ttlMs, cacheScope, serverInfo in _meta)
//! ```
//!
//! No I/O here: the tool engine answers from the snapshot, so the dispatcher is synchronous and
//! every transport pays only for its own plumbing.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::jsonrpc::{
    self, Body, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, METHOD_NOT_FOUND, Message,
    RESOURCE_NOT_FOUND,
};
use super::revision::Revision;
use crate::engine::tools::Call;
use crate::snapshot::TenantRuntime;
use crate::state::App;

/// The URI of the tenant-state resource.
pub const STATE_URI: &str = "understudy://tenant/state";

/// The `_meta` key of the protocol version (2026-07-28).
pub const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The `_meta` key of the client capabilities (2026-07-28).
pub const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// The `_meta` key of the server identity (2026-07-28).
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// The `_meta` key of a subscription id (2026-07-28).
pub const META_SUBSCRIPTION: &str = "io.modelcontextprotocol/subscriptionId";

/// Which transport a message came through (metrics, and what the server advertises).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `POST /mcp/message` without a session.
    Message,
    /// The legacy HTTP+SSE transport (`/mcp/sse` + `/mcp/message?sessionId=`).
    Sse,
    /// Streamable HTTP with a session (`/mcp`, `POST /`).
    Streamable,
    /// Streamable HTTP, sessionless 2026-07-28.
    Stateless,
    /// The hosted endpoint (`POST /api/v1/mcp`): API keys, one request, one answer.
    Hosted,
}

impl Transport {
    /// Its metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Message => "message",
            Transport::Sse => "sse",
            Transport::Streamable => "streamable",
            Transport::Stateless => "stateless",
            Transport::Hosted => "hosted",
        }
    }

    /// Whether the server can push `notifications/tools/list_changed` on this transport.
    fn pushes(self) -> bool {
        !matches!(self, Transport::Message | Transport::Hosted)
    }
}

/// What one message is handled with.
pub struct Ctx<'a> {
    /// The process state.
    pub app: &'a App,
    /// The tenant, from the snapshot.
    pub tenant: &'a Arc<TenantRuntime>,
    /// The revision spoken: negotiated for a session, per request for 2026-07-28, the default
    /// otherwise.
    pub revision: Revision,
    /// The transport.
    pub transport: Transport,
    /// The request's headers (links the server hands out are built on its host).
    pub headers: &'a http::HeaderMap,
    /// The session, on the legacy transport (streamable sessions are in the headers).
    pub session: Option<&'a str>,
    /// Who an in-process call (portal replay, try-it) is audited as.
    pub audit_as: Option<&'a super::audit::AuditAs>,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The JSON-RPC response.
    pub body: Value,
    /// The revision `initialize` negotiated (a session transport records it).
    pub negotiated: Option<Revision>,
}

impl Reply {
    pub(crate) fn of(body: Value) -> Reply {
        Reply {
            body,
            negotiated: None,
        }
    }

    /// The JSON-RPC error code, when the reply is an error.
    pub fn error_code(&self) -> Option<i64> {
        self.body.get("error")?.get("code")?.as_i64()
    }
}

/// The answer to a whole body.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyReply {
    /// Nothing to answer (notifications and responses only): HTTP 202.
    Accepted,
    /// One reply.
    One(Reply),
    /// A batch's replies.
    Batch(Vec<Value>),
}

/// Handles a whole body: batches only where the revision has them (refused with -32600
/// otherwise), and never an `initialize` inside one.
pub async fn handle_body(ctx: &Ctx<'_>, body: Body) -> BodyReply {
    match body {
        Body::Single(Err(e)) => BodyReply::One(Reply::of(e)),
        Body::Single(Ok(m)) => handle_any(ctx, m)
            .await
            .map_or(BodyReply::Accepted, BodyReply::One),
        Body::Batch(_) if !ctx.revision.batches() => BodyReply::One(Reply::of(jsonrpc::error(
            None,
            INVALID_REQUEST,
            format!(
                "Invalid Request: JSON-RPC batches are not part of protocol revision {}",
                ctx.revision
            ),
            None,
        ))),
        Body::Batch(items) => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    Err(e) => out.push(e),
                    Ok(Message::Request { id, method, .. }) if method == "initialize" => {
                        out.push(jsonrpc::error(
                            Some(&id),
                            INVALID_REQUEST,
                            "Invalid Request: initialize must not be part of a batch",
                            None,
                        ))
                    }
                    Ok(m) => {
                        if let Some(r) = handle_any(ctx, m).await {
                            out.push(r.body)
                        }
                    }
                }
            }
            if out.is_empty() {
                BodyReply::Accepted
            } else {
                BodyReply::Batch(out)
            }
        }
    }
}

/// Handles one message, tasks and channel tools included (they touch stores, so they are
/// awaited); a `tools/call` is audited.
pub async fn handle_any(ctx: &Ctx<'_>, msg: Message) -> Option<Reply> {
    super::audit::audited(ctx, msg, true).await
}

/// Handles one message with the tenant's own tools only (the hosted endpoint); a `tools/call`
/// is audited.
pub async fn handle_own(ctx: &Ctx<'_>, msg: Message) -> Option<Reply> {
    super::audit::audited(ctx, msg, false).await
}

/// [`handle_any`] without the audit.
pub(crate) async fn route_any(ctx: &Ctx<'_>, msg: Message) -> Option<Reply> {
    if super::channel_tools::wants(ctx, &msg) {
        super::channel_tools::handle(ctx, msg).await
    } else if super::tasks::wants(ctx, &msg) {
        super::tasks::handle(ctx, msg).await
    } else {
        handle(ctx, msg)
    }
}

/// Handles one message: `None` for notifications and responses.
pub fn handle(ctx: &Ctx<'_>, msg: Message) -> Option<Reply> {
    match msg {
        Message::Response => None,
        Message::Notification { method, .. } => {
            ctx.app.metrics.mcp_message(
                method_label(&method),
                ctx.transport.label(),
                ctx.revision.as_str(),
            );
            None
        }
        Message::Request { id, method, params } => {
            let reply = request(ctx, &id, &method, params.as_ref());
            // `initialize` is counted under the revision it negotiated.
            let revision = reply.negotiated.unwrap_or(ctx.revision);
            ctx.app.metrics.mcp_message(
                method_label(&method),
                ctx.transport.label(),
                revision.as_str(),
            );
            Some(reply)
        }
    }
}

/// The label of a method for metrics: known methods as themselves, anything else `other`.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "initialize",
        "notifications/initialized",
        "notifications/cancelled",
        "ping",
        "tools/list",
        "tools/call",
        "resources/list",
        "resources/read",
        "resources/templates/list",
        "prompts/list",
        "prompts/get",
        "logging/setLevel",
        "completion/complete",
        "server/discover",
        "subscriptions/listen",
    ];
    KNOWN
        .iter()
        .find(|k| **k == method)
        .copied()
        .unwrap_or("other")
}

/// Longest client text echoed in an error message (names, methods, URIs): an error never grows
/// with what the client sent.
const ECHO_MAX: usize = 128;

/// `text` cut to [`ECHO_MAX`] characters (with `…` when cut).
pub(crate) fn clip(text: &str) -> String {
    match text.char_indices().nth(ECHO_MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

pub(crate) fn ok(ctx: &Ctx<'_>, id: &Value, result: Value, cacheable: bool) -> Reply {
    Reply::of(jsonrpc::result(id, finish(ctx.revision, result, cacheable)))
}

/// The server's identity.
pub fn server_info() -> Value {
    json!({"name": "understudy", "version": env!("CARGO_PKG_VERSION")})
}

/// Adds what a 2026-07-28 result must carry (`resultType`, the server identity in `_meta`, and
/// `ttlMs`/`cacheScope` on cacheable results); earlier revisions get the result as is.
pub fn finish(revision: Revision, result: Value, cacheable: bool) -> Value {
    if !revision.stateless() {
        return result;
    }
    let mut o = match result {
        Value::Object(o) => o,
        other => return other,
    };
    o.insert("resultType".into(), json!("complete"));
    if cacheable {
        o.insert("ttlMs".into(), json!(0));
        o.insert("cacheScope".into(), json!("private"));
    }
    let meta = o
        .entry("_meta")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(m) = meta {
        m.insert(META_SERVER_INFO.into(), server_info());
    }
    Value::Object(o)
}

/// The capabilities advertised for `revision`.
fn capabilities(ctx: &Ctx<'_>, revision: Revision) -> Value {
    // The hosted endpoint (seed 002) and the channel server (seed 003) serve tools only.
    if ctx.transport == Transport::Hosted || ctx.tenant.channel_server {
        return json!({"tools": {"listChanged": false}});
    }
    let mut caps = json!({
        "tools": {"listChanged": ctx.transport.pushes()},
        "resources": {},
        "prompts": {},
        "logging": {},
        "completions": {},
    });
    if super::tasks::supported(revision) {
        if revision.stateless() {
            caps["extensions"] = json!({super::tasks::EXTENSION: {}});
        } else {
            caps["tasks"] = super::tasks::capability();
        }
    }
    caps
}

fn request(ctx: &Ctx<'_>, id: &Value, method: &str, params: Option<&Value>) -> Reply {
    let empty = Value::Object(Map::new());
    let params = params.unwrap_or(&empty);
    let stateless = ctx.revision.stateless();
    match method {
        "initialize" if !stateless => initialize(ctx, id, params),
        "server/discover" => discover(ctx, id),
        "ping" | "logging/setLevel" if !stateless => ok(ctx, id, json!({}), false),
        "tools/list" => {
            let mut tools: Vec<Value> = ctx
                .tenant
                .tools
                .list
                .iter()
                .map(|t| listing_for(ctx.revision, &t.listing))
                .collect();
            tools.extend(super::channel_tools::listings(ctx));
            ok(ctx, id, json!({"tools": tools}), true)
        }
        "tools/call" => call(ctx, id, params),
        "resources/list" => ok(
            ctx,
            id,
            json!({"resources": [{
                "uri": STATE_URI,
                "name": "tenant-state",
                "description": format!("The mock state of tenant '{}' (its manifest's spec.state).", ctx.tenant.id()),
                "mimeType": "application/json",
            }]}),
            true,
        ),
        "resources/templates/list" => ok(ctx, id, json!({"resourceTemplates": []}), true),
        "resources/read" => read(ctx, id, params),
        "prompts/list" => ok(ctx, id, json!({"prompts": []}), true),
        "prompts/get" => {
            let name = params.get("name").and_then(Value::as_str).unwrap_or("");
            Reply::of(jsonrpc::error(
                Some(id),
                INVALID_PARAMS,
                format!(
                    "Unknown prompt: '{}' (this server has no prompts)",
                    clip(name)
                ),
                None,
            ))
        }
        "completion/complete" => ok(
            ctx,
            id,
            json!({"completion": {"values": [], "total": 0, "hasMore": false}}),
            false,
        ),
        _ => Reply::of(jsonrpc::error(
            Some(id),
            METHOD_NOT_FOUND,
            format!("Method not found: {}", clip(method)),
            Some(Value::String(clip(method))),
        )),
    }
}

fn initialize(ctx: &Ctx<'_>, id: &Value, params: &Value) -> Reply {
    let negotiated = Revision::negotiate(params.get("protocolVersion").and_then(Value::as_str));
    let mut info = server_info();
    if ctx.tenant.channel_server {
        info["name"] = json!(super::channel_tools::SERVER_NAME);
    }
    if negotiated >= Revision::V2025_06_18 {
        info["title"] = json!(if ctx.tenant.channel_server {
            "Understudy channels"
        } else {
            "Understudy"
        });
    }
    let mut result = json!({
        "protocolVersion": negotiated.as_str(),
        "capabilities": capabilities(ctx, negotiated),
        "serverInfo": info,
    });
    if let Some(text) = &ctx.tenant.settings.instructions {
        result["instructions"] = json!(text);
    }
    Reply {
        body: jsonrpc::result(id, result),
        negotiated: Some(negotiated),
    }
}

fn discover(ctx: &Ctx<'_>, id: &Value) -> Reply {
    let mut result = json!({
        "supportedVersions": Revision::ALL.iter().rev().map(|r| r.as_str()).collect::<Vec<_>>(),
        "capabilities": capabilities(ctx, Revision::V2026_07_28),
    });
    if let Some(text) = &ctx.tenant.settings.instructions {
        result["instructions"] = json!(text);
    }
    // Discovery is answered in the 2026-07-28 shape whatever the transport.
    Reply::of(jsonrpc::result(
        id,
        finish(Revision::V2026_07_28, result, true),
    ))
}

/// A tool's listing with only the fields `revision` defines.
pub(crate) fn listing_for(revision: Revision, listing: &Value) -> Value {
    let mut l = listing.clone();
    if let Value::Object(o) = &mut l {
        if !revision.structured_output() {
            o.remove("outputSchema");
        }
        if !revision.tool_annotations() {
            o.remove("annotations");
        }
        if super::tasks::supported(revision) && !revision.stateless() {
            o.insert("execution".into(), json!({"taskSupport": "optional"}));
        }
    }
    l
}

fn call(ctx: &Ctx<'_>, id: &Value, params: &Value) -> Reply {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Reply::of(jsonrpc::error(
            Some(id),
            INVALID_PARAMS,
            "Invalid params: tools/call needs \"name\", a string",
            None,
        ));
    };
    let empty = Value::Object(Map::new());
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(a @ Value::Object(_)) => a,
        Some(_) => {
            return Reply::of(jsonrpc::error(
                Some(id),
                INVALID_PARAMS,
                "Invalid params: \"arguments\" must be an object",
                None,
            ));
        }
    };
    let tenant = ctx.tenant;
    match tenant.tools.call(&tenant.config.scenarios, name, arguments) {
        Call::Unknown => Reply::of(jsonrpc::error(
            Some(id),
            INVALID_PARAMS,
            format!("Unknown tool: {}", clip(name)),
            None,
        )),
        Call::Invalid(violations) => {
            let text = format!(
                "Invalid arguments for tool '{name}': {}",
                violations.join("; ")
            );
            // (`name` is a tool that exists: its length is bounded by the manifests.)
            if ctx.revision.validation_as_tool_error() {
                ok(
                    ctx,
                    id,
                    json!({"content": [{"type": "text", "text": text}], "isError": true}),
                    false,
                )
            } else {
                Reply::of(jsonrpc::error(
                    Some(id),
                    INVALID_PARAMS,
                    text,
                    Some(json!({"violations": violations})),
                ))
            }
        }
        Call::Answer { scenario, result } => {
            let scenario_id = tenant.config.scenarios[scenario].id.as_str();
            ctx.app.stats.record(tenant, Some(Some(scenario_id)));
            crate::audit::note(|n| n.scenario = Some(scenario_id.to_string()));
            // `structuredContent` goes to every revision (SPEC §4): clients of revisions before
            // 2025-06-18 ignore the extra field; plain JSON-RPC callers of `/mcp/message` (which
            // speaks 2025-03-26) read it.
            ok(ctx, id, result, false)
        }
    }
}

fn read(ctx: &Ctx<'_>, id: &Value, params: &Value) -> Reply {
    let uri = params.get("uri").and_then(Value::as_str).unwrap_or("");
    if uri != STATE_URI {
        // 2026-07-28 folds resource-not-found into invalid params.
        let code = if ctx.revision.stateless() {
            INVALID_PARAMS
        } else {
            RESOURCE_NOT_FOUND
        };
        return Reply::of(jsonrpc::error(
            Some(id),
            code,
            format!("Resource not found: {}", clip(uri)),
            Some(json!({"uri": clip(uri)})),
        ));
    }
    let text = match serde_json::to_string(&ctx.tenant.config.state) {
        Ok(t) => t,
        Err(e) => {
            return Reply::of(jsonrpc::error(
                Some(id),
                INTERNAL_ERROR,
                format!("Could not render the tenant state: {e}"),
                None,
            ));
        }
    };
    ok(
        ctx,
        id,
        json!({"contents": [{"uri": STATE_URI, "mimeType": "application/json", "text": text}]}),
        true,
    )
}
