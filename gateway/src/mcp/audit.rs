//! Every `tools/call` through the dispatcher is an audit event (SPEC §9.1), whatever the
//! transport: the streamable and legacy transports, `/mcp/message`, the hosted endpoint, the
//! channel MCP server, and the portal's replay and try-it ([`invoke`]), which run a call
//! in-process through the same dispatcher.

use std::time::Instant;

use serde_json::{Value, json};

use super::dispatch::{Ctx, Reply, Transport};
use super::jsonrpc::Message;
use super::revision::Revision;
use crate::audit::{Captured, Record, Who};
use crate::snapshot::TenantRuntime;
use crate::state::App;

/// Who an in-process call is recorded as (portal replay and try-it).
#[derive(Debug, Clone)]
pub struct AuditAs {
    /// `portal-replay` or `portal-tryit`.
    pub source: &'static str,
    /// The portal identity.
    pub who: Who,
    /// The event replayed.
    pub replayed_from: Option<String>,
    /// The new event's id (so the caller can name it in its answer).
    pub event_id: String,
}

/// A `tools/call` under way.
struct Begun {
    tool: String,
    arguments: Value,
    started: Instant,
}

fn begin(msg: &Message, payloads: bool) -> Option<Begun> {
    match msg {
        Message::Request { method, params, .. } if method == "tools/call" => {
            let params = params.as_ref();
            let tool = params
                .and_then(|p| p.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let arguments = if payloads {
                params
                    .and_then(|p| p.get("arguments"))
                    .cloned()
                    .unwrap_or_else(|| json!({}))
            } else {
                Value::Null
            };
            Some(Begun {
                tool,
                arguments,
                started: Instant::now(),
            })
        }
        _ => None,
    }
}

/// Runs one message (`all`: channel tools and tasks too; else the tenant's own tools), recording
/// a `tools/call` when it is answered.
pub(crate) async fn audited(ctx: &Ctx<'_>, msg: Message, all: bool) -> Option<Reply> {
    let begun = if ctx.app.audit.enabled() {
        begin(&msg, ctx.app.audit.payloads())
    } else {
        None
    };
    let run = async {
        if all {
            super::dispatch::route_any(ctx, msg).await
        } else {
            super::dispatch::handle(ctx, msg)
        }
    };
    let Some(begun) = begun else {
        return run.await;
    };
    let (note, reply) = crate::audit::capture(run).await;
    finish(ctx, begun, note, reply.as_ref()).await;
    reply
}

async fn finish(ctx: &Ctx<'_>, begun: Begun, mut note: crate::audit::Note, reply: Option<&Reply>) {
    let who = match ctx.audit_as {
        Some(a) => a.who.clone(),
        None => crate::audit::who_of(ctx.app, ctx.headers),
    };
    let source = match (ctx.audit_as, ctx.transport) {
        (Some(a), _) => a.source,
        (None, Transport::Hosted) => "hosted",
        (None, _) => "mcp",
    };
    let mut r = Record::new(source, begun.tool, who, begun.started);
    r.tenant = (!ctx.tenant.tenantless).then(|| ctx.tenant.id().to_string());
    r.transport = Some(ctx.transport.label());
    r.session = ctx.session.map(String::from).or_else(|| {
        ctx.headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(String::from)
    });
    let payloads = ctx.app.audit.payloads();
    if payloads {
        r.headers = Some(ctx.headers.clone());
        note.params = Captured::Json(begun.arguments);
    }
    let body = reply.map(|r| &r.body);
    if let Some(result) = body.and_then(|b| b.get("result")) {
        if result.get("isError") == Some(&Value::Bool(true)) {
            r.success = false;
            r.error = result
                .get("content")
                .and_then(|c| c.get(0))
                .and_then(|c| c.get("text"))
                .and_then(Value::as_str)
                .map(String::from);
        }
        if payloads {
            note.result = Captured::Json(result.clone());
        }
    }
    if let Some(error) = body.and_then(|b| b.get("error")) {
        r.success = false;
        r.error = error
            .get("message")
            .and_then(Value::as_str)
            .map(String::from);
        if payloads {
            r.response_error = Captured::Json(error.clone());
        }
    }
    if let Some(a) = ctx.audit_as {
        r.replayed_from = a.replayed_from.clone();
        r.id = Some(a.event_id.clone());
    }
    r.note = note;
    ctx.app.audit.record(r);
}

/// Calls `tool` of `tenant` in-process through the dispatcher, recorded as `audit_as` says
/// (the portal's replay and try-it): the JSON-RPC response.
pub async fn invoke(
    app: &App,
    tenant: &std::sync::Arc<TenantRuntime>,
    tool: &str,
    arguments: Value,
    headers: &http::HeaderMap,
    audit_as: &AuditAs,
) -> Value {
    let ctx = Ctx {
        app,
        tenant,
        revision: Revision::DEFAULT_HTTP,
        transport: Transport::Message,
        headers,
        session: None,
        audit_as: Some(audit_as),
    };
    let msg = Message::Request {
        id: json!(1),
        method: "tools/call".into(),
        params: Some(json!({"name": tool, "arguments": arguments})),
    };
    match super::dispatch::handle_any(&ctx, msg).await {
        Some(reply) => reply.body,
        None => {
            json!({"jsonrpc": "2.0", "id": 1, "error": {"code": -32603, "message": "no answer"}})
        }
    }
}
