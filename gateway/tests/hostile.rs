//! Hostile input against real processes (SPEC §11, shared-service limits): sockets that never
//! finish a request, answers that would amplify, streams nobody reads, keyword lists that
//! would stall matching. Each case is bounded: the process stays up and other clients are served.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use understudy_e2e::{Gateway, eventually};

/// A manifests folder with one tenant per `(id, yaml body)` written to a temp dir.
fn manifests(files: &[(&str, String)]) -> tempdir::Dir {
    let dir = tempdir::Dir::new();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

mod tempdir {
    /// A temporary folder removed on drop.
    pub struct Dir(std::path::PathBuf);

    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!(
                "understudy-hostile-{}-{}",
                std::process::id(),
                fastrand::u64(..)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
        pub fn arg(&self) -> String {
            self.0.display().to_string()
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn tenant(id: &str, settings: &str, response: &str) -> String {
    format!(
        "apiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: {n}}}\nspec: {{tenantId: {id}, settings: {settings}}}\n---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {{name: {n}-big}}\nspec: {{tenantRef: {n}, keywords: [big], response: \"{response}\"}}\n",
        n = id.replace('_', "-"),
    )
}

async fn chat(base: &str, tenant: &str, body: Value) -> (u16, Value) {
    try_chat(base, tenant, body).await.expect("answered")
}

async fn try_chat(base: &str, tenant: &str, body: Value) -> Option<(u16, Value)> {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .header("x-tenant-id", tenant)
        .json(&body)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn silent_half_open_and_dripping_connections_cannot_starve_the_process() {
    let dir = manifests(&[("t.yaml", tenant("calm", "{}", "fine"))]);
    let gw = Gateway::start_with_open_files(
        256,
        &[
            "--manifests",
            &dir.arg(),
            "--header-timeout",
            "2s",
            "--body-timeout",
            "2s",
        ],
    )
    .await
    .unwrap();
    let addr = gw.base.trim_start_matches("http://").to_string();
    // 1,500 hostile sockets, far past the process's 256 open files: silent ones, half-sent
    // headers, and bodies dripping a byte at a time. They stay open for the whole test.
    let hostile = {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || {
            let mut held = Vec::new();
            for i in 0..1_500 {
                let Ok(mut s) = TcpStream::connect(&addr) else {
                    continue;
                };
                let _ = match i % 3 {
                    0 => Ok(()),
                    1 => s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"),
                    _ => s.write_all(
                        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-tenant-id: calm\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{",
                    ),
                };
                held.push(s);
            }
            held
        })
    };
    let mut held = hostile.await.unwrap();
    assert!(held.len() > 500, "the hostile sockets connected");
    // Meanwhile a well-behaved client, on new connections, is served within a bounded wait:
    // the hostile sockets are closed by the header and body timeouts or refused at the cap.
    let served = eventually(Duration::from_secs(20), || async {
        let (s, body) = try_chat(
            &gw.base,
            "calm",
            json!({"model": "m", "messages": [{"role": "user", "content": "big"}]}),
        )
        .await?;
        (s == 200).then_some(body)
    })
    .await
    .expect("another client is served while the hostile sockets are held");
    assert_eq!(served["choices"][0]["message"]["content"], "fine");
    // Drip one more byte into each dripping body: those past their deadline are closed.
    for s in held.iter_mut().skip(2).step_by(3) {
        let _ = s.write_all(b" ");
    }
    for _ in 0..10 {
        let r = reqwest::Client::new()
            .get(format!("{}/healthz", gw.base))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("health answered while the hostile sockets are held");
        assert_eq!(r.status(), 200);
    }
    let metrics = reqwest::get(format!("{}/metrics", gw.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("understudy_connections_refused_total{reason=\"cap\"}"),
        "the connection cap acted:\n{metrics}"
    );
    drop(held);
}

#[tokio::test]
async fn amplified_answers_are_refused_before_rendering() {
    let big = "a".repeat(1024 * 1024 - 16);
    let dir = manifests(&[
        ("a.yaml", tenant("wide", "{}", &big)),
        (
            "b.yaml",
            tenant("fine_grained", "{stream_chunk_chars: 1}", &big),
        ),
    ]);
    let gw = Gateway::start(&["--manifests", &dir.arg()]).await.unwrap();
    // 1 MiB × 128 choices: over the 8 MiB answer limit.
    let (s, body) = chat(
        &gw.base,
        "wide",
        json!({"model": "m", "n": 128, "messages": [{"role": "user", "content": "big"}]}),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["error"]["param"], "n");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-answer-bytes"),
        "{body}"
    );
    // One character per event: a million events, over the stream limit.
    let (s, body) = chat(
        &gw.base,
        "fine_grained",
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "big"}]}),
    )
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-stream-events"),
        "{body}"
    );
    // Within the limits it is served.
    let (s, body) = chat(
        &gw.base,
        "wide",
        json!({"model": "m", "n": 4, "messages": [{"role": "user", "content": "big"}]}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(body["choices"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn streams_nobody_reads_hold_bounded_memory() {
    let big = "b".repeat(1024 * 1024 - 16);
    let dir = manifests(&[(
        "a.yaml",
        tenant("slow_reader", "{stream_chunk_chars: 16}", &big),
    )]);
    let gw = Gateway::start(&["--manifests", &dir.arg()]).await.unwrap();
    let addr = gw.base.trim_start_matches("http://").to_string();
    let before = gw.rss_kib();
    // 12 clients ask for a 1 MiB answer in 65,536 events each and never read a byte. Planned in
    // full, each stream would hold about 13 MB of encoded events.
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "big"}]})
            .to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-tenant-id: slow_reader\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut held = Vec::new();
    for _ in 0..12 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        held.push(s);
    }
    // Let the server fill the sockets' buffers and stall on them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown_mib = gw.rss_kib().saturating_sub(before) as f64 / 1024.0;
    assert!(
        grown_mib < 60.0,
        "12 unread 1 MiB streams grew the process by {grown_mib:.1} MiB"
    );
    // And other clients are still served.
    let (s, _) = chat(
        &gw.base,
        "slow_reader",
        json!({"model": "m", "messages": [{"role": "user", "content": "hello"}]}),
    )
    .await;
    assert_eq!(s, 200);
    drop(held);
}

