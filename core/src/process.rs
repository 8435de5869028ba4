//! What both binaries need around their main loop: the log format flag, the Redis URL check (and
//! its redaction for messages), and the shutdown signal.

use clap::ValueEnum;

/// Log output format (`--log-format`).
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Checks a `--redis-url` before anything connects: one of the schemes the client speaks.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    if ["redis://", "rediss://", "unix://"]
        .iter()
        .any(|scheme| url.starts_with(scheme))
    {
        return Ok(());
    }
    Err(format!(
        "--redis-url (UNDERSTUDY_REDIS_URL) must start with redis://, rediss:// or unix://, got {:?}",
        redact(url)
    ))
}

/// A Redis URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls() {
        assert!(check_redis_url("redis://h:6379/0").is_ok());
        assert!(check_redis_url("rediss://h").is_ok());
        assert!(check_redis_url("unix:///tmp/r.sock").is_ok());
        let e = check_redis_url("http://user:secret@h").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        assert_eq!(redact("redis://:pw@h:1/0"), "redis://***@h:1/0");
        assert_eq!(redact("redis://h:1/0"), "redis://h:1/0");
    }
}
