//! The ceiling for `bench/run.py`: the least work an LLM stand-in can do. It parses the request
//! with serde_json, looks for a keyword in the last user message, and answers fixed bytes (the
//! gateway's own answer, captured by the benchmark), with TCP_NODELAY like the gateway.
//!
//! For the MCP rows (`bench/mcp.py`) it also answers `POST /mcp/message`, `POST /mcp` and
//! `POST /api/v1/mcp`: it
//! parses the JSON-RPC request, checks it is a `tools/call` of a known tool with object
//! arguments, and answers the gateway's own bytes for it (a fourth file, optional).
//!
//! `ceiling ADDR NONSTREAM_BODY_FILE STREAM_BODY_FILE [MCP_BODY_FILE]`

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use serde::Deserialize;

#[derive(Deserialize)]
struct Req {
    #[allow(dead_code)]
    model: String,
    messages: Vec<Msg>,
    #[serde(default)]
    stream: bool,
}

#[derive(Deserialize)]
struct Msg {
    role: String,
    content: String,
}

#[derive(Clone)]
struct Bodies {
    plain: Bytes,
    stream: Bytes,
    mcp: Bytes,
}

#[derive(Deserialize)]
struct Rpc {
    #[allow(dead_code)]
    jsonrpc: String,
    #[allow(dead_code)]
    id: serde_json::Value,
    method: String,
    params: RpcParams,
}

#[derive(Deserialize)]
struct RpcParams {
    name: String,
    arguments: serde_json::Map<String, serde_json::Value>,
}

async fn mcp(State(b): State<Bodies>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Rpc>(&body) else {
        return (axum::http::StatusCode::BAD_REQUEST, "bad json").into_response();
    };
    if req.method != "tools/call"
        || req.params.name != "get_invoices"
        || req.params.arguments.len() > 64
    {
        return (axum::http::StatusCode::NOT_FOUND, "no tool").into_response();
    }
    ([(header::CONTENT_TYPE, "application/json")], b.mcp).into_response()
}

async fn chat(State(b): State<Bodies>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<Req>(&body) else {
        return (axum::http::StatusCode::BAD_REQUEST, "bad json").into_response();
    };
    let matched = req
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .is_some_and(|m| m.content.to_lowercase().contains("invoice"));
    if !matched {
        return (axum::http::StatusCode::NOT_FOUND, "no match").into_response();
    }
    if req.stream {
        (
            [(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")],
            b.stream,
        )
            .into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], b.plain).into_response()
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (addr, plain, stream, mcp_body) = match args.as_slice() {
        [_, a, p, s] => (a, p, s, None),
        [_, a, p, s, m] => (a, p, s, Some(m)),
        _ => {
            eprintln!("usage: ceiling ADDR NONSTREAM_BODY_FILE STREAM_BODY_FILE [MCP_BODY_FILE]");
            std::process::exit(2);
        }
    };
    let bodies = Bodies {
        plain: std::fs::read(plain)?.into(),
        stream: std::fs::read(stream)?.into(),
        mcp: match mcp_body {
            Some(m) => std::fs::read(m)?.into(),
            None => Bytes::new(),
        },
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/mcp/message", post(mcp))
        .route("/mcp", post(mcp))
        .route("/api/v1/mcp", post(mcp))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .with_state(bodies);
    let listener = tokio::net::TcpListener::bind(addr).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}
