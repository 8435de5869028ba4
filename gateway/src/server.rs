//! Wiring: store, snapshot, sync, manifests, server, and the SIGTERM drain (SPEC §10).
//!
//! ```text
//!  signal ─► readiness 503 ─(drain grace)─► stop accepting, end open streams ─► in-flight finish
//!         ─(drain timeout)─► background tasks stop, last stats flush ─► exit 0
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use understudy_core::Stores;
use understudy_crds::manifests::Loaded;

use crate::app;
use crate::config::ServeArgs;
use crate::manifests::{self, Seeder};
use crate::metrics::Metrics;
use crate::snapshot::SnapshotHandle;
use crate::state::{App, AppState, Options};
use crate::sync::{self, SyncHandle, SyncOptions};

/// How often in-process traffic counters are flushed.
const STATS_FLUSH: Duration = Duration::from_secs(2);

/// A started gateway: its state and background tasks.
pub struct Running {
    /// The application state.
    pub app: App,
    /// Cancels background tasks (sync, watcher, stats).
    pub tasks: CancellationToken,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

/// Everything [`wire`] needs: what the binary reads from its flags, and what tests set up.
pub struct Wiring {
    /// The stores and hub (memory or Redis).
    pub stores: Stores,
    /// Route options.
    pub options: Options,
    /// Sync timing.
    pub sync: SyncOptions,
    /// A manifests folder and its first load: seeded now, watched and reseeded on change.
    pub manifests: Option<(PathBuf, Loaded)>,
    /// How often the manifests watcher checks the store lost them (safety net).
    pub manifests_check: Duration,
    /// How often traffic counters are flushed.
    pub stats_every: Duration,
}

impl Wiring {
    /// Defaults around `stores` and `options`: default sync timing, no manifests.
    pub fn new(stores: Stores, options: Options) -> Self {
        Wiring {
            stores,
            options,
            sync: SyncOptions::default(),
            manifests: None,
            manifests_check: Duration::from_secs(5),
            stats_every: STATS_FLUSH,
        }
    }
}

/// The one wiring of a gateway, used by the binary and by the tests: state, manifest seeding
/// and watching, the configuration sync, and the stats flusher.
pub async fn wire(w: Wiring) -> Running {
    let metrics = Arc::new(Metrics::new());
    let snapshot = Arc::new(SnapshotHandle::new());
    let stores = w.stores;
    let app = AppState::new(stores.clone(), snapshot.clone(), metrics.clone(), w.options);
    let tasks = CancellationToken::new();
    let sync_handle = Arc::new(SyncHandle::default());
    let mut handles = Vec::new();

    if let Some((dir, loaded)) = w.manifests {
        let seeder = Arc::new(Seeder::new(stores.clone()));
        let pending = match seeder.seed(&loaded, manifests::SeedMode::Changed).await {
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "could not write manifests yet; retrying in the background");
                true
            }
        };
        handles.push(tokio::spawn(manifests::run_watcher(
            dir,
            seeder,
            sync_handle.clone(),
            w.manifests_check,
            pending,
            tasks.clone(),
        )));
    }
    handles.push(tokio::spawn(sync::run(
        stores.config.clone(),
        stores.hub.clone(),
        snapshot,
        metrics.clone(),
        sync_handle,
        w.sync,
        tasks.clone(),
    )));
    handles.push(tokio::spawn(
        app.audit.clone().run(stores.clone(), tasks.clone()),
    ));
    handles.push(tokio::spawn(app.stats.clone().run_flusher(
        stores.stats.clone(),
        metrics,
        w.stats_every,
        tasks.clone(),
    )));
    Running {
        app,
        tasks,
        handles,
    }
}

