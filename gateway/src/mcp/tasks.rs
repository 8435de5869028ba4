//! MCP tasks: in revision 2025-11-25 (where tasks are part of the protocol) a `tools/call` with a
//! `task` parameter, and in 2026-07-28 (the `io.modelcontextprotocol/tasks` extension) any
//! `tools/call` whose request declares the extension, starts a call record — the same records as the execute API (SPEC §6), so a
//! task started over MCP streams through `GET /mcp/stream/{taskId}` and a call started through
//! `POST /mcp/execute` answers `tasks/get` — and `tasks/get`, `tasks/result`, `tasks/list` and
//! `tasks/cancel` read and end them, from any process.
//!
//! ```text
//!  tools/call {task:{ttl?}} ─► work::prepare ─► CallStore::create (this process's lease)
//!                          ─► work::run here ─► {"task": {taskId, status: working, …}}
//!  tasks/get ─► the record (a lease run out → WORKER_LOST first) ─► the task
//!  tasks/result ─► waits for the end ─► the tool's result (or its error)
//!  tasks/cancel ─► a cancelled event (the first end wins)
//! ```

use std::time::Duration;

use serde_json::{Map, Value, json};
use understudy_core::calls::{Appended, CALL_TTL_MS, Call, CallDoc, CallStatus};

use super::dispatch::{Ctx, Reply};
use super::jsonrpc::{self, INTERNAL_ERROR, INVALID_PARAMS, Message};
use super::revision::Revision;
use crate::work;

/// The caller every MCP-created task is filed under (`tasks/list` lists a tenant's MCP tasks).
pub const MCP_CALLER: &str = "@mcp";

/// How often a client is told to poll.
const POLL_INTERVAL_MS: u64 = 500;

/// Longest `tasks/result` waits for a task to end.
const RESULT_WAIT: Duration = Duration::from_secs(300);

/// The `_meta` key tying a result to its task.
const RELATED_TASK: &str = "io.modelcontextprotocol/related-task";

/// The 2026-07-28 extension's identifier.
pub const EXTENSION: &str = "io.modelcontextprotocol/tasks";

/// Missing required client capability (2026-07-28).
const MISSING_CAPABILITY: i64 = -32021;

/// Whether the revision has tasks: 2025-11-25 in the protocol, 2026-07-28 as an extension.
pub fn supported(revision: Revision) -> bool {
    revision >= Revision::V2025_11_25
}

/// Whether a 2026-07-28 request declared the tasks extension in its client capabilities.
fn declared(params: Option<&Value>) -> bool {
    params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(super::dispatch::META_CAPABILITIES))
        .and_then(|c| c.get("extensions"))
        .and_then(|e| e.get(EXTENSION))
        .is_some()
}

/// The server's tasks capability.
pub fn capability() -> Value {
    json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}})
}

