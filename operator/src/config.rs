//! Command line and environment (`--flag` / `UNDERSTUDY_*`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use understudy_core::process::{LogFormat, check_redis_url};

/// Understudy's operator: reconciles Tenant, Scenario and ChaosProfile resources into the Redis
/// the gateways serve from, and reports status, traffic counters and Events on them.
#[derive(Debug, Parser, Clone)]
#[command(name = "understudy-operator", version, about, long_about = None)]
pub struct Cli {
    /// The Redis the gateways share (redis://host:port/db, rediss:// for TLS).
    #[arg(long, env = "UNDERSTUDY_REDIS_URL")]
    pub redis_url: String,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "UNDERSTUDY_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,
    /// Namespaces to watch, comma-separated (empty: all namespaces).
    #[arg(
        long,
        env = "UNDERSTUDY_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub namespaces: Vec<String>,
    /// Elect a leader through a Lease, so that several replicas can run.
    #[arg(long, env = "UNDERSTUDY_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// The Lease's name.
    #[arg(
        long,
        env = "UNDERSTUDY_LEASE_NAME",
        default_value = "understudy-operator"
    )]
    pub lease_name: String,
    /// The Lease's namespace (default: the pod's namespace, `POD_NAMESPACE`, else `default`).
    #[arg(long, env = "UNDERSTUDY_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease and in Events (default: `POD_NAME`, else a UUID).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Full resync period: everything is compared with Redis and rewritten where it drifted.
    #[arg(long, env = "UNDERSTUDY_RESYNC_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,
    /// How often the gateways' traffic counters are read into status (at most one patch per
    /// resource per period).
    #[arg(long, env = "UNDERSTUDY_STATUS_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub status_interval: Duration,
    /// Quiet period after a change before it is applied; each further change restarts it, so a
    /// burst (`kubectl apply -f` of a folder) is applied in one pass.
    #[arg(long, env = "UNDERSTUDY_DEBOUNCE", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub debounce: Duration,
    /// Longest delay from the first change of a burst to its pass, however long the burst lasts.
    #[arg(long, env = "UNDERSTUDY_DEBOUNCE_MAX", default_value = "5s", value_parser = humantime::parse_duration)]
    pub debounce_max: Duration,
    /// Log format.
    #[arg(
        long,
        env = "UNDERSTUDY_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

impl Cli {
    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        check_redis_url(&self.redis_url)?;
        if self.status_interval < Duration::from_secs(1)
            || self.resync_interval < Duration::from_secs(1)
        {
            return Err("--status-interval and --resync-interval must be at least 1s".into());
        }
        if self.debounce > self.debounce_max || self.debounce_max > Duration::from_secs(60) {
            return Err("--debounce must not exceed --debounce-max, and --debounce-max 60s".into());
        }
        Ok(())
    }

    /// The namespaces to watch (`[]`: all).
    pub fn watched(&self) -> Vec<String> {
        let set: std::collections::BTreeSet<String> = self
            .namespaces
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        set.into_iter().collect()
    }
}
