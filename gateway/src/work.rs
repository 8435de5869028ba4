//! Running a tool call under a lease (SPEC §6, §12): what the execute API and MCP tasks share.
//! [`prepare`] checks the tool and its input and decides the work; [`run`] does it on this
//! process, appending the call's events (`partial`…, then `final` or `error`) under its lease,
//! and stops when the call is cancelled or the lease is lost. The event payloads are SPEC §6's;
//! the call record's `result` keeps the MCP tool result (JSON), so a task's result can be read
//! back whole.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};
use understudy_core::calls::{Appended, EventKind, Lease};

use crate::chaos::Fault;
use crate::engine::tools::Call as ToolCall;
use crate::snapshot::TenantRuntime;
use crate::state::App;

/// Why a call cannot start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No such tool on the tenant.
    UnknownTool,
    /// The input breaks the tool's schema, or is not a valid model request.
    Invalid(String),
}

/// The built-in tool that runs the tenant's mock model.
pub const OPENAI_CHAT: &str = "openai_chat";

/// A worker's lease on its call; renewed at least every [`RENEW_EVERY`].
pub const LEASE_MS: u64 = 6_000;

/// How often a worker renews its lease (and so how soon it notices a cancel).
pub const RENEW_EVERY: Duration = Duration::from_secs(1);

/// What the worker runs.
pub enum Work {
    /// A scenario tool's answer.
    Tool(Value),
    /// The mock model's text (or a tool call's JSON), streamed in pieces.
    Chat { pieces: Vec<String>, text: String },
    /// An injected fault: the call ends with this error.
    Fault(&'static str, String),
}

/// This process's worker name (its leases carry it).
pub fn owner() -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(understudy_core::sessions::new_session_id)
}

/// Checks the tool and its input, and decides what the worker will do.
pub async fn prepare(
    app: &App,
    tenant: &Arc<TenantRuntime>,
    tool: &str,
    input: &Value,
) -> Result<Work, Refused> {
    if tool == OPENAI_CHAT {
        let outcome = app
            .chaos
            .evaluate(tenant, understudy_crds::Surface::Llm)
            .await;
        match outcome.fault {
            Some(Fault::RateLimited { retry_after }) => {
                return Ok(Work::Fault(
                    "OPENAI_ERROR",
                    format!(
                        "The model refused: rate limited (chaos profile); retry after {retry_after} s"
                    ),
                ));
            }
            Some(Fault::ServerError(status)) => {
                return Ok(Work::Fault(
                    "OPENAI_ERROR",
                    format!("The model answered {status} (chaos profile)"),
                ));
            }
            _ => {}
        }
        let answer = crate::routes::llm::chat_answer(app, tenant, input)
            .map_err(|e| Refused::Invalid(e.message))?;
        let (text, whole) = match &answer.call {
            Some(c) => {
                let t =
                    json!({"tool_call": {"name": c.name, "arguments": c.arguments}}).to_string();
                (t.clone(), t)
            }
            None => (answer.text.to_string(), answer.text.to_string()),
        };
        let size = tenant.settings.stream_chunk_chars.max(1);
        let chars: Vec<char> = text.chars().collect();
        let pieces = chars.chunks(size).map(|c| c.iter().collect()).collect();
        return Ok(Work::Chat {
            pieces,
            text: whole,
        });
    }
    match tenant.tools.call(&tenant.config.scenarios, tool, input) {
        ToolCall::Unknown => Err(Refused::UnknownTool),
        ToolCall::Invalid(violations) => Err(Refused::Invalid(format!(
            "Invalid input for tool '{tool}': {}",
            violations.join("; ")
        ))),
        ToolCall::Answer { scenario, result } => {
            app.stats.record(
                tenant,
                Some(Some(tenant.config.scenarios[scenario].id.as_str())),
            );
            let outcome = app
                .chaos
                .evaluate(tenant, understudy_crds::Surface::Mcp)
                .await;
            Ok(match outcome.fault {
                Some(Fault::RateLimited { .. }) => {
                    Work::Fault("RATE_LIMITED", "Rate limited (chaos profile)".into())
                }
                Some(Fault::ServerError(status)) => Work::Fault(
                    "SERVER_ERROR",
                    format!("Injected server error {status} (chaos profile)"),
                ),
                _ => Work::Tool(result),
            })
        }
    }
}

/// How a worker's run ended.
enum End {
    /// With this result.
    Final(Value),
    /// With this error code and text.
    Error(String, String),
    /// Cancelled, or its lease lost, or never started here.
    Stopped,
}

