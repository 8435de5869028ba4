//! The channel tools (SPEC §7.4, seed 003): `create_channel`, `delete_channel`,
//! `publish_message`, `create_read_grant`, `revoke_read_grant`, `get_channel` and
//! `read_channel_messages`, with the seed's required and optional parameters.
//!
//! ```text
//!  /channels/mcp, /channels/sse ─► the channel server (TenantRuntime::channel_server): these
//!                                  tools only; channels it creates belong to the tenant named
//!                                  by X-Tenant-ID or /t/{id}/, else to none
//!  a tenant's MCP with settings.channel_tools: true ─► its own tools, then these (a tenant tool
//!                                  of the same name wins); channels belong to the tenant
//! ```
//!
//! Each tool is a thin adapter over [`crate::channels`], as the REST routes are: the same
//! checks, limits and errors. A refusal is a tool error (`isError`) whose text starts with the
//! §7.3 code and whose `structuredContent` is the `{"error":{"code","message"}}` envelope.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::dispatch::{Ctx, Reply, Transport, clip, listing_for, ok};
use super::jsonrpc::{self, INVALID_PARAMS, Message};
use super::revision::Revision;
use crate::api::ApiError;
use crate::channels::{self as ops, CreateChannel, CreateGrant, DEFAULT_LIMIT, Publish};
use crate::snapshot::TenantRuntime;

/// The channel server's name (`serverInfo.name`, `/.well-known/mcp-server`).
pub const SERVER_NAME: &str = "understudy-channels";

/// The tools, in listing order.
pub const TOOLS: [&str; 7] = [
    "create_channel",
    "delete_channel",
    "publish_message",
    "create_read_grant",
    "revoke_read_grant",
    "get_channel",
    "read_channel_messages",
];

/// Whether `tenant`'s MCP offers the channel tools.
pub fn enabled(tenant: &TenantRuntime) -> bool {
    tenant.channel_server || tenant.settings.channel_tools
}

/// Whether `name` is a channel tool `tenant` offers (its own tool of that name wins).
/// The channel tools `tenant` offers: name, description, input schema.
pub fn catalog(tenant: &TenantRuntime) -> Vec<(&'static str, &'static str, Value)> {
    if !enabled(tenant) {
        return Vec::new();
    }
    definitions()
        .into_iter()
        .filter(|(name, _, _)| offered(tenant, name))
        .collect()
}

fn offered(tenant: &TenantRuntime, name: &str) -> bool {
    enabled(tenant) && TOOLS.contains(&name) && tenant.tools.get(name).is_none()
}

