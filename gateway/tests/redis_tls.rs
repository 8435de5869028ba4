//! `rediss://`: the store and a gateway process over TLS to a real `redis-server` (self-signed
//! certificate made with `openssl`; `#insecure` skips verification of it).

use std::process::{Command, Stdio};
use std::time::Duration;

use understudy_core::ConfigStore;
use understudy_core::redis::RedisStore;
use understudy_crds::model::{ConfigSource, TenantConfig};
use understudy_e2e::{Gateway, eventually, free_port};

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn store_and_gateway_speak_tls_to_redis() {
    let dir = std::env::temp_dir().join(format!("understudy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl is installed");
    assert!(ok.success());
    let port = free_port();
    let _redis = Killed(
        Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&cert)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts"),
    );
    let url = format!("rediss://127.0.0.1:{port}/0#insecure");
    let store = RedisStore::connect(&url).expect("a rediss:// URL is accepted");
    let doc = TenantConfig {
        tenant_id: "over_tls".into(),
        state: serde_json::json!({}),
        settings: serde_json::json!({}),
        visibility: Default::default(),
        owner: None,
        default_response: Some("over TLS".into()),
        scenarios: vec![],
        chaos: None,
        source: ConfigSource::Api,
        origin: "test".into(),
    };
    let written = eventually(Duration::from_secs(10), || async {
        store.put_tenant(&doc).await.ok()
    })
    .await;
    assert!(written.is_some(), "writes over TLS");
    assert_eq!(store.get_tenant("over_tls").await.unwrap().unwrap().0, doc);

    let gw = Gateway::start(&["--redis-url", &url])
        .await
        .expect("gateway ready over TLS");
    let models = reqwest::Client::new()
        .get(format!("{}/t/over_tls/v1/models", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        models.status(),
        200,
        "the gateway serves a tenant read over TLS"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
