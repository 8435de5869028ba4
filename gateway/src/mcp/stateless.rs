//! The per-request envelope of the sessionless 2026-07-28 revision: `_meta` carries the protocol
//! version and the client's capabilities, and the `Mcp-Method` / `Mcp-Name` headers repeat the
//! method and the name (or URI) so that intermediaries can route without reading the body.
//!
//! A request failing these checks is answered 400: -32602 for `_meta`, -32020 for a header that
//! does not match the body, -32022 for a version this server does not speak.

use base64::Engine;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::dispatch::{META_CAPABILITIES, META_VERSION};
use super::jsonrpc::{self, INVALID_PARAMS, Message};
use super::revision::Revision;

/// A routing header does not match the body.
pub const HEADER_MISMATCH: i64 = -32020;
/// The protocol version is not supported.
pub const UNSUPPORTED_VERSION: i64 = -32022;

/// Why a request was refused: the HTTP status and the JSON-RPC error body.
pub type Refusal = (StatusCode, Value);

/// The versions this server speaks, newest first (the `supported` list of -32022).
pub fn supported() -> Value {
    json!(
        Revision::ALL
            .iter()
            .rev()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
    )
}

/// The -32022 refusal of `requested`.
pub fn unsupported(id: Option<&Value>, requested: &str) -> Refusal {
    (
        StatusCode::BAD_REQUEST,
        jsonrpc::error(
            id,
            UNSUPPORTED_VERSION,
            "Unsupported protocol version",
            Some(json!({"supported": supported(), "requested": requested})),
        ),
    )
}

/// A header value: trimmed; `=?base64?…?=` decoded.
fn header(headers: &HeaderMap, name: &str) -> Result<Option<String>, ()> {
    let mut values = headers.get_all(name).iter();
    let Some(v) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(()); // duplicated routing header
    }
    let s = v.to_str().map_err(|_| ())?.trim();
    if let Some(b64) = s
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| ())?;
        return String::from_utf8(bytes).map(Some).map_err(|_| ());
    }
    Ok(Some(s.to_string()))
}

/// The name a method's `Mcp-Name` header repeats, if it has one.
fn named(method: &str, params: Option<&Value>) -> Option<Option<String>> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        "tasks/get" | "tasks/update" | "tasks/cancel" => "taskId",
        _ => return None,
    };
    Some(
        params
            .and_then(|p| p.get(key))
            .and_then(Value::as_str)
            .map(String::from),
    )
}

/// Checks one 2026-07-28 request (the `MCP-Protocol-Version` header named that revision).
pub fn check(headers: &HeaderMap, msg: &Message, header_version: &str) -> Result<(), Refusal> {
    let (id, method, params) = match msg {
        Message::Request { id, method, params } => (Some(id), method.as_str(), params.as_ref()),
        Message::Notification { method, params } => (None, method.as_str(), params.as_ref()),
        Message::Response => return Ok(()),
    };
    let bad = |code: i64, message: String| {
        Err((
            StatusCode::BAD_REQUEST,
            jsonrpc::error(id, code, message, None),
        ))
    };
    if id.is_some() {
        let meta = params.and_then(|p| p.get("_meta"));
        let version = meta
            .and_then(|m| m.get(META_VERSION))
            .and_then(Value::as_str);
        let caps = meta.and_then(|m| m.get(META_CAPABILITIES));
        let Some(version) = version else {
            return bad(
                INVALID_PARAMS,
                format!(
                    "Invalid params: _meta[\"{META_VERSION}\"] is required in protocol revision 2026-07-28"
                ),
            );
        };
        if !caps.is_some_and(Value::is_object) {
            return bad(
                INVALID_PARAMS,
                format!(
                    "Invalid params: _meta[\"{META_CAPABILITIES}\"] (an object) is required in protocol revision 2026-07-28"
                ),
            );
        }
        if version != header_version {
            return bad(
                HEADER_MISMATCH,
                format!(
                    "The MCP-Protocol-Version header ({header_version}) does not match _meta[\"{META_VERSION}\"] ({version})"
                ),
            );
        }
        if Revision::parse(version) != Some(Revision::V2026_07_28) {
            return Err(unsupported(id, version));
        }
    }
    match header(headers, "mcp-method") {
        Ok(Some(m)) if m == method => {}
        Ok(Some(m)) => {
            return bad(
                HEADER_MISMATCH,
                format!(
                    "The Mcp-Method header ({m}) does not match the request's method ({method})"
                ),
            );
        }
        Ok(None) => {
            return bad(HEADER_MISMATCH, "The Mcp-Method header is required".into());
        }
        Err(()) => {
            return bad(
                HEADER_MISMATCH,
                "The Mcp-Method header is malformed or repeated".into(),
            );
        }
    }
    if let Some(name) = named(method, params) {
        match header(headers, "mcp-name") {
            Ok(Some(n)) if Some(&n) == name.as_ref() => {}
            Ok(Some(n)) => {
                return bad(
                    HEADER_MISMATCH,
                    format!("The Mcp-Name header ({n}) does not match the request body"),
                );
            }
            Ok(None) => {
                return bad(
                    HEADER_MISMATCH,
                    "The Mcp-Name header is required for this method".into(),
                );
            }
            Err(()) => {
                return bad(
                    HEADER_MISMATCH,
                    "The Mcp-Name header is malformed or repeated".into(),
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn req(method: &str, params: Value) -> Message {
        Message::Request {
            id: json!(1),
            method: method.into(),
            params: Some(params),
        }
    }

    fn meta() -> Value {
        json!({META_VERSION: "2026-07-28", META_CAPABILITIES: {}})
    }

    fn code(r: Result<(), Refusal>) -> i64 {
        r.unwrap_err().1["error"]["code"].as_i64().unwrap()
    }

    #[test]
    fn envelope_checks() {
        let mut h = HeaderMap::new();
        h.insert("mcp-method", HeaderValue::from_static("tools/call"));
        h.insert("mcp-name", HeaderValue::from_static("  add  "));
        let good = req("tools/call", json!({"name": "add", "_meta": meta()}));
        assert!(check(&h, &good, "2026-07-28").is_ok());
        assert_eq!(
            code(check(
                &h,
                &req("tools/call", json!({"name": "add"})),
                "2026-07-28"
            )),
            INVALID_PARAMS
        );
        assert_eq!(
            code(check(
                &h,
                &req("tools/call", json!({"name": "sub", "_meta": meta()})),
                "2026-07-28"
            )),
            HEADER_MISMATCH
        );
        assert_eq!(code(check(&h, &good, "2027-01-01")), HEADER_MISMATCH);
        let later = req(
            "tools/call",
            json!({"name": "add", "_meta": {META_VERSION: "2027-01-01", META_CAPABILITIES: {}}}),
        );
        assert_eq!(code(check(&h, &later, "2027-01-01")), UNSUPPORTED_VERSION);
        h.insert("mcp-method", HeaderValue::from_static("TOOLS/CALL"));
        assert_eq!(code(check(&h, &good, "2026-07-28")), HEADER_MISMATCH);
        // Base64-wrapped names are decoded before comparing.
        h.insert("mcp-method", HeaderValue::from_static("tools/call"));
        h.insert("mcp-name", HeaderValue::from_static("=?base64?YWRk?="));
        assert!(check(&h, &good, "2026-07-28").is_ok());
    }
}
