//! Subcommands of the binary that do not serve: `sleep` (the chart's preStop hook, in an image
//! without a shell) runs with the container's whole environment and exits 0; `validate` refuses
//! misspelt fields by name and lists problems in document order, with the paths as given.

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

/// A scratch folder, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "understudy-cli-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const TYPOS: &str = "\
apiVersion: understudy.dev/v1alpha1
kind: Tenant
metadata: {name: shop}
spec: {tenantId: shop, colour: blue}
---
apiVersion: understudy.dev/v1alpha1
kind: Scenario
metadata: {name: hello}
spec: {tenantRef: shop, keywords: [hello], respnse: \"typo\"}
---
apiVersion: understudy.dev/v1alpha1
kind: Scenario
metadata: {name: orphan}
spec: {tenantRef: nobody, keywords: [x], response: x}
---
apiVersion: understudy.dev/v1alpha1
kind: ChaosProfile
metadata: {name: flaky}
spec: {tenantRef: shop, bogus: 1}
";

#[test]
fn validate_refuses_misspelt_fields_naming_file_document_and_field() {
    let scratch = Scratch::new("typos");
    std::fs::write(scratch.0.join("shop.yaml"), TYPOS).unwrap();
    let out = bin().arg("validate").arg(&scratch.0).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let dir = scratch.0.display().to_string();
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        format!("{dir}: 4 problem(s) in 1 file(s):"),
        format!(
            "  - {dir}/shop.yaml, document 1 (Tenant default/shop): spec.colour: unknown field \"colour\"; known fields: defaultResponse, owner, settings, state, tenantId, visibility"
        ),
        format!(
            "  - {dir}/shop.yaml, document 2 (Scenario default/hello): spec.respnse: unknown field \"respnse\": did you mean \"response\"?"
        ),
        format!(
            "  - {dir}/shop.yaml, document 3 (Scenario default/orphan): spec.tenantRef: no valid Tenant named \"nobody\" in namespace \"default\""
        ),
        format!(
            "  - {dir}/shop.yaml, document 4 (ChaosProfile default/flaky): spec.bogus: unknown field \"bogus\"; known fields: afterChunks, every, failFirst, latencyMs, limit, probability, profile, statusCode, surfaces, tenantRef, windowSeconds"
        ),
    ];
    assert_eq!(lines, expected, "{stderr}");
}

#[test]
fn serve_refuses_a_misspelt_field_at_start_up() {
    let scratch = Scratch::new("serve");
    std::fs::write(scratch.0.join("shop.yaml"), TYPOS).unwrap();
    let out = bin()
        .args(["--listen", "127.0.0.1:0", "--manifests"])
        .arg(&scratch.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("spec.respnse: unknown field \"respnse\": did you mean \"response\"?"),
        "{stderr}"
    );
}

#[test]
fn validate_accepts_the_examples() {
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let out = bin().arg("validate").arg(&examples).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": valid"));
}
