//! Operations endpoints (SPEC §10): liveness, readiness, Prometheus metrics.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use serde_json::json;

use crate::state::App;

/// `/healthz`, `/readyz`, `/metrics`.
/// The surface: its routes, label and prefixes; unknown paths under them get the envelope 404.
pub fn surface() -> crate::surface::Surface {
    crate::surface::Surface {
        label: "ops",
        router: router(),
        prefixes: &["/healthz", "/readyz", "/metrics"],
        reject: crate::surface::envelope_reject,
    }
}

/// The routes.
pub fn router() -> Router<App> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(app): State<App>) -> Response {
    let snap = app.snapshot.load();
    let body = json!({
        "ready": app.ready(),
        "synced": app.snapshot.is_synced(),
        "draining": app.draining.load(std::sync::atomic::Ordering::Acquire),
        "store": app.stores.backend(),
        "config_version": snap.version,
        "tenants": snap.tenants.len(),
    });
    let status = if app.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `/metrics` alone, for `--metrics-listen`.
pub fn metrics_router() -> Router<App> {
    Router::new().route("/metrics", get(metrics_only))
}

async fn metrics_only(State(app): State<App>) -> Response {
    exposition(&app)
}

/// On the main listener: the exposition, unless it is served on its own listener (then 404,
/// so that data-plane clients cannot read other tenants' ids and traffic).
async fn metrics(State(app): State<App>, req: axum::extract::Request) -> Response {
    if app.options.separate_metrics {
        return crate::surface::envelope_reject(
            crate::surface::Reject::NotFound,
            req.method(),
            req.uri().path(),
        );
    }
    exposition(&app)
}

fn exposition(app: &App) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}
