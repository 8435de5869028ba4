//! JSON-RPC 2.0 messages as MCP uses them: parsing with a precise error per problem, and the
//! reply shapes. Our own serde types, no SDK (see `docs/mcp.md`).

use serde_json::{Map, Value, json};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// Unknown method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Invalid parameters (unknown tool, arguments breaking the schema before 2025-11-25).
pub const INVALID_PARAMS: i64 = -32602;
/// Internal error (and injected 5xx faults).
pub const INTERNAL_ERROR: i64 = -32603;
/// Server error (injected rate limits, refused access, transport-level refusals).
pub const SERVER_ERROR: i64 = -32000;
/// Resource not found (SEP-compatible code the SDKs know).
pub const RESOURCE_NOT_FOUND: i64 = -32002;

/// Most messages in one batch.
pub const MAX_BATCH: usize = 100;

/// One incoming message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request: answered.
    Request {
        /// Its id (a string or a number).
        id: Value,
        /// The method.
        method: String,
        /// The params (an object or absent).
        params: Option<Value>,
    },
    /// A notification: never answered.
    Notification {
        /// The method.
        method: String,
        /// The params.
        params: Option<Value>,
    },
    /// A response to a request of ours (accepted and dropped: this server sends none that need
    /// one).
    Response,
}

impl Message {
    /// The method (`None` for a response).
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Response => None,
        }
    }

    /// The params.
    pub fn params(&self) -> Option<&Value> {
        match self {
            Message::Request { params, .. } | Message::Notification { params, .. } => {
                params.as_ref()
            }
            Message::Response => None,
        }
    }
}

/// A body as received.
#[derive(Debug)]
pub enum Body {
    /// One message, or the error reply to it.
    Single(Result<Message, Value>),
    /// A batch: each message, or the error reply to it.
    Batch(Vec<Result<Message, Value>>),
}

/// An error reply.
pub fn error(
    id: Option<&Value>,
    code: i64,
    message: impl Into<String>,
    data: Option<Value>,
) -> Value {
    let mut err = Map::new();
    err.insert("code".into(), json!(code));
    err.insert("message".into(), Value::String(message.into()));
    if let Some(d) = data {
        err.insert("data".into(), d);
    }
    json!({"jsonrpc": "2.0", "id": id.cloned().unwrap_or(Value::Null), "error": err})
}

/// A result reply.
pub fn result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A notification to send.
pub fn notification(method: &str, params: Option<Value>) -> Value {
    match params {
        Some(p) => json!({"jsonrpc": "2.0", "method": method, "params": p}),
        None => json!({"jsonrpc": "2.0", "method": method}),
    }
}

/// Parses a body: `Err` is the error reply to the whole body (unparsable, or an empty or
/// oversized batch), answered with HTTP 400.
pub fn parse(body: &[u8]) -> Result<Body, Value> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| error(None, PARSE_ERROR, format!("Parse error: {e}"), None))?;
    match v {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(error(
                    None,
                    INVALID_REQUEST,
                    "Invalid Request: empty batch",
                    None,
                ));
            }
            if items.len() > MAX_BATCH {
                return Err(error(
                    None,
                    INVALID_REQUEST,
                    format!("Invalid Request: a batch holds at most {MAX_BATCH} messages"),
                    None,
                ));
            }
            Ok(Body::Batch(items.into_iter().map(message).collect()))
        }
        other => Ok(Body::Single(message(other))),
    }
}

/// One message, or the error reply explaining what is wrong with it.
pub fn message(v: Value) -> Result<Message, Value> {
    let Value::Object(mut o) = v else {
        return Err(error(
            None,
            INVALID_REQUEST,
            "Invalid Request: a message is a JSON object",
            None,
        ));
    };
    let id = o.remove("id");
    let id_ok = matches!(&id, Some(Value::String(_)) | Some(Value::Number(_)));
    let bad = |msg: &str| {
        error(
            id.as_ref().filter(|_| id_ok),
            INVALID_REQUEST,
            format!("Invalid Request: {msg}"),
            None,
        )
    };
    if o.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(bad("\"jsonrpc\" must be \"2.0\""));
    }
    if o.contains_key("result") || o.contains_key("error") {
        return if o.contains_key("method") {
            Err(bad("a message is a request or a response, not both"))
        } else {
            Ok(Message::Response)
        };
    }
    let method = match o.remove("method") {
        Some(Value::String(m)) if !m.is_empty() => m,
        Some(_) => return Err(bad("\"method\" must be a non-empty string")),
        None => return Err(bad("\"method\" is missing")),
    };
    let params = match o.remove("params") {
        None | Some(Value::Null) => None,
        Some(p @ Value::Object(_)) => Some(p),
        Some(_) => return Err(bad("\"params\" must be an object")),
    };
    match id {
        None => Ok(Message::Notification { method, params }),
        Some(id) if id_ok => Ok(Message::Request { id, method, params }),
        Some(_) => Err(bad("\"id\" must be a string or a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(v: &Value) -> i64 {
        v["error"]["code"].as_i64().unwrap()
    }

    #[test]
    fn parses_and_refuses_precisely() {
        assert_eq!(code(&parse(b"{nope").unwrap_err()), PARSE_ERROR);
        assert_eq!(code(&parse(b"[]").unwrap_err()), INVALID_REQUEST);
        let Body::Single(Ok(Message::Request { id, method, params })) =
            parse(br#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!((id, method.as_str(), params), (json!(7), "ping", None));
        let Body::Single(Ok(Message::Notification { method, .. })) =
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(method, "notifications/initialized");
        for bad in [
            &br#"{"id":1,"method":"ping"}"#[..],
            br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":3}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#,
            br#"{"jsonrpc":"2.0","id":{"a":1},"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
            br#""text""#,
        ] {
            let Body::Single(Err(e)) = parse(bad).unwrap() else {
                panic!("{}", String::from_utf8_lossy(bad))
            };
            assert_eq!(
                code(&e),
                INVALID_REQUEST,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // The id of an invalid request is echoed when it is a valid id.
        let Body::Single(Err(e)) = parse(br#"{"jsonrpc":"2.0","id":"a","method":5}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(e["id"], json!("a"));
        let Body::Batch(items) = parse(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"},5]"#).unwrap()
        else {
            panic!()
        };
        assert!(items[0].is_ok() && items[1].is_err());
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#).unwrap(),
            Body::Single(Ok(Message::Response))
        ));
    }
}
