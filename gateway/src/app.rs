//! The assembly: every surface's router, the tenant-prefix rewrite, CORS, metrics, tracing.
//! Nothing imports this module but the server wiring and tests.
//!
//! ```text
//!  request ─► tenant-prefix rewrite (/t/{id}/…) ─► CORS ─► metrics ─► surfaces
//!               llm · mcp · execute · channels · public · admin · portal · ops · openapi        └─ unknown path: the owning
//!                                                              surface's own 404
//! ```

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use http::{HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::routes;
use crate::state::{App, Options, PathTenant, SurfaceLabel, TenantLabel};
use crate::surface::{Reject, Surface, envelope_reject};

/// Every surface, in routing order.
pub fn surfaces() -> Vec<Surface> {
    vec![
        routes::llm::surface(),
        routes::mcp::surface(),
        routes::execute::surface(),
        routes::channels::surface(),
        routes::public::surface(),
        routes::admin::surface(),
        routes::portal::surface(),
        routes::ops::surface(),
        routes::openapi::surface(),
    ]
}

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

async fn record(State(app): State<App>, req: Request, next: Next) -> Response {
    let guard = RequestTimer {
        app,
        route: req.extensions().get::<MatchedPath>().cloned(),
        started: Instant::now(),
        surface: "other",
        status: None,
        tenant: None,
    };
    finish(guard, next.run(req).await)
}

/// A 401 of the envelope APIs gets the full `WWW-Authenticate` challenge, with the URL of the
/// protected-resource metadata on this request's host (SPEC §4.4, §9.4).
async fn challenge(State(app): State<App>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).cloned();
    let mut resp = next.run(req).await;
    if resp
        .extensions()
        .get::<crate::api::NeedsChallenge>()
        .is_some()
    {
        let mut headers = http::HeaderMap::new();
        if let Some(h) = host {
            headers.insert(header::HOST, h);
        }
        if let Some(v) = crate::api::challenge(&app, &headers) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
    }
    resp
}

fn finish(mut guard: RequestTimer, resp: Response) -> Response {
    guard.status = Some(resp.status().as_u16());
    guard.tenant = resp.extensions().get::<TenantLabel>().map(|t| t.0.clone());
    if let Some(s) = resp.extensions().get::<SurfaceLabel>() {
        guard.surface = s.0;
    }
    let streamed = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !streamed {
        return resp;
    }
    // The request histogram stops at the headers; a stream's time is in its body. Time the
    // body too, from the same start, until it ends or the client goes away.
    let timer = StreamTimer {
        app: guard.app.clone(),
        route: guard.route.clone(),
        started: guard.started,
        surface: guard.surface,
        tenant: guard.tenant.clone(),
    };
    resp.map(|body| {
        axum::body::Body::new(TimedBody {
            body,
            _timer: timer,
        })
    })
}

/// A streamed body that records `understudy_http_stream_duration_seconds` when it is dropped:
/// after its last frame, or when the client goes away mid-stream.
struct TimedBody {
    body: axum::body::Body,
    _timer: StreamTimer,
}

impl http_body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

struct StreamTimer {
    app: App,
    route: Option<MatchedPath>,
    started: Instant,
    surface: &'static str,
    tenant: Option<Arc<crate::snapshot::TenantRuntime>>,
}

impl Drop for StreamTimer {
    fn drop(&mut self) {
        let tenant = self.tenant.as_ref().map_or("", |t| t.id());
        let route = self.route.as_ref().map_or("unmatched", |m| m.as_str());
        self.app
            .metrics
            .observe_stream(self.surface, route, tenant, self.started);
    }
}

/// Records a request's metrics when dropped: a request abandoned by its client is recorded
/// with status 499.
struct RequestTimer {
    app: App,
    /// The matched route template (`None`: no route matched).
    route: Option<MatchedPath>,
    started: Instant,
    surface: &'static str,
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
            header::HeaderName::from_static("x-audit-event-id"),
            header::HeaderName::from_static("x-ratelimit-limit-requests"),
            header::HeaderName::from_static("x-ratelimit-remaining-requests"),
            header::HeaderName::from_static("x-ratelimit-reset-requests"),
            header::HeaderName::from_static("anthropic-ratelimit-requests-limit"),
            header::HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
            header::HeaderName::from_static("anthropic-ratelimit-requests-reset"),
        ])
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

/// A surface's refusal.
type Rejecter = fn(Reject, &Method, &str) -> Response;

/// Who answers an unknown path: the surface owning the longest matching prefix
/// (prefix, label, refusal).
struct Fallbacks(Vec<(&'static str, &'static str, Rejecter)>);

impl Fallbacks {
    fn answer(&self, method: &Method, path: &str) -> Response {
        let owner = self
            .0
            .iter()
            .filter(|(prefix, _, _)| path.starts_with(prefix))
            .max_by_key(|(prefix, _, _)| prefix.len());
        let (label, reject) = match owner {
            Some((_, label, f)) => (*label, *f),
            None => ("other", envelope_reject as Rejecter),
        };
        let mut resp = reject(Reject::NotFound, method, path);
        resp.extensions_mut().insert(SurfaceLabel(label));
        resp
    }
}

/// The router (without the `/t/{id}` rewrite, which must run before routing: see [`service`]).
pub fn app(state: App) -> Router {
    let mut router = Router::new();
    let mut fallbacks = Vec::new();
    for s in surfaces() {
        let label = s.label;
        let reject = s.reject;
        for p in s.prefixes {
            fallbacks.push((*p, label, reject));
        }
        let refuse_method = move |req: Request| async move {
            reject(Reject::MethodNotAllowed, req.method(), req.uri().path())
        };
        router = router.merge(s.router.method_not_allowed_fallback(refuse_method).layer(
            middleware::map_response(move |mut resp: Response| async move {
                resp.extensions_mut().insert(SurfaceLabel(label));
                resp
            }),
        ));
    }
    let fallbacks = Arc::new(Fallbacks(fallbacks));
    let mut router = router
        .fallback(move |req: Request| {
            let fallbacks = fallbacks.clone();
            async move { fallbacks.answer(req.method(), req.uri().path()) }
        })
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .layer(middleware::from_fn_with_state(state.clone(), challenge));
    if let Some(trace) = trace_layer() {
        router = router.layer(trace);
    }
    router.layer(cors(&state.options)).with_state(state)
}

/// The full service handed to the server: the tenant-prefix rewrite and the request-body
/// deadline (`--body-timeout`) in front of [`app`]; a response sent before its request's body
/// was read to the end is marked `Connection: close` ([`crate::conn::close_if_unread`]).
pub fn service(
    state: App,
) -> impl tower::Service<
    Request,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ 'static {
    use tower::ServiceExt;
    let limit = state.options.body_timeout;
    let router = app(state);
    tower::service_fn(move |req: Request| {
        let (req, read) = crate::conn::with_body_deadline(rewrite_tenant_prefix(req), limit);
        let call = router.clone().oneshot(req);
        async move {
            let resp = call.await?;
            Ok(crate::conn::close_if_unread(read, resp))
        }
    })
}
