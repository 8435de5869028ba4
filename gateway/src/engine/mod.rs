//! The mock model: no I/O, no clocks. Given a tenant and a normalised conversation it decides the
//! answer (text or a tool call); the API adapters in `routes::llm` render it in each provider's
//! wire format.
//!
//! ```text
//!  request JSON ──dialect──► Conversation ──answer(tenant)──► Answer ──dialect──► JSON / SSE frames
//!                                             (decide + max_tokens + token counts)
//! ```
//!
//! [`answer`] is the mock model without HTTP: the LLM routes render its [`Answer`] in each
//! provider's shape, and any other caller (the execute API's `openai_chat`, the audit log) can run
//! it and read the answer without axum types.

pub mod embed;
pub mod matcher;
pub mod settings;
pub mod tokens;
pub mod tools;

use serde_json::Value;

use crate::snapshot::TenantRuntime;

/// What the request allows regarding tool calls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ToolChoice {
    /// The model decides (a matching scenario's tool is called).
    #[default]
    Auto,
    /// Never call a tool.
    None,
    /// Some tool must be called.
    Required,
    /// This tool must be called.
    Named(String),
}

/// A conversation reduced to what scenario matching needs, the same for every API.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    /// Text of the most recent user message that holds text.
    pub last_user_text: Option<String>,
    /// User messages holding text (tool-result-only messages do not count).
    pub user_turns: usize,
    /// Tool results anywhere in the conversation (the loop guard counts these).
    pub tool_results: usize,
    /// Names of the tools whose results are in the conversation (unresolvable ids give `None`).
    pub answered_tools: Vec<Option<String>>,
    /// Tool names the request offers.
    pub offered_tools: Vec<String>,
    /// The request's tool_choice.
    pub tool_choice: ToolChoice,
    /// Characters of message and system text, for the token estimate.
    pub input_chars: usize,
}

/// The answer the mock model gives.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Answer with text.
    Text {
        /// The text (truncated later by max_tokens).
        text: String,
        /// The scenario that produced it (`None`: default response or fallback).
        scenario: Option<usize>,
    },
    /// Call a tool.
    ToolCall {
        /// The tool's name.
        name: String,
        /// The arguments (a JSON object).
        arguments: Value,
        /// The scenario that produced it.
        scenario: usize,
    },
}

impl Decision {
    /// The scenario behind the answer, if any (for hit counters).
    pub fn scenario(&self) -> Option<usize> {
        match self {
            Decision::Text { scenario, .. } => *scenario,
            Decision::ToolCall { scenario, .. } => Some(*scenario),
        }
    }
}

/// Picks the scenario answering `text` at turn `turns` (SPEC §3.2 and §11): highest priority,
/// then one whose `turn` matches over one without, then most distinct keywords matched, then
/// earliest created.
pub fn select(tenant: &TenantRuntime, text: &str, turns: usize) -> Option<usize> {
    let hits = tenant.matcher.scan(text);
    let mut best: Option<(usize, (i32, bool, usize))> = None;
    for (i, s) in tenant.config.scenarios.iter().enumerate() {
        if !tenant.matcher.has_keywords(i) {
            continue;
        }
        let turn_bound = match s.spec.turn {
            Some(t) if t as usize != turns => continue,
            Some(_) => true,
            None => false,
        };
        let hits = hits.per_scenario[i];
        let matched = match s.spec.match_mode {
            understudy_crds::MatchMode::Any => hits > 0,
            understudy_crds::MatchMode::All => hits == tenant.matcher.keyword_count(i),
        };
        if !matched {
            continue;
        }
        let rank = (s.spec.priority, turn_bound, hits);
        // Strictly greater: on a full tie the earlier scenario stays.
        if best.as_ref().is_none_or(|(_, r)| rank > *r) {
            best = Some((i, rank));
        }
    }
    best.map(|(i, _)| i)
}

/// The answer text of a scenario: `responseJson` serialised, else `response`.
pub fn scenario_text(tenant: &TenantRuntime, idx: usize) -> String {
    let spec = &tenant.config.scenarios[idx].spec;
    match &spec.response_json {
        Some(v) => serde_json::to_string(v).unwrap_or_default(),
        None => spec.response.clone(),
    }
}

/// The text when no scenario matches.
pub fn fallback_text(tenant: &TenantRuntime) -> String {
    tenant.config.default_response.clone().unwrap_or_else(|| {
        format!(
            "This is Understudy's mock answer for tenant '{}': no scenario matched the request.",
            tenant.id()
        )
    })
}

