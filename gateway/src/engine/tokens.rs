//! Token estimates (SPEC §11): ⌈characters / 4⌉, at least 1 for non-empty text.

use serde_json::Value;

/// Bounds accepted for max_tokens and its equivalents.
pub const MAX_TOKENS_LIMIT: i64 = 1_000_000;

/// Tokens for `chars` characters.
pub fn estimate(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

/// Characters of every string scalar in `v`, skipping the values of `type`, `id` and similar
/// structural keys that are not text a model would read.
pub fn text_chars(v: &Value) -> usize {
    match v {
        Value::String(s) => s.chars().count(),
        Value::Array(a) => a.iter().map(text_chars).sum(),
        Value::Object(o) => o
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "type" | "id" | "tool_use_id" | "tool_call_id" | "call_id" | "cache_control"
                )
            })
            .map(|(_, v)| text_chars(v))
            .sum(),
        _ => 0,
    }
}

/// Truncates `text` to `max_tokens` (keeps the first 4 × max_tokens characters), in place;
/// `true` when cut.
pub fn truncate(mut text: String, max_tokens: Option<u64>) -> (String, bool) {
    let Some(m) = max_tokens else {
        return (text, false);
    };
    let keep = (m as usize).saturating_mul(4);
    match text.char_indices().nth(keep) {
        Some((byte, _)) => {
            text.truncate(byte);
            (text, true)
        }
        None => (text, false),
    }
}
