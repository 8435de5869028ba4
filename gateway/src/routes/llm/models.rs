//! `GET /v1/models` and `GET /v1/models/{id}`: the tenant's models (settings `models`), in
//! OpenAI's shape, or Anthropic's when the request carries `anthropic-version`.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{LlmError, Provider};
use crate::state::App;

/// Fixed creation time reported for every mock model (2024-05-13).
const CREATED: u64 = 1_715_558_400;

fn provider(req: &http::request::Parts) -> Provider {
    if req.headers.contains_key("anthropic-version") {
        Provider::Anthropic
    } else {
        Provider::OpenAi
    }
}

/// `claude-sonnet-5-5` → `Claude Sonnet 5.5`: words capitalised, adjacent version numbers
/// joined with a dot, as Anthropic names its models.
fn display_name(id: &str) -> String {
    let mut out = String::new();
    let mut prev_numeric = false;
    for w in id.split('-') {
        let numeric = !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit());
        if !out.is_empty() {
            out.push(if numeric && prev_numeric { '.' } else { ' ' });
        }
        let mut c = w.chars();
        if let Some(f) = c.next() {
            out.extend(f.to_uppercase());
            out.push_str(c.as_str());
        }
        prev_numeric = numeric;
    }
    out
}

fn model(id: &str, p: Provider) -> Value {
    match p {
        Provider::OpenAi => {
            json!({"id": id, "object": "model", "created": CREATED, "owned_by": "understudy"})
        }
        Provider::Anthropic => json!({
            "type": "model", "id": id, "display_name": display_name(id), "created_at": "2024-05-13T00:00:00Z",
            "lifecycle": "active"
        }),
    }
}

/// `GET /v1/models`.
pub async fn list(State(app): State<App>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let p = provider(&parts);
    let tenant = match super::tenant(&app, &parts).await {
        Ok(t) => t,
        Err(e) => return super::fail(e, p, None, None),
    };
    let data: Vec<Value> = tenant.settings.models.iter().map(|m| model(m, p)).collect();
    let body = match p {
        Provider::OpenAi => json!({"object": "list", "data": data}),
        Provider::Anthropic => json!({
            "data": data,
            "has_more": false,
            "first_id": tenant.settings.models.first(),
            "last_id": tenant.settings.models.last(),
        }),
    };
    super::finish(Json(body).into_response(), p, Some(&tenant), None)
}

/// `GET /v1/models/{id}`: 404 in the provider's shape for a model the tenant does not list.
pub async fn get_one(State(app): State<App>, Path(id): Path<String>, req: Request) -> Response {
    let (parts, _) = req.into_parts();
    let p = provider(&parts);
    let tenant = match super::tenant(&app, &parts).await {
        Ok(t) => t,
        Err(e) => return super::fail(e, p, None, None),
    };
    if !tenant.settings.models.contains(&id) {
        let e = LlmError::not_found(
            format!("The model '{id}' does not exist or you do not have access to it."),
            "model_not_found",
        );
        return super::fail(e, p, Some(&tenant), None);
    }
    super::finish(Json(model(&id, p)).into_response(), p, Some(&tenant), None)
}

#[cfg(test)]
mod tests {
    #[test]
    fn display_names_join_version_numbers() {
        assert_eq!(
            super::display_name("claude-sonnet-5-5"),
            "Claude Sonnet 5.5"
        );
        assert_eq!(super::display_name("claude-haiku-4-5"), "Claude Haiku 4.5");
        assert_eq!(super::display_name("gpt-4o"), "Gpt 4o");
    }
}
