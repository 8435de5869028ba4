//! The LLM surface (SPEC §3): OpenAI Chat Completions, Responses, Embeddings and Models, and
//! Anthropic Messages. Every handler follows one pipeline:
//!
//! ```text
//!  tenant (header or /t/ prefix, read-through) ─► body (limit, JSON, required fields)
//!    ─► chaos (rate limit, errors) ─► engine::decide ─► render JSON or SSE plan ─► pace / break
//! ```

pub mod anthropic;
pub mod chat;
pub mod embeddings;
pub mod error;
pub mod ids;
pub mod models;
pub mod responses;
pub mod sse;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use understudy_crds::Surface as ChaosSurface;

use crate::chaos::{Fault, Outcome, RateInfo};
use crate::engine;
use crate::snapshot::TenantRuntime;
use crate::state::{App, TenantLabel};
use crate::surface::{Reject, Surface};
use crate::tenancy::Access;
pub use error::{LlmError, Provider};

/// The LLM surface: its routes, and provider-shaped 404s under its prefixes.
pub fn surface() -> Surface {
    Surface {
        label: "llm",
        router: router(),
        prefixes: &["/v1/", "/chat/", "/responses", "/embeddings", "/models"],
        reject,
    }
}

/// Refusals under the LLM prefixes: Anthropic's shape under `/v1/messages`, OpenAI's
/// elsewhere.
fn reject(why: Reject, method: &http::Method, path: &str) -> Response {
    let message = why.message(method, path);
    let e = match why {
        Reject::NotFound => LlmError::not_found(message, "unknown_url"),
        Reject::MethodNotAllowed => {
            let mut e = LlmError::invalid(message, None);
            e.status = http::StatusCode::METHOD_NOT_ALLOWED;
            e.code = Some("method_not_allowed");
            e
        }
    };
    if path.starts_with("/v1/messages") {
        e.render(Provider::Anthropic)
    } else {
        e.render(Provider::OpenAi)
    }
}

/// Routes of the LLM surface, with and without `/v1` for the OpenAI ones.
pub fn router() -> Router<App> {
    Router::new()
        .route("/v1/chat/completions", post(handle::<chat::Chat>))
        .route("/chat/completions", post(handle::<chat::Chat>))
        .route("/v1/responses", post(handle::<responses::Responses>))
        .route("/responses", post(handle::<responses::Responses>))
        .route("/v1/embeddings", post(embeddings::handle))
        .route("/embeddings", post(embeddings::handle))
        .route("/v1/models", get(models::list))
        .route("/models", get(models::list))
        .route("/v1/models/{*id}", get(models::get_one))
        .route("/models/{*id}", get(models::get_one))
        .route("/v1/messages", post(handle::<anthropic::Messages>))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
}

/// The shared shape of the generation handlers: resolve the tenant, run `serve`, and render any
/// error in `provider`'s shape (with the rate-limit headers while a rate_limit profile is in force).
pub async fn pipeline<F, Fut>(
    app: App,
    req: axum::extract::Request,
    provider: Provider,
    serve: F,
) -> Response
where
    F: FnOnce(App, Arc<TenantRuntime>, Parts, Body) -> Fut,
    Fut: std::future::Future<Output = Result<Response, LlmError>>,
{
    let (parts, body) = req.into_parts();
    let tenant = match self::tenant(&app, &parts).await {
        Ok(t) => t,
        Err(e) => return fail(e, provider, None, None),
    };
    match serve(app, tenant.clone(), parts, body).await {
        Ok(resp) => resp,
        Err(e) => {
            let rate = rate_for_error(&tenant, &e);
            fail(e, provider, Some(&tenant), rate)
        }
    }
}

/// Resolves the request's tenant for the data plane (SPEC §3, [`crate::tenancy`]), with errors
/// in the provider's shape.
pub async fn tenant(app: &App, parts: &Parts) -> Result<Arc<TenantRuntime>, LlmError> {
    crate::tenancy::resolve(app, parts, Access::DataPlane)
        .await
        .map(|r| r.tenant)
        .map_err(LlmError::from)
}

/// Reads the body within the limit: over it → 413 (checked on Content-Length first).
pub async fn body(app: &App, parts: &Parts, body: Body) -> Result<Bytes, LlmError> {
    crate::body::read(parts, body, app.options.max_body_bytes)
        .await
        .map_err(|e| match e {
            crate::body::BodyError::TooLarge(limit) => LlmError::too_large(limit),
            crate::body::BodyError::Unreadable(_) => LlmError::invalid(e.message(), None),
        })
}