#[tokio::test]
async fn a_huge_keyword_list_and_message_do_not_stall_other_requests() {
    let keywords: Vec<String> = (0..100_000).map(|i| format!("kw{i:06}x")).collect();
    let stalling = format!(
        "apiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: many}}\nspec: {{tenantId: many}}\n---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {{name: many-words}}\nspec: {{tenantRef: many, keywords: [{}], response: matched}}\n",
        keywords.join(", ")
    );
    let dir = manifests(&[
        ("many.yaml", stalling),
        ("calm.yaml", tenant("calm", "{}", "fine")),
    ]);
    let gw = Gateway::start(&["--manifests", &dir.arg()]).await.unwrap();
    // A 5 MB message that matches none of them until its end (past the scanned first 1 MiB).
    let mut text = "zz ".repeat(5 * 1024 * 1024 / 3);
    text.push_str("kw000042x");
    let heavy = json!({"model": "m", "messages": [{"role": "user", "content": text}]});
    let base = gw.base.clone();
    let heavy_calls = futures::stream::iter(0..2)
        .map(|_| {
            let (base, heavy) = (base.clone(), heavy.clone());
            tokio::spawn(async move { chat(&base, "many", heavy).await })
        })
        .buffer_unordered(2)
        .collect::<Vec<_>>();
    let light = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let health = reqwest::Client::new()
            .get(format!("{}/healthz", gw.base))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .expect("liveness answers while heavy requests run");
        assert_eq!(health.status(), 200);
        chat(
            &gw.base,
            "calm",
            json!({"model": "m", "messages": [{"role": "user", "content": "big"}]}),
        )
        .await
    };
    let (heavy, (s, body)) = tokio::join!(heavy_calls, light);
    assert_eq!(
        (s, body["choices"][0]["message"]["content"].clone()),
        (200, json!("fine"))
    );
    for r in heavy {
        let (s, body) = r.unwrap();
        assert_eq!(s, 200, "{body}");
        // Beyond the scanned first MiB: no match, the fallback answers.
        assert_ne!(body["choices"][0]["message"]["content"], "matched");
    }
    // Within the scanned part, a keyword among 100,000 is found.
    let (s, body) = chat(
        &gw.base,
        "many",
        json!({"model": "m", "messages": [{"role": "user", "content": "say kw099999x now"}]}),
    )
    .await;
    assert_eq!(
        (s, body["choices"][0]["message"]["content"].clone()),
        (200, json!("matched"))
    );
}

