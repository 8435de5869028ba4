//! The legacy HTTP+SSE transport (SPEC §4.1, §4.2): `GET /mcp/sse` opens a session and its
//! stream; `POST /mcp/message?sessionId=…` answers 202 and puts the reply on that stream, from
//! whichever process the POST reaches. Without `sessionId`, `POST /mcp/message` is plain
//! JSON-RPC over HTTP (revision 2025-03-26), answered as JSON or as one SSE event.
//!
//! A legacy session lives as long as its stream: the process holding the stream keeps its
//! record alive; if that process dies the record expires within [`LEGACY_IDLE`] and POSTs get
//! 404 (the transport has no resumption).

use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::Value;
use understudy_core::sessions::{Appended, SessionKind, valid_session_id};

use super::{
    accepted, accepts_sse, admit, json_response, labelled, read_body, rpc_error, sse_response,
    with_faults,
};
use crate::chaos::Fault;
use crate::mcp::jsonrpc::{self, INVALID_REQUEST};
use crate::mcp::{BodyReply, Ctx, Revision, Transport};
use crate::state::{App, PathTenant};

/// How long a legacy session outlives its stream's last refresh (the stream refreshes it every
/// third of this).
pub const LEGACY_IDLE: Duration = Duration::from_secs(60);

/// Replies kept per legacy session: the transport has no resumption, so the log only has to
/// cover a stream that fell behind.
pub const LEGACY_LOG: usize = 64;

use super::{SESSION_NOT_FOUND, session_store_unavailable as unavailable};

/// `GET /mcp/sse`.
pub async fn open(State(app): State<App>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let (tenant, outcome) = match admit(&app, &parts).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let id = match super::open_session(&app, &tenant, SessionKind::Legacy, None, LEGACY_IDLE).await
    {
        Ok(id) => id,
        Err(r) => return labelled(r, &tenant),
    };
    let prefix = match parts.extensions.get::<PathTenant>() {
        Some(p) => format!("/t/{}", p.0),
        None => String::new(),
    };
    let open = super::stream::Open {
        endpoint: Some(format!(
            "{prefix}{}?sessionId={id}",
            if tenant.channel_server {
                "/channels/message"
            } else {
                "/mcp/message"
            }
        )),
        id,
        resume: None,
        keep: LEGACY_LOG,
    };
    let resp = super::stream::follow(&app, &tenant, open);
    labelled(with_faults(resp, &outcome), &tenant)
}

/// The `sessionId` (or `session_id`) query parameter, as sent (session ids need no decoding:
/// anything outside `[A-Za-z0-9_-]` is an unknown session anyway).
fn session_param(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "sessionId" || *k == "session_id")
        .map(|(_, v)| v.to_string())
}

/// `POST /mcp/message`.
pub async fn message(State(app): State<App>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (tenant, outcome) = match admit(&app, &parts).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let bytes = match read_body(&app, &parts, body).await {
        Ok(b) => b,
        Err(r) => return labelled(r, &tenant),
    };
    let parsed = match jsonrpc::parse(&bytes) {
        Ok(b) => b,
        Err(e) => return labelled(json_response(StatusCode::BAD_REQUEST, &e), &tenant),
    };
    let resp = match session_param(parts.uri.query()) {
        // A cut or malformed answer is the POST's own: the message is not dispatched, so the
        // stream never carries an answer the client was told it would not get.
        Some(_)
            if matches!(
                outcome.fault,
                Some(Fault::StreamCut(_) | Fault::Malformed(0))
            ) =>
        {
            accepted_text()
        }
        Some(sid) => relay(&app, &tenant, &sid, parsed, &parts.headers).await,
        None => {
            let ctx = Ctx {
                app: &app,
                tenant: &tenant,
                revision: Revision::DEFAULT_HTTP,
                transport: Transport::Message,
                headers: &parts.headers,
                session: None,
                audit_as: None,
            };
            match crate::mcp::dispatch::handle_body(&ctx, parsed).await {
                BodyReply::Accepted => accepted(),
                BodyReply::One(r) => {
                    let status = match r.error_code() {
                        Some(jsonrpc::PARSE_ERROR) | Some(INVALID_REQUEST) => {
                            StatusCode::BAD_REQUEST
                        }
                        _ => StatusCode::OK,
                    };
                    if status == StatusCode::OK && accepts_sse(&parts.headers) {
                        sse_response(&r.body)
                    } else {
                        json_response(status, &r.body)
                    }
                }
                BodyReply::Batch(items) => json_response(StatusCode::OK, &Value::Array(items)),
            }
        }
    };
    labelled(with_faults(resp, &outcome), &tenant)
}