/// Parses JSON into `T`, naming the offending field on failure.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, LlmError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(LlmError::invalid(
            "The request body is empty: send a JSON object.".to_string(),
            None,
        ));
    }
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        // serde would happily read a struct from an array: refuse anything but an object.
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => LlmError::invalid("Invalid request body: expected a JSON object.", None),
                Err(e) => LlmError::invalid(
                    format!(
                        "We could not parse the JSON body of your request ({e}). The body must be valid JSON encoded as UTF-8."
                    ),
                    None,
                ),
            },
        );
    }
    // The fast path parses plainly; only a failure pays for tracking the path to the culprit.
    if let Ok(v) = serde_json::from_slice(bytes) {
        return Ok(v);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = serde_path_to_error::deserialize(&mut de).map_err(error::from_json_error)?;
    de.end().map_err(|e| {
        LlmError::invalid(format!("Unexpected data after the JSON body: {e}"), None)
    })?;
    Ok(v)
}

/// Validates a max-tokens style field (SPEC §11: 1 ..= 1,000,000).
pub fn max_tokens(value: Option<i64>, param: &str) -> Result<Option<u64>, LlmError> {
    match value {
        None => Ok(None),
        Some(v) if (1..=engine::tokens::MAX_TOKENS_LIMIT).contains(&v) => Ok(Some(v as u64)),
        Some(v) => Err(LlmError::invalid(
            format!(
                "Invalid '{param}': {v} is out of range; it must be between 1 and {}.",
                engine::tokens::MAX_TOKENS_LIMIT
            ),
            Some(param),
        )),
    }
}

/// Runs chaos for the LLM surface: refusals become errors; the rest is returned for rendering.
pub async fn chaos(app: &App, tenant: &TenantRuntime, stream: bool) -> Result<Outcome, LlmError> {
    let outcome = app.chaos.evaluate(tenant, ChaosSurface::Llm).await;
    match outcome.fault {
        Some(Fault::RateLimited { retry_after }) => {
            Err(LlmError::rate_limited(tenant.id(), retry_after))
        }
        Some(Fault::ServerError(status)) => Err(LlmError::injected(status)),
        Some(Fault::StreamCut(_)) | Some(Fault::Malformed(_)) | None => {
            if !stream && let Some(l) = outcome.latency {
                tokio::time::sleep(l).await;
            }
            Ok(outcome)
        }
    }
}

/// Counts the request for status (requests, unmatched, hits).
fn record_scenario(app: &App, tenant: &TenantRuntime, scenario: Option<usize>) {
    let id = scenario.map(|i| tenant.config.scenarios[i].id.as_str());
    app.stats.record(tenant, Some(id));
}

/// What a dialect reads from its request before the mock model runs.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The conversation, reduced for matching.
    pub conv: engine::Conversation,
    /// The request's max tokens, validated.
    pub max_tokens: Option<u64>,
    /// Whether the answer is streamed.
    pub stream: bool,
    /// How many copies of the answer the response carries (Chat Completions' `n`).
    pub choices: u32,
}

/// One provider API over the mock model: how its request reads, and how an [`engine::Answer`]
/// is written back. Chat Completions, Messages and Responses each implement it; [`serve`] is
/// their one serve path.
pub trait Dialect: Send + Sync + 'static {
    /// The request body.
    type Request: DeserializeOwned + Send + Sync + 'static;
    /// Whose error shape to answer in.
    const PROVIDER: Provider;
    /// Its name in the audit log (`llm.chat`, …).
    const TOOL: &'static str;
    /// Validates the request and reduces it.
    fn prepare(req: &Self::Request) -> Result<Prepared, LlmError>;
    /// The non-streamed body.
    fn render_json(req: &Self::Request, answer: &engine::Answer) -> Vec<u8>;
    /// The streamed events, in pieces of `chunk_chars`.
    fn render_stream(req: &Self::Request, answer: &engine::Answer, chunk_chars: usize)
    -> sse::Plan;
}

/// Refuses (400, naming the limit) an answer over `--max-answer-bytes` (text × n, tool
/// arguments × n) or, streamed, over `--max-stream-events`: before anything is rendered.
fn within_limits(
    app: &App,
    prepared: &Prepared,
    answer: &engine::Answer,
    chunk_chars: usize,
) -> Result<(), LlmError> {
    let choices = prepared.choices.max(1) as usize;
    let (one, chars, per_event) = match &answer.call {
        Some(c) => (
            c.arguments_json.len() + c.name.len(),
            c.arguments_json.chars().count(),
            chunk_chars.max(16),
        ),
        None => (
            answer.text.len(),
            answer.text.chars().count(),
            chunk_chars.max(1),
        ),
    };
    let param = (choices > 1).then_some("n");
    let total = one.saturating_mul(choices);
    let limit = app.options.max_answer_bytes;
    if total > limit {
        return Err(LlmError::invalid(
            format!(
                "The answer would be {total} bytes ({one} bytes × {choices} choice(s)), over this gateway's limit of {limit} bytes per answer (--max-answer-bytes); ask for fewer choices or fewer tokens."
            ),
            param,
        ));
    }
    if prepared.stream {
        // Content events, plus the few framing events every dialect adds, per choice.
        let events = chars
            .div_ceil(per_event)
            .saturating_add(8)
            .saturating_mul(choices);
        let limit = app.options.max_stream_events;
        if events > limit {
            return Err(LlmError::invalid(
                format!(
                    "The streamed answer would be about {events} events, over this gateway's limit of {limit} events per stream (--max-stream-events); ask for fewer tokens or choices, or raise the tenant's stream_chunk_chars."
                ),
                param,
            ));
        }
    }
    Ok(())
}

