//! The application: shared state and `app(state) -> Router`.
//!
//! ```text
//!  request ─► tenant-prefix rewrite (/t/{id}/…) ─► CORS ─► metrics ─► routes::{llm, ops}
//!                                                                     │ snapshot (memory)
//!                                                                     │ chaos counters (store)
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, header};
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::chaos::Chaos;
use crate::metrics::Metrics;
use crate::snapshot::SnapshotHandle;
use crate::stats::Stats;
use crate::store::Store;

/// Runtime options the routes read.
#[derive(Debug, Clone)]
pub struct Options {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Allowed CORS origins (`*` for any).
    pub cors_origins: Vec<String>,
    /// Base URL used in links the gateway hands out.
    pub public_url: Option<String>,
    /// Whether state is shared through Redis (unknown tenants are read through).
    pub shared: bool,
    /// The bootstrap admin token (`--admin-token`).
    pub admin_token: Option<String>,
    /// Whether anonymous callers may use global tenants' data plane.
    pub allow_anonymous: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_body_bytes: 10 * 1024 * 1024,
            cors_origins: vec!["*".into()],
            public_url: None,
            shared: false,
            admin_token: None,
            allow_anonymous: true,
        }
    }
}

/// Everything a request handler may touch.
pub struct AppState {
    /// Tenant configuration, read without locks or I/O.
    pub snapshot: Arc<SnapshotHandle>,
    /// Shared state (counters, read-through).
    pub store: Arc<dyn Store>,
    /// Chaos decisions.
    pub chaos: Chaos,
    /// Credentials → identities.
    pub identity: crate::identity::Resolver,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Traffic counters for status.
    pub stats: Arc<Stats>,
    /// Options.
    pub options: Options,
    /// Cancelled at shutdown: open streams end cleanly.
    pub shutdown: CancellationToken,
    /// Set when draining: readiness answers 503.
    pub draining: AtomicBool,
}

/// Shared handle to the state.
pub type App = Arc<AppState>;

impl AppState {
    /// Builds the state around a store and a snapshot.
    pub fn new(
        store: Arc<dyn Store>,
        snapshot: Arc<SnapshotHandle>,
        metrics: Arc<Metrics>,
        options: Options,
    ) -> App {
        Arc::new(AppState {
            chaos: Chaos::new(store.clone(), metrics.clone()),
            identity: crate::identity::Resolver::new(
                options.admin_token.as_deref(),
                snapshot.clone(),
            ),
            snapshot,
            store,
            metrics,
            stats: Arc::new(Stats::default()),
            options,
            shutdown: CancellationToken::new(),
            draining: AtomicBool::new(false),
        })
    }

    /// A tenant from the snapshot, or read through from the shared store (SPEC §12).
    pub async fn find_tenant(&self, id: &str) -> Option<Arc<crate::snapshot::TenantRuntime>> {
        if let Some(t) = self.snapshot.tenant(id) {
            return Some(t);
        }
        if !self.options.shared {
            return None;
        }
        let seen = self.snapshot.load().version;
        match self.store.get_tenant(id).await {
            Ok(Some((cfg, v))) => Some(self.snapshot.insert_read_through(cfg, v, seen)),
            Ok(None) => None,
            Err(e) => {
                self.metrics.redis_error("read_through");
                tracing::debug!(error = %e, tenant = id, "read-through failed");
                None
            }
        }
    }

    /// Whether the process should receive traffic.
    pub fn ready(&self) -> bool {
        self.snapshot.is_synced() && !self.draining.load(Ordering::Acquire)
    }
}

/// The tenant named by a `/t/{tenantId}/` path prefix (set before routing).
#[derive(Debug, Clone)]
pub struct PathTenant(pub String);

/// The tenant a response was for (set by handlers, read by the metrics layer).
#[derive(Debug, Clone)]
pub struct TenantLabel(pub Arc<crate::snapshot::TenantRuntime>);

/// Strips `/t/{tenantId}` from the path so the same routes serve both forms.
pub fn rewrite_tenant_prefix(mut req: Request) -> Request {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/t/") else {
        return req;
    };
    let (tenant, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let tenant = tenant.to_string();
    let new_path = match req.uri().query() {
        Some(q) => format!("{tail}?{q}"),
        None => tail.to_string(),
    };
    let mut parts = req.uri().clone().into_parts();
    match new_path.parse() {
        Ok(pq) => parts.path_and_query = Some(pq),
        Err(_) => return req,
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
        req.extensions_mut().insert(PathTenant(tenant));
    }
    req
}

