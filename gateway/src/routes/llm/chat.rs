//! `POST /v1/chat/completions` (OpenAI Chat Completions), streamed or not.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{LlmError, Provider, sse};
use crate::engine::{Answer, Conversation, Stop, ToolCall, ToolChoice, tokens};

/// The request fields the mock reads; everything else is accepted and ignored.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// Echoed in the answer.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<i64>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    max_completion_tokens: Option<i64>,
    #[serde(default)]
    tools: Option<Vec<ChatTool>>,
    #[serde(default)]
    functions: Option<Vec<FunctionDef>>,
    #[serde(default)]
    tool_choice: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// One message.
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallIn>>,
    #[serde(default)]
    tool_call_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ToolCallIn {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionCallIn>,
    #[serde(default)]
    custom: Option<FunctionCallIn>,
}

#[derive(Debug, Deserialize)]
struct FunctionCallIn {
    name: String,
    #[serde(default)]
    arguments: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct ChatTool {
    #[serde(default)]
    function: Option<FunctionDef>,
    #[serde(default)]
    custom: Option<FunctionDef>,
}

#[derive(Debug, Deserialize)]
struct FunctionDef {
    name: String,
}

fn tool_choice(v: Option<&Value>) -> Result<ToolChoice, LlmError> {
    match v {
        None | Some(Value::Null) => Ok(ToolChoice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(LlmError::invalid(
                format!("Invalid value for 'tool_choice': '{other}'. Supported values are: 'none', 'auto' and 'required'."),
                Some("tool_choice"),
            )),
        },
        Some(obj) => obj
            .pointer("/function/name")
            .or_else(|| obj.pointer("/custom/name"))
            .and_then(Value::as_str)
            .map(|n| ToolChoice::Named(n.to_string()))
            .ok_or_else(|| {
                LlmError::invalid(
                    "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or {\"type\":\"function\",\"function\":{\"name\":…}}.",
                    Some("tool_choice"),
                )
            }),
    }
}

/// Reduces the request to a [`Conversation`].
pub fn conversation(req: &ChatRequest) -> Result<Conversation, LlmError> {
    let mut conv = Conversation {
        tool_choice: tool_choice(req.tool_choice.as_ref())?,
        ..Default::default()
    };
    if let Some(tools) = &req.tools {
        conv.offered_tools = tools
            .iter()
            .filter_map(|t| {
                t.function
                    .as_ref()
                    .or(t.custom.as_ref())
                    .map(|f| f.name.clone())
            })
            .collect();
    }
    if let Some(fns) = &req.functions {
        conv.offered_tools
            .extend(fns.iter().map(|f| f.name.clone()));
    }
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for m in &req.messages {
        if let Some(c) = &m.content {
            conv.input_chars += tokens::text_chars(c);
        }
        match m.role.as_str() {
            "user" => {
                let text = m
                    .content
                    .as_ref()
                    .map(super::content_text)
                    .unwrap_or_default();
                if !text.is_empty() {
                    conv.user_turns += 1;
                    conv.last_user_text = Some(text);
                }
            }
            "assistant" => {
                for c in m.tool_calls.iter().flatten() {
                    if let (Some(id), Some(f)) = (&c.id, c.function.as_ref().or(c.custom.as_ref()))
                    {
                        call_names.insert(id, &f.name);
                        if let Some(a) = &f.arguments {
                            conv.input_chars += tokens::text_chars(a);
                        }
                    }
                }
            }
            "tool" => {
                conv.tool_results += 1;
                let name = m
                    .tool_call_id
                    .as_deref()
                    .and_then(|id| call_names.get(id))
                    .map(|n| n.to_string());
                conv.answered_tools.push(name);
            }
            "function" => {
                conv.tool_results += 1;
                conv.answered_tools.push(m.name.clone());
            }
            _ => {}
        }
    }
    Ok(conv)
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

fn usage(prompt: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        prompt_tokens_details: PromptDetails {
            cached_tokens: 0,
            audio_tokens: 0,
        },
        completion_tokens_details: CompletionDetails {
            reasoning_tokens: 0,
            audio_tokens: 0,
            accepted_prediction_tokens: 0,
            rejected_prediction_tokens: 0,
        },
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    usage: Usage,
    service_tier: &'static str,
    system_fingerprint: &'static str,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: OutMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    annotations: [(); 0],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<OutToolCall<'a>>>,
}

#[derive(Serialize)]
struct OutToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// Fixed identifiers of one answer (random in production, fixed in golden tests).
pub struct Ids {
    /// `chatcmpl-…`
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// `call_…` for a tool call.
    pub call_id: String,
}

impl Ids {
    /// Fresh random identifiers.
    pub fn fresh() -> Self {
        Ids {
            id: super::ids::chat_id(),
            created: super::ids::now_secs(),
            call_id: super::ids::call_id(),
        }
    }
}

/// Chat Completions' `finish_reason`.
fn finish_reason(stop: Stop) -> &'static str {
    match stop {
        Stop::Complete => "stop",
        Stop::Length => "length",
        Stop::ToolCall => "tool_calls",
    }
}

/// The non-streamed `chat.completion` body.
pub fn render_json(model: &str, n: u32, ans: &Answer, prompt_tokens: u64, ids: &Ids) -> Vec<u8> {
    let choices = (0..n)
        .map(|index| Choice {
            index,
            message: OutMessage {
                role: "assistant",
                content: if ans.call.is_some() {
                    None
                } else {
                    Some(ans.text.as_str())
                },
                refusal: None,
                annotations: [],
                tool_calls: ans.call.as_ref().map(|c| {
                    vec![OutToolCall {
                        id: &ids.call_id,
                        kind: "function",
                        function: OutFunction {
                            name: &c.name,
                            arguments: &c.arguments_json,
                        },
                    }]
                }),
            },
            logprobs: None,
            finish_reason: finish_reason(ans.stop),
        })
        .collect();
    let body = Completion {
        id: &ids.id,
        object: "chat.completion",
        created: ids.created,
        model,
        choices,
        usage: usage(prompt_tokens, ans.output_tokens * n as u64),
        service_tier: "default",
        system_fingerprint: "fp_understudy",
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The streamed `chat.completion.chunk` events: framing events written straight into the plan's
/// buffer, the content pieces rendered as the stream reaches them.
pub fn render_stream(
    model: &str,
    n: u32,
    ans: &Answer,
    prompt_tokens: u64,
    include_usage: bool,
    chunk_chars: usize,
    ids: &Ids,
) -> sse::Plan {
    let model_json = serde_json::to_string(model).unwrap_or_else(|_| "\"\"".into());
    let usage_null = if include_usage { ",\"usage\":null" } else { "" };
    let prefix = format!(
        "{{\"id\":\"{}\",\"object\":\"chat.completion.chunk\",\"created\":{},\"model\":{},\"service_tier\":\"default\",\"system_fingerprint\":\"fp_understudy\"",
        ids.id, ids.created, model_json
    );
    let head: Arc<str> = Arc::from(format!("{prefix}{usage_null},\"choices\":[{{\"index\":"));
    let (content, per_piece) = match &ans.call {
        None => (ans.text.clone(), chunk_chars),
        Some(c) => (Arc::new(c.arguments_json.clone()), chunk_chars.max(16)),
    };
    let mut plan = sse::Plan::with_capacity(4 * (head.len() + 96) * n as usize);
    let chunk =
        |plan: &mut sse::Plan, index: u32, delta: &dyn Fn(&mut Vec<u8>), finish: Option<&str>| {
            plan.push_with(None, |buf| {
                chunk_into(buf, &head, index, delta, finish);
            });
        };
    let is_call = ans.call.is_some();
    for index in 0..n {
        chunk(
            &mut plan,
            index,
            &|b| match &ans.call {
                None => b.extend_from_slice(
                    b"{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}",
                ),
                Some(ToolCall { name, .. }) => {
                    b.extend_from_slice(b"{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":\"");
                    b.extend_from_slice(ids.call_id.as_bytes());
                    b.extend_from_slice(b"\",\"type\":\"function\",\"function\":{\"name\":");
                    json_str(b, name);
                    b.extend_from_slice(b",\"arguments\":\"\"}}]}");
                }
            },
            None,
        );
        if index == 0 {
            plan.mark_content();
        }
        let head = head.clone();
        plan.push_pieces(None, content.clone(), per_piece, move |_, piece, b| {
            chunk_into(b, &head, index, &|b| piece_delta(b, is_call, piece), None)
        });
        chunk(
            &mut plan,
            index,
            &|b| b.extend_from_slice(b"{}"),
            Some(finish_reason(ans.stop)),
        );
    }
    if include_usage {
        let usage = usage(prompt_tokens, ans.output_tokens * n as u64);
        plan.push_with(None, |buf| {
            buf.extend_from_slice(prefix.as_bytes());
            buf.extend_from_slice(b",\"choices\":[],\"usage\":");
            let _ = serde_json::to_writer(&mut *buf, &usage);
            buf.push(b'}');
        });
    }
    plan.push(None, "[DONE]");
    plan
}

/// The delta carrying one piece: text content, or a piece of a tool call's arguments.
fn piece_delta(b: &mut Vec<u8>, call: bool, piece: &str) {
    if call {
        b.extend_from_slice(b"{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":");
        json_str(b, piece);
        b.extend_from_slice(b"}}]}");
    } else {
        b.extend_from_slice(b"{\"content\":");
        json_str(b, piece);
        b.push(b'}');
    }
}

/// Writes a string as a JSON string.
fn json_str(buf: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// One `chat.completion.chunk` payload: `head` (id, model, … up to the choice index), the index,
/// the delta and the finish reason.
fn chunk_into(
    buf: &mut Vec<u8>,
    head: &str,
    index: u32,
    delta: &dyn Fn(&mut Vec<u8>),
    finish: Option<&str>,
) {
    buf.extend_from_slice(head.as_bytes());
    buf.extend_from_slice(index.to_string().as_bytes());
    buf.extend_from_slice(b",\"delta\":");
    delta(buf);
    buf.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":");
    match finish {
        Some(f) => {
            buf.push(b'"');
            buf.extend_from_slice(f.as_bytes());
            buf.push(b'"');
        }
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b"}]}");
}

/// Checks and reads the request.
pub fn validate(req: &ChatRequest) -> Result<(u32, Option<u64>), LlmError> {
    if req.messages.is_empty() {
        return Err(LlmError::invalid(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            Some("messages"),
        ));
    }
    let n = match req.n {
        None => 1,
        Some(n) if (1..=128).contains(&n) => n as u32,
        Some(n) => {
            return Err(LlmError::invalid(
                format!("Invalid 'n': {n} is out of range; it must be between 1 and 128."),
                Some("n"),
            ));
        }
    };
    let max = match req.max_completion_tokens {
        Some(_) => super::max_tokens(req.max_completion_tokens, "max_completion_tokens")?,
        None => super::max_tokens(req.max_tokens, "max_tokens")?,
    };
    Ok((n, max))
}

/// The Chat Completions dialect.
pub struct Chat;

impl super::Dialect for Chat {
    type Request = ChatRequest;
    const PROVIDER: Provider = Provider::OpenAi;
    const TOOL: &'static str = "llm.chat";

    fn prepare(req: &ChatRequest) -> Result<super::Prepared, LlmError> {
        let (_, max_tokens) = validate(req)?;
        Ok(super::Prepared {
            conv: conversation(req)?,
            max_tokens,
            stream: req.stream.unwrap_or(false),
            choices: choices(req),
        })
    }

    fn render_json(req: &ChatRequest, ans: &Answer) -> Vec<u8> {
        render_json(
            &req.model,
            choices(req),
            ans,
            ans.input_tokens,
            &Ids::fresh(),
        )
    }

    fn render_stream(req: &ChatRequest, ans: &Answer, chunk_chars: usize) -> sse::Plan {
        let include_usage = req
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        render_stream(
            &req.model,
            choices(req),
            ans,
            ans.input_tokens,
            include_usage,
            chunk_chars,
            &Ids::fresh(),
        )
    }
}

/// `n`, validated by [`validate`] already.
fn choices(req: &ChatRequest) -> u32 {
    req.n.map_or(1, |n| n.clamp(1, 128) as u32)
}
