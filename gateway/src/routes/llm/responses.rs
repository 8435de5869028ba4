//! `POST /v1/responses` (OpenAI Responses API), streamed with its `response.*` events or not.
//!
//! Stateless: a conversation is whatever `input` carries (items of earlier turns included);
//! `previous_response_id` is accepted and ignored.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{LlmError, Provider, sse};
use crate::engine::{Answer, Conversation, ToolCall, ToolChoice, tokens};

/// The fields the mock reads.
#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    /// Echoed.
    pub model: String,
    /// A string or a list of input items.
    pub input: Value,
    #[serde(default)]
    instructions: Option<Value>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    max_output_tokens: Option<i64>,
    #[serde(default)]
    text: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<String>,
}

fn tool_choice(v: Option<&Value>) -> Result<ToolChoice, LlmError> {
    match v {
        None | Some(Value::Null) => Ok(ToolChoice::Auto),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            other => Err(LlmError::invalid(
                format!("Invalid value for 'tool_choice': '{other}'."),
                Some("tool_choice"),
            )),
        },
        Some(obj) if obj.get("type").and_then(Value::as_str) == Some("function") => obj
            .get("name")
            .and_then(Value::as_str)
            .map(|n| ToolChoice::Named(n.to_string()))
            .ok_or_else(|| {
                LlmError::invalid(
                    "Missing required parameter: 'tool_choice.name'.",
                    Some("tool_choice.name"),
                )
            }),
        // Hosted tool choices (file_search, …) never call a scenario tool.
        Some(_) => Ok(ToolChoice::None),
    }
}

/// Reduces the request to a [`Conversation`].
fn conversation(req: &ResponsesRequest) -> Result<Conversation, LlmError> {
    let mut conv = Conversation {
        tool_choice: tool_choice(req.tool_choice.as_ref())?,
        ..Default::default()
    };
    conv.offered_tools = req
        .tools
        .iter()
        .flatten()
        .filter(|t| {
            t.get("type")
                .and_then(Value::as_str)
                .is_none_or(|ty| ty == "function" || ty == "custom")
        })
        .filter_map(|t| t.get("name").and_then(Value::as_str).map(String::from))
        .collect();
    if let Some(i) = &req.instructions {
        conv.input_chars += tokens::text_chars(i);
    }
    match &req.input {
        Value::String(s) => {
            conv.input_chars += s.chars().count();
            if !s.is_empty() {
                conv.user_turns = 1;
                conv.last_user_text = Some(s.clone());
            }
        }
        Value::Array(items) => {
            let mut names: HashMap<String, String> = HashMap::new();
            for (i, item) in items.iter().enumerate() {
                let Some(obj) = item.as_object() else {
                    return Err(LlmError::invalid(
                        format!("Invalid type for 'input[{i}]': expected an object."),
                        Some(&format!("input[{i}]")),
                    ));
                };
                let ty = obj.get("type").and_then(Value::as_str).unwrap_or("message");
                match ty {
                    "message" => {
                        let content = obj.get("content").unwrap_or(&Value::Null);
                        conv.input_chars += tokens::text_chars(content);
                        if obj.get("role").and_then(Value::as_str) == Some("user") {
                            let text = super::content_text(content);
                            if !text.is_empty() {
                                conv.user_turns += 1;
                                conv.last_user_text = Some(text);
                            }
                        }
                    }
                    "function_call" | "custom_tool_call" => {
                        if let (Some(id), Some(name)) = (
                            obj.get("call_id").and_then(Value::as_str),
                            obj.get("name").and_then(Value::as_str),
                        ) {
                            names.insert(id.to_string(), name.to_string());
                        }
                    }
                    "function_call_output" | "custom_tool_call_output" => {
                        conv.tool_results += 1;
                        conv.input_chars += obj.get("output").map(tokens::text_chars).unwrap_or(0);
                        let name = obj
                            .get("call_id")
                            .and_then(Value::as_str)
                            .and_then(|id| names.get(id))
                            .cloned();
                        conv.answered_tools.push(name);
                    }
                    _ => {}
                }
            }
        }
        _ => {
            return Err(LlmError::invalid(
                "Invalid type for 'input': expected a string or an array of input items.",
                Some("input"),
            ));
        }
    }
    Ok(conv)
}