/// Decides the answer (SPEC §3.3).
pub fn decide(tenant: &TenantRuntime, conv: &Conversation) -> Decision {
    let matched = conv
        .last_user_text
        .as_deref()
        .and_then(|t| select(tenant, t, conv.user_turns));
    let may_call = !conv.offered_tools.is_empty()
        && conv.tool_choice != ToolChoice::None
        && conv.tool_results < tenant.settings.max_tool_results;
    if may_call {
        let scenarios = &tenant.config.scenarios;
        let tool_of = |i: usize| scenarios[i].spec.tool_name.as_deref();
        let offered = |name: &str| conv.offered_tools.iter().any(|t| t == name);
        let answered = |name: &str| {
            conv.answered_tools
                .iter()
                .any(|r| r.as_deref() == Some(name))
        };
        // The highest-priority scenario (earliest on ties) defining a tool that satisfies `ok`.
        let best_defining = |ok: &dyn Fn(&str) -> bool| {
            let mut best: Option<usize> = None;
            for (i, s) in scenarios.iter().enumerate() {
                if s.spec.tool_name.as_deref().is_some_and(ok)
                    && best.is_none_or(|b| s.spec.priority > scenarios[b].spec.priority)
                {
                    best = Some(i);
                }
            }
            best
        };
        let call = match &conv.tool_choice {
            ToolChoice::Named(name) => matched
                .filter(|&i| tool_of(i) == Some(name.as_str()))
                .or_else(|| best_defining(&|n| n == name)),
            ToolChoice::Required => matched
                .filter(|&i| tool_of(i).is_some_and(offered))
                .or_else(|| best_defining(&|n| offered(n))),
            ToolChoice::Auto => {
                matched.filter(|&i| tool_of(i).is_some_and(|n| offered(n) && !answered(n)))
            }
            ToolChoice::None => None,
        };
        if let Some(i) = call {
            let spec = &scenarios[i].spec;
            return Decision::ToolCall {
                name: spec.tool_name.clone().unwrap_or_default(),
                arguments: spec
                    .tool_arguments
                    .clone()
                    .unwrap_or_else(|| Value::Object(Default::default())),
                scenario: i,
            };
        }
    }
    match matched {
        Some(i) => Decision::Text {
            text: scenario_text(tenant, i),
            scenario: Some(i),
        },
        None => Decision::Text {
            text: fallback_text(tenant),
            scenario: None,
        },
    }
}

/// Why the answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The whole text.
    Complete,
    /// Cut by max tokens.
    Length,
    /// A tool call.
    ToolCall,
}

/// A tool call the mock model makes.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    /// The tool's name.
    pub name: String,
    /// Its arguments (a JSON object).
    pub arguments: Value,
    /// The arguments serialised, as the OpenAI APIs carry them.
    pub arguments_json: String,
}

/// The mock model's answer to one request: the one type every dialect renders.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The scenario that produced it (`None`: default response or fallback).
    pub scenario: Option<usize>,
    /// The text after max tokens (empty for a tool call), shared with the stream that sends it.
    pub text: std::sync::Arc<String>,
    /// The tool call, when the answer is one.
    pub call: Option<ToolCall>,
    /// Why it ended.
    pub stop: Stop,
    /// Estimated input tokens (at least 1).
    pub input_tokens: u64,
    /// Estimated output tokens of one choice.
    pub output_tokens: u64,
}

impl Answer {
    /// Whether max tokens cut the text.
    pub fn truncated(&self) -> bool {
        self.stop == Stop::Length
    }
}

/// Runs the mock model: decides (SPEC §3.3), applies `max_tokens` (SPEC §11) and estimates
/// tokens.
pub fn answer(tenant: &TenantRuntime, conv: &Conversation, max_tokens: Option<u64>) -> Answer {
    let input_tokens = tokens::estimate(conv.input_chars).max(1);
    match decide(tenant, conv) {
        Decision::Text { text, scenario } => {
            let (text, cut) = tokens::truncate(text, max_tokens);
            let output_tokens = tokens::estimate(text.chars().count());
            Answer {
                scenario,
                text: std::sync::Arc::new(text),
                call: None,
                stop: if cut { Stop::Length } else { Stop::Complete },
                input_tokens,
                output_tokens,
            }
        }
        Decision::ToolCall {
            name,
            arguments,
            scenario,
        } => {
            let arguments_json = serde_json::to_string(&arguments).unwrap_or_else(|_| "{}".into());
            let output_tokens = tokens::estimate(arguments_json.chars().count() + name.len());
            Answer {
                scenario: Some(scenario),
                text: Default::default(),
                call: Some(ToolCall {
                    name,
                    arguments,
                    arguments_json,
                }),
                stop: Stop::ToolCall,
                input_tokens,
                output_tokens,
            }
        }
    }
}

#[cfg(test)]
mod tests;
