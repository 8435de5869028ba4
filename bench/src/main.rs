//! The ceiling for `bench/run.py`: the least work an LLM stand-in can do. It parses the request
//! with serde_json, looks for a keyword in the last user message, and answers fixed bytes (the
//! gateway's own answer, captured by the benchmark), with TCP_NODELAY like the gateway.
//!
//! `ceiling ADDR NONSTREAM_BODY_FILE STREAM_BODY_FILE`

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
    let [_, addr, plain, stream] = args.as_slice() else {
        eprintln!("usage: ceiling ADDR NONSTREAM_BODY_FILE STREAM_BODY_FILE");
        std::process::exit(2);
    };
    let bodies = Bodies {
        plain: std::fs::read(plain)?.into(),
        stream: std::fs::read(stream)?.into(),
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .with_state(bodies);
    let listener = tokio::net::TcpListener::bind(addr).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}
