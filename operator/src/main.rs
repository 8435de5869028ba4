//! `understudy-operator`: watches the cluster, writes Redis, serves `/metrics`, `/healthz`,
//! `/readyz`.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use understudy_core::process::{redact, shutdown_signal};
use understudy_core::{Stores, telemetry};
use understudy_operator::config::Cli;
use understudy_operator::lease::LeaseSettings;
use understudy_operator::metrics::Metrics;
use understudy_operator::reconcile::Settings;
use understudy_operator::run::{self, Health, Options};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.validate() {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let _telemetry = match telemetry::init(cli.log_format, "understudy-operator") {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: cannot start telemetry: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match serve(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cli: Cli) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("cannot configure the Kubernetes client: {e}"))?;
    let stores = Stores::redis(&cli.redis_url)
        .map_err(|e| anyhow::anyhow!("--redis-url {}: {e}", redact(&cli.redis_url)))?;
    let identity = cli
        .identity
        .clone()
        .unwrap_or_else(|| format!("understudy-operator-{}", uuid::Uuid::new_v4()));
    let lease = cli.leader_election.then(|| LeaseSettings {
        name: cli.lease_name.clone(),
        namespace: cli
            .lease_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".into()),
        identity: identity.clone(),
        duration: Duration::from_secs(15),
        renew: Duration::from_secs(5),
    });
    let health = Health {
        ready: Arc::new(AtomicBool::new(false)),
        metrics: Arc::new(Metrics::new()),
    };
    let opts = Options {
        namespaces: cli.watched(),
        lease,
        resync: cli.resync_interval,
        status_interval: cli.status_interval,
        epoch_check: Duration::from_secs(1),
        debounce: cli.debounce,
        debounce_max: cli.debounce_max,
        settings: Settings {
            instance: Some(identity),
            namespaces: cli.watched(),
            ..Settings::default()
        },
    };
    let listener = tokio::net::TcpListener::bind(cli.listen).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        namespaces = ?opts.namespaces,
        leader_election = opts.lease.is_some(),
        "understudy-operator {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let cancel = CancellationToken::new();
    let http = {
        let cancel = cancel.clone();
        let app = run::router(health.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
        })
    };
    let worker = tokio::spawn(run::run(client, stores, opts, health, cancel.clone()));
    shutdown_signal().await;
    tracing::info!("shutting down: releasing the lease");
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
    let _ = http.await;
    Ok(())
}