/// Whether `msg` is handled here rather than by the synchronous dispatcher.
pub fn wants(ctx: &Ctx<'_>, msg: &Message) -> bool {
    if !supported(ctx.revision) || ctx.transport == super::Transport::Hosted {
        return false;
    }
    match msg {
        Message::Request { method, params, .. } if ctx.revision.stateless() => {
            method.starts_with("tasks/") || (method == "tools/call" && declared(params.as_ref()))
        }
        Message::Request { method, params, .. } => {
            method.starts_with("tasks/")
                || (method == "tools/call"
                    && params.as_ref().is_some_and(|p| p.get("task").is_some()))
        }
        _ => false,
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A call as a 2025-11-25 task.
pub fn task_of(c: &Call) -> Value {
    let status = match c.status {
        CallStatus::Started | CallStatus::Pending | CallStatus::Running => "working",
        CallStatus::Finished => "completed",
        CallStatus::Error => "failed",
        CallStatus::Cancelled => "cancelled",
    };
    task_with(c, status)
}

fn task_with(c: &Call, status: &str) -> Value {
    let mut t = Map::new();
    t.insert("taskId".into(), json!(c.doc.call_id));
    t.insert("status".into(), json!(status));
    if let Some(e) = &c.error {
        t.insert("statusMessage".into(), json!(e));
    }
    t.insert("createdAt".into(), json!(rfc3339(c.doc.created_ms)));
    t.insert("lastUpdatedAt".into(), json!(rfc3339(c.updated_ms)));
    t.insert("ttl".into(), json!(CALL_TTL_MS));
    t.insert("pollInterval".into(), json!(POLL_INTERVAL_MS));
    Value::Object(t)
}

fn err(id: &Value, code: i64, message: impl Into<String>) -> Reply {
    Reply {
        body: jsonrpc::error(Some(id), code, message, None),
        negotiated: None,
    }
}

fn ok(id: &Value, result: Value) -> Reply {
    Reply {
        body: jsonrpc::result(id, result),
        negotiated: None,
    }
}

/// Handles a message [`wants`] took.
pub async fn handle(ctx: &Ctx<'_>, msg: Message) -> Option<Reply> {
    let Message::Request { id, method, params } = msg else {
        return None;
    };
    let empty = Value::Object(Map::new());
    let params = params.as_ref().unwrap_or(&empty);
    ctx.app.metrics.mcp_message(
        super::dispatch::method_label(&method),
        ctx.transport.label(),
        ctx.revision.as_str(),
    );
    if ctx.revision.stateless() {
        return Some(modern(ctx, &id, &method, params).await);
    }
    Some(match method.as_str() {
        "tools/call" => start(ctx, &id, params).await,
        "tasks/list" => list(ctx, &id).await,
        m @ ("tasks/get" | "tasks/result" | "tasks/cancel") => {
            let Some(task_id) = params.get("taskId").and_then(Value::as_str) else {
                return Some(err(
                    &id,
                    INVALID_PARAMS,
                    "Invalid params: \"taskId\" is required",
                ));
            };
            match m {
                "tasks/get" => get(ctx, &id, task_id).await,
                "tasks/result" => result(ctx, &id, task_id).await,
                _ => cancel(ctx, &id, task_id).await,
            }
        }
        _ => err(
            &id,
            jsonrpc::METHOD_NOT_FOUND,
            format!(
                "Method not found: {}",
                method.chars().take(128).collect::<String>()
            ),
        ),
    })
}

/// A kept call of the tenant, with a lost worker turned into `WORKER_LOST` first.
async fn find(ctx: &Ctx<'_>, task_id: &str) -> Result<Option<Call>, Reply> {
    let calls = &ctx.app.stores.calls;
    let tenant = ctx.tenant.id();
    let unavailable = |_| Reply {
        body: jsonrpc::error(
            None,
            INTERNAL_ERROR,
            "The call store is unreachable; retry shortly",
            None,
        ),
        negotiated: None,
    };
    let Some(c) = calls.get_call(tenant, task_id).await.map_err(unavailable)? else {
        return Ok(None);
    };
    if !c.status.terminal() && c.lease_until_ms < understudy_core::now_ms() {
        let _ = calls
            .finish_if_lost(tenant, task_id, &work::lost_data())
            .await;
        return calls.get_call(tenant, task_id).await.map_err(unavailable);
    }
    Ok(Some(c))
}

fn unknown(id: &Value, task_id: &str) -> Reply {
    err(
        id,
        INVALID_PARAMS,
        format!(
            "Unknown task: '{}' (tasks are kept for an hour after their last change)",
            task_id.chars().take(128).collect::<String>()
        ),
    )
}

/// Starts a task for a `tools/call`: the task as a call, or the reply that refuses it.
async fn start(ctx: &Ctx<'_>, id: &Value, params: &Value) -> Reply {
    match begin(ctx, id, params).await {
        Ok(c) => ok(id, json!({"task": task_of(&c)})),
        Err(r) => r,
    }
}

/// Creates and runs the call a task-augmented `tools/call` asks for.
async fn begin(ctx: &Ctx<'_>, id: &Value, params: &Value) -> Result<Call, Reply> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err(err(
            id,
            INVALID_PARAMS,
            "Invalid params: tools/call needs \"name\", a string",
        ));
    };
    if ctx.tenant.tools.get(name).is_none() {
        return Err(err(
            id,
            INVALID_PARAMS,
            format!(
                "Unknown tool: {}",
                name.chars().take(128).collect::<String>()
            ),
        ));
    }
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(a @ Value::Object(_)) => a.clone(),
        Some(_) => {
            return Err(err(
                id,
                INVALID_PARAMS,
                "Invalid params: \"arguments\" must be an object",
            ));
        }
    };
    let app = ctx.app;
    let work = match work::prepare(app, ctx.tenant, name, &arguments).await {
        Ok(w) => w,
        Err(work::Refused::UnknownTool) => {
            return Err(err(id, INVALID_PARAMS, format!("Unknown tool: {name}")));
        }
        // The revisions' rule for arguments that break the schema: a tool result, no task.
        Err(work::Refused::Invalid(text)) => {
            let r = json!({"content": [{"type": "text", "text": text}], "isError": true});
            return Err(ok(id, super::dispatch::finish(ctx.revision, r, false)));
        }
    };
    let call_id = understudy_core::sessions::new_session_id();
    let doc = CallDoc {
        call_id: call_id.clone(),
        tenant: ctx.tenant.id().to_string(),
        caller: MCP_CALLER.into(),
        tool: name.to_string(),
        body: json!({"tool": name, "input": arguments}).to_string(),
        request_id: None,
        created_ms: understudy_core::now_ms(),
    };
    if let Err(e) = app
        .stores
        .calls
        .create_call(&doc, work::owner(), work::LEASE_MS)
        .await
    {
        app.metrics.redis_error("calls");
        tracing::debug!(error = %e, "task not created");
        return Err(err(
            id,
            INTERNAL_ERROR,
            "The call store is unreachable; retry shortly",
        ));
    }
    tokio::spawn(work::run(
        app.clone(),
        ctx.tenant.clone(),
        call_id.clone(),
        work,
        None,
    ));
    match find(ctx, &call_id).await {
        Ok(Some(c)) => Ok(c),
        Ok(None) => Err(unknown(id, &call_id)),
        Err(r) => Err(r),
    }
}

