//! Subcommands of the binary that do not serve: `sleep` (the chart's preStop hook, in an image
//! without a shell) runs with the container's whole environment and exits 0.

use std::process::Command;
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_understudy-gateway"))
}

#[test]
fn sleep_waits_then_exits_zero_with_the_pod_environment() {
    let started = Instant::now();
    let status = bin()
        .args(["sleep", "300ms"])
        .env("UNDERSTUDY_LISTEN", "0.0.0.0:8080")
        .env("UNDERSTUDY_REDIS_URL", "redis://redis:6379/0")
        .env(
            "UNDERSTUDY_ADMIN_TOKEN",
            "a-token-long-enough-for-the-gateway",
        )
        .env("UNDERSTUDY_ALLOW_ANONYMOUS", "true")
        .env("UNDERSTUDY_DRAIN_GRACE", "2s")
        .env("UNDERSTUDY_OIDC_ISSUER", "https://login.example.com")
        .status()
        .unwrap();
    assert!(status.success());
    assert!(started.elapsed() >= Duration::from_millis(300), "it waited");
}

#[test]
fn sleep_refuses_a_duration_without_unit() {
    let out = bin().args(["sleep", "five"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("five"));
}