/// Runs the mock model for a tenant and, if the answer is within this gateway's limits, counts
/// the request for status: no HTTP in sight.
pub fn generate(
    app: &App,
    tenant: &TenantRuntime,
    prepared: &Prepared,
) -> Result<engine::Answer, LlmError> {
    let answer = engine::answer(tenant, &prepared.conv, prepared.max_tokens);
    within_limits(app, prepared, &answer, tenant.settings.stream_chunk_chars)?;
    record_scenario(app, tenant, answer.scenario);
    Ok(answer)
}

/// The mock model's answer to an OpenAI Chat Completions request given as JSON (`model` may be
/// left out), without HTTP: what the execute API's `openai_chat` runs. Checked like the route's
/// body (the error names the field), within this gateway's limits, counted for status.
pub fn chat_answer(
    app: &App,
    tenant: &TenantRuntime,
    input: &serde_json::Value,
) -> Result<engine::Answer, LlmError> {
    let mut input = input.clone();
    if let Some(o) = input.as_object_mut() {
        o.entry("model")
            .or_insert_with(|| serde_json::Value::String("gpt-4o-mini".into()));
    }
    let bytes = serde_json::to_vec(&input).unwrap_or_default();
    let req: chat::ChatRequest = parse(&bytes)?;
    let prepared = <chat::Chat as Dialect>::prepare(&req)?;
    generate(app, tenant, &prepared)
}

/// The handler of a dialect's generation route.
pub async fn handle<D: Dialect>(
    axum::extract::State(app): axum::extract::State<App>,
    req: axum::extract::Request,
) -> Response {
    let headers = req.headers().clone();
    let run = pipeline(app.clone(), req, D::PROVIDER, serve::<D>);
    audited(&app, D::TOOL, headers, run).await
}

/// Runs an LLM request's handling and records it in the audit log (SPEC §9.1): the tenant, the
/// caller, the body, the scenario that answered (or none), an injected fault, the answer. The
/// capture costs nothing when audit is off.
pub async fn audited(
    app: &App,
    tool: &'static str,
    headers: HeaderMap,
    run: impl std::future::Future<Output = Response>,
) -> Response {
    if !app.audit.enabled() {
        return run.await;
    }
    let started = std::time::Instant::now();
    let (note, resp) = crate::audit::capture(run).await;
    let who = crate::audit::who_of(app, &headers);
    let mut r = crate::audit::Record::new("llm", tool, who, started);
    r.tenant = resp
        .extensions()
        .get::<TenantLabel>()
        .map(|t| t.0.id().to_string());
    let status = resp.status().as_u16();
    r.status = Some(status);
    r.success = status < 400 && note.chaos.is_none_or(|c| c == "latency");
    r.error = note.error.clone();
    r.headers = Some(headers);
    r.note = note;
    app.audit.record(r);
    resp
}

/// Bodies above this size are parsed and matched on the blocking pool.
const HEAVY_BODY_BYTES: usize = 256 * 1024;

/// Runs CPU-heavy request work on the blocking pool.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LlmError> + Send + 'static,
) -> Result<T, LlmError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|_| Err(LlmError::unavailable("The request could not be processed.")))
}

