//! Command line and environment (`--flag` / `UNDERSTUDY_*`), validated once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Understudy's gateway: a stand-in for the OpenAI and Anthropic APIs (and, as the project grows,
/// MCP servers and event channels), answering per tenant from scenario manifests.
#[derive(Debug, Parser)]
#[command(name = "understudy-gateway", version, about, long_about = None)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Serving options.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check every manifest under DIR without serving; exit 1 listing every problem.
    Validate {
        /// The manifests folder.
        dir: PathBuf,
    },
    /// Wait, then exit 0: a Kubernetes preStop hook in an image without a shell, so the pod
    /// leaves the Service's endpoints before the gateway starts draining.
    Sleep {
        /// How long (`5s`, `500ms`).
        #[arg(value_parser = humantime::parse_duration)]
        duration: Duration,
    },
}

pub use understudy_core::process::{LogFormat, check_redis_url, redact};

/// Serving options.
#[derive(Debug, clap::Args, Clone)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "UNDERSTUDY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Shared mode: keep all state in this Redis (redis://host:port/db).
    #[arg(long, env = "UNDERSTUDY_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Load Tenant, Scenario and ChaosProfile manifests from this folder (and reload on change).
    #[arg(long, env = "UNDERSTUDY_MANIFESTS")]
    pub manifests: Option<PathBuf>,
    /// Base URL used in links the gateway hands out.
    #[arg(long, env = "UNDERSTUDY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The bootstrap admin token: a Bearer / X-API-Key credential with the admin role.
    #[arg(long, env = "UNDERSTUDY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Whether anonymous callers may use global tenants' data plane (`false`: any valid key).
    #[arg(long, env = "UNDERSTUDY_ALLOW_ANONYMOUS", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_anonymous: bool,
    /// Allowed CORS origins, comma-separated (`*` for any).
    #[arg(
        long,
        env = "UNDERSTUDY_CORS_ORIGINS",
        default_value = "*",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// Log format.
    #[arg(
        long,
        env = "UNDERSTUDY_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Largest accepted request body, in bytes (larger → 413).
    #[arg(long, env = "UNDERSTUDY_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// After SIGTERM: how long readiness reports 503 while new connections are still accepted.
    #[arg(long, env = "UNDERSTUDY_DRAIN_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain_grace: Duration,
    /// After the grace period: how long in-flight requests may take before the process exits.
    #[arg(long, env = "UNDERSTUDY_DRAIN_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Full configuration resync period (a safety net behind change notices).
    #[arg(long, env = "UNDERSTUDY_RESYNC_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,
    /// Largest answer, in bytes: text × `n`, tool arguments × `n`, embeddings (larger → 400
    /// naming the limit, before anything is rendered).
    #[arg(long, env = "UNDERSTUDY_MAX_ANSWER_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_answer_bytes: usize,
    /// Most events in one streamed answer (more → 400 naming the limit).
    #[arg(long, env = "UNDERSTUDY_MAX_STREAM_EVENTS", default_value_t = 100_000)]
    pub max_stream_events: usize,
    /// A connection must deliver a complete request head within this time after it opens, and
    /// after each response (so it is also the idle keep-alive timeout). Streams are exempt while
    /// they stream.
    #[arg(long, env = "UNDERSTUDY_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// A request body must arrive in full within this time (slow drips are cut: 400); a response
    /// write that waits this long for a client that stopped reading closes the connection.
    #[arg(long, env = "UNDERSTUDY_BODY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub body_timeout: Duration,
    /// Most open connections; past it new ones are closed at once. Also kept below the
    /// process's open-file limit (raised to its hard limit at start-up).
    #[arg(long, env = "UNDERSTUDY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Serve `/metrics` on this address instead of the main listener (so data-plane clients
    /// cannot read other tenants' ids and traffic).
    #[arg(long, env = "UNDERSTUDY_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Origins allowed to use MCP, comma-separated (`*` for any), besides the gateway's own
    /// (`--public-url`'s, or a loopback `Host`'s). A browser request from any other Origin gets
    /// 403 (DNS-rebinding protection); requests without an Origin (every non-browser client)
    /// are not affected.
    #[arg(long, env = "UNDERSTUDY_MCP_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub mcp_allowed_origins: Vec<String>,
    /// Requests per minute per caller on the hosted MCP endpoint (`POST /api/v1/mcp`); SPEC §4.5
    /// says 60. Raise it only for load tests.
    #[arg(long, env = "UNDERSTUDY_HOSTED_RATE_LIMIT", default_value_t = 60)]
    pub hosted_rate_limit: u64,
    /// How long a streamable HTTP MCP session lives after its last request.
    #[arg(long, env = "UNDERSTUDY_MCP_SESSION_IDLE", default_value = "30m", value_parser = humantime::parse_duration)]
    pub mcp_session_idle: Duration,
    /// Largest channel message payload in bytes, serialised (SPEC §7.3 says 256 KiB).
    #[arg(long, env = "UNDERSTUDY_CHANNEL_MAX_PAYLOAD_BYTES", default_value_t = 256 * 1024)]
    pub channel_max_payload_bytes: usize,
    /// Messages retained per channel (the oldest go first); replay and `GET …/messages` reach
    /// back this far.
    #[arg(long, env = "UNDERSTUDY_CHANNEL_RETENTION", default_value_t = 10_000)]
    pub channel_retention: usize,
    /// Record the audit log (every tool call, execute call, LLM request, chaos injection,
    /// replay and try-it). Writing never slows or fails a request.
    #[arg(long, env = "UNDERSTUDY_AUDIT", default_value_t = true, action = clap::ArgAction::Set)]
    pub audit: bool,
    /// How long audit events are kept (`7d`, `24h`).
    #[arg(long, env = "UNDERSTUDY_AUDIT_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub audit_retention: Duration,
    /// Most audit events kept (the oldest go first).
    #[arg(long, env = "UNDERSTUDY_AUDIT_MAX_EVENTS", default_value_t = 100_000)]
    pub audit_max_events: usize,
    /// Most audit events waiting to be written; past it events are dropped and counted
    /// (`understudy_audit_events_dropped_total{reason="queue_full"}`).
    #[arg(long, env = "UNDERSTUDY_AUDIT_QUEUE", default_value_t = 10_000)]
    pub audit_queue: usize,
    /// Keep each event's payload row (request, answer, redacted headers); `false` keeps
    /// summaries only (cheaper, and nothing a request carried is stored; replay needs payloads).
    #[arg(long, env = "UNDERSTUDY_AUDIT_PAYLOADS", default_value_t = true, action = clap::ArgAction::Set)]
    pub audit_payloads: bool,
    /// OIDC issuer URL: bearer JWTs and the portal's login (off when absent).
    #[arg(long, env = "UNDERSTUDY_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// OIDC client id (the audience of id_tokens; always accepted in bearer JWTs).
    #[arg(long, env = "UNDERSTUDY_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,
    /// OIDC client secret (`client_secret_basic`); without it the login is a public client
    /// with PKCE.
    #[arg(long, env = "UNDERSTUDY_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<String>,
    /// The claim holding the role (viewer, editor or admin; a string or a list, the highest
    /// wins); missing or unknown: viewer.
    #[arg(long, env = "UNDERSTUDY_OIDC_ROLE_CLAIM", default_value = "role")]
    pub oidc_role_claim: String,
    /// Audiences accepted in bearer JWTs besides the client id, comma-separated.
    #[arg(long, env = "UNDERSTUDY_OIDC_AUDIENCE", value_delimiter = ',')]
    pub oidc_audience: Vec<String>,
    /// Scopes asked for at login.
    #[arg(
        long,
        env = "UNDERSTUDY_OIDC_SCOPES",
        default_value = "openid profile email"
    )]
    pub oidc_scopes: String,
    /// The login's redirect URI (default: `<public URL or Host>/portal/auth/callback`).
    #[arg(long, env = "UNDERSTUDY_OIDC_REDIRECT_URL")]
    pub oidc_redirect_url: Option<String>,
    /// How long a portal login lasts.
    #[arg(long, env = "UNDERSTUDY_PORTAL_SESSION_TTL", default_value = "12h", value_parser = humantime::parse_duration)]
    pub portal_session_ttl: Duration,
}