/// Whether `msg` is a call of a channel tool this context offers (the hosted endpoint serves
/// the tenant's own tools only, seed 002).
pub fn wants(ctx: &Ctx<'_>, msg: &Message) -> bool {
    if ctx.transport == Transport::Hosted {
        return false;
    }
    match msg {
        Message::Request { method, params, .. } if method == "tools/call" => params
            .as_ref()
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .is_some_and(|n| offered(ctx.tenant, n)),
        _ => false,
    }
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn integer(description: &str, minimum: u64, maximum: u64) -> Value {
    json!({"type": "integer", "description": description, "minimum": minimum, "maximum": maximum})
}

/// `(name, description, input schema)` of each tool.
fn definitions() -> Vec<(&'static str, &'static str, Value)> {
    let ttl = |what: &str| integer(what, 1, ops::MAX_TTL_SECONDS);
    let token = string("The channel's publish token (pub_…), returned once by create_channel.");
    let channel = string("The channel's id.");
    let schema = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required, "additionalProperties": false});
    vec![
        (
            "create_channel",
            "Create a channel. Returns it with its publish token (shown once) and its SSE URL.",
            schema(
                json!({
                    "name": string("The channel's name (1 to 128 characters)."),
                    "visibility": {"type": "string", "enum": ["public", "private"], "description": "public: anyone with the id reads it; private: reads need a read grant's token."},
                    "description": string("What the channel carries."),
                    "default_ttl_seconds": ttl("TTL of messages published without one."),
                }),
                &["name", "visibility"],
            ),
        ),
        (
            "delete_channel",
            "Delete an owned channel: reads stop and its SSE streams end.",
            schema(
                json!({"publish_token": token, "channel_id": channel}),
                &["publish_token", "channel_id"],
            ),
        ),
        (
            "publish_message",
            "Publish a payload (any JSON value) to an owned channel, with optional metadata and TTL.",
            schema(
                json!({
                    "publish_token": token,
                    "channel_id": channel,
                    "payload": {"description": "The message: any JSON value (strings are usual)."},
                    "metadata": {"type": "object", "description": "Metadata delivered with the message."},
                    "ttl_seconds": ttl("The message is never delivered after this many seconds."),
                }),
                &["publish_token", "channel_id", "payload"],
            ),
        ),
        (
            "create_read_grant",
            "Issue a read token (shown once) for a private channel.",
            schema(
                json!({
                    "publish_token": token,
                    "channel_id": channel,
                    "label": string("Who the grant is for."),
                    "expires_at": string("When the grant stops working (RFC 3339)."),
                }),
                &["publish_token", "channel_id"],
            ),
        ),
        (
            "revoke_read_grant",
            "Revoke a read grant by id: its token stops working and streams reading with it end.",
            schema(
                json!({
                    "publish_token": token,
                    "channel_id": channel,
                    "grant_id": string("The grant's id."),
                }),
                &["publish_token", "channel_id", "grant_id"],
            ),
        ),
        (
            "get_channel",
            "Get an owned channel's details.",
            schema(
                json!({"publish_token": token, "channel_id": channel}),
                &["publish_token", "channel_id"],
            ),
        ),
        (
            "read_channel_messages",
            "Read a channel's retained messages, oldest first (private channels need a read token).",
            schema(
                json!({
                    "channel_id": channel,
                    "read_token": string("A read grant's token (private channels)."),
                    "after_message_id": string("Only messages after this one."),
                    "limit": integer("Most messages returned (default 100).", 1, 1000),
                }),
                &["channel_id"],
            ),
        ),
    ]
}

/// The listings of the channel tools this context offers.
pub fn listings(ctx: &Ctx<'_>) -> Vec<Value> {
    let (tenant, revision) = (ctx.tenant, ctx.revision);
    if !enabled(tenant) || ctx.transport == Transport::Hosted {
        return Vec::new();
    }
    definitions()
        .into_iter()
        .filter(|(name, _, _)| offered(tenant, name))
        .map(|(name, description, schema)| {
            let mut l = listing_for(
                revision,
                &json!({"name": name, "description": description, "inputSchema": schema}),
            );
            // These run at once: no task support.
            if let Value::Object(o) = &mut l {
                o.remove("execution");
            }
            l
        })
        .collect()
}