/// The worker: runs the call on this process under its lease; `audit` (an execute call) is
/// recorded when it ends.
pub async fn run(
    app: App,
    tenant: Arc<TenantRuntime>,
    call_id: String,
    work: Work,
    audit: Option<crate::audit::Record>,
) {
    let end = run_call(&app, &tenant, &call_id, work).await;
    let Some(mut r) = audit else { return };
    match end {
        End::Final(result) => r.note.result = crate::audit::Captured::Json(result),
        End::Error(code, text) => {
            r.success = false;
            r.error = Some(format!("{code}: {text}"));
            r.response_error = crate::audit::Captured::Json(json!({"code": code, "text": text}));
        }
        End::Stopped => {
            r.success = false;
            r.error = Some("stopped: cancelled, or its lease was lost".into());
        }
    }
    app.audit.record(r);
}

async fn run_call(app: &App, tenant: &Arc<TenantRuntime>, call_id: &str, work: Work) -> End {
    let calls = app.stores.calls.clone();
    let t = tenant.id();
    if calls.start_call(t, call_id, owner(), LEASE_MS).await.ok() != Some(Lease::Held) {
        return End::Stopped;
    }
    let append = |kind: EventKind, data: String, result: Option<String>, error: Option<String>| {
        let calls = calls.clone();
        let call_id = call_id.to_string();
        let tenant = t.to_string();
        async move {
            calls
                .append_call_event(
                    &tenant,
                    &call_id,
                    Some(owner()),
                    kind,
                    &data,
                    result.as_deref(),
                    error.as_deref(),
                )
                .await
        }
    };
    match work {
        Work::Fault(code, text) => {
            let data = json!({"type": "error", "code": code, "text": text}).to_string();
            let _ = append(EventKind::Error, data, None, Some(code.into())).await;
            End::Error(code.into(), text)
        }
        Work::Tool(result) => {
            let text = result["content"][0]["text"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if result["isError"] == json!(true) {
                let data =
                    json!({"type": "error", "code": "TOOL_ERROR", "text": text, "result": result})
                        .to_string();
                let _ = append(EventKind::Error, data, None, Some("TOOL_ERROR".into())).await;
                End::Error("TOOL_ERROR".into(), text)
            } else {
                let data = json!({"type": "final", "text": text}).to_string();
                let _ = append(EventKind::Final, data, Some(result.to_string()), None).await;
                End::Final(result)
            }
        }
        Work::Chat { pieces, text } => {
            let s = &tenant.settings;
            let mut renewed = tokio::time::Instant::now();
            for (i, piece) in pieces.into_iter().enumerate() {
                let mut wait = Duration::from_millis(if i == 0 {
                    s.stream_ttft_ms
                } else {
                    s.stream_chunk_delay_ms
                });
                if s.stream_jitter_ms > 0 {
                    wait += Duration::from_millis(fastrand::u64(0..=s.stream_jitter_ms));
                }
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                // Between chunks: renew the lease; a cancel (or a lost lease) stops the work.
                if renewed.elapsed() >= RENEW_EVERY {
                    renewed = tokio::time::Instant::now();
                    match calls.renew_call(t, call_id, owner(), LEASE_MS).await {
                        Ok(Lease::Held) | Err(_) => {}
                        Ok(_) => return End::Stopped,
                    }
                }
                let data = json!({"type": "partial", "text": piece}).to_string();
                match append(EventKind::Partial, data, None, None).await {
                    Ok(Appended::Event(_)) | Err(_) => {}
                    Ok(_) => return End::Stopped,
                }
            }
            let result = json!({"content": [{"type": "text", "text": text}], "isError": false});
            let data = json!({"type": "final", "text": text}).to_string();
            let _ = append(EventKind::Final, data, Some(result.to_string()), None).await;
            End::Final(result)
        }
    }
}

/// The `WORKER_LOST` event's payload.
pub fn lost_data() -> String {
    json!({"type": "error", "code": "WORKER_LOST", "text": "The process running this call stopped before it finished."}).to_string()
}

/// A call record's `result` (an MCP tool result, as JSON) read back.
pub fn tool_result(stored: Option<&str>) -> Option<Value> {
    stored
        .and_then(|r| serde_json::from_str::<Value>(r).ok())
        .filter(Value::is_object)
}

/// The text of a stored result: its text content blocks, joined.
pub fn result_text(stored: Option<&str>) -> Option<String> {
    let r = tool_result(stored)?;
    Some(
        r.get("content")?
            .as_array()?
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
    )
}

/// Cancels a call, from any process: appends its `cancelled` event (the first end wins; the
/// worker stops at its next renewal).
pub async fn cancel(
    app: &App,
    tenant: &str,
    call_id: &str,
) -> Result<Appended, understudy_core::StoreError> {
    let data = json!({"type": "cancelled", "text": "Cancelled."}).to_string();
    app.stores
        .calls
        .append_call_event(
            tenant,
            call_id,
            None,
            EventKind::Cancelled,
            &data,
            None,
            None,
        )
        .await
}
