//! The tenant settings the gateway reads (SPEC §3.4), parsed once per configuration change.

use serde_json::Value;

/// Models listed when a tenant's settings name none.
pub const DEFAULT_MODELS: &[&str] = &[
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "o3-mini",
    "text-embedding-3-small",
    "claude-sonnet-5-5",
    "claude-opus-5-5",
    "claude-haiku-4-5",
];

/// Typed view of the known settings keys; unknown keys stay in the document and are ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Characters of text per streamed content event.
    pub stream_chunk_chars: usize,
    /// Delay before the first content event.
    pub stream_ttft_ms: u64,
    /// Delay between events.
    pub stream_chunk_delay_ms: u64,
    /// Random extra delay per event, 0..=this.
    pub stream_jitter_ms: u64,
    /// Loop guard: once this many tool results are in a conversation, answer with text.
    pub max_tool_results: usize,
    /// Model ids listed by /v1/models.
    pub models: Vec<String>,
    /// Default embedding dimension.
    pub embedding_dimensions: usize,
    /// MCP initialize instructions.
    pub instructions: Option<String>,
    /// Whether the tenant's MCP also lists the channel tools.
    pub channel_tools: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stream_chunk_chars: 4,
            stream_ttft_ms: 0,
            stream_chunk_delay_ms: 0,
            stream_jitter_ms: 0,
            max_tool_results: 8,
            models: DEFAULT_MODELS.iter().map(|s| s.to_string()).collect(),
            embedding_dimensions: 1536,
            instructions: None,
            channel_tools: false,
        }
    }
}

/// Largest accepted embedding dimension (OpenAI's largest model has 3072).
pub const MAX_EMBEDDING_DIMENSIONS: usize = 8192;
/// Upper bound for any configured delay, so a typo cannot hang a client for hours.
const MAX_DELAY_MS: u64 = 60_000;

impl Settings {
    /// Reads known keys; a value of the wrong type or out of range falls back to the default.
    pub fn from_value(v: &Value) -> Self {
        let d = Settings::default();
        let uint = |k: &str| v.get(k).and_then(Value::as_u64);
        Settings {
            stream_chunk_chars: uint("stream_chunk_chars")
                .filter(|n| (1..=1_000_000).contains(n))
                .map_or(d.stream_chunk_chars, |n| n as usize),
            stream_ttft_ms: uint("stream_ttft_ms").map_or(0, |n| n.min(MAX_DELAY_MS)),
            stream_chunk_delay_ms: uint("stream_chunk_delay_ms").map_or(0, |n| n.min(MAX_DELAY_MS)),
            stream_jitter_ms: uint("stream_jitter_ms").map_or(0, |n| n.min(MAX_DELAY_MS)),
            max_tool_results: uint("max_tool_results").map_or(d.max_tool_results, |n| n as usize),
            models: v
                .get("models")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m.as_str().map(String::from))
                        .collect::<Vec<_>>()
                })
                .filter(|m| !m.is_empty())
                .unwrap_or(d.models),
            embedding_dimensions: uint("embedding_dimensions")
                .filter(|n| (1..=MAX_EMBEDDING_DIMENSIONS as u64).contains(n))
                .map_or(d.embedding_dimensions, |n| n as usize),
            instructions: v
                .get("instructions")
                .and_then(Value::as_str)
                .map(String::from),
            channel_tools: v
                .get("channel_tools")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        }
    }

    /// Whether streamed answers need pacing (otherwise they go out in one write).
    pub fn paced(&self) -> bool {
        self.stream_ttft_ms > 0 || self.stream_chunk_delay_ms > 0 || self.stream_jitter_ms > 0
    }
}