async fn get(ctx: &Ctx<'_>, id: &Value, task_id: &str) -> Reply {
    match find(ctx, task_id).await {
        Ok(Some(c)) => ok(id, task_of(&c)),
        Ok(None) => unknown(id, task_id),
        Err(r) => r,
    }
}

async fn list(ctx: &Ctx<'_>, id: &Value) -> Reply {
    let calls = &ctx.app.stores.calls;
    let ids = match calls.caller_calls(ctx.tenant.id(), MCP_CALLER).await {
        Ok(ids) => ids,
        Err(_) => {
            return err(
                id,
                INTERNAL_ERROR,
                "The call store is unreachable; retry shortly",
            );
        }
    };
    let mut tasks = Vec::new();
    for t in ids {
        if let Ok(Some(c)) = find(ctx, &t).await {
            tasks.push(task_of(&c));
        }
    }
    ok(id, json!({"tasks": tasks}))
}

async fn cancel(ctx: &Ctx<'_>, id: &Value, task_id: &str) -> Reply {
    match work::cancel(ctx.app, ctx.tenant.id(), task_id).await {
        Ok(Appended::Event(_)) => get(ctx, id, task_id).await,
        Ok(Appended::Ended(s)) => err(
            id,
            INVALID_PARAMS,
            format!("Task '{task_id}' already ended ({})", s.as_str()),
        ),
        Ok(Appended::Lost | Appended::NoCall) => unknown(id, task_id),
        Err(_) => err(
            id,
            INTERNAL_ERROR,
            "The call store is unreachable; retry shortly",
        ),
    }
}