fn surface_of(route: &str) -> &'static str {
    match route {
        "/healthz" | "/readyz" | "/metrics" | "/openapi.json" => "ops",
        r if r.starts_with("/public/") => "public",
        r if r.starts_with("/api/v1/admin/") => "admin",
        r if r.starts_with("/v1/")
            || r.starts_with("/chat/")
            || r.starts_with("/responses")
            || r.starts_with("/embeddings")
            || r.starts_with("/models") =>
        {
            "llm"
        }
        _ => "other",
    }
}

async fn record(State(app): State<App>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let surface = surface_of(route.as_ref().map_or("unmatched", |m| m.as_str()));
    let guard = RequestTimer {
        app: app.clone(),
        surface,
        route,
        started,
        status: None,
        tenant: None,
    };
    finish(guard, next.run(req).await)
}

fn finish(mut guard: RequestTimer, resp: Response) -> Response {
    guard.status = Some(resp.status().as_u16());
    guard.tenant = resp.extensions().get::<TenantLabel>().map(|t| t.0.clone());
    resp
}

/// Records a request's metrics when dropped: a request abandoned by its client is recorded
/// with status 499.
struct RequestTimer {
    app: App,
    surface: &'static str,
    /// The matched route template (`None`: no route matched).
    route: Option<MatchedPath>,
    started: Instant,
    status: Option<u16>,
    tenant: Option<Arc<crate::snapshot::TenantRuntime>>,
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        let tenant = self.tenant.as_ref().map_or("", |t| t.id());
        let route = self.route.as_ref().map_or("unmatched", |m| m.as_str());
        self.app.metrics.observe(
            self.surface,
            route,
            self.status.unwrap_or(499),
            tenant,
            self.started,
        );
    }
}

fn cors(options: &Options) -> CorsLayer {
    let origins = if options.cors_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            options
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers(Any)
        .expose_headers([
            header::RETRY_AFTER,
            header::HeaderName::from_static("mcp-session-id"),
            header::HeaderName::from_static("mcp-protocol-version"),
            header::HeaderName::from_static("x-ratelimit-limit-requests"),
            header::HeaderName::from_static("x-ratelimit-remaining-requests"),
            header::HeaderName::from_static("x-ratelimit-reset-requests"),
            header::HeaderName::from_static("anthropic-ratelimit-requests-limit"),
            header::HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
            header::HeaderName::from_static("anthropic-ratelimit-requests-reset"),
        ])
}

/// Answers routes that do not exist: 404 in the OpenAI shape under the OpenAI/Anthropic paths,
/// in the `{"error":{"code","message"}}` envelope elsewhere.
async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_string();
    let message = format!("No route for {} {path}.", req.method());
    if path.starts_with("/v1/") {
        let e = crate::routes::llm::LlmError::not_found(message, "unknown_url");
        let provider = if path.starts_with("/v1/messages") {
            crate::routes::llm::Provider::Anthropic
        } else {
            crate::routes::llm::Provider::OpenAi
        };
        return e.render(provider);
    }
    let body = serde_json::json!({"error": {"code": "not_found", "message": message}});
    (http::StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// Request spans, when someone reads them: with OTLP export configured (INFO spans), or with
/// debug logging (`RUST_LOG=debug`). Otherwise the layer is left out: it costs about a
/// microsecond per request even when its spans are disabled.
fn trace_layer() -> Option<
    tower_http::trace::TraceLayer<
        tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    >,
> {
    use tower_http::trace::{
        DefaultMakeSpan, DefaultOnFailure, DefaultOnRequest, DefaultOnResponse,
    };
    let level = if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        tracing::Level::INFO
    } else if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::Level::DEBUG
    } else {
        return None;
    };
    let layer = tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(DefaultMakeSpan::new().level(level))
        .on_request(DefaultOnRequest::new().level(tracing::Level::DEBUG))
        .on_response(DefaultOnResponse::new().level(tracing::Level::DEBUG))
        // Injected 5xx are expected traffic, not incidents.
        .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG));
    Some(layer)
}

/// The router (without the `/t/{id}` rewrite, which must run before routing: see [`service`]).
pub fn app(state: App) -> Router {
    let mut router = Router::new()
        .merge(crate::routes::llm::router())
        .merge(crate::routes::ops::router())
        .merge(crate::routes::public::router())
        .merge(crate::routes::admin::router())
        .merge(crate::routes::openapi::router())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), record));
    if let Some(trace) = trace_layer() {
        router = router.layer(trace);
    }
    router.layer(cors(&state.options)).with_state(state)
}

/// The service handed to the server: the tenant-prefix rewrite in front of [`app`].
pub type Service = tower::util::MapRequest<Router, fn(Request) -> Request>;

/// The full service: the tenant-prefix rewrite in front of [`app`].
pub fn service(state: App) -> Service {
    tower::ServiceBuilder::new()
        .map_request(rewrite_tenant_prefix as fn(Request) -> Request)
        .service(app(state))
}