/// Builds the state from the flags and starts background tasks (no listener yet). Invalid
/// manifests fail here.
pub async fn start(args: &ServeArgs) -> anyhow::Result<Running> {
    args.validate().map_err(anyhow::Error::msg)?;
    let manifests = match &args.manifests {
        Some(dir) => Some((dir.clone(), manifests::load(dir)?)),
        None => None,
    };
    let stores = match &args.redis_url {
        Some(url) => Stores::redis(url).context("--redis-url (UNDERSTUDY_REDIS_URL)")?,
        None => Stores::memory(),
    };
    let options = Options {
        max_body_bytes: args.max_body_bytes,
        cors_origins: args.cors_origins.clone(),
        public_url: args.public_url.clone(),
        shared: args.redis_url.is_some(),
        admin_token: args.admin_token.clone(),
        allow_anonymous: args.allow_anonymous,
        max_answer_bytes: args.max_answer_bytes,
        max_stream_events: args.max_stream_events,
        body_timeout: args.body_timeout,
        separate_metrics: args.metrics_listen.is_some(),
        mcp_allowed_origins: args
            .mcp_allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect(),
        mcp_session_idle: args.mcp_session_idle,
        hosted_rate_limit: args.hosted_rate_limit,
        channel_max_payload_bytes: args.channel_max_payload_bytes,
        channel_retention: args.channel_retention,
        audit: crate::audit::AuditOptions {
            enabled: args.audit,
            retention: args.audit_retention,
            max_events: args.audit_max_events,
            queue: args.audit_queue,
            payloads: args.audit_payloads,
        },
        oidc: args.oidc_options(),
        portal_session_ttl: args.portal_session_ttl,
    };
    let mut wiring = Wiring::new(stores, options);
    wiring.sync.resync = args.resync_interval;
    wiring.manifests = manifests;
    wiring.manifests_check = args.resync_interval.min(Duration::from_secs(5));
    Ok(wire(wiring).await)
}

impl Running {
    /// Stops background tasks (flushing stats once more) and waits for them.
    pub async fn stop(self) {
        self.tasks.cancel();
        for h in self.handles {
            let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
        }
    }
}

/// Binds `addr` with TCP_NODELAY on every connection (SSE is 40× slower without it).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (--listen / UNDERSTUDY_LISTEN)"))
}

/// Serves until `signal` resolves, then drains as described in the module docs.
pub async fn serve(
    running: Running,
    listener: TcpListener,
    args: &ServeArgs,
    signal: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = running.app.clone();
    let stop_accepting = CancellationToken::new();
    let drain = {
        let app = app.clone();
        let stop_accepting = stop_accepting.clone();
        let grace = args.drain_grace;
        async move {
            signal.await;
            tracing::info!(grace = ?grace, "shutdown requested: draining");
            app.draining.store(true, Ordering::Release);
            tokio::time::sleep(grace).await;
            app.shutdown.cancel();
            stop_accepting.cancel();
        }
    };
    tokio::spawn(drain);
    let open_files = crate::conn::raise_open_file_limit();
    let limits = crate::conn::ConnLimits {
        header_timeout: args.header_timeout,
        write_stall: args.body_timeout,
        max_connections: crate::conn::connection_cap(args.max_connections, open_files),
    };
    tracing::info!(
        max_connections = limits.max_connections,
        open_files = ?open_files,
        header_timeout = ?limits.header_timeout,
        body_timeout = ?args.body_timeout,
        "connection limits"
    );
    if let Some(addr) = args.metrics_listen {
        let metrics_listener = bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} (--metrics-listen / UNDERSTUDY_METRICS_LISTEN)")
        })?;
        tracing::info!(listen = %addr, "metrics served on their own listener");
        let router = crate::routes::ops::metrics_router().with_state(app.clone());
        // The same connection limits as the main listener, with a small cap of its own.
        let metrics_limits = crate::conn::ConnLimits {
            max_connections: limits.max_connections.min(64),
            ..limits
        };
        tokio::spawn(crate::conn::serve(
            metrics_listener,
            router,
            metrics_limits,
            app.metrics.clone(),
            stop_accepting.clone(),
        ));
    }
    let server = tokio::spawn(crate::conn::serve(
        listener,
        app::service(app.clone()),
        limits,
        app.metrics.clone(),
        stop_accepting.clone(),
    ));
    stop_accepting.cancelled().await;
    match tokio::time::timeout(args.drain_timeout, server).await {
        Ok(Ok(())) => tracing::info!("drained"),
        Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
        Err(_) => {
            tracing::warn!("in-flight requests still running after the drain timeout; exiting")
        }
    }
    running.stop().await;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub use understudy_core::process::shutdown_signal;