/// Identifiers of one answer.
pub struct Ids {
    /// `resp_…`
    pub id: String,
    /// `msg_…` or `fc_…`
    pub item_id: String,
    /// `call_…`
    pub call_id: String,
    /// Unix seconds.
    pub created: u64,
}

impl Ids {
    fn fresh(call: bool) -> Self {
        Ids {
            id: super::ids::resp_id(),
            item_id: if call {
                super::ids::fc_id()
            } else {
                super::ids::msg_id()
            },
            call_id: super::ids::call_id(),
            created: super::ids::now_secs(),
        }
    }
}

fn item(ans: &Answer, ids: &Ids, done: bool) -> Value {
    match &ans.call {
        Some(ToolCall {
            name,
            arguments_json: args,
            ..
        }) => json!({
            "id": ids.item_id, "type": "function_call",
            "status": if done { "completed" } else { "in_progress" },
            "call_id": ids.call_id, "name": name, "arguments": if done { args.as_str() } else { "" },
        }),
        None => {
            let status = match (done, ans.truncated()) {
                (false, _) => "in_progress",
                (true, true) => "incomplete",
                (true, false) => "completed",
            };
            let content = if done {
                json!([{"type": "output_text", "text": ans.text.as_str(), "annotations": [], "logprobs": []}])
            } else {
                json!([])
            };
            json!({"id": ids.item_id, "type": "message", "status": status, "role": "assistant", "content": content})
        }
    }
}

/// The response object; `done: false` gives the in-progress shape of `response.created`.
fn response(req: &ResponsesRequest, ans: &Answer, input: u64, ids: &Ids, done: bool) -> Value {
    let status = match (done, ans.truncated()) {
        (false, _) => "in_progress",
        (true, true) => "incomplete",
        (true, false) => "completed",
    };
    let tools: Vec<Value> = req
        .tools
        .iter()
        .flatten()
        .map(|t| {
            let mut t = t.clone();
            if t.get("type").and_then(Value::as_str) == Some("function")
                && let Some(o) = t.as_object_mut()
            {
                o.entry("strict").or_insert(Value::Bool(true));
                o.entry("parameters").or_insert(json!({}));
                o.entry("description").or_insert(Value::Null);
            }
            t
        })
        .collect();
    let text = req
        .text
        .clone()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({"format": {"type": "text"}}));
    json!({
        "id": ids.id,
        "object": "response",
        "created_at": ids.created,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": if done && ans.truncated() { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "instructions": req.instructions.clone().unwrap_or(Value::Null),
        "max_output_tokens": req.max_output_tokens,
        "model": req.model,
        "output": if done { json!([item(ans, ids, true)]) } else { json!([]) },
        "parallel_tool_calls": req.parallel_tool_calls.unwrap_or(true),
        "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": req.temperature.unwrap_or(1.0),
        "text": text,
        "tool_choice": req.tool_choice.clone().unwrap_or_else(|| json!("auto")),
        "tools": tools,
        "top_p": req.top_p.unwrap_or(1.0),
        "truncation": "disabled",
        "usage": if done {
            json!({
                "input_tokens": input,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": ans.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input + ans.output_tokens,
            })
        } else { Value::Null },
        "user": null,
        "metadata": req.metadata.clone().filter(Value::is_object).unwrap_or_else(|| json!({})),
    })
}

/// One streamed event: `type` and `sequence_number` lead, as in OpenAI's own events.
fn event(ty: &'static str, seq: u64, v: Value) -> Value {
    let mut event = serde_json::Map::new();
    event.insert("type".into(), json!(ty));
    event.insert("sequence_number".into(), json!(seq));
    if let Value::Object(fields) = v {
        event.extend(fields);
    }
    Value::Object(event)
}

