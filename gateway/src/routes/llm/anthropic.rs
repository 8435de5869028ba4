//! `POST /v1/messages` (Anthropic Messages, streamed or not) and `POST /v1/messages/count_tokens`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{LlmError, Provider, sse};
use crate::engine::{Answer, Conversation, Stop, ToolCall, ToolChoice, tokens};
use crate::state::App;

/// The fields the mock reads.
#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    /// Echoed in the answer.
    pub model: String,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Required by the API.
    pub max_tokens: i64,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<ToolChoiceIn>,
}

/// The body of count_tokens: like a message request without max_tokens.
#[derive(Debug, Deserialize)]
pub struct CountRequest {
    #[allow(dead_code)]
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
}

/// One message.
#[derive(Debug, Deserialize)]
pub struct Message {
    role: String,
    content: Value,
}

#[derive(Debug, Deserialize)]
struct ToolChoiceIn {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
}

fn choice(c: Option<&ToolChoiceIn>) -> Result<ToolChoice, LlmError> {
    match c {
        None => Ok(ToolChoice::Auto),
        Some(c) => match (c.kind.as_str(), &c.name) {
            ("auto", _) => Ok(ToolChoice::Auto),
            ("none", _) => Ok(ToolChoice::None),
            ("any", _) => Ok(ToolChoice::Required),
            ("tool", Some(n)) => Ok(ToolChoice::Named(n.clone())),
            ("tool", None) => Err(LlmError::invalid(
                "tool_choice.name: Field required",
                Some("tool_choice.name"),
            )),
            (other, _) => Err(LlmError::invalid(
                format!(
                    "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none', got '{other}'"
                ),
                Some("tool_choice.type"),
            )),
        },
    }
}

fn validate_messages(messages: &[Message]) -> Result<(), LlmError> {
    if messages.is_empty() {
        return Err(LlmError::invalid(
            "messages: at least one message is required",
            Some("messages"),
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "user" | "assistant") {
            return Err(LlmError::invalid(
                format!("messages.{i}.role: Input should be 'user' or 'assistant'"),
                Some(&format!("messages.{i}.role")),
            ));
        }
        if !(m.content.is_string() || m.content.is_array()) {
            return Err(LlmError::invalid(
                format!(
                    "messages.{i}.content: Input should be a valid string or a list of content blocks"
                ),
                Some(&format!("messages.{i}.content")),
            ));
        }
    }
    Ok(())
}

fn system_chars(system: Option<&Value>) -> Result<usize, LlmError> {
    match system {
        None | Some(Value::Null) => Ok(0),
        Some(v @ (Value::String(_) | Value::Array(_))) => Ok(tokens::text_chars(v)),
        Some(_) => Err(LlmError::invalid(
            "system: Input should be a valid string or a list of text blocks",
            Some("system"),
        )),
    }
}

/// Characters of the tool definitions, for the token estimate.
fn tool_chars(tools: &[Value]) -> usize {
    tools.iter().map(tokens::text_chars).sum()
}

/// Refuses tool definitions that are not objects.
fn validate_tools(tools: Option<&Vec<Value>>) -> Result<(), LlmError> {
    for (i, t) in tools.into_iter().flatten().enumerate() {
        if !t.is_object() {
            return Err(LlmError::invalid(
                format!("tools.{i}: Input should be an object"),
                Some(&format!("tools.{i}")),
            ));
        }
    }
    Ok(())
}

/// Reduces the request to a [`Conversation`].
fn conversation(
    messages: &[Message],
    tools: Option<&Vec<Value>>,
    choice: ToolChoice,
    system: usize,
) -> Conversation {
    let tools = tools.map(Vec::as_slice).unwrap_or(&[]);
    let mut conv = Conversation {
        tool_choice: choice,
        offered_tools: tools
            .iter()
            .filter_map(|t| t.get("name").and_then(Value::as_str).map(String::from))
            .collect(),
        // Tool definitions count, as in count_tokens: one estimate for both (SPEC §3.1).
        input_chars: system + tool_chars(tools),
        ..Default::default()
    };
    let mut names: HashMap<String, String> = HashMap::new();
    for m in messages {
        conv.input_chars += tokens::text_chars(&m.content);
        let blocks: &[Value] = m.content.as_array().map(Vec::as_slice).unwrap_or(&[]);
        if m.role == "assistant" {
            for b in blocks {
                if b.get("type").and_then(Value::as_str) == Some("tool_use")
                    && let (Some(id), Some(name)) = (
                        b.get("id").and_then(Value::as_str),
                        b.get("name").and_then(Value::as_str),
                    )
                {
                    names.insert(id.to_string(), name.to_string());
                }
            }
            continue;
        }
        let text = super::content_text(&m.content);
        if !text.is_empty() {
            conv.user_turns += 1;
            conv.last_user_text = Some(text);
        }
        for b in blocks {
            if b.get("type").and_then(Value::as_str) == Some("tool_result") {
                conv.tool_results += 1;
                let name = b
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .and_then(|id| names.get(id))
                    .cloned();
                conv.answered_tools.push(name);
            }
        }
    }
    conv
}

/// Identifiers of one answer.
pub struct Ids {
    /// `msg_…`
    pub id: String,
    /// `toolu_…`
    pub tool_id: String,
}

impl Ids {
    fn fresh() -> Self {
        Ids {
            id: super::ids::msg_id(),
            tool_id: super::ids::toolu_id(),
        }
    }
}

/// Messages' `stop_reason`.
fn stop_reason(stop: Stop) -> &'static str {
    match stop {
        Stop::Complete => "end_turn",
        Stop::Length => "max_tokens",
        Stop::ToolCall => "tool_use",
    }
}

