//! `POST /v1/embeddings`: deterministic unit vectors, `float` or `base64`.

use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::{LlmError, Provider, sse};
use crate::engine::embed::embedding;
use crate::engine::settings::MAX_EMBEDDING_DIMENSIONS;
use crate::engine::tokens;
use crate::state::App;

/// Most inputs in one request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

#[derive(Debug, Deserialize)]
struct EmbeddingsRequest {
    model: String,
    input: Value,
    #[serde(default)]
    dimensions: Option<i64>,
    #[serde(default)]
    encoding_format: Option<String>,
}

fn inputs(v: &Value) -> Result<Vec<String>, LlmError> {
    let bad = || {
        LlmError::invalid(
            "Invalid 'input': expected a non-empty string, an array of strings, or an array of token arrays.",
            Some("input"),
        )
    };
    match v {
        Value::String(s) if !s.is_empty() => Ok(vec![s.clone()]),
        Value::Array(a) if !a.is_empty() && a.len() <= MAX_INPUTS => a
            .iter()
            .map(|x| match x {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Array(t) if !t.is_empty() && t.iter().all(Value::is_number) => {
                    Ok(serde_json::to_string(t).unwrap_or_default())
                }
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|v| {
                if a.iter().all(Value::is_number) {
                    vec![serde_json::to_string(a).unwrap_or_default()]
                } else {
                    v
                }
            }),
        Value::Array(a) if a.len() > MAX_INPUTS => Err(LlmError::invalid(
            format!("Invalid 'input': at most {MAX_INPUTS} inputs per request."),
            Some("input"),
        )),
        _ => Err(bad()),
    }
}

/// Most floats one request may ask for (inputs × dimensions): 16 MiB of vectors.
pub const MAX_FLOATS: usize = 4 * 1024 * 1024;

#[derive(serde::Serialize)]
struct List<'a> {
    object: &'static str,
    data: Vec<Item>,
    model: &'a str,
    usage: Usage,
}

#[derive(serde::Serialize)]
struct Item {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(serde::Serialize)]
struct Usage {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// The handler (audited as `llm.embeddings`).
pub async fn handle(State(app): State<App>, req: Request) -> Response {
    let headers = req.headers().clone();
    let run = serve(app.clone(), req);
    super::audited(&app, "llm.embeddings", headers, run).await
}

async fn serve(app: App, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let tenant = match super::tenant(&app, &parts).await {
        Ok(t) => t,
        Err(e) => return super::fail(e, Provider::OpenAi, None, None),
    };
    let result = async {
        let bytes = super::body(&app, &parts, body).await?;
        crate::audit::note(|n| n.params = crate::audit::Captured::Raw(bytes.clone()));
        let req: EmbeddingsRequest = super::parse(&bytes)?;
        let texts = inputs(&req.input)?;
        let dims = match req.dimensions {
            None => tenant.settings.embedding_dimensions,
            Some(d) if (1..=MAX_EMBEDDING_DIMENSIONS as i64).contains(&d) => d as usize,
            Some(d) => {
                return Err(LlmError::invalid(
                    format!("Invalid 'dimensions': {d}; it must be between 1 and {MAX_EMBEDDING_DIMENSIONS}."),
                    Some("dimensions"),
                ));
            }
        };
        let base64 = match req.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(LlmError::invalid(
                    format!("Invalid 'encoding_format': '{other}'. Supported values are: 'float' and 'base64'."),
                    Some("encoding_format"),
                ));
            }
        };
        if texts.len().saturating_mul(dims) > MAX_FLOATS {
            return Err(LlmError::invalid(
                format!(
                    "Too much output requested: {} inputs × {dims} dimensions is over {MAX_FLOATS} values; send fewer inputs or dimensions.",
                    texts.len()
                ),
                Some("input"),
            ));
        }
        // Each value takes about 12 bytes as a JSON float, about 5.4 in base64.
        let per_value = if base64 { 6 } else { 12 };
        let estimate = texts.len().saturating_mul(dims).saturating_mul(per_value);
        let limit = app.options.max_answer_bytes;
        if estimate > limit {
            return Err(LlmError::invalid(
                format!(
                    "The answer would be about {estimate} bytes ({} inputs × {dims} dimensions), over this gateway's limit of {limit} bytes per answer (--max-answer-bytes); send fewer inputs or dimensions, or ask for base64.",
                    texts.len()
                ),
                Some("input"),
            ));
        }
        let outcome = super::chaos(&app, &tenant, false).await?;
        app.stats.record(&tenant, None);
        let data: Vec<Item> = texts
            .iter()
            .enumerate()
            .map(|(index, t)| {
                let v = embedding(t, dims);
                let embedding = if base64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    Vector::Float(v)
                };
                Item { object: "embedding", index, embedding }
            })
            .collect();
        let prompt: u64 = texts.iter().map(|t| tokens::estimate(t.chars().count()).max(1)).sum();
        let body = List {
            object: "list",
            data,
            model: &req.model,
            usage: Usage { prompt_tokens: prompt, total_tokens: prompt },
        };
        Ok((serde_json::to_vec(&body).unwrap_or_default(), outcome))
    }
    .await;
    match result {
        Ok((body, outcome)) => super::finish(
            sse::respond_json(body, &outcome),
            Provider::OpenAi,
            Some(&tenant),
            outcome.rate,
        ),
        Err(e) => {
            let rate = super::rate_for_error(&tenant, &e);
            super::fail(e, Provider::OpenAi, Some(&tenant), rate)
        }
    }
}
