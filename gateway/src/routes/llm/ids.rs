//! Realistic identifiers (`chatcmpl-…`, `msg_…`, `resp_…`, `call_…`, `toolu_…`) and timestamps.

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random(prefix: &str, len: usize) -> String {
    let mut s = String::with_capacity(prefix.len() + len);
    s.push_str(prefix);
    for _ in 0..len {
        s.push(ALPHABET[fastrand::usize(..ALPHABET.len())] as char);
    }
    s
}

/// `chatcmpl-…`
pub fn chat_id() -> String {
    random("chatcmpl-", 29)
}
/// `msg_…` (Anthropic messages, Responses message items)
pub fn msg_id() -> String {
    random("msg_", 24)
}
/// `resp_…`
pub fn resp_id() -> String {
    random("resp_", 32)
}
/// `call_…` (OpenAI tool call ids)
pub fn call_id() -> String {
    random("call_", 24)
}
/// `fc_…` (Responses function call items)
pub fn fc_id() -> String {
    random("fc_", 32)
}
/// `toolu_…` (Anthropic tool use ids)
pub fn toolu_id() -> String {
    random("toolu_", 24)
}
/// `req_…` (Anthropic request ids)
pub fn request_id() -> String {
    random("req_", 24)
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