/// `GET /.well-known/mcp-server`: the channel server described.
pub fn describe(base: &str) -> Value {
    let tools: Vec<Value> = definitions()
        .into_iter()
        .map(|(name, description, schema)| {
            json!({"name": name, "description": description, "inputSchema": schema})
        })
        .collect();
    json!({
        "name": SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "description": "Understudy's channel tools: create channels, publish, grant and revoke reads, read messages.",
        "endpoints": {
            "mcp": format!("{base}/channels/mcp"),
            "sse": format!("{base}/channels/sse"),
            "message": format!("{base}/channels/message"),
        },
        "transports": ["streamable-http", "sse", "json-rpc"],
        "protocolVersions": Revision::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        "capabilities": {"tools": {"listChanged": false}},
        "tools": tools,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Owned {
    publish_token: String,
    channel_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishArgs {
    publish_token: String,
    channel_id: String,
    #[serde(default)]
    payload: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantArgs {
    publish_token: String,
    channel_id: String,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeArgs {
    publish_token: String,
    channel_id: String,
    grant_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadArgs {
    channel_id: String,
    #[serde(default)]
    read_token: Option<String>,
    #[serde(default)]
    after_message_id: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// Why a call did not run.
enum Refusal {
    /// The arguments do not fit the schema.
    Arguments(String),
    /// The operation refused (the envelope).
    Api(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Api(e)
    }
}

fn args<T: DeserializeOwned>(arguments: &Value) -> Result<T, Refusal> {
    serde_path_to_error::deserialize(arguments.clone()).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        Refusal::Arguments(if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        })
    })
}

async fn run(ctx: &Ctx<'_>, name: &str, arguments: &Value) -> Result<Value, Refusal> {
    let app = ctx.app;
    match name {
        "create_channel" => {
            let input: CreateChannel = args(arguments)?;
            let base = crate::api::base_url(app, ctx.headers);
            Ok(ops::create(app, ctx.tenant.channel_owner(), input, &base).await?)
        }
        "delete_channel" => {
            let a: Owned = args(arguments)?;
            let channel = ops::owner(app, &a.channel_id, Some(&a.publish_token)).await?;
            Ok(ops::delete(app, &channel).await?)
        }
        "publish_message" => {
            let a: PublishArgs = args(arguments)?;
            let channel = ops::owner(app, &a.channel_id, Some(&a.publish_token)).await?;
            let input = Publish {
                payload: a.payload,
                metadata: a.metadata,
                ttl_seconds: a.ttl_seconds,
            };
            Ok(ops::publish(app, &channel, input).await?)
        }
        "create_read_grant" => {
            let a: GrantArgs = args(arguments)?;
            let channel = ops::owner(app, &a.channel_id, Some(&a.publish_token)).await?;
            let input = CreateGrant {
                label: a.label,
                expires_at: a.expires_at,
            };
            Ok(ops::create_grant(app, &channel, input).await?)
        }
        "revoke_read_grant" => {
            let a: RevokeArgs = args(arguments)?;
            let channel = ops::owner(app, &a.channel_id, Some(&a.publish_token)).await?;
            Ok(ops::revoke_grant(app, &channel, &a.grant_id).await?)
        }
        "get_channel" => {
            let a: Owned = args(arguments)?;
            let channel = ops::owner(app, &a.channel_id, Some(&a.publish_token)).await?;
            Ok(ops::channel_json(
                &channel.doc,
                &crate::api::base_url(app, ctx.headers),
            ))
        }
        "read_channel_messages" => {
            let a: ReadArgs = args(arguments)?;
            let channel = ops::live(app, &a.channel_id).await?;
            ops::reader(app, &channel, a.read_token.as_deref()).await?;
            let after = match a.after_message_id.as_deref().filter(|m| !m.is_empty()) {
                Some(m) => Some(ops::position(&channel.doc.id, m)?),
                None => None,
            };
            Ok(ops::messages(app, &channel, after, a.limit.unwrap_or(DEFAULT_LIMIT)).await?)
        }
        other => Err(Refusal::Arguments(format!(
            "unknown channel tool {}",
            clip(other)
        ))),
    }
}

/// Handles a call of a channel tool ([`wants`] said yes).
pub async fn handle(ctx: &Ctx<'_>, msg: Message) -> Option<Reply> {
    let Message::Request { id, params, .. } = msg else {
        return None;
    };
    ctx.app
        .metrics
        .mcp_message("tools/call", ctx.transport.label(), ctx.revision.as_str());
    let params = params.unwrap_or(Value::Null);
    let name = params.get("name").and_then(Value::as_str).unwrap_or("");
    let empty = json!({});
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(a @ Value::Object(_)) => a,
        Some(_) => {
            return Some(Reply::of(jsonrpc::error(
                Some(&id),
                INVALID_PARAMS,
                "Invalid params: \"arguments\" must be an object",
                None,
            )));
        }
    };
    let result = match run(ctx, name, arguments).await {
        Ok(v) => json!({
            "content": [{"type": "text", "text": v.to_string()}],
            "structuredContent": v,
        }),
        Err(Refusal::Arguments(text)) => {
            let text = format!("Invalid arguments for tool '{name}': {text}");
            if !ctx.revision.validation_as_tool_error() {
                return Some(Reply::of(jsonrpc::error(
                    Some(&id),
                    INVALID_PARAMS,
                    text,
                    None,
                )));
            }
            let envelope = json!({"error": {"code": "invalid_input", "message": text}});
            json!({
                "content": [{"type": "text", "text": format!("invalid_input: {text}")}],
                "structuredContent": envelope,
                "isError": true,
            })
        }
        Err(Refusal::Api(e)) => {
            let envelope = json!({"error": {"code": e.code, "message": e.message}});
            let code = envelope["error"]["code"].as_str().unwrap_or("").to_string();
            json!({
                "content": [{"type": "text", "text": format!("{code}: {}", e.message)}],
                "structuredContent": envelope,
                "isError": true,
            })
        }
    };
    Some(ok(ctx, &id, result, false))
}
