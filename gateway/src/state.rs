//! The application state every handler reads. Routers depend on this module; it depends on no
//! router (the assembly lives in [`crate::app`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;
use understudy_core::Stores;

use crate::chaos::Chaos;
use crate::metrics::Metrics;
use crate::snapshot::{SnapshotHandle, TenantRuntime};
use crate::stats::Stats;
use crate::tenancy::UnknownTenants;

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
    /// Largest answer in bytes (text × n, tool arguments × n, embeddings).
    pub max_answer_bytes: usize,
    /// Most events in one streamed answer.
    pub max_stream_events: usize,
    /// Longest time a request body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// Whether `/metrics` is served on its own listener (then the main one answers 404).
    pub separate_metrics: bool,
    /// Origins allowed to use MCP besides the request's own host (`*`: any).
    pub mcp_allowed_origins: Vec<String>,
    /// How long a streamable MCP session lives after its last use.
    pub mcp_session_idle: std::time::Duration,
    /// Requests per minute per caller on the hosted MCP endpoint.
    pub hosted_rate_limit: u64,
    /// Largest channel message payload, serialised.
    pub channel_max_payload_bytes: usize,
    /// Messages retained per channel.
    pub channel_retention: usize,
    /// The audit log.
    pub audit: crate::audit::AuditOptions,
    /// OIDC (`None`: off).
    pub oidc: Option<crate::oidc::OidcOptions>,
    /// How long a portal login lasts.
    pub portal_session_ttl: std::time::Duration,
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
            max_answer_bytes: 8 * 1024 * 1024,
            max_stream_events: 100_000,
            body_timeout: std::time::Duration::from_secs(30),
            separate_metrics: false,
            mcp_allowed_origins: Vec::new(),
            mcp_session_idle: std::time::Duration::from_secs(30 * 60),
            hosted_rate_limit: 60,
            channel_max_payload_bytes: 256 * 1024,
            channel_retention: 10_000,
            audit: Default::default(),
            oidc: None,
            portal_session_ttl: std::time::Duration::from_secs(12 * 3600),
        }
    }
}

/// Everything a request handler may touch.
pub struct AppState {
    /// Tenant configuration, read without locks or I/O.
    pub snapshot: Arc<SnapshotHandle>,
    /// Shared state by concern, and the pub/sub hub.
    pub stores: Stores,
    /// Chaos decisions.
    pub chaos: Chaos,
    /// The audit queue.
    pub audit: Arc<crate::audit::Auditor>,
    /// OIDC: discovery, JWKS, token validation (`None`: off).
    pub oidc: Option<Arc<crate::oidc::Oidc>>,
    /// Credentials → identities.
    pub identity: crate::identity::Resolver,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Traffic counters for status.
    pub stats: Arc<Stats>,
    /// Tenant ids recently found to exist nowhere: a flood of them costs no store round trip
    /// each.
    pub unknown: UnknownTenants,
    /// Options.
    pub options: Options,
    /// Cancelled at shutdown: open streams end cleanly.
    pub shutdown: CancellationToken,
    /// Set when draining: readiness answers 503.
    pub draining: AtomicBool,
    /// The channel MCP server of no tenant.
    pub channel_server: Arc<TenantRuntime>,
    /// Channel messages rendered once per process for every subscriber.
    pub channel_frames: crate::channels::Frames,
    /// The channel MCP server of each tenant that used it, per tenant version.
    channel_views: std::sync::Mutex<std::collections::HashMap<String, Arc<TenantRuntime>>>,
}

/// Shared handle to the state.
pub type App = Arc<AppState>;

impl AppState {
    /// Builds the state around the stores and a snapshot.
    pub fn new(
        stores: Stores,
        snapshot: Arc<SnapshotHandle>,
        metrics: Arc<Metrics>,
        options: Options,
    ) -> App {
        let audit = Arc::new(crate::audit::Auditor::new(
            options.audit.clone(),
            metrics.clone(),
            options
                .admin_token
                .iter()
                .cloned()
                .chain(options.oidc.iter().filter_map(|o| o.client_secret.clone()))
                .collect(),
        ));
        let oidc = options
            .oidc
            .clone()
            .map(|o| Arc::new(crate::oidc::Oidc::new(o)));
        Arc::new(AppState {
            chaos: Chaos::new(stores.runtime.clone(), metrics.clone(), audit.clone()),
            identity: crate::identity::Resolver::new(
                options.admin_token.as_deref(),
                snapshot.clone(),
                oidc.clone(),
            ),
            audit,
            oidc,
            snapshot,
            stores,
            metrics,
            stats: Arc::new(Stats::default()),
            unknown: UnknownTenants::default(),
            options,
            shutdown: CancellationToken::new(),
            draining: AtomicBool::new(false),
            channel_server: Arc::new(TenantRuntime::channel_server(None)),
            channel_frames: Default::default(),
            channel_views: Default::default(),
        })
    }

    /// The current version of what `served` serves, after configuration changes: the tenant
    /// from the snapshot, or that tenant's channel server; the channel server of no tenant
    /// stays. `None`: the tenant is gone.
    pub fn current(&self, served: &TenantRuntime) -> Option<Arc<TenantRuntime>> {
        if served.tenantless {
            return Some(self.channel_server.clone());
        }
        let tenant = self.snapshot.tenant(served.id())?;
        Some(if served.channel_server {
            self.channel_view(&tenant)
        } else {
            tenant
        })
    }

    /// The channel MCP server of `tenant` (made once per tenant version).
    pub fn channel_view(&self, tenant: &TenantRuntime) -> Arc<TenantRuntime> {
        let mut views = self.channel_views.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = views.get(tenant.id())
            && v.version == tenant.version
        {
            return v.clone();
        }
        // Bounded: past 1,000 tenants, start over (views are cheap to make again).
        if views.len() >= 1_000 {
            views.clear();
        }
        let view = Arc::new(TenantRuntime::channel_server(Some(tenant)));
        views.insert(tenant.id().to_string(), view.clone());
        view
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
pub struct TenantLabel(pub Arc<TenantRuntime>);

/// The surface a response belongs to (set by each surface's router and fallback, read by the
/// metrics layer).
#[derive(Debug, Clone, Copy)]
pub struct SurfaceLabel(pub &'static str);