/// The streamed events, each with its `sequence_number`.
fn render_stream(
    req: &ResponsesRequest,
    ans: &Answer,
    input: u64,
    chunk_chars: usize,
    ids: &Ids,
) -> sse::Plan {
    let mut plan = sse::Plan::default();
    let mut seq = 0u64;
    let push = |plan: &mut sse::Plan, seq: &mut u64, ty: &'static str, v: Value| {
        plan.push(Some(ty), &event(ty, *seq, v).to_string());
        *seq += 1;
    };
    push(
        &mut plan,
        &mut seq,
        "response.created",
        json!({"response": response(req, ans, input, ids, false)}),
    );
    push(
        &mut plan,
        &mut seq,
        "response.in_progress",
        json!({"response": response(req, ans, input, ids, false)}),
    );
    push(
        &mut plan,
        &mut seq,
        "response.output_item.added",
        json!({"output_index": 0, "item": item(ans, ids, false)}),
    );
    match &ans.call {
        Some(ToolCall {
            arguments_json: args,
            ..
        }) => {
            plan.mark_content();
            let (base, item_id) = (seq, ids.item_id.clone());
            let ty = "response.function_call_arguments.delta";
            seq += plan.push_pieces(
                Some(ty),
                Arc::new(args.clone()),
                chunk_chars.max(16),
                move |i, piece, b| {
                    let v = json!({"item_id": item_id, "output_index": 0, "delta": piece});
                    let _ = serde_json::to_writer(b, &event(ty, base + i as u64, v));
                },
            ) as u64;
            push(
                &mut plan,
                &mut seq,
                "response.function_call_arguments.done",
                json!({"item_id": ids.item_id, "output_index": 0, "arguments": args}),
            );
        }
        None => {
            let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
            push(
                &mut plan,
                &mut seq,
                "response.content_part.added",
                json!({"item_id": ids.item_id, "output_index": 0, "content_index": 0, "part": part("")}),
            );
            plan.mark_content();
            let (base, item_id) = (seq, ids.item_id.clone());
            let ty = "response.output_text.delta";
            seq += plan.push_pieces(
                Some(ty),
                ans.text.clone(),
                chunk_chars,
                move |i, piece, b| {
                    let v = json!({"item_id": item_id, "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []});
                    let _ = serde_json::to_writer(b, &event(ty, base + i as u64, v));
                },
            ) as u64;
            push(
                &mut plan,
                &mut seq,
                "response.output_text.done",
                json!({"item_id": ids.item_id, "output_index": 0, "content_index": 0, "text": ans.text.as_str(), "logprobs": []}),
            );
            push(
                &mut plan,
                &mut seq,
                "response.content_part.done",
                json!({"item_id": ids.item_id, "output_index": 0, "content_index": 0, "part": part(&ans.text)}),
            );
        }
    }
    push(
        &mut plan,
        &mut seq,
        "response.output_item.done",
        json!({"output_index": 0, "item": item(ans, ids, true)}),
    );
    let last = if ans.truncated() {
        "response.incomplete"
    } else {
        "response.completed"
    };
    push(
        &mut plan,
        &mut seq,
        last,
        json!({"response": response(req, ans, input, ids, true)}),
    );
    plan
}

/// The Responses dialect.
pub struct Responses;

impl super::Dialect for Responses {
    type Request = ResponsesRequest;
    const PROVIDER: Provider = Provider::OpenAi;
    const TOOL: &'static str = "llm.responses";

    fn prepare(req: &ResponsesRequest) -> Result<super::Prepared, LlmError> {
        let max_tokens = super::max_tokens(req.max_output_tokens, "max_output_tokens")?;
        let conv = conversation(req)?;
        if conv.last_user_text.is_none()
            && conv.tool_results == 0
            && req.input.as_array().is_some_and(Vec::is_empty)
        {
            return Err(LlmError::invalid(
                "Invalid 'input': empty array.",
                Some("input"),
            ));
        }
        Ok(super::Prepared {
            conv,
            max_tokens,
            stream: req.stream.unwrap_or(false),
            choices: 1,
        })
    }

    fn render_json(req: &ResponsesRequest, ans: &Answer) -> Vec<u8> {
        let ids = Ids::fresh(ans.call.is_some());
        serde_json::to_vec(&response(req, ans, ans.input_tokens, &ids, true)).unwrap_or_default()
    }

    fn render_stream(req: &ResponsesRequest, ans: &Answer, chunk_chars: usize) -> sse::Plan {
        let ids = Ids::fresh(ans.call.is_some());
        render_stream(req, ans, ans.input_tokens, chunk_chars, &ids)
    }
}