#[tokio::test]
async fn metrics_can_live_on_their_own_listener() {
    let port = understudy_e2e::free_port();
    let metrics_addr = format!("127.0.0.1:{port}");
    let dir = manifests(&[("t.yaml", tenant("calm", "{}", "fine"))]);
    let gw = Gateway::start(&["--manifests", &dir.arg(), "--metrics-listen", &metrics_addr])
        .await
        .unwrap();
    let (s, _) = chat(
        &gw.base,
        "calm",
        json!({"model": "m", "messages": [{"role": "user", "content": "big"}]}),
    )
    .await;
    assert_eq!(s, 200);
    // The data-plane listener no longer shows tenant ids and traffic.
    let r = reqwest::get(format!("{}/metrics", gw.base)).await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    // The metrics listener does.
    let text = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(r#"tenant="calm""#), "{text}");
}

#[tokio::test]
async fn scenario_content_over_the_answer_limit_is_refused_by_validate_and_the_api() {
    let too_big = "c".repeat(1024 * 1024 + 1);
    let dir = manifests(&[("t.yaml", tenant("huge", "{}", &too_big))]);
    let out = std::process::Command::new(understudy_e2e::gateway_bin())
        .args(["validate", &dir.arg()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.response") && err.contains("1048576"),
        "{err}"
    );
    // Through the public API, on a process with the default body limit.
    let admin = "hostile-admin-token-0123456789";
    let ok = manifests(&[("t.yaml", tenant("calm", "{}", "fine"))]);
    let gw = Gateway::start(&["--manifests", &ok.arg(), "--admin-token", admin])
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/public/tenants", gw.base))
        .bearer_auth(admin)
        .json(&json!({"tenant_id": "api_huge"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client
        .post(format!("{}/public/tenants/api_huge/scenarios", gw.base))
        .bearer_auth(admin)
        .json(&json!({"keywords": ["x"], "response": too_big}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("1048576"), "{msg}");
}

/// `understudy_open_streams{surface="llm"}` as the process reports it.
async fn open_llm_streams(gw: &Gateway) -> Option<u64> {
    let text = reqwest::get(format!("{}/metrics", gw.base))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("understudy_open_streams{surface=\"llm\"} "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected() {
    let big = "d".repeat(1024 * 1024 - 16);
    // Paced (a tiny delay per event), so each stream is an open, gauged stream.
    let dir = manifests(&[(
        "a.yaml",
        tenant(
            "stuck",
            "{stream_chunk_chars: 16, stream_chunk_delay_ms: 1}",
            &big,
        ),
    )]);
    let gw = Gateway::start(&["--manifests", &dir.arg(), "--body-timeout", "2s"])
        .await
        .unwrap();
    let addr = gw.base.trim_start_matches("http://").to_string();
    let body =
        json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "big"}]})
            .to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-tenant-id: stuck\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_nonblocking(false).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        held.push(s);
    }
    let open = eventually(Duration::from_secs(10), || async {
        (open_llm_streams(&gw).await? == 3).then_some(())
    })
    .await;
    assert!(open.is_some(), "three streams open");
    // They never read: once their socket buffers are full, each write waits; after the
    // 2 s stall limit the connections are closed and the streams end.
    let closed = eventually(Duration::from_secs(60), || async {
        (open_llm_streams(&gw).await? == 0).then_some(())
    })
    .await;
    assert!(closed.is_some(), "stalled streams are closed");
    drop(held);
}