/// The one serve path: body, parse, prepare, chaos, the mock model, render (JSON or paced SSE).
async fn serve<D: Dialect>(
    app: App,
    tenant: Arc<TenantRuntime>,
    parts: Parts,
    body: Body,
) -> Result<Response, LlmError> {
    let bytes = self::body(&app, &parts, body).await?;
    crate::audit::note(|n| n.params = crate::audit::Captured::Raw(bytes.clone()));
    // A large body (parsing, lower-casing, matching) is worked on off the async workers, so it
    // cannot delay liveness probes or other tenants.
    let heavy = bytes.len() > HEAVY_BODY_BYTES;
    let (req, prepared) = if heavy {
        off_runtime(move || {
            let req: D::Request = parse(&bytes)?;
            let prepared = D::prepare(&req)?;
            Ok((req, prepared))
        })
        .await?
    } else {
        let req: D::Request = parse(&bytes)?;
        let prepared = D::prepare(&req)?;
        (req, prepared)
    };
    let outcome = chaos(&app, &tenant, prepared.stream).await?;
    let (prepared, answer) = if heavy {
        let (app, tenant) = (app.clone(), tenant.clone());
        off_runtime(move || {
            let answer = generate(&app, &tenant, &prepared)?;
            Ok((prepared, answer))
        })
        .await?
    } else {
        let answer = generate(&app, &tenant, &prepared)?;
        (prepared, answer)
    };
    if crate::audit::capturing() {
        let scenario = answer
            .scenario
            .map(|i| tenant.config.scenarios[i].id.clone());
        let streamed = prepared.stream.then(|| {
            serde_json::json!({"stream": true, "text": answer.text.to_string(),
                "tool_call": answer.call.as_ref().map(|c| serde_json::json!({"name": c.name, "arguments": c.arguments}))})
        });
        crate::audit::note(|n| {
            n.scenario = scenario;
            if let Some(s) = streamed {
                n.result = crate::audit::Captured::Json(s);
            }
        });
    }
    let resp = if prepared.stream {
        let plan = D::render_stream(&req, &answer, tenant.settings.stream_chunk_chars);
        sse::respond(&app, plan, &tenant.settings, &outcome)
    } else {
        let body = Bytes::from(D::render_json(&req, &answer));
        crate::audit::note(|n| n.result = crate::audit::Captured::Raw(body.clone()));
        sse::respond_json(body, &outcome)
    };
    Ok(finish(resp, D::PROVIDER, Some(&tenant), outcome.rate))
}

/// Adds the providers' rate-limit headers and the tenant label to a response.
pub fn finish(
    mut resp: Response,
    provider: Provider,
    tenant: Option<&Arc<TenantRuntime>>,
    rate: Option<RateInfo>,
) -> Response {
    if let Some(r) = rate {
        rate_headers(resp.headers_mut(), provider, r);
    }
    if let Some(t) = tenant {
        resp.extensions_mut().insert(TenantLabel(t.clone()));
    }
    resp
}

fn rate_headers(h: &mut HeaderMap, provider: Provider, r: RateInfo) {
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    match provider {
        Provider::OpenAi => {
            put("x-ratelimit-limit-requests", r.limit.to_string());
            put("x-ratelimit-remaining-requests", r.remaining.to_string());
            put("x-ratelimit-reset-requests", format!("{}s", r.reset_secs));
        }
        Provider::Anthropic => {
            put("anthropic-ratelimit-requests-limit", r.limit.to_string());
            put(
                "anthropic-ratelimit-requests-remaining",
                r.remaining.to_string(),
            );
            let at = std::time::UNIX_EPOCH + Duration::from_secs(r.reset_at);
            put(
                "anthropic-ratelimit-requests-reset",
                humantime::format_rfc3339_seconds(at).to_string(),
            );
        }
    }
}

/// Renders an error, with rate-limit headers when a rate_limit profile is in force.
pub fn fail(
    e: LlmError,
    provider: Provider,
    tenant: Option<&Arc<TenantRuntime>>,
    rate: Option<RateInfo>,
) -> Response {
    crate::audit::note(|n| n.error = Some(e.message.clone()));
    finish(e.render(provider), provider, tenant, rate)
}

/// The rate-limit info for an error answer: a 429 still reports the window (remaining 0).
pub fn rate_for_error(tenant: &TenantRuntime, e: &LlmError) -> Option<RateInfo> {
    // Only the refusal itself carries the window: for other errors the count is unknown here,
    // and a made-up `remaining` would mislead a client's back-off.
    if e.kind != error::Kind::RateLimited {
        return None;
    }
    let spec = tenant.config.chaos.as_ref()?;
    if spec.profile != understudy_crds::ChaosKind::RateLimit
        || !spec.surfaces.contains(&ChaosSurface::Llm)
    {
        return None;
    }
    let window = spec.window_seconds.max(1);
    let now = ids::now_secs();
    let end = now / window * window + window;
    Some(RateInfo {
        limit: spec.limit,
        remaining: 0,
        reset_secs: e.retry_after.unwrap_or((end - now).max(1)),
        reset_at: end,
    })
}

/// Extracts the text of message content: a string, or the `text` of its text parts.
pub fn content_text(content: &serde_json::Value) -> String {
    match content {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                let ty = p.get("type").and_then(|t| t.as_str()).unwrap_or("");
                if matches!(ty, "text" | "input_text" | "output_text")
                    && let Some(t) = p.get("text").and_then(|t| t.as_str())
                {
                    if !out.is_empty() {
                        out.push('\n');
                    }
                    out.push_str(t);
                }
            }
            out
        }
        _ => String::new(),
    }
}