fn usage(input: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "output_tokens": output,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "service_tier": "standard"
    })
}

/// The non-streamed message.
pub fn render_json(model: &str, ans: &Answer, input: u64, ids: &Ids) -> Vec<u8> {
    let content = match (ans.call.is_none().then_some(ans.text.as_str()), &ans.call) {
        (
            _,
            Some(ToolCall {
                name,
                arguments: args,
                ..
            }),
        ) => {
            json!([{"type": "tool_use", "id": ids.tool_id, "name": name, "input": args}])
        }
        (Some(t), None) => json!([{"type": "text", "text": t}]),
        (None, None) => json!([]),
    };
    serde_json::to_vec(&json!({
        "id": ids.id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(ans.stop),
        "stop_sequence": null,
        "usage": usage(input, ans.output_tokens),
    }))
    .unwrap_or_default()
}

/// The streamed events: message_start, content_block_start, ping, deltas, content_block_stop,
/// message_delta, message_stop.
pub fn render_stream(
    model: &str,
    ans: &Answer,
    input: u64,
    chunk_chars: usize,
    ids: &Ids,
) -> sse::Plan {
    let mut plan = sse::Plan::default();
    let start = json!({
        "type": "message_start",
        "message": {
            "id": ids.id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": usage(input, 1),
        }
    });
    plan.push(Some("message_start"), &start.to_string());
    match (ans.call.is_none().then_some(ans.text.as_str()), &ans.call) {
        (
            _,
            Some(ToolCall {
                name,
                arguments_json: args,
                ..
            }),
        ) => {
            let block = json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "tool_use", "id": ids.tool_id, "name": name, "input": {}}});
            plan.push(Some("content_block_start"), &block.to_string());
            plan.push(Some("ping"), "{\"type\":\"ping\"}");
            plan.mark_content();
            plan.push_pieces(
                Some("content_block_delta"),
                Arc::new(args.clone()),
                chunk_chars.max(16),
                |_, piece, b| {
                    let d = json!({"type": "content_block_delta", "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": piece}});
                    let _ = serde_json::to_writer(b, &d);
                },
            );
        }
        (_, None) => {
            let block = json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}});
            plan.push(Some("content_block_start"), &block.to_string());
            plan.push(Some("ping"), "{\"type\":\"ping\"}");
            plan.mark_content();
            plan.push_pieces(
                Some("content_block_delta"),
                ans.text.clone(),
                chunk_chars,
                |_, piece, b| {
                    let d = json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}});
                    let _ = serde_json::to_writer(b, &d);
                },
            );
        }
    }
    plan.push(
        Some("content_block_stop"),
        "{\"type\":\"content_block_stop\",\"index\":0}",
    );
    let delta = json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(ans.stop), "stop_sequence": null},
        "usage": {"output_tokens": ans.output_tokens}});
    plan.push(Some("message_delta"), &delta.to_string());
    plan.push(Some("message_stop"), "{\"type\":\"message_stop\"}");
    plan
}

/// The Messages dialect.
pub struct Messages;

impl super::Dialect for Messages {
    type Request = MessagesRequest;
    const PROVIDER: Provider = Provider::Anthropic;
    const TOOL: &'static str = "llm.messages";

    fn prepare(req: &MessagesRequest) -> Result<super::Prepared, LlmError> {
        let max = super::max_tokens(Some(req.max_tokens), "max_tokens")?.unwrap_or(1);
        validate_messages(&req.messages)?;
        validate_tools(req.tools.as_ref())?;
        let system = system_chars(req.system.as_ref())?;
        let conv = conversation(
            &req.messages,
            req.tools.as_ref(),
            choice(req.tool_choice.as_ref())?,
            system,
        );
        Ok(super::Prepared {
            conv,
            max_tokens: Some(max),
            stream: req.stream.unwrap_or(false),
            choices: 1,
        })
    }

    fn render_json(req: &MessagesRequest, ans: &Answer) -> Vec<u8> {
        render_json(&req.model, ans, ans.input_tokens, &Ids::fresh())
    }

    fn render_stream(req: &MessagesRequest, ans: &Answer, chunk_chars: usize) -> sse::Plan {
        render_stream(
            &req.model,
            ans,
            ans.input_tokens,
            chunk_chars,
            &Ids::fresh(),
        )
    }
}

/// `POST /v1/messages/count_tokens`: the same estimate as usage.
pub async fn count_tokens(State(app): State<App>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let tenant = match super::tenant(&app, &parts).await {
        Ok(t) => t,
        Err(e) => return super::fail(e, Provider::Anthropic, None, None),
    };
    let result = async {
        let bytes = super::body(&app, &parts, body).await?;
        let req: CountRequest = super::parse(&bytes)?;
        validate_messages(&req.messages)?;
        let mut chars = system_chars(req.system.as_ref())?;
        chars += req
            .messages
            .iter()
            .map(|m| tokens::text_chars(&m.content))
            .sum::<usize>();
        validate_tools(req.tools.as_ref())?;
        chars += tool_chars(req.tools.as_deref().unwrap_or(&[]));
        Ok::<_, LlmError>(
            axum::Json(json!({"input_tokens": tokens::estimate(chars).max(1)})).into_response(),
        )
    }
    .await;
    match result {
        Ok(r) => super::finish(r, Provider::Anthropic, Some(&tenant), None),
        Err(e) => super::fail(e, Provider::Anthropic, Some(&tenant), None),
    }
}