/// A POST of a legacy session: dispatched here, the replies appended to the session's log
/// (whose holder streams them), 202.
async fn relay(
    app: &App,
    tenant: &std::sync::Arc<crate::snapshot::TenantRuntime>,
    sid: &str,
    body: jsonrpc::Body,
    headers: &http::HeaderMap,
) -> Response {
    let not_found = || {
        rpc_error(
            StatusCode::NOT_FOUND,
            SESSION_NOT_FOUND,
            "Session not found: its SSE stream is closed (legacy sessions end with their stream); open GET /mcp/sse again",
        )
    };
    if !valid_session_id(sid) {
        return not_found();
    }
    let sessions = &app.stores.sessions;
    let session = match sessions.touch_session(tenant.id(), sid).await {
        Ok(Some(s)) if s.doc.kind == SessionKind::Legacy => s,
        Ok(_) => return not_found(),
        Err(e) => {
            app.metrics.redis_error("mcp_session");
            tracing::debug!(error = %e, "legacy session lookup failed");
            return unavailable();
        }
    };
    let revision = session
        .doc
        .protocol_version
        .as_deref()
        .and_then(Revision::parse)
        .unwrap_or(Revision::V2024_11_05);
    let ctx = Ctx {
        app,
        tenant,
        revision,
        transport: Transport::Sse,
        headers,
        session: Some(sid),
        audit_as: None,
    };
    let replies = match crate::mcp::dispatch::handle_body(&ctx, body).await {
        BodyReply::Accepted => return accepted_text(),
        BodyReply::One(r) => {
            if let Some(v) = r.negotiated {
                let _ = sessions
                    .set_session_version(tenant.id(), sid, v.as_str())
                    .await;
            }
            vec![r.body]
        }
        BodyReply::Batch(items) => vec![Value::Array(items)],
    };
    for reply in replies {
        let mut text = reply.to_string();
        if text.len() > app.options.max_answer_bytes {
            text = jsonrpc::error(
                reply.get("id"),
                jsonrpc::INTERNAL_ERROR,
                format!(
                    "The answer is {} bytes, over --max-answer-bytes ({})",
                    text.len(),
                    app.options.max_answer_bytes
                ),
                None,
            )
            .to_string();
        }
        match sessions
            .append_event(tenant.id(), sid, &text, LEGACY_LOG, None)
            .await
        {
            Ok(Appended::Event(_)) | Ok(Appended::AlreadyTold) => {}
            Ok(Appended::NoSession) => return not_found(),
            Err(e) => {
                app.metrics.redis_error("mcp_session_log");
                tracing::debug!(error = %e, "legacy reply not relayed");
                return unavailable();
            }
        }
    }
    accepted_text()
}

/// 202 with the body the reference servers send.
fn accepted_text() -> Response {
    (StatusCode::ACCEPTED, "Accepted").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_parameter_names() {
        assert_eq!(session_param(Some("sessionId=abc")).as_deref(), Some("abc"));
        assert_eq!(
            session_param(Some("x=1&session_id=d")).as_deref(),
            Some("d")
        );
        assert_eq!(session_param(Some("x=1")), None);
        assert_eq!(session_param(None), None);
    }
}