impl ServeArgs {
    /// The OIDC options, when an issuer is set.
    pub fn oidc_options(&self) -> Option<crate::oidc::OidcOptions> {
        let issuer = self.oidc_issuer.as_deref()?.trim().trim_end_matches('/');
        Some(crate::oidc::OidcOptions {
            issuer: issuer.to_string(),
            client_id: self.oidc_client_id.clone().unwrap_or_default(),
            client_secret: self.oidc_client_secret.clone().filter(|s| !s.is_empty()),
            role_claim: self.oidc_role_claim.clone(),
            audiences: self
                .oidc_audience
                .iter()
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect(),
            scopes: self.oidc_scopes.clone(),
            redirect_url: self.oidc_redirect_url.clone(),
        })
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.redis_url {
            check_redis_url(url)?;
        }
        if self.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(
                "--admin-token (UNDERSTUDY_ADMIN_TOKEN) must be at least 16 characters".into(),
            );
        }
        if self.max_answer_bytes < 1024 {
            return Err(
                "--max-answer-bytes (UNDERSTUDY_MAX_ANSWER_BYTES) must be at least 1024".into(),
            );
        }
        if self.max_stream_events < 16 {
            return Err(
                "--max-stream-events (UNDERSTUDY_MAX_STREAM_EVENTS) must be at least 16".into(),
            );
        }
        // An open stream refreshes its session every third of this, at most once a second.
        if self.mcp_session_idle < Duration::from_secs(3) {
            return Err(
                "--mcp-session-idle (UNDERSTUDY_MCP_SESSION_IDLE) must be at least 3s".into(),
            );
        }
        if self.hosted_rate_limit < 1 {
            return Err(
                "--hosted-rate-limit (UNDERSTUDY_HOSTED_RATE_LIMIT) must be at least 1".into(),
            );
        }
        if !(1..=16 * 1024 * 1024).contains(&self.channel_max_payload_bytes) {
            return Err("--channel-max-payload-bytes (UNDERSTUDY_CHANNEL_MAX_PAYLOAD_BYTES) must be between 1 and 16777216".into());
        }
        if !(1..=1_000_000).contains(&self.channel_retention) {
            return Err(
                "--channel-retention (UNDERSTUDY_CHANNEL_RETENTION) must be between 1 and 1000000"
                    .into(),
            );
        }
        if self.audit_queue < 1 || self.audit_max_events < 1 {
            return Err("--audit-queue and --audit-max-events must be at least 1".into());
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(30 * 86_400))
            .contains(&self.portal_session_ttl)
        {
            return Err(
                "--portal-session-ttl (UNDERSTUDY_PORTAL_SESSION_TTL) must be between 1m and 30d"
                    .into(),
            );
        }
        if self.audit_retention < Duration::from_secs(60) {
            return Err(
                "--audit-retention (UNDERSTUDY_AUDIT_RETENTION) must be at least 1m".into(),
            );
        }
        if let Some(issuer) = self.oidc_issuer.as_deref().filter(|i| !i.trim().is_empty()) {
            if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
                return Err("--oidc-issuer (UNDERSTUDY_OIDC_ISSUER) must be an http(s) URL".into());
            }
            if self
                .oidc_client_id
                .as_deref()
                .is_none_or(|c| c.trim().is_empty())
            {
                return Err(
                    "--oidc-issuer needs --oidc-client-id (UNDERSTUDY_OIDC_CLIENT_ID)".into(),
                );
            }
        }
        if self.max_connections < 1 {
            return Err("--max-connections (UNDERSTUDY_MAX_CONNECTIONS) must be at least 1".into());
        }
        if self.max_body_bytes < 1024 {
            return Err(
                "--max-body-bytes (UNDERSTUDY_MAX_BODY_BYTES) must be at least 1024".into(),
            );
        }
        if let Some(dir) = &self.manifests
            && !dir.is_dir()
        {
            return Err(format!(
                "--manifests (UNDERSTUDY_MANIFESTS) {} is not a readable folder",
                dir.display()
            ));
        }
        Ok(())
    }
}