async fn result(ctx: &Ctx<'_>, id: &Value, task_id: &str) -> Reply {
    let deadline = tokio::time::Instant::now() + RESULT_WAIT;
    let call = loop {
        match find(ctx, task_id).await {
            Ok(Some(c)) if c.status.terminal() => break c,
            Ok(Some(_)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(Some(_)) => {
                return err(
                    id,
                    INTERNAL_ERROR,
                    format!("Task '{task_id}' is still working"),
                );
            }
            Ok(None) => return unknown(id, task_id),
            Err(r) => return r,
        }
    };
    let stored = work::tool_result(call.result.as_deref());
    let last = ctx
        .app
        .stores
        .calls
        .call_events(ctx.tenant.id(), task_id, call.seq.saturating_sub(1))
        .await
        .ok()
        .and_then(|mut e| e.pop());
    let data: Value = last
        .and_then(|e| serde_json::from_str(&e.data).ok())
        .unwrap_or(Value::Null);
    let meta = json!({RELATED_TASK: {"taskId": task_id}});
    match stored {
        Some(Value::Object(mut r)) => {
            r.insert("_meta".into(), meta);
            ok(id, Value::Object(r))
        }
        _ => err(
            id,
            INTERNAL_ERROR,
            format!(
                "Task '{task_id}' ended {}: {}",
                task_of(&call)["status"].as_str().unwrap_or(""),
                data.get("text").and_then(Value::as_str).unwrap_or("")
            ),
        ),
    }
}

/// A call as a 2026-07-28 detailed task: a tool result with `isError` is `completed` (with its
/// result), `failed` is for errors (with a JSON-RPC error object).
async fn detailed(ctx: &Ctx<'_>, c: &Call) -> Value {
    let last = ctx
        .app
        .stores
        .calls
        .call_events(ctx.tenant.id(), &c.doc.call_id, c.seq.saturating_sub(1))
        .await
        .ok()
        .and_then(|mut e| e.pop())
        .and_then(|e| serde_json::from_str::<Value>(&e.data).ok())
        .unwrap_or(Value::Null);
    let result = work::tool_result(c.result.as_deref());
    let status = match (c.status, &result) {
        (CallStatus::Started | CallStatus::Pending | CallStatus::Running, _) => "working",
        (CallStatus::Finished, _) | (CallStatus::Error, Some(_)) => "completed",
        (CallStatus::Error, None) => "failed",
        (CallStatus::Cancelled, _) => "cancelled",
    };
    let mut t = task_with(c, status);
    if let Value::Object(o) = &mut t {
        o.remove("ttl");
        o.remove("pollInterval");
        o.insert("ttlMs".into(), json!(CALL_TTL_MS));
        o.insert("pollIntervalMs".into(), json!(POLL_INTERVAL_MS));
        match status {
            "completed" => {
                o.insert("result".into(), result.unwrap_or(Value::Null));
            }
            "failed" => {
                let text = last.get("text").and_then(Value::as_str).unwrap_or("failed");
                o.insert(
                    "error".into(),
                    json!({"code": INTERNAL_ERROR, "message": text}),
                );
            }
            _ => {}
        }
    }
    t
}

/// The 2026-07-28 extension's methods.
async fn modern(ctx: &Ctx<'_>, id: &Value, method: &str, params: &Value) -> Reply {
    let finish = |v: Value| super::dispatch::finish(Revision::V2026_07_28, v, false);
    if !declared(Some(params)) {
        return Reply {
            body: jsonrpc::error(
                Some(id),
                MISSING_CAPABILITY,
                "Missing required client capability",
                Some(json!({"requiredCapabilities": {"extensions": {EXTENSION: {}}}})),
            ),
            negotiated: None,
        };
    }
    if method == "tools/call" {
        return match begin(ctx, id, params).await {
            Ok(c) => {
                let mut r = finish(detailed(ctx, &c).await);
                if let Value::Object(o) = &mut r {
                    o.insert("resultType".into(), json!("task"));
                    o.remove("result");
                    o.remove("error");
                }
                ok(id, r)
            }
            Err(r) => r,
        };
    }
    let Some(task_id) = params.get("taskId").and_then(Value::as_str) else {
        return err(id, INVALID_PARAMS, "Invalid params: \"taskId\" is required");
    };
    match method {
        "tasks/get" => match find(ctx, task_id).await {
            Ok(Some(c)) => ok(id, finish(detailed(ctx, &c).await)),
            Ok(None) => unknown(id, task_id),
            Err(r) => r,
        },
        // This server never asks a task for input: an update has nothing to change.
        "tasks/update" => match find(ctx, task_id).await {
            Ok(Some(_)) => ok(id, finish(json!({}))),
            Ok(None) => unknown(id, task_id),
            Err(r) => r,
        },
        "tasks/cancel" => {
            match work::cancel(ctx.app, ctx.tenant.id(), task_id).await {
                // Cooperative: a task that had ended stays as it ended.
                Ok(Appended::Event(_) | Appended::Ended(_)) => ok(id, finish(json!({}))),
                Ok(Appended::Lost | Appended::NoCall) => unknown(id, task_id),
                Err(_) => err(
                    id,
                    INTERNAL_ERROR,
                    "The call store is unreachable; retry shortly",
                ),
            }
        }
        _ => err(
            id,
            jsonrpc::METHOD_NOT_FOUND,
            format!(
                "Method not found: {}",
                method.chars().take(128).collect::<String>()
            ),
        ),
    }
}
